"""Helpers that keep the study notebooks thin: parameter validation, run folders, figure/table output.

Every notebook calls :func:`validate_parameters` right after papermill's injected cell; a bad value
raises one :class:`ConfigError` naming the parameter. Outputs go to
``reports/<notebook>/<run-id>/`` (PNG figures, CSV tables, ``metrics.json``), written atomically.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any, Sequence

from .backbones import get_spec, check_layers
from .data import list_categories
from .errors import ConfigError
from .io_utils import atomic_write_bytes, atomic_write_text

# parameter name -> accepted Python types (papermill injects literals; YAML may give ints for floats)
PARAMETER_TYPES: dict[str, tuple[type, ...]] = {
    "data_root": (str,), "category": (str,), "backbone": (str,), "layers": (list, tuple, type(None)),
    "weights": (str, type(None)), "resize": (int,), "imagesize": (int,), "coreset_ratio": (float, int),
    "sampler": (str,), "samplers": (list, tuple), "ratios": (list, tuple), "num_nn": (int,), "score": (str,),
    "distance": (str,), "sigma": (float, int), "seed": (int,), "device": (str,), "reports_dir": (str, type(None)),
    "run_id": (str, type(None)), "cache_dir": (str, type(None)), "method": (str,), "methods": (list, tuple),
    "k_values": (list, tuple), "b_values": (list, tuple), "sigmas": (list, tuple), "categories": (list, tuple),
    "max_exact_greedy": (int,), "seeds": (list, tuple), "target_embed_dimension": (int, type(None)),
    "batch_size": (int,), "orthoad_k": (list, tuple), "padim_d": (int,), "spread_seeds": (list, tuple),
    "spread_ratio": (float, int), "ensemble_backbones": (list, tuple),
}


def repository_root() -> Path:
    """The project checkout (folder holding pyproject.toml) or the current directory."""
    here = Path(__file__).resolve().parents[1]
    return here if (here / "pyproject.toml").is_file() else Path.cwd()


def default_reports_dir() -> Path:
    return Path(os.environ.get("PATCHCORE_REPORTS") or repository_root() / "reports")


def validate_parameters(params: dict[str, Any], synthetic_kind: str = "texture") -> dict[str, Any]:
    """Check types and values of notebook parameters; resolve an empty ``data_root`` to the embedded default.

    Returns a new dict with ``data_root`` and ``category`` resolved (the synthetic dataset is generated
    on the fly when ``data_root`` is empty) and ``backbone`` defaulting to the offline efficientnet_lite0.
    """
    out = dict(params)
    for name, value in params.items():
        types = PARAMETER_TYPES.get(name)
        if types is None:
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            names = " or ".join(t.__name__ for t in types)
            raise ConfigError(f"notebook parameter '{name}' must be {names}, got {type(value).__name__} {value!r}")
    if "backbone" in out:
        spec = get_spec(out["backbone"])
        if out.get("layers"):
            out["layers"] = list(check_layers(spec, out["layers"]))
    for name in out.get("ensemble_backbones") or ():
        get_spec(name)  # ConfigError listing the valid backbones
    if len(out.get("ensemble_backbones") or ()) == 1:
        raise ConfigError("notebook parameter 'ensemble_backbones' needs at least two backbones (or [] for none)")
    for name in ("resize", "imagesize", "num_nn", "batch_size"):
        if name in out and out[name] < 1:
            raise ConfigError(f"notebook parameter '{name}' must be >= 1, got {out[name]!r}")
    if "resize" in out and "imagesize" in out and out["imagesize"] > out["resize"]:
        raise ConfigError(f"notebook parameter 'imagesize' ({out['imagesize']}) must not exceed 'resize' ({out['resize']})")
    if "coreset_ratio" in out and not 0 < out["coreset_ratio"] <= 1:
        raise ConfigError(f"notebook parameter 'coreset_ratio' must be in (0, 1], got {out['coreset_ratio']!r}")
    if "spread_ratio" in out and not 0 < out["spread_ratio"] <= 1:
        raise ConfigError(f"notebook parameter 'spread_ratio' must be in (0, 1], got {out['spread_ratio']!r}")
    for name in ("ratios",):
        for ratio in out.get(name, ()):
            if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
                raise ConfigError(f"notebook parameter '{name}' holds {ratio!r}; every ratio must be in (0, 1]")
    if "sampler" in out or "samplers" in out:
        from .sampling import SAMPLER_NAMES

        for sampler in [out.get("sampler")] * ("sampler" in out) + list(out.get("samplers", ())):
            if sampler not in SAMPLER_NAMES:
                raise ConfigError(f"unknown sampler {sampler!r}; valid samplers: {', '.join(SAMPLER_NAMES)}")
    if "data_root" in out:
        if not out["data_root"]:
            from .synthetic import ensure_default_dataset

            root, category = ensure_default_dataset(kind=synthetic_kind)
            out["data_root"] = str(root)
            if not out.get("category") or out["category"] not in list_categories(root):
                out["category"] = category
        elif "category" in out:
            from .data import check_category

            check_category(out["data_root"], out["category"])
    return out


def run_folder(notebook: str, params: dict[str, Any], reports_dir: str | Path | None = None,
               run_id: str | None = None) -> Path:
    """``reports/<notebook>/<run-id>/``; the run id defaults to ``<category>-<hash of the parameters>``."""
    if not run_id:
        digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:10]
        run_id = f"{params.get('category', 'run')}-{digest}"
    folder = Path(reports_dir or default_reports_dir()) / notebook / run_id
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_figure(fig: Any, folder: Path, name: str, dpi: int = 120) -> Path:
    """Write a matplotlib figure as ``folder/name.png`` atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(Path(folder) / f"{name}.png", buffer.getvalue())


def save_table(table: Any, folder: Path, name: str) -> Path:
    """Write a pandas DataFrame as ``folder/name.csv`` atomically."""
    return atomic_write_text(Path(folder) / f"{name}.csv", table.to_csv(index=False))


def write_metrics(folder: Path, metrics: dict[str, Any], params: dict[str, Any] | None = None) -> Path:
    """Write ``folder/metrics.json`` atomically: metrics, parameters, package versions, git commit and,
    when ``params`` name a dataset (``data_root`` + ``category``), its fingerprint (file names and sizes)."""
    from .evaluate import git_commit, package_versions

    params = params or {}
    record = {"metrics": metrics, "parameters": params, "versions": package_versions(), "git_commit": git_commit()}
    if params.get("data_root") and params.get("category"):
        from .data import dataset_fingerprint

        record["dataset_fingerprint"] = dataset_fingerprint(params["data_root"], params["category"])
    return atomic_write_text(Path(folder) / "metrics.json", json.dumps(record, indent=2, default=_json_default))


def _json_default(value: Any) -> Any:
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:
        pass
    return str(value)


def require_outputs(folder: Path, names: Sequence[str]) -> None:
    """Raise if an expected output file is missing (used by notebooks' last cell and by the tests)."""
    missing = [n for n in names if not (Path(folder) / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: expected outputs missing: {', '.join(missing)}")

"""Where the study notebooks write: run folders, figures (PNG), tables (CSV) and ``metrics.json``.

Outputs go to ``reports/<notebook>/<run-id>/``, written atomically.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from patchcore_lib.data import dataset_fingerprint
from patchcore_lib.evaluation import git_commit, package_versions
from patchcore_lib.utils.files import atomic_write_bytes, atomic_write_text

#: parameters that say where things are, not what is computed: left out of the default run id (the data enters
#: it by its content fingerprint, so a run folder has the same name on every machine)
LOCATION_PARAMETERS = ("data_root", "reports_dir", "run_id", "cache_dir")


def repository_root() -> Path:
    """The project checkout (folder holding pyproject.toml) or the current directory."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "pyproject.toml").is_file() else Path.cwd()


def default_reports_dir() -> Path:
    """The folder presets write their reports under (``reports/<preset name>``): ``$PATCHCORE_REPORTS`` or
    ``reports/`` of the checkout."""
    return Path(os.environ.get("PATCHCORE_REPORTS") or repository_root() / "reports")


def notebook_reports_dir() -> Path:
    """Where a notebook run by hand (JupyterLab, papermill without ``reports_dir``) writes: ``$PATCHCORE_REPORTS``
    or ``reports/interactive/`` of the checkout (git-ignored), never the committed reports a study regenerates
    (which its report notebook would then summarise)."""
    return Path(os.environ.get("PATCHCORE_REPORTS") or repository_root() / "reports" / "interactive")


def run_folder(notebook: str, params: dict[str, Any], reports_dir: str | Path | None = None,
               run_id: str | None = None) -> Path:
    """``reports/<notebook>/<run-id>/``; the run id defaults to ``<category>-<hash of the parameters>``."""
    if not run_id:
        digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:10]
        run_id = f"{params.get('category', 'run')}-{digest}"
    folder = Path(reports_dir or notebook_reports_dir()) / notebook / run_id
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def output_folder(notebook: str, params: dict[str, Any]) -> Path:
    """The run folder of a notebook's resolved parameters; the default run id hashes the study parameters and
    the content fingerprint of the data, not where data and outputs are (:data:`LOCATION_PARAMETERS`)."""
    study = {k: v for k, v in params.items() if k not in LOCATION_PARAMETERS}
    if params.get("data_root") and params.get("category"):
        study["data"] = dataset_fingerprint(params["data_root"], params["category"])
    return run_folder(notebook, study, params.get("reports_dir"), params.get("run_id"))


def shown_path(path: str | Path) -> str:
    """A path as the reports show it, without machine-specific parts: relative to the checkout when inside
    it, ``~/...`` under the home folder, else ``.../<parent>/<name>``."""
    path = Path(path).expanduser().resolve()
    for base, prefix in ((repository_root().resolve(), ""), (Path.home().resolve(), "~/")):
        try:
            return prefix + path.relative_to(base).as_posix()
        except ValueError:
            continue
    return ".../" + "/".join(path.parts[-2:])


def relative_paths(paths: Sequence[str]) -> list[str]:
    """Image paths as ``<split>/<defect>/<file>`` (relative to the category folder) for the CSVs."""
    return ["/".join(Path(p).parts[-3:]) for p in paths]


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
    when ``params`` name a dataset (``data_root`` + ``category``), its content fingerprint."""
    params = params or {}
    record = {"metrics": metrics, "parameters": params, "versions": package_versions(), "git_commit": git_commit()}
    if params.get("data_root") and params.get("category"):
        record["dataset_fingerprint"] = dataset_fingerprint(params["data_root"], params["category"])
    return atomic_write_text(Path(folder) / "metrics.json", json.dumps(record, indent=2, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def require_outputs(folder: Path, names: Sequence[str]) -> None:
    """Raise if an expected output file is missing (used by notebooks' last cell and by the tests)."""
    missing = [n for n in names if not (Path(folder) / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: expected outputs missing: {', '.join(missing)}")


def records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of a DataFrame as JSON-friendly dicts (NaN/NA -> None), for metrics.json."""
    return [{k: (None if pd.isna(v) else v) for k, v in row.items()} for row in table.to_dict(orient="records")]

"""Study presets (YAML) and the categories and data roots a study runs on."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from patchcore_lib.data import (category_roots, check_category, check_category_name, default_category,
                                list_categories)
from patchcore_lib.detectors.patchcore import PatchCoreConfig
from patchcore_lib.errors import ConfigError, DatasetError
from patchcore_lib.study.outputs import default_reports_dir, repository_root


#: the keys a study preset may hold
PRESET_KEYS = ("name", "description", "data_root", "categories", "parameters", "notebook_parameters",
               "category_parameters", "notebooks", "reports_dir")


def read_yaml_mapping(path: str | Path, what: str, known: Iterable[str]) -> dict[str, Any]:
    """A YAML file holding a mapping with only the ``known`` keys; one ConfigError naming ``what``, the file and
    the key at fault otherwise."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{what} {path}: unknown keys {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return data


def load_preset(path: str | Path) -> dict[str, Any]:
    """Read a study preset (YAML): ``data_root``, ``categories``, ``parameters`` (for every notebook that
    declares them), ``notebook_parameters`` (``{notebook-prefix: {name: value}}``), ``category_parameters``
    (``{category: {parameters: {...}, notebook_parameters: {...}}}``, applied last), optional ``notebooks`` and
    ``reports_dir`` (relative to the checkout; default ``reports/<name>``, see :func:`preset_reports_dir`)."""
    path = Path(path)
    data = read_yaml_mapping(path, "study preset", PRESET_KEYS)
    data.setdefault("name", path.stem)
    data["data_root"] = data.get("data_root") or ""
    data["categories"] = list(data.get("categories") or [])
    data["parameters"] = dict(data.get("parameters") or {})
    data["notebook_parameters"] = dict(data.get("notebook_parameters") or {})
    data["category_parameters"] = dict(data.get("category_parameters") or {})
    for category, entry in data["category_parameters"].items():
        extra = sorted(set(entry or {}) - {"parameters", "notebook_parameters"}) if isinstance(entry, dict) else None
        if extra is None or extra:
            raise ConfigError(f"study preset {path}: category_parameters.{category} must be a mapping with "
                              f"'parameters' and/or 'notebook_parameters', got {entry!r}")
    return data


def preset_reports_dir(preset: dict[str, Any]) -> Path:
    """Where a preset's study writes: its ``reports_dir`` (relative to the checkout), else
    ``<default reports folder>/<preset name>`` (``reports/quick`` for the default study), so that only
    the preset made for it (``params/real_reports.yaml``) writes the committed reports."""
    if preset.get("reports_dir"):
        path = Path(preset["reports_dir"]).expanduser()
        return path if path.is_absolute() else repository_root() / path
    return default_reports_dir() / str(preset.get("name") or "study")


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["name=value", ...]`` -> ``{name: yaml-parsed value}`` (``imagesize=128`` gives an int)."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--set expects NAME=VALUE, got {item!r}")
        try:
            out[name.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML: {exc}") from exc
    return out


def roots_of(data_roots: Sequence[str], categories: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Several dataset roots: (categories, {category: the first root holding it}); with no categories given,
    every category found under the roots. DatasetError naming the roots for a category none holds."""
    found: dict[str, str] = {}
    for root in data_roots:
        for category in list_categories(root):
            found.setdefault(category, root)
    wanted = list(categories) or list(found)
    missing = [c for c in wanted if c not in found]
    if missing or not wanted:
        raise DatasetError(f"categories {missing or '(any)'} not found under any of {', '.join(data_roots)} "
                           f"(found: {', '.join(found) or 'none'})")
    return wanted, {c: found[c] for c in wanted}


def resolve_roots(data_root: str, categories: Sequence[str], download: bool = True) -> dict[str, str]:
    """Without ``data_root``: the folder of each non-synthetic category (``$PATCHCORE_DATA_ROOT``, the per-user
    data folder, or the MVTec AD download; see :func:`patchcore_lib.data.resolve_data_root`), resolved before
    any notebook runs so that a missing category fails at once with one clear error. Synthetic categories keep
    the empty root (each notebook generates the set). With ``data_root``: ``{}``."""
    if data_root:
        return {}
    return {c: str(root) for c, root in category_roots(categories, download, include_synthetic=False).items()}


def resolve_categories(data_root: str, categories: Sequence[str]) -> list[str]:
    """Categories to run: the given ones, else every category under ``data_root``, else the embedded default."""
    for category in categories:
        check_category_name(category)  # names, not paths: outputs are named after them
    if categories:
        if data_root:
            for category in categories:
                check_category(data_root, category)
        return list(categories)
    if data_root:
        found = list_categories(data_root)
        if not found:
            raise ConfigError(f"no categories (folders with train/ and test/) found under {data_root}")
        return found
    return [default_category("texture")]


def model_settings(preset: dict[str, Any], category: str) -> dict[str, Any]:
    """The PatchCore options a preset gives ``category`` (its ``parameters``, then the category's own): what
    ``patchcore fit --config`` needs to fit the study's headline model of that category outside the notebooks
    (the inspection-line measurement), declared once in the preset:
    ``python -m patchcore_lib.study model-settings -f PRESET CATEGORY`` prints them as ``--config`` YAML."""
    fields = {f.name for f in dataclasses.fields(PatchCoreConfig)}
    entry = (preset.get("category_parameters") or {}).get(category) or {}
    values = {**preset.get("parameters", {}), **(entry.get("parameters") or {})}
    return {k: v for k, v in values.items() if k in fields and v is not None}


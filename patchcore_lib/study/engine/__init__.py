"""The study engine: presets, the plan of runs, their keys, execution here or on Dask, sweeps, the CLI.

The notebook back-ends (``patchcore_lib.study.<notebook stem>``) sit beside it; nothing here imports them.
The names below are loaded on first use (PEP 562), not when the package is imported: a notebook run's key
covers the code that executes it (:mod:`.tasks`, which imports this package), and an edit to the planner,
runner or ``--check`` must not make every committed report stale.
"""
from __future__ import annotations

import importlib
from typing import Any

#: name -> the engine module that defines it
_EXPORTS = {
    "assign_keys": "keys", "data_fingerprints": "keys", "run_key": "keys",
    "Run": "plan", "discover_notebooks": "plan", "is_report": "plan", "notebook_parameters": "plan",
    "plan_runs": "plan",
    "load_preset": "presets", "parse_overrides": "presets", "preset_reports_dir": "presets",
    "resolve_categories": "presets", "resolve_roots": "presets", "roots_of": "presets",
    "StudyError": "runner", "check_study": "runner", "plan_study": "runner", "run_record": "runner",
    "run_store": "runner", "run_study": "runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)

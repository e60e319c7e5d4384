"""The study engine: presets, the plan of runs, their keys, execution here or on Dask, sweeps, the CLI.

The notebook back-ends (``patchcore_lib.study.<notebook stem>``) sit beside it; nothing here imports them.
"""
from patchcore_lib.study.engine.keys import assign_keys, data_fingerprints, run_key
from patchcore_lib.study.engine.plan import Run, discover_notebooks, is_report, notebook_parameters, plan_runs
from patchcore_lib.study.engine.presets import (load_preset, parse_overrides, preset_reports_dir, resolve_categories,
                                                resolve_roots, roots_of)
from patchcore_lib.study.engine.runner import StudyError, check_study, plan_study, run_record, run_store, run_study

__all__ = ["check_study", "plan_study", "assign_keys", "data_fingerprints", "run_key", "Run", "discover_notebooks", "is_report",
           "notebook_parameters", "plan_runs", "load_preset", "parse_overrides", "preset_reports_dir",
           "resolve_categories", "resolve_roots", "roots_of", "StudyError", "run_record", "run_store", "run_study"]

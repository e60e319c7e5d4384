"""patchcore_lib: a faithful, fast PatchCore (Roth et al., CVPR 2022) for reproducible studies.

Public API: :class:`PatchCore` and :class:`PatchCoreConfig`, :func:`make_detector` / :func:`load_detector`
over every registered detector, :func:`open_split` over every dataset layout, and the error types.
The names are loaded on first use (PEP 562): ``import patchcore_lib`` (and ``patchcore --version``) does not
import torch.
"""
import importlib
import sys
from typing import Any

from patchcore_lib.utils.log import LOGGER_NAME  # noqa: F401  (the package logger, with its NullHandler)
from patchcore_lib.utils.signals import quiet_interrupts_at_startup
from patchcore_lib.version import __version__

if sys.argv[:1] == ["-m"]:  # being located by `python -m patchcore_lib[.study]`: Ctrl-C/SIGTERM during the
    quiet_interrupts_at_startup()  # imports that follow is one line, not a traceback (library imports untouched)

#: name -> the module that defines it
_EXPORTS = {
    "PatchCoreError": "errors", "ConfigError": "errors", "DatasetError": "errors", "ModelFileError": "errors",
    "WeightsNotFoundError": "errors", "open_split": "data", "PatchCore": "detectors",
    "PatchCoreConfig": "detectors", "load_detector": "detectors", "make_detector": "detectors",
}

__all__ = ["__version__", "PatchCore", "PatchCoreConfig", "make_detector", "load_detector", "open_split",
           "PatchCoreError", "ConfigError", "DatasetError", "ModelFileError", "WeightsNotFoundError"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value  # found once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

"""patchcore_lib: a faithful, fast PatchCore (Roth et al., CVPR 2022) for reproducible studies.

Public API: :class:`PatchCore` and :class:`PatchCoreConfig`, :func:`make_detector` / :func:`load_detector`
over every registered detector, :func:`open_split` over every dataset layout, and the error types.
"""
import sys

from patchcore_lib.utils.signals import quiet_interrupts_at_startup
from patchcore_lib.version import __version__

if sys.argv[:1] == ["-m"]:  # being located by `python -m patchcore_lib[.study]`: Ctrl-C/SIGTERM during the
    quiet_interrupts_at_startup()  # imports below is one line, not a traceback (library imports are untouched)

from patchcore_lib.errors import (ConfigError, DatasetError, ModelFileError, PatchCoreError,  # noqa: E402
                                  WeightsNotFoundError)
from patchcore_lib.data import open_split  # noqa: E402
from patchcore_lib.detectors import PatchCore, PatchCoreConfig, load_detector, make_detector  # noqa: E402

__all__ = ["__version__", "PatchCore", "PatchCoreConfig", "make_detector", "load_detector", "open_split",
           "PatchCoreError", "ConfigError", "DatasetError", "ModelFileError", "WeightsNotFoundError"]

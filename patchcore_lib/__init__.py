"""patchcore_lib: a faithful, fast PatchCore (Roth et al., CVPR 2022) for reproducible studies."""
__version__ = "0.1.0"

from .errors import ConfigError, DatasetError, ModelFileError, PatchCoreError, WeightsNotFoundError  # noqa: E402

__all__ = ["__version__", "PatchCoreError", "ConfigError", "DatasetError", "ModelFileError", "WeightsNotFoundError"]

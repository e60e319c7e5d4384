"""User-facing error types: each carries one clear message naming what is at fault."""
from __future__ import annotations


class PatchCoreError(Exception):
    """Base class of every error the library raises on bad input or configuration."""


class DatasetError(PatchCoreError):
    """A dataset folder, image or mask is missing, unreadable or inconsistent."""


class ConfigError(PatchCoreError, ValueError):
    """An option has an invalid value (unknown name, out-of-range number, ...)."""


class ModelFileError(PatchCoreError):
    """A saved model file is truncated, from another version, or does not match the request."""


class WeightsNotFoundError(PatchCoreError):
    """Pretrained backbone weights could not be found locally nor downloaded."""


class OutputError(PatchCoreError):
    """An output location cannot be written, or is locked by another run."""

"""What every metric shares: input conversion and validation (numpy, torch on any device, nested lists), the
:class:`UndefinedMetricWarning` of a metric that is undefined for its data, and the anomalous-images subset."""
from __future__ import annotations

import os
import sys
import warnings
from types import FrameType
from typing import Any

import numpy as np

from patchcore_lib.errors import ConfigError

#: the folder of the metrics package: an undefined-metric warning names the first caller outside it
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class UndefinedMetricWarning(RuntimeWarning):
    """A metric is undefined for the given data (e.g. one class only) and was reported as NaN."""


def _is_torch_tensor(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch" and hasattr(x, "detach")


def _tensor_to_numpy(t: Any) -> np.ndarray:
    t = t.detach().cpu()
    if t.is_floating_point() and t.element_size() < 4:  # float16 / bfloat16 (no numpy bfloat16)
        t = t.float()
    return t.numpy()


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """Convert a numpy array, torch tensor (any device/dtype) or list of them to a numpy array."""
    if _is_torch_tensor(x):
        return _tensor_to_numpy(x)
    if isinstance(x, (list, tuple)) and any(_is_torch_tensor(e) for e in x):
        x = [_tensor_to_numpy(e) if _is_torch_tensor(e) else e for e in x]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", np.exceptions.VisibleDeprecationWarning)
            arr = np.asarray(x)
    except (ValueError, TypeError, np.exceptions.VisibleDeprecationWarning) as exc:
        raise ConfigError(f"{name} cannot be converted to an array (ragged or invalid input): {exc}") from exc
    if arr.dtype == object:
        raise ConfigError(f"{name} cannot be converted to a numeric array (ragged or mixed input)")
    return arr


def _as_scores(x: Any, name: str, ndim: int | None = None) -> np.ndarray:
    """Real-valued, finite scores; float16/int/bool are promoted to float64, float32/64 kept."""
    arr = _to_numpy(x, name)
    if ndim is not None and arr.ndim != ndim:
        raise ConfigError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise ConfigError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    if arr.size and not np.isfinite(arr).all():
        raise ConfigError(f"{name} contains NaN or infinite values")
    return arr


def _as_binary(x: Any, name: str, ndim: int | None = None) -> np.ndarray:
    """Binary labels/masks (bool, or numbers equal to 0/1) as a bool array."""
    arr = _to_numpy(x, name)
    if ndim is not None and arr.ndim != ndim:
        raise ConfigError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind not in "iuf":
        raise ConfigError(f"{name} must be boolean or 0/1, got dtype {arr.dtype}")
    if arr.size and not np.isin(arr, (0, 1)).all():
        bad = np.unique(arr[~np.isin(arr, (0, 1))])[:5]
        raise ConfigError(f"{name} must contain only 0/1 (or bool), found values such as {bad.tolist()}")
    return arr.astype(bool)


def _as_image_stack(masks: Any, maps: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate masks/maps: same shape, [N,H,W] (a single [H,W] image is accepted)."""
    m = _to_numpy(masks, "masks")
    a = _to_numpy(maps, "maps")
    if m.shape != a.shape:
        raise ConfigError(f"masks and maps must have the same shape, got masks {m.shape} and maps {a.shape}")
    if m.ndim == 2:
        m, a = m[None], a[None]
    if m.ndim != 3:
        raise ConfigError(f"masks and maps must have shape [N, H, W] (or [H, W]), got {m.shape}")
    return _as_binary(m, "masks"), _as_scores(a, "maps")


def _as_labels_scores(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y = _as_binary(labels, "labels", ndim=1)
    s = _as_scores(scores, "scores", ndim=1)
    if y.shape != s.shape:
        raise ConfigError(f"labels and scores must have the same length, got labels {y.shape} and scores {s.shape}")
    return y, s


def _undefined(message: str) -> float:
    """Warn that a metric is undefined (attributed to the first caller outside this package); return NaN."""
    frame: FrameType | None = sys._getframe(1)
    level = 2
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == _PACKAGE_DIR:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UndefinedMetricWarning, stacklevel=level)
    return float("nan")


def _check_max_fpr(max_fpr: float) -> float:
    try:
        value = float(max_fpr)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"max_fpr must be a number in (0, 1], got {max_fpr!r}") from exc
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"max_fpr must be in (0, 1], got {max_fpr!r}")
    return value


def _anomalous_images(labels: Any, masks: Any, maps: Any) -> tuple[np.ndarray, np.ndarray]:
    """masks/maps [N, H, W] of the images with label 1 (labels [N] 0/1)."""
    y = _as_binary(labels, "labels", ndim=1)
    m, a = _as_image_stack(masks, maps)
    if len(y) != len(m):
        raise ConfigError(f"labels ({len(y)}) and masks/maps ({len(m)} images) must have the same length")
    return m[y], a[y]

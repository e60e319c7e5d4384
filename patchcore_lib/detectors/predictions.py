"""What a detector's ``predict_dataset`` / ``predict_images`` returns: per-image scores and maps as numpy arrays
(no torch, so the ONNX runner of ``patchcore predict`` returns the same type)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Predictions:
    """Per-image results over a dataset. scores [N], maps [N, S, S] float32, masks [N, S, S] uint8."""

    scores: np.ndarray
    maps: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    defect_types: list[str]
    paths: list[str]
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

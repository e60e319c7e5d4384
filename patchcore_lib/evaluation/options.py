"""How a detector is evaluated (not part of any model): ground-truth mask convention and few-shot fitting.

Declared once as schema fields; the CLI (``patchcore evaluate --mask-convention official --train-shots 16``),
the notebook-parameter check and the evaluation runner read them from here. The runner records them in
``run.json`` and every ``metrics.json`` and uses them in its resume key.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from patchcore_lib.data import MASK_CONVENTIONS
from patchcore_lib.utils.schema import check_fields, config_dict, config_from_dict, option


@dataclass
class EvaluationOptions:
    """Evaluation settings shared by every detector."""

    mask_convention: str = option("nearest", "ground-truth masks: nearest (nearest-neighbour resize, the MVTec "
                                  "and anomalib convention) or official (bilinear resize, only fully covered "
                                  "pixels anomalous, as the official PatchCore code)", choices=MASK_CONVENTIONS)
    train_shots: int | None = option(None, "fit on this many training images drawn by --shots-seed "
                                     "(the paper's few-shot study; default: all)", minimum=1)
    shots_seed: int = option(0, "seed of the train_shots draw (same seed, same images)", minimum=0)

    def __post_init__(self) -> None:
        check_fields(self)

    def to_dict(self) -> dict[str, Any]:
        return config_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EvaluationOptions":
        return config_from_dict(cls, data)

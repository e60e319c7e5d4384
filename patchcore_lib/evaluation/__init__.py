"""Metrics, published reference numbers, provenance, and the runner that evaluates a built detector."""
from patchcore_lib.evaluation.metrics import (image_auroc, legacy_pixel_auroc, per_defect_image_auroc, pixel_auroc,
                                              pro_curve, pro_score, roc_points)
from patchcore_lib.evaluation.provenance import config_hash, git_commit, package_versions
from patchcore_lib.evaluation.runner import evaluate, evaluate_category, prediction_metrics

__all__ = ["image_auroc", "legacy_pixel_auroc", "per_defect_image_auroc", "pixel_auroc", "pro_curve", "pro_score",
           "roc_points", "config_hash", "git_commit", "package_versions", "evaluate", "evaluate_category",
           "prediction_metrics"]

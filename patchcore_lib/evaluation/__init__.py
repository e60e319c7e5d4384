"""Metrics, evaluation options, provenance, and the runner that evaluates a built detector (the published
numbers compared with are in ``patchcore_lib.paper``)."""
from patchcore_lib.evaluation.metrics import (anomaly_pixel_auroc, anomaly_pro_score, image_auroc, legacy_pixel_auroc,
                                              per_defect_image_auroc, pixel_auroc, pro_curve, pro_score, roc_points)
from patchcore_lib.evaluation.options import EvaluationOptions
from patchcore_lib.evaluation.provenance import config_hash, git_commit, package_versions
from patchcore_lib.evaluation.runner import evaluate, evaluate_category, prediction_metrics

__all__ = ["anomaly_pixel_auroc", "anomaly_pro_score", "image_auroc", "legacy_pixel_auroc", "per_defect_image_auroc",
           "pixel_auroc", "pro_curve", "pro_score", "roc_points", "EvaluationOptions", "config_hash", "git_commit",
           "package_versions", "evaluate", "evaluate_category", "prediction_metrics"]

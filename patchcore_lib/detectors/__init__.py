"""Everything with fit / predict / save / load: PatchCore, PaDiM, OrthoAD, the PatchCore ensemble, and the
factory over the :data:`DETECTORS` registry."""
from patchcore_lib.detectors.base import (DETECTORS, SHARED_SETTINGS, Detector, Predictions, predict_over_dataset,
                                          resolve_device, state_fingerprint)
from patchcore_lib.detectors.ensemble import EnsembleConfig, EnsembleOptions, PatchCoreEnsemble
from patchcore_lib.detectors.gaussian import GaussianAD, GaussianADConfig, OrthoAD, PaDiM
from patchcore_lib.detectors.patchcore import PatchCore, PatchCoreConfig
from patchcore_lib.detectors.threshold import ThresholdOptions, f1_optimal_threshold, threshold_rates
from patchcore_lib.detectors.factory import load_detector, make_detector, method_config

__all__ = ["DETECTORS", "SHARED_SETTINGS", "Detector", "Predictions", "predict_over_dataset", "resolve_device",
           "state_fingerprint", "EnsembleConfig", "EnsembleOptions", "PatchCoreEnsemble", "GaussianAD",
           "GaussianADConfig", "OrthoAD", "PaDiM", "PatchCore", "PatchCoreConfig", "load_detector",
           "make_detector", "method_config", "ThresholdOptions", "f1_optimal_threshold", "threshold_rates"]

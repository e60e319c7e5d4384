"""Everything with fit / predict / save / load: PatchCore, PaDiM, OrthoAD, the PatchCore ensemble, and the
factory over the :data:`DETECTORS` registry.

The names load on first use (PEP 562): ``patchcore predict`` with an ONNX model (:mod:`.onnx_model`,
:mod:`.predict_folder`, :mod:`.overlays`) imports no torch through this package."""
from typing import TYPE_CHECKING

from patchcore_lib.utils.lazy import lazy_exports

if TYPE_CHECKING:  # the names, each loaded from its module on first use (PEP 562; utils/lazy.py)
    from patchcore_lib.detectors.base import (DETECTORS, SHARED_SETTINGS, Detector, predict_over_dataset,
                                              resolve_device, state_fingerprint)
    from patchcore_lib.detectors.predictions import Predictions
    from patchcore_lib.detectors.ensemble import EnsembleConfig, EnsembleOptions, PatchCoreEnsemble
    from patchcore_lib.detectors.gaussian import GaussianAD, GaussianADConfig, OrthoAD, PaDiM
    from patchcore_lib.detectors.patchcore import PatchCore, PatchCoreConfig
    from patchcore_lib.detectors.threshold import ThresholdOptions, f1_optimal_threshold, threshold_rates
    from patchcore_lib.detectors.factory import load_detector, make_detector, method_config

__all__ = ["DETECTORS", "SHARED_SETTINGS", "Detector", "Predictions", "predict_over_dataset", "resolve_device",
           "state_fingerprint", "EnsembleConfig", "EnsembleOptions", "PatchCoreEnsemble", "GaussianAD",
           "GaussianADConfig", "OrthoAD", "PaDiM", "PatchCore", "PatchCoreConfig", "load_detector",
           "make_detector", "method_config", "ThresholdOptions", "f1_optimal_threshold", "threshold_rates"]

__getattr__, __dir__ = lazy_exports(__name__, __file__)

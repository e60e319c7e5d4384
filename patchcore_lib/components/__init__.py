"""PatchCore's parts, tensors in and tensors out: backbones, patch features, samplers, kNN, scoring, anomaly maps."""

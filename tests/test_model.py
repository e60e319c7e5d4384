"""PatchCore end to end: fit/predict on synthetic data, determinism, save/load, clear load errors."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from patchcore_lib.data import MVTecDataset
from patchcore_lib.errors import ConfigError, ModelFileError
from patchcore_lib.evaluation.runner import evaluate_category
from patchcore_lib.detectors.patchcore import PatchCore, PatchCoreConfig
from patchcore_lib.utils.integrity import seal

SMALL = dict(backbone="efficientnet_lite0", resize=128, imagesize=128, coreset_ratio=0.25, batch_size=8)


@pytest.fixture(scope="module")
def fitted(synthetic_root):
    model = PatchCore(**SMALL)
    model.fit(MVTecDataset(synthetic_root, "tiny", "train", 128, 128), show_progress=False)
    return model


@pytest.mark.slow
def test_pretrained_backbone_separates_synthetic_defects(default_synthetic):
    """Embedded default dataset, offline ImageNet backbone, official 224 px geometry."""
    root, category = default_synthetic
    row, predictions = evaluate_category(PatchCore(PatchCoreConfig()), root, category, show_progress=False)
    assert row["image_auroc"] >= 0.9
    assert row["pixel_auroc"] >= 0.9
    assert 0 < row["pro"] <= 1
    assert predictions.maps.shape == (row["num_test"], 224, 224)
    assert row["memory_bank_size"] == int(row["num_train"] * 28 * 28 * 0.1)


@pytest.mark.slow
def test_predict_shapes_and_defect_maps_peak_inside_masks(fitted, synthetic_root):
    test = MVTecDataset(synthetic_root, "tiny", "test", 128, 128)
    predictions = fitted.predict_dataset(test, show_progress=False)
    assert predictions.scores.shape == (len(test),) and predictions.maps.shape == (len(test), 128, 128)
    defect = predictions.labels == 1
    assert predictions.scores[defect].mean() > predictions.scores[~defect].mean()
    inside = [m[k > 0].mean() for m, k in zip(predictions.maps[defect], predictions.masks[defect])]
    outside = [m[k == 0].mean() for m, k in zip(predictions.maps[defect], predictions.masks[defect])]
    assert np.mean(np.array(inside) > np.array(outside)) >= 0.8


@pytest.mark.slow
def test_save_load_predicts_bit_identically(fitted, synthetic_root, tmp_path):
    images = torch.stack([MVTecDataset(synthetic_root, "tiny", "test", 128, 128)[i]["image"] for i in (0, 5)])
    scores, maps = fitted.predict(images)
    path = fitted.save(tmp_path / "model.pt")
    loaded = PatchCore.load(path)
    scores2, maps2 = loaded.predict(images)
    assert torch.equal(scores, scores2) and torch.equal(maps, maps2)
    assert loaded.config == fitted.config


@pytest.mark.slow
def test_load_refuses_truncated_foreign_and_mismatched_files(fitted, tmp_path):
    path = fitted.save(tmp_path / "model.pt")
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="cut.pt is truncated"):
        PatchCore.load(tmp_path / "cut.pt")
    torch.save({"format": "patchcore_lib.model/0"}, tmp_path / "old.pt")
    with pytest.raises(ModelFileError, match="old.pt has format 'patchcore_lib.model/0'"):
        PatchCore.load(tmp_path / "old.pt")
    with pytest.raises(ModelFileError, match="fitted with backbone 'efficientnet_lite0', not 'resnet18'"):
        PatchCore.load(path, backbone="resnet18")
    payload = torch.load(path, weights_only=True)
    payload["backbone_fingerprint"] = "0" * 16
    torch.save(seal(payload), tmp_path / "other_weights.pt")  # a valid checksum: the fingerprint check is tested
    with pytest.raises(ModelFileError, match="weights found on this machine differ"):
        PatchCore.load(tmp_path / "other_weights.pt")


@pytest.mark.slow
@pytest.mark.subprocess
def test_seeded_fit_is_deterministic_across_processes(synthetic_root, tmp_path):
    code = (
        "import sys, torch; from patchcore_lib.detectors.patchcore import PatchCore; from patchcore_lib.data import MVTecDataset\n"
        "root = sys.argv[1]\n"
        "m = PatchCore(backbone='resnet18', weights='random', resize=64, imagesize=64, coreset_ratio=0.2, seed=3, device='cpu')\n"
        "m.fit(MVTecDataset(root, 'tiny', 'train', 64, 64), show_progress=False)\n"
        "x = torch.stack([MVTecDataset(root, 'tiny', 'test', 64, 64)[i]['image'] for i in range(4)])\n"
        "s, maps = m.predict(x); torch.save({'bank': m.memory_bank, 's': s, 'maps': maps}, sys.argv[2])\n"
    )
    outputs = []
    for name in ("a.pt", "b.pt"):
        subprocess.run([sys.executable, "-c", code, str(synthetic_root), str(tmp_path / name)], check=True)
        outputs.append(torch.load(tmp_path / name))
    for key in ("bank", "s", "maps"):
        assert torch.equal(outputs[0][key], outputs[1][key])


def test_config_validation_messages():
    with pytest.raises(ConfigError, match=r"coreset_ratio must be in \(0, 1\], got 1.5"):
        PatchCoreConfig(coreset_ratio=1.5)
    with pytest.raises(ConfigError, match="unknown backbone 'vgg'.*wide_resnet50_2"):
        PatchCoreConfig(backbone="vgg")
    with pytest.raises(ConfigError, match="unknown layer.*'layer9'.*valid layers: layer1, layer2"):
        PatchCoreConfig(backbone="resnet18", layers=("layer9",))
    with pytest.raises(ConfigError, match="imagesize 16 is too small.*at least 32 px"):
        PatchCoreConfig(resize=16, imagesize=16)
    with pytest.raises(ConfigError, match="unknown sampler"):
        PatchCoreConfig(sampler="kmeans")
    with pytest.raises(ConfigError, match="num_nn must be >= 1, got 0"):
        PatchCoreConfig(num_nn=0)


def test_num_nn_larger_than_bank_is_refused(synthetic_root):
    model = PatchCore(backbone="resnet18", weights="random", resize=64, imagesize=64, coreset_ratio=0.001, num_nn=50)
    with pytest.raises(ConfigError, match=r"num_nn \(50\) is larger than the memory bank"):
        model.fit(MVTecDataset(synthetic_root, "tiny", "train", 64, 64), show_progress=False)


@pytest.mark.slow
def test_seeds_change_only_the_random_parts_and_metrics_barely(synthetic_root):
    from patchcore_lib.evaluation.runner import prediction_metrics

    train = MVTecDataset(synthetic_root, "tiny", "train", 128, 128)
    test = MVTecDataset(synthetic_root, "tiny", "test", 128, 128)
    metrics, banks, features = [], [], None
    for seed in (0, 1, 2):
        model = PatchCore(**SMALL, seed=seed)
        extracted = model.extract_features(train, show_progress=False)
        if features is None:
            features = extracted
        assert torch.equal(extracted, features)  # the backbone features do not depend on the seed
        model.fit(extracted, show_progress=False)
        banks.append(model.memory_bank)
        metrics.append(prediction_metrics(model.predict_dataset(test, show_progress=False)))
    assert not torch.equal(banks[0], banks[1]) and not torch.equal(banks[1], banks[2])  # the coreset is random
    for key in ("image_auroc", "pixel_auroc", "pro"):
        values = [m[key] for m in metrics]
        assert max(values) - min(values) <= 0.03, (key, values)

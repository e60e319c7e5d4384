"""Ensembles: members standardised on nominal data, then averaged; geometry must agree."""
import pytest
import torch

from patchcore_lib.data import MVTecDataset
from patchcore_lib.detectors.ensemble import PatchCoreEnsemble
from patchcore_lib.errors import ConfigError
from patchcore_lib.evaluation.runner import evaluate_category
from patchcore_lib.detectors.patchcore import PatchCoreConfig

MEMBERS = [PatchCoreConfig(backbone="resnet18", weights="random", resize=64, imagesize=64, coreset_ratio=0.2),
           PatchCoreConfig(backbone="efficientnet_lite0", resize=64, imagesize=64, coreset_ratio=0.2)]


@pytest.mark.slow
def test_ensemble_is_the_mean_of_standardised_members(synthetic_root):
    ensemble = PatchCoreEnsemble(MEMBERS, calibration_images=4)
    train = MVTecDataset(synthetic_root, "tiny", "train", 64, 64)
    ensemble.fit(train, show_progress=False)
    images = torch.stack([MVTecDataset(synthetic_root, "tiny", "test", 64, 64)[i]["image"] for i in (0, 6)])
    scores, maps = ensemble.predict(images)
    members = ensemble.member_predictions(images)
    # calibration: the members' maps of the first 4 training images have mean 0 / std 1 after standardising
    calib = torch.stack([train[i]["image"] for i in range(4)])
    for index, member in enumerate(ensemble.members):
        _, m = member.predict(calib)
        z = (m - ensemble.offsets[index]) / ensemble.scales[index]
        assert abs(z.mean().item()) < 1e-4 and abs(z.std().item() - 1) < 1e-4
    expected = sum((s - o) / c for (s, _), o, c in zip(members, ensemble.offsets, ensemble.scales)) / 2
    torch.testing.assert_close(scores, expected)
    assert maps.shape == (2, 64, 64)
    assert ensemble.memory_bank_size == sum(len(m.memory_bank) for m in ensemble.members)


@pytest.mark.slow
def test_ensemble_evaluates_like_a_single_model(synthetic_root):
    row, predictions = evaluate_category(PatchCoreEnsemble(MEMBERS), synthetic_root, "tiny",
                                         show_progress=False)
    assert 0.5 <= row["image_auroc"] <= 1 and predictions.maps.shape[1:] == (64, 64)
    assert row["memory_bank_size"] > 0


def test_ensemble_members_must_share_geometry():
    with pytest.raises(ConfigError, match="share resize/imagesize"):
        PatchCoreEnsemble([MEMBERS[0], PatchCoreConfig(backbone="resnet18", weights="random", resize=96, imagesize=96)])
    with pytest.raises(ConfigError, match="at least two"):
        PatchCoreEnsemble(MEMBERS[:1])


@pytest.mark.slow
def test_ensemble_through_the_factory_and_the_cli(synthetic_root, tmp_path, capsys):
    import csv
    import json

    from patchcore_lib.cli import main
    from patchcore_lib.detectors.factory import make_detector, method_config
    from patchcore_lib.detectors.ensemble import EnsembleConfig

    base = PatchCoreConfig(backbone="resnet18", weights="random", resize=64, imagesize=64, coreset_ratio=0.2)
    config = method_config("patchcore_ensemble", base, backbones=("resnet18", "efficientnet_lite0"))
    assert isinstance(config, EnsembleConfig) and config.backbone == "resnet18+efficientnet_lite0"
    assert [m.layers for m in config.members] == [("layer2", "layer3"), ("blocks.2", "blocks.4")]
    assert isinstance(make_detector("patchcore_ensemble", config), PatchCoreEnsemble)
    with pytest.raises(ConfigError, match="at least two backbones"):
        method_config("patchcore_ensemble", base, backbones=("resnet18",))
    with pytest.raises(ConfigError, match="unknown patchcore_ensemble option"):
        method_config("patchcore_ensemble", base, k=3)

    out = tmp_path / "out"
    code = main(["evaluate", "--data-root", str(synthetic_root), "--category", "tiny", "--resize", "64",
                 "--imagesize", "64", "--coreset-ratio", "0.2", "--method", "patchcore_ensemble",
                 "--ensemble-backbones", "efficientnet_lite0", "efficientnet_lite1", "--quiet", "--out", str(out)])
    assert code == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert rows[0]["method"] == "patchcore_ensemble" and 0.5 <= float(rows[0]["image_auroc"]) <= 1
    record = json.loads((out / "tiny" / "metrics.json").read_text())
    assert [m["backbone"] for m in record["config"]["members"]] == ["efficientnet_lite0", "efficientnet_lite1"]


def test_minmax_fusion_by_hand():
    import numpy as np

    from patchcore_lib.detectors.ensemble import minmax_fusion

    # member 0 scores 1, 3, 5 -> 0, 0.5, 1; member 1 scores 10, 30, 20 -> 0, 1, 0.5; means 0, 0.75, 0.75
    scores = np.array([[1.0, 3.0, 5.0], [10.0, 30.0, 20.0]])
    # maps [2 members, 3 images, 1x2]: member 0 over all pixels min 0 max 4; member 1 constant (contributes 0)
    maps = np.array([[[[0.0, 1.0]], [[2.0, 4.0]], [[4.0, 3.0]]], np.full((3, 1, 2), 7.0)])
    fused_scores, fused_maps = minmax_fusion(scores, maps)
    np.testing.assert_allclose(fused_scores, [0.0, 0.75, 0.75])
    np.testing.assert_allclose(fused_maps, [[[0.0, 0.125]], [[0.25, 0.5]], [[0.5, 0.375]]])


@pytest.mark.slow
def test_official_fusion_over_the_test_set(synthetic_root, tmp_path):
    import numpy as np

    from patchcore_lib.detectors.ensemble import minmax_fusion

    ensemble = PatchCoreEnsemble(MEMBERS, fusion="official").fit(
        MVTecDataset(synthetic_root, "tiny", "train", 64, 64), show_progress=False)
    test = MVTecDataset(synthetic_root, "tiny", "test", 64, 64)
    predictions = ensemble.predict_dataset(test, show_progress=False)
    raw = [m.predict_dataset(test, show_progress=False) for m in ensemble.members]
    scores, maps = minmax_fusion(np.stack([r.scores for r in raw]), np.stack([r.maps for r in raw]))
    np.testing.assert_allclose(predictions.scores, scores, rtol=1e-6)
    np.testing.assert_allclose(predictions.maps, maps, rtol=1e-6, atol=1e-7)
    assert predictions.scores.min() >= 0 and predictions.scores.max() <= 1 and predictions.maps.max() <= 1
    assert ensemble.config.to_dict()["fusion"] == "official"
    assert PatchCoreEnsemble.load(ensemble.save(tmp_path / "e.pt")).config.fusion == "official"
    with pytest.raises(ConfigError, match="fusion 'official'.*predict_dataset"):
        ensemble.predict(test[0]["image"][None])
    with pytest.raises(ConfigError, match="unknown ensemble fusion"):
        PatchCoreEnsemble(MEMBERS, fusion="median")


def test_fusion_is_an_ensemble_option_of_the_cli():
    from patchcore_lib.cli import build_parser
    from patchcore_lib.detectors.factory import method_config

    parser, _ = build_parser()
    args = parser.parse_args(["evaluate", "--data-root", "x", "--category", "y", "--out", "z",
                                      "--method", "patchcore_ensemble", "--ensemble-fusion", "official"])
    assert args.ensemble_fusion == "official"
    base = PatchCoreConfig(backbone="resnet18", weights="random", resize=64, imagesize=64)
    config = method_config("patchcore_ensemble", base, backbones=("resnet18", "efficientnet_lite0"), fusion="official")
    assert config.fusion == "official" and config.to_dict()["fusion"] == "official"
    with pytest.raises(ConfigError, match="unknown fusion 'mean'"):
        method_config("patchcore_ensemble", base, backbones=("resnet18", "efficientnet_lite0"), fusion="mean")

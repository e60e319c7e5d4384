"""PaDiM / OrthoAD: Mahalanobis maths, streaming moments, reductions, interface, save/load, determinism."""
import csv

import numpy as np
import pytest
import torch

from patchcore_lib.data import MVTecDataset
from patchcore_lib.detectors.factory import load_detector, make_detector, method_config
from patchcore_lib.errors import ConfigError, ModelFileError
from patchcore_lib.detectors.patchcore import PatchCore, PatchCoreConfig
from patchcore_lib.detectors.gaussian import (GaussianAD, GaussianADConfig, OrthoAD, PaDiM, mahalanobis,
                                             random_channel_subset, semi_orthogonal_matrix)
from patchcore_lib.evaluation.metrics import legacy_pixel_auroc
from patchcore_lib.paper.reference import REFERENCE_MVTEC_MEANS, baseline_reference_table
from patchcore_lib.utils.integrity import seal

# efficientnet_lite0 blocks.1/2/4 -> D = 24 + 40 + 112 = 176 channels on a 16 x 16 grid at 64 px
TINY = dict(backbone="efficientnet_lite0", weights="random", resize=64, imagesize=64, batch_size=6)


@pytest.fixture(scope="module")
def datasets(synthetic_root):
    return (MVTecDataset(synthetic_root, "tiny", "train", 64, 64), MVTecDataset(synthetic_root, "tiny", "test", 64, 64))


@pytest.fixture(scope="module")
def fitted_padim(datasets):
    return PaDiM(d=40, **TINY).fit(datasets[0], show_progress=False)


def _images(test, indices=(0, 5)):
    return torch.stack([test[i]["image"] for i in indices])


def test_mahalanobis_of_a_hand_checked_2d_gaussian():
    # Sigma = [[4, 1], [1, 2]], Sigma^-1 = [[2, -1], [-1, 4]] / 7; x - mu = (2, 1) -> d^2 = (8 - 4 + 4) / 7 = 8 / 7
    sigma = torch.tensor([[4.0, 1.0], [1.0, 2.0]])
    x = torch.tensor([[[3.0, 0.0], [1.0, -1.0]]])  # [P=1, B=2, k=2]; the second sample is the mean
    distance = mahalanobis(x, torch.tensor([[1.0, -1.0]]), torch.linalg.inv(sigma)[None])
    assert distance.shape == (1, 2)
    assert distance[0, 0].item() == pytest.approx((8 / 7) ** 0.5, rel=1e-6)
    assert distance[0, 1].item() == 0.0


def test_streaming_fit_matches_numpy_cov_and_scipy_mahalanobis():
    """Chan's merged float32 moments == np.cov (N-1) + 0.01 I, even for features far from zero."""
    from scipy.spatial.distance import mahalanobis as scipy_mahalanobis

    generator = torch.Generator().manual_seed(0)
    k, h, w, n = 5, 2, 3, 23
    mixing = torch.randn(k, k, generator=generator)
    features = 1000.0 + torch.einsum("bchw,cd->bdhw", torch.randn(n, k, h, w, generator=generator), mixing)
    model = PaDiM(d=k, **TINY, position_chunk=4)
    model.embed = lambda images: (images, (h, w))  # feed the features directly
    model.fit([features[i:i + 5] for i in range(0, n, 5)], show_progress=False)  # uneven last batch
    flat = features.double().flatten(2).numpy()  # [n, k, P]
    for p in range(h * w):
        cov = np.cov(flat[:, :, p], rowvar=False) + 0.01 * np.eye(k)
        np.testing.assert_allclose(model.mean[p].numpy(), flat[:, :, p].mean(0), rtol=1e-6)
        np.testing.assert_allclose(model.precision[p].numpy(), np.linalg.inv(cov), rtol=2e-3, atol=2e-5)
    query = features[:3] + 0.5 * torch.randn(3, k, h, w, generator=generator)
    ours = model.distance_maps(query)
    for b in range(3):
        for p in range(h * w):
            cov = np.cov(flat[:, :, p], rowvar=False) + 0.01 * np.eye(k)
            expected = scipy_mahalanobis(query[b].double().flatten(1)[:, p].numpy(), flat[:, :, p].mean(0),
                                         np.linalg.inv(cov))
            assert ours[b].flatten()[p].item() == pytest.approx(expected, rel=2e-3)


def test_semi_orthogonal_projection_and_channel_subset():
    w = semi_orthogonal_matrix(1792, 300, seed=0)
    assert w.shape == (1792, 300) and w.dtype == torch.float32
    assert (w.T @ w - torch.eye(300)).abs().max().item() < 1e-5
    assert torch.equal(w, semi_orthogonal_matrix(1792, 300, seed=0))
    assert not torch.equal(w, semi_orthogonal_matrix(1792, 300, seed=1))
    subset = random_channel_subset(1792, 550, seed=0)
    assert len(subset) == 550 and len(set(subset.tolist())) == 550 and subset.max() < 1792
    assert torch.equal(subset, random_channel_subset(1792, 550, seed=0))
    with pytest.raises(ConfigError, match="needs k <= 10"):
        semi_orthogonal_matrix(10, 11, seed=0)


@pytest.mark.slow
def test_shapes_and_defects_score_higher(fitted_padim, datasets):
    model = fitted_padim
    assert model.grid == (16, 16) and model.mean.shape == (256, 40) and model.precision.shape == (256, 40, 40)
    assert model.precision.dtype == torch.float32 and model.memory_bank_size == 256
    assert set(model.timings) >= {"fit_seconds", "extract_seconds", "invert_seconds"}
    scores, maps = model.predict(_images(datasets[1]))
    assert scores.shape == (2,) and maps.shape == (2, 64, 64)
    assert torch.equal(scores, maps.flatten(1).max(1).values)  # image score = max of the map
    predictions = model.predict_dataset(datasets[1], show_progress=False)
    assert predictions.maps.shape == (len(datasets[1]), 64, 64) and "predict_seconds" in model.timings


@pytest.mark.slow
def test_orthoad_with_identity_projection_equals_padim_on_all_channels(datasets):
    train, test = datasets
    assert GaussianADConfig(**TINY).total_channels == 176
    small = dict(TINY, layers=("blocks.1", "blocks.2"))  # D = 24 + 40 = 64 keeps the test fast
    total = GaussianADConfig(**small).total_channels
    assert total == 64
    padim = PaDiM(d=total, **small).fit(train, show_progress=False)
    ortho = OrthoAD(k=total, **small)
    ortho.projection = torch.eye(total)
    ortho.fit(train, show_progress=False)
    s1, m1 = padim.predict(_images(test))
    s2, m2 = ortho.predict(_images(test))
    torch.testing.assert_close(s2, s1, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(m2, m1, rtol=1e-5, atol=1e-5)
    # any orthogonal W with k = D gives the same Mahalanobis distances (rotation invariance)
    rotated = OrthoAD(k=total, **small).fit(train, show_progress=False)
    s3, _ = rotated.predict(_images(test))
    torch.testing.assert_close(s3, s1, rtol=2e-3, atol=1e-3)


@pytest.mark.slow
def test_save_load_predicts_bit_identically(datasets, tmp_path):
    for model in (PaDiM(d=30, **TINY), OrthoAD(k=20, **TINY)):
        model.fit(datasets[0], show_progress=False)
        images = _images(datasets[1])
        scores, maps = model.predict(images)
        path = model.save(tmp_path / f"{model.method}.pt")
        for loaded in (type(model).load(path), load_detector(path), GaussianAD.load(path)):
            assert type(loaded) is type(model) and loaded.config == model.config
            scores2, maps2 = loaded.predict(images)
            assert torch.equal(scores, scores2) and torch.equal(maps, maps2)
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.slow
def test_load_refuses_missing_truncated_foreign_and_mismatched_files(fitted_padim, datasets, tmp_path):
    path = fitted_padim.save(tmp_path / "padim.pt")
    with pytest.raises(ModelFileError, match="nothing.pt does not exist"):
        PaDiM.load(tmp_path / "nothing.pt")
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="cut.pt is truncated"):
        PaDiM.load(tmp_path / "cut.pt")
    with pytest.raises(ModelFileError, match="cut.pt is truncated"):
        load_detector(tmp_path / "cut.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ModelFileError, match="text.pt is truncated or not a patchcore_lib model"):
        PaDiM.load(tmp_path / "text.pt")
    patchcore = PatchCore(backbone="resnet18", weights="random", resize=64, imagesize=64, coreset_ratio=0.1)
    patchcore.fit(datasets[0], show_progress=False)
    pc_path = patchcore.save(tmp_path / "patchcore.pt")
    with pytest.raises(ModelFileError, match="patchcore.pt has format 'patchcore_lib.model/1'"):
        PaDiM.load(pc_path)
    assert isinstance(load_detector(pc_path), PatchCore)
    with pytest.raises(ModelFileError, match="holds a 'padim' model, not 'orthoad'"):
        OrthoAD.load(path)
    with pytest.raises(ModelFileError, match="fitted with backbone 'efficientnet_lite0', not 'resnet18'"):
        PaDiM.load(path, backbone="resnet18")
    payload = torch.load(path, weights_only=True)
    payload["backbone_fingerprint"] = "0" * 16
    torch.save(seal(payload), tmp_path / "other_weights.pt")  # a valid checksum: the fingerprint check is tested
    with pytest.raises(ModelFileError, match="weights found on this machine differ"):
        PaDiM.load(tmp_path / "other_weights.pt")


@pytest.mark.slow
def test_seeded_fit_is_deterministic(datasets):
    images = _images(datasets[1])
    runs = []
    for _ in range(2):
        model = OrthoAD(k=16, seed=3, **TINY).fit(datasets[0], show_progress=False)
        runs.append((model.projection, model.mean, model.precision, *model.predict(images)))
    for a, b in zip(*runs):
        assert torch.equal(a, b)
    assert torch.equal(runs[0][0], semi_orthogonal_matrix(176, 16, seed=3))
    assert not torch.equal(random_channel_subset(176, 16, seed=3), random_channel_subset(176, 16, seed=4))


def test_factory_and_config_validation():
    shared = PatchCoreConfig(backbone="resnet18", weights="random", resize=64, imagesize=64, seed=5, sigma=2.0)
    padim = method_config("padim", shared)
    assert padim.layers == ("layer1", "layer2", "layer3") and padim.d == 100 and padim.seed == 5 and padim.sigma == 2.0
    assert method_config("padim", None, backbone="wide_resnet50_2").d == 550
    ortho = method_config("orthoad", shared, k=300)
    assert ortho.k == 300 and ortho.total_channels == 448
    assert isinstance(make_detector("patchcore", shared), PatchCore)
    with pytest.raises(ConfigError, match="unknown detector 'spade'"):
        make_detector("spade", shared)
    with pytest.raises(ConfigError, match="OrthoAD k=300 exceeds the 176 channels of efficientnet_lite0"):
        method_config("orthoad", None, k=300)
    with pytest.raises(ConfigError, match="PaDiM d=500 exceeds"):
        GaussianADConfig(backbone="resnet18", d=500)
    with pytest.raises(ConfigError, match="unknown padim option"):
        method_config("padim", shared, coreset_ratio=0.1)
    with pytest.raises(ConfigError, match="not fitted"):
        PaDiM(**TINY).predict(torch.zeros(1, 3, 64, 64))


def test_legacy_pixel_auroc_and_reference_values():
    rng = np.random.default_rng(0)
    masks = np.zeros((4, 32, 32), dtype=np.uint8)
    masks[1, 5:12, 5:12] = 1
    masks[2, 20:30, 3:9] = 1
    perfect = masks.astype(np.float32) + 0.01 * rng.random(masks.shape, dtype=np.float32)
    assert legacy_pixel_auroc(masks, perfect) == pytest.approx(1.0, abs=1e-3)
    noisy = rng.random(masks.shape, dtype=np.float32)
    assert 0.35 < legacy_pixel_auroc(masks, noisy) < 0.65
    # literal transcription of the original loop (threshold every map, per-image rates, dict, slope area)
    maps = (masks + rng.normal(0, 0.7, masks.shape)).astype(np.float32)
    pred, gt = torch.from_numpy(maps), torch.from_numpy(masks).bool()
    worst = pred.flatten(1).max(1).values.argmax()
    t = pred[worst].flatten()
    curve = {}
    for i in range(50, 0, -1):
        hit = pred > t.kthvalue(max(1, int(np.floor(t.numel() * i / 50)))).values
        fpr = ((hit & ~gt).flatten(1).sum(1).double() / (~gt).flatten(1).sum(1)).mean().item()
        has = gt.flatten(1).any(1)
        curve[fpr] = ((hit & gt).flatten(1).sum(1).double()[has] / gt.flatten(1).sum(1)[has]).mean().item()
    f = sorted(curve)
    p = [curve[v] for v in f]
    area = f[0] * p[0] / 2 + sum((f[i] - f[i - 1]) * (p[i] + p[i - 1]) / 2 for i in range(1, len(f) - 1))
    area += (1.0 - f[-2]) * ((p[-1] + p[-2]) / 2 + p[-2]) / 2
    assert legacy_pixel_auroc(masks, maps, num_samples=50) == pytest.approx(area, abs=1e-9)
    table = baseline_reference_table()
    assert (table["scope"] == "MVTec AD mean (15 categories)").all() and len(table) == len(REFERENCE_MVTEC_MEANS)
    assert table.query("source == 'PaDiM paper'")["pixel_auroc"].item() == 0.975


def test_cli_method_padim_writes_the_same_columns(synthetic_root, tmp_path):
    from patchcore_lib.cli import main

    out = tmp_path / "out"
    assert main(["evaluate", "--data-root", str(synthetic_root), "--category", "tiny", "--method", "padim",
                 "--padim-d", "20", "--backbone", "resnet18", "--weights", "random", "--resize", "64",
                 "--imagesize", "64", "--quiet", "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["category"] for r in rows] == ["tiny", "mean"] and rows[0]["method"] == "padim"
    for column in ("image_auroc", "pixel_auroc", "pro", "fit_seconds", "predict_seconds", "memory_bank_size"):
        assert rows[0][column] != ""
    assert int(rows[0]["memory_bank_size"]) == 16 * 16

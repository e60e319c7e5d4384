"""Notebook 08 (ablations): aggregation of stored backbone stages, memory-bank utilisation, Eq. 7 gaps, the
section runs on the tiny synthetic dataset, and one papermill execution of the notebook."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from patchcore_lib.components.features import PatchFeatureExtractor
from patchcore_lib.components.knn import NearestNeighbourSearch
from patchcore_lib.components.scoring import reweighting_factors
from patchcore_lib.detectors import PatchCore
from patchcore_lib.errors import ConfigError
from patchcore_lib.paper import ablations as pa
from patchcore_lib.study.cached_features import cached_split_features
from patchcore_lib.study.cached_scoring import SplitTargets
from patchcore_lib.study.ablations import ablation_features as af
from patchcore_lib.study.ablations import ablation_runs as ar
from patchcore_lib.study.ablations import eq7_gaps as eq
from patchcore_lib.study.ablations import utilisation as ut
from patchcore_lib.study.params import config_from_params, validate_parameters
from helpers import NOTEBOOKS

NOTEBOOK = NOTEBOOKS / "08_ablations.ipynb"


@pytest.mark.parametrize("layers, patch_size, stride", [(("layer2", "layer3"), 3, 1), (("layer1", "layer2", "layer3"), 5, 1),
                                                         (("layer2", "layer3"), 3, 2), (("layer3",), 1, 1)])
def test_aggregating_stored_stages_equals_the_extractor(layers, patch_size, stride):
    torch.manual_seed(0)
    extractor = PatchFeatureExtractor("resnet18", layers, patch_size, 96, 64, weights="random", patch_stride=stride)
    images = torch.randn(3, 3, 64, 64)
    expected, grid = extractor(images)
    maps = extractor.backbone(images)
    got, got_grid = af.aggregate(maps, layers, extractor.backbone.channels, patch_size, stride, 96, 64, batch=2)
    assert got_grid == grid and got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_patch_size_1_is_the_unaggregated_layer():
    """p = 1 on one layer with both dimensions equal to its channels: both poolings are the identity."""
    maps = {"blocks.2": torch.randn(2, 40, 7, 7)}
    features, grid = af.aggregate(maps, ["blocks.2"], [40], 1, 1, 40, 40)
    assert grid == (7, 7)
    torch.testing.assert_close(features, maps["blocks.2"].permute(0, 2, 3, 1).reshape(2, 49, 40))


def test_hierarchy_levels_map_to_the_registry_stages():
    assert af.level_layers("efficientnet_lite0") == {"1": "blocks.1", "2": "blocks.2", "3": "blocks.4"}
    assert af.level_layers("wide_resnet50_2") == {"1": "layer1", "2": "layer2", "3": "layer3"}
    assert af.layers_of("2+3", "efficientnet_lite0") == ("blocks.2", "blocks.4")  # the default layers
    assert af.layers_of("1+2+3", "wide_resnet50_2") == ("layer1", "layer2", "layer3")


def test_utilisation_counts_distinct_nearest_entries():
    indices = np.array([0, 0, 2, 2, 2, 3])
    good = np.array([True, True, False, False, False, False])
    defect = np.array([False, False, False, False, True, True])
    out = ut.utilisation(indices, 5, good, defect)
    assert out["used"] == 3 / 5 and out["entries_used"] == 3
    assert out["used_by_good"] == 1 / 5 and out["used_by_defect"] == 2 / 5
    assert math.isnan(ut.utilisation(indices, 5)["used_by_good"])
    with pytest.raises(ConfigError, match="outside a bank of 3"):
        ut.utilisation(indices, 3)


def test_patch_labels_follow_image_labels_and_mask_coverage():
    masks = np.zeros((2, 4, 4), dtype=np.uint8)
    masks[1, :2, :2] = 1  # the top-left cell of a 2 x 2 grid, fully; nothing else
    masks[1, 2, 2] = 1  # a quarter of the bottom-right cell: below half
    targets = SplitTargets(np.array([0, 1]), masks, ["good", "crack"], ["a", "b"])
    good, defect = ut.patch_labels(targets, (2, 2))
    assert good.tolist() == [True] * 4 + [False] * 4
    assert defect.tolist() == [False] * 4 + [True, False, False, False]


def test_eq7_gaps_match_a_hand_computation_and_the_library():
    bank = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [10.0, 0.0]])
    # two images of two patches; the largest nearest distance of image 0 is its patch (0, 2) -> m* = bank[0]
    test = torch.tensor([[[0.5, 0.0], [0.0, 2.0]], [[9.0, 0.0], [3.0, 0.1]]])
    nearest = NearestNeighbourSearch(1, "euclidean", backend="torch").fit(bank).query(test.reshape(-1, 2))[1]
    nearest = nearest.reshape(2, 2)
    out = eq.eq7_gaps(test, nearest, bank, b=2)
    # image 0: m_test* = (0, 2), m* = (0, 0), its 2 nearest others: (1, 0), (3, 0)
    d0 = 2.0
    d = np.array([math.hypot(1, 2), math.hypot(3, 2)])
    np.testing.assert_allclose(out["d0"][0], d0)
    np.testing.assert_allclose(out["gaps"][0], d - d0)
    np.testing.assert_allclose(out["weights"][0], 1 - 1 / (1 + np.exp(d - d0).sum()))
    # image 1: m_test* = (9, 0) (distance 1 to (10, 0)), m* = (10, 0), its 2 nearest others: (3, 0), (1, 0)
    np.testing.assert_allclose(out["gaps"][1], [6.0 - 1.0, 8.0 - 1.0])
    assert out["anchor"].tolist() == [0, 3] and out["neighbours"][1].tolist() == [2, 1]
    search = NearestNeighbourSearch(1, "euclidean", backend="torch").fit(bank)
    rows = torch.arange(2)
    best = torch.tensor([1, 0])
    library = reweighting_factors(test[rows, best], nearest[rows, best], search, 2)
    np.testing.assert_allclose(out["weights"], library.double().numpy(), rtol=1e-6)
    assert out["weights"][1] > 0.999  # gaps of 5 and 7 feature units: the weight is ~1
    floor = eq.eq7_gaps(torch.zeros(1, 1, 2), torch.zeros(1, 1, dtype=torch.long), torch.zeros(3, 2), b=2)
    np.testing.assert_allclose(floor["weights"], [1 - 1 / 3])  # all gaps 0: the floor 1 - 1 / (b + 1)
    with pytest.raises(ConfigError, match="b=4"):
        eq.eq7_gaps(test, nearest, bank, b=4)


def test_paper_table_has_sources_and_no_invented_numbers():
    table = pa.LOCAL_AWARENESS_FIG4
    assert "Fig. 4" in table.source and table.name in pa.PAPER_ABLATIONS
    assert not any(row["printed_values"] for row in table.rows)
    assert not {"image_auroc", "pixel_auroc", "pro"} & set(table.frame().columns)
    default = ar.paper_default("bottle", 0.01)
    assert default["image_auroc"] == 0.99 and "Tables 1-2" in default["from"]
    assert ar.paper_default("bottle", 0.05) is None and ar.paper_default("magnetic_tile", 0.01) is None


@pytest.fixture(scope="module")
def tiny(notebook_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("nb08")
    params = validate_parameters({"data_root": str(notebook_root), "category": "tiny", "backbone": "efficientnet_lite0",
                                  "resize": 64, "imagesize": 64, "crop": "none", "pretrain_embed_dimension": 128,
                                  "target_embed_dimension": 64, "device": "cpu", "cache_dir": str(base / "cache")})
    return base, params


@pytest.mark.slow
def test_sections_on_the_synthetic_set(tiny):
    _, params = tiny
    config = config_from_params(params, coreset_ratio=0.25)
    stage = af.extract_stage_maps(params, config)
    assert stage.cached == {"train": False, "test": False}
    assert af.extract_stage_maps(params, config).cached == {"train": True, "test": True}  # read back from the store
    # the default variant equals the library's own patch features of the same config
    library, grid, _ = cached_split_features(PatchCore(config), params["data_root"], "tiny", "test",
                                             cache_dir=params["cache_dir"])
    train, test, own_grid = af.variant_features(stage, config.layers, 3, 1)
    assert own_grid == grid and train.shape == (8, 64, 64)
    torch.testing.assert_close(test, library, rtol=1e-4, atol=1e-5)

    runs = ar.AblationRuns(stage, 0.25, [0, 1], config.sigma)
    table = ar.patch_size_runs(runs, (1, 3))
    assert table.seed.tolist() == [0, 1, 0, 1] and (table.bank_size == int(8 * 64 * 0.25)).all()
    assert table[["image_auroc", "pixel_auroc"]].apply(lambda c: c.between(0, 1)).all().all()
    assert runs.default is not None and set(runs.default.results) == {0, 1}
    assert not torch.equal(runs.default.banks[0], runs.default.banks[1])  # the seed changes the coreset
    shown = ar.display_table(ar.summary(table), runs, "tiny", "Fig. 4 (plot only)")
    assert shown.image_auroc.str.contains("±").all() and (shown.seeds == 2).all()
    capped = ar.AblationRuns(stage, 0.25, [0], config.sigma, max_patch_factor=2.0, always_run_patches=0)
    row = capped.run(af.layers_of("1+2", config.backbone), 3, 1)[0]  # level 1: 16 x 16 patches per image, 4x the default's
    assert row["note"].startswith("skipped: 2048 training patches > 2 x") and math.isnan(row["image_auroc"])
    assert capped.run(af.layers_of("2", config.backbone), 3, 1)[0]["note"] == ""  # as many patches as the default

    rows = ut.search_rows(runs, [1.0, 0.25], ["exact", "ivfpq"], max_bank=None)
    exact = rows[rows.search == "exact"]
    for _, r in exact.iterrows():
        assert 0 < r.used <= 1 and r.used_by_good <= r.used and r.used_by_defect <= r.used
        assert r.used * r.bank_size == pytest.approx(r.entries_used)  # a multiple of 1 / bank size
    assert (exact[exact.ratio == 1.0].bank_size == 512).all() and (exact.ratio == 1.0).sum() == 2  # once, per seed
    assert exact[exact.ratio == 1.0].used.nunique() == 1
    ivf = rows[rows.search == "ivfpq"]
    assert ivf.note.str.contains("too small|FAISS asks").all()  # 128- / 512-entry banks: FAISS's minimum noted
    assert ut.search_rows(runs, [1.0], ["exact"], max_bank=100).note.str.startswith("skipped").all()


@pytest.mark.slow
@pytest.mark.notebook
def test_notebook_runs_on_the_synthetic_set(tiny):
    papermill = pytest.importorskip("papermill")
    base, params = tiny
    run = {**params, "reports_dir": str(base / "reports"), "run_id": "test", "coreset_ratio": 0.25,
           "seeds": [0, 1], "search_ratios": [1.0, 0.25], "b_values": [1, 3]}
    papermill.execute_notebook(str(NOTEBOOK), str(base / "08.ipynb"), parameters=run, kernel_name="python3",
                               progress_bar=False)
    out = base / "reports" / "08_ablations" / "test"
    for name in ("patch_size", "levels", "stride", "utilisation", "search", "eq7"):
        assert (out / f"{name}.csv").is_file() and (out / f"{name}.png").is_file()
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert "dims 128/64" in metrics["setting"]
    assert {r["variant"] for r in metrics["levels"]} == {"1", "2", "3", "1+2", "2+3", "1+2+3"}

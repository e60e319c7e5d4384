"""Unit tests of the logic behind notebooks 01-03 (study.cached_scoring, feature_extraction, coreset_ablation,
knn_scoring) on small real inputs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from patchcore_lib.components.knn import faiss_available
from patchcore_lib.components.sampling import SAMPLERS, make_sampler
from patchcore_lib.data import open_split
from patchcore_lib.detectors import PatchCore, PatchCoreConfig
from patchcore_lib.errors import ConfigError
from patchcore_lib.study import coreset_ablation as ca
from patchcore_lib.study import feature_extraction as fe
from patchcore_lib.study import knn_scoring as ks
from patchcore_lib.study import cached_scoring, display
from patchcore_lib.study.cached_features import load_features
from patchcore_lib.study.params import config_from_params

BACKENDS = ["torch"] + (["faiss"] if faiss_available() else [])
SIZE = 64


@pytest.fixture(scope="module")
def setup(synthetic_root, tmp_path_factory):
    """A 64 px model, cached features of the tiny synthetic dataset, its test targets."""
    params = {"data_root": str(synthetic_root), "category": "tiny", "backbone": "efficientnet_lite0", "layers": None,
              "resize": SIZE, "imagesize": SIZE, "seed": 0, "device": "cpu",
              "cache_dir": str(tmp_path_factory.mktemp("cache"))}
    model = PatchCore(config_from_params(params))
    train, grid, cached = load_features(model, params, "train")
    test, _, _ = load_features(model, params, "test")
    assert not cached
    assert load_features(model, params, "train")[2]  # second call hits the cache
    test_set = open_split(synthetic_root, "tiny", "test", SIZE, SIZE)
    return {"params": params, "model": model, "train": train, "test": test, "grid": grid,
            "test_set": test_set, "targets": cached_scoring.split_targets(test_set)}


# ----------------------------------------------------------------------------- coverage radius
@pytest.mark.parametrize("backend", BACKENDS)
def test_coverage_radius_matches_brute_force(backend):
    g = torch.Generator().manual_seed(0)
    features = torch.randn(700, 24, generator=g)
    bank = features[torch.randperm(700, generator=g)[:40]]
    expected = torch.cdist(features.double(), bank.double()).min(1).values.max().item()
    assert cached_scoring.coverage_radius(features, bank, backend) == pytest.approx(expected, rel=1e-4, abs=1e-4)
    assert cached_scoring.coverage_radius(bank, bank, backend) == pytest.approx(0.0, abs=1e-2)


def test_coverage_radius_on_real_features_shrinks_with_the_bank(setup):
    flat = setup["train"].reshape(-1, setup["train"].shape[-1])
    radii = []
    for ratio in (0.02, 0.1, 0.5):
        bank = flat[make_sampler("approx_greedy", ratio, show_progress=False).select(flat)]
        radius = cached_scoring.coverage_radius(flat, bank)
        brute = torch.cdist(flat.double(), bank.double()).min(1).values.max().item()
        assert radius == pytest.approx(brute, rel=1e-3)
        radii.append(radius)
    assert radii[0] > radii[1] > radii[2] > 0


def test_coverage_radius_rejects_mismatched_shapes():
    with pytest.raises(ConfigError, match="coverage_radius"):
        cached_scoring.coverage_radius(torch.zeros(5, 3), torch.zeros(5, 4))


# ----------------------------------------------------------------------------- scoring on cached features
def test_variant_scores_equal_a_directly_built_model(setup):
    model, train, test, grid = setup["model"], setup["train"], setup["test"], setup["grid"]
    flat = train.reshape(-1, train.shape[-1])
    base = model.with_bank(sampler="random", coreset_ratio=0.5).fit(flat, show_progress=False)
    assert model.memory_bank is None  # the original stays untouched
    assert base.extractor is model.extractor
    for changes in ({"num_nn": 3, "distance": "euclidean", "sigma": 2.0}, {"score": "reweighted"}):
        scorer = base.with_bank(base.memory_bank, **changes)
        direct = PatchCore(PatchCoreConfig(**{**base.config.to_dict(), "sampler": "identity", "coreset_ratio": 1.0,
                                              **changes}))
        direct.fit(base.memory_bank, show_progress=False)
        scores, maps = cached_scoring.score_split(scorer, test, grid, (SIZE, SIZE), batch_images=4)
        ref_scores, ref_maps = direct.score_features(test, grid, (SIZE, SIZE))
        np.testing.assert_allclose(scores, ref_scores.numpy(), rtol=1e-5)
        np.testing.assert_allclose(maps, ref_maps.numpy(), rtol=1e-4, atol=1e-3)
    # and the cached features give what predict() gives on the images
    images = torch.stack([setup["test_set"][i]["image"] for i in range(3)])
    pred_scores, _ = base.predict(images)
    np.testing.assert_allclose(cached_scoring.score_split(base, test[:3], grid, (SIZE, SIZE))[0], pred_scores.numpy(),
                               rtol=1e-4)
    with pytest.raises(ConfigError, match="distance"):
        model.with_bank(distance="cosine")


def test_evaluate_scores_perfect_and_nan(setup):
    targets = setup["targets"]
    perfect = cached_scoring.evaluate_scores(targets, targets.labels.astype(float), targets.masks.astype(np.float32))
    assert perfect["image_auroc"] == 1.0 and perfect["pixel_auroc"] == 1.0 and perfect["pro"] == pytest.approx(1.0)
    good = cached_scoring.SplitTargets(np.zeros(2, int), np.zeros((2, 8, 8), np.uint8), ["good"] * 2, ["a", "b"])
    with pytest.warns(Warning):
        result = cached_scoring.evaluate_scores(good, np.zeros(2), np.zeros((2, 8, 8), np.float32))
    assert np.isnan(result["image_auroc"]) and np.isnan(result["pro"])


# ----------------------------------------------------------------------------- notebook 01 helpers
def test_patch_labels_threshold_half():
    masks = np.zeros((1, 8, 8), np.uint8)
    masks[0, :4, :4] = 1  # top-left cell of a 2x2 grid fully defective
    masks[0, 4:6, 4:8] = 1  # bottom-right cell half defective: not > 0.5
    assert fe.patch_labels(masks, (2, 2)).tolist() == [[True, False, False, False]]
    masks[0, 6, 4:8] = 1
    assert fe.patch_labels(masks, (2, 2)).tolist() == [[True, False, False, True]]


def test_receptive_field_grows_with_patch_size(setup):
    images = torch.stack([setup["test_set"][i]["image"] for i in range(2)])
    heats, table = fe.receptive_field_comparison(setup["model"], images, patch_sizes=(1, 3))
    assert list(heats) == ["patch size p=1", "patch size p=3"]
    for heat in heats.values():
        assert heat.shape == (SIZE, SIZE) and heat.max() == pytest.approx(1.0) and heat.min() >= 0
    assert table.extent_90_px.iloc[0] <= table.extent_90_px.iloc[1]
    assert (heats["patch size p=3"] > 0).sum() >= (heats["patch size p=1"] > 0).sum()
    with pytest.raises(ConfigError, match="outside"):
        fe.effective_receptive_field(setup["model"].extractor, images, location=(99, 0))


def test_receptive_field_extent():
    heat = np.zeros((21, 21))
    heat[10, 10] = 1
    assert fe.receptive_field_extent(heat) == 1
    heat[8:13, 8:13] = 1
    assert fe.receptive_field_extent(heat, 0.99) == 5
    assert fe.receptive_field_extent(np.zeros((4, 4))) == 0


def test_layer_table_and_pca(setup):
    table = fe.layer_shape_table(setup["model"])
    assert list(table.layer[:2]) == ["blocks.2", "blocks.4"]
    assert table["patch_dim (C*p*p)"].tolist()[:2] == [40 * 9, 112 * 9]
    assert table.grid.tolist() == ["8x8", "4x4", "8x8"]
    labels = fe.patch_labels(setup["targets"].masks, setup["grid"])
    points, explained = fe.pca_projection(setup["train"], setup["test"], labels, max_points=50)
    counts = points.group.value_counts()
    assert counts["train (nominal)"] == 50 and counts.max() <= 50 and len(explained) == 2
    assert explained[0] >= explained[1] > 0
    with pytest.raises(ConfigError, match="patch labels"):
        fe.pca_projection(setup["train"], setup["test"], labels[:1], max_points=50)


def test_memory_bank_table(setup):
    table = fe.memory_bank_table(setup["model"].extractor, 10, 384, [0.01, 1.0], [64, 224])
    row = table[(table.imagesize == 224) & (table["ratio_%"] == 1.0)].iloc[0]
    assert row.all_features == 10 * 28 * 28 and row.bank_features == 78  # int(7840 * 0.01)
    assert row.bank_MB == pytest.approx(78 * 384 * 4 / 2**20, abs=0.01)
    assert table[table.imagesize == 64].bank_features.tolist() == [6, 640]


# ----------------------------------------------------------------------------- notebook 02
def test_coreset_ablation_table(setup):
    table = ca.coreset_ablation(setup["model"], setup["train"], setup["test"], setup["grid"], setup["targets"],
                                      ["random", "approx_greedy", "greedy"], [0.05, 1.0], max_exact_greedy=100,
                                      log=None)
    assert len(table) == 6
    greedy = table[(table.sampler == "greedy") & (table.ratio == 0.05)].iloc[0]
    assert greedy.status.startswith("n/a") and pd.isna(greedy.image_auroc)
    full = table[table.ratio == 1.0]
    assert (full.coverage_radius == 0).all() and full.image_auroc.nunique() == 1
    assert full.status.str.contains("same bank").sum() == 2
    n = setup["train"].shape[0] * setup["train"].shape[1]
    approx = table[(table.sampler == "approx_greedy") & (table.ratio == 0.05)].iloc[0]
    assert approx.bank_features == int(n * 0.05) and approx.selection_seconds > 0
    assert 0.5 <= approx.image_auroc <= 1 and 0.5 <= approx.pixel_auroc <= 1
    shown = ca.ablation_display_table(table)
    assert shown.loc[greedy.name, "image AUROC (%)"] == "n/a" and shown.ratio.iloc[0] == "5%"
    assert "train_features" not in shown.columns
    import matplotlib
    matplotlib.use("Agg")
    ca.plot_coreset_metrics(table)
    ca.plot_coverage(table)


# ----------------------------------------------------------------------------- notebook 03
def test_coreset_rows_are_reused_only_for_the_same_inputs_and_code(setup, tmp_path):
    args = (setup["model"], setup["train"], setup["test"], setup["grid"], setup["targets"])
    first = ca.coreset_ablation(*args, ["random", "approx_greedy"], [0.05, 1.0], log=None, rows=tmp_path)
    assert not first.reused.any() and len(list(tmp_path.glob("coreset_row/*.json"))) == 4
    logged = []
    # extended by one ratio: the four stored rows are reused as they were, only the new ratio is computed
    again = ca.coreset_ablation(*args, ["random", "approx_greedy"], [0.05, 0.2, 1.0], log=logged.append,
                                rows=tmp_path)
    assert again.reused.tolist() == [True, False, True, True, False, True]
    stored = again[again.reused].drop(columns="reused").reset_index(drop=True)
    pd.testing.assert_frame_equal(stored, first.drop(columns="reused"), check_dtype=False)
    assert sum("(stored row)" in line for line in logged) == 4
    assert again.status.tolist()[-1] == "ok (same bank as above)"  # the 100% bank is scored once, stored or not
    # other test features (one value changed) or other code: nothing is reused
    changed = setup["test"].clone()
    changed[0, 0, 0] += 1.0
    other = ca.coreset_ablation(setup["model"], setup["train"], changed, setup["grid"], setup["targets"],
                                ["random"], [0.05], log=None, rows=tmp_path)
    assert not other.reused.any()
    # the key holds the code's fingerprint: a row stored by other code is another record, never this row
    from patchcore_lib.utils.store import Store, content_key

    store = Store(tmp_path / "store")
    ours, theirs = (content_key("t", code=code, params={"ratio": 0.1}, data="inputs") for code in ("a", "b"))
    assert ours != theirs
    store.save("t", ours, {"x": 1.0})
    assert store.lookup("t", ours) == {"x": 1.0} and store.lookup("t", theirs) is None
    (tmp_path / "store" / "t" / f"{theirs}.json").write_text((tmp_path / "store" / "t" / f"{ours}.json").read_text())
    assert store.lookup("t", theirs) is None  # a record whose recorded key is not its name: not used


def test_scoring_variants_one_factor_at_a_time():
    default = dict(ks.DEFAULT_SCORING)
    variants = ks.scoring_variants([1, 3], [1, 3], ["sqeuclidean", "euclidean"], [0, 4], default)
    assert [v["factor"] for v in variants].count("image score") == 3
    for v in variants:
        differing = {k for k in default if v["changes"][k] != default[k]}
        assert len(differing) <= 2  # reweighted also sets b
        assert v["is_default"] == (not differing)
    assert sum(v["is_default"] for v in variants) == 4  # k=1, max, sqeuclidean, sigma=4


def test_knn_scoring_ablation_reuses_identical_configs(setup):
    model = setup["model"].with_bank(sampler="random", coreset_ratio=0.2)
    model.fit(setup["train"].reshape(-1, setup["train"].shape[-1]), show_progress=False)
    variants = ks.scoring_variants([1, 3], [3], ["sqeuclidean"], [0, 4], ks.scoring_defaults(model.config))
    table, scores, maps = ks.knn_scoring_ablation(model, model.memory_bank, setup["test"], setup["grid"],
                                                        setup["targets"], variants, keep_maps=["default"], log=None)
    assert len(table) == len(variants) and list(maps) == ["default"]
    defaults = table[table.default]
    assert defaults.image_auroc.nunique() == 1 and defaults.scoring_seconds.nunique() == 1
    assert table.loc[table.value == "reweighted b=3", "b"].iloc[0] == 3
    assert pd.isna(table.loc[table.value == "k=3", "b"].iloc[0])
    sigma0 = table[table.value == "sigma=0"].iloc[0]
    assert sigma0.image_auroc == defaults.image_auroc.iloc[0]  # the blur does not change image scores
    index = ks.gallery_indices(setup["targets"], scores["k (neighbours): k=1"], size=6)
    assert len(index) == 6 == len(set(index))
    assert {setup["targets"].defect_types[i] for i in index} >= {"good"}


def test_reweighting_effect_weights_within_the_bound_and_flips_explain_the_auroc_change(setup):
    """Eq. 7 on a real small bank: w = s / s* lies in [1 - 1/(b+1), 1); the pairs it re-orders account for the
    change of image AUROC exactly (no ties among continuous scores)."""
    from patchcore_lib.evaluation.metrics import image_auroc

    model = setup["model"].with_bank(sampler="random", coreset_ratio=0.05)
    model.fit(setup["train"].reshape(-1, setup["train"].shape[-1]), show_progress=False)
    variants = ks.scoring_variants([1], [1, 3], ["sqeuclidean"], [4], ks.scoring_defaults(model.config))
    table, scores, _ = ks.knn_scoring_ablation(model, model.memory_bank, setup["test"], setup["grid"],
                                               setup["targets"], variants, log=None)
    labels = np.asarray(setup["targets"].labels)
    effect, weights = ks.reweighting_effect(scores, variants, labels)
    assert sorted(effect.b) == [1, 3] and sorted(weights) == [1, 3]
    for b, w in weights.items():
        assert np.all(w >= 1 - 1 / (b + 1) - 1e-6) and np.all(w <= 1 + 1e-6)  # float32 s* rounding
    max_auroc = image_auroc(labels, scores["image score: max"])
    for row in effect.itertuples():
        rew_auroc = image_auroc(labels, scores[f"image score: reweighted b={row.b}"])
        assert row.auroc_change_from_flips == pytest.approx(rew_auroc - max_auroc, abs=1e-9)
        assert 0 <= row.images_changing_rank <= row.images
    fig = ks.plot_reweighting(weights, scores, variants, labels, b_shown=3)
    assert len(fig.axes) == 3


def test_metric_range_stays_below_100_for_constant_panels():
    low, high = display.metric_range(pd.Series([1.0, 1.0, 1.0]))
    assert (low, high) == (99.5, 100.5)
    low, high = display.metric_range(pd.Series([0.8, 0.9]))
    assert low < 80 and 90 < high <= 100.5


def test_paper_comparison_puts_our_runs_beside_the_papers_per_sampler():
    table = pd.DataFrame({"sampler": ["random", "approx_greedy"], "ratio": [0.01, 0.01],
                          "image_auroc": [0.9, 0.99], "pixel_auroc": [0.95, 0.97], "pro": [0.8, 0.9]})
    comparison = ca.paper_comparison(table)
    assert len(comparison) == len(ca.PAPER_CORESET)
    random_1 = comparison[(comparison.sampler == "random") & (comparison["ratio (%)"] == "1%")].iloc[0]
    assert random_1.ours_image_auroc == 90.0 and random_1.approximate
    greedy_10 = comparison[(comparison.sampler == "approx_greedy") & (comparison["ratio (%)"] == "10%")].iloc[0]
    assert pd.isna(greedy_10.ours_image_auroc) and greedy_10.paper_image_auroc == 99.0
    fig = ca.plot_coreset_metrics(pd.concat([table.assign(status="ok")]))
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert "1%" in labels and "0.1%" in labels  # percent ticks, the paper's ratios included


def test_paper_markers_only_where_the_dataset_matches():
    table = pd.DataFrame({"sampler": ["approx_greedy", "approx_greedy"], "ratio": [0.01, 0.1],
                          "image_auroc": [0.89, 0.90], "pixel_auroc": [0.73, 0.76], "pro": [0.70, 0.71]})
    assert ca.paper_markers("bottle") is ca.PAPER_CORESET  # an MVTec AD category: the MVTec AD means
    tiles = ca.paper_markers("magnetic_tile")  # the paper's one MTD result, at its own ratio, image AUROC only
    assert list(tiles.sampler) == ["approx_greedy"] and list(tiles.ratio) == [0.1]
    assert tiles.image_auroc.iloc[0] == 97.9 and tiles.pixel_auroc.isna().all() and "MTD" in tiles.source.iloc[0]
    comparison = ca.paper_comparison(table, tiles)
    assert len(comparison) == 1 and comparison.ours_image_auroc.iloc[0] == 90.0
    fig = ca.plot_coreset_metrics(table, tiles)
    labels = [t for ax in fig.axes for t in ax.get_legend_handles_labels()[1]]
    assert any("MTD" in t for t in labels) and not any("Tables" in t or "Fig" in t for t in labels)
    assert len(fig.axes[1].collections) == 0  # no pixel AUROC marker: the paper gives none on MTD
    assert ca.paper_markers("synthetic_texture") is None and len(ca.paper_comparison(table, None)) == 0
    fig = ca.plot_coreset_metrics(table, None)
    assert not any("paper" in t for ax in fig.axes for t in ax.get_legend_handles_labels()[1])


def test_category_markers_per_class_where_the_paper_gives_it_else_labelled_mean_of_15():
    from patchcore_lib.paper.reference import paper_table_percent
    from patchcore_lib.study.coreset_paper import category_paper_markers
    bottle = category_paper_markers("bottle")
    published = paper_table_percent().query("category == 'bottle' and method == 'PatchCore-1%'").iloc[0]
    one = bottle[(bottle.sampler == "approx_greedy") & (bottle.ratio == 0.01)].iloc[0]
    mean_one = ca.PAPER_CORESET[(ca.PAPER_CORESET.sampler == "approx_greedy") & (ca.PAPER_CORESET.ratio == 0.01)].iloc[0]
    assert (one.image_auroc, one.pixel_auroc) == (published.image_auroc, published.pixel_auroc) != (
        mean_one.image_auroc, mean_one.pixel_auroc)  # the per-class value replaces the class mean ...
    assert one.pro == mean_one.pro and one.source == "bottle per class (PRO: mean)"  # ... not PRO's
    others = bottle.drop(index=one.name)
    assert all("mean of 15" in s and ", " not in s for s in others.source) and len(bottle) == len(ca.PAPER_CORESET)
    table = pd.DataFrame({"sampler": ["approx_greedy"], "ratio": [0.01], "image_auroc": [0.99], "pixel_auroc": [0.98],
                          "pro": [0.9]})
    fig = ca.plot_coreset_metrics(table, bottle)
    legends = [t.get_text() for t in fig.legends[0].get_texts()]
    filled = [t for t in legends if t.startswith("paper, approx_greedy") and "per class" in t]
    assert len(filled) == 1  # one legend entry for the printed values, the same on every panel
    assert category_paper_markers("magnetic_tile").equals(ca.paper_markers("magnetic_tile"))
    assert category_paper_markers("synthetic_texture") is None


# ----------------------------------------------------------------------------- plot styles
def test_every_registered_sampler_gets_a_plot_style():
    styles = [ca.sampler_style(name) for name in SAMPLERS]
    assert len(set(styles)) == len(styles)
    assert ca.sampler_style("approx_greedy") == ca.SAMPLER_STYLE["approx_greedy"]
    colour, marker = ca.sampler_style("a_sampler_registered_later")
    assert colour.startswith("tab:") and marker

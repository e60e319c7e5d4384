"""Notebook 07 (paper experiments): its module on a tiny synthetic dataset, the paper's numbers, and one
papermill execution of the notebook with tiny parameters."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import numpy as np
import pytest
import torch

from patchcore_lib.errors import ConfigError
from patchcore_lib.paper import ablations as pa
from patchcore_lib.study import paper_experiments as pe
from patchcore_lib.study.cached_scoring import mean_sd
from patchcore_lib.study.params import config_from_params, validate_parameters
from helpers import NOTEBOOKS

NOTEBOOK = NOTEBOOKS / "07_paper_experiments.ipynb"
OUTPUTS = ["backbone_imagesize.csv", "backbone_imagesize_runs.csv", "backbone_imagesize_vs_paper.csv",
           "backbone_imagesize.png", "few_shot_runs.csv", "few_shot_summary.csv", "few_shot_vs_paper.csv",
           "few_shot.png", "search_time.csv", "search_time_runs.csv", "search_time_vs_paper.csv", "search_time.png",
           "metrics.json"]
METRICS = ["image_auroc", "pixel_auroc", "pro"]
SEEDS = [0, 1]


def assert_seed_means(per_seed: pd.DataFrame, summary: pd.DataFrame, by: list[str], columns: list[str]) -> None:
    """Every summary row's ``column`` is the mean of its per-seed rows and ``column_sd`` their sample sd."""
    for _, row in summary.iterrows():
        group = per_seed[(per_seed[by] == row[by]).all(axis=1)]
        assert row.seeds == len(group)
        for column in columns:
            values = group[column].astype(float)
            assert f"{column}_sd" in summary
            if values.notna().all():
                assert row[column] == pytest.approx(values.mean())
                assert row[f"{column}_sd"] == pytest.approx(values.std(ddof=1), abs=1e-12)


@pytest.fixture(scope="module")
def tiny(notebook_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("nb07")
    params = {"data_root": str(notebook_root), "category": "tiny", "backbone": "efficientnet_lite0",
              "resize": 64, "imagesize": 64, "crop": "none", "coreset_ratio": 0.25, "device": "cpu",
              "reports_dir": str(base / "reports"), "cache_dir": str(base / "cache"), "run_id": "test"}
    return base, params


@pytest.fixture(scope="module")
def section_1(tiny, tmp_path_factory):
    """Backbone table (per seed, two seeds) with an empty torch hub cache: wide_resnet50_2 has no weights,
    efficientnet_lite0 (weights from its pip package) runs and its features are kept."""
    _, params = tiny
    params = validate_parameters(params)
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path_factory.mktemp("empty_hub")))
    try:
        table, kept = pe.backbone_size_table(params, ["wide_resnet50_2", "efficientnet_lite0"], [64], SEEDS,
                                             keep=config_from_params(params), log=None)
    finally:
        torch.hub.set_dir(previous)
    return params, table, kept


def test_resize_follows_the_official_geometry():
    assert pe.resize_for(224) == 256 and pe.resize_for(320) == 366
    assert pe.resize_for(320, "none") == 320


def test_backbone_rows_say_when_weights_are_missing(section_1):
    _, table, kept = section_1
    assert table.backbone.tolist() == ["wide_resnet50_2", "efficientnet_lite0", "efficientnet_lite0"]
    missing, runs = table.iloc[0], table.iloc[1:]
    assert missing.status.startswith("weights not present") and "wide_resnet50_2-95faca4d.pth" in missing.status
    assert math.isnan(missing.image_auroc) and pd.isna(missing.seed)
    assert runs.seed.tolist() == SEEDS and (runs.status == "ok").all() and (runs.resize == 64).all()
    assert (runs.bank_size == math.ceil(0.25 * 8 * 64)).all()
    assert runs[METRICS].apply(lambda c: c.between(0, 1)).all().all()
    assert (runs.fit_seconds > 0).all() and (runs.seconds_per_test_image > 0).all()
    assert kept is not None and kept.train.shape == (8, 64, 384) and kept.test.shape == (3 + 2 * 4, 64, 384)
    assert set(kept.banks) == {(0.25, 0), (0.25, 1)}  # the banks of section 1 are kept per seed for re-use
    assert not torch.equal(kept.banks[(0.25, 0)][0], kept.banks[(0.25, 1)][0])  # a seed changes the coreset
    summary = pe.backbone_summary(table)
    assert summary.backbone.tolist() == ["wide_resnet50_2", "efficientnet_lite0"] and summary.seeds.tolist() == [0, 2]
    assert_seed_means(table[table.status == "ok"], summary[summary.status == "ok"], ["backbone", "imagesize"],
                      [*METRICS, "bank_size", "fit_seconds", "seconds_per_test_image"])
    ran = summary.iloc[1]
    shown = pe.backbone_comparison(summary, "ours")
    ours = shown[shown.source == "ours"]
    assert ours.image_auroc.iloc[1] == mean_sd(ran.image_auroc, ran.image_auroc_sd)  # "mean ± sd", percent
    assert ours.image_auroc.iloc[0] == "n/a" and ours.seeds.tolist() == [0, 2]
    assert (shown.source == pa.BACKBONES_S6.source).sum() == 10


def test_few_shot_draw_is_seeded_and_distinct():
    draws = {seed: pe.draw_shots(50, 5, seed) for seed in (0, 1, 2)}
    for seed, images in draws.items():
        assert images == pe.draw_shots(50, 5, seed)  # same seed, same images
        assert len(set(images)) == 5 and all(0 <= i < 50 for i in images)
    assert len({tuple(d) for d in draws.values()}) == 3  # different seeds, different draws
    assert pe.draw_shots(8, 8, 0) == list(range(8))
    assert pe.draw_shots(8, 9, 0) is None


@pytest.mark.slow
def test_few_shot_table_skips_large_shots_and_summarises(section_1):
    _, _, kept = section_1
    table = pe.few_shot_table(kept, [1, 3, 20], [0, 1], ratio=0.5, full_ratio=0.25)
    assert len(table) == 3 * 2 + 2
    skipped = table[table.status.str.startswith("skipped")]
    assert skipped.shots.tolist() == [20, 20] and "20 shots > 8 training images" in skipped.status.iloc[0]
    ok = table[table.status == "ok"]
    assert ok.bank_size.tolist() == [32, 32, 96, 96]
    assert ok[["image_auroc", "pixel_auroc", "pro"]].apply(lambda c: c.between(0, 1)).all().all()
    images = [s.split() for s in ok[ok.shots == 3].images]
    assert images[0] != images[1]  # seeds 0 and 1 draw different images
    full = table.iloc[-2:]
    assert (full.status == "full training set").all() and (full.ratio == 0.25).all() and full.seed.tolist() == [0, 1]
    assert full.bank_size.tolist() == [len(kept.banks[(0.25, s)][0]) for s in (0, 1)]  # section 1's banks
    summary = pe.few_shot_summary(table)
    assert summary.shots.tolist() == [1, 3] and summary.seeds.tolist() == [2, 2]
    three = ok[ok.shots == 3].image_auroc
    assert summary.image_auroc_mean.iloc[1] == pytest.approx(three.mean())
    assert summary.image_auroc_std.iloc[1] == pytest.approx(three.std(ddof=1))
    shown = pe.few_shot_comparison(summary, table, "ours")
    assert (shown.source.str.startswith(pa.FEW_SHOT_S5.source)).sum() == 8
    whole = shown[shown.method.str.startswith("ours, all images")]
    assert len(whole) == 1 and whole.image_auroc.iloc[0] == round(100 * full.image_auroc.mean(), 1)
    assert whole.image_auroc_spread.iloc[0] == round(100 * full.image_auroc.std(ddof=1), 1)


@pytest.mark.slow
def test_search_table_rows_and_small_bank_note(section_1):
    _, _, kept = section_1
    table = pe.search_table(kept, [0.6, 0.1], ["exact", "ivfpq"], SEEDS)
    jobs = [(r, s, e) for r in (0.6, 0.1) for s in ("exact", "ivfpq") for e in SEEDS]
    assert list(zip(table.ratio, table.search, table.seed)) == jobs  # one row per (ratio, search, seed)
    assert table.bank_size.tolist() == [307] * 4 + [51] * 4
    runs = table.iloc[:6]
    assert runs[METRICS].apply(lambda c: c.between(0, 1)).all().all()
    assert (runs.inference_seconds_per_image > runs.extract_seconds_per_image).all()
    assert "fewer than ivf_nlist" in table.note.iloc[2]  # 307 features < 512 lists: the library's warning kept
    small = table.iloc[6:]
    assert small.note.str.startswith("ivfpq not run").all() and "too small" in small.note.iloc[0]
    assert small.image_auroc.isna().all()
    summary = pe.search_summary(table)
    assert list(zip(summary.ratio, summary.search)) == [(0.6, "exact"), (0.6, "ivfpq"), (0.1, "exact"), (0.1, "ivfpq")]
    assert_seed_means(table, summary, ["ratio", "search"],
                      [*METRICS, "bank_size", "search_seconds_per_image", "inference_seconds_per_image"])
    shown = pe.search_comparison(summary, "ours")
    assert len(shown) == 4 + len(pa.SEARCH_TABLE5.rows)
    first = summary.iloc[0]
    assert shown.image_auroc.iloc[0] == mean_sd(first.image_auroc, first.image_auroc_sd) and " ± " in shown.pro.iloc[0]
    assert shown.image_auroc.iloc[3] == "n/a"  # the ivfpq run that could not train


def test_full_bank_is_computed_once_for_every_seed(section_1):
    _, _, kept = section_1
    runs = pe.evaluate_seeds(kept, 1.0, SEEDS)
    assert [seed for seed, *_ in runs] == SEEDS and runs[0][1] is runs[1][1]  # one bank, no selection
    assert len(runs[0][1]) == 8 * 64 and runs[0][3] is runs[1][3] and pe.FULL_BANK_NOTE in runs[0][3]["note"]
    assert pe.bank_key(kept, 1.0, 0) == pe.bank_key(kept, 1.0, 1) == (1.0, None)


def test_figures_draw_the_papers_values_only_on_its_dataset(section_1):
    _, _, kept = section_1
    few_shot = pe.few_shot_table(kept, [1], [0], ratio=0.5, full_ratio=0.25)
    summary = pe.few_shot_summary(few_shot)
    search = pe.search_summary(pe.search_table(kept, [0.25], ["exact"], SEEDS))
    mvtec, tiles = pe.paper_values("bottle"), pe.paper_values("magnetic_tile")
    assert all(v is not None and len(v) for v in mvtec.values()) and all(v is None for v in tiles.values())
    # Table S6's WideResNet-50 224 px 1% row: the paper's per-class bottle values where it prints them (image and
    # pixel AUROC), its mean for PRO; every other row is a mean of 15, and says so
    s6 = mvtec["backbones"]
    wide = s6[(s6.backbone == "wide_resnet50_2") & (s6.coreset_ratio == 0.01)].iloc[0]
    assert (wide.image_auroc, wide.pixel_auroc, wide.per_class) == (1.0, 0.985, "image_auroc,pixel_auroc")
    assert (s6.drop(index=wide.name).per_class == "").all() and s6.drop(index=wide.name).scope.str.contains("mean of 15").all()
    # Table 5: the exact-search PatchCore-1% row likewise (its seconds stay the paper's mean), the others means
    t5 = mvtec["search"]
    exact = t5[(t5.search == "exact") & (t5.ratio == 0.01)].iloc[0]
    assert (exact.image_auroc, exact.pixel_auroc, exact.per_class) == (1.0, 0.985, "image_auroc,pixel_auroc")
    assert exact.seconds_per_image == pa.SEARCH_TABLE5.frame().seconds_per_image[exact.name]
    assert (t5.drop(index=exact.name).per_class == "").all() and t5.drop(index=exact.name).scope.str.contains("mean of 15").all()
    shown = pe.search_comparison(search, "ours", t5)
    assert shown.source.str.contains("per class").sum() == 1 and shown.source.str.contains("mean of 15").sum() == len(t5)
    for paper, drawn in ((mvtec, True), (tiles, False)):
        figures = [pe.plot_few_shot(summary, few_shot, paper=paper["few_shot"], paper_padim=paper["few_shot_padim"]),
                   pe.plot_search(search, paper=paper["search"])]
        labels = [t for fig in figures for ax in fig.axes for t in ax.get_legend_handles_labels()[1]]
        assert any(t.startswith("paper") for t in labels) == drawn, labels
        assert any(t.startswith("ours") for t in labels)
        texts = [t.get_text() for t in figures[1].axes[0].texts]
        assert sum("per class" in t for t in texts) == drawn, texts  # the bottle's per-class point says so
    ticks = [t.get_text() for t in figures[1].axes[0].get_xticklabels()]
    assert len(ticks) >= 2 and all(ticks), ticks  # the log seconds axis is labelled, not one lone decade


def test_paper_tables_carry_sources_and_fractions():
    for table in pa.PAPER_ABLATIONS.values():
        frame = table.frame()
        assert table.source.startswith("Roth et al. 2022") and (frame.source == table.source).all()
        values = frame[[c for c in ("image_auroc", "pixel_auroc", "pro") if c in frame]].to_numpy(dtype=float)
        values = values[~np.isnan(values)]  # a metric the paper gives only as a plot is missing
        if "printed_values" in frame and not frame.printed_values.any():
            assert not len(values)  # a table of what the paper shows as plots only: no numbers of ours in it
            continue
        assert len(values) and ((values >= 0.5) & (values <= 1)).all()
    assert pa.FEW_SHOT_S5.frame().set_index("shots").image_auroc[16] == pytest.approx(0.955)
    coreset = pa.CORESET_VS_RANDOM.frame()
    assert coreset[coreset.sampler == "random"].approximate.all()
    assert not coreset[(coreset.sampler == "approx_greedy") & (coreset.ratio == 0.01)].approximate.any()


def test_bad_list_parameter_is_a_config_error():
    with pytest.raises(ConfigError, match="searches"):
        validate_parameters({"searches": ["annoy"]})
    with pytest.raises(ConfigError, match="non-empty"):
        validate_parameters({"shots": []})


@pytest.mark.slow
@pytest.mark.notebook
def test_notebook_runs_on_the_synthetic_set(tiny, section_1):
    papermill = pytest.importorskip("papermill")
    base, params = tiny
    run = {**params, "run_id": "nb", "coreset_ratio": 0.5, "backbones": ["efficientnet_lite0"], "imagesizes": [64],
           "seeds": SEEDS, "shots": [1, 3, 50], "shot_seeds": [0, 1], "search_ratios": [1.0, 0.5],
           "searches": ["exact", "ivfpq"]}
    papermill.execute_notebook(str(NOTEBOOK), str(base / "07.ipynb"), parameters=run, kernel_name="python3",
                               progress_bar=False, cwd=str(base))
    folder = Path(params["reports_dir"]) / "07_paper_experiments" / "nb"
    assert not [name for name in OUTPUTS if not (folder / name).is_file()]
    metrics = json.loads((folder / "metrics.json").read_text())["metrics"]
    assert metrics["feature_cache_hits"] == {"train": True, "test": True}  # cached by the fixture's run
    assert metrics["seeds"] == SEEDS
    backbone_runs = pd.read_csv(folder / "backbone_imagesize_runs.csv")
    backbone = pd.read_csv(folder / "backbone_imagesize.csv")
    assert backbone_runs.seed.tolist() == SEEDS and len(backbone) == 1 and backbone.seeds.tolist() == [2]
    assert_seed_means(backbone_runs, backbone, ["backbone", "imagesize"], [*METRICS, "fit_seconds"])
    assert {f"{m}_sd" for m in METRICS} <= set(metrics["backbone_imagesize"][0])
    assert " ± " in pd.read_csv(folder / "backbone_imagesize_vs_paper.csv").image_auroc.iloc[0]
    search_runs = pd.read_csv(folder / "search_time_runs.csv")
    search = pd.read_csv(folder / "search_time.csv")
    assert len(search_runs) == 2 * 2 * len(SEEDS) and search_runs.image_auroc.between(0, 1).all()
    assert len(search) == 4 and (search.seeds == 2).all()  # 0.5 reuses section 1's banks
    assert_seed_means(search_runs, search, ["ratio", "search"], [*METRICS, "inference_seconds_per_image"])
    full = search[search.ratio == 1.0]
    assert (full.image_auroc_sd == 0).all() and full.note.str.contains("100% bank").all()  # no seed dependence
    assert {f"{m}_sd" for m in METRICS} <= set(metrics["search"][0]) and len(metrics["search_runs"]) == 8
    few = pd.read_csv(folder / "few_shot_runs.csv")
    assert (few.status.str.startswith("skipped")).sum() == 2
    assert few.status.iloc[-2:].tolist() == ["full training set"] * 2 and few.seed.iloc[-2:].tolist() == SEEDS
    with pytest.raises(papermill.PapermillExecutionError) as info:
        papermill.execute_notebook(str(NOTEBOOK), str(base / "07_bad.ipynb"),
                                   parameters={**run, "run_id": "bad", "shots": [0]}, kernel_name="python3",
                                   progress_bar=False, cwd=str(base))
    assert info.value.ename == "ConfigError" and "shots" in info.value.evalue

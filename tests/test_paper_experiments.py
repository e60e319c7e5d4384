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
from patchcore_lib.study.params import config_from_params, validate_parameters
from helpers import NOTEBOOKS

NOTEBOOK = NOTEBOOKS / "07_paper_experiments.ipynb"
OUTPUTS = ["backbone_imagesize.csv", "backbone_imagesize_vs_paper.csv", "backbone_imagesize.png", "few_shot_runs.csv",
           "few_shot_summary.csv", "few_shot_vs_paper.csv", "few_shot.png", "search_time.csv",
           "search_time_vs_paper.csv", "search_time.png", "metrics.json"]


@pytest.fixture(scope="module")
def tiny(notebook_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("nb07")
    params = {"data_root": str(notebook_root), "category": "tiny", "backbone": "efficientnet_lite0",
              "resize": 64, "imagesize": 64, "crop": "none", "coreset_ratio": 0.25, "device": "cpu",
              "reports_dir": str(base / "reports"), "cache_dir": str(base / "cache"), "run_id": "test"}
    return base, params


@pytest.fixture(scope="module")
def section_1(tiny, tmp_path_factory):
    """Backbone table with an empty torch hub cache: wide_resnet50_2 has no weights, efficientnet_lite0 (weights
    from its pip package) runs and its features are kept."""
    _, params = tiny
    params = validate_parameters(params)
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path_factory.mktemp("empty_hub")))
    try:
        table, kept = pe.backbone_size_table(params, ["wide_resnet50_2", "efficientnet_lite0"], [64],
                                             keep=config_from_params(params), log=None)
    finally:
        torch.hub.set_dir(previous)
    return params, table, kept


def test_resize_follows_the_official_geometry():
    assert pe.resize_for(224) == 256 and pe.resize_for(320) == 366
    assert pe.resize_for(320, "none") == 320


def test_backbone_rows_say_when_weights_are_missing(section_1):
    _, table, kept = section_1
    assert table.backbone.tolist() == ["wide_resnet50_2", "efficientnet_lite0"]
    missing, ran = table.iloc[0], table.iloc[1]
    assert missing.status.startswith("weights not present") and "wide_resnet50_2-95faca4d.pth" in missing.status
    assert math.isnan(missing.image_auroc)
    assert ran.status == "ok" and ran.resize == 64 and ran.bank_size == math.ceil(0.25 * 8 * 64)
    assert all(0 <= ran[m] <= 1 for m in ("image_auroc", "pixel_auroc", "pro"))
    assert ran.fit_seconds > 0 and ran.seconds_per_test_image > 0
    assert kept is not None and kept.train.shape == (8, 64, 384) and kept.test.shape == (3 + 2 * 4, 64, 384)
    assert 0.25 in kept.banks  # the bank of section 1 is kept for re-use
    shown = pe.backbone_comparison(table, "ours")
    assert shown[shown.source == "ours"].image_auroc.iloc[1] == round(100 * ran.image_auroc, 1)
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
    assert len(table) == 3 * 2 + 1
    skipped = table[table.status.str.startswith("skipped")]
    assert skipped.shots.tolist() == [20, 20] and "20 shots > 8 training images" in skipped.status.iloc[0]
    ok = table[table.status == "ok"]
    assert ok.bank_size.tolist() == [32, 32, 96, 96]
    assert ok[["image_auroc", "pixel_auroc", "pro"]].apply(lambda c: c.between(0, 1)).all().all()
    images = [s.split() for s in ok[ok.shots == 3].images]
    assert images[0] != images[1]  # seeds 0 and 1 draw different images
    full = table.iloc[-1]
    assert full.status == "full training set" and full.ratio == 0.25 and full.bank_size == len(kept.banks[0.25][0])
    summary = pe.few_shot_summary(table)
    assert summary.shots.tolist() == [1, 3] and summary.seeds.tolist() == [2, 2]
    three = ok[ok.shots == 3].image_auroc
    assert summary.image_auroc_mean.iloc[1] == pytest.approx(three.mean())
    assert summary.image_auroc_std.iloc[1] == pytest.approx(three.std(ddof=1))
    shown = pe.few_shot_comparison(summary, table, "ours")
    assert (shown.source.str.startswith(pa.FEW_SHOT_S5.source)).sum() == 8


@pytest.mark.slow
def test_search_table_rows_and_small_bank_note(section_1):
    _, _, kept = section_1
    table = pe.search_table(kept, [0.6, 0.1], ["exact", "ivfpq"])
    assert list(zip(table.ratio, table.search)) == [(0.6, "exact"), (0.6, "ivfpq"), (0.1, "exact"), (0.1, "ivfpq")]
    assert table.bank_size.tolist() == [307, 307, 51, 51]
    runs = table.iloc[[0, 1, 2]]
    assert runs[["image_auroc", "pixel_auroc", "pro"]].apply(lambda c: c.between(0, 1)).all().all()
    assert (runs.inference_seconds_per_image > runs.extract_seconds_per_image).all()
    assert "fewer than ivf_nlist" in table.note.iloc[1]  # 307 features < 512 lists: the library's warning kept
    small = table.iloc[3]
    assert small.note.startswith("ivfpq not run") and "too small" in small.note and math.isnan(small.image_auroc)
    shown = pe.search_comparison(table, "ours")
    assert len(shown) == 4 + len(pa.SEARCH_TABLE5.rows)


def test_figures_draw_the_papers_values_only_on_its_dataset(section_1):
    _, _, kept = section_1
    few_shot = pe.few_shot_table(kept, [1], [0], ratio=0.5, full_ratio=0.25)
    summary = pe.few_shot_summary(few_shot)
    search = pe.search_table(kept, [0.25], ["exact"])
    mvtec, tiles = pe.paper_values("bottle"), pe.paper_values("magnetic_tile")
    assert all(v is not None and len(v) for v in mvtec.values()) and all(v is None for v in tiles.values())
    for paper, drawn in ((mvtec, True), (tiles, False)):
        figures = [pe.plot_few_shot(summary, few_shot, paper=paper["few_shot"], paper_padim=paper["few_shot_padim"]),
                   pe.plot_search(search, paper=paper["search"])]
        labels = [t for fig in figures for ax in fig.axes for t in ax.get_legend_handles_labels()[1]]
        assert any(t.startswith("paper") for t in labels) == drawn, labels
        assert any(t.startswith("ours") for t in labels)
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
           "shots": [1, 3, 50], "shot_seeds": [0, 1], "search_ratios": [1.0, 0.5], "searches": ["exact", "ivfpq"]}
    papermill.execute_notebook(str(NOTEBOOK), str(base / "07.ipynb"), parameters=run, kernel_name="python3",
                               progress_bar=False, cwd=str(base))
    folder = Path(params["reports_dir"]) / "07_paper_experiments" / "nb"
    assert not [name for name in OUTPUTS if not (folder / name).is_file()]
    metrics = json.loads((folder / "metrics.json").read_text())["metrics"]
    assert metrics["feature_cache_hits"] == {"train": True, "test": True}  # cached by the fixture's run
    search = pd.read_csv(folder / "search_time.csv")
    assert len(search) == 4 and search.image_auroc.between(0, 1).all()  # 0.5 reuses section 1's bank
    few = pd.read_csv(folder / "few_shot_runs.csv")
    assert (few.status.str.startswith("skipped")).sum() == 2 and few.status.iloc[-1] == "full training set"
    with pytest.raises(papermill.PapermillExecutionError) as info:
        papermill.execute_notebook(str(NOTEBOOK), str(base / "07_bad.ipynb"),
                                   parameters={**run, "run_id": "bad", "shots": [0]}, kernel_name="python3",
                                   progress_bar=False, cwd=str(base))
    assert info.value.ename == "ConfigError" and "shots" in info.value.evalue

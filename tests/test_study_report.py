"""The report helpers of notebook 05 (collect runs, summary table, markdown) and the reference tables."""
from __future__ import annotations

import os
import time

import pandas as pd
import pytest

from patchcore_lib.errors import ConfigError
from patchcore_lib.paper import reference
from patchcore_lib.paper.anchors import paper_other_datasets
from patchcore_lib.study import report
from patchcore_lib.study.report import table as report_table
from patchcore_lib.study.evaluate import setting_name
from patchcore_lib.study.outputs import write_metrics
from patchcore_lib.study.params import with_config_defaults


def test_reference_tables():
    paper = reference.paper_table()
    means = paper[paper["category"] == "mean"].set_index("method")
    assert means.loc["PatchCore-25%", "image_auroc"] == pytest.approx(0.991)
    assert means.loc["PatchCore-10%", "pro"] == pytest.approx(0.935)
    assert means.loc["PatchCore-1%", "pixel_auroc"] == pytest.approx(0.980)
    assert means.loc["PaDiM", "image_auroc"] == pytest.approx(0.953)
    official = reference.official_mean()
    assert official["anomaly_pro"] == pytest.approx(0.944, abs=5e-4)  # README headline of IM224 WR50
    assert pd.isna(official["pro"])  # no official column has our all-images PRO definition
    bottle = reference.official_results().set_index("category").loc["bottle"]
    assert bottle["pixel_auroc"] == bottle["full_pixel_auroc"] and bottle["anomaly_pro"] == bottle["anomaly_pro"]
    assert bottle["anomaly_pixel_auroc"] == pytest.approx(0.9795612184704285)
    assert set(reference.official_results()["category"]) - {"mean"} == set(reference.MVTEC_CATEGORIES)
    recorded = {"backbone": "wide_resnet50_2", "imagesize": 320, "coreset_ratio": 0.01}  # the rest: defaults
    assert reference.official_run_for(with_config_defaults(recorded)) == "IM320_WR50_L2-3_P001_D1024-1024_PS-3_AN-1"
    assert len(reference.reference_for("bottle")) >= 6
    assert reference.reference_for("synthetic_texture").empty
    with pytest.raises(ConfigError):
        reference.official_results("nope")


def test_summary_table_and_markdown(tmp_path):
    config = {"backbone": "wide_resnet50_2", "layers": ["layer2", "layer3"], "imagesize": 224, "coreset_ratio": 0.1,
              "patch_size": 3, "num_nn": 1}
    runs = pd.DataFrame([
        {"method": "PatchCore", "setting": setting_name(config), "category": "bottle", "image_auroc": 1.0,
         "pixel_auroc": 0.98, "pro": 0.95, "anomaly_pixel_auroc": 0.97, "anomaly_pro": 0.96,
         "mask_convention": "official", "config": config},
        {"method": "PatchCore", "setting": setting_name(config), "category": "mine", "image_auroc": 0.9,
         "pixel_auroc": 0.9, "pro": 0.8, "config": config},
    ])
    table = report.summary_table(runs)
    bottle = table[table["category"] == "bottle"].iloc[0]
    assert bottle["dataset"] == "MVTec AD" and bottle["official_run"] == "IM224_WR50_L2-3_P01_D1024-1024_PS-3_AN-1"
    assert bottle["diff_official_pixel_auroc"] == pytest.approx(98.0 - 98.48388278688711)
    # each official column against our metric of the same definition; our all-images PRO against none
    assert bottle["diff_official_anomaly_pro"] == pytest.approx(96.0 - 97.14400665245521)
    assert bottle["diff_official_anomaly_pixel_auroc"] == pytest.approx(97.0 - 97.95612184704285)
    assert pd.isna(bottle["official_pro"]) and pd.isna(bottle["diff_official_pro"])
    assert bottle["mask_convention"] == "official"
    assert pd.isna(table[table["category"] == "mine"].iloc[0]["official_image_auroc"])
    # no per-class value for PatchCore-10%: the per-class PatchCore-1% value (named, as published), never the
    # 15-class mean where a per-class value exists; the mean only for PRO (no per-class PRO stored), labelled
    assert bottle["paper_image_auroc"] == 100.0 and bottle["paper_pixel_auroc"] == 98.5
    assert bottle["paper_pro"] == 93.5
    assert bottle["paper_source"] == ("PatchCore-1%, bottle (per class; ours: PatchCore-10%) [image_auroc, "
                                      "pixel_auroc]; PatchCore-10%, mean of 15 (no per-class value) [pro]")
    mine = table[table["category"] == "mine"].iloc[0]
    assert mine["dataset"] == "mine" and pd.isna(mine["official_image_auroc"]) and pd.isna(mine["paper_image_auroc"])
    assert not any(str(c).startswith("mean") for c in table["category"])  # one MVTec class: no mean, none across datasets
    report.style_summary(table).to_html()
    paths = report.write_summary(tmp_path, table)
    text = paths["md"].read_text()
    raw = paths["csv"].read_text()
    assert ",98.5," in raw and "98.50000" not in raw  # published values written as given
    # no anchor for WideResNet-50: a footnote says why; the data note under the table
    assert "Official code here: no official-code run with this setting" in text
    assert "backbone wide_resnet50_2 (random weights)" in text  # the closest anchor, and what differs
    assert "stored in `../shared/data/mvtec_ad/bottle` at 512x512 px" in text and "official MVTec AD split" in text
    assert "IM224_WR50_L2-3_P01_D1024-1024_PS-3_AN-1" in text and "| bottle |" in text
    assert "Ground-truth masks: `official` convention." in text and "Ground-truth masks: `nearest` convention." in text
    assert text.index("## MVTec AD") < text.index("## mine")


def test_summary_per_class_paper_anchor_and_other_datasets():
    lite = {"backbone": "efficientnet_lite0", "layers": ["blocks.2", "blocks.4"], "imagesize": 224,
            "coreset_ratio": 0.1, "patch_size": 3, "num_nn": 1, "pretrain_embed_dimension": 1024,
            "target_embed_dimension": 1024}
    one = {**lite, "coreset_ratio": 0.01}
    rows = [{"method": "PatchCore", "setting": setting_name(c), "category": cat, "image_auroc": 0.9,
             "pixel_auroc": 0.9, "pro": 0.9, "config": c, "mask_convention": "official"}
            for c in (lite, one) for cat in ("bottle", "cable", "magnetic_tile")]
    nearest = {**lite, "target_embed_dimension": 384}
    rows += [{"method": "PatchCore", "setting": setting_name(nearest), "category": "bottle", "image_auroc": 0.9,
              "pixel_auroc": 0.9, "pro": 0.9, "config": nearest, "mask_convention": "nearest"},
             {"method": "PatchCore", "setting": setting_name(lite) + "_masks-nearest", "category": "bottle",
              "image_auroc": 0.9, "pixel_auroc": 0.9, "pro": 0.9, "config": lite, "mask_convention": "nearest"}]
    table = report.summary_table(pd.DataFrame(rows))
    b10 = table[(table["category"] == "bottle") & (table["setting"] == setting_name(lite))].iloc[0]
    assert b10["anchor_image_auroc"] == 100.0 and b10["anchor_pro"] == 94.99 and b10["anchor_pixel_auroc"] == 98.381
    assert "D1024-1024" in b10["anchor_run"] and "shared/data" in b10["anchor_run"] and b10["anchor_note"] == ""
    assert b10["diff_anchor_pixel_auroc"] == pytest.approx(90.0 - 98.381)
    # the anchor ran with 1024 -> 1024 embeddings: no anchor for our 384-dim default
    b384 = table[table["setting"] == setting_name(nearest)].iloc[0]
    assert pd.isna(b384["anchor_image_auroc"]) and "embedding dims D1024-1024" in b384["anchor_note"]
    # nearest-neighbour masks: image AUROC compared with the official code, pixel metrics not (other masks)
    masks_nearest = table[table["setting"] == setting_name(lite) + "_masks-nearest"].iloc[0]
    assert masks_nearest["anchor_image_auroc"] == pytest.approx(100.0)
    assert pd.isna(masks_nearest["anchor_pixel_auroc"]) and pd.isna(masks_nearest["anchor_pro"])
    b1 = table[(table["category"] == "bottle") & (table["setting"] == setting_name(one))].iloc[0]
    # per class for image and pixel AUROC; the paper's per-class PRO is not stored: its mean, marked
    assert b1["paper_source"] == ("PatchCore-1%, bottle (per class) [image_auroc, pixel_auroc]; PatchCore-1%, "
                                  "mean of 15 (no per-class value) [pro]")
    assert pd.isna(b1["anchor_image_auroc"]) and "coreset 0.1" in b1["anchor_note"]
    mt10 = table[(table["category"] == "magnetic_tile") & (table["setting"] == setting_name(lite))].iloc[0]
    assert mt10["dataset"] == "magnetic_tile" and mt10["paper_image_auroc"] == pytest.approx(97.9)
    assert pd.isna(mt10["paper_pixel_auroc"]) and pd.isna(mt10["anchor_image_auroc"])  # anchor is at 1%
    assert "coreset 0.01" in mt10["anchor_note"]
    mt1 = table[(table["category"] == "magnetic_tile") & (table["setting"] == setting_name(one))].iloc[0]
    # the paper's only MTD value is PatchCore-10%: shown beside our 1% run, its label names both settings
    assert mt1["anchor_image_auroc"] == pytest.approx(71.2) and mt1["paper_image_auroc"] == pytest.approx(97.9)
    assert mt1["paper_source"] == ("PatchCore-10% on Magnetic Tile Defects (MTD) (the paper's only setting there; "
                                   "ours: PatchCore-1%)")
    assert "ours:" not in mt10["paper_source"]
    # no MTD value for the baselines (the paper reports PatchCore only there)
    assert pd.isna(report_table._paper_value(reference.paper_table(), paper_other_datasets(), "PaDiM",
                                             "magnetic_tile", "image_auroc")[0])
    means = table[table["category"].str.startswith("mean")]
    assert list(means["category"]) == ["mean (2 classes)"] * 2 and set(means["dataset"]) == {"MVTec AD"}
    assert list(table["dataset"]).index("magnetic_tile") > max(i for i, d in enumerate(table["dataset"])
                                                                if d == "MVTec AD")


def test_collect_runs_and_baselines(tmp_path):
    config = {"backbone": "efficientnet_lite0", "layers": ["blocks.2", "blocks.4"], "imagesize": 64,
              "coreset_ratio": 0.1}
    for run, auroc in (("bottle-old", 0.5), ("bottle-new", 0.9)):
        folder = tmp_path / "04_evaluate" / run
        folder.mkdir(parents=True)
        write_metrics(folder, {"category": "bottle", "image_auroc": auroc, "pixel_auroc": 0.9, "pro": 0.8,
                               "fit_seconds": 1.0, "predict_seconds_per_image": 0.1, "memory_bank_size": 10,
                               "config": config})
        os.utime(folder / "metrics.json", (time.time() + (auroc > 0.6), time.time() + (auroc > 0.6)))
    official = tmp_path / "04_evaluate" / "bottle-official"
    official.mkdir(parents=True)
    write_metrics(official, {"category": "bottle", "image_auroc": 1.0, "pixel_auroc": 0.98, "pro": 0.9,
                             "anomaly_pixel_auroc": 0.97, "anomaly_pro": 0.93, "mask_convention": "official",
                             "config": config})
    runs = report.collect_runs(tmp_path)
    assert len(runs) == 2  # the official-mask run is a setting of its own
    nearest = runs[runs["mask_convention"] == "nearest"].iloc[0]
    assert nearest["image_auroc"] == 0.9 and nearest["run_id"] == "bottle-new"
    marked = runs[runs["mask_convention"] == "official"].iloc[0]
    assert marked["setting"].endswith("_masks-official") and marked["anomaly_pro"] == 0.93
    flat = tmp_path / "06_baselines" / "flat"
    flat.mkdir(parents=True)
    write_metrics(flat, {"method": "padim", "category": "bottle", "image_auroc": 0.95, "pixel_auroc": 0.97,
                         "pro": 0.9})
    nested = tmp_path / "06_baselines" / "nested"
    nested.mkdir(parents=True)
    write_metrics(nested, {"category": "cable", "padim": {"image_auroc": 0.9, "pixel_auroc": 0.9, "pro": 0.9},
                           "orthoad": {"image_auroc": 0.8, "pixel_auroc": 0.8, "pro": 0.8}})
    baselines = report.collect_baselines(tmp_path)
    assert sorted(zip(baselines["method"], baselines["category"])) == [("orthoad", "cable"), ("padim", "bottle"),
                                                                       ("padim", "cable")]
    assert report.collect_baselines(tmp_path / "nowhere").empty


def test_collect_baselines_runs_list_format(tmp_path):
    folder = tmp_path / "06_baselines" / "x"
    folder.mkdir(parents=True)
    write_metrics(folder, {"category": "bottle", "backbone": "resnet18", "runs": [
        {"source": "this run", "method": "patchcore", "run": "PatchCore", "image_auroc": 1.0, "pixel_auroc": 1.0,
         "pro": 1.0},
        {"source": "this run", "method": "padim", "run": "PaDiM d=100", "image_auroc": 0.9, "pixel_auroc": 0.9,
         "pro": 0.9},
        {"source": "PaDiM paper", "method": "padim", "run": "paper", "image_auroc": 0.95, "pixel_auroc": 0.97,
         "pro": 0.92}]})
    baselines = report.collect_baselines(tmp_path)
    assert list(baselines["method"]) == ["padim"] and baselines.iloc[0]["setting"] == "PaDiM d=100, resnet18"


def test_setting_name_always_names_the_embedding_dimensions():
    lite = {"backbone": "efficientnet_lite0", "layers": ["blocks.2", "blocks.4"], "imagesize": 224,
            "coreset_ratio": 0.1}
    assert setting_name(lite) == "IM224_efficientnet_lite0_L2-4_P0.1_D1024-384_PS-3_AN-1"  # the backbone's default
    assert setting_name({**lite, "target_embed_dimension": 1024}) == \
        "IM224_efficientnet_lite0_L2-4_P0.1_D1024-1024_PS-3_AN-1"
    wide = {"backbone": "wide_resnet50_2", "layers": ["layer2", "layer3"], "imagesize": 224, "coreset_ratio": 0.1,
            "crop": "none"}
    assert setting_name(wide) == "IM224_wide_resnet50_2_L2-3_P0.1_D1024-1024_PS-3_AN-1_crop-none"


def _write_run(folder, category, config, **metrics):
    folder.mkdir(parents=True)
    write_metrics(folder, {"category": category, "image_auroc": 1.0, "pixel_auroc": 0.98, "pro": 0.95,
                           "config": config, **metrics})


def test_seed_means_with_sd_old_records_and_the_figure(tmp_path):
    config = {"backbone": "efficientnet_lite0", "layers": ["blocks.2", "blocks.4"], "imagesize": 224,
              "resize": 256, "coreset_ratio": 0.01, "pretrain_embed_dimension": 1024,
              "target_embed_dimension": 1024, "setting": "old name"}
    # a record of the new format (mean over seeds, sample sd, per seed) and an old one without those keys
    _write_run(tmp_path / "04_evaluate" / "bottle-a", "bottle", config, image_auroc=0.993, image_auroc_sd=0.002,
               pixel_auroc_sd=0.0004, pro_sd=0.001, seeds=[0, 1, 2],
               per_seed={"image_auroc": [0.991, 0.993, 0.995]}, setting="IM224_old_name")
    _write_run(tmp_path / "04_evaluate" / "magnetic_tile-b", "magnetic_tile", {**config, "crop": "none"},
               image_auroc=0.9)
    runs = report.collect_runs(tmp_path)
    bottle = runs[runs["category"] == "bottle"].iloc[0]
    # the setting is named from the config (with its dims), not the name an older record stored
    assert bottle["setting"] == "IM224_efficientnet_lite0_L2-4_P0.01_D1024-1024_PS-3_AN-1"
    assert bottle["image_auroc_sd"] == 0.002 and bottle["seeds"] == "0,1,2" and bottle["folder"] == "04_evaluate/bottle-a"
    tiles = runs[runs["category"] == "magnetic_tile"].iloc[0]
    assert pd.isna(tiles["image_auroc_sd"]) and tiles["seeds"] == ""
    shown = report.runs_for_display(runs)
    assert list(shown["image (%)"]) == ["99.3 ± 0.2", "90.0"] and "/tmp" not in " ".join(shown["folder"])
    assert "mask_convention" not in shown and set(shown["bank"]) == {"-"}  # the convention is in the setting name
    table = report.summary_table(runs)
    compact = report.compact_table(table[table["category"] == "bottle"], as_text=True)
    assert compact["image ours"].iloc[0] == "99.3 ± 0.2" and compact["pixel ours"].iloc[0] == "98.0 ± 0.0"
    assert compact["image paper"].iloc[0] == "100.0"  # PatchCore-1% per class, as published
    fig = report.plot_summary(table)
    paths = report.write_summary(tmp_path, table, fig)
    text = paths["md"].read_text()
    assert "| bottle | 99.3 ± 0.2 |" in text and "mean ± sample sd over seeds 0,1,2" in text
    assert "A seed changes only the coreset" in text and "deterministic split of the good images" in text
    # one panel per category, none empty; the paper's MTD value (97.9) drawn on the tiles' panel, every bar
    # labelled with its value, the paper's bars hatched in PatchCore's colour and named with their source
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert ax.patches and ax.get_ylim()[1] > 100.5
    tile_ax = next(ax for ax in fig.axes if ax.get_title() == "magnetic_tile")
    heights = [round(p.get_height(), 1) for p in tile_ax.patches]
    assert 97.9 in heights and "97.9" in [t.get_text() for t in tile_ax.texts]
    legend = [t.get_text() for t in tile_ax.get_legend().get_texts()]
    assert any(t.startswith("paper: PatchCore-10% on Magnetic Tile Defects") for t in legend)
    bottle_ax = next(ax for ax in fig.axes if ax is not tile_ax)
    bottle_legend = [t.get_text() for t in bottle_ax.get_legend().get_texts()]
    assert "paper: PatchCore-10%, mean of 15 (no per-class value)" in bottle_legend or any(
        "mean of 15" in t for t in bottle_legend)
    assert any(t.startswith("official code here:") for t in bottle_legend) is False  # coreset 0.01: no anchor
    colours = {tuple(round(c, 3) for c in p.get_facecolor()[:3]) for p in tile_ax.patches}
    assert len(colours) == 1  # PatchCore only: one colour for ours and the paper


def test_data_descriptions():
    assert "512x512" in report.data_description("bottle")["image_size"]
    assert "every 5th" in report.data_description("magnetic_tile")["split"]
    assert "official MVTec AD split" in report.data_description("cable")["split"]
    note = report.data_note("magnetic_tile", {"crop": "none", "imagesize": 224})
    assert "whole image resized to 224 px" in note

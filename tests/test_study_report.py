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
    # no per-class source for PatchCore-10%: the paper's class mean, marked
    assert bottle["paper_image_auroc"] == pytest.approx(99.0) and "mean of 15" in bottle["paper_source"]
    mine = table[table["category"] == "mine"].iloc[0]
    assert mine["dataset"] == "mine" and pd.isna(mine["official_image_auroc"]) and pd.isna(mine["paper_image_auroc"])
    assert not any(str(c).startswith("mean") for c in table["category"])  # one MVTec class: no mean, none across datasets
    report.style_summary(table).to_html()
    paths = report.write_summary(tmp_path, table)
    text = paths["md"].read_text()
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
    assert b10["anchor_image_auroc"] == pytest.approx(100.0) and b10["anchor_pro"] == pytest.approx(94.99)
    assert b10["diff_anchor_pixel_auroc"] == pytest.approx(90.0 - 98.381)
    # the anchor ran with 1024 -> 1024 embeddings: no anchor for our 384-dim default
    assert pd.isna(table[table["setting"] == setting_name(nearest)].iloc[0]["anchor_image_auroc"])
    # nearest-neighbour masks: image AUROC compared with the official code, pixel metrics not (other masks)
    masks_nearest = table[table["setting"] == setting_name(lite) + "_masks-nearest"].iloc[0]
    assert masks_nearest["anchor_image_auroc"] == pytest.approx(100.0)
    assert pd.isna(masks_nearest["anchor_pixel_auroc"]) and pd.isna(masks_nearest["anchor_pro"])
    b1 = table[(table["category"] == "bottle") & (table["setting"] == setting_name(one))].iloc[0]
    # per class for image and pixel AUROC; the paper's per-class PRO is not stored: its mean, marked
    assert b1["paper_source"] == "PatchCore-1% (per class); PatchCore-1% (mean of 15, no per-class source)"
    assert pd.isna(b1["anchor_image_auroc"])
    mt10 = table[(table["category"] == "magnetic_tile") & (table["setting"] == setting_name(lite))].iloc[0]
    assert mt10["dataset"] == "magnetic_tile" and mt10["paper_image_auroc"] == pytest.approx(97.9)
    assert pd.isna(mt10["paper_pixel_auroc"]) and pd.isna(mt10["anchor_image_auroc"])  # anchor is at 1%
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

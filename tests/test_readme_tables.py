"""README's result tables are generated from the committed reports (python -m patchcore_lib.study.readme)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from patchcore_lib.study import readme, report
from patchcore_lib.study.evaluate import setting_name

ROOT = Path(__file__).resolve().parents[1]


def test_readme_block_equals_what_the_committed_reports_give():
    text = (ROOT / "README.md").read_text()
    assert readme.replace_block(text, readme.readme_block(ROOT / "reports")) == text, \
        "README.md's results block is stale: run python -m patchcore_lib.study.readme"
    assert readme.main(["--check"]) == 0


def test_block_from_reports(tmp_path):
    config = {"backbone": "efficientnet_lite0", "layers": ["blocks.2", "blocks.4"], "imagesize": 224,
              "coreset_ratio": 0.1, "patch_size": 3, "num_nn": 1, "pretrain_embed_dimension": 1024,
              "target_embed_dimension": 1024}
    runs = pd.DataFrame([{"method": "PatchCore", "setting": setting_name(config), "category": c,
                          "image_auroc": a, "pixel_auroc": 0.9, "pro": 0.8, "config": config}
                         for c, a in (("bottle", 0.995), ("magnetic_tile", 0.75))])
    report.write_summary(tmp_path, report.summary_table(runs))
    variant = tmp_path / readme.VARIANTS / "B_none224"
    variant.mkdir(parents=True)
    (variant / "results.csv").write_text("category,image_auroc,pixel_auroc,pro,anomaly_pixel_auroc,anomaly_pro,"
                                         "fit_seconds,predict_seconds,predict_seconds_per_image\n"
                                         "magnetic_tile,0.9,0.8,0.7,0.6,0.5,100,50,0.1\nmean,0.9,0.8,0.7,0.6,0.5,100,50,0.1\n")
    (variant / "run.json").write_text(json.dumps({"config": {"crop": "none", "resize": 224, "imagesize": 224,
                                                             "coreset_ratio": 0.01, "pretrain_embed_dimension": 1024,
                                                             "target_embed_dimension": 384},
                                                  "evaluation": {"mask_convention": "official"}}))
    (variant.parent / "reweighted_distances-magnetic_tile.json").write_text(json.dumps(
        {"image_auroc_reweighted_sqeuclidean": 0.8, "image_auroc_reweighted_euclidean": 0.8,
         "largest_relative_score_difference": 1e-7, "images": 583, "reweight_neighbourhood": 3}))
    (tmp_path / readme.INSPECTION).mkdir()
    (tmp_path / readme.INSPECTION / "bottle.json").write_text(json.dumps(
        {"category": "bottle", "fit_seconds": 30.2, "threshold": 5686.0, "false_alarms": 1, "normal_images": 20,
         "false_alarm_rate": 0.05, "misses": 0, "defect_images": 63, "miss_rate": 0.0,
         "images_per_second_with_overlays": 3.5, "export_max_relative_difference": 2.4e-6, "export_images": 83}))
    block = readme.readme_block(tmp_path)
    assert block.startswith(readme.BEGIN) and block.endswith(readme.END)
    assert block.index("**MVTec AD") < block.index("**magnetic_tile, PatchCore")
    assert "| bottle | 99.5 | 99.0 | 100.0 | 100.0 |" in block  # ours, paper mean (marked), official, anchor
    assert "| magnetic_tile | 75.0 | 97.9 | 90.0 | 80.0 |" in block  # image ours/paper, pixel ours, PRO ours
    assert "mean of 15" in block and "Magnetic Tile Defects" in block
    assert ("| B_none224 | magnetic_tile | whole image to 224² | 1024-384 | official | - | 0.01 | max | 90.0 | 80.0 | "
            "70.0 | 60.0 | 50.0 | 100 s | 0.100 s |") in block
    assert "image AUROC 80.00 with `distance=sqeuclidean`, 80.00 with `euclidean`" in block
    assert "| bottle | 30 s | 5686.0 | 1/20 = 5.0% | 0/63 = 0.0% | 3.50 | 2.4e-06 (83 images) |" in block
    text = f"intro\n{readme.BEGIN}\nold\n{readme.END}\ntail\n"
    assert readme.replace_block(text, block) == f"intro\n{block}\ntail\n"
    with pytest.raises(ValueError, match="no generated block"):
        readme.replace_block("no markers", block)

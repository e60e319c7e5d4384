"""The result tables of README.md and docs/ are generated from the committed reports
(python -m patchcore_lib.study.readme); README.md stays a short front door whose links, like those of docs/,
all resolve."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from patchcore_lib.study import readme, report
from patchcore_lib.study.evaluate import setting_name
from patchcore_lib.utils.store import Store
from patchcore_lib.study.evaluate import setting_name
from helpers import ROOT

README_MAX_LINES = 150


def test_generated_blocks_equal_what_the_committed_reports_give():
    for relative, make in readme.BLOCKS.items():
        text = (ROOT / relative).read_text()
        assert readme.replace_block(text, make(ROOT / "reports")) == text, \
            f"{relative}'s results block is stale: run python -m patchcore_lib.study.readme"
    assert readme.main(["--check"]) == 0


def _reports(tmp_path: Path) -> Path:
    """A reports folder with a PatchCore and a PaDiM summary row, a variant, the Eq. 7 check and an
    inspection-line record."""
    config = {"backbone": "efficientnet_lite0", "layers": ["blocks.2", "blocks.4"], "imagesize": 224,
              "coreset_ratio": 0.1, "patch_size": 3, "num_nn": 1, "pretrain_embed_dimension": 1024,
              "target_embed_dimension": 1024}
    rows = [{"method": "PatchCore", "setting": setting_name(config), "category": c, "image_auroc": a,
             "pixel_auroc": 0.9, "pro": 0.8, "config": config} for c, a in (("bottle", 0.995), ("magnetic_tile", 0.75))]
    rows.append({"method": "padim", "setting": "PaDiM d=100, efficientnet_lite0", "category": "bottle",
                 "image_auroc": 0.97, "pixel_auroc": 0.96, "pro": 0.85, "config": config})
    reports = tmp_path / "reports"
    report.write_summary(reports, report.summary_table(pd.DataFrame(rows)))
    variant = reports / readme.VARIANTS / "B_none224"
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
    (reports / readme.INSPECTION).mkdir()
    (reports / readme.INSPECTION / "bottle.json").write_text(json.dumps(
        {"category": "bottle", "fit_seconds": 30.2, "threshold": 5686.0, "false_alarms": 1, "normal_images": 20,
         "false_alarm_rate": 0.05, "misses": 0, "defect_images": 63, "miss_rate": 0.0,
         "images_per_second_with_overlays": 3.5, "export_max_relative_difference": 2.4e-6, "export_images": 83,
         "onnx_predict_images": 83, "onnx_predict_max_relative_difference": 2.5e-6,
         "onnx_predict_images_per_second_with_overlays": 4.25, "settings": SETTINGS}))
    return reports


BOTTLE = "| bottle | 99.5 | 100.0 | 100.0 | 100.0 |"  # ours, paper per class (PatchCore-1%), official, anchor
TILES = "| magnetic_tile | 75.0 | 97.9 | 90.0 | 80.0 |"  # image ours/paper, pixel ours, PRO ours
VARIANT = ("| B_none224 | magnetic_tile | whole image to 224² | 1024-384 | official | - | 0.01 | max | 90.0 | 80.0 | "
           "70.0 | 60.0 | 50.0 | 100 s | 0.100 s |")
EQ7 = "image AUROC 80.00 with `distance=sqeuclidean`, 80.00 with `euclidean`"
SETTINGS = {"backbone": "efficientnet_lite0", "resize": 256, "imagesize": 224, "coreset_ratio": 0.1,
            "pretrain_embed_dimension": 1024, "target_embed_dimension": 1024}
INSPECTION = (f"| bottle | `{setting_name(SETTINGS)}` | 30 s | 5686.0 | 1/20 = 5.0% | 0/63 = 0.0% | 3.50 | 4.25 | "
              "2.4e-06 (83 images) | 2.5e-06 (83 images) |")


def test_blocks_from_reports(tmp_path):
    reports = _reports(tmp_path)
    headline, study, inspection = (readme.headline_block(reports), readme.study_block(reports),
                                   readme.inspection_block(reports))
    for block in (headline, study, inspection):
        assert block.startswith(readme.BEGIN) and block.endswith(readme.END)
    # README: PatchCore's table per dataset, nothing else
    assert headline.index("**MVTec AD, PatchCore") < headline.index("**magnetic_tile, PatchCore")
    assert BOTTLE in headline and TILES in headline
    assert "mean of 15" in headline and "Magnetic Tile Defects" in headline
    assert "padim" not in headline and "B_none224" not in headline and EQ7 not in headline
    assert INSPECTION not in headline
    # docs/study.md: every method, the variants, the Eq. 7 check
    assert BOTTLE in study and TILES in study and "**MVTec AD, padim" in study
    assert VARIANT in study and EQ7 in study and INSPECTION not in study
    # docs/inspection_line.md: the inspection line
    assert INSPECTION in inspection and BOTTLE not in inspection
    assert "No reports/inspection_line" in readme.inspection_block(tmp_path / "empty")
    assert "No reports/summary.csv" in readme.headline_block(tmp_path / "empty")


def test_times_and_status_come_from_the_study_records(tmp_path):
    reports = _reports(tmp_path)
    assert "Reports made by" not in readme.headline_block(reports)  # no study records: no status line
    store = Store.beside(reports)
    store.save("notebook", "k1", {"notebook": "04_evaluate.ipynb", "category": "bottle"}, slot="04_evaluate-bottle",
               seconds=128.8, machine="2 CPU cores")
    store.save("notebook", "k2", {"notebook": "04_evaluate.ipynb", "category": "magnetic_tile"},
               slot="04_evaluate-magnetic_tile", seconds=61.0, machine="2 CPU cores")
    times = readme.times_block(reports)
    assert "| notebook | bottle | magnetic_tile |" in times and "| 04_evaluate | 2.1 min | 61 s |" in times
    assert "2 CPU cores" in times and "total 3.2 min" in times
    # the records' keys are not those of this code and preset: every run of the preset is listed as stale
    headline = readme.headline_block(reports)
    assert "Reports made by library code" in headline and "stale runs: 01_feature_extraction-bottle" in headline


def test_times_say_which_coreset_rows_were_reused(tmp_path):
    reports = _reports(tmp_path)
    folder = reports / "02_coreset_ablation" / "magnetic_tile-ab12"
    folder.mkdir(parents=True)
    rows = [{"status": "ok", "reused": True, "selection_seconds": 80.0, "scoring_seconds": 160.0},
            {"status": "ok", "reused": False, "selection_seconds": 90.0, "scoring_seconds": 150.0},
            {"status": "n/a (N=596624 > max_exact_greedy=20000)", "reused": float("nan")}]
    (folder / "metrics.json").write_text(json.dumps({"metrics": {"results_per_seed": rows}}))
    store = Store.beside(reports)
    store.save("notebook", "k1", {"notebook": "02_coreset_ablation.ipynb", "category": "magnetic_tile"},
               outputs=[folder / "metrics.json"], slot="02_coreset_ablation-magnetic_tile", seconds=300.0)
    times = readme.times_block(reports)
    assert "| 02_coreset_ablation | 5.0 min |" in times
    assert "02_coreset_ablation-magnetic_tile: 1 of 2 rows reused from the store, computed earlier in 4.0 min" in times
    (folder / "metrics.json").write_text(json.dumps({"metrics": {"results_per_seed": rows[1:]}}))
    assert "reused" not in readme.times_block(reports)


def test_quick_study_time_comes_from_its_benchmark_record(tmp_path):
    assert readme.quick_study_lines(tmp_path) == []  # nothing measured: no line
    record = tmp_path / readme.QUICK_STUDY_RECORD
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"wall_seconds": 74.26, "machine": "2 CPU cores", "finished": "2026-12-05T10:00:00"}))
    (line, blank) = readme.quick_study_lines(tmp_path)
    assert "74 s on 2 CPU cores, 2026-12-05" in line and readme.QUICK_STUDY_RECORD in line and blank == ""
    record.write_text(json.dumps({"wall_seconds": 185.0, "machine": "2 CPU cores", "finished": "2026-12-05T10:00:00"}))
    assert "3.1 min on 2 CPU cores" in readme.quick_study_lines(tmp_path)[0]


def test_replace_block():
    block = f"{readme.BEGIN}\nnew\n{readme.END}"
    text = f"intro\n{readme.BEGIN}\nold\n{readme.END}\ntail\n"
    assert readme.replace_block(text, block) == f"intro\n{block}\ntail\n"
    with pytest.raises(ValueError, match="page.md has no generated block"):
        readme.replace_block("no markers", block, "page.md")


def test_main_writes_and_checks_every_file(tmp_path, capsys):
    reports = _reports(tmp_path)
    root = tmp_path / "repo"
    for relative in readme.BLOCKS:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(f"# {relative}\n\n{readme.BEGIN}\nstale\n{readme.END}\n\ntail\n")
    args = ["--root", str(root), "--reports-dir", str(reports)]
    assert readme.main(args + ["--check"]) == 1
    err = capsys.readouterr().err
    assert all(relative in err for relative in readme.BLOCKS)
    assert readme.main(args) == 0
    assert readme.main(args + ["--check"]) == 0
    for relative, make in readme.BLOCKS.items():
        assert (root / relative).read_text() == f"# {relative}\n\n{make(reports)}\n\ntail\n"
    # a file without markers: an error naming it, and nothing written
    (root / readme.STUDY_PAGE).write_text("no block\n")
    (root / readme.README).write_text(f"{readme.BEGIN}\nstale\n{readme.END}\n")
    assert readme.main(args) == 1
    assert readme.STUDY_PAGE in capsys.readouterr().err
    assert (root / readme.README).read_text() == f"{readme.BEGIN}\nstale\n{readme.END}\n"


def test_readme_is_a_short_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move detail to a page of docs/")


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", _without_fences(text), flags=re.M):
        slug = _slug(heading)
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _without_fences(text: str) -> str:
    """``text`` without fenced code blocks (they hold neither links nor headings)."""
    return re.sub(r"^ *(```|~~~).*?^ *\1", "", text, flags=re.M | re.S)


def _without_code(text: str) -> str:
    """``text`` without fenced code blocks and inline code (which holds no links)."""
    return re.sub(r"`[^`\n]*`", "", _without_fences(text))


def _links(text: str) -> list[str]:
    return re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", _without_code(text))


def test_relative_links_in_readme_and_docs_resolve():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        text = page.read_text()
        for link in _links(text):
            if re.match(r"[a-z][a-z0-9+.-]*:", link, flags=re.I):  # https:, mailto:, ...
                continue
            path, _, anchor = link.partition("#")
            target = (page.parent / path).resolve() if path else page
            if not target.exists():
                broken.append(f"{page.relative_to(ROOT)}: {link} (no file {path})")
            elif anchor and target.suffix == ".md" and anchor not in _anchors(target.read_text()):
                broken.append(f"{page.relative_to(ROOT)}: {link} (no heading #{anchor} in {path or page.name})")
    assert not broken, "broken links:\n" + "\n".join(broken)
    assert len(pages) > 1 and all(_links(page.read_text()) for page in pages[:1])

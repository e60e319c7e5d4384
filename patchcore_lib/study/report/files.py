"""Notebook 05 (report), the summary files: markdown tables and ``reports/summary.{csv,md,png}``."""
from __future__ import annotations

import base64
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from patchcore_lib.paper.reference import ALL_METRICS
from patchcore_lib.study.display import mean_sd_text
from patchcore_lib.study.outputs import save_figure
from patchcore_lib.study.report.datasets import data_note
from patchcore_lib.study.report.runs import SHORT
from patchcore_lib.study.report.table import REFERENCES
from patchcore_lib.utils.files import atomic_write_text


def markdown_table(table: pd.DataFrame, float_format: str = "{:.1f}", signed: bool = False) -> str:
    """A GitHub-markdown table (no tabulate dependency); NaN shown as ``-``; ``signed``: numbers with a sign
    (as columns named ``diff_*`` always are)."""
    columns = list(table.columns)
    lines = ["| " + " | ".join(str(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    for _, row in table.iterrows():
        cells = []
        for c in columns:
            value = row[c]
            if isinstance(value, (float, np.floating)):
                cells.append("-" if math.isnan(value) else (("{:+.1f}".format(float(value)))
                                                            if signed or str(c).startswith("diff_")
                                                            else float_format.format(value)))
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


SUMMARY_INTRO = (
    "All values in percent, one decimal. `ours`: this study (latest run per category of each setting, from "
    "`reports/04_evaluate/*/metrics.json`; baselines from `reports/06_baselines`); `mean ± sd` where the run is "
    "the mean over several seeds (sample sd over the seeds listed). A seed changes only the coreset: the random "
    "projection of the approximate greedy selection and its random start (and the few-shot draw of training "
    "images where one is made); the patch features, the kNN search and the metrics are deterministic. "
    "`paper`: Roth et al., CVPR 2022, per class where a per-class value is stored (for PatchCore the per-class "
    "value of another coreset ratio when ours has none, named), else the 15-class mean labelled `mean of 15`; on "
    "the magnetic tiles the paper's MTD image AUROC. Every paper value's source is named under its table. "
    "`official`: results published with the official implementation for the run named under the table "
    "(WideResNet-50), each compared only with our metric of the same definition: `pixel` with its "
    "`full_pixel_auroc` (all test images), `pixel (anom.)` and `PRO (anom.)` (anomalous test images only) with "
    "its columns of those names; our `PRO` (all test images) has no official counterpart. `official code here`: "
    "the official implementation run on the same backbone, layers, image size, coreset ratio, embedding "
    "dimensions and geometry on the same data (`patchcore_lib/paper/data/anchors_measured.csv`); where none "
    "matches, a footnote says why. Masks: `nearest` (nearest-neighbour resize, the MVTec convention) or "
    "`official` (bilinear then integer cast, as the official code, which counts fewer boundary pixels as "
    "anomalous); pixel metrics are compared with the official code and its published runs only under `official` "
    "masks (settings marked `_masks-official`). Ours minus reference in points. "
    "Means only over MVTec AD classes, never across datasets.")


REFERENCE_LABELS = {"ours": "ours", "paper": "paper", "official": "official", "anchor": "official code here"}


def compact_table(group: pd.DataFrame, kinds: Sequence[str] = ("ours",) + REFERENCES, prefix: str = "",
                  as_text: bool = True) -> pd.DataFrame:
    """A narrow view of summary rows: ``category`` then ``<metric> <reference>`` columns (``prefix`` e.g.
    ``diff_``), leaving out columns without any value. ``as_text`` (default): cells as shown (one decimal, ours
    as ``mean ± sd`` where ``ours_<metric>_sd`` has a value, ``-`` for none); else the numbers."""
    out = pd.DataFrame({"category": group["category"].to_numpy()})
    for m in ALL_METRICS:
        for kind in kinds:
            column = f"{prefix}{kind}_{m}"
            if column in group and not group[column].isna().all():
                values = group[column].to_numpy(dtype=float)
                if as_text:
                    sds = (group[f"{column}_sd"].to_numpy(dtype=float) if kind == "ours" and not prefix
                           and f"{column}_sd" in group else [None] * len(values))
                    values = [mean_sd_text(v, sd) for v, sd in zip(values, sds)]
                out[f"{SHORT[m]} {REFERENCE_LABELS[kind]}"] = values
    return out


def reference_notes(group: pd.DataFrame, key: str) -> list[str]:
    """The distinct non-empty values of column ``key`` (``paper_source``, ``official_run``, ``anchor_run``) of
    one summary section, in order: which setting each reference column of that section holds."""
    return list(dict.fromkeys(str(v) for v in group[key] if isinstance(v, str) and v))


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _section(group: pd.DataFrame) -> list[str]:
    lines = []
    for key, name in (("paper_source", "Paper"), ("official_run", "Official published run"),
                      ("anchor_run", "Official code on this data")):
        values = reference_notes(group, key)
        if values:
            lines += [f"{name}: " + "; ".join(f"`{v}`" for v in values) + ".", ""]
    conventions = sorted(set(group["mask_convention"]))
    lines += [f"Ground-truth masks: {', '.join(f'`{c}`' for c in conventions)} convention.", ""]
    seeds = [s for s in dict.fromkeys(_text(v) for v in group.get("seeds", [])) if s]
    lines += [markdown_table(compact_table(group, as_text=True)), ""]
    notes = [f"Official code here: {n}." for n in dict.fromkeys(_text(v) for v in group.get("anchor_note", []))
             if n and group["method"].iloc[0] == "PatchCore"]
    notes += [f"Ours: mean ± sample sd over seeds {', '.join(seeds)}."] if seeds else []
    geometry = _text(group["geometry"].iloc[0]) if "geometry" in group else ""
    notes += [data_note(c, None) + (f" Input: {geometry}." if geometry else "")
              for c in group["category"] if not str(c).startswith("mean")]
    lines += [f"<sub>{note}</sub>" + "  " for note in notes] + ([""] if notes else [])
    diffs = compact_table(group, REFERENCES, prefix="diff_", as_text=False)
    if diffs.shape[1] > 1:
        lines += ["Ours minus reference (points):", "", markdown_table(diffs, signed=True), ""]
    return lines


def write_summary(reports_dir: str | Path, table: pd.DataFrame, figure: Any = None) -> dict[str, Path]:
    """Write ``reports/summary.csv``, ``reports/summary.md`` (one section per dataset, then per
    method/setting) and ``reports/summary.png``; returns the paths."""
    reports = Path(reports_dir)
    reports.mkdir(parents=True, exist_ok=True)
    paths = {"csv": atomic_write_text(reports / "summary.csv", table.to_csv(index=False, float_format="%.12g"))}
    lines = ["# PatchCore study: summary", "", SUMMARY_INTRO, ""]
    if not len(table):
        lines.append("No evaluation runs found.")
    for dataset, rows in table.groupby("dataset", sort=False):
        lines += [f"## {dataset}", ""]
        for (method, setting), group in rows.groupby(["method", "setting"], sort=False):
            lines += [f"### {method}: {setting}", ""] + _section(group)
    if figure is not None:
        paths["png"] = save_figure(figure, reports, "summary")
        lines += ["![ours beside every reference value, per category](summary.png)", ""]
    paths["md"] = atomic_write_text(reports / "summary.md", "\n".join(lines))
    return paths


def summary_markdown_for_display(paths: dict[str, Path]) -> str:
    """The summary markdown with the figure embedded (base64 data URI), so the notebook's HTML holds the
    image itself and no machine path."""
    text = Path(paths["md"]).read_text()
    if "png" not in paths:
        return text
    data = base64.b64encode(Path(paths["png"]).read_bytes()).decode()
    return text.replace("](summary.png)", f"](data:image/png;base64,{data})")

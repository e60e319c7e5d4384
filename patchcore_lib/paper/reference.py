"""Published reference numbers for MVTec AD, loaded from the package data in ``data/``.

* :func:`paper_table` -- the paper's numbers (Roth et al., CVPR 2022): class means of PatchCore-25/10/1% and
  PaDiM, plus the per-class PatchCore-1% values we could trace to a source (see ``data/README.md``).
* :func:`official_results` -- the per-category results published with the official implementation
  (amazon-science/patchcore-inspection), one table per run name.
* :func:`reference_for` -- everything known for one category, as one tidy table.
* :func:`is_mvtec_category` -- the one test of whether the paper's (and the baselines') MVTec AD values apply to
  a category: every table and figure of the study asks it before showing them.

Every function returns fractions in 0..1 (the paper's percentages are divided by 100), so the values are
directly comparable with ``patchcore_lib.evaluation.metrics``.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from patchcore_lib.errors import ConfigError

DATA_DIR = Path(__file__).resolve().parent / "data"

#: The 15 MVTec AD categories, in the order of the paper's tables (textures, then objects).
MVTEC_CATEGORIES = ("carpet", "grid", "leather", "tile", "wood", "bottle", "cable", "capsule", "hazelnut",
                    "metal_nut", "pill", "screw", "toothbrush", "transistor", "zipper")



def is_mvtec_category(category: str) -> bool:
    """Whether published MVTec AD values (the paper's tables and ablations, the baselines' means) are for
    ``category``'s dataset: only then are they shown beside a run on it."""
    return category in MVTEC_CATEGORIES


#: The official run reproduced by the paper setting ``params/paper_im224_wr50.yaml``.
DEFAULT_OFFICIAL_RUN = "IM224_WR50_L2-3_P01_D1024-1024_PS-3_AN-1"

#: Column of the official CSVs with the same definition as each of our metrics (see data/README.md):
#: pixel AUROC over all test images, and pixel AUROC / PRO over the anomalous test images only. Our ``pro``
#: (standard MVTec PRO over all test images) has no official counterpart: their ``full_pro`` is computed by
#: unpublished code and is far from the standard value, so it is not compared.
OFFICIAL_COLUMNS = {"image_auroc": "instance_auroc", "pixel_auroc": "full_pixel_auroc",
                    "anomaly_pixel_auroc": "anomaly_pixel_auroc", "anomaly_pro": "anomaly_pro"}

#: The paper's metrics (its PRO is compared with our ``pro``).
PAPER_METRICS = ("image_auroc", "pixel_auroc", "pro")
#: Every metric the evaluation reports; the official runs have values for the OFFICIAL_COLUMNS keys.
ALL_METRICS = ("image_auroc", "pixel_auroc", "pro", "anomaly_pixel_auroc", "anomaly_pro")


@lru_cache(maxsize=1)
def _paper_raw():
    return pd.read_csv(DATA_DIR / "paper_mvtec.csv")


def paper_table(method: str | None = None):
    """The paper's MVTec AD numbers as a DataFrame (method, category, image_auroc, pixel_auroc, pro, source).

    Values are fractions (published percentages / 100); missing values are NaN. ``method`` (e.g.
    ``"PatchCore-10%"``) keeps only that method's rows. Per-category rows exist only where a source was found.
    """
    table = _paper_raw().copy()
    for column in PAPER_METRICS:
        table[column] = table[column] / 100.0
    if method is not None:
        if method not in set(table["method"]):
            raise ConfigError(f"unknown paper method {method!r}; known: {', '.join(sorted(set(table['method'])))}")
        table = table[table["method"] == method].reset_index(drop=True)
    return table


def paper_table_percent():
    """:func:`paper_table` with the values in percent exactly as published (``98.5``, not ``98.50000000000001``):
    what tables beside ours show and the raw CSVs keep."""
    return _paper_raw().copy()


def official_runs() -> list[str]:
    """Names of the official result files shipped in ``data/official``."""
    return sorted(p.stem for p in (DATA_DIR / "official").glob("*.csv"))


def official_results(run_name: str = DEFAULT_OFFICIAL_RUN):
    """Per-category official results of ``run_name``: columns category and :data:`ALL_METRICS` + raw columns.

    ``category`` is the MVTec name without the ``mvtec_`` prefix (the file's own mean row: ``mean``). Each of
    our metric columns holds the official column of the same definition (:data:`OFFICIAL_COLUMNS`); ``pro``
    (all test images) is NaN, as no official column has that definition.
    """
    path = DATA_DIR / "official" / f"{run_name}.csv"
    if not path.is_file():
        raise ConfigError(f"no official results named {run_name!r}; known: {', '.join(official_runs())}")
    raw = pd.read_csv(path)
    raw = raw.rename(columns={raw.columns[0]: "row_name"})
    table = raw.copy()
    table.insert(0, "category", [str(n).removeprefix("mvtec_") if str(n).lower() != "mean" else "mean"
                                 for n in raw["row_name"]])
    for ours in ALL_METRICS:
        table[ours] = raw[OFFICIAL_COLUMNS[ours]].astype(float) if ours in OFFICIAL_COLUMNS else float("nan")
    return table.drop(columns=["row_name"])


def official_mean(run_name: str = DEFAULT_OFFICIAL_RUN) -> dict[str, float]:
    """Mean over the categories of one official run (every :data:`ALL_METRICS` key; ``pro`` is NaN)."""
    table = official_results(run_name)
    table = table[table["category"].isin(MVTEC_CATEGORIES)]
    return {m: float(table[m].mean()) for m in ALL_METRICS}


def paper_method_for(coreset_ratio: float) -> str:
    """The paper's PatchCore variant closest to a coreset ratio: PatchCore-25%, -10% or -1%."""
    options = {0.25: "PatchCore-25%", 0.1: "PatchCore-10%", 0.01: "PatchCore-1%"}
    best = min(options, key=lambda r: abs(r - float(coreset_ratio)))
    return options[best]


def official_run_for(config: dict[str, Any]) -> str:
    """The official run matching a PatchCore config dict best (image size, backbone, coreset, patch, k).

    ``config`` holds every PatchCore setting (a recorded config completed with the schema's defaults:
    ``study.params.with_config_defaults``; ``method`` may say ``patchcore_ensemble``). Falls back to
    :data:`DEFAULT_OFFICIAL_RUN` when nothing matches the backbone/size exactly.
    """
    backbone = str(config["backbone"])
    imagesize = int(config["imagesize"])
    ratio = float(config["coreset_ratio"])
    patch = int(config["patch_size"])
    k = int(config["num_nn"])
    size = "IM320" if imagesize >= 300 else "IM224"
    ensemble = backbone == "ensemble" or "+" in backbone or config.get("method") == "patchcore_ensemble"
    net = "Ensemble" if ensemble else "WR50"
    pct = "P001" if ratio <= 0.03 else "P01"
    candidates = [r for r in official_runs() if r.startswith(f"{size}_{net}_") and f"_{pct}_" in r]
    for run in candidates:
        if f"PS-{patch}_AN-{k}" in run:
            return run
    return candidates[0] if candidates else DEFAULT_OFFICIAL_RUN


def reference_for(category: str, run_names: list[str] | None = None):
    """All published numbers for one MVTec category as a tidy DataFrame.

    Columns: source (``paper: <method>`` or ``official: <run>``), scope (``category`` or ``mean of 15``),
    :data:`ALL_METRICS` (fractions; NaN where not published with that definition). Paper class means are included
    (scope ``mean of 15``) so that a category without a per-class paper value still shows the paper's level.
    Returns an empty table for a category that is not an MVTec AD one.
    """
    columns = ["source", "scope", *ALL_METRICS]
    if not is_mvtec_category(category):
        return pd.DataFrame(columns=columns)
    rows = []
    paper = paper_table()
    for _, row in paper[paper["category"] == category].iterrows():
        rows.append({"source": f"paper: {row['method']}", "scope": "category", **{m: row[m] for m in PAPER_METRICS}})
    for _, row in paper[(paper["category"] == "mean") & paper["method"].str.startswith("PatchCore")].iterrows():
        rows.append({"source": f"paper: {row['method']}", "scope": "mean of 15", **{m: row[m] for m in PAPER_METRICS}})
    for run in run_names or official_runs():
        table = official_results(run)
        hit = table[table["category"] == category]
        if len(hit):
            rows.append({"source": f"official: {run}", "scope": "category",
                         **{m: float(hit.iloc[0][m]) for m in ALL_METRICS}})
    return pd.DataFrame(rows, columns=columns)


#: Published reference values. These are MVTec AD MEANS over all 15 categories, not per-category values:
#: compare them with a single category's numbers only as a rough orientation. Fractions 0..1, NaN = not given.
#: "seed reproduction" = this project's earlier re-run of the original OrthoAD code (sklearn AUROC).
REFERENCE_MVTEC_MEANS: list[dict[str, Any]] = [
    {"source": "OrthoAD paper", "method": "orthoad", "backbone": "resnet18", "k_or_d": 100,
     "image_auroc": float("nan"), "pixel_auroc": 0.975, "pro": 0.924},
    {"source": "OrthoAD paper", "method": "orthoad", "backbone": "wide_resnet50_2", "k_or_d": 100,
     "image_auroc": float("nan"), "pixel_auroc": 0.979, "pro": 0.934},
    {"source": "OrthoAD paper", "method": "orthoad", "backbone": "wide_resnet50_2", "k_or_d": 300,
     "image_auroc": float("nan"), "pixel_auroc": 0.982, "pro": 0.942},
    {"source": "seed reproduction", "method": "orthoad", "backbone": "resnet18", "k_or_d": 100,
     "image_auroc": float("nan"), "pixel_auroc": 0.9706, "pro": 0.9310},
    {"source": "seed reproduction", "method": "orthoad", "backbone": "wide_resnet50_2", "k_or_d": 100,
     "image_auroc": float("nan"), "pixel_auroc": 0.9734, "pro": 0.9374},
    {"source": "seed reproduction", "method": "orthoad", "backbone": "wide_resnet50_2", "k_or_d": 300,
     "image_auroc": float("nan"), "pixel_auroc": 0.9782, "pro": 0.9448},
    {"source": "PaDiM paper", "method": "padim", "backbone": "wide_resnet50_2", "k_or_d": 550,
     "image_auroc": 0.953, "pixel_auroc": 0.975, "pro": 0.921},
]


def baseline_reference_table(category: str | None = None) -> "Any":
    """:data:`REFERENCE_MVTEC_MEANS` as a pandas DataFrame (column ``scope`` = 'MVTec AD mean'); for a
    ``category`` that is not an MVTec AD one (:func:`is_mvtec_category`) the same columns without rows."""
    table = pd.DataFrame(REFERENCE_MVTEC_MEANS)
    table.insert(0, "scope", "MVTec AD mean (15 categories)")
    if category is not None and not is_mvtec_category(category):
        table = table.iloc[:0]
    return table

"""Reference numbers beside the MVTec AD tables: the official code run on the same backbone and data
(``data/anchors_measured.csv``) and the paper's results on other datasets
(``data/paper_other_datasets.csv``). Sources: ``data/README.md``."""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import pandas as pd

from patchcore_lib.paper.reference import DATA_DIR

#: the metrics of the anchors file beside ours (fractions 0..1)
ANCHOR_METRICS = ("image_auroc", "pixel_auroc", "pro", "anomaly_pixel_auroc")


@lru_cache(maxsize=1)
def anchors_table() -> pd.DataFrame:
    """The official code's runs on this project's data: implementation, machine, data, backbone, imagesize,
    coreset, num_nn, metrics (fractions), timings, note; plus ``category`` (the data's last folder name)."""
    table = pd.read_csv(DATA_DIR / "anchors_measured.csv")
    table.insert(0, "category", [str(d).split(" ")[0].split("/")[-1] for d in table["data"]])
    return table


def anchor_for(category: str, config: dict[str, Any]) -> dict[str, Any] | None:
    """The anchor row run with the same category, backbone, image size, coreset ratio, k and target embedding
    dimension as ``config`` (every PatchCore setting: a recorded config completed with the schema's defaults,
    ``study.params.with_config_defaults``), preferring rows with every metric (CPU runs); None when there is
    none."""
    table = anchors_table()
    def same(row: Any) -> bool:
        return (row["category"] == category and row["backbone"] == config["backbone"]
                and int(row["imagesize"]) == int(config["imagesize"])
                and math.isclose(float(row["coreset"]), float(config["coreset_ratio"]))
                and int(row["num_nn"]) == int(config["num_nn"])
                and str(row["embed_dims"]).split("-")[-1] == str(config["target_embed_dimension"])
                and str(config["crop"]) == "center")  # the official code only centre-crops
    hits = [row for _, row in table.iterrows() if same(row)]
    if not hits:
        return None
    best = max(hits, key=lambda r: sum(not pd.isna(r[m]) for m in ANCHOR_METRICS))
    return best.to_dict()


@lru_cache(maxsize=1)
def paper_other_datasets() -> pd.DataFrame:
    """The paper's non-MVTec results: method, coreset_ratio (of the method, a fraction), dataset, category,
    image_auroc, pixel_auroc, pro (percent, NaN where not published), setting, source."""
    return pd.read_csv(DATA_DIR / "paper_other_datasets.csv")

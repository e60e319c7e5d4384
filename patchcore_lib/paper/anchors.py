"""Reference numbers beside the MVTec AD tables: the official code run on the same backbone and data
(``data/anchors_measured.csv``) and the paper's results on other datasets
(``data/paper_other_datasets.csv``). Sources: ``data/README.md``."""
from __future__ import annotations

import math
import re
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


def _stated_resize(note: Any) -> int | None:
    """The resize an anchor's note states (``resize 256 + centre crop 224``), else None."""
    match = re.search(r"resize (\d+)", str(note))
    return int(match.group(1)) if match else None


def _differences(row: Any, category: str, config: dict[str, Any]) -> list[str]:
    """What differs between an anchor row and a run (empty: the anchor matches): backbone, layers, image size,
    coreset ratio, k, embedding dimensions, geometry (centre crop; the resize where the note states one)."""
    dims = f"{config.get('pretrain_embed_dimension')}-{config.get('target_embed_dimension')}"
    layers = "+".join(str(layer) for layer in config.get("layers") or [])
    checks = [
        (row["category"] == category, f"category {row['category']}"),
        (row["backbone"] == config.get("backbone"), f"backbone {row['backbone']}"),
        (not layers or str(row["layers"]) == layers, f"layers {row['layers']}"),
        (int(row["imagesize"]) == int(config.get("imagesize") or 0), f"image size {int(row['imagesize'])} px"),
        (math.isclose(float(row["coreset"]), float(config.get("coreset_ratio") or 0)),
         f"coreset {float(row['coreset']):g}"),
        (int(row["num_nn"]) == int(config.get("num_nn") or 1), f"k = {int(row['num_nn'])}"),
        (str(row["embed_dims"]) == dims, f"embedding dims D{row['embed_dims']}"),
        (str(config.get("crop", "center")) == "center", "centre crop (the only geometry of the official code)"),
        (_stated_resize(row["note"]) in (None, int(config.get("resize") or 0)),
         f"resize {_stated_resize(row['note'])}"),
    ]
    return [text for ok, text in checks if not ok]


def anchor_match(category: str, config: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """(the anchor row run with the same category, backbone, layers, image size, coreset ratio, k, embedding
    dimensions ``pretrain-target`` and geometry as ``config``, or None; why none matched).

    ``config`` holds every PatchCore setting with the embedding dimensions resolved (the backbone's defaults
    filled in by the caller). Rows on this project's data (``shared/data``) and with every metric (CPU runs)
    are preferred. The reason names the closest anchor of the category and what differs from it, or that the
    official code was not run on the category.
    """
    rows = [row for _, row in anchors_table().iterrows()]
    hits = [row for row in rows if not _differences(row, category, config)]
    if hits:
        best = max(hits, key=lambda r: ("shared/data" in str(r["data"]),
                                        sum(not pd.isna(r[m]) for m in ANCHOR_METRICS)))
        return best.to_dict(), ""
    same = [row for row in rows if row["category"] == category]
    if not same:
        return None, f"the official code was not run on {category} here"
    closest = min(same, key=lambda r: len(_differences(r, category, config)))
    return None, ("no official-code run with this setting: the one on " + category + " ran with "
                  + ", ".join(_differences(closest, category, config)))


def anchor_for(category: str, config: dict[str, Any]) -> dict[str, Any] | None:
    """The matching anchor row of :func:`anchor_match`, or None."""
    return anchor_match(category, config)[0]


@lru_cache(maxsize=1)
def paper_other_datasets() -> pd.DataFrame:
    """The paper's non-MVTec results: method, coreset_ratio (of the method, a fraction), dataset, category,
    image_auroc, pixel_auroc, pro (percent, NaN where not published), setting, source."""
    return pd.read_csv(DATA_DIR / "paper_other_datasets.csv")

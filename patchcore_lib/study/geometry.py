"""How much of each defect the image geometry keeps: the resize + centre crop of non-square images (e.g. the
magnetic tiles) can cut a defect away entirely, leaving a "defective" test image without a visible defect."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from patchcore_lib.data import find_samples


def defect_coverage(root: str | Path, category: str, resize: int = 256, imagesize: int = 224,
                    crop: str = "center") -> pd.DataFrame:
    """Per defective test image: path (``test/<defect>/<file>``), defect_type, defect_pixels and ``kept`` (the
    fraction of its defect pixels inside the region the geometry keeps; 1.0 for ``crop="none"``).

    The kept region of ``crop="center"`` is the centre square of side ``min(h, w) * imagesize / resize``."""
    rows = []
    for sample in find_samples(root, category, "test"):
        if sample.mask_path is None:
            continue
        mask = np.asarray(Image.open(sample.mask_path).convert("L")) > 127
        ys, xs = np.nonzero(mask)
        if not len(ys):
            continue
        h, w = mask.shape
        if crop == "none":
            kept = 1.0
        else:
            side = min(h, w) * imagesize / resize
            top, left = (h - side) / 2, (w - side) / 2
            kept = float(((ys >= top) & (ys < top + side) & (xs >= left) & (xs < left + side)).mean())
        rows.append({"path": "/".join(Path(sample.path).parts[-3:]), "defect_type": sample.defect_type,
                     "defect_pixels": int(len(ys)), "kept": kept})
    return pd.DataFrame(rows, columns=["path", "defect_type", "defect_pixels", "kept"])


def coverage_summary(table: pd.DataFrame) -> dict[str, float]:
    """Counts of :func:`defect_coverage`: images, entirely cut away (kept == 0), partly cut, mean kept."""
    kept = table["kept"].to_numpy()
    return {"defect_images": int(len(kept)), "cut_away": int((kept == 0).sum()),
            "partly_cut": int(((kept > 0) & (kept < 1)).sum()),
            "mean_kept": float(kept.mean()) if len(kept) else float("nan")}

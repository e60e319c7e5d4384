"""The paper's ablation numbers (Roth et al., CVPR 2022) used by notebooks 02 and 07, as data.

Every table is a :class:`PaperTable`: a ``source`` (where the numbers are printed), a ``scope`` (what they are a
mean of) and rows of plain dicts. Metric values are fractions in 0..1 (the published percentages / 100), as in
:mod:`patchcore_lib.paper.reference`; ``*_spread`` columns are the published "±" values, also / 100.
Backbones carry the registry name of ``patchcore_lib.components.backbones`` where one exists (``None``
otherwise) besides the paper's own name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

#: the setting every table below was measured in, unless a row says otherwise
MVTEC_WR50 = "MVTec AD mean, WideResNet-50"


@dataclass(frozen=True)
class PaperTable:
    """Published values with their source; ``frame()`` gives a DataFrame with a ``source`` column."""

    name: str
    source: str
    scope: str
    rows: tuple[dict[str, Any], ...]

    def frame(self) -> pd.DataFrame:
        table = pd.DataFrame(list(self.rows))
        table["source"] = self.source
        table["scope"] = self.scope
        return table


def _pct(value: float | None) -> float | None:
    return None if value is None else round(value / 100.0, 6)


def _metrics(image: float, pixel: float | None, pro: float | None) -> dict[str, float | None]:
    return {"image_auroc": _pct(image), "pixel_auroc": _pct(pixel), "pro": _pct(pro)}


# ---------------------------------------------------------------------------- Table S6: backbones
_S6 = (  # paper name, registry name, (image, pixel, PRO) at 10 %, at 1 %
    ("ResNet50", "resnet50", (99.0, 98.1, 93.3), (98.7, 97.8, 93.3)),
    ("WideResNet50", "wide_resnet50_2", (98.9, 98.1, 93.5), (99.0, 98.0, 93.1)),
    ("ResNet101", None, (98.6, 97.9, 92.5), (98.7, 97.8, 92.2)),
    ("WideResNet101", "wide_resnet101_2", (99.1, 98.2, 93.4), (99.0, 98.1, 93.0)),
    ("ResNeXt101", "resnext101_32x8d", (98.9, 98.0, 92.8), (98.7, 97.8, 92.6)),
)

#: Table S6: PatchCore with other backbones (image size 224, layers 2 + 3), coreset 10 % and 1 %
BACKBONES_S6 = PaperTable(
    name="backbones",
    source="Roth et al. 2022, supplementary Table S6",
    scope="MVTec AD mean (backbone as in the row), image size 224",
    rows=tuple({"paper_backbone": paper, "backbone": ours, "imagesize": 224, "coreset_ratio": ratio,
                **_metrics(*values)}
               for paper, ours, ten, one in _S6 for ratio, values in ((0.1, ten), (0.01, one))),
)

# ---------------------------------------------------------------------------- Table S5: few-shot
_S5 = {1: ((84.1, 0.7), (92.4, 0.3), (83.7, 0.5)), 5: ((91.0, 0.9), (94.8, 0.1), (88.8, 0.2)),
       16: ((95.5, 0.6), (96.8, 0.3), (91.7, 0.1)), 50: ((97.7, 0.4), (97.7, 0.0), (92.8, 0.0))}

#: Table S5: PatchCore-25 % trained on a few nominal images (mean ± spread over runs)
FEW_SHOT_S5 = PaperTable(
    name="few_shot",
    source="Roth et al. 2022, supplementary Table S5",
    scope=MVTEC_WR50 + ", PatchCore-25%",
    rows=tuple({"method": "PatchCore-25%", "shots": shots,
                "image_auroc": _pct(i[0]), "image_auroc_spread": _pct(i[1]),
                "pixel_auroc": _pct(p[0]), "pixel_auroc_spread": _pct(p[1]),
                "pro": _pct(r[0]), "pro_spread": _pct(r[1])}
               for shots, (i, p, r) in _S5.items()),
)

#: the PaDiM rows of Table S5 (image AUROC only)
FEW_SHOT_PADIM_S5 = PaperTable(
    name="few_shot_padim",
    source="Roth et al. 2022, supplementary Table S5",
    scope="MVTec AD mean, PaDiM",
    rows=tuple({"method": "PaDiM", "shots": shots, "image_auroc": _pct(value)}
               for shots, value in ((1, 76.1), (5, 81.0), (16, 85.5), (50, 90.1))),
)

# ---------------------------------------------------------------------------- Table 5: search and time
#: Table 5: coreset size and approximate search vs inference time (GPU, backbone included)
SEARCH_TABLE5 = PaperTable(
    name="search",
    source="Roth et al. 2022, Table 5",
    scope=MVTEC_WR50 + ", GPU, inference time per image including the backbone",
    rows=(
        {"method": "PatchCore-100%", "ratio": 1.0, "search": "exact", **_metrics(99.1, 98.0, 93.3),
         "seconds_per_image": 0.6},
        {"method": "PatchCore-10%", "ratio": 0.1, "search": "exact", **_metrics(99.0, 98.1, 93.5),
         "seconds_per_image": 0.22},
        {"method": "PatchCore-1%", "ratio": 0.01, "search": "exact", **_metrics(99.0, 98.0, 93.1),
         "seconds_per_image": 0.17},
        {"method": "PatchCore-100% + IVFPQ", "ratio": 1.0, "search": "ivfpq", **_metrics(98.0, 97.9, 93.0),
         "seconds_per_image": 0.2},
    ),
)

# ---------------------------------------------------------------------------- coreset vs random
#: the paper's values per sampler and coreset ratio: Tables 1-2 (PatchCore-25/10/1%) and Table 5 (100%, no
#: subsampling) print them; random subsampling at 1% (Fig. 4) and the coreset at 0.1% (Fig. S6) exist only as
#: plots and are read off the axes (``approximate``); ``from`` names the table or figure of each point
CORESET_VS_RANDOM = PaperTable(
    name="coreset_vs_random",
    source="Roth et al. 2022, Tables 1, 2, 5; Fig. 4 and Fig. S6 read off the plots (approximate)",
    scope=MVTEC_WR50,
    rows=(
        {"sampler": "approx_greedy", "ratio": 1.0, **_metrics(99.1, 98.0, 93.3), "approximate": False,
         "from": "Table 5 (PatchCore-100%)"},
        {"sampler": "approx_greedy", "ratio": 0.25, **_metrics(99.1, 98.1, 93.4), "approximate": False,
         "from": "Tables 1-2"},
        {"sampler": "approx_greedy", "ratio": 0.1, **_metrics(99.0, 98.1, 93.5), "approximate": False,
         "from": "Tables 1-2"},
        {"sampler": "approx_greedy", "ratio": 0.01, **_metrics(99.0, 98.0, 93.1), "approximate": False,
         "from": "Tables 1-2"},
        {"sampler": "approx_greedy", "ratio": 0.001, **_metrics(95.5, None, None), "approximate": True,
         "from": "Fig. S6 (read off the plot)"},
        {"sampler": "random", "ratio": 0.01, **_metrics(93.0, None, None), "approximate": True,
         "from": "Fig. 4 (read off the plot)"},
    ),
)

#: every table of this module by name
PAPER_ABLATIONS = {t.name: t for t in (BACKBONES_S6, FEW_SHOT_S5, FEW_SHOT_PADIM_S5, SEARCH_TABLE5, CORESET_VS_RANDOM)}

# ---------------------------------------------------------------------------- Sec. 4.4.1 / Fig. 4: local awareness
#: where the paper reports the ablations of notebook 08 that it prints no numbers for: the patch size p and the
#: hierarchy levels are shown only as plots (Fig. 4, Sec. 4.4.1), so no values are stored (none read off the plot);
#: ``paper_setting`` is the setting the paper uses everywhere else (p = 3, levels 2 + 3, stride 1), whose numbers
#: are those of Tables 1-2 / 5 (:data:`CORESET_VS_RANDOM`). Memory-bank utilisation, patch stride and the size of
#: the Eq. 7 weights are not reported in the paper as far as we could check (no values, no rows).
LOCAL_AWARENESS_FIG4 = PaperTable(
    name="local_awareness",
    source="Roth et al. 2022, Sec. 4.4.1, Fig. 4 (plots only, no printed values)",
    scope=MVTEC_WR50,
    rows=(
        {"ablation": "patch_size", "values": "1, 3, 5, 7, 9", "paper_setting": "3", "printed_values": False},
        {"ablation": "hierarchy_levels", "values": "1, 2, 3, 1+2, 2+3, 1+2+3", "paper_setting": "2+3",
         "printed_values": False},
    ),
)
PAPER_ABLATIONS[LOCAL_AWARENESS_FIG4.name] = LOCAL_AWARENESS_FIG4

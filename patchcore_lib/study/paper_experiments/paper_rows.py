"""The paper's tables (``patchcore_lib.paper.ablations``) as notebook 07 labels them: a value that is a mean over
MVTec AD's 15 classes says ``mean of 15`` wherever it stands beside one category's results."""
from __future__ import annotations

import pandas as pd

from patchcore_lib.paper.ablations import PaperTable


def mean_of_15(scope: str) -> str:
    """``scope`` with "MVTec AD mean" written as "MVTec AD, mean of 15" (other text unchanged)."""
    return scope.replace("MVTec AD mean", "MVTec AD, mean of 15")


def paper_frame(table: PaperTable) -> pd.DataFrame:
    """``table.frame()`` with its ``scope`` in :func:`mean_of_15` wording and an empty ``per_class`` column (the
    metrics a row gives per class, comma-separated; see ``paper_experiments.paper_values``)."""
    return table.frame().assign(scope=mean_of_15(table.scope), per_class="")

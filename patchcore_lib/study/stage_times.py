"""Per-stage wall times of a notebook run (notebook 04's time table): the library's own stages of each seed run
(feature extraction, coreset, index, scoring, metrics) plus the notebook's cells timed with :class:`StageTimes`."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import pandas as pd

#: the stages recorded in each seed's row by ``cached_scoring.evaluate_over_seeds``: (column, label, shared)
SEED_STAGES = (("extract_train_seconds", "extract train features", True),
               ("extract_test_seconds", "extract test features", True),
               ("coreset_seconds", "coreset selection", False),
               ("index_seconds", "build the kNN index", False),
               ("score_seconds", "score the test features", False),
               ("metrics_seconds", "metrics (AUROC, PRO)", False))


class StageTimes:
    """Wall times of named stages: ``with stages("figures"): ...`` adds the block's seconds to that stage;
    ``stages.lap("figures")`` at the end of a notebook cell adds the seconds since the previous lap (or since
    this object was made), so cells need no indented block."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.started = self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        """Adds the seconds since the previous lap to stage ``name`` (returns nothing: a notebook cell ending in a
        lap shows no stray number)."""
        now = time.perf_counter()
        seconds, self.last = now - self.last, now
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.last = time.perf_counter()
            self.seconds[name] = self.seconds.get(name, 0.0) + self.last - start

    def elapsed(self) -> float:
        """Seconds since this object was made."""
        return time.perf_counter() - self.started


def stage_table(seed_rows: Sequence[dict[str, Any]], stages: StageTimes | None = None) -> pd.DataFrame:
    """One row per stage: ``stage``, ``seconds`` (a seed stage summed over the seeds, a shared one once) and
    ``share`` of the total; the notebook's own timed stages after the library's; a last ``total`` row.
    The seed stages are part of the notebook stage that ran them (``fit and predict``), which is therefore shown
    as its remainder (``fit and predict: other``: data loading, batching, bookkeeping)."""
    rows = []
    library = 0.0
    for column, label, shared in SEED_STAGES:
        values = [float(r[column]) for r in seed_rows if column in r]
        if values:
            seconds = values[0] if shared else sum(values)
            rows.append({"stage": label + ("" if shared else f" ({len(values)} seeds)"), "seconds": seconds})
            library += seconds
    for name, seconds in (stages.seconds.items() if stages else ()):
        if name == "fit and predict":
            seconds = max(0.0, seconds - library)
            name = "fit and predict: other"
        rows.append({"stage": name, "seconds": seconds})
    table = pd.DataFrame(rows, columns=["stage", "seconds"])
    total = float(table["seconds"].sum())
    table = pd.concat([table, pd.DataFrame([{"stage": "total", "seconds": total}])], ignore_index=True)
    table["share"] = table["seconds"] / total if total > 0 else float("nan")
    return table

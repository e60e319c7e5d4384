"""Notebook 04's time table: the seed runs' own stages (shared extraction once, the rest summed over seeds) and
the notebook's laps, the library's part taken out of the cell that ran it."""
import pytest

from patchcore_lib.study.stage_times import StageTimes, stage_table


def test_stage_table_counts_shared_stages_once_and_sums_the_seed_stages():
    rows = [{"extract_train_seconds": 4.0, "extract_test_seconds": 2.0, "coreset_seconds": c, "index_seconds": 0.1,
             "score_seconds": 1.0, "metrics_seconds": 0.5} for c in (3.0, 5.0)]
    stages = StageTimes()
    stages.seconds.update({"set-up": 1.0, "fit and predict": 20.0, "figures and tables": 2.0})
    table = stage_table(rows, stages).set_index("stage")["seconds"]
    assert table["extract train features"] == 4.0 and table["coreset selection (2 seeds)"] == 8.0
    assert table["fit and predict: other"] == pytest.approx(20.0 - (4 + 2 + 8 + 0.2 + 2 + 1))
    assert table["total"] == pytest.approx(1.0 + 20.0 + 2.0)  # the library's stages are inside "fit and predict"


def test_laps_add_up_to_the_elapsed_time():
    stages = StageTimes()
    sum(range(100_000))
    stages.lap("a")
    first = stages.seconds["a"]
    with stages("b"):
        sum(range(100_000))
    stages.lap("a")
    assert first > 0 and stages.seconds["a"] >= first
    assert sum(stages.seconds.values()) == pytest.approx(stages.elapsed(), abs=1e-3)

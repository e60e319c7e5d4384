"""Notebook 05 (report): every run of 04_evaluate (and of the baselines) as one MVTec table beside the paper
and the official code, its plot, and ``reports/summary.{csv,md,png}``.

* :mod:`.runs`: the runs (``metrics.json`` of 04_evaluate and 06_baselines, the latest per setting);
* :mod:`.table`: the summary table beside the paper, the official run and the official code on our data;
* :mod:`.figure`: its plot;
* :mod:`.files`: markdown tables and the summary files;
* :mod:`.datasets`: the data behind the results (source, stored size, split), for the notes under the tables.
"""
from patchcore_lib.study.report.figure import METRIC_LABELS, plot_summary
from patchcore_lib.study.report.files import (compact_table, markdown_table, reference_notes,
                                              summary_markdown_for_display, write_summary)
from patchcore_lib.study.report.datasets import DATASETS, data_description, data_note
from patchcore_lib.study.report.runs import (RUN_COLUMNS, collect_all, collect_baselines, collect_runs,
                                             runs_for_display)
from patchcore_lib.study.report.table import REFERENCES, style_summary, summary_table

__all__ = ["METRIC_LABELS", "plot_summary", "compact_table", "markdown_table", "reference_notes",
           "summary_markdown_for_display", "write_summary", "RUN_COLUMNS", "collect_all", "collect_baselines",
           "collect_runs", "runs_for_display", "REFERENCES", "style_summary", "summary_table", "DATASETS",
           "data_description", "data_note"]

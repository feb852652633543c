"""Report: per-job summary numbers, plots (matplotlib, Agg canvas) and a
self-contained HTML page for a run directory.

>>> summary = summarize(RunStore.open("runs/demo"))       # doctest: +SKIP
>>> header, rows = format_table(summary)                  # the CLI's end-of-run table
>>> write_report("runs/demo")                             # doctest: +SKIP
PosixPath('runs/demo/report/report.html')

Modules: :mod:`~labelflip.report.summary` (numbers, tables),
:mod:`~labelflip.report.plots` (figures as PNG bytes),
:mod:`~labelflip.report.page` (HTML) and :mod:`~labelflip.report.writer`
(files in ``RUNDIR/report/``).
"""

from labelflip.report.summary import csv_rows, format_table, summarize
from labelflip.report.writer import write_report

__all__ = ["csv_rows", "format_table", "summarize", "write_report"]

"""Report: per-job summary numbers, plots (matplotlib Figures) and a
self-contained HTML page for a run directory.

>>> summary = summarize_run(RunStore.open("runs/demo"))   # doctest: +SKIP
>>> summary.jobs[0].symmetry, summary.jobs[0].top_attractor.name   # typed
>>> header, rows = format_table(summary)                  # the CLI's end-of-run table
>>> write_report("runs/demo")                             # doctest: +SKIP
PosixPath('runs/demo/report/report.html')
>>> compare_runs(["runs/std", "runs/robust"], "runs/cmp")   # doctest: +SKIP
PosixPath('runs/cmp/compare.html')

Modules: :mod:`~labelflip.report.schema` (the typed summaries and their
JSON), :mod:`~labelflip.report.kinds` (the job kinds: Type II, Type I,
multi-label), :mod:`~labelflip.report.summary` (numbers, tables),
:mod:`~labelflip.report.findings` (what a run found, in a few sentences),
:mod:`~labelflip.report.plots` (figures), :mod:`~labelflip.report.gallery`
(example choice), :mod:`~labelflip.report.page` (HTML) and
:mod:`~labelflip.report.writer` (files in ``RUNDIR/report/``);
:mod:`~labelflip.report.comparison` (numbers) and
:mod:`~labelflip.report.compare` (page, files) set the jobs of several runs
side by side (``labelflip compare``).
"""

from labelflip.report.compare import compare, compare_runs
from labelflip.report.kinds import KINDS, JobKind, kind_of, register_kind
from labelflip.report.schema import JobSummary, RunSummary
from labelflip.report.summary import csv_rows, format_table, summarize, summarize_run
from labelflip.report.writer import write_report

__all__ = [
    "KINDS",
    "JobKind",
    "JobSummary",
    "RunSummary",
    "compare",
    "compare_runs",
    "csv_rows",
    "format_table",
    "kind_of",
    "register_kind",
    "summarize",
    "summarize_run",
    "write_report",
]

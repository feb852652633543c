"""Exports of a run's records: CSV and Parquet, one row per (job, sample),
the record columns (:mod:`labelflip.store.schema`) joined with the job table.
A mixin of :class:`~labelflip.store.RunStore`.

A value that stands for "none" in the store (-1 for no class, NaN for no
number: :attr:`~labelflip.store.schema.Column.missing`) is written as null
in Parquet and as an empty cell in CSV, so no tool mistakes -1 for a class.
Every exported column is documented in :data:`EXPORT_COLUMNS`
(docs/records.md is generated from it: :func:`columns_markdown`)."""

from __future__ import annotations

import csv
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from labelflip._files import write_atomic
from labelflip._text import csv_cell
from labelflip.store._json import to_json as _to_json
from labelflip.store.schema import (
    BOOL_COLUMNS,
    COLUMNS,
    RECORD_COLUMNS,
    SCHEMA_VERSION,
    Column,
)

_DATA_COLUMNS = RECORD_COLUMNS[1:]

JOB_EXPORT_COLUMNS: tuple[Column, ...] = (
    Column("job_id", "str", "the job: one attack with one point of its settings grid"),
    Column("attack", "str", "the attack's name, as in the config (labelflip attacks lists them)"),
    Column("label", "str", "the job's label in the report, e.g. `pgd (eps=0.1)`"),
    Column(
        "group",
        "str",
        "the job's `[[attacks]]` entry without its grid settings: the jobs of one sweep share it",
    ),
    Column(
        "sweep_value",
        "float",
        "the value of the swept setting (e.g. eps) when exactly one setting of the entry is a "
        "list of numbers; none otherwise",
        missing=math.nan,
    ),
    Column("dataset", "str", "the run's dataset (the run metadata's `dataset`)"),
    Column("split", "str", "the split the samples come from"),
)
"""The columns an export puts before the record columns (from the job table
and the run metadata)."""

EXPORT_COLUMNS: tuple[Column, ...] = JOB_EXPORT_COLUMNS + COLUMNS[1:]
"""Every column of an export, in order, with its kind and meaning."""

_TEXT_EXPORT_COLUMNS = frozenset(c.name for c in JOB_EXPORT_COLUMNS if c.kind == "str")
_MISSING = {c.name: c.missing for c in EXPORT_COLUMNS if c.missing is not None}


def _missing_mask(name: str, values: np.ndarray | list) -> np.ndarray | None:
    """Where column ``name`` holds its "none" marker (a ``None`` entry too);
    ``None`` when the column has no marker."""
    marker = _MISSING.get(name)
    if marker is None:
        return None
    if isinstance(values, list):
        values = [math.nan if v is None else v for v in values]
    a = np.asarray(values, dtype=np.float64)
    return np.isnan(a) if math.isnan(marker) else a == marker


def columns_markdown() -> str:
    """The table of every exported column (docs/records.md): name, type in
    CSV and Parquet, meaning."""
    parquet = {"str": "string", "int": "int64", "bool": "bool", "float": "float64"}
    lines = ["| column | Parquet type | meaning |", "| --- | --- | --- |"]
    for c in EXPORT_COLUMNS:
        kind = parquet[c.kind] + (", nullable" if c.missing is not None else "")
        doc = c.doc.replace("|", "\\|")
        if c.kind == "bool":
            doc += " (0/1 in CSV)"
        lines.append(f"| `{c.name}` | {kind} | {doc} |")
    return "\n".join(lines) + "\n"


class Exports:
    """CSV and Parquet exports (needs ``records``, ``jobs``, ``meta`` and
    ``all_meta`` of a run store)."""

    records: Any
    jobs: Any
    meta: Any
    all_meta: Any

    def _export_columns(self) -> tuple[dict[str, np.ndarray | list], dict[str, str]]:
        """Records joined with job attack/label/group/sweep_value and dataset/split."""
        recs = self.records()
        jobs = {j.job_id: j for j in self.jobs()}
        ids = recs["job_id"].tolist()
        n = len(ids)

        def meta_text(key: str) -> str | None:
            value = self.meta(key)
            if value is None or isinstance(value, str):
                return value
            return _to_json(value, f"meta '{key}'")

        cols: dict[str, np.ndarray | list] = {
            "job_id": ids,
            "attack": [jobs[j].attack for j in ids],
            "label": [jobs[j].label for j in ids],
            "group": [jobs[j].group for j in ids],
            "sweep_value": [jobs[j].sweep_value for j in ids],
            "dataset": [meta_text("dataset")] * n,
            "split": [meta_text("split")] * n,
        }
        cols.update((name, recs[name]) for name in _DATA_COLUMNS)
        info = {
            "labelflip.meta": _to_json(self.all_meta(), "meta"),
            "labelflip.jobs": _to_json([asdict(j) for j in jobs.values()], "jobs"),
            "labelflip.schema_version": str(SCHEMA_VERSION),
        }
        return cols, info

    def export_csv(self, path: str | os.PathLike) -> Path:
        """Write all records as UTF-8 CSV (atomically); returns the path.

        Columns: :data:`EXPORT_COLUMNS` (``job_id, attack, label, group,
        sweep_value, dataset, split``, then :data:`RECORD_COLUMNS` without
        ``job_id``). ``success`` and ``valid`` are 0/1, floats are written
        round-trip exact (``repr``), missing values (the store's -1 or NaN
        "none", a job without a sweep value) as empty cells.
        A text cell a spreadsheet would run as a formula (starting with
        ``=``, ``+``, ``-``, ``@``, a tab or a carriage return) is written
        with a leading ``'`` (:func:`labelflip._text.csv_cell`).
        """
        cols, _ = self._export_columns()
        names = list(cols)
        for name in BOOL_COLUMNS:
            cols[name] = np.asarray(cols[name]).astype(np.int64)
        lists = []
        for name, col in cols.items():
            values = col.tolist() if isinstance(col, np.ndarray) else list(col)
            if name in _TEXT_EXPORT_COLUMNS:
                values = [csv_cell(v) for v in values]
            none = _missing_mask(name, col)
            if none is not None and none.any():
                values = [None if m else v for v, m in zip(values, none.tolist(), strict=True)]
            lists.append(values)

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                writer.writerow(names)
                writer.writerows(zip(*lists, strict=True))

        return write_atomic(path, write)

    def export_parquet(self, path: str | os.PathLike) -> Path:
        """Write all records as Parquet (atomically); returns the path.

        Same columns as :meth:`export_csv` with typed columns (``success``
        and ``valid`` bool, missing values null); the store's meta and job
        table ride along as JSON in the schema metadata (``labelflip.meta``,
        ``labelflip.jobs``).
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        cols, info = self._export_columns()
        kinds = {"str": pa.string(), "int": pa.int64(), "bool": pa.bool_(), "float": pa.float64()}
        types = {c.name: kinds[c.kind] for c in EXPORT_COLUMNS}
        schema = pa.schema([pa.field(k, t) for k, t in types.items()], metadata=info)
        arrays = []
        for name, t in types.items():
            arrays.append(pa.array(cols[name], type=t, mask=_missing_mask(name, cols[name])))
        table = pa.Table.from_arrays(arrays, schema=schema)
        return write_atomic(path, lambda tmp: pq.write_table(table, tmp))

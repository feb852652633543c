"""Exports of a run's records: CSV and Parquet, one row per (job, sample),
the record columns (:mod:`labelflip.store.schema`) joined with the job table.
A mixin of :class:`~labelflip.store.RunStore`."""

from __future__ import annotations

import csv
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from labelflip._files import write_atomic
from labelflip._text import csv_cell
from labelflip.store._json import to_json as _to_json
from labelflip.store.schema import BOOL_COLUMNS, FLOAT_COLUMNS, RECORD_COLUMNS, SCHEMA_VERSION

_DATA_COLUMNS = RECORD_COLUMNS[1:]
_FLOAT_COLUMNS = FLOAT_COLUMNS
_TEXT_EXPORT_COLUMNS = frozenset({"job_id", "attack", "label", "group", "dataset", "split"})


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

        Columns: ``job_id, attack, label, group, sweep_value, dataset, split``,
        then :data:`RECORD_COLUMNS` without ``job_id``. ``success`` and ``valid`` are 0/1,
        floats are written round-trip exact (``repr``), missing values empty.
        A text cell a spreadsheet would run as a formula (starting with
        ``=``, ``+``, ``-``, ``@``, a tab or a carriage return) is written
        with a leading ``'`` (:func:`labelflip._text.csv_cell`).
        """
        cols, _ = self._export_columns()
        names = list(cols)
        for name in BOOL_COLUMNS:
            cols[name] = np.asarray(cols[name]).astype(np.int64)
        lists = [c.tolist() if isinstance(c, np.ndarray) else c for c in cols.values()]
        lists = [
            [csv_cell(v) for v in values] if name in _TEXT_EXPORT_COLUMNS else values
            for name, values in zip(names, lists, strict=True)
        ]

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                writer.writerow(names)
                writer.writerows(zip(*lists, strict=True))

        return write_atomic(path, write)

    def export_parquet(self, path: str | os.PathLike) -> Path:
        """Write all records as Parquet (atomically); returns the path.

        Same columns as :meth:`export_csv` with typed columns (``success``
        and ``valid`` bool); the store's meta and job table ride along as JSON in the
        schema metadata (``labelflip.meta``, ``labelflip.jobs``).
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        cols, info = self._export_columns()
        types = {
            "job_id": pa.string(),
            "attack": pa.string(),
            "label": pa.string(),
            "group": pa.string(),
            "sweep_value": pa.float64(),
            "dataset": pa.string(),
            "split": pa.string(),
        }
        for name in _DATA_COLUMNS:
            types[name] = (
                pa.bool_()
                if name in BOOL_COLUMNS
                else pa.float64()
                if name in _FLOAT_COLUMNS
                else pa.int64()
            )
        schema = pa.schema([pa.field(k, t) for k, t in types.items()], metadata=info)
        arrays = [pa.array(cols[name], type=t) for name, t in types.items()]
        table = pa.Table.from_arrays(arrays, schema=schema)
        return write_atomic(path, lambda tmp: pq.write_table(table, tmp))

"""SQLite implementation of :class:`RunStore` (standard library ``sqlite3``);
the layout of ``records.sqlite`` is declared in :mod:`labelflip.store.schema`."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from labelflip._files import fsync_dir as _fsync_dir
from labelflip.errors import LabelflipError
from labelflip.store._json import to_json as _to_json
from labelflip.store.export import Exports
from labelflip.store.jobs import JOB_FIELDS, SELECT_JOBS, Job, job_row, same
from labelflip.store.schema import DTYPES as _DTYPES
from labelflip.store.schema import FLOAT_COLUMNS as _FLOAT_COLUMNS
from labelflip.store.schema import OPTIONAL_COLUMNS as _OPTIONAL
from labelflip.store.schema import RECORD_COLUMNS, SCHEMA_VERSION, _short, validate_batch
from labelflip.store.schema import SQL_SCHEMA as _SCHEMA
from labelflip.store.schema import column as _column
from labelflip.store.schema import column_sql as _column_sql
from labelflip.store.schema import q as _q

APPLICATION_ID = 0x4C464C50  # "LFLP"

_DATA_COLUMNS = RECORD_COLUMNS[1:]
_ADV_DTYPE = np.dtype("<f4")
_SQLITE_HINTS = {  # primary result codes of write failures a user can fix
    8: "the run directory is read-only",  # SQLITE_READONLY
    10: "the disk may be full, at a file-size limit or failing",  # SQLITE_IOERR
    13: "the disk is full or a file-size limit was reached",  # SQLITE_FULL
}
_SQLITE_READONLY, _SQLITE_CANTOPEN = 8, 14  # primary result codes: read-only media
_SQL_CHUNK = 500  # keeps IN (...) lists far below SQLite's variable limit


_INSERT_RECORD = (
    f"INSERT INTO records (job_id, {', '.join(_q(c) for c in _DATA_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(RECORD_COLUMNS))})"
)


def _select_records(columns: list[str]) -> str:
    return (
        f"SELECT {', '.join(_q(c) for c in columns)} FROM records "
        'WHERE job_id = ? ORDER BY "sample"'
    )


class RunStore(Exports):
    """The record store of one run directory (``<run_dir>/records.sqlite``).

    Make one with :meth:`create`, reopen it with :meth:`open`; use it as a
    context manager or call :meth:`close`. Not shared between threads.
    """

    FILENAME = "records.sqlite"

    def __init__(self, con: sqlite3.Connection, path: Path, *, read_only: bool = False) -> None:
        """Use :meth:`create` or :meth:`open`."""
        self._con = con
        self.path = path
        self.run_dir = path.parent
        self.read_only = read_only
        # A store of an older schema opened read-only lacks the optional
        # columns added since: they read back as their defaults.
        have = {r[1] for r in con.execute("PRAGMA table_info(records)")}
        self._stored = [c for c in _DATA_COLUMNS if c in have]

    # ------------------------------------------------------------ lifecycle

    @classmethod
    def create(cls, run_dir: str | os.PathLike, *, meta: Mapping[str, Any]) -> RunStore:
        """Make ``run_dir`` (and parents) and a new, empty store in it with ``meta``.

        The database is built under a temporary name and renamed into place,
        so ``records.sqlite`` never exists half-initialised.
        """
        run_dir = Path(run_dir)
        path = run_dir / cls.FILENAME
        if run_dir.exists() and not run_dir.is_dir():
            raise LabelflipError(f"run directory {run_dir} is a file, not a directory")
        if path.exists():
            raise LabelflipError(
                f"run directory {run_dir} already holds a run store ({cls.FILENAME}); "
                f"resume it with `labelflip run --resume {run_dir}` or choose a new directory"
            )
        meta_rows = cls._meta_rows(meta)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LabelflipError(f"cannot create run directory {run_dir}: {exc}") from None
        tmp = run_dir / f".{cls.FILENAME}.{os.getpid()}.tmp"
        try:
            for stale in (tmp, Path(f"{tmp}-journal")):
                stale.unlink(missing_ok=True)
            # Rollback journal while building: no -wal file to carry along the rename.
            con = sqlite3.connect(tmp, isolation_level=None)
            try:
                con.execute("PRAGMA journal_mode=DELETE")
                con.execute("PRAGMA synchronous=FULL")
                con.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        con.execute(statement)
                con.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta_rows)
                con.execute(f"PRAGMA application_id={APPLICATION_ID}")
                con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                con.execute("COMMIT")
            finally:
                con.close()
            try:
                os.link(tmp, path)  # fails instead of replacing a store made meanwhile
            except FileExistsError:
                raise LabelflipError(
                    f"run directory {run_dir} already holds a run store ({cls.FILENAME})"
                ) from None
            except OSError:  # no hard links on this file system
                os.replace(tmp, path)
            _fsync_dir(run_dir)
        except (OSError, sqlite3.Error) as exc:
            raise LabelflipError(f"cannot create run store in {run_dir}: {exc}") from None
        finally:
            tmp.unlink(missing_ok=True)
        return cls.open(run_dir)

    @classmethod
    def open(cls, run_dir: str | os.PathLike, *, read_only: bool = False) -> RunStore:
        """Open the existing store of ``run_dir`` for reading and writing, or
        with ``read_only`` for reading only.

        A read-only store is opened with SQLite's ``mode=ro`` and never
        written: no journal-mode change, no schema upgrade, and every write
        method raises :class:`LabelflipError`. On read-only media (where
        SQLite cannot make the ``-shm`` file a reader of a WAL database
        needs) it is read as ``immutable``, unless its write-ahead log holds
        records not yet in the database: that is refused, never read
        without them. Reading commands (export, report, summaries) open
        stores read-only, so a finished run on read-only media can be
        exported and reported."""
        run_dir = Path(run_dir)
        path = run_dir / cls.FILENAME
        if not run_dir.is_dir():
            raise LabelflipError(f"run directory {run_dir} does not exist")
        if not path.is_file():
            raise LabelflipError(f"{run_dir} is not a labelflip run directory (no {cls.FILENAME})")
        try:
            if read_only:
                con = cls._connect_read_only(path)
            else:
                con = sqlite3.connect(
                    f"{path.resolve().as_uri()}?mode=rw", uri=True, isolation_level=None, timeout=30
                )
        except sqlite3.Error as exc:
            raise LabelflipError(f"cannot open run store {path}: {exc}") from None
        try:
            # Read the header before changing anything: a foreign file stays untouched.
            app_id = con.execute("PRAGMA application_id").fetchone()[0]
            version = con.execute("PRAGMA user_version").fetchone()[0]
            if app_id != APPLICATION_ID:
                raise LabelflipError(f"{path} is not a labelflip run store")
            if version > SCHEMA_VERSION:
                raise LabelflipError(
                    f"run store {path} has schema version {version}; this labelflip "
                    f"reads version {SCHEMA_VERSION} (upgrade labelflip)"
                )
            if version < 1:
                raise LabelflipError(f"run store {path} has no schema version; it is corrupt")
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
            lacking = {"meta", "jobs", "records", "adversarials"} - tables
            if lacking:
                raise LabelflipError(
                    f"run store {path} is corrupt: missing table(s) {', '.join(sorted(lacking))}"
                )
            if version < SCHEMA_VERSION and not read_only:
                cls._upgrade(con)
            if read_only:
                con.execute("PRAGMA query_only=ON")
            else:
                con.execute("PRAGMA journal_mode=WAL")
                con.execute("PRAGMA synchronous=FULL")
            con.execute("PRAGMA foreign_keys=ON")
        except LabelflipError:
            con.close()
            raise
        except sqlite3.Error as exc:
            con.close()
            code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
            if not read_only and code in (_SQLITE_READONLY, _SQLITE_CANTOPEN):
                raise LabelflipError(
                    f"cannot open run store {path} for writing: {exc} (read-only media or no "
                    "write permission; reading commands such as 'labelflip export' and "
                    "'labelflip report --out DIR' open it read-only)"
                ) from None
            raise LabelflipError(
                f"{path} is not a readable labelflip run store (corrupt or not SQLite: {exc})"
            ) from None
        return cls(con, path, read_only=read_only)

    @staticmethod
    def _connect_read_only(path: Path) -> sqlite3.Connection:
        """A ``mode=ro`` connection to ``path``; on read-only media, where no
        ``-shm`` file can be made, an ``immutable`` one if the write-ahead log
        is absent or empty (nothing in it to miss)."""
        uri = path.resolve().as_uri()
        con = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None, timeout=30)
        try:
            con.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # opens the WAL, if any
            return con
        except sqlite3.OperationalError as exc:
            con.close()
            code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
            if code not in (_SQLITE_READONLY, _SQLITE_CANTOPEN):
                raise
        wal = path.with_name(path.name + "-wal")
        if wal.is_file() and wal.stat().st_size > 0:
            raise LabelflipError(
                f"cannot read run store {path} here: its write-ahead log {wal.name} holds "
                "writes not yet in the database and cannot be read on read-only media without "
                f"its {path.name}-shm file; copy the run directory somewhere writable and "
                "read it there"
            )
        return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, isolation_level=None)

    @staticmethod
    def _upgrade(con: sqlite3.Connection) -> None:
        """Bring an older store to :data:`SCHEMA_VERSION` in one transaction:
        the optional record columns added since get their defaults (old
        records: no oracle, no attacker prediction, no squeeze score, valid).
        A store opened read-only is read as it is, the same defaults
        standing in for the missing columns."""
        con.execute("BEGIN IMMEDIATE")
        try:
            have = {r[1] for r in con.execute("PRAGMA table_info(records)")}
            for name in _OPTIONAL:
                if name not in have:
                    con.execute(f"ALTER TABLE records ADD COLUMN {_column_sql(name, default=True)}")
            con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close the database (idempotent)."""
        self._con.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RunStore({str(self.run_dir)!r})"

    # ------------------------------------------------------------ plumbing

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Report SQLite failures (corruption, locks, full disk) as one-line errors."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            hint = _SQLITE_HINTS.get((getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF)
            hint = f" ({hint}; committed batches are kept: resume when fixed)" if hint else ""
            raise LabelflipError(f"run store {self.path}: {action} failed: {exc}{hint}") from None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed on success, rolled back on any error."""
        if self.read_only:
            raise LabelflipError(
                f"run store {self.path} was opened read-only; it cannot be written"
            )
        self._con.execute("BEGIN IMMEDIATE")
        try:
            yield self._con
            self._con.execute("COMMIT")
        except BaseException:
            if self._con.in_transaction:
                self._con.execute("ROLLBACK")
            raise

    def _require_job(self, job_id: str) -> None:
        row = self._con.execute("SELECT 1 FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise LabelflipError(f"run store {self.path} has no job '{job_id}'")

    @staticmethod
    def _meta_rows(meta: Mapping[str, Any]) -> list[tuple[str, str]]:
        if not isinstance(meta, Mapping):
            raise LabelflipError(f"meta must be a dict, got {type(meta).__name__}")
        rows = []
        for key, value in meta.items():
            if not isinstance(key, str) or not key:
                raise LabelflipError(f"meta keys must be non-empty strings, got {key!r}")
            rows.append((key, _to_json(value, f"meta '{key}'")))
        return rows

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[RunStore]:
        """Read the store as of one moment: every read inside the block sees
        the same committed state (one SQLite read transaction; a run writing
        meanwhile goes on, unseen). Nested blocks share the outer snapshot."""
        if self._con.in_transaction:
            yield self
            return
        with self._errors("snapshot"):
            self._con.execute("BEGIN")
            self._con.execute("SELECT COUNT(*) FROM meta").fetchone()  # the snapshot starts here
        try:
            yield self
        finally:
            if self._con.in_transaction:
                self._con.execute("COMMIT")

    def progress(self) -> dict[str, int]:
        """How far the run had got: ``records`` committed and ``jobs_done``
        (both only ever grow, so a larger pair is a later state)."""
        with self._errors("progress"):
            n = self._con.execute("SELECT COUNT(*) FROM records").fetchone()[0]
            done = self._con.execute("SELECT COUNT(*) FROM jobs WHERE status = 'done'")
            return {"records": int(n), "jobs_done": int(done.fetchone()[0])}

    # ------------------------------------------------------------ metadata

    def set_meta(self, key: str, value: Any) -> None:
        """Store ``value`` (JSON; numpy arrays become lists) under ``key``, replacing any."""
        rows = self._meta_rows({key: value})
        with self._errors("set_meta"), self._transaction() as con:
            con.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", rows)

    def meta(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key``, or ``default``."""
        with self._errors("meta"):
            row = self._con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def all_meta(self) -> dict[str, Any]:
        """All metadata, sorted by key."""
        with self._errors("all_meta"):
            rows = self._con.execute("SELECT key, value FROM meta ORDER BY key").fetchall()
        return {k: json.loads(v) for k, v in rows}

    # ------------------------------------------------------------ jobs

    def add_job(self, job: Job) -> None:
        """Register ``job``; a no-op if the identical job is already there.

        Raises :class:`LabelflipError` if ``job.job_id`` exists with any other
        field different (a resumed run must not mix settings).
        """
        self.add_jobs([job])

    def add_jobs(self, jobs: Sequence[Job]) -> None:
        """Register ``jobs`` (in order) as one transaction, as :meth:`add_job`
        does each: identical jobs already there are kept, a job whose id is
        there with other fields is an error and then none is added."""
        rows = [job_row(job) for job in jobs]
        ids = [row[0] for row in rows]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise LabelflipError(f"job '{dup}' is given twice")
        with self._errors("add_jobs"), self._transaction() as con:
            old = {r[0]: r for r in con.execute(SELECT_JOBS)}
            for row in rows:
                was = old.get(row[0])
                if was is None:
                    continue
                diff = [n for n, a, b in zip(JOB_FIELDS, was, row, strict=True) if not same(a, b)]
                if diff:
                    raise LabelflipError(
                        f"run directory {self.run_dir} was made with different settings for job "
                        f"'{row[0]}' (differs in: {', '.join(diff)})"
                    )
            con.executemany(
                f"INSERT INTO jobs ({', '.join(_q(c) for c in JOB_FIELDS)}) "
                f"VALUES ({', '.join('?' * len(JOB_FIELDS))})",
                [row for row in rows if row[0] not in old],
            )

    def jobs(self) -> list[Job]:
        """All jobs, in insertion order."""
        with self._errors("jobs"):
            rows = self._con.execute(f"{SELECT_JOBS} ORDER BY pos").fetchall()
        return [self._job_from_row(r) for r in rows]

    @staticmethod
    def _job_from_row(row: tuple) -> Job:
        values = dict(zip(JOB_FIELDS, row, strict=True))
        values["settings"] = json.loads(values["settings"])
        values["versions"] = json.loads(values["versions"])
        return Job(**values)

    def job_status(self, job_id: str) -> str:
        """``"pending"`` or ``"done"``."""
        with self._errors("job_status"):
            row = self._con.execute("SELECT status FROM jobs WHERE job_id = ?", (job_id,))
            row = row.fetchone()
        if row is None:
            raise LabelflipError(f"run store {self.path} has no job '{job_id}'")
        return row[0]

    def mark_done(self, job_id: str) -> None:
        """Mark ``job_id`` finished (a resumed run skips it)."""
        with self._errors("mark_done"), self._transaction() as con:
            self._require_job(job_id)
            con.execute("UPDATE jobs SET status = 'done' WHERE job_id = ?", (job_id,))

    # ------------------------------------------------------------ records

    def done_samples(self, job_id: str) -> np.ndarray:
        """Sorted sample positions (int64) already recorded for ``job_id``."""
        with self._errors("done_samples"):
            self._require_job(job_id)
            rows = self._con.execute(
                'SELECT "sample" FROM records WHERE job_id = ? ORDER BY "sample"', (job_id,)
            ).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def write_batch(
        self,
        job_id: str,
        records: Mapping[str, ArrayLike],
        x_adv: ArrayLike | None = None,
    ) -> None:
        """Store one batch of records (and its adversarial examples) atomically.

        ``records`` maps every name of :data:`RECORD_COLUMNS` except ``job_id``
        (optional; must then equal ``job_id``) and those of
        :data:`OPTIONAL_COLUMNS` (optional: their defaults) to a 1-D array,
        all of one length. ``x_adv`` (``N`` examples of any shape) is kept as float32:
        bit-exact for float32 input. Either every row is stored or none; a
        ``(job_id, sample)`` already present is an error, never overwritten.
        """
        cols = validate_batch(job_id, records)
        n = len(cols["sample"])
        blobs: list[tuple] = []
        if x_adv is not None:
            xa = np.asarray(x_adv)
            if xa.dtype.kind not in "biuf":
                raise LabelflipError(f"x_adv must be a float array, got dtype {xa.dtype}")
            if xa.ndim < 1 or xa.shape[0] != n:
                raise LabelflipError(
                    f"x_adv must hold one example per record ({n}), got shape {xa.shape}"
                )
            xa = np.ascontiguousarray(xa, dtype=_ADV_DTYPE)
            shape = json.dumps(list(xa.shape[1:]))
            samples = cols["sample"].tolist()
            blobs = [(job_id, s, shape, xa[i].tobytes()) for i, s in enumerate(samples)]
        lists = [[job_id] * n] + [cols[c].tolist() for c in _DATA_COLUMNS]
        rows = list(zip(*lists, strict=True))
        with self._errors("write_batch"):
            self._require_job(job_id)
            try:
                with self._transaction() as con:
                    con.executemany(_INSERT_RECORD, rows)
                    con.executemany(
                        'INSERT INTO adversarials (job_id, "sample", shape, data) '
                        "VALUES (?, ?, ?, ?)",
                        blobs,
                    )
            except sqlite3.IntegrityError as exc:
                present = sorted(set(self.done_samples(job_id).tolist()) & set(lists[1]))
                if present:
                    raise LabelflipError(
                        f"job '{job_id}' already has records for sample(s) {_short(present)}; "
                        "records are never overwritten"
                    ) from None
                raise LabelflipError(f"batch for job '{job_id}' was refused: {exc}") from None

    def records(self, job_id: str | None = None) -> dict[str, np.ndarray]:
        """Columns of :data:`RECORD_COLUMNS` for one job or all, ordered by job
        insertion order, then sample (``job_id`` as a numpy str array,
        ``success`` bool, norms and seconds float64, the rest int64)."""
        with self._errors("records"):
            if job_id is None:
                ids = [r[0] for r in self._con.execute("SELECT job_id FROM jobs ORDER BY pos")]
            else:
                self._require_job(job_id)
                ids = [job_id]
            rows: list[tuple] = []
            owners: list[str] = []
            select = _select_records(self._stored)
            for jid in ids:
                part = self._con.execute(select, (jid,)).fetchall()
                rows.extend(part)
                owners.extend([jid] * len(part))
        out: dict[str, np.ndarray] = {"job_id": np.array(owners, dtype=str)}
        columns = list(zip(*rows, strict=True)) if rows else [()] * len(self._stored)
        stored = dict(zip(self._stored, columns, strict=True))
        for name in _DATA_COLUMNS:
            values = stored.get(name)
            if values is None:  # an optional column an older store lacks
                values = [_OPTIONAL[name]] * len(owners)
            if name in _FLOAT_COLUMNS:
                values = [math.nan if v is None else v for v in values]
            out[name] = np.array(values, dtype=_DTYPES[name])
        return out

    def adversarials(self, job_id: str, samples: ArrayLike) -> np.ndarray:
        """The stored adversarial examples of ``samples`` (float32, shape
        ``(len(samples), *example_shape)``), in the order asked; an error if
        any was not stored."""
        wanted = _column("samples", np.atleast_1d(np.asarray(samples)), "argument").tolist()
        found: dict[int, tuple[str, bytes]] = {}
        with self._errors("adversarials"):
            self._require_job(job_id)
            unique = sorted(set(wanted))
            for i in range(0, len(unique), _SQL_CHUNK):
                chunk = unique[i : i + _SQL_CHUNK]
                cur = self._con.execute(
                    'SELECT "sample", shape, data FROM adversarials WHERE job_id = ? '
                    f'AND "sample" IN ({", ".join("?" * len(chunk))})',
                    (job_id, *chunk),
                )
                found.update((s, (shape, data)) for s, shape, data in cur)
        missing = [s for s in unique if s not in found]
        if missing:
            raise LabelflipError(
                f"job '{job_id}' has no stored adversarial example for sample(s) {_short(missing)}"
            )
        shapes = {shape for shape, _ in found.values()}
        if len(shapes) > 1:
            raise LabelflipError(
                f"adversarial examples of job '{job_id}' asked together have different shapes"
            )
        if not shapes:  # nothing asked: the job's example shape, if it has any
            with self._errors("adversarials"):
                row = self._con.execute(
                    "SELECT shape FROM adversarials WHERE job_id = ? LIMIT 1", (job_id,)
                ).fetchone()
            return np.zeros((0, *json.loads(row[0])) if row else (0,), dtype=np.float32)
        shape = tuple(json.loads(shapes.pop()))
        out = np.empty((len(wanted), *shape), dtype=_ADV_DTYPE)
        for i, s in enumerate(wanted):
            out[i] = np.frombuffer(found[s][1], dtype=_ADV_DTYPE).reshape(shape)
        return out.astype(np.float32, copy=False)

    # ------------------------------------------------------------ export

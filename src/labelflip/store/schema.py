"""The record schema, declared once: every column of a run's records, its
dtype and meaning. The SQLite table, the batch validation, the exports and
the report's CSV files derive from :data:`COLUMNS`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from labelflip.errors import LabelflipError

SCHEMA_VERSION = 3
"""Version of the store's SQLite schema (``PRAGMA user_version``): 2 added
``oracle_pred``, ``attacker_pred`` and ``squeeze``, 3 added ``valid``."""


@dataclass(frozen=True)
class Column:
    """One record column: ``kind`` is ``str``, ``int``, ``bool`` or
    ``float``; an ``optional`` column may be left out of a batch and then
    takes ``default``. ``missing``: the stored value that means "no value"
    (-1 for "no class", NaN for a float); the exports write it as null in
    Parquet and as an empty cell in CSV."""

    name: str
    kind: str
    doc: str
    optional: bool = False
    default: float = -1
    missing: float | None = None

    @property
    def dtype(self) -> type:
        return {"str": np.str_, "int": np.int64, "bool": np.bool_, "float": np.float64}[self.kind]


COLUMNS: tuple[Column, ...] = (
    Column("job_id", "str", "the job (see the job table)"),
    Column("sample", "int", "position in the run's sample list"),
    Column("index", "int", "index in the dataset split"),
    Column("true", "int", "true label (a bitmask of labels for a multi-label model)"),
    Column(
        "clean_pred",
        "int",
        "the model's class for the clean sample (a bitmask of labels for a multi-label model)",
    ),
    Column(
        "adv_pred",
        "int",
        "the model's class for the adversarial example; none (-1 in the store) when its "
        "logits are not finite",
        missing=-1,
    ),
    Column(
        "target",
        "int",
        "the target class (a bitmask of labels for a multi-label model); none (-1 in the "
        "store) when untargeted",
        missing=-1,
    ),
    Column("success", "bool", "the attack succeeded (judged by the model on x_adv)"),
    Column("l0", "int", "L0 norm of the perturbation (changed input values)"),
    Column("l1", "float", "L1 norm of the perturbation", missing=math.nan),
    Column("l2", "float", "L2 norm of the perturbation", missing=math.nan),
    Column("linf", "float", "L-infinity norm of the perturbation", missing=math.nan),
    Column("iterations", "int", "iterations the attack spent on the sample"),
    Column("forwards", "int", "forward passes spent on the sample"),
    Column("backwards", "int", "backward passes spent on the sample"),
    Column(
        "seconds",
        "float",
        "the batch's attack time (target choice included, judging not) over its size",
        missing=math.nan,
    ),
    Column(
        "oracle_pred",
        "int",
        "an independent oracle's class for x_adv; none (-1 in the store) without an oracle "
        "or when the oracle's logits are not finite",
        optional=True,
        default=-1,
        missing=-1,
    ),
    Column(
        "attacker_pred",
        "int",
        "the class the attack's own stand-in for the oracle gives x_adv (a Type I "
        "attack's SVAE classifier f2); none (-1 in the store) otherwise",
        optional=True,
        default=-1,
        missing=-1,
    ),
    Column(
        "squeeze",
        "float",
        "feature-squeezing score of x_adv; none (NaN in the store) when the run does not "
        "compute it",
        optional=True,
        default=math.nan,
        missing=math.nan,
    ),
    Column(
        "valid",
        "bool",
        "the model's logits on x_adv (and an oracle's) are finite; an invalid record "
        "(adv_pred -1, no success) is left out of every statistic",
        optional=True,
        default=1,
    ),
)

RECORD_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS)
"""Record columns, in order."""

OPTIONAL_COLUMNS: dict[str, float] = {c.name: c.default for c in COLUMNS if c.optional}
"""Record columns a batch may leave out, and the value they then take."""

FLOAT_COLUMNS = frozenset(c.name for c in COLUMNS if c.kind == "float")
INT_COLUMNS = frozenset(c.name for c in COLUMNS if c.kind == "int")
BOOL_COLUMNS = frozenset(c.name for c in COLUMNS if c.kind == "bool")
DTYPES: dict[str, type] = {c.name: c.dtype for c in COLUMNS if c.kind != "str"}


def record_columns(**columns: np.ndarray) -> dict[str, np.ndarray]:
    """A batch's columns cast to their declared dtypes (unknown names kept as
    they are, for the store to refuse)."""
    out = {}
    for name, value in columns.items():
        dtype = DTYPES.get(name)
        a = np.asarray(value)
        out[name] = a if dtype is None else a.astype(np.int64 if dtype is np.bool_ else dtype)
    return out


def only_valid(records: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    """``records`` without the invalid rows (``valid`` false: the model's
    logits on the adversarial example were not finite) and how many were
    left out; every statistic is computed from the valid rows only."""
    valid = records.get("valid")
    out = dict(records)
    if valid is None:
        return out, 0
    keep = np.asarray(valid).astype(bool)
    dropped = int(keep.size - np.count_nonzero(keep))
    if dropped:
        out = {name: np.asarray(value)[keep] for name, value in records.items()}
    return out, dropped


def _short(values: list[int], limit: int = 8) -> str:
    """``[1, 2, 3]`` or ``[1, 2, ..., (12 in all)]`` for long lists."""
    if len(values) <= limit:
        return str(values)
    return f"[{', '.join(map(str, values[:limit]))}, ... ({len(values)} in all)]"


def column(name: str, value: ArrayLike, what: str = "record column") -> np.ndarray:
    """One record column as a 1-D array of its stored dtype."""
    try:
        a = np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - anything unconvertible is a user error
        raise LabelflipError(f"{what} '{name}' is not an array: {exc}") from None
    if a.ndim != 1:
        raise LabelflipError(f"{what} '{name}' must be 1-D, got shape {a.shape}")
    kind = a.dtype.kind
    if name in FLOAT_COLUMNS:
        if kind not in "biuf":
            raise LabelflipError(f"{what} '{name}' must be numeric, got dtype {a.dtype}")
        return a.astype(np.float64)
    if kind == "f" and a.size:
        if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            raise LabelflipError(f"{what} '{name}' must hold whole numbers")
    elif kind not in "biuf" and a.size:
        raise LabelflipError(f"{what} '{name}' must hold integers, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if name in BOOL_COLUMNS and a.size and not np.all((a == 0) | (a == 1)):
        raise LabelflipError(f"record column '{name}' must hold 0/1 or booleans")
    return a


def validate_batch(job_id: str, records: Mapping[str, ArrayLike]) -> dict[str, np.ndarray]:
    """The batch's data columns, checked for names, dtypes and equal lengths."""
    if not isinstance(records, Mapping):
        raise LabelflipError(f"records must be a mapping of columns, got {type(records).__name__}")
    names = set(records)
    missing = [c for c in RECORD_COLUMNS[1:] if c not in names and c not in OPTIONAL_COLUMNS]
    extra = sorted(str(c) for c in names - set(RECORD_COLUMNS))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if extra:
            parts.append(f"unknown {', '.join(extra)}")
        raise LabelflipError(f"batch for job '{job_id}' has wrong columns: {'; '.join(parts)}")
    cols = {name: column(name, records[name]) for name in RECORD_COLUMNS[1:] if name in names}
    n = len(cols["sample"])
    for name, value in OPTIONAL_COLUMNS.items():
        if name not in cols:
            cols[name] = np.full(n, value, dtype=DTYPES[name])
    lengths = {name: len(a) for name, a in cols.items()}
    if "job_id" in records:
        ids = np.asarray(records["job_id"])
        lengths["job_id"] = len(ids) if ids.ndim == 1 else -1
        if ids.ndim == 1 and np.any(ids.astype(str) != job_id):
            raise LabelflipError(f"batch for job '{job_id}' has rows of another job_id")
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{k}={v}" for k, v in lengths.items())
        raise LabelflipError(f"batch for job '{job_id}' has columns of different lengths: {detail}")
    sample = cols["sample"]
    if sample.size and sample.min() < 0:
        raise LabelflipError(f"batch for job '{job_id}' has negative sample positions")
    uniq, counts = np.unique(sample, return_counts=True)
    if np.any(counts > 1):
        dup = uniq[counts > 1].tolist()
        raise LabelflipError(f"batch for job '{job_id}' repeats sample(s) {_short(dup)}")
    return cols


# ------------------------------------------------------------------ SQL
#
# Layout of ``records.sqlite`` (schema version :data:`SCHEMA_VERSION`, marked by
# ``PRAGMA application_id`` = :data:`APPLICATION_ID` and ``PRAGMA user_version``):
#
# - ``meta(key, value)``: JSON values.
# - ``jobs(pos, job_id, attack, settings, seed, model_sha256, versions, label,
#   group, sweep_value, status)``: ``pos`` is the insertion order; ``settings``
#   and ``versions`` are canonical JSON (sorted keys).
# - ``records(job_id, sample, ...)``: one row per :data:`RECORD_COLUMNS`,
#   ``PRIMARY KEY (job_id, sample)``. Float columns have no declared type so
#   every float64 reads back bit-exact, except that NaN is stored as NULL
#   (SQLite has no NaN) and reads back as the canonical NaN.
# - ``adversarials(job_id, sample, shape, data)``: little-endian float32 bytes
#   of one adversarial example and its shape (JSON list).


def q(name: str) -> str:
    """A quoted SQL identifier (``index``, ``true`` and ``group`` are keywords)."""
    return f'"{name}"'


def column_sql(name: str, *, default: bool = False) -> str:
    """The column's SQL definition; ``default`` adds the optional column's
    default (for ``ALTER TABLE ... ADD COLUMN`` when a store is upgraded)."""
    if default:
        value = OPTIONAL_COLUMNS[name]
        if name in FLOAT_COLUMNS:  # NaN is stored as NULL
            return f"{q(name)} CHECK (typeof({q(name)}) IN ('real', 'null'))"
        check = f" CHECK ({q(name)} IN (0, 1))" if name in BOOL_COLUMNS else ""
        return f"{q(name)} INTEGER NOT NULL DEFAULT {int(value)}{check}"
    if name in BOOL_COLUMNS:
        return f"{q(name)} INTEGER NOT NULL CHECK ({q(name)} IN (0, 1))"
    if name in FLOAT_COLUMNS:
        # No declared type: REAL affinity would store -0.0 as the integer 0.
        return f"{q(name)} CHECK (typeof({q(name)}) IN ('real', 'null'))"
    return f"{q(name)} INTEGER NOT NULL"


RECORD_COLUMNS_SQL = ",\n    ".join(column_sql(c) for c in RECORD_COLUMNS[1:])
SQL_SCHEMA = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE jobs (
    pos INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL UNIQUE,
    attack TEXT NOT NULL,
    settings TEXT NOT NULL,
    seed INTEGER NOT NULL,
    model_sha256 TEXT NOT NULL,
    versions TEXT NOT NULL,
    label TEXT NOT NULL,
    "group" TEXT NOT NULL,
    sweep_value REAL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done'))
);
CREATE TABLE records (
    job_id TEXT NOT NULL REFERENCES jobs(job_id),
    {RECORD_COLUMNS_SQL},
    PRIMARY KEY (job_id, "sample")
) WITHOUT ROWID;
CREATE TABLE adversarials (
    job_id TEXT NOT NULL,
    "sample" INTEGER NOT NULL,
    shape TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (job_id, "sample"),
    FOREIGN KEY (job_id, "sample") REFERENCES records(job_id, "sample")
);
"""

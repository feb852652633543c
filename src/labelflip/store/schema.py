"""The record schema, declared once: every column of a run's records, its
dtype and meaning. The SQLite table, the batch validation, the exports and
the report's CSV files derive from :data:`COLUMNS`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Column:
    """One record column: ``kind`` is ``str``, ``int``, ``bool`` or
    ``float``; an ``optional`` column may be left out of a batch and then
    takes ``default``."""

    name: str
    kind: str
    doc: str
    optional: bool = False
    default: float = -1

    @property
    def dtype(self) -> type:
        return {"str": np.str_, "int": np.int64, "bool": np.bool_, "float": np.float64}[self.kind]


COLUMNS: tuple[Column, ...] = (
    Column("job_id", "str", "the job (see the job table)"),
    Column("sample", "int", "position in the run's sample list"),
    Column("index", "int", "index in the dataset split"),
    Column("true", "int", "true label (a bitmask of labels for a multi-label model)"),
    Column("clean_pred", "int", "the model's class for the clean sample"),
    Column("adv_pred", "int", "the model's class for the adversarial example"),
    Column("target", "int", "the target class; -1 when untargeted"),
    Column("success", "bool", "the attack succeeded (judged by the model on x_adv)"),
    Column("l0", "int", "L0 norm of the perturbation (changed input values)"),
    Column("l1", "float", "L1 norm of the perturbation"),
    Column("l2", "float", "L2 norm of the perturbation"),
    Column("linf", "float", "L-infinity norm of the perturbation"),
    Column("iterations", "int", "iterations the attack spent on the sample"),
    Column("forwards", "int", "forward passes spent on the sample"),
    Column("backwards", "int", "backward passes spent on the sample"),
    Column("seconds", "float", "the batch's wall time divided by its size"),
    Column(
        "oracle_pred", "int", "an independent oracle's class for x_adv; -1 without one",
        optional=True, default=-1,
    ),
    Column(
        "attacker_pred", "int",
        "the class the attack's own stand-in for the oracle gives x_adv (a Type I "
        "attack's SVAE classifier f2); -1 otherwise",
        optional=True, default=-1,
    ),
    Column(
        "squeeze", "float",
        "feature-squeezing score of x_adv; NaN when the run does not compute it",
        optional=True, default=math.nan,
    ),
)

RECORD_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS)
"""Record columns, in order."""

OPTIONAL_COLUMNS: dict[str, float] = {c.name: c.default for c in COLUMNS if c.optional}
"""Record columns a batch may leave out, and the value they then take."""

FLOAT_COLUMNS = frozenset(c.name for c in COLUMNS if c.kind == "float")
INT_COLUMNS = frozenset(c.name for c in COLUMNS if c.kind == "int")
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

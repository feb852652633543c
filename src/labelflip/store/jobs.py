"""The job table's row: :class:`Job`, its validation and its stored form."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from labelflip.errors import LabelflipError
from labelflip.store._json import to_json as _to_json
from labelflip.store.schema import q as _q


@dataclass(frozen=True)
class Job:
    """One attack configuration of a run (a row of the job table).

    ``settings`` and ``versions`` must be JSON-serialisable; read back from a
    store they are their JSON round trip (tuples become lists).
    """

    job_id: str
    attack: str
    settings: dict = field(hash=False)
    seed: int
    model_sha256: str
    versions: dict = field(hash=False)
    label: str = ""
    group: str = ""
    sweep_value: float | None = None


def _validate_job(job: Job) -> None:
    if not isinstance(job, Job):
        raise LabelflipError(f"add_job expects a Job, got {type(job).__name__}")
    for name in ("job_id", "attack", "model_sha256", "label", "group"):
        if not isinstance(getattr(job, name), str):
            raise LabelflipError(f"job {name} must be a string, got {getattr(job, name)!r}")
    if not job.job_id:
        raise LabelflipError("job_id must not be empty")
    if isinstance(job.seed, bool) or not isinstance(job.seed, numbers.Integral):
        raise LabelflipError(f"seed of job '{job.job_id}' must be an integer, got {job.seed!r}")
    for name in ("settings", "versions"):
        if not isinstance(getattr(job, name), Mapping):
            raise LabelflipError(f"{name} of job '{job.job_id}' must be a dict")
    sv = job.sweep_value
    if sv is not None and (isinstance(sv, bool) or not isinstance(sv, numbers.Real)):
        raise LabelflipError(f"sweep_value of job '{job.job_id}' must be a number or None")


def job_row(job: Job) -> tuple:
    """The job as stored: JSON-canonical settings/versions, float sweep value."""
    _validate_job(job)
    return (
        job.job_id,
        job.attack,
        _to_json(dict(job.settings), f"settings of job '{job.job_id}'"),
        int(job.seed),
        job.model_sha256,
        _to_json(dict(job.versions), f"versions of job '{job.job_id}'"),
        job.label,
        job.group,
        None if job.sweep_value is None else float(job.sweep_value),
    )


JOB_FIELDS = (
    "job_id",
    "attack",
    "settings",
    "seed",
    "model_sha256",
    "versions",
    "label",
    "group",
    "sweep_value",
)
SELECT_JOBS = f"SELECT {', '.join(_q(c) for c in JOB_FIELDS)} FROM jobs"


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b

"""Per-job numbers of a run: the single source for the HTML report,
``summary.json``, ``jobs.csv`` and the CLI's end-of-run table.

:func:`summarize_run` returns the typed :class:`~labelflip.report.schema.RunSummary`
(each job summarised by its kind, :mod:`labelflip.report.kinds`);
:func:`summarize` returns its JSON data (lists, numbers, strings, ``None``
for NaN or "not available"), the content of ``summary.json``.

Subsets. Flip matrices, symmetry, landing shares and median norms use the
samples the model classified correctly before the attack ("clean-correct"):
a sample already misclassified is trivially "successful" with a zero
perturbation and says nothing about where the attack sends it. The flip
matrix over all samples and the success rate over all samples are given too.

Invalid records (the model's logits on the adversarial example were NaN or
infinite: no class, see :mod:`labelflip.run.step`) are left out of every
number, and counted (:func:`invalid_note`); so are white-noise images with
non-finite logits. A summary is read from one snapshot of the store.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from labelflip import analysis
from labelflip.errors import LabelflipError
from labelflip.report import jobstats
from labelflip.report.boundary import boundaries
from labelflip.report.jobstats import RunContext
from labelflip.report.kinds import kind_for
from labelflip.report.schema import (
    MIN_FLIPS,
    SUMMARY_VERSION,
    Distance,
    Group,
    JobSummary,
    RunInfo,
    RunSummary,
    WhiteNoise,
    as_summary,
    jsonable,
)
from labelflip.report.text import format_num, format_p, format_pct, missing
from labelflip.store import RunStore, only_valid

DISTANCE_NAMES = ("perceptual", "semantic", "confusion")  # jobs.csv columns, in this order

__all__ = [
    "CSV_COLUMNS",
    "MIN_FLIPS",
    "TABLE_HEADER",
    "csv_rows",
    "format_attractor",
    "format_flips",
    "format_p",
    "format_pct",
    "format_symmetry",
    "format_table",
    "invalid_note",
    "jsonable",
    "summarize",
    "summarize_run",
]


# ---------------------------------------------------------------- run level


def _class_names(meta: Mapping[str, Any], records: Sequence[Mapping[str, np.ndarray]]) -> list:
    """Class names from the run meta (``class_names``, ``num_classes``).

    Without either, the number of classes is the largest label seen plus one
    and the names are the class indices.
    """
    names = meta.get("class_names")
    k = meta.get("num_classes")
    if names is not None:
        names = [str(n) for n in names]
        if k is not None and int(k) != len(names):
            raise LabelflipError(
                f"run meta has num_classes={k} but {len(names)} class_names; cannot label classes"
            )
        return names
    if k is None:
        seen = [int(r[c].max()) for r in records for c in ("true", "adv_pred") if r[c].size]
        seen += [int(v) for v in meta.get("white_noise_pred") or []]
        k = max(seen) + 1 if seen else 1
    return [str(i) for i in range(int(k))]


def _white_noise(meta: Mapping[str, Any], names: list[str]) -> WhiteNoise | None:
    """Distribution of the model's predictions on uniform-noise images, or None."""
    pred = meta.get("white_noise_pred")
    if not pred:
        return None
    k = len(names)
    dist = analysis.class_distribution(np.asarray(pred, dtype=np.int64), k)
    top, share = analysis.top_attractor(dist)
    return WhiteNoise(
        n=len(pred),
        distribution=dist,
        entropy=analysis.normalized_entropy(dist) if k > 1 else math.nan,
        top_class=top,
        top_name=None if top is None else names[top],
        top_share=share,
    )


def _run_info(
    meta: Mapping[str, Any],
    names: list[str],
    n_samples: int,
    invalid: Mapping[str, int],
    snapshot: Mapping[str, int],
) -> RunInfo:
    model = meta.get("model") if isinstance(meta.get("model"), Mapping) else {}
    encoding = meta.get("encoding") if isinstance(meta.get("encoding"), Mapping) else {}
    return RunInfo(
        name=meta.get("name"),
        dataset=meta.get("dataset"),
        split=meta.get("split"),
        model=dict(model),
        num_classes=len(names),
        class_names=names,
        n_samples=n_samples,
        bounds=meta.get("bounds") or [0.0, 1.0],
        input_shape=meta.get("input_shape"),
        started=meta.get("started", meta.get("created")),
        finished=meta.get("finished"),
        generated=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        encoding=dict(encoding),
        test_accuracy=_test_accuracy(model),
        invalid=dict(invalid),
        white_noise_invalid=int(meta.get("white_noise_nonfinite") or 0),
        snapshot=dict(snapshot),
    )


def _distances(meta: Mapping[str, Any], k: int) -> list[Distance]:
    """The run's class-distance matrices (``meta["distances"]``); those whose
    size does not match the classes are left out."""
    out = []
    for d in meta.get("distances") or []:
        matrix = np.asarray(d.get("matrix"), dtype=np.float64)
        if matrix.shape == (k, k) and np.all(np.isfinite(matrix)):
            out.append(Distance(d["name"], d.get("class_names"), matrix, d.get("info")))
    return out


def _class_groups(distances: Sequence[Distance], k: int) -> tuple[str, ...] | None:
    """Each class's top-level group in the run's class hierarchy: the
    semantic distance's ``info["groups"]`` or, for runs recorded before it
    was stored, the built-in hierarchy it names. None without a hierarchy."""
    for d in distances:
        if d.name != "semantic":
            continue
        info = d.info or {}
        groups = info.get("groups")
        if isinstance(groups, list) and len(groups) == k:
            return tuple(str(g) for g in groups)
        source = str(info.get("source", ""))
        if source.startswith("builtin:") and d.class_names:
            from labelflip.similarity import semantic  # runs from before "groups"

            try:
                h = semantic.load_hierarchy(source.removeprefix("builtin:"))
                return semantic.top_groups(h, d.class_names)
            except LabelflipError:
                return None
    return None


def _image_size(meta: Mapping[str, Any]) -> tuple[int, int] | None:
    shape = meta.get("input_shape")
    if isinstance(shape, (list, tuple)) and len(shape) == 3:
        return int(shape[1]), int(shape[2])
    return None


def _groups(jobs: Sequence[JobSummary]) -> list[Group]:
    """Sweep groups with at least two jobs, in first-seen order; jobs by sweep value
    (jobs without one last, in run order)."""
    by_group: dict[str, list[JobSummary]] = {}
    for j in jobs:
        if j.group:
            by_group.setdefault(j.group, []).append(j)
    out = []
    for name, members in by_group.items():
        if len(members) < 2:
            continue
        members = sorted(members, key=lambda j: (j.sweep_value is None, j.sweep_value or 0.0))
        values = [j.sweep_value for j in members]
        out.append(Group(name, [j.job_id for j in members], values, _swept(members)))
    return out


def _swept(members: Sequence[JobSummary]) -> str | None:
    """The setting a sweep varies: the one whose value is each job's sweep
    value and differs between the jobs."""
    for key in members[0].settings:
        values = [j.settings.get(key) for j in members]
        if (
            all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and v == j.sweep_value
                for v, j in zip(values, members, strict=True)
            )
            and len(set(values)) > 1
        ):
            return key
    return None


def _test_accuracy(model: Mapping[str, Any]) -> float:
    """The checkpoint's own test accuracy: the run's record of it, else its
    sidecar (``<checkpoint>.json``, read when its weights' SHA-256 is the
    run's), else NaN."""
    if isinstance(model.get("test_accuracy"), (int, float)):
        return float(model["test_accuracy"])
    checkpoint = model.get("checkpoint")
    if not isinstance(checkpoint, str):
        return math.nan
    try:
        sidecar = json.loads(Path(checkpoint).with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return math.nan
    if not isinstance(sidecar, dict) or sidecar.get("weights_sha256") != model.get("sha256"):
        return math.nan
    acc = sidecar.get("clean_test_accuracy")
    if not isinstance(acc, (int, float)):
        return math.nan
    return float(acc)


def summarize_run(
    store: RunStore | str | os.PathLike,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> RunSummary:
    """The typed summary of a run store (or run directory): the run, its
    white-noise prior (``None`` without ``white_noise_pred``), its class
    distances, one :class:`~labelflip.report.schema.JobSummary` per job in
    run order, made by the job's kind (symmetry with a ``level`` percentile
    bootstrap interval of ``n_boot`` replicates seeded with ``seed``), the
    sweep groups with at least two jobs, ordered by sweep value, and the
    run's judges."""
    if not isinstance(store, RunStore):
        with RunStore.open(store, read_only=True) as opened:
            return summarize_run(opened, n_boot=n_boot, level=level, seed=seed)
    with store.snapshot():  # one state of a run that may be writing meanwhile
        meta = store.all_meta()
        jobs = store.jobs()
        status = {j.job_id: store.job_status(j.job_id) for j in jobs}
        read = [only_valid(store.records(j.job_id)) for j in jobs]
        snapshot = store.progress()
    records = [rec for rec, _ in read]
    invalid = {j.job_id: n for j, (_, n) in zip(jobs, read, strict=True) if n}
    encoding = meta.get("encoding") if isinstance(meta.get("encoding"), Mapping) else {}
    multilabel = encoding.get("kind") == "multilabel"
    names = _class_names(meta, [] if multilabel else records)
    noise = None if multilabel else _white_noise(meta, names)
    distances = _distances(meta, len(names))
    judges = jobstats.Judges() if multilabel else jobstats.judges(meta)
    ctx = RunContext(
        names=tuple(names),
        noise=None if noise is None else np.asarray(noise.distribution),
        distances={d.name: np.asarray(d.matrix) for d in distances},
        image_size=_image_size(meta),
        judges=judges,
        groups=_class_groups(distances, len(names)),
        n_boot=n_boot,
        level=level,
        seed=seed,
    )
    job_summaries = [
        kind_for(job.attack, multilabel=multilabel).summarize(ctx, job, status[job.job_id], rec)
        for job, rec in zip(jobs, records, strict=True)
    ]
    samples = meta.get("samples")
    n_samples = len(samples) if samples is not None else max([0] + [j.n for j in job_summaries])
    return RunSummary(
        version=SUMMARY_VERSION,
        run=_run_info(meta, names, n_samples, invalid, snapshot),
        white_noise=noise,
        distances=distances,
        jobs=job_summaries,
        groups=_groups(job_summaries),
        oracle=judges.oracle,
        svae=meta.get("svae"),
        detect=judges.detect,
        boundaries=None
        if multilabel
        else boundaries(store.run_dir, jobs, job_summaries, records, ctx.distances),
    )


def summarize(
    store: RunStore | str | os.PathLike,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """The summary of :func:`summarize_run` as JSON data (``summary.json``):
    keys ``version``, ``run``, ``white_noise``, ``distances``, ``jobs``,
    ``groups``, ``oracle``, ``svae`` and ``detect``; each job with the fields
    of :class:`~labelflip.report.schema.JobSummary`. NaN (e.g. ``s`` without
    off-diagonal flips) is ``None``. Read it back with
    :meth:`RunSummary.from_json <labelflip.report.schema.Typed.from_json>`."""
    return summarize_run(store, n_boot=n_boot, level=level, seed=seed).to_json()


def invalid_note(summary: RunSummary | Mapping[str, Any]) -> str | None:
    """One line saying how many records (and white-noise images) had
    non-finite logits and were left out of every statistic; ``None`` when
    none were."""
    run = as_summary(summary).run
    invalid = dict(run.invalid or {})
    noise = run.white_noise_invalid or 0
    if invalid:
        n = sum(invalid.values())
        jobs = ", ".join(f"{job}: {k}" for job, k in invalid.items())
        also = f", as are {noise} white-noise images (from the prior)" if noise else ""
        return f"{n} records had non-finite logits and are excluded ({jobs}){also}."
    if noise:
        return f"{noise} white-noise images had non-finite logits and are excluded from the prior."
    return None


# ---------------------------------------------------------------- tables


def format_symmetry(job: JobSummary) -> str:
    """``0.42 [0.31, 0.55]``; ``–`` without off-diagonal flips; from fewer
    than :data:`MIN_FLIPS` flips flagged: ``0.00 [0.00, 0.00] (8 flips < 20)``."""
    s, (lo, hi) = job.symmetry, job.symmetry_ci
    if missing(s):
        return "–"
    text = f"{s:.2f}" if missing(lo) else f"{s:.2f} [{lo:.2f}, {hi:.2f}]"
    return f"{text} ({job.n_off_diagonal} flips < {MIN_FLIPS})" if job.few_flips else text


def format_flips(job: JobSummary) -> str:
    """``cat→dog (12), dog→cat (9)``; ``–`` without flips."""
    return ", ".join(f"{f.from_name}→{f.to_name} ({f.count})" for f in job.top_flips) or "–"


def format_attractor(job: JobSummary) -> str:
    """``dog (41%)``; ``–`` when nothing succeeded."""
    top = job.top_attractor
    return "–" if top.name is None else f"{top.name} ({format_pct(top.share)})"


TABLE_HEADER = (
    "job",
    "n",
    "clean acc",
    "success",
    "success (clean)",
    "med L0",
    "med L2",
    "med L∞",
    "s [CI]",
    "Bowker p",
    "top attractor",
    "top flips",
)


def format_table(summary: RunSummary | Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and text rows of the per-job table (the CLI's end-of-run table and
    the report's summary table). Pending jobs are marked ``(incomplete)``."""
    rows = []
    for j in as_summary(summary).jobs:
        label = j.label if j.complete else f"{j.label} (incomplete)"
        rows.append(
            [
                label,
                str(j.n),
                format_pct(j.clean_accuracy),
                format_pct(j.success_rate),
                format_pct(j.success_rate_clean),
                format_num(j.median_l0),
                format_num(j.median_l2),
                format_num(j.median_linf),
                format_symmetry(j),
                format_p(j.bowker.p_value),
                format_attractor(j),
                format_flips(j),
            ]
        )
    return list(TABLE_HEADER), rows


CSV_COLUMNS = (
    "job_id",
    "label",
    "attack",
    "group",
    "sweep_value",
    "status",
    "n",
    "n_clean_correct",
    "clean_accuracy",
    "success_rate",
    "success_rate_clean",
    "median_l0",
    "median_l2",
    "median_linf",
    "symmetry",
    "symmetry_ci_low",
    "symmetry_ci_high",
    "bowker_statistic",
    "bowker_df",
    "bowker_p",
    "entropy",
    "top_attractor",
    "top_attractor_share",
    "white_noise_rho",
    "white_noise_p",
    "top_flips",
    "target_strategy",
    "attack_rate",
    *(f"flip_distance_{name}" for name in DISTANCE_NAMES),
    "mean_sq_perturbation",
)


def csv_rows(summary: RunSummary | Mapping[str, Any]) -> list[list[Any]]:
    """Rows of ``jobs.csv`` (columns :data:`CSV_COLUMNS`; ``None`` for missing)."""
    rows = []
    for j in as_summary(summary).jobs:
        ls = j.label_space
        values = {
            **{c: getattr(j, c, None) for c in CSV_COLUMNS},
            "symmetry_ci_low": j.symmetry_ci[0],
            "symmetry_ci_high": j.symmetry_ci[1],
            "bowker_statistic": j.bowker.statistic,
            "bowker_df": j.bowker.df,
            "bowker_p": j.bowker.p_value,
            "top_attractor": j.top_attractor.name,
            "top_attractor_share": j.top_attractor.share,
            "white_noise_rho": j.white_noise_spearman.rho,
            "white_noise_p": j.white_noise_spearman.p_value,
            "top_flips": format_flips(j) if j.top_flips else None,
            "target_strategy": ls.strategy,
            "attack_rate": ls.attack_rate,
            **{f"flip_distance_{n}": ls.flip_distance.get(n) for n in DISTANCE_NAMES},
            "mean_sq_perturbation": ls.mean_sq_perturbation,
        }
        rows.append(jsonable([values[c] for c in CSV_COLUMNS]))
    return rows

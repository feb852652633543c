"""The numbers of a comparison of runs (``labelflip compare``): open two or
more run directories, match their jobs by attack and settings, and set each
matched job's landings side by side: the flip matrix, symmetry ``s`` with its
bootstrap interval and the attractors per run, and for every run against the
first (the reference) the per-class tests of whether the landing
distributions differ (:func:`labelflip.analysis.landing_tests`), the
correlation of the off-diagonal flip rates and, on the samples both runs
attacked (same dataset index), how often both land in the same class.
Also the comparison's JSON (``compare.json``) and CSV rows (``compare.csv``);
the page and the files: :mod:`labelflip.report.compare`.

Only the run store is read (:class:`~labelflip.store.RunStore`); every
statistic comes from :mod:`labelflip.analysis`, with the report's subsets
(the samples each model classified correctly before the attack) and the
report's bootstrap settings, so ``s`` and its interval equal the ones in each
run's own report. Type II jobs are compared; Type I jobs (label-stay
matrices) are listed as not compared, and multi-label runs are refused.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from labelflip import analysis
from labelflip.analysis import Agreement, LandingTests, RateCorrelation
from labelflip.errors import LabelflipError
from labelflip.report.kinds import kind_for
from labelflip.report.schema import jsonable
from labelflip.store import Job, RunStore, only_valid

COMPARE_VERSION = 1


# ---------------------------------------------------------------- data


@dataclass(frozen=True)
class RunSide:
    """One compared run: where it is and what it attacked."""

    path: str
    name: str  # shown on the page and in the tables (unique among the runs compared)
    run_name: str | None
    dataset: str | None
    split: str | None
    model: dict[str, Any]
    n_samples: int | None  # None: the run does not list its samples
    n_jobs: int


@dataclass(frozen=True)
class JobSide:
    """A matched job as one run has it: the flip matrix of its clean-correct
    samples and its landing statistics (as in the run's report), and the
    per-sample arrays the shared-sample agreement needs (not serialised)."""

    run: int
    job_id: str
    label: str
    complete: bool
    n: int
    n_clean_correct: int
    success_rate_clean: float
    flip_matrix: np.ndarray
    symmetry: float
    symmetry_ci: tuple[float, float]
    bowker_p: float
    shares: np.ndarray
    entropy: float
    top_class: int | None
    top_share: float
    index: np.ndarray = field(repr=False)
    true: np.ndarray = field(repr=False)
    landed: np.ndarray = field(repr=False)
    flipped: np.ndarray = field(repr=False)

    @property
    def n_flips(self) -> int:
        """Off-diagonal entries of the flip matrix."""
        return int(self.flip_matrix.sum() - np.trace(self.flip_matrix))


@dataclass(frozen=True)
class Pair:
    """A run against the reference on one job. ``n_shared``: samples both
    attacked (same dataset index; ``None`` when the runs attacked different
    data); ``agreement`` over those both models classified correctly and
    both attacks flipped; ``note`` says why something is missing."""

    a: int
    b: int
    tests: LandingTests
    correlation: RateCorrelation
    n_shared: int | None
    agreement: Agreement | None
    note: str = ""


@dataclass(frozen=True)
class MatchedJob:
    """One attack with one set of settings, as each run has it (``None``
    where a run lacks it), and each run's pair with the reference."""

    attack: str
    settings: dict[str, Any]
    label: str
    sides: tuple[JobSide | None, ...]
    pairs: tuple[Pair, ...]


@dataclass(frozen=True)
class Comparison:
    """Everything :func:`compare` found; ``unmatched`` and ``skipped`` list
    jobs as ``(run, job label, reason)``."""

    runs: tuple[RunSide, ...]
    class_names: tuple[str, ...]
    jobs: tuple[MatchedJob, ...]
    unmatched: tuple[tuple[int, str, str], ...]
    options: dict[str, Any]
    generated: str


# ---------------------------------------------------------------- reading


def _key(job: Job) -> tuple[str, str]:
    """The matching key: attack name and its settings as canonical JSON."""
    return job.attack, json.dumps(job.settings, sort_keys=True, separators=(",", ":"))


def _class_names(meta: dict[str, Any], path: Path) -> tuple[str, ...]:
    names = meta.get("class_names")
    if names is None:
        k = meta.get("num_classes")
        if k is None:
            raise LabelflipError(f"run {path} records neither class_names nor num_classes")
        names = [str(i) for i in range(int(k))]
    return tuple(str(n) for n in names)


def _side(
    run: int, job: Job, status: str, rec: dict[str, np.ndarray], k: int, options: dict[str, Any]
) -> JobSide:
    true, landed = rec["true"], rec["adv_pred"]
    correct = rec["clean_pred"] == true
    success = rec["success"].astype(bool)
    A = analysis.flip_matrix(true, landed, k, mask=correct)
    ci = analysis.symmetry_ci(
        true,
        landed,
        k,
        mask=correct,
        n_boot=options["n_boot"],
        level=options["level"],
        seed=options["seed"],
    )
    attract = analysis.attractor_summary(true[correct], landed[correct], success[correct], k)
    return JobSide(
        run=run,
        job_id=job.job_id,
        label=job.label or job.job_id,
        complete=status == "done",
        n=int(true.size),
        n_clean_correct=int(correct.sum()),
        success_rate_clean=float(success[correct].mean()) if correct.any() else math.nan,
        flip_matrix=A,
        symmetry=analysis.symmetry_score(A),
        symmetry_ci=ci,
        bowker_p=analysis.bowker_test(A).p_value,
        shares=attract["shares"],
        entropy=attract["entropy"],
        top_class=attract["top_class"],
        top_share=attract["top_share"],
        index=rec["index"],
        true=true,
        landed=landed,
        flipped=correct & (landed != true),
    )


def _some(names: Sequence[str]) -> str:
    """``10 classes: 0, 1, 2, 3, 4, …``"""
    more = ", …" if len(names) > 5 else ""
    return f"{len(names)} classes: {', '.join(names[:5])}{more}"


def _display_names(paths: Sequence[Path], metas: Sequence[dict[str, Any]]) -> list[str]:
    """Each run's name; where two runs share it, their directories' names;
    where those are shared too, ``name #position``."""
    names = [str(m.get("name") or p.name) for p, m in zip(paths, metas, strict=True)]
    dup = {n for n in names if names.count(n) > 1}
    names = [paths[i].resolve().name if n in dup else n for i, n in enumerate(names)]
    dup = {n for n in names if names.count(n) > 1}
    return [f"{n} #{i + 1}" if n in dup else n for i, n in enumerate(names)]


def _pair(ref: JobSide, other: JobSide, same_data: bool, k: int, options: dict[str, Any]) -> Pair:
    tests = analysis.landing_tests(
        ref.flip_matrix,
        other.flip_matrix,
        alpha=options["alpha"],
        correction=options["correction"],
        include_diagonal=options["include_diagonal"],
        n_perm=options["n_perm"],
        seed=options["seed"],
    )
    corr = analysis.flip_rate_correlation(ref.flip_matrix, other.flip_matrix)
    if not same_data:
        note = "the runs attacked different datasets or splits: no shared samples"
        return Pair(ref.run, other.run, tests, corr, None, None, note)
    pa, pb = analysis.shared_samples(ref.index, other.index)
    if np.any(ref.true[pa] != other.true[pb]):
        note = "the same dataset indices carry different true labels: not the same data"
        return Pair(ref.run, other.run, tests, corr, None, None, note)
    both = ref.flipped[pa] & other.flipped[pb]
    agreement = analysis.landing_agreement(
        ref.true[pa][both], ref.landed[pa][both], other.landed[pb][both], k
    )
    return Pair(ref.run, other.run, tests, corr, int(pa.size), agreement)


def compare(
    run_dirs: Sequence[str | os.PathLike],
    *,
    alpha: float = 0.05,
    correction: str = "holm",
    include_diagonal: bool = False,
    n_perm: int = analysis.compare.N_PERM,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Comparison:
    """Match the jobs of ``run_dirs`` (two or more run directories; the first
    is the reference) by attack and settings and compare their landings.

    ``alpha``, ``correction`` (``"holm"`` or ``"bh"``), ``include_diagonal``
    and ``n_perm`` go to :func:`labelflip.analysis.landing_tests`; ``n_boot``,
    ``level`` and ``seed`` to the symmetry interval (the report's defaults,
    so ``s`` and its interval equal the report's) and ``seed`` also to the
    permutation tests. The runs must have the same classes; a job is
    compared when the reference and at least one other run have it.
    Raises :class:`~labelflip.errors.LabelflipError` (one line) for fewer
    than two runs, a directory that is not a run, runs with different
    classes, a multi-label run, or no job in common.
    """
    paths = [Path(p) for p in run_dirs]
    if len(paths) < 2:
        raise LabelflipError(f"compare needs at least two run directories, got {len(paths)}")
    options = {
        "alpha": alpha,
        "correction": correction,
        "include_diagonal": bool(include_diagonal),
        "n_perm": n_perm,
        "n_boot": n_boot,
        "level": level,
        "seed": seed,
        "min_expected": analysis.compare.MIN_EXPECTED,
    }
    # the test options are checked once, on an empty table, before any run is read
    analysis.landing_tests(
        [[0]], [[0]], **{k: options[k] for k in ("alpha", "correction", "n_perm", "seed")}
    )
    metas: list[dict[str, Any]] = []
    contents: list[list[tuple[Job, str]]] = []
    names: tuple[str, ...] | None = None
    for path in paths:
        with RunStore.open(path) as store:
            meta = store.all_meta()
            contents.append([(j, store.job_status(j.job_id)) for j in store.jobs()])
        if (meta.get("encoding") or {}).get("kind") == "multilabel":
            raise LabelflipError(f"{path} is a multi-label run; compare handles single-label runs")
        metas.append(meta)
        run_names = _class_names(meta, path)
        if names is None:
            names = run_names
        elif run_names != names:
            raise LabelflipError(
                f"{path} has other classes than {paths[0]} ({_some(run_names)} vs "
                f"{_some(names)}); only runs over the same classes can be compared"
            )
    assert names is not None
    display = _display_names(paths, metas)
    runs = tuple(
        RunSide(
            path=str(p),
            name=display[r],
            run_name=m.get("name"),
            dataset=m.get("dataset"),
            split=m.get("split"),
            model=dict(m.get("model") or {}),
            n_samples=len(m["samples"]) if m.get("samples") is not None else None,
            n_jobs=len(contents[r]),
        )
        for r, (p, m) in enumerate(zip(paths, metas, strict=True))
    )

    # per run, by key: the first Type II job with that key; the rest are not compared
    unmatched: list[tuple[int, str, str]] = []
    keyed: list[dict[tuple[str, str], tuple[Job, str]]] = []
    for r, items in enumerate(contents):
        table: dict[tuple[str, str], tuple[Job, str]] = {}
        for job, status in items:
            label = job.label or job.job_id
            if kind_for(job.attack, multilabel=False).name != "type-ii":
                unmatched.append((r, label, "Type I job (label-stay matrix): not compared"))
            elif _key(job) in table:
                unmatched.append((r, label, "same attack and settings as an earlier job"))
            else:
                table[_key(job)] = (job, status)
        keyed.append(table)
    keys = [key for key in keyed[0] if any(key in t for t in keyed[1:])]
    for r, table in enumerate(keyed):
        for key, (job, _) in table.items():
            if key not in keys:
                why = "no other run has this job" if r == 0 else f"{runs[0].name} has no such job"
                unmatched.append((r, job.label or job.job_id, why))
    if not keys:
        listing = "; ".join(
            f"{runs[r].name}: {', '.join(job.job_id for job, _ in t.values()) or 'no jobs'}"
            for r, t in enumerate(keyed)
        )
        raise LabelflipError(f"no job matches across the runs by attack and settings ({listing})")

    sides: dict[tuple[str, str], list[JobSide | None]] = {key: [] for key in keys}
    for r, (path, table) in enumerate(zip(paths, keyed, strict=True)):
        with RunStore.open(path) as store:
            for key in keys:
                hit = table.get(key)
                side = None
                if hit is not None:
                    rec, _ = only_valid(store.records(hit[0].job_id))  # finite logits only
                    side = _side(r, *hit, rec, len(names), options)
                sides[key].append(side)
    ref_data = (metas[0].get("dataset"), metas[0].get("split"))
    same = [(m.get("dataset"), m.get("split")) == ref_data for m in metas]
    matched = []
    for key in keys:
        ref, *others = sides[key]
        assert ref is not None
        pairs = tuple(
            _pair(ref, s, same[s.run], len(names), options) for s in others if s is not None
        )
        matched.append(
            MatchedJob(key[0], dict(keyed[0][key][0].settings), ref.label, tuple(sides[key]), pairs)
        )
    return Comparison(
        runs=runs,
        class_names=names,
        jobs=tuple(matched),
        unmatched=tuple(unmatched),
        options=options,
        generated=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


# ---------------------------------------------------------------- JSON and CSV


def _side_json(side: JobSide | None) -> dict[str, Any] | None:
    if side is None:
        return None
    return jsonable(
        {
            "job_id": side.job_id,
            "label": side.label,
            "complete": side.complete,
            "n": side.n,
            "n_clean_correct": side.n_clean_correct,
            "n_flips": side.n_flips,
            "success_rate_clean": side.success_rate_clean,
            "flip_matrix": side.flip_matrix,
            "symmetry": side.symmetry,
            "symmetry_ci": list(side.symmetry_ci),
            "bowker_p": side.bowker_p,
            "landing_shares": side.shares,
            "entropy": side.entropy,
            "top_attractor": {"class": side.top_class, "share": side.top_share},
        }
    )


def _pair_json(pair: Pair, names: Sequence[str]) -> dict[str, Any]:
    t = pair.tests
    classes = [
        {
            "class": i,
            "name": names[i],
            "n_a": t.n_a[i],
            "n_b": t.n_b[i],
            "method": t.method[i],
            "statistic": t.statistic[i],
            "df": t.df[i],
            "p_value": t.p_value[i],
            "p_adjusted": t.p_adjusted[i],
            "differs": t.differs[i],
        }
        for i in range(len(names))
    ]
    return jsonable(
        {
            "a": pair.a,
            "b": pair.b,
            "landing_tests": {
                "n_tested": t.n_tested,
                "n_differ": t.n_differ,
                "min_p_adjusted": t.min_p_adjusted,
                "classes": classes,
            },
            "flip_rate_correlation": pair.correlation,
            "n_shared": pair.n_shared,
            "agreement": pair.agreement,
            "note": pair.note or None,
        }
    )


def to_json(c: Comparison) -> dict[str, Any]:
    """The comparison as JSON data (``compare.json``): ``version``,
    ``generated``, ``options``, ``runs``, ``class_names``, ``jobs`` (each with
    ``attack``, ``settings``, ``label``, ``runs``: one entry per run, ``null``
    where a run lacks the job, and ``pairs``: each run against the reference,
    by run position ``a``/``b``) and ``not_compared``. NaN is ``null``."""
    return jsonable(
        {
            "version": COMPARE_VERSION,
            "generated": c.generated,
            "options": c.options,
            "runs": [r.__dict__ for r in c.runs],
            "class_names": list(c.class_names),
            "jobs": [
                {
                    "attack": j.attack,
                    "settings": j.settings,
                    "label": j.label,
                    "runs": [_side_json(s) for s in j.sides],
                    "pairs": [_pair_json(p, c.class_names) for p in j.pairs],
                }
                for j in c.jobs
            ],
            "not_compared": [
                {"run": r, "job": label, "reason": why} for r, label, why in c.unmatched
            ],
        }
    )


CSV_COLUMNS = (
    "job",
    "attack",
    "settings",
    "run_a",
    "run_b",
    "job_id_a",
    "job_id_b",
    "complete",
    "n_clean_correct_a",
    "n_clean_correct_b",
    "flips_a",
    "flips_b",
    "success_rate_clean_a",
    "success_rate_clean_b",
    "symmetry_a",
    "symmetry_ci_low_a",
    "symmetry_ci_high_a",
    "symmetry_b",
    "symmetry_ci_low_b",
    "symmetry_ci_high_b",
    "top_attractor_a",
    "top_attractor_share_a",
    "top_attractor_b",
    "top_attractor_share_b",
    "entropy_a",
    "entropy_b",
    "classes_tested",
    "classes_differ",
    "differing_classes",
    "min_p_adjusted",
    "correction",
    "alpha",
    "flip_rate_pearson",
    "flip_rate_spearman",
    "n_shared",
    "n_both_flipped",
    "n_same_class",
    "same_class_rate",
    "same_class_chance",
    "same_class_kappa",
)


def csv_rows(c: Comparison) -> list[list[Any]]:
    """Rows of ``compare.csv`` (columns :data:`CSV_COLUMNS`): one per matched
    job and run pair; empty cells where a value is not available."""
    names = c.class_names
    rows = []
    for job in c.jobs:
        for pair in job.pairs:
            a, b = job.sides[pair.a], job.sides[pair.b]
            assert a is not None and b is not None
            t, g = pair.tests, pair.agreement
            top = [None if s.top_class is None else names[s.top_class] for s in (a, b)]
            values = [
                job.label,
                job.attack,
                json.dumps(job.settings, sort_keys=True),
                c.runs[pair.a].name,
                c.runs[pair.b].name,
                a.job_id,
                b.job_id,
                a.complete and b.complete,
                a.n_clean_correct,
                b.n_clean_correct,
                a.n_flips,
                b.n_flips,
                a.success_rate_clean,
                b.success_rate_clean,
                a.symmetry,
                *a.symmetry_ci,
                b.symmetry,
                *b.symmetry_ci,
                top[0],
                a.top_share,
                top[1],
                b.top_share,
                a.entropy,
                b.entropy,
                t.n_tested,
                t.n_differ,
                " ".join(names[i] for i in np.flatnonzero(t.differs)),
                t.min_p_adjusted,
                t.correction,
                t.alpha,
                pair.correlation.pearson,
                pair.correlation.spearman,
                pair.n_shared,
                None if g is None else g.n,
                None if g is None else g.n_same,
                None if g is None else g.rate,
                None if g is None else g.chance,
                None if g is None else g.kappa,
            ]
            rows.append(jsonable(values))
    return rows

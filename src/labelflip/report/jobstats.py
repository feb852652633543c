"""Numbers every job kind shares: the job header, the landings of a matrix
(symmetry, Bowker test, attractors), the label-space numbers and what the
run's judges (oracle, feature-squeezing detector) say. Everything is
computed by :mod:`labelflip.analysis` on the store's records.

Subsets. Flip matrices, symmetry, landing shares and median norms use the
samples the model classified correctly before the attack ("clean-correct"):
a sample already misclassified is trivially "successful" with a zero
perturbation and says nothing about where the attack sends it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from labelflip import analysis
from labelflip.report.schema import (
    Attractor,
    Detection,
    Detector,
    Flip,
    LabelSpace,
    OracleView,
)
from labelflip.store import Job

TOP_FLIPS = 5
NORMS = ("l0", "l2", "linf")

Records = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Judges:
    """The run's judges besides the model: the oracle (its info and clean
    prediction per sample position) and the feature-squeezing detector."""

    oracle: Mapping[str, Any] | None = None
    oracle_clean: np.ndarray | None = None
    detect: Detector | None = None


@dataclass(frozen=True)
class RunContext:
    """What a job kind needs from its run to summarise one job."""

    names: tuple[str, ...]
    noise: np.ndarray | None  # the white-noise prediction distribution
    distances: Mapping[str, np.ndarray]  # class-distance matrices by name
    image_size: tuple[int, int] | None
    judges: Judges
    groups: tuple[str, ...] | None = None  # each class's top-level group (hierarchy)
    n_boot: int = 1000
    level: float = 0.95
    seed: int = 0


def rate(mask: np.ndarray) -> float:
    return float(mask.mean()) if mask.size else math.nan


def median(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else math.nan


def norm_medians(rec: Records, mask: np.ndarray) -> dict[str, float]:
    """``median_l0/l2/linf`` over the ``mask``ed records."""
    return {f"median_{c}": median(rec[c][mask].astype(np.float64)) for c in NORMS}


def flip_entries(A: np.ndarray, names: tuple[str, ...]) -> list[Flip]:
    return [Flip(i, j, c, names[i], names[j]) for i, j, c in analysis.top_flips(A, TOP_FLIPS)]


def target_setting(job: Job) -> Mapping[str, Any]:
    target = job.settings.get("target") if isinstance(job.settings, Mapping) else None
    return target if isinstance(target, Mapping) else {}


def header(job: Job, status: str, rec: Records, kind: str) -> dict[str, Any]:
    """The fields every job summary starts with (success judged by the model)."""
    true = rec["true"]
    success = rec["success"].astype(bool)
    correct = rec["clean_pred"] == true
    ok = success & correct
    return {
        "job_id": job.job_id,
        "label": job.label or job.job_id,
        "attack": job.attack,
        "group": job.group,
        "sweep_value": job.sweep_value,
        "settings": job.settings,
        "seed": job.seed,
        "status": status,
        "complete": status == "done",
        "kind": kind,
        "targeted": bool(np.any(rec["target"] >= 0)),
        "n": int(true.size),
        "n_clean_correct": int(correct.sum()),
        "n_success_clean": int(ok.sum()),
        "clean_accuracy": rate(correct),
        "success_rate": rate(success),
        "success_rate_clean": rate(success[correct]),
        **norm_medians(rec, ok),
    }


def landings(
    ctx: RunContext, true: np.ndarray, landed: np.ndarray, mask: np.ndarray, success: np.ndarray
) -> dict[str, Any]:
    """Where the ``mask``ed samples landed: the flip matrix of ``true`` ×
    ``landed`` with its symmetry (bootstrap interval), Bowker test and top
    flips, and the attractors of the ``success``ful ones."""
    k = len(ctx.names)
    A = analysis.flip_matrix(true, landed, k, mask=mask)
    ci = analysis.symmetry_ci(
        true, landed, k, mask=mask, n_boot=ctx.n_boot, level=ctx.level, seed=ctx.seed
    )
    attract = analysis.attractor_summary(true[mask], landed[mask], success[mask], k)
    top = attract["top_class"]
    return {
        "flip_matrix": A,
        "symmetry": analysis.symmetry_score(A),
        "symmetry_ci": ci,
        "symmetry_level": ctx.level,
        "bowker": analysis.bowker_test(A),
        "top_flips": flip_entries(A, ctx.names),
        "landing_shares": attract["shares"],
        "baseline_shares": attract["baseline_shares"],
        "entropy": attract["entropy"],
        "top_attractor": Attractor(
            top, None if top is None else ctx.names[top], attract["top_share"]
        ),
    }


def label_space(
    ctx: RunContext, job: Job, rec: Records, A: np.ndarray, targeted: bool
) -> LabelSpace:
    """Label-space numbers of one job (LabelFool §IV): target strategy, attack
    rate (clean-correct samples whose label flipped), mean class distance of
    the flips under each distance, LabelFool's ``‖Δ‖`` over those flips, and,
    for untargeted jobs, the Spearman correlation of flip rates with each
    distance (negative: the model sends examples to near classes); with
    class groups, the off-diagonal flips of ``A`` that stay within their
    true class's group (:func:`labelflip.analysis.within_group_flips`)."""
    true, clean, adv = rec["true"], rec["clean_pred"], rec["adv_pred"]
    correct = clean == true
    flipped = correct & (adv != true)
    target = target_setting(job)
    correlation = {}
    if not targeted:
        for name, d in ctx.distances.items():
            correlation[name] = analysis.flip_distance_correlation(A, d)
    return LabelSpace(
        strategy=target.get("strategy"),
        distance_used=target.get("distance"),
        attack_rate=analysis.attack_rate(true, clean, adv) if true.size else math.nan,
        n_flips=int(flipped.sum()),
        flip_distance={
            name: analysis.mean_flip_distance(true, adv, d, correct)
            for name, d in ctx.distances.items()
        },
        mean_sq_perturbation=(
            analysis.mean_squared_perturbation(rec["l2"][flipped], *ctx.image_size)
            if ctx.image_size
            else math.nan
        ),
        flip_correlation=correlation,
        within_group=(
            analysis.within_group_flips(A, ctx.groups)
            if ctx.groups is not None and A.shape == (len(ctx.groups),) * 2
            else None
        ),
    )


# ---------------------------------------------------------------- judges


def judges(meta: Mapping[str, Any]) -> Judges:
    """What the run's metadata says of its judges: the oracle (its info and
    its clean predictions, per sample position) and the feature-squeezing
    detector (settings, the threshold calibrated on the clean scores)."""
    oracle = oracle_clean = detector = None
    if isinstance(meta.get("oracle"), Mapping) and meta.get("oracle_clean_pred") is not None:
        oracle = dict(meta["oracle"])
        oracle_clean = np.asarray(meta["oracle_clean_pred"], dtype=np.int64)
    fs = (meta.get("detect") or {}).get("feature_squeezing")
    if isinstance(fs, Mapping) and fs.get("clean_scores"):
        clean = np.asarray(fs["clean_scores"], dtype=np.float64)
        threshold = analysis.calibrate_threshold(clean, fs["fpr"])
        fixed = [float(t) for t in fs.get("thresholds", [])]
        detector = Detector(
            squeezers=fs["squeezers"],
            distance=fs["distance"],
            fpr=fs["fpr"],
            threshold=threshold,
            thresholds=fixed,
            clean=_rates(clean, threshold, fixed),
        )
    return Judges(oracle, oracle_clean, detector)


def _rates(scores: np.ndarray, threshold: float, fixed: list[float]) -> Detection:
    return Detection(
        n=scores.size,
        rate=analysis.detection_rate(scores, threshold),
        rates=[analysis.detection_rate(scores, t) for t in fixed],
    )


def detected(scores: np.ndarray, detector: Detector | None) -> Detection | None:
    """Detection rates of the examples with ``scores`` (at the calibrated and
    at the fixed thresholds); ``None`` without a detector."""
    if detector is None:
        return None
    return _rates(scores[np.isfinite(scores)], detector.threshold, list(detector.thresholds))


def oracle_clean(rec: Records, judges: Judges) -> np.ndarray:
    """The oracle's clean prediction of each record (by sample position)."""
    return np.asarray(judges.oracle_clean)[rec["sample"]]


def oracle_view(rec: Records, counted: np.ndarray, judges: Judges) -> OracleView | None:
    """What the oracle saw of the ``counted`` examples (Type II: the
    successful clean-correct ones) that it also classified correctly before:
    the share it still sees as the true class (valid Type II examples) and
    the share it sees as the model's new class; ``None`` without an oracle."""
    if judges.oracle is None:
        return None
    true = rec["true"]
    base = counted & (oracle_clean(rec, judges) == true)
    o = rec["oracle_pred"][base]
    return OracleView(
        n=int(base.sum()),
        kept_true_rate=rate(o == true[base]),
        agrees_with_model_rate=rate(o == rec["adv_pred"][base]),
    )

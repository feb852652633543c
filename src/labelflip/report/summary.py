"""Per-job numbers of a run: the single source for the HTML report,
``summary.json``, ``jobs.csv`` and the CLI's end-of-run table.

Everything is computed by :mod:`labelflip.analysis` on the store's records;
:func:`summarize` returns plain JSON data (lists, numbers, strings, ``None``
for NaN or "not available").

Subsets. Flip matrices, symmetry, landing shares and median norms use the
samples the model classified correctly before the attack ("clean-correct"):
a sample already misclassified is trivially "successful" with a zero
perturbation and says nothing about where the attack sends it. The flip
matrix over all samples and the success rate over all samples are given too.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np

from labelflip import analysis
from labelflip.errors import LabelflipError
from labelflip.store import Job, RunStore

SUMMARY_VERSION = 1
TOP_FLIPS = 5
NORMS = ("l0", "l2", "linf")
DISTANCE_NAMES = ("perceptual", "semantic", "confusion")  # jobs.csv columns, in this order


# ---------------------------------------------------------------- JSON values


def jsonable(value: Any) -> Any:
    """``value`` with numpy types as Python ones and NaN/inf floats as ``None``."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    return value


def _rate(mask: np.ndarray) -> float:
    return float(mask.mean()) if mask.size else math.nan


def _median(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else math.nan


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


def _white_noise(meta: Mapping[str, Any], names: list[str]) -> dict[str, Any] | None:
    """Distribution of the model's predictions on uniform-noise images, or None."""
    pred = meta.get("white_noise_pred")
    if not pred:
        return None
    k = len(names)
    dist = analysis.class_distribution(np.asarray(pred, dtype=np.int64), k)
    top, share = analysis.top_attractor(dist)
    return {
        "n": len(pred),
        "distribution": dist,
        "entropy": analysis.normalized_entropy(dist) if k > 1 else math.nan,
        "top_class": top,
        "top_name": None if top is None else names[top],
        "top_share": share,
    }


def _run_info(meta: Mapping[str, Any], names: list[str], n_samples: int) -> dict[str, Any]:
    model = meta.get("model") if isinstance(meta.get("model"), Mapping) else {}
    return {
        "name": meta.get("name"),
        "dataset": meta.get("dataset"),
        "split": meta.get("split"),
        "model": dict(model),
        "num_classes": len(names),
        "class_names": names,
        "n_samples": n_samples,
        "bounds": meta.get("bounds", [0.0, 1.0]),
        "input_shape": meta.get("input_shape"),
        "started": meta.get("started", meta.get("created")),
        "finished": meta.get("finished"),
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


# ---------------------------------------------------------------- job level


def _flip_entries(A: np.ndarray, names: list[str]) -> list[dict[str, Any]]:
    return [
        {"from": i, "to": j, "count": c, "from_name": names[i], "to_name": names[j]}
        for i, j, c in analysis.top_flips(A, TOP_FLIPS)
    ]


def _distances(meta: Mapping[str, Any], k: int) -> dict[str, dict[str, Any]]:
    """The run's class-distance matrices (``meta["distances"]``), by name; those
    whose size does not match the classes are left out."""
    out = {}
    for d in meta.get("distances") or []:
        matrix = np.asarray(d.get("matrix"), dtype=np.float64)
        if matrix.shape == (k, k) and np.all(np.isfinite(matrix)):
            out[str(d["name"])] = {**d, "matrix": matrix}
    return out


def _image_size(meta: Mapping[str, Any]) -> tuple[int, int] | None:
    shape = meta.get("input_shape")
    if isinstance(shape, (list, tuple)) and len(shape) == 3:
        return int(shape[1]), int(shape[2])
    return None


def _label_space(
    job: Job,
    rec: Mapping[str, np.ndarray],
    A: np.ndarray,
    distances: Mapping[str, Mapping[str, Any]],
    image_size: tuple[int, int] | None,
    targeted: bool,
) -> dict[str, Any]:
    """Label-space numbers of one job (LabelFool §IV): target strategy, attack
    rate (clean-correct samples whose label flipped), mean class distance of
    the flips under each distance, LabelFool's ``‖Δ‖`` over those flips, and,
    for untargeted jobs, the Spearman correlation of flip rates with each
    distance (negative: the model sends examples to near classes)."""
    true, clean, adv = rec["true"], rec["clean_pred"], rec["adv_pred"]
    correct = clean == true
    flipped = correct & (adv != true)
    target = job.settings.get("target") if isinstance(job.settings, Mapping) else None
    strategy = target.get("strategy") if isinstance(target, Mapping) else None
    correlation = {}
    if not targeted:
        for name, d in distances.items():
            r = analysis.flip_distance_correlation(A, d["matrix"])
            correlation[name] = {"rho": r.rho, "p_value": r.p_value}
    return {
        "strategy": strategy,
        "distance_used": target.get("distance") if isinstance(target, Mapping) else None,
        "attack_rate": analysis.attack_rate(true, clean, adv) if true.size else math.nan,
        "n_flips": int(flipped.sum()),
        "flip_distance": {
            name: analysis.mean_flip_distance(true, adv, d["matrix"], correct)
            for name, d in distances.items()
        },
        "mean_sq_perturbation": (
            analysis.mean_squared_perturbation(rec["l2"][flipped], *image_size)
            if image_size
            else math.nan
        ),
        "flip_correlation": correlation,
    }


def _job_summary(
    job: Job,
    status: str,
    rec: Mapping[str, np.ndarray],
    names: list[str],
    noise: np.ndarray | None,
    *,
    n_boot: int,
    level: float,
    seed: int,
    distances: Mapping[str, Mapping[str, Any]] | None = None,
    image_size: tuple[int, int] | None = None,
    multilabel: bool = False,
    judges: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything the report says about one job (numpy values, NaN allowed).
    For a multi-label run see :func:`_multilabel_job_summary`, for a Type I
    attack :func:`_type_i_job_summary`. ``judges`` (:func:`_judges`): the
    run's oracle and detector, which add the keys ``oracle`` and ``detect``.

    Keys: job_id, label, attack, group, sweep_value, settings, seed, status
    ("pending"/"done"), complete, targeted, n, n_clean_correct,
    n_success_clean, clean_accuracy, success_rate (all samples),
    success_rate_clean, median_l0/l2/linf (successful clean-correct samples),
    flip_matrix (clean-correct), flip_matrix_all, symmetry, symmetry_ci
    ([low, high]), symmetry_level, bowker {statistic, df, p_value}, top_flips
    [{from, to, count, from_name, to_name}], landing_shares, baseline_shares,
    entropy, top_attractor {class, name, share}, white_noise_spearman
    {rho, p_value}, label_space (see :func:`_label_space`).
    """
    k = len(names)
    true, adv = rec["true"], rec["adv_pred"]
    success = rec["success"].astype(bool)
    correct = rec["clean_pred"] == true
    targeted = bool(np.any(rec["target"] >= 0))
    if multilabel:
        return _multilabel_job_summary(job, status, rec, names, targeted, image_size, level)
    if judges is not None and _attack_kind(job.attack) == "type-i":
        return _type_i_job_summary(
            job, status, rec, names, judges, n_boot=n_boot, level=level, seed=seed,
            distances=distances or {}, image_size=image_size,
        )  # fmt: skip
    landing = _landings(true, adv, correct, success, names, n_boot=n_boot, level=level, seed=seed)
    rho = (
        analysis.rank_correlation(landing["landing_shares"], noise)
        if noise is not None
        else analysis.SpearmanResult(math.nan, math.nan)
    )
    A = landing["flip_matrix"]
    return {
        **_job_header(job, status, rec),
        **landing,
        "flip_matrix_all": analysis.flip_matrix(true, adv, k),
        "white_noise_spearman": {"rho": rho.rho, "p_value": rho.p_value},
        "label_space": _label_space(job, rec, A, distances or {}, image_size, targeted),
        **_type_ii_judged(rec, success & correct, judges),
    }


def _landings(
    true: np.ndarray,
    landed: np.ndarray,
    mask: np.ndarray,
    success: np.ndarray,
    names: list[str],
    *,
    n_boot: int,
    level: float,
    seed: int,
) -> dict[str, Any]:
    """Where the ``mask``ed samples landed: the flip matrix of ``true`` ×
    ``landed`` with its symmetry (bootstrap interval), Bowker test and top
    flips, and the attractors of the ``success``ful ones."""
    k = len(names)
    A = analysis.flip_matrix(true, landed, k, mask=mask)
    bowker = analysis.bowker_test(A)
    ci = analysis.symmetry_ci(true, landed, k, mask=mask, n_boot=n_boot, level=level, seed=seed)
    attract = analysis.attractor_summary(true[mask], landed[mask], success[mask], k)
    top = attract["top_class"]
    return {
        "flip_matrix": A,
        "symmetry": analysis.symmetry_score(A),
        "symmetry_ci": list(ci),
        "symmetry_level": level,
        "bowker": {"statistic": bowker.statistic, "df": bowker.df, "p_value": bowker.p_value},
        "top_flips": _flip_entries(A, names),
        "landing_shares": attract["shares"],
        "baseline_shares": attract["baseline_shares"],
        "entropy": attract["entropy"],
        "top_attractor": {
            "class": top,
            "name": None if top is None else names[top],
            "share": attract["top_share"],
        },
    }


def _attack_kind(attack: str) -> str:
    """``"type-i"`` or ``"type-ii"`` for a registered attack (``type-ii`` for
    a name this labelflip does not know, e.g. from a newer version)."""
    from labelflip.attacks import get_attack

    try:
        return get_attack(attack).kind
    except LabelflipError:
        return "type-ii"


def _judges(meta: Mapping[str, Any]) -> dict[str, Any]:
    """What the run's metadata says of its judges: ``oracle`` (its info and
    its clean predictions, per sample position) and ``detect`` (feature
    squeezing: settings, clean scores, the calibrated threshold)."""
    out: dict[str, Any] = {"oracle": None, "oracle_clean": None, "detect": None}
    if isinstance(meta.get("oracle"), Mapping) and meta.get("oracle_clean_pred") is not None:
        out["oracle"] = dict(meta["oracle"])
        out["oracle_clean"] = np.asarray(meta["oracle_clean_pred"], dtype=np.int64)
    fs = (meta.get("detect") or {}).get("feature_squeezing")
    if isinstance(fs, Mapping) and fs.get("clean_scores"):
        from labelflip.detect import calibrate_threshold, detection_rate

        clean = np.asarray(fs["clean_scores"], dtype=np.float64)
        threshold = calibrate_threshold(clean, fs["fpr"])
        fixed = [float(t) for t in fs.get("thresholds", [])]
        out["detect"] = {
            "squeezers": list(fs["squeezers"]),
            "distance": fs["distance"],
            "fpr": fs["fpr"],
            "threshold": threshold,
            "thresholds": fixed,
            "clean": {
                "n": int(clean.size),
                "rate": detection_rate(clean, threshold),
                "rates": [detection_rate(clean, t) for t in fixed],
            },
        }
    return out


def _detected(scores: np.ndarray, detect: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Detection rates of the examples with ``scores`` (at the calibrated and
    at the fixed thresholds); ``None`` without a detector."""
    if detect is None:
        return None
    from labelflip.detect import detection_rate

    v = scores[np.isfinite(scores)]
    return {
        "n": int(v.size),
        "rate": detection_rate(v, detect["threshold"]),
        "rates": [detection_rate(v, t) for t in detect["thresholds"]],
    }


def _oracle_clean(rec: Mapping[str, np.ndarray], judges: Mapping[str, Any]) -> np.ndarray:
    """The oracle's clean prediction of each record (by sample position)."""
    return np.asarray(judges["oracle_clean"])[rec["sample"]]


def _type_ii_judged(
    rec: Mapping[str, np.ndarray], counted: np.ndarray, judges: Mapping[str, Any] | None
) -> dict[str, Any]:
    """For a Type II job: what the oracle saw (of the ``counted`` examples,
    the successful clean-correct ones, those the oracle also classified
    correctly before: the share it still sees as the true class, i.e. valid
    Type II examples, and the share it sees as the model's new class) and
    the detector's rates on the counted examples."""
    out: dict[str, Any] = {"oracle": None, "detect": None}
    if judges is None:
        return out
    true = rec["true"]
    if judges["oracle"] is not None:
        base = counted & (_oracle_clean(rec, judges) == true)
        o = rec["oracle_pred"][base]
        out["oracle"] = {
            "n": int(base.sum()),
            "kept_true_rate": _rate(o == true[base]),
            "agrees_with_model_rate": _rate(o == rec["adv_pred"][base]),
        }
    out["detect"] = _detected(rec["squeeze"][counted], judges["detect"])
    return out


def _type_i_job_summary(
    job: Job,
    status: str,
    rec: Mapping[str, np.ndarray],
    names: list[str],
    judges: Mapping[str, Any],
    *,
    n_boot: int,
    level: float,
    seed: int,
    distances: Mapping[str, Mapping[str, Any]],
    image_size: tuple[int, int] | None,
) -> dict[str, Any]:
    """One Type I job (Tang et al.): the same keys as :func:`_job_summary`,
    computed on the **label-stay matrix** instead of the flip matrix: rows
    the original class, columns the class the judge now sees, counting the
    samples the model still labels with the original class
    (:func:`labelflip.analysis.label_stay.label_stay_matrix`). The judge is
    the run's independent oracle when it has one, else the attack's own
    ``f2`` (``attacker_pred``). The samples counted are those both the model
    and the oracle classified correctly before the attack. ``success_rate``
    is the attack's own verdict (f1 keeps, f2 moved) over all samples;
    ``success_rate_clean`` the judge's over the counted samples; medians
    over the judge's successes. Adds ``type_i``: the judge, and
    :class:`~labelflip.analysis.label_stay.TypeIRates` by the oracle (if
    any) and by ``f2``."""
    from labelflip.analysis.label_stay import label_stay_matrix, type_i_rates

    k = len(names)
    true, adv = rec["true"], rec["adv_pred"]
    base = rec["clean_pred"] == true
    by_oracle = judges["oracle"] is not None
    if by_oracle:
        base = base & (_oracle_clean(rec, judges) == true)
    seen = rec["oracle_pred"] if by_oracle else rec["attacker_pred"]
    target = rec["target"]
    keeps = adv == true
    ok = base & keeps & (seen != true)  # the judge's Type I successes
    # the label-stay matrix is the flip matrix of true x seen over the samples f1 kept
    landing = _landings(
        true, seen, base & keeps, seen != true, names, n_boot=n_boot, level=level, seed=seed
    )
    rates = {
        "f2": type_i_rates(true, adv, rec["attacker_pred"], target, mask=base).__dict__,
        "oracle": (
            type_i_rates(true, adv, rec["oracle_pred"], target, mask=base).__dict__
            if by_oracle
            else None
        ),
    }
    header = _job_header(job, status, rec)
    header.update(
        {
            "n_clean_correct": int(base.sum()),
            "n_success_clean": int(ok.sum()),
            "success_rate_clean": _rate(ok[base]),
            **{f"median_{c}": _median(rec[c][ok].astype(np.float64)) for c in NORMS},
        }
    )
    # what the judge sees where the model kept its label (else the true class)
    ls_rec = {**rec, "adv_pred": np.where(keeps, seen, true)}
    return {
        **header,
        **landing,
        "flip_matrix_all": label_stay_matrix(true, adv, seen, k),
        "white_noise_spearman": {"rho": math.nan, "p_value": math.nan},
        "label_space": _label_space(
            job, ls_rec, landing["flip_matrix"], distances, image_size, True
        ),
        "type_i": {
            "judge": "oracle" if by_oracle else "f2",
            "rates": rates,
            "n_counted": int(base.sum()),
        },
        "oracle": None,
        "detect": _detected(rec["squeeze"][ok], judges["detect"]),
    }


def _job_header(job: Job, status: str, rec: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The keys every job summary starts with."""
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
        "kind": _attack_kind(job.attack),
        "targeted": bool(np.any(rec["target"] >= 0)),
        "n": int(true.size),
        "n_clean_correct": int(correct.sum()),
        "n_success_clean": int(ok.sum()),
        "clean_accuracy": _rate(correct),
        "success_rate": _rate(success),
        "success_rate_clean": _rate(success[correct]),
        **{f"median_{c}": _median(rec[c][ok].astype(np.float64)) for c in NORMS},
    }


def _multilabel_job_summary(
    job: Job,
    status: str,
    rec: Mapping[str, np.ndarray],
    names: list[str],
    targeted: bool,
    image_size: tuple[int, int] | None,
    level: float,
) -> dict[str, Any]:
    """One job of a multi-label run (decisions are label bitmasks, ``names``
    the labels). The same keys as :func:`_job_summary`, where the flip matrix
    is the label-swap matrix (label ``i`` switched off and ``j`` on, over the
    clean-correct samples; :func:`labelflip.analysis.multilabel.label_swaps`),
    symmetry and the Bowker test are computed on it, and the landing shares
    and the top attractor are those of the labels switched on. ``multilabel``
    adds: ``label_on`` / ``label_off`` per label, ``bit_success_rate`` (bASR,
    targeted), ``mean_target_bits`` (bits the targets ask to change) and
    ``success_rate_whole_vector`` (= ``success_rate_clean`` for targeted jobs:
    the whole label vector equals the target)."""
    from labelflip.analysis import multilabel as ml

    n = len(names)
    true, clean, adv = rec["true"], rec["clean_pred"], rec["adv_pred"]
    correct = clean == true
    success = rec["success"].astype(bool)
    swaps = ml.label_swaps(clean, adv, n, mask=correct)
    bowker = analysis.bowker_test(swaps)
    on, off = ml.bit_flips(clean[correct], adv[correct], n)
    total_on = on.sum()
    shares = on / total_on if total_on else np.full(n, math.nan)
    top = int(np.argmax(on)) if total_on else None
    target = rec["target"]
    basr = mean_bits = math.nan
    if targeted and correct.any():
        basr = ml.bit_success_rate(clean[correct], adv[correct], target[correct], n)
        mean_bits = float(ml.changed_bits(clean[correct], target[correct], n).mean())
    out = _job_header(job, status, rec)
    target_setting = job.settings.get("target") if isinstance(job.settings, Mapping) else None
    strategy = target_setting.get("strategy") if isinstance(target_setting, Mapping) else None
    flipped = correct & (adv != true)
    out.update(
        {
            "flip_matrix": swaps,
            "flip_matrix_all": ml.label_swaps(clean, adv, n),
            "symmetry": analysis.symmetry_score(swaps),
            "symmetry_ci": [math.nan, math.nan],  # no bootstrap over label vectors
            "symmetry_level": level,
            "bowker": {
                "statistic": bowker.statistic,
                "df": bowker.df,
                "p_value": bowker.p_value,
            },
            "top_flips": _flip_entries(swaps, names),
            "landing_shares": shares,
            "baseline_shares": None,
            "entropy": analysis.normalized_entropy(shares) if total_on and n > 1 else math.nan,
            "top_attractor": {
                "class": top,
                "name": None if top is None else names[top],
                "share": shares[top] if top is not None else math.nan,
            },
            "white_noise_spearman": {"rho": math.nan, "p_value": math.nan},
            "label_space": {
                "strategy": strategy,
                "distance_used": None,
                "attack_rate": _rate(flipped[correct]),
                "n_flips": int(flipped.sum()),
                "flip_distance": {},
                "mean_sq_perturbation": (
                    analysis.mean_squared_perturbation(rec["l2"][flipped], *image_size)
                    if image_size and flipped.any()
                    else math.nan
                ),
                "flip_correlation": {},
            },
            "multilabel": {
                "label_on": on,
                "label_off": off,
                "bit_success_rate": basr,
                "mean_target_bits": mean_bits,
                "success_rate_whole_vector": _rate(success[correct]),
            },
        }
    )
    return out


def _groups(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sweep groups with at least two jobs, in first-seen order; jobs by sweep value
    (jobs without one last, in run order)."""
    by_group: dict[str, list[dict[str, Any]]] = {}
    for j in jobs:
        if j["group"]:
            by_group.setdefault(j["group"], []).append(j)
    out = []
    for name, members in by_group.items():
        if len(members) < 2:
            continue
        members = sorted(members, key=lambda j: (j["sweep_value"] is None, j["sweep_value"] or 0.0))
        out.append(
            {
                "group": name,
                "job_ids": [j["job_id"] for j in members],
                "sweep_values": [j["sweep_value"] for j in members],
            }
        )
    return out


def summarize(
    store: RunStore | str | os.PathLike,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Summary of a run store (or run directory) as JSON-ready data.

    Keys: ``version``; ``run`` (name, dataset, split, model, class names,
    sample count, bounds, generation time); ``white_noise`` (the model's
    prediction distribution on uniform noise, or ``None`` if the run has no
    ``white_noise_pred``); ``distances``, the run's class-distance matrices
    (name, class_names, matrix, info); ``jobs``, one dict per job in run order (keys in
    :func:`_job_summary`; symmetry with a ``level`` percentile
    bootstrap interval of ``n_boot`` replicates seeded with ``seed``); and
    ``groups``, the sweep groups with at least two jobs, ordered by sweep
    value. NaN (e.g. ``s`` without off-diagonal flips) is ``None``.
    """
    if not isinstance(store, RunStore):
        with RunStore.open(store) as opened:
            return summarize(opened, n_boot=n_boot, level=level, seed=seed)
    meta = store.all_meta()
    jobs = store.jobs()
    records = [store.records(j.job_id) for j in jobs]
    encoding = meta.get("encoding") if isinstance(meta.get("encoding"), Mapping) else {}
    multilabel = encoding.get("kind") == "multilabel"
    names = _class_names(meta, [] if multilabel else records)
    noise = None if multilabel else _white_noise(meta, names)
    noise_dist = None if noise is None else noise["distribution"]
    distances = _distances(meta, len(names))
    image_size = _image_size(meta)
    judges = None if multilabel else _judges(meta)
    job_summaries = [
        _job_summary(
            job,
            store.job_status(job.job_id),
            rec,
            names,
            noise_dist,
            n_boot=n_boot,
            level=level,
            seed=seed,
            distances=distances,
            image_size=image_size,
            multilabel=multilabel,
            judges=judges,
        )
        for job, rec in zip(jobs, records, strict=True)
    ]
    samples = meta.get("samples")
    n_samples = len(samples) if samples is not None else max([0] + [j["n"] for j in job_summaries])
    return jsonable(
        {
            "version": SUMMARY_VERSION,
            "run": {**_run_info(meta, names, n_samples), "encoding": dict(encoding)},
            "white_noise": noise,
            "distances": [
                {k: d[k] for k in ("name", "class_names", "matrix", "info") if k in d}
                for d in distances.values()
            ],
            "jobs": job_summaries,
            "groups": _groups(job_summaries),
            "oracle": None if judges is None else judges["oracle"],
            "svae": meta.get("svae"),
            "detect": None if judges is None else judges["detect"],
        }
    )


# ---------------------------------------------------------------- tables


def format_pct(x: float | None) -> str:
    """``12.3%``; ``–`` for a missing value."""
    return "–" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.3g}"


def format_p(x: float | None) -> str:
    """A p-value: ``0.032``, ``<1e-4``, ``–`` when untested."""
    if x is None:
        return "–"
    return "<1e-4" if x < 1e-4 else f"{x:.3g}"


def format_symmetry(job: Mapping[str, Any]) -> str:
    """``0.42 [0.31, 0.55]``; ``–`` without off-diagonal flips."""
    s, (lo, hi) = job["symmetry"], job["symmetry_ci"]
    if s is None:
        return "–"
    return f"{s:.2f}" if lo is None else f"{s:.2f} [{lo:.2f}, {hi:.2f}]"


def format_flips(job: Mapping[str, Any]) -> str:
    """``cat→dog (12), dog→cat (9)``; ``–`` without flips."""
    flips = job["top_flips"]
    return ", ".join(f"{f['from_name']}→{f['to_name']} ({f['count']})" for f in flips) or "–"


def format_attractor(job: Mapping[str, Any]) -> str:
    """``dog (41%)``; ``–`` when nothing succeeded."""
    top = job["top_attractor"]
    return "–" if top["name"] is None else f"{top['name']} ({format_pct(top['share'])})"


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


def format_table(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and text rows of the per-job table (the CLI's end-of-run table and
    the report's summary table). Pending jobs are marked ``(incomplete)``."""
    rows = []
    for j in summary["jobs"]:
        label = j["label"] if j["complete"] else f"{j['label']} (incomplete)"
        rows.append(
            [
                label,
                str(j["n"]),
                format_pct(j["clean_accuracy"]),
                format_pct(j["success_rate"]),
                format_pct(j["success_rate_clean"]),
                _num(j["median_l0"]),
                _num(j["median_l2"]),
                _num(j["median_linf"]),
                format_symmetry(j),
                format_p(j["bowker"]["p_value"]),
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


def csv_rows(summary: Mapping[str, Any]) -> list[list[Any]]:
    """Rows of ``jobs.csv`` (columns :data:`CSV_COLUMNS`; ``None`` for missing)."""
    rows = []
    for j in summary["jobs"]:
        values = {
            **{c: j.get(c) for c in CSV_COLUMNS},
            "symmetry_ci_low": j["symmetry_ci"][0],
            "symmetry_ci_high": j["symmetry_ci"][1],
            "bowker_statistic": j["bowker"]["statistic"],
            "bowker_df": j["bowker"]["df"],
            "bowker_p": j["bowker"]["p_value"],
            "top_attractor": j["top_attractor"]["name"],
            "top_attractor_share": j["top_attractor"]["share"],
            "white_noise_rho": j["white_noise_spearman"]["rho"],
            "white_noise_p": j["white_noise_spearman"]["p_value"],
            "top_flips": format_flips(j) if j["top_flips"] else None,
            "target_strategy": j["label_space"]["strategy"],
            "attack_rate": j["label_space"]["attack_rate"],
            **{
                f"flip_distance_{name}": j["label_space"]["flip_distance"].get(name)
                for name in DISTANCE_NAMES
            },
            "mean_sq_perturbation": j["label_space"]["mean_sq_perturbation"],
        }
        rows.append([values[c] for c in CSV_COLUMNS])
    return rows

"""The batch step beneath every executor: attack one batch of one job, judge
its adversarial examples, and (in the driver) commit it into the run.

:func:`attack_batch` is what the local executor runs in-process and what a
Ray worker runs for a shard: the batch's generator comes from the seed tree
alone (:meth:`~labelflip.run.seeds.SeedTree.batch` of ``(job, start //
batch_size)``), the target strategy (if any) sees the batch's clean logits,
and so whoever runs it gets the same records, bit for bit, apart from the
measured seconds. Judging (an oracle's class, a feature-squeezing score) is
not attack work and is not in ``seconds``.

A model whose logits on an adversarial example are NaN or infinite has no
class for it (``argmax`` would call it class 0): the record is marked
invalid (``valid`` 0, ``adv_pred`` -1, no success) and every statistic
leaves it out; likewise for an oracle's logits (``oracle_pred`` -1)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from labelflip.attacks import AttackSpec, get_attack
from labelflip.attacks.primitives import reporting_progress
from labelflip.config import DetectConfig, JobSpec
from labelflip.run.seeds import SeedTree
from labelflip.store import RunDir, RunStore, record_columns
from labelflip.targets import choose_targets


@dataclass(frozen=True)
class PlannedJob:
    """A job with its attack and its settings, built and validated once."""

    spec: JobSpec
    attack: AttackSpec
    settings: Any

    @property
    def job_id(self) -> str:
        return self.spec.job_id


def plan_job(spec: JobSpec) -> PlannedJob:
    attack = get_attack(spec.attack)
    return PlannedJob(spec, attack, attack.settings(spec.settings))


@dataclass(frozen=True)
class Judges:
    """What judges an adversarial example beside the attacked model: an
    independent ``oracle`` (its class is recorded as ``oracle_pred``) and the
    ``[detect]`` table when feature squeezing is on (the score is recorded as
    ``squeeze``)."""

    oracle: Any = None
    detect: DetectConfig | None = None


@dataclass
class BatchOutput:
    """One attacked batch, ready for :meth:`RunStore.write_batch`: its record
    columns, its adversarial examples (float32, on the CPU) and its success rate."""

    records: dict[str, np.ndarray]
    x_adv: np.ndarray
    success_rate: float
    transition: np.ndarray | None = None  # a Type I attack's halfway images
    profile: np.ndarray | None = None  # an attack of attacks' (N, C) distances (float64)


def attack_batch(
    job: PlannedJob,
    clf: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    indices: np.ndarray,
    start: int,
    batch_size: int,
    seeds: SeedTree,
    device: torch.device,
    distances: dict[str, Any],
    needs: dict[str, Any] | None = None,
    judges: Judges | None = None,
    progress: Callable[[float], None] | None = None,
) -> BatchOutput:
    """Attack the batch of ``job`` that starts at sample position ``start``
    (``x``, ``y``, ``indices``: its samples) on ``device``; ``needs``: the
    run resources the attack takes (``svae``); ``judges``: see :class:`Judges`;
    ``progress``: told the share of the attack's work done as it goes (see
    :func:`labelflip.attacks.primitives.report_progress`; it changes nothing
    the attack computes)."""
    spec = job.spec
    x = x.to(device)
    y = y.to(device)
    gen = seeds.batch(spec.job_id, start // batch_size)
    t = time.perf_counter()
    target = None
    if spec.target is not None:
        with torch.no_grad():
            logits = clf(x)
        d = distances.get(spec.target.get("distance", ""))
        target = choose_targets(
            spec.target,
            logits,
            labels=y,
            distances=None if d is None else torch.as_tensor(d.matrix),
            generator=gen,
            class_names=None if clf.multilabel else clf.class_names,
            encoding=clf.encoding,
        )
    with reporting_progress(progress):
        result = job.attack.run(
            clf, x, y, job.settings, target=target, generator=gen, resources=needs
        )
    seconds = time.perf_counter() - t
    cols = result.to_numpy()
    m = len(indices)
    cols["true"] = cols.pop("y")
    judged = judge(result.x_adv, judges or Judges(), clf, batch_size)
    finite = decide(clf, result.x_adv)[1].cpu().numpy()
    valid = finite & judged.pop("oracle_finite", np.ones(m, dtype=bool))
    if not valid.all():  # no class, no landing, no success (see the module docstring)
        cols["adv_pred"] = np.where(finite, cols["adv_pred"], -1)
        cols["success"] = cols["success"] & valid
    records = record_columns(
        job_id=np.array([spec.job_id] * m),
        sample=np.arange(start, start + m),
        index=np.asarray(indices),
        seconds=np.full(m, seconds / m),
        valid=valid,
        **cols,
        **judged,
    )
    x_adv = result.x_adv.detach().cpu().numpy().astype(np.float32)
    transition = None
    if result.transition is not None:
        transition = result.transition.detach().cpu().numpy().astype(np.float32)
    profile = None if result.profile is None else result.profile.detach().cpu().numpy()
    rate = float(result.success.float().mean()) if len(result) else float("nan")
    return BatchOutput(records, x_adv, rate, transition, profile)


PREDICT_CHUNK = 512  # Classifier.predict's: the same passes give the same decisions


def decide(clf: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``clf.predict(x)`` (the same passes) and, per input, whether the
    network's raw outputs are all finite (a non-finite one has no class)."""
    preds, finite = [], []
    with torch.no_grad():
        for i in range(0, len(x), PREDICT_CHUNK):
            z = clf.outputs(x[i : i + PREDICT_CHUNK])
            finite.append(torch.isfinite(z).flatten(1).all(1))
            preds.append(clf.decode(clf.encoding.scores(z)))
    if not preds:
        empty = torch.empty(0, dtype=torch.long, device=x.device)
        return empty, empty.bool()
    return torch.cat(preds), torch.cat(finite)


def judge(x_adv: torch.Tensor, judges: Judges, clf: Any, batch_size: int) -> dict:
    """The ``oracle_pred`` and ``squeeze`` columns of a batch (left out, and
    so at their defaults, without an oracle or a detector), and with an
    oracle ``oracle_finite``: whether its logits were finite (``oracle_pred``
    -1 where not)."""
    out: dict[str, np.ndarray] = {}
    if judges.oracle is not None:
        oracle = judges.oracle
        pred, finite = decide(oracle, x_adv.to(oracle.mean.device))
        finite = finite.cpu().numpy()
        out["oracle_pred"] = np.where(finite, pred.cpu().numpy(), -1)
        out["oracle_finite"] = finite
    if judges.detect is not None:
        from labelflip.detect import squeeze_scores

        d = judges.detect
        scores = squeeze_scores(
            clf, x_adv, squeezers=d.squeezers, distance=d.distance, batch_size=batch_size
        )
        out["squeeze"] = scores.cpu().numpy()
    return out


GALLERY_POOL = 256  # at most this many gallery candidates per job (disk), unless gallery asks more


def gallery_size(gallery: int, n: int, batch_size: int) -> int:
    """Rows saved for the report's gallery (originals and each job's
    adversarials): the first batch, up to :data:`GALLERY_POOL` rows (or
    ``gallery`` when larger), from which the report picks ``gallery``
    informative examples; none when ``gallery = 0``."""
    if gallery == 0:
        return 0
    return min(max(gallery, GALLERY_POOL), n, batch_size)


def commit_batch(
    store: RunStore,
    run_dir: RunDir,
    job_id: str,
    start: int,
    out: BatchOutput,
    *,
    gallery: int,
    save_adversarials: bool,
) -> None:
    """Write one attacked batch into the run: the gallery's candidate
    adversarials first (the first ``gallery`` rows, in batch 0; a committed batch has
    them) and the batch's rows of a profiling attack's distances
    (``profiles/<job>.npy``), then the records (and, when the run keeps
    them, the adversarials) as one store transaction. Only the process that
    owns the run (the driver) calls this."""
    if gallery and start == 0:
        t = out.transition
        run_dir.save_gallery_adversarials(
            job_id, out.x_adv[:gallery], None if t is None else t[:gallery]
        )
    if out.profile is not None:
        run_dir.save_profile(job_id, start, out.profile)
    store.write_batch(job_id, out.records, out.x_adv if save_adversarials else None)

"""Where the attacks of a run execute, behind one :class:`Executor`
protocol, and the one commit/progress loop all executors share.

A job's batches are **shards** (job ``j``, sample positions ``[b, b +
batch_size)``). An executor computes shards with
:func:`~labelflip.run.step.attack_batch`, in this process
(:class:`LocalExecutor`) or on a Ray cluster
(:class:`~labelflip.run.ray.RayExecutor`), and yields each finished one;
:func:`run_shards`, in the driver, commits each into the run as one store
transaction, marks a job done when its last shard is in, shows progress and
lets Ctrl-C stop the run between commits. The records are therefore the
same, bit for bit, whichever executor computed them, and a resumed run
submits only the shards that were not committed."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from labelflip.errors import LabelflipError
from labelflip.run.plan import RunPlan, resolve_device
from labelflip.run.step import BatchOutput, attack_batch, commit_batch
from labelflip.store import RunDir, RunStore


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Shard:
    """One batch of one job: sample positions ``[start, stop)`` of job ``job``
    (its position in the plan)."""

    job: int
    start: int
    stop: int
    attempts: int = 0
    errors: list[str] = field(default_factory=list)


def _no_progress(shard: Shard, share: float) -> None:
    pass


@dataclass
class Hooks:
    """What an executor reports while computing: ``start(shard)`` when a
    shard begins (or is submitted), ``log(line)`` for a message and, where it
    can, ``progress(shard, share)``: the share of the shard's attack done
    (the attack's own steps, :func:`labelflip.attacks.primitives.report_progress`)."""

    start: Callable[[Shard], None]
    log: Callable[[str], None]
    progress: Callable[[Shard, float], None] = _no_progress


class ShardsFailed(Exception):
    """Raised by an executor after its last shard when some shards failed for
    good (everything else was yielded, and so committed); ``resume_flags``:
    what ``labelflip run --resume`` needs to continue with this executor."""

    def __init__(self, failed: list[Shard], resume_flags: str = "") -> None:
        super().__init__(f"{len(failed)} shards failed")
        self.failed = failed
        self.resume_flags = resume_flags


class Executor(Protocol):
    """Computes shards of a planned run (see the module docstring)."""

    def driver_device(self, name: str) -> torch.device:
        """The device the driver uses for the config's ``device``."""
        ...

    def announce(self, todo: int, total: int) -> str | None:
        """A line saying what is about to run (shown without progress bars), or ``None``."""
        ...

    def compute(
        self, plan: RunPlan, shards: list[Shard], distances: dict[str, Any], hooks: Hooks
    ) -> Iterator[tuple[Shard, BatchOutput]]:
        """Compute ``shards``, yielding each finished one (in any order)."""
        ...


class LocalExecutor:
    """Computes the shards in this process, job by job, batch by batch."""

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def driver_device(self, name: str) -> torch.device:
        return resolve_device(name)

    def announce(self, todo: int, total: int) -> str | None:
        return None

    def compute(
        self, plan: RunPlan, shards: list[Shard], distances: dict[str, Any], hooks: Hooks
    ) -> Iterator[tuple[Shard, BatchOutput]]:
        needs, judges, bs = plan.needs(), plan.judges(), plan.cfg.batch_size
        for s in shards:
            hooks.start(s)
            out = attack_batch(
                plan.jobs[s.job], plan.clf, plan.x[s.start : s.stop], plan.y[s.start : s.stop],
                plan.indices[s.start : s.stop], s.start, bs, plan.seeds, plan.device,
                distances, needs, judges, progress=lambda share, s=s: hooks.progress(s, share),
            )  # fmt: skip
            yield s, out


def pending_batches(n: int, batch_size: int, done: set[int]) -> list[int]:
    """Start positions of the batches of a job of ``n`` samples that still
    hold a sample not in ``done`` (the batches a resumed run redoes)."""
    return [b for b in range(0, n, batch_size) if not set(range(b, min(b + batch_size, n))) <= done]


def run_shards(
    store: RunStore,
    run_dir: RunDir,
    plan: RunPlan,
    executor: Executor,
    distances: dict[str, Any],
    progress: bool,
    after_commit: Callable[[], None],
) -> None:
    """Attack every uncommitted batch of the plan's jobs with ``executor``
    and commit each finished one (see the module docstring).
    ``after_commit`` runs after every commit (the Ctrl-C check; it raises to
    stop)."""
    n, bs, jobs = plan.n, plan.cfg.batch_size, plan.jobs
    shards: list[Shard] = []
    remaining: dict[int, int] = {}  # job -> shards not yet committed
    todo_samples: dict[int, int] = {}
    total = len(jobs) * -(-n // bs)
    done_total = 0
    for j, job in enumerate(jobs):
        if store.job_status(job.job_id) == "done":
            done_total += n
            continue
        done = set(store.done_samples(job.job_id).tolist())
        done_total += len(done)
        todo = pending_batches(n, bs, done)
        if not todo:
            store.mark_done(job.job_id)
            continue
        remaining[j] = len(todo)
        todo_samples[j] = n - len(done)
        shards.extend(Shard(j, b, min(b + bs, n)) for b in todo)
    if not shards:
        return

    bar = None
    line = executor.announce(len(shards), total)
    if progress:
        from tqdm.auto import tqdm

        # images of all jobs, advanced within a batch as the attack reports its
        # steps; the ETA from the run's mean rate so far (smoothing=0)
        bar = tqdm(
            total=len(jobs) * n, initial=done_total, desc="attacks", unit="img",
            dynamic_ncols=True, leave=True, smoothing=0,
        )  # fmt: skip
    elif line is not None:
        _log(line)

    def say(msg: str) -> None:
        if bar is not None:
            bar.write(msg, file=sys.stderr)
        else:
            _log(msg)

    started: set[int] = set()

    def start(shard: Shard) -> None:
        if shard.job in started:
            return
        started.add(shard.job)
        desc = f"[{shard.job + 1}/{len(jobs)}] {jobs[shard.job].job_id}"
        if bar is not None:
            bar.set_description(desc)
        else:
            _log(f"{desc}: {todo_samples[shard.job]} samples to attack")

    shown: dict[tuple[int, int], int] = {}  # images of an unfinished shard already on the bar

    def progress(shard: Shard, share: float) -> None:
        if bar is None:
            return
        key = (shard.job, shard.start)
        now = int(share * (shard.stop - shard.start))
        if now > shown.get(key, 0):
            bar.update(now - shown.get(key, 0))
            shown[key] = now

    committed = total - len(shards)
    try:
        hooks = Hooks(start, say, progress)
        for shard, out in executor.compute(plan, shards, distances, hooks):
            job_id = jobs[shard.job].job_id
            commit_batch(
                store, run_dir, job_id, shard.start, out,
                gallery=plan.gallery, save_adversarials=plan.cfg.save_adversarials,
            )  # fmt: skip
            committed += 1
            remaining[shard.job] -= 1
            if remaining[shard.job] == 0:
                del remaining[shard.job]
                store.mark_done(job_id)
            if bar is not None:
                bar.update(shard.stop - shard.start - shown.pop((shard.job, shard.start), 0))
                bar.set_postfix(success=f"{out.success_rate:.3f}")
            after_commit()  # Ctrl-C: stop here, after a committed batch
    except ShardsFailed as e:
        failed = e.failed
        shown = "; ".join(
            f"{jobs[s.job].job_id} samples {s.start}-{s.stop - 1} ({s.errors[-1]})"
            for s in failed[:3]
        )
        more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
        raise LabelflipError(
            f"{len(failed)} of {total} shards failed {failed[0].attempts} times each and were "
            f"not recorded: {shown}{more}; the {committed} finished shards are kept; resume "
            f"with: labelflip run --resume {shlex.quote(str(run_dir.path))}{e.resume_flags}"
        ) from None
    finally:
        if bar is not None:
            bar.close()

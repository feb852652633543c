"""The thin orchestrator of ``labelflip run``: plan, make (or reopen) the
run directory, record the setup, register the jobs, and let an executor run
the shards through the one commit loop.

Determinism and resumption: the samples are fixed by the config's seed; the
batches of a job are fixed slices of the sample list; the generator of batch
``b`` of job ``j`` comes from the seed tree alone (:mod:`labelflip.run.seeds`).
Each finished batch is one store transaction, so a run killed at any moment
and resumed with ``labelflip run --resume RUNDIR`` redoes only the batches
that were not committed, and its records equal those of an uninterrupted run
(apart from the measured seconds). Ctrl-C (SIGINT) stops a run cleanly after
the batch in hand (a second Ctrl-C stops at once); it is resumed the same way.
A resumed run must see the samples it started with (their SHA-256, images
and labels) and the same models; a different torch thread count is warned
about (records then match an uninterrupted run only to the last bits). One
process at a time runs a run directory (:meth:`labelflip.store.RunDir.lock`).

Everything a user can get wrong is checked before the run directory is made
(:func:`labelflip.run.plan.prepare`, :mod:`labelflip.checks`, and the setup:
class distances and white-noise prior), and the run directory appears
atomically with its config and an empty store (:class:`labelflip.store.RunDir`)."""

from __future__ import annotations

import contextlib
import shlex
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from labelflip import checks
from labelflip.config import RunConfig, validate_config
from labelflip.errors import LabelflipWarning, RunInterrupted
from labelflip.run.executors import Executor, LocalExecutor, run_shards
from labelflip.run.plan import Inputs, RunPlan, prepare, stored_config
from labelflip.run.setup import compute_setup, samples_digest, save_setup, stored_distances
from labelflip.run.threads import checked_threads, resolve_threads, using_threads
from labelflip.store import Job, RunDir, RunStore, new_run_path

MANY_JOBS = 10_000  # a grid this large says what it is doing before the first attack


def _log(*lines: str) -> None:
    print(*lines, sep="\n", file=sys.stderr, flush=True)


@dataclass
class RunOutcome:
    run_dir: Path
    seconds: float


def new_run_dir(cfg: RunConfig, output: str | None) -> Path:
    """``<output or cfg.output>/<name>-<date>-<time>``."""
    return new_run_path(output if output is not None else cfg.output, cfg.name)


def run(
    cfg: RunConfig | None,
    *,
    config_text: str = "",
    run_dir: Path | None = None,
    resume: Path | None = None,
    progress: bool = True,
    executor: Executor | None = None,
    inputs: Inputs | None = None,
    threads: int | None = None,
) -> RunOutcome:
    """Run a config into a new run directory ``run_dir``, or resume
    ``resume`` (then ``cfg``, if given, must be the config the run was made
    with). ``executor``: where the attacks run (the local executor when
    ``None``); either way only this process writes the run's store, and the
    records are the same. ``inputs``: a model and samples given in Python
    (:func:`labelflip.evaluate`; see :class:`~labelflip.run.plan.Inputs`).
    ``threads``: torch's CPU threads for this run, overriding the config's
    (``--threads``; see :mod:`labelflip.run.threads`)."""
    t_start = time.perf_counter()
    executor = executor if executor is not None else LocalExecutor()
    with contextlib.ExitStack() as held:
        setup = None
        if resume is not None:
            rd = RunDir(resume)
            cfg = stored_config(rd.path, cfg)
            held.enter_context(rd.lock())  # one process per run directory
        else:
            if cfg is None or run_dir is None:
                raise TypeError("run() needs a config and a run directory, or resume=")
            validate_config(cfg)
        device = executor.driver_device(cfg.device)
        chosen = resolve_threads(cfg.threads, device, checked_threads(threads))
        held.enter_context(using_threads(chosen.count))
        plan = prepare(cfg, progress, device, inputs)  # every check first
        # the header waits until every check has passed: bad input is one line
        header = (
            f"{cfg.name}: device {device}, {chosen.describe()}",
            f"{len(plan.jobs)} jobs x {plan.n} samples = {len(plan.jobs) * plan.n} attacks",
        )
        if resume is None:
            assert run_dir is not None
            setup = compute_setup(plan, progress)  # its mistakes, too, before the directory
            checks.target_distances_available([j.spec for j in plan.jobs], setup.distances)
            rd = RunDir.create(run_dir, cfg.to_dict(), config_text)
            held.enter_context(rd.lock())
            _log(*header, f"run directory: {rd.path}")
        with rd.store() as store, _stop_on_sigint(rd.path) as stop:
            started = store.meta("started") is not None
            if resume is not None:
                if started:
                    _check_unchanged(store, rd.path, plan, isinstance(executor, LocalExecutor))
                _log(*header, f"resuming {rd.path}")
            if started:
                distances = stored_distances(store)
            else:
                distances = save_setup(store, rd, plan, setup or compute_setup(plan, progress))
            if len(plan.jobs) >= MANY_JOBS:
                _log(f"registering {len(plan.jobs)} jobs (one transaction)")
            _register_jobs(store, plan, fresh=resume is None)
            checks.target_distances_available([j.spec for j in plan.jobs], distances)

            def stop_if_asked() -> None:
                _stop_if_asked(stop, store, rd.path, plan)

            stop_if_asked()
            run_shards(store, rd, plan, executor, distances, progress, stop_if_asked)
            store.set_meta("finished", datetime.now().isoformat(timespec="seconds"))
            _log(f"{len(plan.jobs)} jobs x {plan.n} samples done")
        rd.write_gallery_npz([j.job_id for j in plan.jobs])
    return RunOutcome(rd.path, time.perf_counter() - t_start)


def _register_jobs(store: RunStore, plan: RunPlan, *, fresh: bool) -> None:
    """Add the plan's jobs to the job table (a resumed run keeps the library
    versions recorded when each job was first added)."""
    from labelflip.models.checkpoint import library_versions

    versions = {**library_versions(), "torch_threads": torch.get_num_threads()}
    old = {} if fresh else {job.job_id: job.versions for job in store.jobs()}
    store.add_jobs(  # one transaction, however many jobs
        [
            Job(
                job_id=spec.job_id,
                attack=spec.attack,
                settings=spec.stored_settings(),
                seed=plan.cfg.seed,
                model_sha256=plan.model.meta.weights_sha256,
                versions=old.get(spec.job_id, versions),
                label=spec.label,
                group=spec.group,
                sweep_value=spec.sweep_value,
            )
            for spec in (job.spec for job in plan.jobs)
        ]
    )


def _check_unchanged(store: RunStore, run_dir: Path, plan: RunPlan, local: bool) -> None:
    """A resumed run must see the samples (indices, images and labels) and
    the models it started with; with the local executor on the CPU, a
    different torch thread count is warned about."""
    checks.resume_same_samples(run_dir, store.meta("samples"), plan.indices.tolist())
    was = store.meta("samples_sha256")  # absent in runs made before it was recorded
    if was is not None:
        checks.resume_same_images(run_dir, was, samples_digest(plan.x, plan.y))
    threads = store.meta("torch_threads")
    note = checks.resume_threads_note(threads, torch.get_num_threads())
    if note is not None and local and plan.device.type == "cpu":
        warnings.warn(note, LabelflipWarning, stacklevel=3)
    oracle, svae = plan.oracle, plan.svae
    for what, path, now in (
        ("model", plan.model.checkpoint, plan.model.meta.weights_sha256),
        (
            "oracle",
            None if oracle is None else oracle.checkpoint,
            None if oracle is None else oracle.meta.weights_sha256,
        ),
        (
            "svae",
            None if svae is None else svae.checkpoint,
            None if svae is None else svae.meta.get("weights_sha256"),
        ),
    ):
        was = (store.meta(what) or {}).get("sha256")
        checks.resume_same_weights(run_dir, what, path, was, now)


@contextlib.contextmanager
def _stop_on_sigint(run_dir: Path) -> Iterator[threading.Event]:
    """While running: the first Ctrl-C sets the returned event (the run stops
    after the batch in hand); a second one interrupts at once, saying how to
    resume."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise RunInterrupted(
                "stopped at once, the batch in hand not recorded (committed batches are kept); "
                f"resume with: labelflip run --resume {shlex.quote(str(run_dir))}"
            )
        stop.set()
        _log("labelflip: stopping after the current batch (Ctrl-C again to stop at once)")

    previous: Callable[..., Any] | int | None = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop_if_asked(stop: threading.Event, store: RunStore, run_dir: Path, plan: RunPlan) -> None:
    if stop.is_set():
        kept = sum(len(store.done_samples(j.job_id)) for j in plan.jobs)
        raise RunInterrupted(
            f"stopped after a finished batch, {kept} of {len(plan.jobs) * plan.n} records kept; "
            f"resume with: labelflip run --resume {shlex.quote(str(run_dir))}"
        )

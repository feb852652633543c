"""Where the attacks of ``labelflip run`` execute: in the runner's own process
(the default, the *local* executor) or as tasks on a Ray cluster
(``labelflip run CONFIG --executor ray [--address ADDR]``; see
``docs/distributed.md``).

The Ray executor submits every shard of a run (one batch of one job, see
:mod:`labelflip.run.executors`) as a Ray task. A worker computes a shard with
:func:`labelflip.run.step.attack_batch`, the very function the local executor
calls for that batch, so the shard's
generator is seeded by ``(seed, j, b // batch_size)`` alone and its records
equal the local executor's bit for bit (apart from the measured seconds),
however the shards are scheduled. Workers never touch the run directory:
they return the records, and the driver alone writes each finished shard
into the run store as one transaction. Crash safety and ``--resume`` are
therefore exactly those of the local executor: a resumed run submits only
the shards that were not committed, with either executor.

The model travels once through Ray's object store (the checkpoint's weights
and sidecar bytes; a worker process loads it with
:func:`labelflip.models.load_checkpoint`, verifying its SHA-256, and keeps it
for its later tasks), and so do the chosen samples (numpy arrays, read
zero-copy by workers on the same node). A shard that fails (an exception, a
worker or node lost) is submitted again, at most ``max_retries`` times; one
that still fails is reported, the finished shards stay committed and the run
ends with an error that says how to resume it.

Ray is an optional dependency (``pip install 'labelflip[ray]'``); it is
imported only when the Ray executor is used.
"""

from __future__ import annotations

import os
import subprocess
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from labelflip.config import EXECUTORS
from labelflip.errors import LabelflipError
from labelflip.run.executors import Hooks, LocalExecutor, Shard, ShardsFailed
from labelflip.run.plan import RunPlan, resolve_device
from labelflip.run.ray_worker import (
    _attack_shard,
    _check_reachable,
    _first_line,
    _fmt_resources,
    _judges_payload,
    _model_payload,
    _reason,
    _start_watchdog,
    _stop_watchdog,
)
from labelflip.run.step import BatchOutput

NEEDS_RAY = "--executor ray needs Ray: pip install 'labelflip[ray]'"


def import_ray() -> Any:
    """The ``ray`` module, or the one-line error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise LabelflipError(NEEDS_RAY) from None
    return ray


@dataclass(frozen=True)
class RayOptions:
    """How ``labelflip run --executor ray`` uses Ray.

    ``address``: the cluster to join (what ``ray start --head`` printed,
    ``auto`` for the cluster started on this machine, or ``ray://HOST:PORT``);
    ``None`` starts a private local Ray instance for the run, with
    ``num_cpus`` CPUs (all when ``None``). Each shard asks for
    ``cpus_per_task`` CPUs and, when the run's device is CUDA,
    ``gpus_per_task`` GPUs (a fraction shares a GPU between shards). A failed
    shard is submitted again at most ``max_retries`` times."""

    address: str | None = None
    num_cpus: int | None = None
    max_retries: int = 2
    cpus_per_task: float = 1.0
    gpus_per_task: float = 1.0

    def validate(self) -> None:
        """One-line errors for option values that cannot work."""
        if self.address is not None and not self.address.strip():
            raise LabelflipError("--address is empty (a Ray address, e.g. 10.0.0.1:6379 or auto)")
        if self.num_cpus is not None:
            if self.address is not None:
                raise LabelflipError(
                    "--ray-cpus sizes the local Ray instance a run starts; it does not go with "
                    "--address (the cluster has its own CPUs)"
                )
            if self.num_cpus < 1:
                raise LabelflipError(f"--ray-cpus must be >= 1, got {self.num_cpus}")
        if self.max_retries < 0:
            raise LabelflipError(f"--max-retries must be >= 0, got {self.max_retries}")
        if not self.cpus_per_task > 0:
            raise LabelflipError(f"--cpus-per-task must be > 0, got {self.cpus_per_task:g}")
        if not self.gpus_per_task > 0:
            raise LabelflipError(f"--gpus-per-task must be > 0, got {self.gpus_per_task:g}")


def make_executor(
    kind: str, options: RayOptions, *, given: Sequence[str] = ()
) -> LocalExecutor | RayExecutor:
    """The executor ``kind`` names, with ``options``; ``given``: the Ray
    options the user set (e.g. ``--address``), an error without the Ray
    executor."""
    if kind not in EXECUTORS:
        raise LabelflipError(f"unknown executor '{kind}' (use {' or '.join(EXECUTORS)})")
    if kind == "local":
        if given:
            raise LabelflipError(
                f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'} the Ray executor "
                '(--executor ray, or executor = "ray" in the config)'
            )
        return LocalExecutor()
    options.validate()
    return RayExecutor(options)


class RayExecutor:
    """Runs the shards of a run's jobs as Ray tasks (see the module docstring).

    Use it as a context manager around :func:`labelflip.run.run`::

        with RayExecutor(RayOptions(address="auto")) as ex:
            run(cfg, run_dir=..., executor=ex)

    Entering connects to the cluster (or starts a local instance); leaving
    shuts down a local instance it started, or disconnects.
    """

    shard_task: Any
    """The function a Ray task runs for one shard (:func:`_attack_shard`; a
    test may replace it on an instance, e.g. to make shards fail)."""

    def __init__(self, options: RayOptions | None = None) -> None:
        self.shard_task = _attack_shard
        self.options = options or RayOptions()
        self._ray: Any = None
        self._connected_here = False
        self._watchdog: subprocess.Popen | None = None
        self._device_name = "auto"

    # ---------------------------------------------------------- lifecycle

    def __enter__(self) -> RayExecutor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Connect to Ray (idempotent). A process that already called
        ``ray.init`` (a notebook, a test) is used as it is."""
        if self._ray is not None:
            return
        ray = import_ray()
        if not ray.is_initialized():
            self._init(ray)
            self._connected_here = True
        self._ray = ray

    def _init(self, ray: Any) -> None:
        import logging

        opts = self.options
        address = opts.address or os.environ.get("RAY_ADDRESS") or None
        kwargs: dict[str, Any] = {
            "include_dashboard": False,
            "logging_level": logging.ERROR,
            "log_to_driver": True,
        }
        if address is None:
            # "local": a private instance for this run, even if `ray start` runs here
            kwargs.update(address="local", num_cpus=opts.num_cpus)
        else:
            if opts.num_cpus is not None:
                raise LabelflipError(
                    f"--ray-cpus sizes a local Ray instance, but RAY_ADDRESS={address} names "
                    "a cluster to join"
                )
            _check_reachable(address)
            kwargs["address"] = address
        try:
            ctx = ray.init(**kwargs)
        except Exception as e:  # ConnectionError, ValueError, RuntimeError, ...
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            hint = ""
            if address and isinstance(e, ConnectionError) and "RAY_AUTH_MODE" not in os.environ:
                hint = (
                    " (a cluster with token authentication also needs RAY_AUTH_MODE=token and "
                    "its token in ~/.ray/auth_token or RAY_AUTH_TOKEN; see docs/distributed.md)"
                )
            raise LabelflipError(f"cannot connect to {where}: {_first_line(e)}{hint}") from None
        if address is None:
            self._watchdog = _start_watchdog(ctx)

    def close(self) -> None:
        """Shut down the Ray instance this executor started (or disconnect)."""
        if self._ray is not None and self._connected_here:
            self._ray.shutdown()
        self._ray = None
        self._connected_here = False
        if self._watchdog is not None:
            _stop_watchdog(self._watchdog)
            self._watchdog = None

    # ---------------------------------------------------------- devices

    def _resources(self) -> dict[str, float]:
        self.start()
        return dict(self._ray.cluster_resources())

    def devices(self, name: str) -> tuple[torch.device, str]:
        self._device_name = name
        """``(driver device, worker device type)`` for the config's ``device``.

        CUDA is asked for when the config names it, or says ``auto`` and the
        driver or the cluster has a GPU. Shards then ask Ray for GPUs; the
        driver (which checks the model and computes the class distances)
        uses its own GPU, or its CPU when it has none (a CPU head node)."""
        gpus = self._resources().get("GPU", 0.0)
        here = torch.cuda.is_available()
        wants_cuda = name.startswith("cuda") or (name == "auto" and (here or gpus > 0))
        if not wants_cuda:
            return resolve_device(name), "cpu"
        if gpus <= 0:
            raise LabelflipError(
                f"device '{name}' asks for CUDA but the Ray cluster has no GPUs "
                f"(resources: {_fmt_resources(self._resources())})"
            )
        driver = resolve_device(name) if here else torch.device("cpu")
        return driver, "cuda"

    def _slots(self, worker_device: str) -> int:
        """How many shards the cluster runs at once (at least 1)."""
        res = self._resources()
        opts = self.options
        cpu = int(res.get("CPU", 0.0) // opts.cpus_per_task)
        if cpu < 1:
            raise LabelflipError(
                f"each shard asks for {opts.cpus_per_task:g} CPUs but the Ray cluster has "
                f"{res.get('CPU', 0.0):g} (--cpus-per-task)"
            )
        if worker_device != "cuda":
            return cpu
        gpu = int(res.get("GPU", 0.0) // opts.gpus_per_task)
        if gpu < 1:
            raise LabelflipError(
                f"each shard asks for {opts.gpus_per_task:g} GPUs but the Ray cluster has "
                f"{res.get('GPU', 0.0):g} (--gpus-per-task)"
            )
        return min(cpu, gpu)

    def driver_device(self, name: str) -> torch.device:
        return self.devices(name)[0]

    def announce(self, todo: int, total: int) -> str | None:
        _, worker_device = self.devices(self._device_name)
        slots = self._slots(worker_device)
        return (
            f"ray: {todo} of {total} shards to attack, {slots} at once "
            f"({_fmt_resources(self._resources())})"
        )

    # ---------------------------------------------------------- running

    def compute(
        self, plan: RunPlan, shards: list[Shard], distances: dict[str, Any], hooks: Hooks
    ) -> Iterator[tuple[Shard, BatchOutput]]:
        """Submit ``shards`` as Ray tasks and yield each finished one. A failed
        shard is submitted again at most ``max_retries`` times; when some
        still failed, :class:`~labelflip.run.executors.ShardsFailed` is
        raised after the last one (the others were yielded). Shards still in
        flight when the caller stops (Ctrl-C) are cancelled."""
        self.start()
        ray = self._ray
        cfg = plan.cfg
        _, worker_device = self.devices(cfg.device)
        slots = self._slots(worker_device)
        bs = cfg.batch_size
        queue: deque[Shard] = deque(shards)

        model_ref = ray.put(_model_payload(plan))
        judges_ref = ray.put(_judges_payload(plan))
        data_ref = ray.put(
            (
                np.ascontiguousarray(plan.x.numpy()),
                np.ascontiguousarray(plan.y.numpy()),
                np.asarray(plan.indices, dtype=np.int64),
            )
        )
        dist_refs: dict[str, Any] = {}  # distance name -> {name: matrix} in the object store
        gallery = plan.gallery
        opts = self.options
        task = ray.remote(self.shard_task).options(
            num_cpus=opts.cpus_per_task,
            num_gpus=opts.gpus_per_task if worker_device == "cuda" else 0,
            max_retries=0,  # retries are counted here, for worker crashes and exceptions alike
            retry_exceptions=False,
        )

        def submit(shard: Shard) -> Any:
            hooks.start(shard)
            spec = plan.jobs[shard.job].spec
            name = (spec.target or {}).get("distance")
            key = name or ""
            if key not in dist_refs:
                dist_refs[key] = ray.put({name: distances[name]} if name in distances else {})
            keep = -1 if cfg.save_adversarials else (gallery if shard.start == 0 else 0)
            return task.remote(
                [model_ref, judges_ref],  # in a list: resolved by the worker only when not cached
                data_ref,
                spec,
                shard.start,
                shard.stop,
                bs,
                cfg.seed,
                worker_device,
                dist_refs[key],
                keep,
            )

        window = max(2 * slots, 2)
        in_flight: dict[Any, Shard] = {}
        failed: list[Shard] = []
        try:
            while queue or in_flight:
                while queue and len(in_flight) < window:
                    shard = queue.popleft()
                    in_flight[submit(shard)] = shard
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in ready:
                    shard = in_flight.pop(ref)
                    try:
                        out: BatchOutput = ray.get(ref)
                    except Exception as e:  # RayTaskError, WorkerCrashedError, ...
                        shard.attempts += 1
                        shard.errors.append(_reason(e))
                        job_id = plan.jobs[shard.job].job_id
                        where = f"shard {job_id} samples {shard.start}-{shard.stop - 1}"
                        if shard.attempts <= opts.max_retries:
                            hooks.log(
                                f"labelflip: {where} failed ({shard.errors[-1]}); "
                                f"retry {shard.attempts} of {opts.max_retries}"
                            )
                            queue.appendleft(shard)
                        else:
                            hooks.log(f"labelflip: {where} failed ({shard.errors[-1]}); giving up")
                            failed.append(shard)
                        continue
                    yield shard, out
        finally:
            for ref in in_flight:  # stopped early: nothing more to compute
                try:
                    ray.cancel(ref)
                except Exception:  # already finished or lost
                    pass
        if failed:
            raise ShardsFailed(failed, " --executor ray")

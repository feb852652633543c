"""Where the attacks of ``labelflip run`` execute: in the runner's own process
(the default, the *local* executor) or as tasks on a Ray cluster
(``labelflip run CONFIG --executor ray [--address ADDR]``; see
``docs/distributed.md``).

The Ray executor splits every job into **shards**, one per runner batch (job
``j``, sample positions ``[b, b + batch_size)``), and submits them as Ray
tasks. A worker computes a shard with :func:`labelflip.runner.attack_batch`,
the very function the local executor calls for that batch, so the shard's
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
import shlex
import socket
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from labelflip.config import EXECUTORS
from labelflip.errors import LabelflipError

if TYPE_CHECKING:  # pragma: no cover
    from labelflip.config import JobSpec, RunConfig
    from labelflip.runner import BatchOutput, RunInputs

NEEDS_RAY = "--executor ray needs Ray: pip install 'labelflip[ray]'"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


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
) -> RayExecutor | None:
    """The executor ``kind`` names (``None`` for the local executor), with
    ``options``; ``given``: the Ray options the user set (e.g. ``--address``),
    an error without the Ray executor."""
    if kind not in EXECUTORS:
        raise LabelflipError(f"unknown executor '{kind}' (use {' or '.join(EXECUTORS)})")
    if kind == "local":
        if given:
            raise LabelflipError(
                f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'} the Ray executor "
                '(--executor ray, or executor = "ray" in the config)'
            )
        return None
    options.validate()
    return RayExecutor(options)


@dataclass
class _Shard:
    """One runner batch of one job: sample positions ``[start, stop)``."""

    job: int
    start: int
    stop: int
    attempts: int = 0
    errors: list[str] = field(default_factory=list)


class RayExecutor:
    """Runs the shards of a run's jobs as Ray tasks (see the module docstring).

    Use it as a context manager around :func:`labelflip.runner.run`::

        with RayExecutor(RayOptions(address="auto")) as ex:
            run(cfg, run_dir=..., executor=ex)

    Entering connects to the cluster (or starts a local instance); leaving
    shuts down a local instance it started, or disconnects.
    """

    shard_task: Callable[..., BatchOutput]
    """The function a Ray task runs for one shard (:func:`_attack_shard`; a
    test may replace it on an instance, e.g. to make shards fail)."""

    def __init__(self, options: RayOptions | None = None) -> None:
        self.shard_task = _attack_shard
        self.options = options or RayOptions()
        self._ray: Any = None
        self._connected_here = False
        self._watchdog: subprocess.Popen | None = None

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
        """``(driver device, worker device type)`` for the config's ``device``.

        CUDA is asked for when the config names it, or says ``auto`` and the
        driver or the cluster has a GPU. Shards then ask Ray for GPUs; the
        driver (which checks the model and computes the class distances)
        uses its own GPU, or its CPU when it has none (a CPU head node)."""
        from labelflip.runner import resolve_device

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

    # ---------------------------------------------------------- running

    def run_jobs(
        self,
        store: Any,
        run_dir: Path,
        cfg: RunConfig,
        jobs: list[JobSpec],
        inputs: RunInputs,
        distances: dict[str, Any],
        progress: bool,
        after_shard: Callable[[], None],
    ) -> None:
        """Attack every uncommitted batch of ``jobs`` on Ray and commit each
        finished one into ``store`` (then mark each completed job done).

        ``after_shard`` runs after every commit (the runner's Ctrl-C check;
        it raises to stop, and the shards in flight are cancelled). Raises
        :class:`LabelflipError` after the last shard when some shard failed
        ``1 + max_retries`` times; everything finished is committed by then."""
        from labelflip.runner import commit_batch, gallery_size, pending_batches

        ray = self._ray
        if ray is None:
            self.start()
            ray = self._ray
        _, worker_device = self.devices(cfg.device)
        slots = self._slots(worker_device)
        n = len(inputs.indices)
        bs = cfg.batch_size

        shards: deque[_Shard] = deque()
        remaining: dict[int, int] = {}  # job -> shards not yet committed
        total = len(jobs) * -(-n // bs)
        for j, spec in enumerate(jobs):
            if store.job_status(spec.job_id) == "done":
                continue
            todo = pending_batches(n, bs, set(store.done_samples(spec.job_id).tolist()))
            if not todo:
                store.mark_done(spec.job_id)
                continue
            remaining[j] = len(todo)
            shards.extend(_Shard(j, b, min(b + bs, n)) for b in todo)
        if not shards:
            return

        model_ref = ray.put(_model_payload(inputs))
        judges_ref = ray.put(_judges_payload(inputs, cfg))
        data_ref = ray.put(
            (
                np.ascontiguousarray(inputs.x.numpy()),
                np.ascontiguousarray(inputs.y.numpy()),
                np.asarray(inputs.indices, dtype=np.int64),
            )
        )
        dist_refs: dict[str, Any] = {}  # distance name -> {name: matrix} in the object store
        gallery = gallery_size(cfg, n)
        opts = self.options
        task = ray.remote(self.shard_task).options(
            num_cpus=opts.cpus_per_task,
            num_gpus=opts.gpus_per_task if worker_device == "cuda" else 0,
            max_retries=0,  # retries are counted here, for worker crashes and exceptions alike
            retry_exceptions=False,
        )

        def submit(shard: _Shard) -> Any:
            spec = jobs[shard.job]
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
        todo_count = len(shards)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=total,
                initial=total - todo_count,
                desc=f"ray ({slots} at once)",
                unit="shard",
                dynamic_ncols=True,
            )
        else:
            _log(
                f"ray: {todo_count} of {total} shards to attack, {slots} at once "
                f"({_fmt_resources(self._resources())})"
            )

        def say(msg: str) -> None:
            if bar is not None:
                bar.write(msg, file=sys.stderr)
            else:
                _log(msg)

        in_flight: dict[Any, _Shard] = {}
        failed: list[_Shard] = []
        retries = 0
        committed = total - todo_count
        try:
            while shards or in_flight:
                while shards and len(in_flight) < window:
                    shard = shards.popleft()
                    in_flight[submit(shard)] = shard
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in ready:
                    shard = in_flight.pop(ref)
                    spec = jobs[shard.job]
                    try:
                        out: BatchOutput = ray.get(ref)
                    except Exception as e:  # RayTaskError, WorkerCrashedError, ...
                        shard.attempts += 1
                        shard.errors.append(_reason(e))
                        where = f"shard {spec.job_id} samples {shard.start}-{shard.stop - 1}"
                        if shard.attempts <= opts.max_retries:
                            say(
                                f"labelflip: {where} failed ({shard.errors[-1]}); "
                                f"retry {shard.attempts} of {opts.max_retries}"
                            )
                            shards.appendleft(shard)
                            retries += 1
                        else:
                            say(f"labelflip: {where} failed ({shard.errors[-1]}); giving up")
                            failed.append(shard)
                            remaining.pop(shard.job, None)
                        continue
                    commit_batch(store, run_dir, cfg, spec.job_id, shard.start, n, out)
                    committed += 1
                    if shard.job in remaining:
                        remaining[shard.job] -= 1
                        if remaining[shard.job] == 0:
                            del remaining[shard.job]
                            store.mark_done(spec.job_id)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(
                            success=f"{out.success_rate:.3f}",
                            **({"retries": retries} if retries else {}),
                            **({"failed": len(failed)} if failed else {}),
                        )
                    after_shard()  # Ctrl-C: stop here, after a committed shard
        finally:
            for ref in in_flight:  # stopped early: nothing more to compute
                try:
                    ray.cancel(ref)
                except Exception:  # already finished or lost
                    pass
            if bar is not None:
                bar.close()
        if failed:
            first = failed[0]
            shown = "; ".join(
                f"{jobs[s.job].job_id} samples {s.start}-{s.stop - 1} ({s.errors[-1]})"
                for s in failed[:3]
            )
            more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
            raise LabelflipError(
                f"{len(failed)} of {total} shards failed {first.attempts} times each and were "
                f"not recorded: {shown}{more}; the {committed} finished shards are kept; resume "
                f"with: labelflip run --resume {shlex.quote(str(run_dir))} --executor ray"
            )


# ------------------------------------------------------------------ worker side


@dataclass(frozen=True)
class _ModelPayload:
    """A checkpoint's bytes (weights and JSON sidecar), what user code to trust
    and the weights' SHA-256, put once into Ray's object store."""

    weights: bytes
    sidecar: bytes
    trust: str | None
    sha256: str


def _model_payload(inputs: RunInputs) -> _ModelPayload:
    return _checkpoint_payload(
        inputs.checkpoint, inputs.meta.architecture, inputs.meta.weights_sha256
    )


def _checkpoint_payload(path: Path, arch: str, sha256: str) -> _ModelPayload:
    from labelflip.models.checkpoint import checkpoint_paths

    weights, sidecar = checkpoint_paths(path)
    try:
        return _ModelPayload(
            weights=weights.read_bytes(),
            sidecar=sidecar.read_bytes(),
            trust=arch if ":" in arch else None,
            sha256=sha256,
        )
    except OSError as e:
        from labelflip.errors import os_error

        raise os_error(f"cannot read checkpoint {weights}", e) from None


@dataclass(frozen=True)
class _JudgesPayload:
    """The run's other models (the ``[oracle]`` classifier, the ``[svae]``)
    as checkpoint bytes, and the ``[detect]`` config (``None`` when off)."""

    oracle: _ModelPayload | None
    svae: _ModelPayload | None
    detect: Any


def _judges_payload(inputs: RunInputs, cfg: RunConfig) -> _JudgesPayload:
    oracle = svae = None
    if inputs.oracle is not None and inputs.oracle_checkpoint is not None:
        oracle = _checkpoint_payload(
            inputs.oracle_checkpoint,
            inputs.oracle_meta.architecture,
            inputs.oracle_meta.weights_sha256,
        )
    if inputs.svae is not None and inputs.svae_checkpoint is not None:
        assert inputs.svae_meta is not None
        svae = _checkpoint_payload(
            inputs.svae_checkpoint, "svae", str(inputs.svae_meta.get("weights_sha256"))
        )
    return _JudgesPayload(oracle, svae, inputs.resources(cfg)["detect"])


_WORKER_MODEL: dict[tuple[str, str], Any] = {}
_WORKER_JUDGES: dict[tuple[str, str], dict[str, Any]] = {}


def _from_payload(payload: _ModelPayload, load: Callable[[Path], Any]) -> Any:
    """``load(path)`` of the checkpoint in ``payload``, written for the call
    into a temporary directory (weights and sidecar side by side)."""
    with tempfile.TemporaryDirectory(prefix="labelflip-model-") as tmp:
        (Path(tmp) / "model.safetensors").write_bytes(payload.weights)
        (Path(tmp) / "model.json").write_bytes(payload.sidecar)
        return load(Path(tmp) / "model.safetensors")


def _worker_resources(box: list, ref_id: str, device: torch.device) -> dict[str, Any]:
    """The run's oracle, SVAE and detector config in this worker process
    (``box[1]``, object id ``ref_id``), loaded on first use and kept, like
    :func:`_worker_classifier`."""
    key = (ref_id, str(device))
    res = _WORKER_JUDGES.get(key)
    if res is None:
        import ray

        from labelflip.models import load_checkpoint
        from labelflip.models.svae import load_svae

        payload: _JudgesPayload = ray.get(box[1])
        res = {"oracle": None, "svae": None, "detect": payload.detect}
        if payload.oracle is not None:
            res["oracle"] = _from_payload(
                payload.oracle, lambda p: load_checkpoint(p, device=device)
            )[0]
        if payload.svae is not None:
            res["svae"] = _from_payload(payload.svae, lambda p: load_svae(p, device=device))[0]
        _WORKER_JUDGES.clear()
        _WORKER_JUDGES[key] = res
    return res


def _worker_classifier(box: list, ref_id: str, device: torch.device) -> Any:
    """The run's classifier in this worker process: loaded from the object
    store's checkpoint bytes (``box[0]``, object id ``ref_id``) on first use,
    then kept for the worker's later shards (one model at a time)."""
    key = (ref_id, str(device))
    clf = _WORKER_MODEL.get(key)
    if clf is None:
        import ray

        from labelflip.models import load_checkpoint

        payload: _ModelPayload = ray.get(box[0])
        clf, meta = _from_payload(
            payload, lambda p: load_checkpoint(p, device=device, trust_code=payload.trust)
        )
        if meta.weights_sha256 != payload.sha256:  # cannot happen: the driver's own files
            raise LabelflipError("the model that reached this worker is not the run's model")
        _WORKER_MODEL.clear()
        _WORKER_MODEL[key] = clf
    return clf


def _attack_shard(
    box: list,
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
    spec: JobSpec,
    start: int,
    stop: int,
    batch_size: int,
    seed: int,
    device_type: str,
    distances: dict[str, Any],
    keep: int,
) -> BatchOutput:
    """The Ray task: attack samples ``[start, stop)`` of job ``spec`` with
    :func:`labelflip.runner.attack_batch` and return the batch's records and
    the adversarials the driver needs (``keep``: all when -1, else the first
    ``keep``, for the gallery)."""
    import copy

    from labelflip.runner import attack_batch

    x_all, y_all, indices = data
    distances = copy.deepcopy(distances)  # writable: the object store's arrays are read-only
    _use_assigned_cpus()
    device = torch.device(device_type)
    clf = _worker_classifier(box, box[0].hex(), device)
    resources = _worker_resources(box, box[1].hex(), device)
    # copies: the object store's memory is read-only and shared between workers
    x = torch.from_numpy(np.array(x_all[start:stop]))
    y = torch.from_numpy(np.array(y_all[start:stop]))
    out = attack_batch(
        spec,
        clf,
        x,
        y,
        np.array(indices[start:stop]),
        start,
        batch_size,
        seed,
        device,
        distances,
        resources,
    )
    if keep >= 0:
        t = out.transition
        out = replace(
            out,
            x_adv=np.ascontiguousarray(out.x_adv[:keep]),
            transition=None if t is None else np.ascontiguousarray(t[:keep]),
        )
    return out


def _use_assigned_cpus() -> None:
    """Give torch as many threads as CPUs Ray assigned to this task (a worker
    process is reused by tasks of any size; torch reads OMP_NUM_THREADS only
    once, when the first task imports it)."""
    import ray

    try:
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    except Exception:  # outside a task
        return
    threads = max(1, int(cpus))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


# ------------------------------------------------------------------ helpers


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A one-line error, within ``timeout`` seconds, when nothing answers at a
    Ray address (``ray.init`` itself would retry for ever)."""
    target: str | None = address
    if address.startswith("ray://"):
        target = address[len("ray://") :]
    elif address == "auto":
        try:  # where `ray start` on this machine recorded its address
            from ray._private.services import canonicalize_bootstrap_address

            target = canonicalize_bootstrap_address("auto")
        except ConnectionError:
            raise LabelflipError(
                "--address auto: no Ray cluster runs on this machine (start one with: "
                "ray start --head), or drop --address to start a local Ray instance"
            ) from None
        except Exception:  # a Ray version without this helper: let ray.init decide
            return
        if target is None:
            return
    assert target is not None
    host, sep, port = target.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit():
        raise LabelflipError(
            f"--address {address}: expected HOST:PORT (e.g. 10.0.0.1:6379), auto or ray://HOST:PORT"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise LabelflipError(
            f"cannot connect to the Ray cluster at {address}: {host}:{port} does not answer "
            f"({why}); is 'ray start --head' running there, and the port open?"
        ) from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return " ".join(text.splitlines()[0].split())[:300]


def _reason(e: BaseException) -> str:
    """One line on why a shard failed: the worker's exception, or Ray's."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {_first_line(cause)}"
    return f"{type(e).__name__}: {_first_line(e)}"


def _fmt_resources(res: dict[str, float]) -> str:
    return ", ".join(f"{res.get(k, 0):g} {k}" for k in ("CPU", "GPU")) + f", {_nodes()} nodes"


def _nodes() -> int:
    try:
        import ray

        return sum(1 for node in ray.nodes() if node.get("Alive"))
    except Exception:
        return 0


# ------------------------------------------------------------------ watchdog

# Runs beside a driver that started a local Ray instance. If the driver dies
# without shutting Ray down (SIGKILL, OOM), Ray's own processes stop within
# seconds, but its dashboard and runtime-env agents wait 60 s trying to report
# to the dead GCS. On EOF without "done", the watchdog ends every process that
# holds a file of the instance's session directory open (never the driver).
_WATCHDOG = r"""
import os, signal, sys, time
session, driver = sys.argv[1].rstrip("/") + "/", int(sys.argv[2])
if sys.stdin.buffer.read() == b"done\n":
    sys.exit(0)
def holders():
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) in (os.getpid(), driver):
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}").startswith(session) for fd in fds):
                out.append(int(pid))
        except OSError:
            pass
    return out
for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 0.0)):
    pids = holders()
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    deadline = time.monotonic() + wait
    while pids and time.monotonic() < deadline:
        time.sleep(0.1)
        pids = holders()
    if not pids:
        break
"""


def _start_watchdog(ctx: Any) -> subprocess.Popen | None:
    """Start the watchdog of a local Ray instance (Linux only; ``None`` elsewhere)."""
    session = (getattr(ctx, "address_info", None) or {}).get("session_dir")
    if not session or not os.path.isdir("/proc"):
        return None
    try:
        return subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(session), str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C of the terminal leaves it to do its job
        )
    except OSError:
        return None


def _stop_watchdog(proc: subprocess.Popen) -> None:
    """A clean shutdown: tell the watchdog there is nothing to clean up."""
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"done\n")
        proc.stdin.close()
        proc.wait(timeout=5)
    except (OSError, subprocess.TimeoutExpired, AssertionError):
        proc.kill()

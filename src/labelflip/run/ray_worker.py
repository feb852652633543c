"""The worker side of the Ray executor (:mod:`labelflip.run.ray`): what
travels through Ray's object store (the model, the oracle and the SVAE as
checkpoint bytes, verified on load), the task that computes one shard, and
small helpers (reachability of an address, failure reasons, the watchdog of
a local Ray instance)."""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labelflip.config import DetectConfig, JobSpec
from labelflip.errors import LabelflipError, os_error
from labelflip.run.plan import RunPlan
from labelflip.run.seeds import SeedTree
from labelflip.run.step import BatchOutput, Judges, attack_batch, plan_job


@dataclass(frozen=True)
class _ModelPayload:
    """A checkpoint's bytes (weights and JSON sidecar), what user code to trust
    and the weights' SHA-256, put once into Ray's object store."""

    weights: bytes
    sidecar: bytes
    trust: str | None
    sha256: str


def _model_payload(plan: RunPlan) -> _ModelPayload:
    m = plan.model
    return _checkpoint_payload(m.checkpoint, m.meta.architecture, m.meta.weights_sha256)


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
        raise os_error(f"cannot read checkpoint {weights}", e) from None


@dataclass(frozen=True)
class _JudgesPayload:
    """The run's other models (the ``[oracle]`` classifier, the ``[svae]``)
    as checkpoint bytes, and the ``[detect]`` config (``None`` when off)."""

    oracle: _ModelPayload | None
    svae: _ModelPayload | None
    detect: DetectConfig | None


def _judges_payload(plan: RunPlan) -> _JudgesPayload:
    oracle = svae = None
    if plan.oracle is not None:
        o = plan.oracle
        oracle = _checkpoint_payload(o.checkpoint, o.meta.architecture, o.meta.weights_sha256)
    if plan.svae is not None:
        sv = plan.svae
        svae = _checkpoint_payload(sv.checkpoint, "svae", str(sv.meta.get("weights_sha256")))
    return _JudgesPayload(oracle, svae, plan.judges().detect)


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
    :func:`labelflip.run.step.attack_batch` and return the batch's records and
    the adversarials the driver needs (``keep``: all when -1, else the first
    ``keep``, for the gallery)."""
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
        plan_job(spec),
        clf,
        x,
        y,
        np.array(indices[start:stop]),
        start,
        batch_size,
        SeedTree(seed),
        device,
        distances,
        {"svae": resources["svae"]},
        Judges(oracle=resources["oracle"], detect=resources["detect"]),
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

"""The Ray executor (``labelflip run --executor ray``): the same records as the
local executor, a driver killed mid-run that resumes to them (and leaves no
Ray process behind), failed shards retried a bounded number of times and
reported, and one-line errors for bad options."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")

from labelflip.cli import main  # noqa: E402
from labelflip.config import load_config  # noqa: E402
from labelflip.errors import LabelflipError  # noqa: E402
from labelflip.run import run  # noqa: E402
from labelflip.run.ray import NEEDS_RAY, RayExecutor, RayOptions  # noqa: E402
from labelflip.store import RunStore  # noqa: E402

CONFIG = """
name = "ray-test"
seed = 3
batch_size = 6
white_noise = 50
gallery = 4
save_adversarials = true

[data]
dataset = "digits"
samples = 60
selection = "random"

[model]
arch = "digits-cnn"
epochs = 2

[similarity]
confusion = true
hierarchy = "none"

[[attacks]]
attack = "fgsm"
eps = 0.1

[[attacks]]
attack = "pgd"
norm = "linf"
eps = [0.05, 0.2]
steps = 20

[[attacks]]
attack = "deepfool"

[[attacks]]
attack = "fgsm"
eps = 0.2
target = ["random", { strategy = "nearest", distance = "confusion" }]
"""

JOBS = 6
N = 60
TOTAL = JOBS * N
SHARDS = JOBS * N // 6


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A config, a model cache shared by all runs, and a local Ray instance
    with 2 CPUs for the in-process runs."""
    root = tmp_path_factory.mktemp("ray")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like each shard: float reductions may differ between 1 and 2
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LABELFLIP_CACHE", str(root / "cache"))
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.delenv("RAY_ADDRESS", raising=False)
        cfg_path = root / "run.toml"
        cfg_path.write_text(CONFIG)
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
        try:
            yield cfg_path
        finally:
            ray.shutdown()
            torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(env, tmp_path_factory) -> Path:
    """The local executor's run of the config."""
    out = tmp_path_factory.mktemp("ref") / "local"
    return run(load_config(env), run_dir=out, progress=False).run_dir


def _records(run_dir: Path) -> dict[str, np.ndarray]:
    with RunStore.open(run_dir) as store:
        rec = store.records()
    rec.pop("seconds")  # wall time differs between runs
    return rec


def _assert_same_run(got: Path, ref: Path) -> None:
    a, b = _records(ref), _records(got)
    assert len(b["sample"]) == TOTAL
    for key in a:
        np.testing.assert_array_equal(b[key], a[key], err_msg=key)
    with RunStore.open(ref) as s1, RunStore.open(got) as s2:
        for job in s1.jobs():
            assert s2.job_status(job.job_id) == "done"
            np.testing.assert_array_equal(
                s2.adversarials(job.job_id, range(N)), s1.adversarials(job.job_id, range(N))
            )
        m1, m2 = s1.all_meta(), s2.all_meta()
    for key in ("samples", "white_noise_pred", "model"):
        assert m1[key] == m2[key], key
    assert [(d["name"], d["matrix"]) for d in m1["distances"]] == [
        (d["name"], d["matrix"]) for d in m2["distances"]
    ]  # their "info" holds timings
    with np.load(ref / "gallery.npz") as g1, np.load(got / "gallery.npz") as g2:
        assert sorted(g1.files) == sorted(g2.files)
        for f in g1.files:
            np.testing.assert_array_equal(g1[f], g2[f], err_msg=f)


def _count(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _descendants(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (Linux /proc; empty elsewhere)."""
    out: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                kids = Path(f"/proc/{p}/task/{t}/children").read_text().split()
            except OSError:
                continue
            for k in map(int, kids):
                if k not in out:
                    out.add(k)
                    todo.append(k)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited


def test_ray_executor_records_equal_the_local_executor(env, reference, tmp_path, capsys):
    out = tmp_path / "ray"
    rc = main(["run", str(env), "--executor", "ray", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert f"ray: {SHARDS} of {SHARDS} shards to attack, 2 at once" in err
    _assert_same_run(out, reference)
    assert (out / "report" / "report.html").is_file()


def test_sigkill_driver_mid_run_then_resume_equals_local_run(env, reference, tmp_path, capsys):
    killed = tmp_path / "killed"
    db = killed / "records.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-m", "labelflip.cli", "run", str(env), "--out", str(killed)]
        + ["--executor", "ray", "--ray-cpus", "2", "--no-progress", "--no-report"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    ray_procs: set[int] = set()
    while time.monotonic() < deadline and proc.poll() is None:
        ray_procs |= _descendants(proc.pid)
        if _count(db) >= TOTAL // 4:
            break
        time.sleep(0.005)
    assert proc.poll() is None, proc.communicate()
    ray_procs |= _descendants(proc.pid)  # its local Ray instance: GCS, raylet, workers, agents
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    after_kill = _count(db)
    assert 0 < after_kill < TOTAL, after_kill

    # the instance the killed driver started does not outlive it (its watchdog ends it)
    if Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists():
        assert ray_procs
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(p) for p in ray_procs):
            time.sleep(0.2)
        left = [p for p in ray_procs if _alive(p)]
        assert not left, [Path(f"/proc/{p}/cmdline").read_bytes()[:80] for p in left]

    rc = main(["run", "--resume", str(killed), "--executor", "ray", "--no-progress", "--no-report"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "resuming" in err
    done_shards = after_kill // 6
    assert f"ray: {SHARDS - done_shards} of {SHARDS} shards to attack" in err
    _assert_same_run(killed, reference)

    # resuming a finished run submits nothing and duplicates nothing
    rc = main(["run", "--resume", str(killed), "--executor", "ray", "--no-progress", "--no-report"])
    assert rc == 0, capsys.readouterr().err
    assert _count(db) == TOTAL


def test_failed_shards_are_retried_then_reported_and_resumable(env, reference, tmp_path, capsys):
    marks = tmp_path / "marks"
    marks.mkdir()

    def flaky(box, data, spec, start, stop, *rest):
        from labelflip.run.ray_worker import _attack_shard

        if spec.job_id == "deepfool" and start == 12:
            raise RuntimeError("broken for good")
        if spec.job_id == "fgsm-eps0.1" and start == 6 and not (marks / "once").exists():
            (marks / "once").write_text("failed once")
            raise RuntimeError("broken once")
        return _attack_shard(box, data, spec, start, stop, *rest)

    executor = RayExecutor(RayOptions(max_retries=2))
    executor.shard_task = flaky
    out = tmp_path / "failing"
    with pytest.raises(LabelflipError) as info:
        run(load_config(env), run_dir=out, progress=False, executor=executor)
    msg = str(info.value)
    assert "\n" not in msg
    assert f"1 of {SHARDS} shards failed 3 times each and were not recorded" in msg
    assert "deepfool samples 12-17 (RuntimeError: broken for good)" in msg
    assert f"the {SHARDS - 1} finished shards are kept" in msg
    assert "labelflip run --resume" in msg
    err = capsys.readouterr().err
    assert "samples 6-11 failed (RuntimeError: broken once); retry 1 of 2" in err
    assert err.count("deepfool samples 12-17 failed") == 3

    assert _count(out / "records.sqlite") == TOTAL - 6
    with RunStore.open(out) as store:
        status = {j.job_id: store.job_status(j.job_id) for j in store.jobs()}
        assert store.meta("finished") is None
    assert status.pop("deepfool") == "pending"
    assert set(status.values()) == {"done"}

    # the local executor resumes what Ray left, to the same records
    run(None, resume=out, progress=False)
    _assert_same_run(out, reference)


def test_bad_executor_options_are_one_line_errors(env, tmp_path, capsys, monkeypatch):
    out = tmp_path / "never"

    def fails(*args: str) -> str:
        rc = main(["run", str(env), "--out", str(out), "--no-progress", *args])
        err = capsys.readouterr().err
        assert rc == 1, err
        assert err.startswith("labelflip: error: ") and err.count("\n") == 1, err
        assert not out.exists()
        return err

    assert "--address needs the Ray executor" in fails("--address", "127.0.0.1:6379")
    assert "--ray-cpus, --max-retries need" in fails("--ray-cpus", "2", "--max-retries", "1")
    assert "--ray-cpus must be >= 1" in fails("--executor", "ray", "--ray-cpus", "0")
    assert "does not go with --address" in fails(
        "--executor", "ray", "--ray-cpus", "2", "--address", "auto"
    )
    assert "--max-retries must be >= 0" in fails("--executor", "ray", "--max-retries", "-1")
    assert "--gpus-per-task must be > 0" in fails("--executor", "ray", "--gpus-per-task", "0")
    bad = tmp_path / "bad.toml"
    bad.write_text(CONFIG.replace('name = "ray-test"', 'name = "x"\nexecutor = "dask"'))
    rc = main(["run", str(bad), "--out", str(out)])
    assert rc == 1 and "executor must be one of local, ray" in capsys.readouterr().err

    with monkeypatch.context() as m:
        m.setitem(sys.modules, "ray", None)  # as if Ray were not installed
        assert fails("--executor", "ray").strip() == f"labelflip: error: {NEEDS_RAY}"
        with_toml = tmp_path / "ray.toml"
        with_toml.write_text(CONFIG.replace('name = "ray-test"', 'name = "x"\nexecutor = "ray"'))
        rc = main(["run", str(with_toml), "--out", str(out), "--no-progress"])
        assert rc == 1 and NEEDS_RAY in capsys.readouterr().err

    # an address where nothing answers fails at once (ray.init would retry for ever)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "labelflip.cli", "run", str(env), "--out", str(out)]
        + ["--executor", "ray", "--address", f"127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert f"cannot connect to the Ray cluster at 127.0.0.1:{port}" in proc.stderr
    assert time.monotonic() - t < 30
    assert not out.exists()


TYPE_I_CONFIG = """
name = "ray-type-i"
seed = 1
batch_size = 12
white_noise = 0
gallery = 4

[data]
dataset = "digits"
samples = 24

[model]
arch = "digits-cnn"
epochs = 2

[oracle]
arch = "digits-cnn"
epochs = 2

[svae]
epochs = 40
lr = 3e-3
hidden = 64

[detect]
feature_squeezing = true

[similarity]
perceptual = false

[[attacks]]
attack = "type-i"
target = "next"
steps = 40
lr = 0.05
k_max = 1.0
eta = 0.1

[[attacks]]
attack = "fgsm"
eps = 0.2
"""


def test_ray_workers_get_the_oracle_svae_and_detector(env, tmp_path, capsys):
    """A Type I run with an oracle and feature squeezing: Ray's shards load
    the SVAE and the oracle from the object store and give the local run's
    records, gallery and transition images."""
    cfg_path = tmp_path / "type-i.toml"
    cfg_path.write_text(TYPE_I_CONFIG)
    local = run(load_config(cfg_path), run_dir=tmp_path / "local", progress=False).run_dir
    out = tmp_path / "ray"
    rc = main(["run", str(cfg_path), "--executor", "ray", "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    a, b = _records(local), _records(out)
    assert (a["oracle_pred"] >= 0).all() and np.isfinite(a["squeeze"]).all()
    assert (a["attacker_pred"][a["job_id"] == "fgsm-eps0.2"] == -1).all()
    assert (a["attacker_pred"][a["job_id"] != "fgsm-eps0.2"] >= 0).all()
    for key in a:
        np.testing.assert_array_equal(b[key], a[key], err_msg=key)
    with np.load(local / "gallery.npz") as g1, np.load(out / "gallery.npz") as g2:
        assert sorted(g1.files) == sorted(g2.files)
        assert any(f.startswith("transition__") for f in g1.files)
        for f in g1.files:
            np.testing.assert_array_equal(g1[f], g2[f], err_msg=f)

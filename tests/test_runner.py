"""The experiment runner: records per (job, sample), deterministic batches,
and a run killed with SIGKILL that resumes to exactly the records of an
uninterrupted run."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from labelflip.config import load_config
from labelflip.errors import LabelflipError
from labelflip.run import SeedTree, batch_seed, run, select_samples
from labelflip.store import RunStore

CONFIG = """
name = "resume-test"
seed = 3
batch_size = 6
white_noise = 50
gallery = 4

[data]
dataset = "digits"
samples = 60
selection = "random"

[model]
arch = "digits-cnn"
epochs = 2

[[attacks]]
attack = "fgsm"
eps = 0.1

[[attacks]]
attack = "pgd"
norm = "linf"
eps = [0.05, 0.1, 0.2]
steps = 20

[[attacks]]
attack = "deepfool"
"""

TOTAL = 5 * 60  # jobs x samples


@pytest.fixture()
def env(tmp_path, monkeypatch, one_thread):
    """A config file, a model cache shared by in-process and subprocess runs,
    and one torch thread in the subprocess runs and in this process alike."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("LABELFLIP_CACHE", str(cache))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cfg_path = tmp_path / "run.toml"
    cfg_path.write_text(CONFIG)
    return cfg_path


def _records(run_dir: Path) -> dict[str, np.ndarray]:
    with RunStore.open(run_dir) as store:
        rec = store.records()
    rec.pop("seconds")  # wall time differs between runs
    return rec


def _cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "labelflip.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def _count(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def test_run_writes_one_record_per_job_and_sample(env, tmp_path):
    cfg = load_config(env)
    out = run(cfg, run_dir=tmp_path / "a", progress=False)
    with RunStore.open(out.run_dir) as store:
        rec = store.records()
        jobs = store.jobs()
        meta = store.all_meta()
        assert all(store.job_status(j.job_id) == "done" for j in jobs)
    assert [j.job_id for j in jobs] == [
        "fgsm-eps0.1",
        "pgd-linf-eps0.05-steps20",
        "pgd-linf-eps0.1-steps20",
        "pgd-linf-eps0.2-steps20",
        "deepfool",
    ]
    assert len(rec["sample"]) == TOTAL
    for j in jobs:
        sel = rec["job_id"] == j.job_id
        assert rec["sample"][sel].tolist() == list(range(60))
    assert rec["index"][:60].tolist() == meta["samples"]
    assert meta["samples"] == select_samples(359, cfg.data, SeedTree(cfg.seed)).tolist()
    assert len(meta["white_noise_pred"]) == 50
    assert meta["class_names"] == [str(i) for i in range(10)]
    # larger budgets never make PGD weaker on the same samples
    rates = [rec["success"][rec["job_id"] == j.job_id].mean() for j in jobs[1:4]]
    assert rates == sorted(rates)
    assert (out.run_dir / "gallery.npz").is_file()
    with np.load(out.run_dir / "gallery.npz", allow_pickle=False) as g:
        # the gallery's candidates: the first batch (6 rows), the report picks 4 of them
        assert g["x"].shape == (6, 1, 8, 8)
        assert g["adv__deepfool"].shape == (6, 1, 8, 8)


def test_sigkill_mid_run_then_resume_equals_uninterrupted_run(env, tmp_path):
    cfg = load_config(env)
    reference = run(cfg, run_dir=tmp_path / "ref", progress=False).run_dir

    killed_dir = tmp_path / "killed"
    db = killed_dir / "records.sqlite"
    proc = _cli("run", str(env), "--out", str(killed_dir), "--no-progress", "--no-report")
    deadline = time.monotonic() + 120
    at_kill = 0
    while time.monotonic() < deadline and proc.poll() is None:
        at_kill = _count(db)
        if at_kill >= TOTAL // 3:
            break
        time.sleep(0.005)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    after_kill = _count(db)
    assert 0 < after_kill < TOTAL, after_kill  # killed mid-way

    resumed = _cli("run", "--resume", str(killed_dir), "--no-progress", "--no-report")
    lock = killed_dir / ".lock"  # the resuming process holds the run ...
    while time.monotonic() < deadline + 120 and resumed.poll() is None:
        if lock.is_file() and lock.read_text().strip() == str(resumed.pid):
            break
        time.sleep(0.005)
    resumed.send_signal(signal.SIGSTOP)  # (held still, whatever this machine's speed)
    try:
        rival = _cli("run", "--resume", str(killed_dir), "--no-progress", "--no-report")
        _, rival_err = rival.communicate(timeout=300)  # ... so a second one is refused at once
    finally:
        resumed.send_signal(signal.SIGCONT)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "resuming" in err
    assert rival.returncode == 1, rival_err
    assert rival_err.strip() == (
        f"labelflip: error: run {killed_dir} is in use by another process "
        f"(pid {resumed.pid}); wait for it to finish, or stop it, before resuming"
    )

    ref, got = _records(reference), _records(killed_dir)
    assert len(got["sample"]) == TOTAL
    for key in ref:
        np.testing.assert_array_equal(got[key], ref[key], err_msg=key)

    # the run recorded the digest of its samples' images and labels ...
    from labelflip.data import load_dataset
    from labelflip.run.setup import samples_digest

    data = load_dataset("digits", "test")
    with RunStore.open(killed_dir) as store:
        meta = store.all_meta()
    chosen = torch.as_tensor(meta["samples"])
    assert meta["samples_sha256"] == samples_digest(data.x[chosen], data.y[chosen])
    assert meta["torch_threads"] == 1

    # resuming a finished run redoes nothing and duplicates nothing
    again = _cli("run", "--resume", str(killed_dir), "--no-progress", "--no-report")
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert _count(db) == TOTAL

    # ... and refuses to go on when the images it sees are not those
    with RunStore.open(killed_dir) as store:
        store.set_meta("samples_sha256", "0" * 64)
    changed = _cli("run", "--resume", str(killed_dir), "--no-progress", "--no-report")
    _, err = changed.communicate(timeout=300)
    assert changed.returncode == 1 and "the images or labels of its samples changed" in err


def test_batch_seeds_are_stable_and_distinct():
    assert batch_seed(0, "pgd", 1) == batch_seed(0, "pgd", 1)
    seeds = {batch_seed(s, j, b) for s in (0, 1) for j in ("a", "b") for b in range(3)}
    assert len(seeds) == 12


def test_refuses_existing_run_dir_and_bad_resume(env, tmp_path):
    cfg = load_config(env)
    d = tmp_path / "x"
    d.mkdir()
    (d / "something").write_text("keep me")
    with pytest.raises(LabelflipError, match="already exists and is not empty"):
        run(cfg, run_dir=d, progress=False)
    assert (d / "something").read_text() == "keep me"
    with pytest.raises(LabelflipError, match="not a run directory"):
        run(None, resume=tmp_path / "nope", progress=False)


def test_sample_range_outside_split_is_an_error(env, tmp_path):
    text = CONFIG.replace('selection = "random"', 'selection = "random"\nstart = 300\nstop = 400')
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(LabelflipError, match=r"index range \[300, 400\) is outside"):
        run(load_config(p), run_dir=tmp_path / "b", progress=False)


def test_cli_bad_config_is_one_line(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('name = "x"\n[model]\narch = "digits-cnn"\n[[attacks]]\nattack = "pgd"\nepz = 1\n')
    proc = _cli("run", str(p), "--out", str(tmp_path / "o"))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert err.strip().count("\n") == 0, err
    assert err.startswith("labelflip: error:") and "did you mean 'eps'" in err
    assert not (tmp_path / "o").exists()


def test_adversarials_kept_losslessly_and_exported(env, tmp_path):
    import csv

    import pyarrow.parquet as pq

    text = CONFIG.replace("gallery = 4", "gallery = 4\nsave_adversarials = true")
    p = tmp_path / "adv.toml"
    p.write_text(text.split("[[attacks]]")[0] + '[[attacks]]\nattack = "deepfool"\n')
    out = run(load_config(p), run_dir=tmp_path / "adv", progress=False)
    with RunStore.open(out.run_dir) as store:
        x_adv = store.adversarials("deepfool", list(range(60)))
        rec = store.records("deepfool")
    with np.load(out.run_dir / "gallery.npz", allow_pickle=False) as g:
        np.testing.assert_array_equal(x_adv[:6], g["adv__deepfool"])  # bit-exact float32
        l2 = np.sqrt(((x_adv[:6].astype(np.float64) - g["x"]) ** 2).reshape(6, -1).sum(1))
    np.testing.assert_allclose(l2, rec["l2"][:6], rtol=1e-6)

    for fmt in ("csv", "parquet"):
        proc = _cli("export", str(out.run_dir), "--format", fmt)
        stdout, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        path = Path(stdout.strip())
        assert path == out.run_dir / f"records.{fmt}"
        if fmt == "csv":
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
            assert len(rows) == 60 and rows[0]["dataset"] == "digits"
            assert [int(r["adv_pred"]) for r in rows] == rec["adv_pred"].tolist()
        else:
            table = pq.read_table(path)
            assert table.num_rows == 60
            assert table.column("l2").to_pylist() == rec["l2"].tolist()

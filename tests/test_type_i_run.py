"""Type I attacks through the runner, store and report (digits, built in):
an independent oracle judges every example, an SVAE trained on first use
drives the ``type-i`` jobs, feature squeezing scores every example, the
report shows the label-stay matrix, both judgements, the detector table and
a start → transition → result gallery, and a run killed mid-way resumes to
the same records."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from labelflip.analysis.label_stay import label_stay_matrix
from labelflip.config import load_config, parse_config
from labelflip.errors import LabelflipError
from labelflip.models import load_checkpoint
from labelflip.report import summarize, write_report
from labelflip.run import run
from labelflip.store import RunStore

CONFIG = """
name = "type-i-digits"
seed = 0
batch_size = 24
gallery = 6
white_noise = 0
save_adversarials = true

[data]
dataset = "digits"
samples = 72

[model]
arch = "digits-cnn"
epochs = 3

[oracle]
arch = "digits-cnn"
epochs = 3

[svae]
epochs = 150
lr = 2e-3
hidden = 128

[detect]
feature_squeezing = true

[similarity]
perceptual = false

[[attacks]]
attack = "type-i"
target = "next"
steps = 120
lr = 0.05
k_max = 1.0
eta = 0.1

[[attacks]]
attack = "pgd"
eps = 0.2
steps = 5

[[attacks]]
attack = "latent-type-i"
target = "next"
k = 1.0
eps = 0.5
steps = 60
"""

TYPE_I = "type-i-to-next-steps120-lr0.05-k_max1-eta0.1"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The config file and a model cache shared by the runs of this module."""
    tmp = tmp_path_factory.mktemp("type-i-run")
    mp = pytest.MonkeyPatch()
    mp.setenv("LABELFLIP_CACHE", str(tmp / "cache"))
    path = tmp / "run.toml"
    path.write_text(CONFIG)
    yield tmp, path
    mp.undo()


@pytest.fixture(scope="module")
def finished(env):
    tmp, path = env
    return run(load_config(path), config_text=CONFIG, run_dir=tmp / "run", progress=False).run_dir


def test_records_hold_both_judgements_and_squeeze_scores(finished):
    with RunStore.open(finished) as store:
        meta = store.all_meta()
        ti, pgd = store.records(TYPE_I), store.records("pgd-eps0.2-steps5")
        x_adv = store.adversarials(TYPE_I, ti["sample"])
    assert meta["oracle"]["sha256"] != meta["model"]["sha256"]
    assert meta["svae"]["f2_clean_accuracy"] > 0.8  # the SVAE trained on first use is usable
    assert len(meta["oracle_clean_pred"]) == 72
    assert len(meta["detect"]["feature_squeezing"]["clean_scores"]) == 72
    # Type I success is the attack's own: f1 kept the label and f2 reached the target
    assert (ti["target"] == (ti["true"] + 1) % 10).all()
    want = (ti["adv_pred"] == ti["true"]) & (ti["attacker_pred"] == ti["target"])
    assert np.array_equal(ti["success"], want)
    assert ti["success"].mean() > 0.3
    # the oracle's column is the oracle's class of the stored adversarial example
    oracle, _ = load_checkpoint(meta["oracle"]["checkpoint"])
    assert np.array_equal(ti["oracle_pred"], oracle.predict(torch.from_numpy(x_adv)).numpy())
    assert (pgd["oracle_pred"] >= 0).all() and (pgd["attacker_pred"] == -1).all()
    for rec in (ti, pgd):
        assert np.isfinite(rec["squeeze"]).all() and (rec["squeeze"] >= 0).all()
    # Type I examples are big changes, unlike PGD's
    assert np.median(ti["l2"]) > 2 * np.median(pgd["l2"])


def test_summary_reports_the_label_stay_matrix_and_both_judges(finished):
    summary = summarize(finished, n_boot=20)
    with RunStore.open(finished) as store:
        rec = store.records(TYPE_I)
        oracle_clean = np.asarray(store.meta("oracle_clean_pred"))
    job = next(j for j in summary["jobs"] if j["job_id"] == TYPE_I)
    assert job["kind"] == "type-i" and job["type_i"]["judge"] == "oracle"
    base = (rec["clean_pred"] == rec["true"]) & (oracle_clean[rec["sample"]] == rec["true"])
    M = label_stay_matrix(rec["true"], rec["adv_pred"], rec["oracle_pred"], 10, mask=base)
    assert np.array_equal(np.asarray(job["flip_matrix"]), M)
    keeps, moved = rec["adv_pred"] == rec["true"], rec["oracle_pred"] != rec["true"]
    oracle = job["type_i"]["rates"]["oracle"]
    assert oracle["n"] == base.sum() == job["n_clean_correct"]
    assert oracle["n_success"] == (base & keeps & moved).sum() == job["n_success_clean"]
    assert oracle["n_f1_keeps"] == M.sum()
    f2 = job["type_i"]["rates"]["f2"]
    assert f2["n_targeted_success"] == (base & rec["success"]).sum()
    assert job["success_rate"] == pytest.approx(rec["success"].mean())
    # detector: the calibrated threshold flags about fpr of the clean samples
    det = summary["detect"]
    assert det["distance"] == "l2" and det["clean"]["n"] == 72
    assert det["clean"]["rate"] <= 0.05 + 1e-9
    assert job["detect"]["n"] == job["n_success_clean"]
    pgd = next(j for j in summary["jobs"] if j["attack"] == "pgd")
    assert pgd["kind"] == "type-ii" and pgd["oracle"]["n"] > 0
    latent = next(j for j in summary["jobs"] if j["attack"] == "latent-type-i")
    assert latent["kind"] == "type-i" and latent["type_i"]["rates"]["f2"]["n"] > 0
    assert 0.0 <= pgd["oracle"]["kept_true_rate"] <= 1.0


def test_report_shows_label_stay_detector_and_transition_gallery(finished):
    html = write_report(finished, n_boot=20).read_text()
    assert "Label-stay matrix" in html
    assert "Type I success judged by the independent oracle" in html
    assert "Type I success judged by the SVAE classifier f2" in html
    assert "Detector: feature squeezing" in html and "ζ = 0.251" in html
    assert "Start image, transition" in html
    assert "oracle (independent judge)" in html
    with np.load(finished / "gallery.npz", allow_pickle=False) as g:
        assert g[f"transition__{TYPE_I}"].shape == (24, 1, 8, 8)  # the first batch: candidates
        assert "transition__pgd-eps0.2-steps5" not in g.files
    csv = (finished / "report" / f"flip_matrix__{TYPE_I}.csv").read_text()
    assert csv.startswith("original \\ seen by oracle")


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "labelflip.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _count(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.1) as con:
            return con.execute("SELECT COUNT(*) FROM records").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_killed_type_i_run_resumes_to_the_same_records(env, finished, tmp_path):
    _, path = env  # the models are cached by the finished run
    killed = tmp_path / "killed"
    db = killed / "records.sqlite"
    proc = _cli("run", str(path), "--out", str(killed), "--no-progress", "--no-report")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if _count(db) >= 24:  # at least one committed Type I batch
            break
        time.sleep(0.005)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 0 < _count(db) < 3 * 72
    resumed = _cli("run", "--resume", str(killed), "--no-progress", "--no-report")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    with RunStore.open(finished) as a, RunStore.open(killed) as b:
        ref, got = a.records(), b.records()
    for key in ref:
        if key != "seconds":
            np.testing.assert_array_equal(got[key], ref[key], err_msg=key)
    with np.load(killed / "gallery.npz", allow_pickle=False) as g1:
        with np.load(finished / "gallery.npz", allow_pickle=False) as g2:
            assert np.array_equal(g1[f"transition__{TYPE_I}"], g2[f"transition__{TYPE_I}"])


def test_resume_refuses_a_changed_oracle(env, finished, tmp_path):
    import shutil

    tmp, _ = env
    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    with RunStore.open(copy) as store:
        oracle = dict(store.meta("oracle"))
        store.set_meta("oracle", {**oracle, "sha256": "0" * 64})
    with pytest.raises(LabelflipError, match="the oracle changed since the run started"):
        run(None, resume=copy, progress=False)


def test_oracle_that_is_the_model_itself_is_refused(env, finished, tmp_path):
    with RunStore.open(finished) as store:
        model = store.meta("model")["checkpoint"]
    text = CONFIG.replace(
        '[oracle]\narch = "digits-cnn"\nepochs = 3', f'[oracle]\ncheckpoint = "{model}"'
    )
    cfg = parse_config(__import__("tomllib").loads(text), source="t")
    with pytest.raises(LabelflipError, match="is the attacked model itself"):
        run(cfg, run_dir=tmp_path / "same", progress=False)
    assert not (tmp_path / "same").exists()  # nothing made before the check


@pytest.mark.parametrize(
    "change,match",
    [
        ({"svae": None}, r"attack #1 \(type-i\) needs an \[svae\] table"),
        ({"oracle": {"arch": "digits-cnn", "checkpoint": "x"}}, r"\[oracle\] needs exactly one"),
        ({"oracle": {"checkpoint": "x", "seed": 1}}, r"\[oracle\] epochs and seed only go"),
        ({"oracle": {"arch": "digits-cnm"}}, r"\[oracle\] unknown architecture"),
        ({"svae": {"checkpoint": "x", "epochs": 3}}, r"\[svae\] gives a checkpoint and training"),
        ({"svae": {"epochs": 0}}, r"\[svae\] SVAE epochs must be >= 1"),
        ({"svae": {"epoch": 3}}, r"\[svae\]: unknown key 'epoch'; did you mean 'epochs'"),
        ({"detect": {"distance": "l3"}}, r"\[detect\]: distance must be one of l1, l2"),
        ({"detect": {"squeezers": ["blur"]}}, r"\[detect\]: unknown squeezer 'blur'"),
        ({"detect": {"fpr": 1.5}}, r"\[detect\]: fpr must be in \(0, 1\)"),
        ({"detect": {"thresholds": []}}, r"'thresholds' must be a non-empty list"),
    ],
)
def test_bad_type_i_configs_fail_in_one_line(change, match):
    import tomllib

    data = tomllib.loads(CONFIG)
    for key, value in change.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    with pytest.raises(LabelflipError, match=match) as e:
        parse_config(data, source="cfg")
    assert "\n" not in str(e.value)


def test_config_round_trips_through_json(env):
    from labelflip.config import config_from_json

    _, path = env
    cfg = load_config(path)
    import json

    again = config_from_json(json.dumps(cfg.to_dict()), "x")
    assert again == cfg
    assert again.detect.thresholds == (0.2510, 0.6089, 0.9353)
    assert again.svae is not None and again.svae.training() == {
        "epochs": 150,
        "lr": 2e-3,
        "hidden": 128,
    }


def test_cli_table_says_what_type_i_success_means(finished, capsys):
    from labelflip.cli import main

    assert main(["report", str(finished)]) == 0
    out = capsys.readouterr().out
    assert "Type I rows: success = the attack's own verdict" in out
    assert "judged by the independent oracle" in out

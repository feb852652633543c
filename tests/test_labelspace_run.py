"""Label space in a run: class-distance matrices saved with the run, target
strategies driving targeted attacks (LabelFool, PGD), and the report's
label-space section."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from labelflip import analysis
from labelflip.config import load_config, parse_config
from labelflip.errors import LabelflipError
from labelflip.models import load_checkpoint
from labelflip.report import summarize, write_report
from labelflip.run import batch_seed, run
from labelflip.similarity import ClassDistance
from labelflip.store import RunStore
from labelflip.targets import choose_targets

# even and odd digits: a user-supplied hierarchy file (parent-map form)
HIERARCHY = {"parents": {str(d): ("even" if d % 2 == 0 else "odd") for d in range(10)}}

CONFIG = """
name = "labelspace-test"
seed = 1
batch_size = 20
white_noise = 0
gallery = 2

[data]
dataset = "digits"
samples = 40
selection = "random"

[model]
arch = "digits-cnn"
epochs = 3

[similarity]
per_class = 40
hierarchy = "{hierarchy}"

[[attacks]]
attack = "deepfool"

[[attacks]]
attack = "labelfool"
target = ["labelfool", "random", {{ strategy = "nearest", distance = "semantic" }}]

[[attacks]]
attack = "pgd"
eps = 0.3
steps = 10
target = "easiest"
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("labelspace")
    mp = pytest.MonkeyPatch()
    mp.setenv("LABELFLIP_CACHE", str(tmp / "cache"))
    (tmp / "digits.json").write_text(json.dumps(HIERARCHY))
    path = tmp / "run.toml"
    path.write_text(CONFIG.format(hierarchy=(tmp / "digits.json").as_posix()))
    cfg = load_config(path)
    outcome = run(cfg, run_dir=tmp / "run", progress=False)
    yield cfg, outcome.run_dir
    mp.undo()


def test_job_ids_and_stored_target_strategies(finished):
    cfg, run_dir = finished
    with RunStore.open(run_dir) as store:
        jobs = {j.job_id: j for j in store.jobs()}
    assert list(jobs) == [
        "deepfool",
        "labelfool-to-labelfool",
        "labelfool-to-random",
        "labelfool-to-nearest-semantic",
        "pgd-eps0.3-steps10-to-easiest",
    ]
    assert "target" not in jobs["deepfool"].settings
    assert jobs["labelfool-to-labelfool"].settings["target"] == {
        "strategy": "labelfool",
        "delta1": 0.8,
        "delta2": 0.01,
        "distance": "perceptual",
    }
    assert jobs["pgd-eps0.3-steps10-to-easiest"].settings["target"] == {"strategy": "easiest"}


def test_distances_are_saved_with_the_run(finished):
    _, run_dir = finished
    with RunStore.open(run_dir) as store:
        stored = {d["name"]: ClassDistance.from_dict(d) for d in store.meta("distances")}
    assert set(stored) == {"perceptual", "semantic", "confusion"}
    perceptual = stored["perceptual"]
    assert perceptual.matrix.shape == (10, 10)
    assert perceptual.info["images"] == 400  # capped at 40 per class
    # the semantic distance of the even/odd file: 2 within a group, 4 across
    sem = stored["semantic"].matrix
    assert sem[0, 2] == 2 and sem[0, 1] == 4 and sem[3, 3] == 0


def test_targets_follow_the_strategy_and_are_recorded(finished):
    cfg, run_dir = finished
    with RunStore.open(run_dir) as store:
        meta = store.all_meta()
        rec = store.records("labelfool-to-labelfool")
        sem = store.records("labelfool-to-nearest-semantic")
        dist = {d["name"]: np.asarray(d["matrix"]) for d in meta["distances"]}
    clf, _ = load_checkpoint(meta["model"]["checkpoint"])
    from labelflip.data import load_dataset

    data = load_dataset("digits", "test")
    idx = torch.as_tensor(meta["samples"])
    x, y = data.x[idx], data.y[idx]
    with torch.no_grad():
        logits = clf(x)
    expected = choose_targets(
        "labelfool", logits, labels=y, distances=torch.as_tensor(dist["perceptual"])
    )
    assert rec["target"].tolist() == expected.tolist()
    clean = logits.argmax(1).numpy()
    assert np.all(rec["target"] != rec["true"]) and np.all(rec["target"] != clean)
    # nearest by the even/odd hierarchy: always a class of the same parity
    assert np.all(sem["target"] % 2 == sem["true"] % 2)
    assert np.all(sem["target"] != sem["true"])
    # success of a targeted job means landing on the target
    np.testing.assert_array_equal(rec["success"] == 1, rec["adv_pred"] == rec["target"])
    assert rec["success"].mean() >= 0.9


def test_random_targets_come_from_the_batch_generators(finished):
    cfg, run_dir = finished
    with RunStore.open(run_dir) as store:
        rec = store.records("labelfool-to-random")
        meta = store.all_meta()
    clf, _ = load_checkpoint(meta["model"]["checkpoint"])
    from labelflip.data import load_dataset

    data = load_dataset("digits", "test")
    idx = torch.as_tensor(meta["samples"])
    for b in range(2):
        x, y = data.x[idx[b * 20 : (b + 1) * 20]], data.y[idx[b * 20 : (b + 1) * 20]]
        gen = torch.Generator().manual_seed(batch_seed(cfg.seed, "labelfool-to-random", b))
        with torch.no_grad():
            t = choose_targets("random", clf(x), labels=y, generator=gen)
        assert rec["target"][b * 20 : (b + 1) * 20].tolist() == t.tolist()


def test_summary_and_report_label_space(finished):
    _, run_dir = finished
    summary = summarize(run_dir, n_boot=50)
    jobs = {j["job_id"]: j["label_space"] for j in summary["jobs"]}
    assert [d["name"] for d in summary["distances"]] == ["perceptual", "semantic", "confusion"]
    lf, rnd = jobs["labelfool-to-labelfool"], jobs["labelfool-to-random"]
    assert lf["strategy"] == "labelfool" and jobs["deepfool"]["strategy"] is None
    # LabelFool picks the perceptually nearest class: its flips are nearer than random ones
    assert lf["flip_distance"]["perceptual"] < rnd["flip_distance"]["perceptual"]
    assert jobs["labelfool-to-nearest-semantic"]["flip_distance"]["semantic"] == pytest.approx(
        2.0, abs=0.5
    )
    assert set(jobs["deepfool"]["flip_correlation"]) == {"perceptual", "semantic", "confusion"}
    assert lf["flip_correlation"] == {}  # correlations only for untargeted jobs
    assert 0.0 < lf["mean_sq_perturbation"] < 1.0
    html = write_report(run_dir, summary=summary).read_text()
    assert "<h2>Label space</h2>" in html and "rho vs perceptual" in html
    assert "Do flips stay within their group?" in html


def test_summary_counts_flips_within_the_hierarchys_groups(finished):
    # the user's even/odd hierarchy: the report's within-group figures equal the
    # analysis function on the job's flip matrix with each digit's parity
    _, run_dir = finished
    summary = summarize(run_dir, n_boot=50)
    semantic = [d for d in summary["distances"] if d["name"] == "semantic"][0]
    assert semantic["info"]["groups"] == ["even", "odd"] * 5
    for job in summary["jobs"]:
        got = job["label_space"]["within_group"]
        want = analysis.within_group_flips(job["flip_matrix"], ["even", "odd"] * 5)
        assert got["n_flips"] == want.n_flips and got["n_within"] == want.n_within
        assert got["expected_uniform"] == pytest.approx(want.expected_uniform)
    nearest = {j["job_id"]: j for j in summary["jobs"]}["labelfool-to-nearest-semantic"]
    g = nearest["label_space"]["within_group"]
    # targets chosen nearest in the hierarchy are of the same parity: every flip stays
    assert g["n_flips"] > 0 and g["share"] == 1.0 and g["expected_uniform"] == pytest.approx(4 / 9)
    assert (run_dir / "report" / "distance__perceptual.png").is_file()


def test_resume_reuses_the_saved_distances(finished, tmp_path, monkeypatch):
    _, run_dir = finished
    with RunStore.open(run_dir) as store:
        before = store.meta("distances")
    run(None, resume=run_dir, progress=False)
    with RunStore.open(run_dir) as store:
        assert store.meta("distances") == before


def _parse(attacks: str, similarity: str = "") -> None:
    text = f"""
[data]
dataset = "digits"
[model]
arch = "digits-cnn"
{similarity}
{attacks}
"""
    import tomllib

    parse_config(tomllib.loads(text), source="t.toml")


@pytest.mark.parametrize(
    "attacks,similarity,message",
    [
        (
            '[[attacks]]\nattack = "deepfool"\ntarget = "random"',
            "",
            "attack #1: attack 'deepfool' is untargeted; it takes no 'target'",
        ),
        ('[[attacks]]\nattack = "pgd"\ntarget = "randm"', "", "did you mean 'random'"),
        (
            '[[attacks]]\nattack = "pgd"\ntarget = { strategy = "labelfool", dleta1 = 1 }',
            "",
            "did you mean 'delta1'",
        ),
        (
            '[[attacks]]\nattack = "labelfool"',
            "[similarity]\nperceptual = false",
            "uses the 'perceptual' distance, which the [similarity] table does not provide",
        ),
        (
            '[[attacks]]\nattack = "pgd"\ntarget = { strategy = "nearest", distance = "semantic" }',
            '[similarity]\nhierarchy = "none"',
            "'semantic' distance",
        ),
    ],
)
def test_target_config_errors_are_one_line(attacks, similarity, message):
    with pytest.raises(LabelflipError) as err:
        _parse(attacks, similarity)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_hierarchy_fails_before_any_attack(tmp_path, monkeypatch):
    monkeypatch.setenv("LABELFLIP_CACHE", str(tmp_path / "cache"))
    text = CONFIG.format(hierarchy="auto").replace("samples = 40", "samples = 4")
    path = tmp_path / "run.toml"
    path.write_text(text)
    cfg = load_config(path)
    with pytest.raises(LabelflipError, match="needs the 'semantic' class distance"):
        run(cfg, run_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # refused before the run directory was made

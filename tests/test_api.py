"""The public API (issue 18): ``labelflip.evaluate`` from tensors and from a
DataLoader gives the records of ``labelflip run`` on the equivalent config;
``open_run`` reads a CLI run back with the report's flip matrices; a run
shows itself in a notebook; the README's Python example runs; every user
error through the API is one ``LabelflipError`` line.

The model is the digits CNN of the records fixture (tests/fixtures/records),
the data scikit-learn's digits (offline), one torch thread throughout."""

from __future__ import annotations

import base64
import csv
import os
import re
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import labelflip
from labelflip import LabelflipError
from labelflip.analysis import flip_matrix
from labelflip.attacks import PGDSettings, run_attack
from labelflip.cli import main
from labelflip.data import load_dataset
from labelflip.models import load_checkpoint
from labelflip.run import LocalExecutor
from labelflip.store import RunStore

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "tests" / "fixtures" / "records" / "digits-cnn.safetensors"
N = 40  # samples attacked
ATTACKS = [
    {"attack": "fgsm", "eps": 0.2},
    {"attack": "pgd", "eps": [0.1, 0.3], "steps": 5},
    {"attack": "deepfool", "steps": 20},
]
CONFIG = f"""
name = "api-digits"
seed = 0
batch_size = 16
white_noise = 50
gallery = 4

[data]
dataset = "digits"
samples = {N}

[model]
checkpoint = "{CHECKPOINT.as_posix()}"

[similarity]
perceptual = false

[[attacks]]
attack = "fgsm"
eps = 0.2

[[attacks]]
attack = "pgd"
eps = [0.1, 0.3]
steps = 5

[[attacks]]
attack = "deepfool"
steps = 20
"""
SAME = dict(seed=0, batch_size=16, white_noise=50, gallery=4)  # the config's run options


@pytest.fixture(scope="module", autouse=True)
def model_cache(tmp_path_factory):
    """Live models are saved in a private model cache."""
    old = os.environ.get("LABELFLIP_CACHE")
    os.environ["LABELFLIP_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("LABELFLIP_CACHE", None)
    else:
        os.environ["LABELFLIP_CACHE"] = old


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "test")


@pytest.fixture(scope="module")
def trained():
    """The fixture's digits CNN: its bare ``nn.Module`` and normalisation."""
    clf, meta = load_checkpoint(CHECKPOINT)
    return clf.model, meta.mean, meta.std


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """``labelflip run`` on CONFIG, with its report."""
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "api.toml").write_text(CONFIG)
    assert main(["run", str(tmp / "api.toml"), "--out", str(tmp / "run"), "--no-progress"]) == 0
    return tmp / "run"


def _records(run_dir: Path) -> dict[str, np.ndarray]:
    with RunStore.open(run_dir, read_only=True) as store:
        rec = store.records()
        samples = store.meta("samples")
    rec.pop("seconds")
    return {**rec, "samples": np.asarray(samples)}


def _assert_same_records(a: Path, b: Path) -> None:
    ra, rb = _records(a), _records(b)
    assert ra.keys() == rb.keys()
    assert len(ra["job_id"]) == 4 * N
    for key in ra:
        np.testing.assert_array_equal(ra[key], rb[key], err_msg=key)


# ---------------------------------------------------------------- one call = labelflip run


def test_evaluate_from_tensors_equals_cli_run(cli_run, digits, trained, tmp_path):
    net, mean, std = trained
    run = labelflip.evaluate(
        net, (digits.x, digits.y), ATTACKS, mean=mean, std=std, samples=N,
        out=tmp_path / "run", **SAME,
    )  # fmt: skip
    assert isinstance(run, labelflip.Run) and run.path == tmp_path / "run"
    _assert_same_records(run.path, cli_run)
    assert run.job_ids == labelflip.open_run(cli_run).job_ids
    # the live model's weights were saved as a checkpoint the run records
    checkpoint = Path(run.meta["model"]["checkpoint"])
    assert checkpoint.is_file() and checkpoint.with_suffix(".json").is_file()
    assert run.jobs[0].model_sha256 == run.meta["model"]["sha256"]


def test_evaluate_from_dataloader_equals_cli_run(cli_run, digits, trained, tmp_path):
    net, mean, std = trained
    loader = DataLoader(TensorDataset(digits.x[:N], digits.y[:N]), batch_size=7)
    run = labelflip.evaluate(net, loader, ATTACKS, mean=mean, std=std, out=tmp_path / "run", **SAME)
    _assert_same_records(run.path, cli_run)


def test_evaluate_a_checkpoint_on_a_named_dataset_equals_cli_run(cli_run, tmp_path):
    run = labelflip.evaluate(
        CHECKPOINT, "digits", ATTACKS, samples=N, similarity={"perceptual": False},
        out=tmp_path / "r", **SAME,
    )  # fmt: skip
    _assert_same_records(run.path, cli_run)
    assert run.meta["dataset"] == "digits"  # a plain config run: `labelflip run --resume` works


def test_settings_objects_give_the_jobs_of_mappings():
    from labelflip.api import attack_tables

    assert attack_tables(PGDSettings(eps=0.1, steps=5)) == [
        {"attack": "pgd", "eps": 0.1, "steps": 5}
    ]
    assert attack_tables(["fgsm", {"attack": "pgd", "eps": [0.1, 0.3]}]) == [
        {"attack": "fgsm"},
        {"attack": "pgd", "eps": [0.1, 0.3]},
    ]


class _StopAfter(LocalExecutor):
    """The local executor, interrupted (as by Ctrl-C) after ``n`` batches."""

    def __init__(self, n: int) -> None:
        self.n = n

    def compute(self, plan, shards, distances, hooks):
        for i, item in enumerate(super().compute(plan, shards, distances, hooks)):
            if i == self.n:
                raise KeyboardInterrupt
            yield item


def test_an_interrupted_evaluation_resumes_to_the_same_records(cli_run, digits, trained, tmp_path):
    net, mean, std = trained
    args = dict(mean=mean, std=std, samples=N, **SAME)
    with pytest.raises(KeyboardInterrupt):
        labelflip.evaluate(
            net, (digits.x, digits.y), ATTACKS, out=tmp_path / "r", executor=_StopAfter(5), **args
        )
    kept = len(_records(tmp_path / "r")["job_id"])
    assert 0 < kept < 4 * N
    # the CLI cannot load samples given in Python: one line saying how to resume
    assert main(["run", "--resume", str(tmp_path / "r"), "--no-progress"]) == 1
    # other samples (here: shifted by one) are refused by the run's config
    with pytest.raises(LabelflipError, match="different config"):
        labelflip.evaluate(
            net, (digits.x[1:], digits.y[1:]), ATTACKS, resume=tmp_path / "r", **args
        )
    run = labelflip.evaluate(net, (digits.x, digits.y), ATTACKS, resume=tmp_path / "r", **args)
    _assert_same_records(run.path, cli_run)


def test_cli_resume_of_a_python_run_says_how(digits, trained, tmp_path, capsys):
    net, mean, std = trained
    labelflip.evaluate(
        net, (digits.x[:8], digits.y[:8]), "fgsm", mean=mean, std=std, out=tmp_path / "r",
        white_noise=0, gallery=0,
    )  # fmt: skip
    capsys.readouterr()
    assert main(["run", "--resume", str(tmp_path / "r"), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "labelflip.evaluate" in err and "resume=RUNDIR" in err


def test_train_mode_restored_and_module_not_moved(digits, trained, tmp_path):
    net, mean, std = trained
    net.train()
    try:
        labelflip.evaluate(
            net, (digits.x[:8], digits.y[:8]), "fgsm", mean=mean, std=std,
            out=tmp_path / "r", white_noise=0, gallery=0,
        )  # fmt: skip
        assert all(m.training for m in net.modules())
    finally:
        net.eval()


# ---------------------------------------------------------------- open_run


def _csv_matrix(path: Path) -> np.ndarray:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return np.array([[int(v) for v in r[1:]] for r in rows[1:]], dtype=np.int64)


def test_open_run_gives_the_flip_matrices_of_the_report_csvs(cli_run):
    run = labelflip.open_run(cli_run)
    assert run.job_ids == [j.job_id for j in run.jobs] and len(run.job_ids) == 4
    k = len(run.class_names)
    for jid in run.job_ids:
        A = run.flip_matrix(jid)
        report_csv = cli_run / "report" / f"flip_matrix__{jid}.csv"
        np.testing.assert_array_equal(A, _csv_matrix(report_csv))
        # and straight from the records: clean-correct samples, and all samples
        r = run.arrays(jid)
        clean = r["clean_pred"] == r["true"]
        np.testing.assert_array_equal(A, flip_matrix(r["true"], r["adv_pred"], k, mask=clean))
        np.testing.assert_array_equal(
            run.flip_matrix(jid, subset="all"), flip_matrix(r["true"], r["adv_pred"], k)
        )


def test_summaries_are_typed_with_integer_counts(cli_run, digits):
    run = labelflip.open_run(cli_run)
    job = run.job("pgd-eps0.3-steps5")
    assert type(job.n) is int and type(job.n_clean_correct) is int and job.n == N
    assert all(type(c) is int for row in job.flip_matrix for c in row)
    sym = run.symmetry("pgd-eps0.3-steps5")
    assert type(sym.n_flips) is int and type(sym.bowker.df) is int
    assert sym.n_flips == int(
        run.flip_matrix("pgd-eps0.3-steps5").sum() - np.trace(run.flip_matrix("pgd-eps0.3-steps5"))
    )
    lo, hi = sym.ci
    assert np.isnan(sym.s) or lo <= sym.s <= hi
    att = run.attractors("pgd-eps0.3-steps5")
    assert type(att.n_success) is int and len(att.shares) == len(run.class_names)
    if att.n_success:
        assert sum(att.shares) == pytest.approx(1.0)
        assert att.top.name == run.class_names[int(np.argmax(att.shares))]
    frame = run.records()
    assert len(frame) == 4 * N and list(frame.columns[:3]) == ["job_id", "attack", "label"]
    assert frame["success"].dtype == bool and frame["adv_pred"].dtype == np.int64
    assert len(run.records("fgsm-eps0.2")) == N
    clf, _ = load_checkpoint(CHECKPOINT)
    res = run_attack("fgsm", clf, digits.x[:8], digits.y[:8], {"eps": 0.2})
    s = res.summary()
    assert {type(s[k]) for k in ("n", "n_success", "forwards", "backwards")} == {int}
    assert s["n"] == 8 and s["forwards"] == 8 and isinstance(s["success_rate"], float)


def test_records_without_pandas_is_one_line(cli_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(LabelflipError, match=r"pip install 'labelflip\[pandas\]'"):
        labelflip.open_run(cli_run).records()


def test_repr_html_shows_the_table_and_an_image(cli_run):
    run = labelflip.open_run(cli_run)
    text = run._repr_html_()
    assert "<table" in text and "top attractor" in text and "s [CI]" in text
    for job in run.summary.jobs:
        assert job.label in text
    (b64,) = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert base64.b64decode(b64).startswith(b"\x89PNG\r\n\x1a\n")


def test_plots_are_figures(cli_run, tmp_path):
    run = labelflip.open_run(cli_run)
    figures = [
        run.plot_flips("fgsm-eps0.2"),
        run.plot_jobs(),
        run.plot_sweep("pgd-steps5"),
        run.plot_white_noise(),
        run.plot_distance("confusion"),
        run.plot_gallery("deepfool-steps20"),
    ]
    assert all(isinstance(f, Figure) for f in figures)
    assert figures[0].axes[0].get_title().startswith("fgsm")
    path = run.report(out=tmp_path / "report")
    assert path == tmp_path / "report" / "report.html" and path.stat().st_size > 1000


def test_run_experiment_runs_a_config(cli_run, tmp_path):
    (tmp_path / "c.toml").write_text(CONFIG)
    cfg = labelflip.load_config(tmp_path / "c.toml")
    run = labelflip.run_experiment(cfg, out=tmp_path / "run")
    _assert_same_records(run.path, cli_run)
    assert isinstance(run, labelflip.Run)


def test_cli_run_data_dir_overrides_the_config(tmp_path, capsys):
    empty = tmp_path / "no-data-here"
    empty.mkdir()
    config = CONFIG.replace('dataset = "digits"', 'dataset = "mnist"\ndata_dir = "/elsewhere"')
    (tmp_path / "c.toml").write_text(config)
    code = main(["run", str(tmp_path / "c.toml"), "--data-dir", str(empty), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and str(empty) in err and "/elsewhere" not in err
    code = main(["run", "--resume", str(tmp_path / "x"), "--data-dir", str(empty)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "--data-dir does not go with it" in err and "\n" not in err


# ---------------------------------------------------------------- README and example


def _readme_python_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("\n## Python\n") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


class _Normalised(nn.Module):
    """A user's net with its normalisation inside (what the README assumes)."""

    def __init__(self, net: nn.Module, mean, std) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


def test_readme_python_example_runs(digits, trained, tmp_path, monkeypatch):
    code = _readme_python_example()
    assert len(code.strip().splitlines()) < 15
    net, mean, std = trained
    loader = DataLoader(TensorDataset(digits.x, digits.y), batch_size=64)
    monkeypatch.chdir(tmp_path)
    scope = {"net": _Normalised(net, mean, std), "loader": loader}
    exec(compile(code, "README.md", "exec"), scope)
    run = scope["run"]
    assert isinstance(run, labelflip.Run) and (run.path / "report" / "report.html").is_file()
    assert run.path.resolve().parent == tmp_path.resolve() / "runs"


def test_example_own_model_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["own_model.py", "--samples", "30", "--out", "run"])
    runpy.run_path(str(ROOT / "examples" / "own_model.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "clean accuracy" in out and (tmp_path / "run" / "report" / "report.html").is_file()


# ---------------------------------------------------------------- user errors


def _one_line(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text and text
    return text


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (lambda x, y: (x[:, 0], y), r"shape \(N, C, H, W\).*channel axis"),
        (lambda x, y: (x, y[:-1]), r"class indices \(one per x\)"),
        (lambda x, y: (x, torch.nn.functional.one_hot(y, 10)), r"one-hot labels\? give y.argmax"),
        (lambda x, y: (x, y.float()), r"integer class indices"),
        (lambda x, y: (x, y + 1), r"labels must be class indices in \[0, 10\).*to 10"),
        (lambda x, y: (x, y - 1), r"from -1 to"),
        (lambda x, y: (x.clone().index_fill_(0, torch.tensor([3]), float("nan")), y), "NaN"),
        (lambda x, y: (x * 255, y), r"outside the bounds \[0, 1\].*bounds=\(low, high\)"),
        (lambda x, y: ((x * 255).to(torch.uint8), y), r"dtype torch.uint8"),
        (lambda x, y: x, r"data must be a dataset name, a pair \(x, y\)"),
        (lambda x, y: "digitz", r"unknown dataset 'digitz'; did you mean 'digits'"),
        (
            lambda x, y: DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True),
            r"shuffle=False",
        ),
        (lambda x, y: DataLoader(TensorDataset(x), batch_size=8), r"\(x, y\) pairs"),
    ],
)
def test_bad_data_is_one_line(data, match, digits, trained):
    net, mean, std = trained
    with pytest.raises(LabelflipError, match=match) as e:
        labelflip.evaluate(net, data(digits.x[:16], digits.y[:16]), "fgsm", mean=mean, std=std)
    _one_line(e)


PLAIN = {"mean": None, "std": None}  # no normalisation given


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"attacks": "pgdd"}, r"unknown attack 'pgdd'; did you mean 'pgd'"),
        ({"attacks": {"attack": "pgd", "epz": 0.1}}, r"unknown setting 'epz'.*did you mean 'eps'"),
        ({"attacks": {"attack": "pgd", "eps": -1}}, r"eps must be >= 0"),
        ({"attacks": []}, r"at least one attack"),
        ({"attacks": 3}, r"attacks must be a name, a mapping, a settings object or a list"),
        ({"attacks": [3]}, r"an attack is a name, a mapping or a settings object, got int"),
        ({"bounds": (1.0, 0.0)}, r"bounds must satisfy lower < upper"),
        ({"bounds": (0.0, 0.5)}, r"outside the bounds \[0, 0.5\]"),
        ({"bounds": 1.0}, r"bounds must be a pair"),
        ({"class_names": ["a", "b"]}, r"2 class names given for a model with 10 outputs"),
        ({"mean": [0.1, 0.2]}, r"mean"),
        ({"samples": 0}, r"samples must be >= 1"),
        ({"samples": 17}, r"samples = 17 but the range holds only 16"),
        ({"device": "gpu7"}, r"unknown device 'gpu7'"),
        ({"similarity": {"perceptual": True}}, r"perceptual class distance needs a named"),
        ({"executor": "ray"}, r"executor='ray'.*checkpoint"),
        ({"model": 3, **PLAIN}, r"model must be an nn.Module"),
        ({"model": "missing.safetensors", **PLAIN}, r"checkpoint not found"),
        ({"model": "no-such-model", **PLAIN}, r"neither a checkpoint file nor a zoo model"),
        ({"model": CHECKPOINT, "std": None}, r"a checkpoint carries its own"),
        ({"model": nn.Linear(3, 2), **PLAIN}, r"the model fails on inputs of shape \(1, 8, 8\)"),
    ],
)
def test_bad_arguments_are_one_line(kwargs, match, digits, trained, tmp_path):
    net, mean, std = trained
    args = {"model": net, "attacks": "fgsm", "mean": mean, "std": std, **kwargs}
    model, attacks = args.pop("model"), args.pop("attacks")
    with pytest.raises(LabelflipError, match=match) as e:
        labelflip.evaluate(
            model, (digits.x[:16], digits.y[:16]), attacks, out=tmp_path / "r", **args
        )
    _one_line(e)
    assert not (tmp_path / "r").exists()


def test_open_run_and_job_names_errors_are_one_line(cli_run, tmp_path):
    with pytest.raises(LabelflipError) as e:
        labelflip.open_run(tmp_path / "nothing-here")
    _one_line(e)
    run = labelflip.open_run(cli_run)
    with pytest.raises(
        LabelflipError, match=r"unknown job 'fgsm-eps0.3'; did you mean 'fgsm-e"
    ) as e:
        run.flip_matrix("fgsm-eps0.3")
    _one_line(e)
    with pytest.raises(LabelflipError, match=r"the run has 4 jobs: name one") as e:
        run.symmetry()
    _one_line(e)
    with pytest.raises(LabelflipError, match=r"subset must be one of clean, all") as e:
        run.flip_matrix(0, subset="dirty")
    _one_line(e)

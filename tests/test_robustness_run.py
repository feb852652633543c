"""Hardening, round two (issue 21): what happens while a run runs and when it
is resumed or reported. Non-finite logits on adversarial or white-noise
inputs never become a landing; a resumed run sees the images it started with
and is run by one process at a time; every size, seed and ``[similarity]``
or target mistake is refused before the run directory exists; a report read
while the run writes is one snapshot and never replaces a later one; the
model cache is keyed on the data's content; Ctrl-C twice and a closed pipe
end cleanly.

``CASES`` are run as the user runs them (``python -m labelflip.cli ...`` in a
fresh directory), like those of ``tests/test_robustness.py``; their rows in
``docs/robustness.md`` come from these runs (``python tests/robustness_doc.py``).
The other tests check the same fixes closer to the code.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_robustness import (  # noqa: F401 - `shared` is a fixture
    Shared,
    cli,
    config,
    copy_model,
    shared,
)

from labelflip.config import load_config
from labelflip.errors import LabelflipWarning
from labelflip.models import save_checkpoint
from labelflip.models.checkpoint import CheckpointMeta
from labelflip.store import RunStore

TABLE: list[dict] = []  # rows of docs/robustness.md, in the order the tests ran
JSON_SUFFIX = "-run"  # this module's rows go to <LABELFLIP_ROBUSTNESS_JSON stem>-run.json


@pytest.fixture(scope="module", autouse=True)
def _write_table():
    yield
    out = os.environ.get("LABELFLIP_ROBUSTNESS_JSON")
    if out:
        path = Path(out)
        path.with_name(f"{path.stem}{JSON_SUFFIX}{path.suffix}").write_text(
            json.dumps(TABLE, indent=1, ensure_ascii=False)
        )


def record(case: str, what: str, args, code: int, cwd: Path, kind: str, shown: str) -> None:
    TABLE.append(
        {
            "case": case,
            "what": what,
            "command": "labelflip " + " ".join(map(str, args)),
            "exit": code,
            "message": shown.replace(str(cwd.resolve()), ".").replace(str(cwd), "."),
            "kind": kind,
        }
    )


# ------------------------------------------------------------------ building inputs

OFF_GRID = '''\
"""A digits model whose logits are NaN on any input off the digits' grid of
sixteenths: finite on the clean test images, NaN on most perturbed ones."""
import torch

from labelflip.models.architectures import DigitsCNN

MEAN, STD = {mean}, {std}


class OffGridNaN(DigitsCNN):
    def forward(self, z):
        out = super().forward(z)
        x = z * torch.tensor(STD).view(1, -1, 1, 1) + torch.tensor(MEAN).view(1, -1, 1, 1)
        off = ((x * 16 - (x * 16).round()).abs() > 1e-3).flatten(1).any(1)
        return torch.where(off[:, None], torch.full_like(out, float("nan")), out)


def off_grid_nan(input_shape, num_classes):
    return OffGridNaN(input_shape, num_classes)
'''


def off_grid_model(s: Shared, d: Path) -> str:
    """``offgrid.safetensors``: the shared digits-cnn's weights in :data:`OFF_GRID`;
    returns the ``[model]`` lines that load it."""
    import importlib.util

    from safetensors.torch import load_file

    (d / "offgrid.py").write_text(OFF_GRID.format(mean=list(s.meta.mean), std=list(s.meta.std)))
    spec = importlib.util.spec_from_file_location("offgrid", d / "offgrid.py")
    user = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(user)
    model = user.off_grid_nan((1, 8, 8), 10)
    model.load_state_dict(load_file(str(s.model)))
    meta = CheckpointMeta(
        architecture="offgrid:off_grid_nan",
        dataset="digits",
        class_names=list(s.meta.class_names),
        input_shape=[1, 8, 8],
        mean=s.meta.mean,
        std=s.meta.std,
    )
    save_checkpoint(d / "offgrid", model, meta)
    return 'checkpoint = "offgrid.safetensors"\narch = "offgrid:off_grid_nan"'


RUN = ["run", "run.toml", "--out", "out", "--no-progress", "--no-report"]
RESUME = ["run", "--resume", "out", "--no-progress", "--no-report"]


def write_run(d: Path, s: Shared, **parts) -> list:
    """``run.toml`` (the shared base config with ``parts`` replaced) and the model."""
    d.mkdir(parents=True, exist_ok=True)
    copy_model(s, d)
    (d / "run.toml").write_text(config(**parts))
    return RUN


def run_in_process(d: Path, s: Shared, **parts) -> Path:
    """A finished run ``d/out`` of ``run.toml`` (made in this process)."""
    from labelflip.run import run

    write_run(d, s, **parts)
    cwd = os.getcwd()
    os.chdir(d)  # the config names its files relative to its directory
    try:
        run(load_config(d / "run.toml"), run_dir=d / "out", progress=False)
    finally:
        os.chdir(cwd)
    return d / "out"


def ten_class_images(d: Path) -> str:
    """``imgs/test/<0..9>/{0,1}.png``: the first two digits test images of each class."""
    from labelflip.data import load_dataset

    ds = load_dataset("digits", "test")
    for c in range(10):
        folder = d / "imgs" / "test" / str(c)
        folder.mkdir(parents=True)
        for i, k in enumerate(torch.nonzero(ds.y == c)[:2, 0].tolist()):
            pixels = (ds.x[k, 0].numpy() * 255).round().astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return 'dataset = "imagefolder:imgs"'


# ---- the cases' setups and checks

NONFINITE_ATTACKS = 'attack = "fgsm"\neps = [0.0625, 0.1]'  # a sixteenth stays on the grid


def _nonfinite(d: Path, s: Shared) -> list:
    write_run(d, s, model=off_grid_model(s, d), attacks=NONFINITE_ATTACKS)
    return ["run", "run.toml", "--out", "out", "--no-progress"]


def _nonfinite_check(d: Path, proc) -> None:
    with RunStore.open(d / "out", read_only=True) as store:
        small, big = store.records("fgsm-eps0.0625"), store.records("fgsm-eps0.1")
        meta = store.all_meta()
    assert small["valid"].all() and np.isin(small["adv_pred"], range(10)).all()
    assert not big["valid"].any()
    assert (big["adv_pred"] == -1).all() and not big["success"].any()  # no landing in class 0
    assert meta["white_noise_pred"] == [] and meta["white_noise_nonfinite"] == 20
    summary = json.loads((d / "out" / "report" / "summary.json").read_text())
    jobs = {j["job_id"]: j for j in summary["jobs"]}
    assert jobs["fgsm-eps0.1"]["n"] == 0 and jobs["fgsm-eps0.0625"]["n"] == 20
    assert jobs["fgsm-eps0.1"]["top_attractor"]["class"] is None
    assert summary["run"]["invalid"] == {"fgsm-eps0.1": 20}
    assert summary["white_noise"] is None and summary["run"]["white_noise_invalid"] == 20
    page = (d / "out" / "report" / "report.html").read_text()
    assert "20 records had non-finite logits and are excluded" in page
    assert "All 20 white-noise images had non-finite logits: no prior." in page


def _images_changed(d: Path, s: Shared) -> list:
    run_in_process(d, s, data=ten_class_images(d))
    a, b = d / "imgs" / "test" / "3" / "0.png", d / "imgs" / "test" / "5" / "0.png"
    a_bytes = a.read_bytes()
    a.write_bytes(b.read_bytes())  # the same indices, other images
    b.write_bytes(a_bytes)
    return RESUME


def _same_records(d: Path, proc) -> None:
    with RunStore.open(d / "out", read_only=True) as store:
        assert len(store.records()["sample"]) == 20


def _threads(d: Path, s: Shared) -> list:
    run_in_process(d, s)
    return RESUME


def _in_use(d: Path, s: Shared) -> list:
    run_in_process(d, s)
    HELD.append(_hold_lock(d / "out"))
    return RESUME


HELD: list[int] = []  # lock file descriptors the test holds for the case's command


def _hold_lock(run_dir: Path) -> int:
    fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _newer_report(d: Path, s: Shared) -> list:
    run_in_process(d, s)
    assert cli(["report", "out"], d, s.env).returncode == 0
    summary = d / "out" / "report" / "summary.json"
    data = json.loads(summary.read_text())
    data["run"]["snapshot"]["records"] += 1  # as if the run went on while this one was read
    summary.write_text(json.dumps(data))
    STAMPS[d] = (d / "out" / "report" / "report.html").stat().st_mtime_ns
    return ["report", "out"]


STAMPS: dict[Path, int] = {}


def _kept(d: Path, proc) -> None:
    assert (d / "out" / "report" / "report.html").stat().st_mtime_ns == STAMPS[d]


def _similarity(**keys) -> str:
    lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in keys.items())
    return f'[[attacks]]\nattack = "fgsm"\neps = 0.1\n\n[similarity]\n{lines}\n'


def _config_with(**parts) -> Callable[[Path, Shared], list]:
    return lambda d, s: write_run(d, s, **parts)


def _replaced(old: str, new: str, **parts) -> Callable[[Path, Shared], list]:
    """The base config (``parts`` replaced) with the line ``old`` replaced by ``new``."""

    def setup(d: Path, s: Shared) -> list:
        args = write_run(d, s, **parts)
        text = (d / "run.toml").read_text()
        assert f"\n{old}\n" in text
        (d / "run.toml").write_text(text.replace(f"\n{old}\n", f"\n{new}\n"))
        return args

    return setup


def _similarity_case(**keys) -> Callable[[Path, Shared], list]:
    def setup(d: Path, s: Shared) -> list:
        copy_model(s, d)
        text = config().split("[similarity]")[0] + _similarity(**keys)
        (d / "run.toml").write_text(text)
        return RUN

    return setup


def _bad_hierarchy(d: Path, s: Shared) -> list:
    (d / "tree.json").write_text('{"animals": ["0", "1"], "vehicles": "2"}')
    return _similarity_case(perceptual=False, hierarchy="tree.json", confusion=False)(d, s)


@dataclass(frozen=True)
class Case:
    id: str
    what: str  # the mistake or situation, as docs/robustness.md shows it
    setup: Callable[[Path, Shared], list]  # writes files into the directory, returns argv
    phrase: str  # must appear in the line shown
    code: int = 1  # 0: the command succeeds
    check: Callable[[Path, subprocess.CompletedProcess], None] | None = None
    warning: bool = False  # a success with exactly one `labelflip: warning:` line
    env: dict | None = None  # more environment for the command
    orphan: bool = True  # a failing `run` must leave no run directory behind

    def __str__(self) -> str:
        return self.id


CASES = [
    # ---- non-finite logits
    Case("nonfinite-logits", "a model whose logits are NaN on perturbed inputs only (FGSM "
         "ε = 1/16 stays on the digits' grid, ε = 0.1 leaves it; white noise leaves it)",
         _nonfinite, "20 records had non-finite logits and are excluded (fgsm-eps0.1: 20), "
         "as are 20 white-noise images", code=0, check=_nonfinite_check),
    # ---- resuming
    Case("resume-images-changed", "`--resume` after two test images were swapped between "
         "classes (same indices, other images)", _images_changed,
         "cannot resume out: the images or labels of its samples changed since the run started",
         check=_same_records, orphan=False),
    Case("resume-other-threads", "`--resume` under another torch thread count "
         "(`OMP_NUM_THREADS=2`, the run had 1)", _threads,
         "resuming a run started with 1 torch threads on 2", code=0, warning=True,
         env={"OMP_NUM_THREADS": "2"}),
    Case("resume-in-use", "`--resume` of a run another process is running",
         _in_use, "run out is in use by another process (pid", check=_same_records,
         orphan=False),
    # ---- sizes and seeds
    Case("white-noise-huge", "`white_noise = 100000000000`",
         _replaced("white_noise = 20", "white_noise = 100000000000"),
         "white_noise must be >= 0 and <= 1,000,000, got 100,000,000,000"),
    Case("batch-size-huge", "`batch_size = 10000000000`",
         _replaced("batch_size = 10", "batch_size = 10000000000"),
         "batch_size must be >= 1 and <= 1,000,000, got 10,000,000,000"),
    Case("gallery-huge", "`gallery = 1000000`", _replaced("gallery = 2", "gallery = 1000000"),
         "gallery must be >= 0 and <= 1,000, got 1,000,000"),
    Case("samples-huge", "`samples = 10000000000`",
         _config_with(data='dataset = "digits"\nsamples = 10000000000'),
         "[data] samples must be >= 1 and <= 100,000,000, got 10,000,000,000"),
    Case("seed-negative", "`seed = -1` with `selection = \"random\"`",
         _replaced("seed = 0", "seed = -1",
                   data='dataset = "digits"\nsamples = 20\nselection = "random"'),
         "seed must be an integer in [0, 2**63 - 1], got -1"),
    Case("checkpoint-empty", "`[model] checkpoint = \"\"`",
         _config_with(model='checkpoint = ""'), "[model] checkpoint is empty"),
    # ---- [similarity] and targets, before any work
    Case("similarity-split", "`[similarity] split = \"val\"`",
         _similarity_case(split="val"), "[similarity] split must be 'train' or 'test', got 'val'"),
    Case("similarity-per-class", "`[similarity] per_class = -1`",
         _similarity_case(per_class=-1), "[similarity] per_class must be >= 0 and <= 100,000,000, "
         "got -1"),
    Case("similarity-layer", "`[similarity] layer = \"clasifier.3\"` (misspelt)",
         _similarity_case(perceptual=True, layer="clasifier.3", hierarchy="none"),
         "[similarity] unknown layer 'clasifier.3' in model DigitsCNN; did you mean "
         "'classifier.3'"),
    Case("hierarchy-missing", "`[similarity] hierarchy = \"tree.json\"`, no such file",
         _similarity_case(perceptual=False, hierarchy="tree.json"),
         "[similarity] hierarchy: hierarchy file 'tree.json' does not exist"),
    Case("hierarchy-bad", "a hierarchy file whose group is a string, not a list",
         _bad_hierarchy, "[similarity] hierarchy: hierarchy file 'tree.json': group 'vehicles' "
         "must be an object or a list of class names, got str"),
    Case("mapping-incomplete", "a `mapping` target table without the classes 2-9",
         _config_with(attacks='attack = "pgd"\neps = 0.1\nsteps = 2\n'
                      'target = { strategy = "mapping", mapping = { "0" = "1", "1" = "0" } }'),
         "mapping: no target for source class '2', '3'"),
    Case("foolbox-option-type", "a Foolbox option of the wrong type: `options = { steps = "
         "\"ten\" }`",
         _config_with(attacks='attack = "foolbox:LinfPGD"\nepsilon = 0.1\n'
                      'options = { steps = "ten" }'),
         "Foolbox LinfPGD: option 'steps' must be int, got 'ten'"),
    # ---- reports
    Case("report-newer-there", "`report` while `report/` holds one made from a later state "
         "of the run (the run went on while this one was read)", _newer_report,
         "kept as it is", code=0, warning=True, check=_kept),
]  # fmt: skip


def _shown(case: Case, proc) -> str:
    """The line the table shows: the error or warning, else the stdout line with the phrase."""
    ours = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("labelflip: ")]
    if ours:
        return re.sub(r"pid \d+", "pid N", ours[-1])
    line = next((ln.strip() for ln in proc.stdout.splitlines() if case.phrase in ln), "")
    return re.sub(r"\s{2,}", "  ", line)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_case(case: Case, shared: Shared, tmp_path: Path):  # noqa: F811
    try:
        args = case.setup(tmp_path, shared)
        env = {**shared.env, **(case.env or {})}
        proc = cli(args, tmp_path, env)
    finally:
        while HELD:
            os.close(HELD.pop())
    kind = "error" if case.code else "warning" if case.warning else "ok"
    record(case.id, case.what, args, proc.returncode, tmp_path, kind, _shown(case, proc))
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    assert proc.returncode == case.code, out
    lines = proc.stderr.strip().splitlines()
    ours = [ln for ln in lines if ln.startswith("labelflip: ")]
    if case.code:
        assert len(ours) == 1 and lines[-1] == ours[0], out
        assert ours[0].startswith("labelflip: error: ") and case.phrase in ours[0], out
        if args[:2] == RUN[:2] and case.orphan:  # refused before any work: nothing left
            assert not (tmp_path / "out").exists(), list(tmp_path.iterdir())
            assert not list(tmp_path.glob(".out*")), list(tmp_path.iterdir())
    elif case.warning:
        assert len(ours) == 1 and ours[0].startswith("labelflip: warning: "), out
        assert case.phrase in ours[0], out
    else:
        assert ours == [], out
        assert case.phrase in proc.stdout, out
    if case.check is not None:
        case.check(tmp_path, proc)


def test_the_table_covers_the_issue():
    assert len({c.id for c in CASES}) == len(CASES) >= 15


# ------------------------------------------------------------------ Ctrl-C twice, a closed pipe

SLOW = 'attack = "pgd"\neps = 0.3\nsteps = 400\nrandom_start = false'


def _records(run_dir: Path) -> int:
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{run_dir / 'records.sqlite'}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def test_second_ctrl_c_stops_at_once_and_says_how_to_resume(shared: Shared, tmp_path: Path):  # noqa: F811
    args = write_run(tmp_path, shared, attacks=SLOW)
    proc = subprocess.Popen(
        [sys.executable, "-m", "labelflip.cli", *args], cwd=tmp_path, env=shared.env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while _records(tmp_path / "out") < 10 and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    done = subprocess.CompletedProcess(args, proc.returncode, out, err)
    ours = [ln for ln in err.strip().splitlines() if ln.startswith("labelflip: ")]
    record("ctrl-c-twice", "Ctrl-C twice during a run (the second stops at once)", args,
           done.returncode, tmp_path, "interrupt", ours[-1] if ours else "")  # fmt: skip
    assert "Traceback" not in out + err
    assert proc.returncode == 130, err
    assert ours[-1].startswith("labelflip: interrupted: stopped at once"), err
    assert "resume with: labelflip run --resume out" in ours[-1], err
    assert _records(tmp_path / "out") == 10  # the first batch, committed
    resumed = cli(RESUME, tmp_path, shared.env)
    assert resumed.returncode == 0, resumed.stderr
    assert _records(tmp_path / "out") == 20


def test_closed_pipe_after_a_successful_run_exits_0(shared: Shared, tmp_path: Path):  # noqa: F811
    """``labelflip run ... | head -1``: the reader leaves early; the run's work
    is done and the command ends quietly with status 0."""
    args = write_run(tmp_path, shared)
    r, w = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "labelflip.cli", *args], cwd=tmp_path, env=shared.env,
        stdout=w, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    os.close(w)
    os.close(r)  # the reader is gone before the first line
    _, err = proc.communicate(timeout=300)
    shown = err.strip().splitlines()[-1] if err.strip() else ""
    record("pipe-closed", "`labelflip run ... | head -1` (stdout closed before the table)",
           [*args, "|", "head", "-1"], proc.returncode, tmp_path, "ok",
           f"(exit {proc.returncode}; stderr ends: {shown})")  # fmt: skip
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "labelflip: " not in err, err
    with RunStore.open(tmp_path / "out", read_only=True) as store:
        assert len(store.records()["sample"]) == 20


# ------------------------------------------------------------------ closer to the code


def test_summary_is_one_snapshot_of_a_run_writing_meanwhile(shared: Shared, tmp_path: Path):  # noqa: F811
    """A batch committed while the summary is being read does not show up in
    it (every read is one snapshot), and the summary says which state it read."""
    from labelflip.report import summarize_run

    run_dir = run_in_process(tmp_path, shared)
    with RunStore.open(run_dir) as writer:
        rec = writer.records("fgsm-eps0.1")
        writer.add_job(replace(writer.jobs()[0], job_id="late", label="late"))
        with RunStore.open(run_dir, read_only=True) as reader:
            read = reader.records

            def records_then_a_commit(job_id=None):
                got = read(job_id)
                if not writer.done_samples("late").size:  # a run commits meanwhile
                    writer.write_batch("late", {k: v for k, v in rec.items() if k != "job_id"})
                return got

            reader.records = records_then_a_commit
            summary = summarize_run(reader, n_boot=10)
        assert len(writer.records("late")["sample"]) == 20  # it was committed
    jobs = {j.job_id: j for j in summary.jobs}
    assert jobs["late"].n == 0 and jobs["fgsm-eps0.1"].n == 20
    assert summary.run.snapshot == {"records": 20, "jobs_done": 1}


def test_report_of_another_run_is_replaced(shared: Shared, tmp_path: Path):  # noqa: F811
    """The newer-state rule compares states of one run: a report folder given
    with ``--out`` that holds another run's report is written as ever."""
    from labelflip.report import write_report

    a = run_in_process(tmp_path / "a", shared)
    b = run_in_process(tmp_path / "b", shared)
    with RunStore.open(b) as store:
        store.set_meta("started", "2001-01-01T00:00:00")  # another run
    out = tmp_path / "rep"
    write_report(a, out=out, n_boot=10)
    data = json.loads((out / "summary.json").read_text())
    data["run"]["snapshot"]["records"] = 10**6
    (out / "summary.json").write_text(json.dumps(data))
    with pytest.warns(LabelflipWarning, match="later state of the run"):
        write_report(a, out=out, n_boot=10)  # the same run: kept
    write_report(b, out=out, n_boot=10)  # another run: replaced
    assert json.loads((out / "summary.json").read_text())["run"]["started"] == (
        "2001-01-01T00:00:00"
    )


def test_model_cache_is_keyed_on_the_data_content_and_recipe(tmp_path, monkeypatch):
    """Two image folders named alike (A/imgs, B/imgs) get two cached models; a
    copy with the same files shares one; changing a file, the epochs or the
    encoding gives another."""
    from labelflip.models.training import TrainSettings
    from labelflip.run.models import DataRef, cached_model_path

    monkeypatch.setenv("LABELFLIP_CACHE", str(tmp_path / "cache"))
    for root in ("A", "B"):
        ten_class_images(tmp_path / root)
        shutil.copytree(tmp_path / root / "imgs" / "test", tmp_path / root / "imgs" / "train")
    flip = tmp_path / "B" / "imgs" / "train" / "4" / "1.png"
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(flip)  # B differs from A in one file
    shutil.copytree(tmp_path / "A", tmp_path / "C")  # C: a copy of A
    settings = TrainSettings(epochs=1, batch_size=8, lr=0.1, seed=0)

    def path(root: str, settings=settings, encoding=None) -> Path:
        ref = DataRef(f"imagefolder:{tmp_path / root / 'imgs'}", None)
        return cached_model_path("digits-cnn", settings, encoding, ref)

    a, b, c = path("A"), path("B"), path("C")
    assert a.name == b.name == c.name  # the readable part is the same
    assert a != b and a == c and a.parent.parent == tmp_path / "cache" / "models"
    assert path("A", replace(settings, epochs=2)) != a
    assert path("A", replace(settings, lr=0.05)) != a
    assert path("A", encoding="ecoc") != a
    flip = tmp_path / "A" / "imgs" / "test" / "0" / "0.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(flip)  # the folder's files change
    assert path("A") != a
    assert (tmp_path / "cache" / "models" / "data-digests.json").is_file()  # hashed once


def test_white_noise_is_drawn_in_chunks_as_in_one_draw():
    """The chunked white-noise draw equals the single draw it replaced (so
    the prior of old runs is reproduced), and non-finite predictions are left
    out and counted."""
    from labelflip.models import Classifier
    from labelflip.run.seeds import SeedTree
    from labelflip.run.setup import white_noise

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(75, 4))
    clf = Classifier(net, num_classes=4, input_shape=(3, 5, 5))
    gen = SeedTree(3).white_noise()
    x = torch.rand((1300, 3, 5, 5), generator=gen)
    want = clf.predict(x).tolist()
    got, nonfinite = white_noise(clf, 1300, SeedTree(3), torch.device("cpu"))
    assert got == want and nonfinite == 0

    class HalfNaN(torch.nn.Module):
        def forward(self, x):
            out = net(x)
            return torch.where(x.flatten(1)[:, :1] > 0.5, out * float("nan"), out)

    clf = Classifier(HalfNaN(), num_classes=4, input_shape=(3, 5, 5))
    got, nonfinite = white_noise(clf, 1300, SeedTree(3), torch.device("cpu"))
    finite = (x.flatten(1)[:, 0] <= 0.5).numpy()
    assert nonfinite == int((~finite).sum()) > 0
    assert got == np.asarray(want)[finite].tolist()


def test_samples_digest_changes_with_any_image_or_label():
    from labelflip.run.setup import samples_digest

    x = torch.rand(4, 1, 8, 8)
    y = torch.arange(4)
    d = samples_digest(x, y)
    assert d == samples_digest(x.clone(), y.clone()) and len(d) == 64
    x2 = x.clone()
    x2[2, 0, 3, 3] += 1e-6
    assert samples_digest(x2, y) != d
    assert samples_digest(x, y.flip(0)) != d
    assert samples_digest(x[[1, 0, 2, 3]], y[[1, 0, 2, 3]]) != d


def test_seeds_and_sizes_at_their_bounds_are_accepted(tmp_path):
    from labelflip.config import parse_config

    base = {
        "model": {"arch": "digits-cnn"},
        "attacks": [{"attack": "fgsm", "eps": 0.1}],
        "white_noise": 1_000_000,
        "gallery": 1000,
        "batch_size": 1_000_000,
    }
    assert parse_config({**base, "seed": 2**63 - 1}).seed == 2**63 - 1
    assert parse_config({**base, "seed": 0}).seed == 0
    from labelflip.errors import LabelflipError

    for bad in ({"seed": 2**63}, {"oracle": {"arch": "digits-cnn", "seed": -5}}):
        with pytest.raises(LabelflipError, match="seed must be an integer in"):
            parse_config({**base, **bad})


def test_foolbox_option_types_follow_the_constructor():
    pytest.importorskip("foolbox")
    from labelflip.attacks import get_attack, settings_from_mapping
    from labelflip.errors import LabelflipError

    spec = get_attack("foolbox")
    ok = {"steps": 3, "rel_stepsize": 1, "abs_stepsize": None, "random_start": False}
    settings_from_mapping(spec, {"attack": "LinfPGD", "epsilon": 0.1, "options": ok})
    for options, message in [
        ({"steps": 2.5}, "option 'steps' must be int, got 2.5"),
        ({"random_start": 1}, "option 'random_start' must be bool, got 1"),
        ({"abs_stepsize": "0.1"}, "option 'abs_stepsize' must be float or None"),
    ]:
        with pytest.raises(LabelflipError, match=re.escape(message)):
            settings_from_mapping(spec, {"attack": "LinfPGD", "epsilon": 0.1, "options": options})
    deepfool = {"loss": "hinge"}
    with pytest.raises(LabelflipError, match="option 'loss' must be 'logits' or 'crossentropy'"):
        settings_from_mapping(spec, {"attack": "LinfDeepFoolAttack", "options": deepfool})


def test_lock_is_released_when_the_holder_ends(tmp_path):
    from labelflip.errors import LabelflipError
    from labelflip.store import RunDir

    rd = RunDir.create(tmp_path / "run", {"name": "x"})
    with rd.lock():
        assert (tmp_path / "run" / ".lock").read_text().strip() == str(os.getpid())
        other = subprocess.run(
            [sys.executable, "-c", "from labelflip.store import RunDir; import sys\n"
             f"with RunDir({str(rd.path)!r}).lock(): pass"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert other.returncode != 0 and f"in use by another process (pid {os.getpid()})" in (
            other.stderr
        )
        with pytest.raises(LabelflipError, match="in use by another process"):
            with RunDir(rd.path).lock():  # a second open file: refused as well
                pass
    with rd.lock():  # released
        pass

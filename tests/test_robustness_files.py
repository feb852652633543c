"""Hardening, round two (issue 21): the files a user hands labelflip or asks
it to write. Image folders (16-bit PNGs, decompression bombs, hidden class
folders, classes in one split only, greyscale and colour splits), checkpoints
(a read-only or full disk, malformed sidecars, user factories, text files as
weights), run stores on read-only media, spreadsheet formulas in CSV exports
and stale temporary files in ``report/``.

``CASES`` are run as the user runs them (``python -m labelflip.cli ...`` in a
fresh directory) like those of ``tests/test_robustness.py``; their rows in
``docs/robustness.md`` come from these runs (``python tests/robustness_doc.py``).
The other tests check the same fixes closer to the code, on hand-made inputs.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import re
import shutil
import sqlite3
import struct
import subprocess
import sys
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_report import _columns, _job, make_run
from test_robustness import (  # noqa: F401 - `shared` is a fixture
    Shared,
    _drop_dac_override,
    cli,
    config,
    copy_model,
    edit_sidecar,
    shared,
)

from labelflip.errors import LabelflipError, LabelflipWarning
from labelflip.store import RunStore

TABLE: list[dict] = []  # rows of docs/robustness.md, in the order the tests ran
JSON_SUFFIX = "-files"  # this module's rows go to <LABELFLIP_ROBUSTNESS_JSON stem>-files.json


@pytest.fixture(scope="module", autouse=True)
def _write_table():
    yield
    out = os.environ.get("LABELFLIP_ROBUSTNESS_JSON")
    if out:
        path = Path(out)
        path.with_name(f"{path.stem}{JSON_SUFFIX}{path.suffix}").write_text(
            json.dumps(TABLE, indent=1, ensure_ascii=False)
        )


def record(case: str, what: str, args, proc, cwd: Path, kind: str, shown: str) -> None:
    TABLE.append(
        {
            "case": case,
            "what": what,
            "command": "labelflip " + " ".join(map(str, args)),
            "exit": proc.returncode,
            "message": shown.replace(str(cwd.resolve()), ".").replace(str(cwd), "."),
            "kind": kind,
        }
    )


# ------------------------------------------------------------------ building inputs


def gray_images(
    root: Path, split: str, classes: dict[str, int], size=(8, 8), mode="L", start=0
) -> None:
    for cls, count in classes.items():
        folder = root / split / cls
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(start, start + count):
            Image.new(mode, size, color=(30 * i) % 256 if mode == "L" else (30 * i, 0, 90)).save(
                folder / f"{i}.png"
            )


def save_gray16(path: Path, values: np.ndarray) -> None:
    """A 16-bit greyscale PNG (Pillow mode ``I;16``) of uint16 ``values``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(values, dtype=np.uint16)).save(path)
    with Image.open(path) as im:
        assert im.mode == "I;16"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def bomb_png(path: Path, side: int = 20000) -> None:
    """A 100-byte PNG declaring ``side`` x ``side`` pixels (400 million: more
    than twice Pillow's limit, so opening it raises DecompressionBombError)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b""))
        + _png_chunk(b"IEND", b"")
    )


def make_read_only(path: Path) -> None:
    """Files 0444 and folders 0555 under ``path`` (itself included)."""
    for p in sorted(path.rglob("*"), reverse=True):
        p.chmod(0o555 if p.is_dir() else 0o444)
    path.chmod(0o555)


def make_writable(path: Path) -> None:
    if path.exists():
        path.chmod(0o755)
        for p in path.rglob("*"):
            p.chmod(0o755 if p.is_dir() else 0o644)


def _can_drop_write(d: Path) -> bool:
    """Whether a child with :func:`_drop_dac_override` cannot write into the
    read-only folder ``d`` (false e.g. for root without CAP_SETPCAP)."""
    probe = [sys.executable, "-c", f"open({str(d / 'probe')!r}, 'w')"]
    try:
        done = subprocess.run(probe, preexec_fn=_drop_dac_override, capture_output=True)
    except subprocess.SubprocessError:
        return False
    return done.returncode != 0


def read_only_dir(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    make_read_only(d)
    if not _can_drop_write(d):
        make_writable(d)
        pytest.skip("cannot make a read-only directory here (root without CAP_SETPCAP)")
    return d


MOUNTS: list[Path] = []


def full_tmpfs(d: Path, size: str = "16k") -> Path:
    """A real, tiny file system (tmpfs of ``size``) at ``d``: writes fail with ENOSPC."""
    d.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()!r}")
    MOUNTS.append(d)
    return d


@pytest.fixture(autouse=True)
def _unmount():
    yield
    while MOUNTS:
        subprocess.run(["umount", str(MOUNTS.pop())], check=True)


USER_FACTORIES = '''\
"""User factories that misbehave, for tests/test_robustness_files.py."""


def broken(input_shape, num_classes):
    raise RuntimeError("this factory needs a GPU")


def needs_depth(depth, num_classes):
    raise AssertionError("never called")
'''


def finished_run(d: Path, *, label: str | None = None, names=None) -> Path:
    """A finished run directory ``d/out`` (tests/test_report.py's hand-made run),
    with one more job labelled ``label`` and class names ``names`` if given."""
    run_dir = make_run(d / "out")
    with RunStore.open(run_dir) as store:
        if label is not None:
            store.add_job(_job("fgsm-x", label, "fgsm-x"))
            store.write_batch("fgsm-x", _columns([0, 1, 2], [0, 1, 2], [1, 0, 1]))
            store.mark_done("fgsm-x")
        if names is not None:
            store.set_meta("class_names", list(names))
    return run_dir


# ------------------------------------------------------------------ the cases


@dataclass(frozen=True)
class Case:
    id: str
    what: str  # the mistake or situation, as docs/robustness.md shows it
    setup: Callable[[Path, Shared], list]  # writes files into the directory, returns argv
    phrase: str  # must appear in the line shown
    code: int = 1  # 0: the command succeeds (its stdout line, or one warning, holds the phrase)
    check: Callable[[Path, subprocess.CompletedProcess], None] | None = None
    progress: bool = False  # the command prints progress lines on stderr before its one line
    read_only: bool = False  # run the command without root's right to override permissions
    warning: bool = False  # a success with exactly one `labelflip: warning:` line
    env: Callable[[Path], dict] | None = None  # more environment variables, given the directory

    def __str__(self) -> str:
        return self.id


EVALUATE = ["evaluate", "model.safetensors"]


def _sidecar(d: Path, s: Shared, **changes) -> list:
    copy_model(s, d)
    edit_sidecar(d / "model.safetensors", **changes)
    return EVALUATE


# ---- 16-bit greyscale PNGs


def _digits16() -> tuple[np.ndarray, np.ndarray]:
    from labelflip.data import load_dataset

    ds = load_dataset("digits", "test")
    return np.rint(ds.x.numpy()[:, 0] * 65535).astype(np.uint16), ds.y.numpy()


def _gray16(d: Path, s: Shared) -> list:
    copy_model(s, d)
    values, labels = _digits16()
    for i, (v, y) in enumerate(zip(values, labels, strict=True)):
        save_gray16(d / "imgs" / "test" / str(y) / f"{i:04d}.png", v)
    return [*EVALUATE, "--dataset", "imagefolder:imgs"]


def _gray16_check(d: Path, proc) -> None:
    """The accuracy printed is the model's on the 16-bit values / 65535, one channel."""
    from labelflip.models import load_checkpoint
    from labelflip.models.training import predict

    values, labels = _digits16()
    order = np.lexsort((np.arange(len(labels)), labels))  # class folders, then file names
    x = torch.from_numpy(values[order].astype(np.float32) / 65535).unsqueeze(1)
    clf, meta = load_checkpoint(d / "model.safetensors")
    want = float((predict(clf, x) == torch.from_numpy(labels[order])).double().mean())
    line = next(ln for ln in proc.stdout.splitlines() if "accuracy" in ln)
    assert f"(test, {len(labels)} images): accuracy {want:.4f}" in line, line
    # the same images at 8 bits per pixel are the digits test set: same accuracy, give or
    # take a borderline sample moved by the 16-bit rounding (< 1e-5)
    assert abs(want - meta.clean_test_accuracy) <= 2 / len(labels)


# ---- checkpoints written to a read-only or full disk


def _train_read_only(d: Path, s: Shared) -> list:
    read_only_dir(d / "ro")
    return ["train", "--dataset", "digits", "--arch", "digits-cnn", "--epochs", "1",
            "--no-progress", "--out", "ro/model"]  # fmt: skip


def _nothing_in(folder: str) -> Callable:
    def check(d: Path, proc) -> None:
        assert sorted(p.name for p in (d / folder).rglob("*")) == []

    return check


def _import_full_disk(d: Path, s: Shared) -> list:
    copy_model(s, d)
    full_tmpfs(d / "full")
    return ["import-weights", "model.safetensors", "--arch", "digits-cnn", "--dataset", "digits",
            "--out", "full/mine"]  # fmt: skip


def _cache_read_only(d: Path, s: Shared) -> list:
    read_only_dir(d / "cache")
    (d / "run.toml").write_text(config(model='arch = "digits-cnn"\nepochs = 1'))
    return ["run", "run.toml", "--out", "out", "--no-progress", "--no-report"]


# ---- user factories


def _factory(arch: str) -> Callable:
    def setup(d: Path, s: Shared) -> list:
        (d / "factories.py").write_text(USER_FACTORIES)
        return ["train", "--dataset", "digits", "--arch", arch, "--epochs", "1", "--no-progress",
                "--out", "m"]  # fmt: skip

    return setup


# ---- image folders


def _bomb_listing(d: Path, s: Shared) -> list:
    bomb_png(d / "data" / "bomb" / "test" / "a" / "0.png")
    gray_images(d / "data" / "good", "test", {"a": 2, "b": 1})
    return ["datasets", "--data-dir", "data"]


def _bomb_check(d: Path, proc) -> None:
    rows = {ln.split()[0]: ln for ln in proc.stdout.splitlines() if ln.strip()}
    assert "decompression bomb" in rows["imagefolder:bomb"], proc.stdout
    good = rows["imagefolder:good"].split()
    assert good[1:5] == ["yes", "-", "3", "1x8x8"], proc.stdout  # listed as before
    assert {"digits", "mnist", "cifar10"} <= set(rows), proc.stdout  # and so is every other


def _grey_train_rgb_test(d: Path, s: Shared) -> list:
    ten = {str(i): 2 for i in range(10)}
    gray_images(d / "imgs", "train", ten)
    gray_images(d / "imgs", "test", ten)
    for cls in ("3", "7"):
        Image.new("RGB", (8, 8), (200, 10, 10)).save(d / "imgs" / "test" / cls / "1.png")
    return ["train", "--dataset", "imagefolder:imgs", "--arch", "digits-cnn", "--epochs", "1",
            "--no-progress", "--out", "m"]  # fmt: skip


def _ten_classes(d: Path, s: Shared, *, hidden: bool = False) -> list:
    copy_model(s, d)
    gray_images(d / "imgs", "test", {str(i): 2 for i in range(10)})
    if hidden:
        gray_images(d / "imgs", "test", {".ipynb_checkpoints": 1})
    return [*EVALUATE, "--dataset", "imagefolder:imgs"]


def _one_split_only(d: Path, s: Shared) -> list:
    copy_model(s, d)
    gray_images(d / "imgs", "train", {str(i): 2 for i in range(10)})
    gray_images(d / "imgs", "test", {str(i): 2 for i in range(9)})  # no 9 in test
    return [*EVALUATE, "--dataset", "imagefolder:imgs"]


def _import_text(d: Path, s: Shared) -> list:
    (d / "weights.pt").write_text("epoch 3: loss 0.12\n")
    return ["import-weights", "weights.pt", "--arch", "digits-cnn", "--dataset", "digits",
            "--out", "mine"]  # fmt: skip


# ---- run stores and reports


def _export_read_only(d: Path, s: Shared) -> list:
    make_read_only(finished_run(d))
    return ["export", "out", "--out", "records.csv"]


def _export_read_only_check(d: Path, proc) -> None:
    assert sorted(p.name for p in (d / "out").iterdir()) == ["gallery.npz", "records.sqlite"]
    with open(d / "records.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    with RunStore.open(d / "out") as store:
        assert len(rows) == len(store.records()["sample"]) > 0


def _report_read_only(d: Path, s: Shared, out: bool = True) -> list:
    make_read_only(finished_run(d))
    return ["report", "out", *(["--out", "rep"] if out else [])]


def _report_read_only_check(d: Path, proc) -> None:
    assert (d / "rep" / "report.html").is_file() and (d / "rep" / "jobs.csv").is_file()
    assert sorted(p.name for p in (d / "out").iterdir()) == ["gallery.npz", "records.sqlite"]


FORMULA = '=HYPERLINK("http://example.com","x")'


def _csv_formula(d: Path, s: Shared) -> list:
    finished_run(d, label=FORMULA, names=["@cat", "-dog", "+fish"])
    return ["export", "out"]


def _csv_cells(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [cell for row in csv.reader(fh) for cell in row]


def _csv_formula_check(d: Path, proc) -> None:
    cells = _csv_cells(d / "out" / "records.csv")
    assert f"'{FORMULA}" in cells and FORMULA not in cells
    assert not [c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r")]


def _stale_tmp(d: Path, s: Shared) -> list:
    run_dir = finished_run(d)
    (run_dir / "report").mkdir()
    child = subprocess.Popen(["true"])  # a process that has exited
    child.wait()
    (run_dir / "report" / f".report.html.{child.pid}.tmp").write_text("<html>half")
    (run_dir / "report" / f".jobs.csv.{os.getpid()}.tmp").write_text("live writer")
    return ["report", "out"]


def _stale_tmp_check(d: Path, proc) -> None:
    left = sorted(p.name for p in (d / "out" / "report").glob(".*.tmp"))
    assert left == [f".jobs.csv.{os.getpid()}.tmp"]  # a live writer's file is not touched
    assert (d / "out" / "report" / "report.html").is_file()


CASES = [
    # ---- image folders
    Case("gray16-png", "16-bit greyscale PNGs (mode `I;16`) of the digits test set",
         _gray16, "accuracy", code=0, check=_gray16_check),
    Case("bomb-in-listing", "`labelflip datasets` with an image folder whose first image is a "
         "decompression bomb", _bomb_listing, "decompression bomb", code=0, check=_bomb_check),
    Case("grey-train-rgb-test", "greyscale training images, two RGB test images",
         _grey_train_rgb_test, "imgs/test/3/1.png, imgs/test/7/1.png"),
    Case("hidden-class-folder", "a hidden folder (`.ipynb_checkpoints`) among the class folders",
         lambda d, s: _ten_classes(d, s, hidden=True), "ignoring hidden folder",
         code=0, warning=True),
    Case("class-in-one-split", "a class folder in `train/` but not in `test/`",
         _one_split_only, "in one split only: 9 (train only)", code=0, warning=True),
    # ---- checkpoints written
    Case("train-out-read-only", "`train --out` into a read-only directory",
         _train_read_only, "cannot write checkpoint ro/model.safetensors: Permission denied",
         check=_nothing_in("ro"), progress=True, read_only=True),
    Case("import-out-full-disk", "`import-weights --out` onto a full disk (a 16 kB tmpfs)",
         _import_full_disk, "cannot write checkpoint full/mine.safetensors: No space left",
         check=_nothing_in("full")),
    Case("model-cache-read-only", "a run that trains its model, the model cache read-only",
         _cache_read_only, "cannot write checkpoint cache/models/", check=_nothing_in("cache"),
         progress=True, read_only=True, env=lambda d: {"LABELFLIP_CACHE": "cache"}),
    # ---- checkpoint sidecars
    Case("sidecar-bounds", "sidecar `bounds = [0.0]`",
         lambda d, s: _sidecar(d, s, bounds=[0.0]), "'bounds' must be [low, high]"),
    Case("sidecar-class-names", "sidecar class names that are numbers",
         lambda d, s: _sidecar(d, s, class_names=list(range(10))),
         "'class_names' must be a list of strings"),
    Case("sidecar-duplicate-names", "sidecar class names with a duplicate",
         lambda d, s: _sidecar(d, s, class_names=[*"012345678", "1"]),
         "'class_names' repeats '1'"),
    Case("sidecar-encoding", "sidecar `encoding = \"onehot\"` (a bare string)",
         lambda d, s: _sidecar(d, s, encoding="onehot"),
         "'encoding' must be an object with a 'kind'"),
    Case("sidecar-shape-2d", "sidecar `input_shape = [8, 8]`",
         lambda d, s: _sidecar(d, s, input_shape=[8, 8]),
         "'input_shape' must be [channels, height, width]"),
    Case("sidecar-shape-string", "sidecar `input_shape = \"1x8x8\"`",
         lambda d, s: _sidecar(d, s, input_shape="1x8x8"),
         "'input_shape' must be [channels, height, width]"),
    Case("sidecar-mean-string", "sidecar `mean = \"0.5\"`",
         lambda d, s: _sidecar(d, s, mean="0.5"), "'mean' must be a list of numbers"),
    # ---- user architectures
    Case("arch-colon", "`--arch :`", _factory(":"), "must read module:function"),
    Case("arch-not-factory", "`--arch math:sqrt` (a function of other arguments)",
         _factory("math:sqrt"), "user model 'math:sqrt' is not a model factory"),
    Case("arch-not-callable", "`--arch labelflip:__version__` (a string)",
         _factory("labelflip:__version__"), "is a str, not a function"),
    Case("arch-factory-raises", "a user factory that raises",
         _factory("factories:broken"),
         "user model 'factories:broken' failed: RuntimeError: this factory needs a GPU"),
    # ---- weights imported
    Case("import-text-file", "`import-weights` of a text file", _import_text,
         "weights.pt is not a weights file"),
    # ---- run stores and reports
    Case("export-read-only", "`export` of a finished run on read-only media",
         _export_read_only, "records.csv", code=0, check=_export_read_only_check,
         read_only=True),
    Case("report-read-only", "`report --out` of a finished run on read-only media",
         _report_read_only, "report: rep/report.html", code=0, check=_report_read_only_check,
         read_only=True),
    Case("report-read-only-no-out", "`report` of a run on read-only media, without `--out`",
         lambda d, s: _report_read_only(d, s, out=False),
         "cannot create report directory out/report: Permission denied; write the report "
         "elsewhere with --out DIR", read_only=True),
    Case("csv-formula", "an attack label and class names starting with `=`, `@`, `-`, `+`",
         _csv_formula, "out/records.csv", code=0, check=_csv_formula_check),
    Case("stale-report-tmp", "a `.tmp` in `report/` left by a writer that was killed",
         _stale_tmp, "report: out/report/report.html", code=0, check=_stale_tmp_check),
]  # fmt: skip


def _shown(case: Case, proc, d: Path) -> str:
    """The line the table shows: the error or warning, else the stdout line with the phrase
    (for the CSV case: the cell written)."""
    if case.code or case.warning:
        ours = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("labelflip: ")]
        return (ours or [""])[-1]
    if case.id == "csv-formula":
        path = d / "out" / "records.csv"
        cells = _csv_cells(path) if path.is_file() else []
        return f"records.csv, label cell: {next((c for c in cells if FORMULA in c), '')}"
    line = next((ln.strip() for ln in proc.stdout.splitlines() if case.phrase in ln), "")
    return re.sub(r"\s{2,}", "  ", line)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_case(case: Case, shared: Shared, tmp_path: Path):  # noqa: F811
    try:
        args = case.setup(tmp_path, shared)
        env = {**shared.env, **(case.env(tmp_path) if case.env else {})}
        proc = cli(args, tmp_path, env, preexec=_drop_dac_override if case.read_only else None)
    finally:
        for p in (tmp_path / "out", tmp_path / "ro", tmp_path / "cache"):
            make_writable(p)
    record(case.id, case.what, args, proc, tmp_path, "error" if case.code else "ok",
           _shown(case, proc, tmp_path))  # fmt: skip
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    assert proc.returncode == case.code, out
    lines = proc.stderr.strip().splitlines()
    ours = [ln for ln in lines if ln.startswith("labelflip: ")]
    if case.code:
        assert len(ours) == 1 and lines[-1] == ours[0], out
        assert len(lines) == 1 or case.progress, out
        assert ours[0].startswith("labelflip: error: "), out
        assert case.phrase in ours[0], out
    elif case.warning:
        assert len(lines) == 1 and lines[0].startswith("labelflip: warning: "), out
        assert case.phrase in lines[0], out
    else:
        assert lines == [], out
        assert case.phrase in proc.stdout, out
    if case.check is not None:
        case.check(tmp_path, proc)


# ------------------------------------------------------------------ image folders, closer


def test_gray16_is_read_at_full_depth(tmp_path):
    from labelflip.data import load_dataset

    v = np.array([[0, 1, 255, 256], [1000, 32768, 65534, 65535]], dtype=np.uint16)
    save_gray16(tmp_path / "test" / "a" / "0.png", v)
    save_gray16(tmp_path / "test" / "a" / "1.png", 65535 - v)
    ds = load_dataset(f"imagefolder:{tmp_path}", "test")
    assert ds.x.shape == (2, 1, 2, 4)
    want = torch.from_numpy(np.stack([v, 65535 - v]).astype(np.float32) / 65535).unsqueeze(1)
    assert torch.equal(ds.x, want)
    assert len(torch.unique(ds.x[0])) == 8  # not two levels


def test_gray16_beside_8bit_and_colour(tmp_path):
    """8-bit greyscale beside 16-bit: both on one scale (k/255 = 257k/65535);
    a 16-bit greyscale image in a colour split: its full depth in all three channels."""
    from labelflip.data import load_dataset

    v = np.array([[0, 4660, 65535]], dtype=np.uint16)
    k = np.array([[0, 18, 255]], dtype=np.uint8)
    save_gray16(tmp_path / "a" / "test" / "c" / "0.png", v)
    Image.fromarray(k).save(tmp_path / "a" / "test" / "c" / "1.png")
    ds = load_dataset(f"imagefolder:{tmp_path / 'a'}", "test")
    assert ds.x.shape == (2, 1, 1, 3)
    assert torch.equal(ds.x[0, 0], torch.from_numpy(v.astype(np.float32) / 65535))
    assert torch.equal(ds.x[1, 0], torch.from_numpy(k.astype(np.float32) / 255))

    save_gray16(tmp_path / "b" / "test" / "c" / "0.png", v)
    rgb = np.array([[[255, 0, 10], [1, 2, 3], [0, 0, 0]]], dtype=np.uint8)
    Image.fromarray(rgb, "RGB").save(tmp_path / "b" / "test" / "c" / "1.png")
    ds = load_dataset(f"imagefolder:{tmp_path / 'b'}", "test")
    assert ds.x.shape == (2, 3, 1, 3)
    for c in range(3):
        assert torch.equal(ds.x[0, c], torch.from_numpy(v.astype(np.float32) / 65535))
    assert torch.equal(ds.x[1], torch.from_numpy(rgb.astype(np.float32) / 255).permute(2, 0, 1))


def test_gray16_status_shape(tmp_path):
    from labelflip.data import ImageFolderSource

    save_gray16(tmp_path / "test" / "a" / "0.png", np.zeros((5, 7), np.uint16))
    assert ImageFolderSource(tmp_path).status().input_shape == (1, 5, 7)


def test_bomb_is_one_row_of_the_listing(tmp_path):
    from labelflip.data import dataset_statuses

    bomb_png(tmp_path / "bomb" / "test" / "a" / "0.png")
    gray_images(tmp_path / "good", "test", {"a": 1})
    statuses = {st.name: st for st in dataset_statuses(tmp_path)}
    assert "decompression bomb" in statuses["imagefolder:bomb"].note
    assert statuses["imagefolder:bomb"].input_shape is None
    assert statuses["imagefolder:good"].input_shape == (1, 8, 8)
    assert {"digits", "mnist", "fashion-mnist", "cifar10", "mnist-grid"} <= set(statuses)


def test_dataset_status_errors_are_kept_per_dataset(tmp_path, monkeypatch):
    from labelflip import data

    def broken(data_dir):
        raise LabelflipError("mnist: labels file is corrupt")

    monkeypatch.setattr(data.MNIST, "status", broken)
    statuses = {st.name: st for st in data.dataset_statuses(tmp_path)}
    assert statuses["mnist"].note == "error: mnist: labels file is corrupt"
    assert not statuses["mnist"].present
    assert statuses["digits"].present


def test_hidden_and_one_split_folders_warn_once(tmp_path):
    from labelflip.data import load_dataset

    gray_images(tmp_path, "train", {"a": 1, "b": 1, "c": 1})
    gray_images(tmp_path, "test", {"a": 1, "b": 1, "d": 1, ".git": 1})
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ds = load_dataset(f"imagefolder:{tmp_path}", "test")
    texts = [str(w.message) for w in seen if w.category is LabelflipWarning]
    assert len(texts) == 2, texts
    assert "ignoring hidden folder(s) .git in" in texts[0]
    assert "in one split only: c (train only), d (test only)" in texts[1]
    assert ds.class_names == ("a", "b", "c", "d")  # labels as before: the union of both splits
    assert ds.y.tolist() == [0, 1, 3]


def test_no_warning_for_a_clean_folder_or_a_single_split(tmp_path):
    from labelflip.data import load_dataset

    gray_images(tmp_path / "both", "train", {"a": 1, "b": 1})
    gray_images(tmp_path / "both", "test", {"a": 1, "b": 1})
    gray_images(tmp_path / "one", "test", {"a": 1, "b": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset(f"imagefolder:{tmp_path / 'both'}", "test")
        load_dataset(f"imagefolder:{tmp_path / 'one'}", "test")


def test_split_mismatch_names_the_files(tmp_path):
    from labelflip.data import check_splits_match, load_dataset

    gray_images(tmp_path / "c", "train", {"a": 2, "b": 2})
    gray_images(tmp_path / "c", "test", {"a": 2, "b": 2})
    Image.new("RGB", (8, 8)).save(tmp_path / "c" / "test" / "b" / "0.png")
    name = f"imagefolder:{tmp_path / 'c'}"
    train, test = load_dataset(name, "train"), load_dataset(name, "test")
    with pytest.raises(LabelflipError) as e:
        check_splits_match(train, test)
    msg = str(e.value)
    assert "train images are greyscale (1 channel)" in msg
    assert f"1 of the 4 test images are colour: {tmp_path / 'c' / 'test' / 'b' / '0.png'}" in msg

    gray_images(tmp_path / "s", "train", {"a": 1})
    gray_images(tmp_path / "s", "test", {"a": 1}, size=(6, 5))
    name = f"imagefolder:{tmp_path / 's'}"
    with pytest.raises(LabelflipError, match=r"train images are 8x8 but the test images are 6x5"):
        check_splits_match(load_dataset(name, "train"), load_dataset(name, "test"))
    check_splits_match(train, train)  # the same shape: nothing to say


# ------------------------------------------------------------------ checkpoints, closer


def _tiny_checkpoint(path: Path):
    from labelflip.models import CheckpointMeta, build_model, save_checkpoint

    torch.manual_seed(0)
    model = build_model("digits-cnn", (1, 8, 8), 3)
    meta = CheckpointMeta("digits-cnn", "digits", ["a", "b", "c"], [1, 8, 8])
    return save_checkpoint(path, model, meta), model, meta


def test_failed_checkpoint_write_keeps_the_old_one_and_leaves_nothing(tmp_path, monkeypatch):
    from labelflip.models import build_model, load_checkpoint, save_checkpoint

    path, _, meta = _tiny_checkpoint(tmp_path / "m")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_fsync = os.fsync
    calls = []

    def full(fd):
        calls.append(fd)
        if len(calls) == 2:  # the sidecar's, after the weights were written
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    other = build_model("digits-cnn", (1, 8, 8), 3)
    with pytest.raises(LabelflipError) as e:
        save_checkpoint(tmp_path / "m", other, meta)
    assert str(e.value) == (
        f"cannot write checkpoint {path}: No space left on device "
        "(the disk is full or a file-size limit was reached)"
    )
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    load_checkpoint(path)  # still the old, whole checkpoint


def test_checkpoint_write_is_durable_and_replaces(tmp_path, monkeypatch):
    from labelflip.models import build_model, load_checkpoint, save_checkpoint
    from labelflip.models.checkpoint import sha256_file

    path, _, meta = _tiny_checkpoint(tmp_path / "m")
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    other = build_model("digits-cnn", (1, 8, 8), 3)
    save_checkpoint(tmp_path / "m", other, meta)
    assert len(synced) >= 3  # weights, sidecar, directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]
    (tmp_path / "plain").write_text("")  # a new file: the permissions the umask gives
    mode = (tmp_path / "plain").stat().st_mode & 0o777
    assert path.stat().st_mode & 0o777 == mode == path.with_suffix(".json").stat().st_mode & 0o777
    clf, meta2 = load_checkpoint(path)
    assert meta2.weights_sha256 == sha256_file(path)
    for k, v in other.state_dict().items():
        assert torch.equal(clf.model.state_dict()[k], v)


GOOD_SIDECAR = {
    "architecture": "digits-cnn",
    "dataset": "digits",
    "class_names": ["a", "b", "c"],
    "input_shape": [1, 8, 8],
}


@pytest.mark.parametrize(
    ("change", "phrase"),
    [
        ({"bounds": [0.0]}, "'bounds' must be [low, high] with low < high, got [0.0]"),
        ({"bounds": [1.0, 0.0]}, "'bounds' must be [low, high] with low < high"),
        ({"bounds": ["0", 1]}, "'bounds' must be [low, high]"),
        ({"class_names": [1, 2, 3]}, "'class_names' must be a list of strings, got [1, 2, 3]"),
        ({"class_names": []}, "'class_names' must not be empty"),
        ({"class_names": ["a", "b", "a"]}, "'class_names' repeats 'a'"),
        ({"encoding": "onehot"}, "'encoding' must be an object with a 'kind', got 'onehot'"),
        ({"encoding": {"kind": 3}}, "'encoding' must be an object with a 'kind'"),
        ({"input_shape": [8, 8]}, "'input_shape' must be [channels, height, width]"),
        ({"input_shape": "1x8x8"}, "'input_shape' must be [channels, height, width]"),
        ({"input_shape": [1, 0, 8]}, "positive integers"),
        ({"input_shape": [1, 8.5, 8]}, "positive integers"),
        ({"mean": "0.5"}, "'mean' must be a list of numbers, got '0.5'"),
        ({"mean": [0.1, 0.2]}, "'mean' has 2 values for inputs with 1 channel"),
        ({"std": [0.0]}, "'std' must be positive"),
        ({"std": [float("nan")]}, "'std' must be a list of numbers"),
        ({"architecture": 5}, "'architecture' must be a non-empty string"),
        ({"dataset": None}, "'dataset' must be a string"),
        ({"clean_test_accuracy": "high"}, "'clean_test_accuracy' must be a number"),
        ({"seed": 1.5}, "'seed' must be an integer"),
        ({"training": []}, "'training' must be an object"),
        ({"versions": "1.0"}, "'versions' must be an object"),
        ({"weights_sha256": 12}, "'weights_sha256' must be a string"),
    ],
)
def test_malformed_sidecar_fields(tmp_path, change, phrase):
    from labelflip.models import load_checkpoint, read_meta

    path, _, _ = _tiny_checkpoint(tmp_path / "m")
    sidecar = json.loads(path.with_suffix(".json").read_text())
    sidecar.update(change)
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    for load in (read_meta, load_checkpoint):
        with pytest.raises(LabelflipError) as e:
            load(path)
        assert str(e.value).startswith(f"checkpoint sidecar {path.with_suffix('.json')}: ")
        assert phrase in str(e.value)
        assert "\n" not in str(e.value)


def test_well_formed_sidecars_still_load(tmp_path):
    from labelflip.models import read_meta

    path, _, meta = _tiny_checkpoint(tmp_path / "m")
    assert read_meta(path) == meta
    sidecar = json.loads(path.with_suffix(".json").read_text())
    sidecar.update(mean=[0.5], std=[0.25], bounds=[-1, 1], seed=None, extra_key="ignored")
    del sidecar["clean_test_accuracy"]
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    got = read_meta(path)
    assert got.bounds == [-1, 1] and got.mean == [0.5] and got.seed is None


@pytest.mark.parametrize(
    ("arch", "phrase"),
    [
        (":", "user model ':' must read module:function"),
        ("math:", "user model 'math:' must read module:function"),
        ("a b:c", "must read module:function"),
        ("math:sqrt", "user model 'math:sqrt' is not a model factory: it needs argument x"),
        ("labelflip:__version__", "user model 'labelflip:__version__' is a str, not a function"),
        ("factories:broken", "user model 'factories:broken' failed: RuntimeError: this factory"),
        ("factories:needs_depth", "is not a model factory: it needs argument depth"),
        ("nosuchmodule_xyz:f", "cannot import user model 'nosuchmodule_xyz:f'"),
        ("factories:nope", "cannot import user model 'factories:nope'"),
    ],
)
def test_user_architecture_errors(tmp_path, monkeypatch, arch, phrase):
    from labelflip.models import build_model

    (tmp_path / "factories.py").write_text(USER_FACTORIES)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("factories", None)
    with pytest.raises(LabelflipError) as e:
        build_model(arch, (1, 8, 8), 10)
    assert phrase in str(e.value)


def test_user_module_that_fails_to_import(tmp_path, monkeypatch):
    from labelflip.models import build_model

    (tmp_path / "badimport.py").write_text("import torch\nraise ValueError('needs CUDA')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(LabelflipError, match="cannot import user model 'badimport:f': ValueError"):
        build_model("badimport:f", (1, 8, 8), 10)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("notes.pt", b"epoch 3: loss 0.12\n"),
        ("single.pt", b"a"),
        ("empty.pth", b""),
        ("noise.bin", bytes(range(256)) * 4),
        ("other.zip", None),  # a zip archive that is not a torch file
        ("bad.safetensors", b"not safetensors at all"),
    ],
)
def test_import_of_files_that_are_not_weights(tmp_path, name, data):
    from labelflip.models import import_state_dict

    path = tmp_path / name
    if data is None:
        import zipfile

        with zipfile.ZipFile(path, "w") as z:
            z.writestr("readme.txt", "hello")
    else:
        path.write_bytes(data)
    with pytest.raises(LabelflipError) as e:
        import_state_dict(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_import_still_reads_state_dicts(tmp_path):
    from safetensors.torch import save_file

    from labelflip.models import import_state_dict

    state = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(2)}
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "a.pth")
    save_file(state, str(tmp_path / "b.safetensors"))
    for name in ("a.pth", "b.safetensors"):
        got = import_state_dict(tmp_path / name)
        assert got.keys() == state.keys()
        assert all(torch.equal(got[k], state[k]) for k in state)


# ------------------------------------------------------------------ run stores, closer


def test_read_only_store_reads_and_refuses_writes(tmp_path):
    run_dir = finished_run(tmp_path)
    with RunStore.open(run_dir) as store:
        want = store.records()
    with RunStore.open(run_dir, read_only=True) as store:
        assert store.read_only
        got = store.records()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
        with pytest.raises(LabelflipError, match="opened read-only"):
            store.set_meta("x", 1)
        with pytest.raises(LabelflipError, match="opened read-only"):
            store.mark_done("pgd-0.1")
    with RunStore.open(run_dir) as store:
        assert not store.read_only and store.meta("x") is None


def _open_read_only_in_child(run_dir: Path) -> subprocess.CompletedProcess:
    code = (
        "import sys\nfrom labelflip.store import RunStore\nfrom labelflip.errors import "
        "LabelflipError\ntry:\n    with RunStore.open(sys.argv[1], read_only=True) as s:\n"
        "        print(len(s.records()['sample']), s.jobs()[0].label)\n"
        "except LabelflipError as e:\n    print('error:', e)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, str(run_dir)],
        preexec_fn=_drop_dac_override,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_read_only_media_with_an_unfinished_journal(tmp_path):
    """A store copied while a writer had it open (records in ``-wal``): read
    through the journal when its ``-shm`` came along, refused (not read
    without those records) when it did not."""
    run_dir = finished_run(tmp_path / "src")
    with RunStore.open(run_dir) as store:
        n = len(store.records()["sample"])
    con = sqlite3.connect(run_dir / "records.sqlite", isolation_level=None)
    con.execute("PRAGMA wal_autocheckpoint=0")
    con.execute("UPDATE jobs SET label = 'changed'")  # held in the -wal while con is open
    copies = {}
    for name, files in {"both": ("", "-wal", "-shm"), "no-shm": ("", "-wal")}.items():
        folder = tmp_path / name
        folder.mkdir()
        for suffix in files:
            shutil.copy(run_dir / f"records.sqlite{suffix}", folder / f"records.sqlite{suffix}")
        copies[name] = folder
    con.close()
    try:
        for folder in copies.values():
            make_read_only(folder)
            if not _can_drop_write(folder):
                pytest.skip("cannot make a read-only directory here")
        both = _open_read_only_in_child(copies["both"])
        assert both.stdout.strip() == f"{n} changed", both.stdout + both.stderr
        no_shm = _open_read_only_in_child(copies["no-shm"])
        assert no_shm.stdout.startswith("error: "), no_shm.stdout + no_shm.stderr
        assert "records.sqlite-wal" in no_shm.stdout and "writable" in no_shm.stdout
    finally:
        for folder in copies.values():
            make_writable(folder)


# ------------------------------------------------------------------ CSV cells


@pytest.mark.parametrize(
    ("cell", "want"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("pgd (eps=0.1)", "pgd (eps=0.1)"),
        ("", ""),
        (-0.5, -0.5),
        (None, None),
        (3, 3),
    ],
)
def test_csv_cell(cell, want):
    from labelflip._text import csv_cell

    assert csv_cell(cell) == want


def test_report_csvs_are_neutralised(tmp_path):
    from labelflip.report import write_report

    run_dir = finished_run(tmp_path, label=FORMULA, names=["@cat", "-dog", "+fish"])
    report = write_report(run_dir, n_boot=20).parent
    for path in report.glob("*.csv"):
        cells = _csv_cells(path)
        assert not [c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r")], path
        assert not [c for c in cells if c[:1] == "-" and not _number(c)], path
    assert f"'{FORMULA}" in _csv_cells(report / "jobs.csv")
    assert "'@cat" in _csv_cells(report / "flip_matrix__fgsm-x.csv")


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_export_keeps_numbers_numeric(tmp_path):
    run_dir = finished_run(tmp_path, label="-neg")
    with RunStore.open(run_dir) as store:
        store.add_job(_job("pgd-neg", "plain", "g", -0.5))
        store.write_batch("pgd-neg", _columns([0], [0], [1]))
        path = store.export_csv(tmp_path / "r.csv")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["sweep_value"] for r in rows if r["job_id"] == "pgd-neg"} == {"-0.5"}
    assert {r["label"] for r in rows if r["job_id"] == "fgsm-x"} == {"'-neg"}

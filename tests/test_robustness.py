"""Hardening (issue 8): every bad input gets one clear line, nothing is lost,
nothing unsafe runs.

- ``test_bad_input``: a table of mistakes a real user makes, each run as the
  user runs it (``python -m labelflip.cli ...`` in a fresh directory). Each
  must exit with the expected status and print exactly one line on stderr,
  ``labelflip: error: ...`` holding the case's key phrase, never a traceback;
  a ``run`` that fails before any work leaves no run directory behind. Two
  cases succeed with exactly one ``labelflip: warning:`` line.
- Ctrl-C, a full disk and SIGKILL at random points: the run stops with one
  line, and ``--resume`` ends with exactly the records of an uninterrupted run.
- Determinism and the run manifest; no unpickling of user data (planted
  pickles, a scan of the source); the report escapes user strings in Chromium.

``docs/robustness.md`` is generated from these runs: ``python
tests/robustness_doc.py`` runs this file with ``LABELFLIP_ROBUSTNESS_JSON``
set, which makes every case record its command, exit status and message.
"""

from __future__ import annotations

import ast
import gzip
import importlib.util
import json
import os
import pickle
import resource
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from labelflip.config import load_config
from labelflip.models import load_checkpoint, save_checkpoint
from labelflip.models.checkpoint import CheckpointMeta, library_versions, sha256_file
from labelflip.store import RunStore

SRC = Path(__file__).resolve().parents[1] / "src" / "labelflip"
TABLE: list[dict] = []  # rows of docs/robustness.md, in the order the tests ran

# ------------------------------------------------------------------ the shared model


USER_MODELS = '''\
"""User architectures (module:function) that misbehave, for tests/test_robustness.py."""
from torch import nn

from labelflip.models.architectures import DigitsCNN


class Flat(nn.Module):
    """A linear model on flattened inputs, with ``outputs`` logits, NaN ones if ``nan``."""

    def __init__(self, input_shape, outputs, nan=False):
        super().__init__()
        c, h, w = input_shape
        self.fc = nn.Linear(c * h * w, outputs)
        self.nan = nan

    def forward(self, x):
        out = self.fc(x.flatten(1))
        return out * float("nan") if self.nan else out


class MCDropoutNet(DigitsCNN):
    """Monte-Carlo dropout: train() ignores eval, the model would stay stochastic."""

    def train(self, mode=True):
        return super().train(True)


def nan_model(input_shape, num_classes):
    return Flat(input_shape, num_classes, nan=True)


def five_logits(input_shape, num_classes):
    return Flat(input_shape, 5)  # 5 outputs whatever the classes


def unflattened(input_shape, num_classes):
    c, h, w = input_shape
    return nn.Linear(c * h * w, num_classes)  # forgets to flatten: fails on image batches


def mc_dropout(input_shape, num_classes):
    return MCDropoutNet(input_shape, num_classes)
'''


@dataclass
class Shared:
    root: Path
    model: Path  # a digits-cnn trained for 2 epochs (weights; the sidecar is beside it)
    meta: CheckpointMeta
    env: dict


def _cli_env(cache: Path, data: Path) -> dict:
    return {
        **os.environ,
        "LABELFLIP_OFFLINE": "1",
        "LABELFLIP_CACHE": str(cache),
        "LABELFLIP_DATA": str(data),
        "OMP_NUM_THREADS": "1",
    }


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Shared:
    """One trained digits-cnn and the user-model checkpoints every case copies."""
    from safetensors.torch import load_file

    from labelflip.models.fit import train_and_save
    from labelflip.models.training import TrainSettings

    root = tmp_path_factory.mktemp("robust-shared")
    settings = TrainSettings(epochs=2, batch_size=64, lr=0.05, seed=0)
    path, _, _ = train_and_save("digits-cnn", "digits", settings, root / "model", progress=False)
    _, meta = load_checkpoint(path)

    (root / "badmodels.py").write_text(USER_MODELS)
    spec = importlib.util.spec_from_file_location("badmodels", root / "badmodels.py")
    user = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(user)
    torch.manual_seed(0)
    for name, model in {
        "nan_model": user.nan_model((1, 8, 8), 10),
        "five_logits": user.five_logits((1, 8, 8), 10),
        "mc_dropout": user.mc_dropout((1, 8, 8), 10),
        "unflattened": user.unflattened((1, 8, 8), 10),
    }.items():
        if name == "mc_dropout":
            model.load_state_dict(load_file(str(path)))  # the trained weights
        save_checkpoint(
            root / name,
            model,
            CheckpointMeta(
                architecture=f"badmodels:{name}",
                dataset="digits",
                class_names=list(meta.class_names),
                input_shape=[1, 8, 8],
                mean=meta.mean,
                std=meta.std,
                clean_test_accuracy=meta.clean_test_accuracy if name == "mc_dropout" else None,
            ),
        )
    env = _cli_env(root / "cache", root / "no-data")
    return Shared(root, path, meta, env)


def cli(args, cwd, env, *, preexec=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "labelflip.cli", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=preexec,
    )


def record(case: str, what: str, args, proc, cwd: Path, kind: str = "error") -> None:
    """Keep a row for docs/robustness.md: the command and the line it printed."""
    lines = proc.stderr.strip().splitlines()
    ours = [ln for ln in lines if ln.startswith("labelflip: ")]
    shown = (ours or lines or [""])[-1]
    TABLE.append(
        {
            "case": case,
            "what": what,
            "command": "labelflip " + " ".join(map(str, args)),
            "exit": proc.returncode,
            "message": shown.replace(str(cwd), ".").replace(str(cwd.resolve()), "."),
            "kind": kind,
        }
    )


@pytest.fixture(scope="module", autouse=True)
def _write_table():
    yield
    out = os.environ.get("LABELFLIP_ROBUSTNESS_JSON")
    if out:
        Path(out).write_text(json.dumps(TABLE, indent=1, ensure_ascii=False))


# ------------------------------------------------------------------ building bad inputs


def config(
    *,
    top: str = "",
    data: str = 'dataset = "digits"\nsamples = 20',
    model: str = 'checkpoint = "model.safetensors"',
    attacks: str = 'attack = "fgsm"\neps = 0.1',
) -> str:
    return f"""{top}
name = "robust"
seed = 0
batch_size = 10
white_noise = 20
gallery = 2

[data]
{data}

[model]
{model}

[similarity]
perceptual = false
hierarchy = "none"
confusion = false

[[attacks]]
{attacks}
"""


RUN = ["run", "run.toml", "--out", "out", "--no-progress", "--no-report"]


def run_with(d: Path, s: Shared, **parts) -> list[str]:
    """Write ``run.toml`` (the base config with ``parts`` replaced) and the model."""
    (d / "run.toml").write_text(config(**parts))
    copy_model(s, d)
    return RUN


def copy_model(s: Shared, d: Path, src: Path | None = None, name: str = "model") -> Path:
    src = src or s.model
    for suffix in (".safetensors", ".json"):
        shutil.copy(src.with_suffix(suffix), d / f"{name}{suffix}")
    return d / f"{name}.safetensors"


def edit_sidecar(path: Path, **changes) -> None:
    sidecar = path.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta.update(changes)
    sidecar.write_text(json.dumps(meta))


def user_model(s: Shared, d: Path, name: str) -> None:
    shutil.copy(s.root / "badmodels.py", d / "badmodels.py")
    copy_model(s, d, s.root / f"{name}.safetensors", name)


def idx(magic: int, array: np.ndarray) -> bytes:
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()


def mnist_files(d: Path, *, labels=None, label_magic=2049, gz_cut=0) -> None:
    folder = d / "data" / "mnist"
    folder.mkdir(parents=True)
    images = idx(2051, np.zeros((20, 28, 28), np.uint8))
    if gz_cut:
        (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(images)[:-gz_cut])
    else:
        (folder / "t10k-images-idx3-ubyte").write_bytes(images)
    y = np.arange(20) % 10 if labels is None else np.asarray(labels)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(idx(label_magic, y))


MNIST = 'dataset = "mnist"\ndata_dir = "data"'


def cifar_batch(d: Path, obj) -> None:
    folder = d / "data" / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "test_batch").write_bytes(pickle.dumps(obj, protocol=2))


class Planted:
    """A pickle whose loading would create the file ``marker`` (a shell command)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def images(d: Path, classes: dict[str, int], size=(8, 8), mode="L") -> str:
    from PIL import Image

    for cls, count in classes.items():
        folder = d / "imgs" / "test" / cls
        folder.mkdir(parents=True)
        for i in range(count):
            Image.new(mode, size, color=40 * i).save(folder / f"{i}.png")
    return 'dataset = "imagefolder:imgs"'


def made_run(s: Shared, d: Path) -> Path:
    """A real, finished run directory ``d/out`` of the base config (run in-process)."""
    from labelflip.run import run

    copy_model(s, d)
    (d / "run.toml").write_text(config(model=f'checkpoint = "{d / "model.safetensors"}"'))
    run(load_config(d / "run.toml"), run_dir=d / "out", progress=False)
    return d / "out"


# ------------------------------------------------------------------ the cases


@dataclass(frozen=True)
class Case:
    id: str
    what: str  # the mistake, as docs/robustness.md shows it
    setup: Callable[[Path, Shared], list]  # writes files into the directory, returns argv
    phrase: str  # must appear in the one line
    code: int = 1  # 0: the run succeeds with one warning line holding the phrase
    check: Callable[[Path], None] | None = None  # more assertions on the directory afterwards

    def __str__(self) -> str:
        return self.id


def no_marker(d: Path) -> None:
    assert not (d / "pwned").exists(), "a planted pickle ran code"


def _resume_other_config(d: Path, s: Shared) -> list:
    made_run(s, d)
    text = (d / "run.toml").read_text().replace("seed = 0", "seed = 1")
    (d / "other.toml").write_text(text)
    return ["run", "other.toml", "--resume", "out", "--no-progress", "--no-report"]


def _resume_changed_model(d: Path, s: Shared) -> list:
    made_run(s, d)
    clf, meta = load_checkpoint(d / "model.safetensors")
    with torch.no_grad():
        clf.model.classifier[-1].bias.add_(0.01)  # a retrained model, say
    save_checkpoint(d / "model", clf.model, meta)
    return ["run", "--resume", "out", "--no-progress", "--no-report"]


def _planted_checkpoint(d: Path, s: Shared) -> list:
    # a pickle named like a checkpoint, with a sidecar whose hash matches it
    copy_model(s, d)
    evil = d / "model.safetensors"
    evil.write_bytes(pickle.dumps(Planted(str(d / "pwned"))))
    edit_sidecar(evil, weights_sha256=sha256_file(evil))
    return ["evaluate", "model.safetensors"]


def _planted_import(d: Path, s: Shared) -> list:
    torch.save({"w": Planted(str(d / "pwned"))}, d / "their_model.pth")
    return ["import-weights", "their_model.pth", "--arch", "digits-cnn", "--dataset", "digits",
            "--out", "mine"]  # fmt: skip


def _pickle_checkpoint(d: Path, s: Shared) -> list:
    torch.save({"w": Planted(str(d / "pwned"))}, d / "model.pt")
    (d / "run.toml").write_text(config(model='checkpoint = "model.pt"'))
    return RUN


def _tampered(d: Path, s: Shared) -> list:
    path = copy_model(s, d)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    (d / "run.toml").write_text(config())
    return RUN


def _sidecar(d: Path, s: Shared, **changes) -> list:
    run_with(d, s)
    edit_sidecar(d / "model.safetensors", **changes)
    return RUN


def _user(d: Path, s: Shared, name: str, trust: bool = True) -> list:
    user_model(s, d, name)
    model = f'checkpoint = "{name}.safetensors"' + (f'\narch = "badmodels:{name}"' * trust)
    (d / "run.toml").write_text(config(model=model))
    return RUN


def _unreadable_image(d: Path, s: Shared) -> list:
    run_with(d, s, data=images(d, {"a": 1}))
    (d / "imgs" / "test" / "a" / "0.png").write_bytes(b"not a png")
    return RUN


def _read_only(d: Path, s: Shared) -> list:
    run_with(d, s)
    (d / "ro").mkdir()
    (d / "ro").chmod(0o555)
    return ["run", "run.toml", "--out", "ro/run", "--no-progress", "--no-report"]


CASES = [
    # ---- the config
    Case("unknown-dataset", "dataset name misspelt: `dataset = \"digts\"`",
         lambda d, s: run_with(d, s, data='dataset = "digts"'),
         "unknown dataset 'digts'; did you mean 'digits'?"),
    Case("unknown-architecture", "architecture misspelt: `arch = \"digits-cn\"`",
         lambda d, s: run_with(d, s, model='arch = "digits-cn"'),
         "unknown architecture 'digits-cn'; did you mean 'digits-cnn'?"),
    Case("unknown-attack", "attack misspelt: `attack = \"pgdd\"`",
         lambda d, s: run_with(d, s, attacks='attack = "pgdd"'),
         "unknown attack 'pgdd'; did you mean 'pgd'?"),
    Case("unknown-key", "top-level key misspelt: `seeed = 1`",
         lambda d, s: run_with(d, s, top="seeed = 1"),
         "unknown key 'seeed'; did you mean 'seed'?"),
    Case("unknown-setting", "attack setting misspelt: `epz = 0.1`",
         lambda d, s: run_with(d, s, attacks='attack = "pgd"\nepz = 0.1'),
         "unknown setting 'epz' for attack 'pgd'; did you mean 'eps'?"),
    Case("wrong-type", "a string for a boolean: `save_adversarials = \"yes\"`",
         lambda d, s: run_with(d, s, top='save_adversarials = "yes"'),
         "'save_adversarials' must be true or false, got 'yes'"),
    Case("wrong-type-setting", "a string for ε: `eps = \"0.1\"`",
         lambda d, s: run_with(d, s, attacks='attack = "fgsm"\neps = "0.1"'),
         "setting 'eps' must be a number, got '0.1'"),
    Case("invalid-toml", "a TOML syntax error: `eps = `",
         lambda d, s: run_with(d, s, attacks='attack = "fgsm"\neps = '),
         "invalid TOML"),
    Case("eps-negative", "ε < 0: `eps = -0.1`",
         lambda d, s: run_with(d, s, attacks='attack = "fgsm"\neps = -0.1'),
         "eps must be >= 0, got -0.1"),
    Case("eps-too-large", "ε beyond the input range [0, 1]: `eps = 2.0` (L∞)",
         lambda d, s: run_with(d, s, attacks='attack = "pgd"\neps = 2.0'),
         "eps=2 exceeds the input range (1) for norm linf"),
    Case("steps-zero", "`steps = 0`",
         lambda d, s: run_with(d, s, attacks='attack = "pgd"\nsteps = 0'),
         "steps must be > 0, got 0"),
    Case("too-many-samples", "more samples than the split has: `samples = 500` (digits test: 359)",
         lambda d, s: run_with(d, s, data='dataset = "digits"\nsamples = 500'),
         "samples = 500 but the range holds only 359 samples"),
    Case("usage", "a non-integer on the command line: `--epochs three`",
         lambda d, s: ["train", "--dataset", "digits", "--arch", "digits-cnn", "--epochs", "three"],
         "argument --epochs: invalid int value: 'three'", code=2),
    # ---- the data
    Case("missing-files", "MNIST asked for, its files absent",
         lambda d, s: (d / "data").mkdir() or run_with(d, s, data=MNIST),
         "mnist: missing t10k-images-idx3-ubyte(.gz), t10k-labels-idx1-ubyte(.gz) in data/mnist"),
    Case("truncated-gzip", "`t10k-images-idx3-ubyte.gz` cut short",
         lambda d, s: mnist_files(d, gz_cut=30) or run_with(d, s, data=MNIST),
         "is corrupt or truncated"),
    Case("idx-magic", "a labels file with the images' magic number (2051)",
         lambda d, s: mnist_files(d, label_magic=2051) or run_with(d, s, data=MNIST),
         "has magic number 2051, expected 2049 for an IDX labels file"),
    Case("labels-out-of-range", "an MNIST label 12 (classes 0-9)",
         lambda d, s: mnist_files(d, labels=[0, 1, 2, 12] + [0] * 16)
         or run_with(d, s, data=MNIST),
         "label 12 at index 3 is out of range 0-9"),
    Case("cifar-shape", "a CIFAR batch of 10x1024 bytes (one channel) instead of 10x3072",
         lambda d, s: cifar_batch(d, {b"data": np.zeros((10, 1024), np.uint8),
                                      b"labels": [0] * 10})
         or run_with(d, s, data='dataset = "cifar10"\ndata_dir = "data"'),
         "has data of uint8 (10, 1024), expected uint8 of shape (N, 3072)"),
    Case("cifar-planted-pickle", "a CIFAR batch that is a pickle running `touch pwned`",
         lambda d, s: cifar_batch(d, Planted(str(d / "pwned")))
         or run_with(d, s, data='dataset = "cifar10"\ndata_dir = "data"'),
         "refusing to unpickle posix.system", check=no_marker),
    Case("imagefolder-empty", "an image folder whose `test/` has no class folders",
         lambda d, s: (d / "imgs" / "test").mkdir(parents=True)
         or run_with(d, s, data='dataset = "imagefolder:imgs"'),
         "no class folders in imgs/test"),
    Case("imagefolder-empty-class", "a class folder without images",
         lambda d, s: run_with(d, s, data=images(d, {"a": 1, "b": 0})),
         "class folder imgs/test/b has no images"),
    Case("unreadable-image", "a `.png` that is not an image",
         _unreadable_image, "cannot read image imgs/test/a/0.png"),
    # ---- the model
    Case("hash-mismatch", "checkpoint weights modified after saving (one byte)",
         _tampered, "do not match the SHA-256 in their sidecar"),
    Case("other-architecture", "a checkpoint whose sidecar names another architecture",
         lambda d, s: _sidecar(d, s, architecture="cw-mnist", input_shape=[1, 28, 28]),
         "does not fit architecture 'cw-mnist'"),
    Case("other-class-count", "a checkpoint whose sidecar lists 3 classes",
         lambda d, s: _sidecar(d, s, class_names=["a", "b", "c"]),
         "does not fit architecture 'digits-cnn' with input shape (1, 8, 8) and 3 classes"),
    Case("pickle-checkpoint", "a PyTorch pickle running `touch pwned` as the checkpoint: "
         "`model.pt`", _pickle_checkpoint, "is a PyTorch/pickle file, not a labelflip checkpoint",
         check=no_marker),
    Case("planted-checkpoint", "a pickle running `touch pwned` posing as a checkpoint "
         "(sidecar hash forged to match)", _planted_checkpoint,
         "cannot read weights", check=no_marker),
    Case("planted-import", "`import-weights` of a pickle running `touch pwned`",
         _planted_import, "refusing to load their_model.pth", check=no_marker),
    Case("untrusted-user-code", "a checkpoint of a user model without `arch` to trust its code",
         lambda d, s: _user(d, s, "nan_model", trust=False),
         "needs user code 'badmodels:nan_model'"),
    Case("input-shape", "a digits model (8x8) on 28x28 images",
         lambda d, s: run_with(d, s, data=images(d, {str(i): 1 for i in range(10)}, (28, 28))),
         "does not fit dataset 'imagefolder:imgs' (10 classes, inputs (1, 28, 28))"),
    Case("channels", "a grayscale model on RGB images",
         lambda d, s: run_with(d, s, data=images(d, {str(i): 1 for i in range(10)}, mode="RGB")),
         "inputs (3, 8, 8)"),
    Case("nan-logits", "a model whose logits are NaN",
         lambda d, s: _user(d, s, "nan_model"),
         "returns NaN or Inf logits for 20 of 20 inputs"),
    Case("model-fails", "a user model that fails on the data (it forgets to flatten)",
         lambda d, s: _user(d, s, "unflattened"),
         "model unflattened.safetensors fails on inputs of shape (1, 8, 8)"),
    Case("logit-width", "a model with 5 outputs declared with 10 classes",
         lambda d, s: _user(d, s, "five_logits"),
         "returns outputs of shape (5,) per input, expected 10 logits (one per class)"),
    Case("outside-bounds", "inputs outside the model's declared bounds (sidecar: [0, 0.5])",
         lambda d, s: _sidecar(d, s, bounds=[0.0, 0.5]),
         "digits test samples: inputs span [0, 1], outside the model's bounds [0, 0.5]"),
    Case("train-mode", "a model that stays in train mode (Monte-Carlo dropout `train()`)",
         lambda d, s: _user(d, s, "mc_dropout"),
         "was in train mode; switched to eval", code=0),
    Case("wrong-normalisation", "a checkpoint normalising for 0-255 pixels (mean 127.5, std 64)",
         lambda d, s: _sidecar(d, s, mean=[127.5], std=[64.0]),
         "clean accuracy on the 20 chosen samples is", code=0),
    # ---- Type I runs: the SVAE, the oracle, the detector
    Case("type-i-no-svae", "a `type-i` attack without an `[svae]` table",
         lambda d, s: run_with(d, s, attacks='attack = "type-i"'),
         "attack #1 (type-i) needs an [svae] table"),
    Case("svae-missing", "`[svae] checkpoint` naming a file that does not exist",
         lambda d, s: run_with(
             d, s, attacks='attack = "type-i"\n\n[svae]\ncheckpoint = "nope.safetensors"'),
         "SVAE weights not found: nope.safetensors"),
    Case("oracle-is-model", "the attacked model's own checkpoint as `[oracle]`",
         lambda d, s: run_with(
             d, s, attacks='attack = "fgsm"\neps = 0.1\n\n[oracle]\n'
                           'checkpoint = "model.safetensors"'),
         "is the attacked model itself (same weights)"),
    Case("bad-squeezer", "`[detect] squeezers = [\"bit_depth_0\"]`",
         lambda d, s: run_with(
             d, s, attacks='attack = "fgsm"\neps = 0.1\n\n[detect]\nfeature_squeezing = true\n'
                           'squeezers = ["bit_depth_0"]'),
         "bits must be an integer >= 1, got 0 in 'bit_depth_0'"),
    # ---- the run directory
    Case("resume-other-config", "`--resume` with a config the run was not made with",
         _resume_other_config,
         "cannot resume out: it was made with a different config (differs in: seed)"),
    Case("resume-model-changed", "`--resume` after the checkpoint was replaced",
         _resume_changed_model, "cannot resume out: the model changed since the run started"),
    Case("read-only", "a read-only output directory",
         _read_only, "cannot create run directory ro/run: Permission denied"),
]  # fmt: skip

PRE_WORK = {"resume-other-config", "resume-model-changed"}  # their run directory is an input


def _drop_dac_override() -> None:
    """In the child: as root, give up the right to write where permissions forbid it."""
    if os.geteuid() == 0:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def _read_only_works(d: Path) -> bool:
    probe = [sys.executable, "-c", f"open({str(d / 'ro' / 'probe')!r}, 'w')"]
    try:
        done = subprocess.run(probe, preexec_fn=_drop_dac_override, capture_output=True)
        return done.returncode != 0
    except subprocess.SubprocessError:
        return False


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input(case: Case, shared: Shared, tmp_path: Path):
    args = case.setup(tmp_path, shared)
    preexec = None
    if case.id == "read-only":
        if not _read_only_works(tmp_path):
            pytest.skip("cannot make a read-only directory here (root without CAP_SETPCAP)")
        preexec = _drop_dac_override
    proc = cli(args, tmp_path, shared.env, preexec=preexec)
    record(case.id, case.what, args, proc, tmp_path, "error" if case.code else "warning")
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    assert proc.returncode == case.code, out
    lines = proc.stderr.strip().splitlines()
    if case.code:
        assert len(lines) == 1, out
        assert lines[0].startswith("labelflip: error: "), out
        assert case.phrase in lines[0], out
        if args[0] == "run" and case.id not in PRE_WORK:  # failed before any work: no leftovers
            assert not (tmp_path / "out").exists()
            assert not [p for p in tmp_path.rglob(".*.tmp")], list(tmp_path.rglob("*"))
    else:
        notes = [ln for ln in lines if ln.startswith("labelflip: ")]
        assert len(notes) == 1 and notes[0].startswith("labelflip: warning: "), out
        assert case.phrase in notes[0], out
        first_job = next(i for i, ln in enumerate(lines) if ln.startswith("[1/"))
        assert lines.index(notes[0]) < first_job, out  # said before any attack runs
        with RunStore.open(tmp_path / "out") as store:
            assert len(store.records()["sample"]) == 20
    if case.check is not None:
        case.check(tmp_path)


def test_the_table_covers_the_issue():
    assert len(CASES) >= 25 and len({c.id for c in CASES}) == len(CASES)


def test_clean_accuracy_rule():
    from labelflip.checks import clean_accuracy_warning

    assert clean_accuracy_warning(0.95, 100, 10, 0.99) is None
    assert "below twice chance (0.20" in clean_accuracy_warning(0.15, 100, 10)
    assert "less than half the 0.99" in clean_accuracy_warning(0.4, 100, 10, 0.99)
    assert clean_accuracy_warning(0.4, 100, 10) is None  # weak, but not implausible
    assert clean_accuracy_warning(0.7, 100, 2) is not None  # two classes: halfway, 0.75
    assert clean_accuracy_warning(0.8, 100, 2) is None


# ------------------------------------------------------------------ runs: crash, Ctrl-C, full disk


CRASH_CONFIG = """
name = "crash"
seed = 5
batch_size = 3
white_noise = 20
gallery = 2

[data]
dataset = "digits"
samples = 30
selection = "random"

[model]
checkpoint = "model.safetensors"

[similarity]
perceptual = false
hierarchy = "none"
confusion = true

[[attacks]]
attack = "fgsm"
eps = 0.1

[[attacks]]
attack = "pgd"
eps = 0.1
steps = 10

[[attacks]]
attack = "deepfool"
"""
TOTAL = 3 * 30


@dataclass
class Reference:
    dir: Path  # working directory of every crash run (holds run.toml and the model)
    run_dir: Path
    seconds: float  # from the run directory's appearance to its last record
    env: dict


def _records(run_dir: Path) -> dict[str, np.ndarray]:
    with RunStore.open(run_dir) as store:
        rec = store.records()
    rec.pop("seconds")  # wall time differs between runs
    return rec


def _assert_same_records(run_dir: Path, ref: Reference) -> None:
    want, got = _records(ref.run_dir), _records(run_dir)
    assert len(got["sample"]) == TOTAL  # none lost
    pairs = set(zip(got["job_id"].tolist(), got["sample"].tolist(), strict=True))
    assert len(pairs) == TOTAL  # none duplicated
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def _count(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _popen(args, ref_or_dir, env) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "labelflip.cli", *map(str, args)],
        cwd=ref_or_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _resume(ref: Reference, run_dir: Path) -> subprocess.CompletedProcess:
    args = ["run", "--resume", run_dir.name, "--no-progress", "--no-report"]
    return cli(args, ref.dir, ref.env)


@pytest.fixture(scope="module")
def reference(shared: Shared, tmp_path_factory) -> Reference:
    """An uninterrupted run of CRASH_CONFIG, timed from the run directory's
    appearance to its last record (the span in which a kill can hurt)."""
    d = tmp_path_factory.mktemp("crash")
    copy_model(shared, d)
    (d / "run.toml").write_text(CRASH_CONFIG)
    run_dir = d / "reference"
    proc = _popen(["run", "run.toml", "--out", run_dir.name, "--no-progress", "--no-report"],
                  d, shared.env)  # fmt: skip
    while not run_dir.exists() and proc.poll() is None:
        time.sleep(0.002)
    t0 = time.monotonic()
    while _count(run_dir / "records.sqlite") < TOTAL and proc.poll() is None:
        time.sleep(0.01)
    seconds = time.monotonic() - t0
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return Reference(d, run_dir, seconds, shared.env)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_at_random_points_then_resume(reference: Reference, seed: int):
    """SIGKILL at a random moment of the run's life (after its directory
    appears), then --resume: exactly the uninterrupted run's records."""
    rng = np.random.default_rng(seed)
    delay = float(rng.uniform(0, reference.seconds))
    run_dir = reference.dir / f"killed-{seed}"
    proc = _popen(["run", "run.toml", "--out", run_dir.name, "--no-progress", "--no-report"],
                  reference.dir, reference.env)  # fmt: skip
    while not run_dir.exists() and proc.poll() is None:
        time.sleep(0.002)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    at_kill = _count(run_dir / "records.sqlite")
    print(f"seed {seed}: killed after {delay:.2f} s with {at_kill}/{TOTAL} records")
    resumed = _resume(reference, run_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert "Traceback" not in resumed.stderr
    _assert_same_records(run_dir, reference)


def test_ctrl_c_stops_after_the_batch_and_resumes(reference: Reference):
    run_dir = reference.dir / "interrupted"
    args = ["run", "run.toml", "--out", run_dir.name, "--no-progress", "--no-report"]
    proc = _popen(args, reference.dir, reference.env)
    deadline = time.monotonic() + 120
    while _count(run_dir / "records.sqlite") < 3 and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    done = subprocess.CompletedProcess(args, proc.returncode, out, err)
    record("ctrl-c", "Ctrl-C (SIGINT) during a run", args, done, reference.dir, "interrupt")
    assert "Traceback" not in out + err
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("labelflip: interrupted: stopped after a finished batch"), err
    assert f"resume with: labelflip run --resume {run_dir.name}" in lines[-1]
    assert sum(ln.startswith("labelflip: interrupted") for ln in lines) == 1
    kept = _count(run_dir / "records.sqlite")
    assert 0 < kept < TOTAL and kept % 3 == 0, kept  # whole batches only
    assert f"{kept} of {TOTAL} records kept" in lines[-1]
    resumed = _resume(reference, run_dir)
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_records(run_dir, reference)


def test_full_disk_is_one_line_and_resumable(reference: Reference):
    """A file-size limit (as a full disk) hit mid-run: one error line; once
    there is room again, --resume completes the records."""
    run_dir = reference.dir / "full"
    args = ["run", "run.toml", "--out", run_dir.name, "--no-progress", "--no-report"]

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death
        resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))

    proc = cli(args, reference.dir, reference.env, preexec=limit)
    record("full-disk", "the disk fills up during a run (simulated: 150 kB file-size limit)",
           args, proc, reference.dir)  # fmt: skip
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("labelflip: error: "), proc.stderr
    assert "file-size limit" in lines[-1]
    assert sum(ln.startswith("labelflip: ") for ln in lines) == 1  # the others: progress
    header = ("crash: device ", "3 jobs x 30 samples", "run directory:", "[")
    assert all(ln.startswith(header) for ln in lines[:-1]), proc.stderr
    assert 0 <= _count(run_dir / "records.sqlite") < TOTAL
    resumed = _resume(reference, run_dir)
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_records(run_dir, reference)


# ------------------------------------------------------------------ determinism and manifest


def test_same_config_and_seed_give_identical_records(reference: Reference, tmp_path, monkeypatch):
    """Two in-process runs of one config on CPU: identical records, and the run
    manifest names the seeds, versions, model hash and bounds."""
    from labelflip.run import run

    cfg = load_config(reference.dir / "run.toml")
    monkeypatch.chdir(reference.dir)  # the config names the model relative to its directory
    a = run(cfg, run_dir=tmp_path / "a", progress=False).run_dir
    b = run(cfg, run_dir=tmp_path / "b", progress=False).run_dir
    ra, rb = _records(a), _records(b)
    assert len(ra["sample"]) == TOTAL
    for key in ra:
        np.testing.assert_array_equal(ra[key], rb[key], err_msg=key)

    sha = sha256_file(reference.dir / "model.safetensors")
    with RunStore.open(a) as store:
        meta, jobs = store.all_meta(), store.jobs()
    assert meta["seed"] == 5 and meta["bounds"] == [0.0, 1.0]
    assert meta["model"]["sha256"] == sha and meta["model"]["arch"] == "digits-cnn"
    assert meta["samples"] == sorted(meta["samples"]) and len(meta["samples"]) == 30
    assert [j.job_id for j in jobs] == ["fgsm-eps0.1", "pgd-eps0.1-steps10", "deepfool"]
    versions = library_versions()
    for job in jobs:
        assert job.seed == 5 and job.model_sha256 == sha
        assert {k: v for k, v in job.versions.items() if k != "torch_threads"} == versions
        assert job.versions["torch_threads"] >= 1
        assert {"labelflip", "torch", "numpy", "python"} <= set(job.versions)
    saved = json.loads((a / "config.json").read_text())
    assert saved["seed"] == 5 and saved["model"]["checkpoint"] == "model.safetensors"


# ------------------------------------------------------------------ safety


def _calls(tree: ast.AST, module: str, name: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == name
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == module
    ]


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return None


def test_source_never_unpickles_user_data():
    """Every np.load has allow_pickle=False, every torch.load weights_only=True,
    and the only unpickler is CIFAR's restricted one."""
    seen = {"np.load": 0, "torch.load": 0}
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        where = path.relative_to(SRC)
        for mod in ("np", "numpy"):
            for call in _calls(tree, mod, "load"):
                seen["np.load"] += 1
                assert _keyword(call, "allow_pickle") is False, f"{where}:{call.lineno}"
        for call in _calls(tree, "torch", "load"):
            seen["torch.load"] += 1
            assert _keyword(call, "weights_only") is True, f"{where}:{call.lineno}"
        for name in ("load", "loads", "Unpickler"):
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Attribute)
                    and node.attr == name
                    and isinstance(node.value, ast.Name)
                    and node.value.id in ("pickle", "dill", "joblib", "cloudpickle", "marshal")
                ):
                    assert str(where) == "data/cifar.py" and name == "Unpickler", (
                        f"{where}:{node.lineno} unpickles"
                    )
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in ("eval", "exec"), f"{where}:{node.lineno}"
    assert seen["np.load"] >= 3 and seen["torch.load"] == 1, seen
    from labelflip.data.cifar import _RestrictedUnpickler

    assert _RestrictedUnpickler.find_class is not pickle.Unpickler.find_class


XSS = "<script>alert(1)</script>"


def test_report_escapes_user_strings_in_chromium(tmp_path):
    from test_report import make_run

    from labelflip.report import write_report

    chromium = shutil.which("chromium")
    run_dir = make_run(tmp_path / "run")
    with RunStore.open(run_dir) as store:
        store.set_meta("class_names", [XSS, "bird", "fish"])
        store.set_meta("dataset", f"imagefolder:{XSS}")
    report = write_report(run_dir, n_boot=20)
    page = report.read_text(encoding="utf-8")
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    if chromium is None:
        pytest.skip("Debian chromium not installed (apt-get install chromium)")
    profile = f"--user-data-dir={tmp_path / 'profile'}"
    cmd = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", profile, "--dump-dom"]
    cmd.append(report.resolve().as_uri())
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    parsed = _Dom()
    parsed.feed(dom)
    assert "body" in parsed.tags and "table" in parsed.tags  # rendered
    assert "script" not in parsed.tags  # no script element in the live DOM
    assert sum(XSS in text for text in parsed.texts) >= 3  # shown as text, wherever it appears


class _Dom(HTMLParser):
    """The element names and text nodes of a serialised DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.texts: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.add(tag)

    def handle_data(self, data) -> None:
        self.texts.append(data)

"""Training of registered architectures with the papers' recipes.

Deterministic under a seed: the shuffling, the validation split and the
augmentation draw from one explicit ``torch.Generator``; weight
initialisation and dropout use the global RNG, seeded inside
``torch.random.fork_rng`` so the caller's RNG state is untouched. The best
epoch is chosen on a validation split held out of the *training* set (never
on the test set); its weights are the ones kept.

A model is trained for one output encoding (JMA paper, §III; see
:mod:`labelflip.models.encoding`), the architecture built with as many
outputs as the encoding has (a shared trunk with one ``n``-output head):

- ``onehot``: cross-entropy on the ``l`` logits (§III-A);
- ``ecoc``: the hinge loss of §III-B, ``L = Σ_i max(1 − c_{y i} tanh(z_i), 0)``
  over the ``n`` bits of the true class's codeword (Hadamard codebook). The
  optimiser steps on ``L / √n`` (:func:`ecoc_loss_scale`): at initialisation
  the gradient of ``L`` with respect to the outputs is ``−c_y``, of norm
  ``√n``, while cross-entropy's is about 1, and the architectures' recipes
  (learning rates tuned for cross-entropy) drive the ``tanh`` outputs into
  saturation at the per-bit majority sign, where the gradient vanishes
  (cw-mnist at lr 0.01 stays at chance). Scaled, the same recipes train; the
  loss reported is the paper's ``L``. (With Adam the scale has no effect.)
- ``multilabel``: binary cross-entropy on the ``n`` label logits (§III-C),
  summed over labels; the labels of a multi-label dataset are bitmasks.

Accuracy is always decision accuracy (the exact label vector for
multi-label, whose per-label accuracy is reported beside it).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from labelflip.data import Dataset
from labelflip.errors import LabelflipError, LabelflipWarning
from labelflip.models.adversarial import (
    AdversarialSettings,
    adversarial_loss,
    perturb,
    robust_accuracy,
)
from labelflip.models.architectures import Recipe
from labelflip.models.classifier import Classifier
from labelflip.models.encoding import OutputEncoding, index_to_bits
from labelflip.models.losses import (  # noqa: F401
    ecoc_loss_scale,
    encoding_loss,
    resolve_encoding,
)
from labelflip.models.metrics import accuracy, label_accuracy, per_label_accuracy, predict  # noqa: F401
from labelflip.models.registry import build_model


@dataclass(frozen=True)
class TrainSettings(Recipe):
    """A recipe (:class:`~labelflip.models.architectures.Recipe`: its fields
    first, in its order) plus the held-out share and the seed."""

    val_fraction: float = 0.1
    seed: int = 0

    @classmethod
    def from_recipe(cls, recipe: Recipe, **overrides: Any) -> TrainSettings:
        base = asdict(recipe)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    def validate(self) -> None:
        if self.epochs < 1:
            raise LabelflipError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise LabelflipError(f"batch size must be >= 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise LabelflipError(f"learning rate must be a positive number, got {self.lr}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise LabelflipError(f"validation fraction must be in [0, 1), got {self.val_fraction}")
        if self.optimizer not in ("sgd", "adam"):
            raise LabelflipError(f"optimizer must be 'sgd' or 'adam', got '{self.optimizer}'")
        if self.schedule not in SCHEDULES:
            raise LabelflipError(
                f"schedule must be one of {', '.join(SCHEDULES)}, got '{self.schedule}'"
            )


def _one_cycle(t: float) -> float:
    """Linear from 0 up to 1 over the first 40 % of the steps, then down to 0:
    the "cyclic" schedule of Wong et al. 2020 (``np.interp(t, [0, 2/5, 1],
    [0, 1, 0])``), Smith's one-cycle policy without the momentum cycle."""
    return t / 0.4 if t <= 0.4 else max(0.0, (1.0 - t) / 0.6)


# Learning-rate factor at the fraction t in [0, 1] of the optimiser's steps.
SCHEDULES: dict[str, Callable[[float], float]] = {
    "constant": lambda t: 1.0,
    "cosine": lambda t: 0.5 * (1.0 + math.cos(math.pi * t)),  # Loshchilov & Hutter 2017
    "onecycle": _one_cycle,
}


def lr_at(settings: TrainSettings, step: int, total: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based) of ``total``: a
    pure function of the step, so a continued training gets the same rates.
    The one-cycle rate of a step is the rate at its end (``(step + 1) /
    total``, as Wong et al.), the others at its start."""
    t = (step + 1) / total if settings.schedule == "onecycle" else step / total
    return settings.lr * SCHEDULES[settings.schedule](min(max(t, 0.0), 1.0))


@dataclass
class EpochStats:
    """One epoch: mean training loss, decision accuracies (exact label vector
    for multi-label) and, for a multi-label model, per-label accuracies.
    ``train_accuracy`` is on the inputs the model stepped on (the adversarial
    examples, when adversarially trained); ``robust_val_accuracy`` the
    robust validation accuracy of an adversarially trained model."""

    epoch: int
    loss: float
    train_accuracy: float
    val_accuracy: float | None
    seconds: float
    train_label_accuracy: float | None = None
    val_label_accuracy: float | None = None
    robust_val_accuracy: float | None = None


@dataclass
class TrainResult:
    classifier: Classifier
    best_epoch: int
    val_accuracy: float | None
    history: list[EpochStats] = field(default_factory=list)
    seconds: float = 0.0
    test_label_accuracy: float | None = None  # multi-label, set by train_and_save
    robust_val_accuracy: float | None = None  # the kept epoch's, adversarial training
    robust_test: dict[str, Any] | None = None  # set by train_and_save (see there)


def channel_stats(x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of images ``x`` (N, C, H, W)."""
    xd = x.double()
    mean = xd.mean(dim=(0, 2, 3))
    std = xd.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return [round(float(m), 6) for m in mean], [round(float(s), 6) for s in std]


class StopFlag(Protocol):
    """Anything with ``is_set()`` (a :class:`threading.Event`): a request to
    stop the training at the next batch boundary, keeping its state."""

    def is_set(self) -> bool: ...


class TrainingStopped(KeyboardInterrupt):
    """The training stopped on request (Ctrl-C) with its state saved; the
    same command continues it."""


@dataclass
class _Progress:
    """Where a training stands: the epoch under way (1-based), the next batch
    in it, the optimiser steps taken, that epoch's sample order (``None``
    before it is drawn) and running sums, the history and the best epoch."""

    epoch: int = 1
    batch: int = 0
    step: int = 0
    order: torch.Tensor | None = None
    sums: dict[str, float] = field(default_factory=dict)
    epoch_seconds: float = 0.0
    history: list[EpochStats] = field(default_factory=list)
    best_score: float = -1.0
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    seconds: float = 0.0  # spent in earlier sessions

    def new_epoch_sums(self) -> None:
        self.sums = {"loss": 0.0, "correct": 0, "seen": 0, "bits_right": 0}
        self.epoch_seconds = 0.0


def _fingerprint(
    arch: str,
    train_set: Dataset,
    settings: TrainSettings,
    adversarial: AdversarialSettings | None,
    enc: OutputEncoding,
) -> dict[str, Any]:
    """What makes a training this training (a saved state continues only the
    same). No eps ramp (0) is left out: it is the training of a state saved
    before ramps existed, which therefore continues."""
    adv = adversarial.to_dict() if adversarial is not None else None
    if adv is not None and not adv.get("eps_ramp"):
        adv.pop("eps_ramp", None)
    return {
        "architecture": arch,
        "dataset": train_set.name,
        "images": len(train_set),
        "settings": asdict(settings),
        "adversarial": adv,
        "encoding": enc.to_dict(),
    }


def _save_progress(
    path: Path,
    fingerprint: dict[str, Any],
    prog: _Progress,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    device: torch.device,
    started: float,
) -> None:
    from labelflip.models.resume import pack_optimizer, save_state

    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if prog.best_state is not None:
        tensors.update({f"best.{k}": v for k, v in prog.best_state.items()})
    opt_tensors, opt_data = pack_optimizer(opt)
    tensors.update(opt_tensors)
    tensors["rng.data"] = gen.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    if prog.order is not None:
        tensors["order"] = prog.order
    data = {
        "fingerprint": fingerprint,
        "epoch": prog.epoch,
        "batch": prog.batch,
        "step": prog.step,
        "sums": prog.sums,
        "epoch_seconds": prog.epoch_seconds,
        "history": [asdict(h) for h in prog.history],
        "best_score": prog.best_score,
        "best_epoch": prog.best_epoch,
        "seconds": prog.seconds + (time.perf_counter() - started),
        "optimizer": opt_data,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    save_state(path, tensors, data)


def _restore_progress(
    path: Path,
    fingerprint: dict[str, Any],
    model: nn.Module,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    device: torch.device,
) -> _Progress | None:
    from labelflip.models.resume import load_state, unpack_optimizer

    loaded = load_state(path, fingerprint)
    if loaded is None:
        return None
    tensors, data = loaded
    threads = data.get("threads")
    if threads != torch.get_num_threads():
        warnings.warn(
            f"continuing a training started with {threads} torch threads on "
            f"{torch.get_num_threads()}: the result may differ from an uninterrupted run in "
            "the last bits (set OMP_NUM_THREADS as before to match it)",
            LabelflipWarning,
            stacklevel=3,
        )
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    opt.load_state_dict(unpack_optimizer(tensors, data["optimizer"]))
    gen.set_state(tensors["rng.data"])
    torch.set_rng_state(tensors["rng.torch"])
    if device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)
    return _Progress(
        epoch=int(data["epoch"]),
        batch=int(data["batch"]),
        step=int(data["step"]),
        order=tensors.get("order"),
        sums=dict(data["sums"]),
        epoch_seconds=float(data["epoch_seconds"]),
        history=[EpochStats(**h) for h in data["history"]],
        best_score=float(data["best_score"]),
        best_epoch=int(data["best_epoch"]),
        best_state=best or None,
        seconds=float(data["seconds"]),
    )


def train(
    arch: str,
    train_set: Dataset,
    settings: TrainSettings,
    *,
    device: str | torch.device = "cpu",
    progress: bool = True,
    on_epoch: Callable[[EpochStats], None] | None = None,
    encoding: str | OutputEncoding | None = None,
    code_length: int | None = None,
    adversarial: AdversarialSettings | None = None,
    state_path: str | os.PathLike[str] | None = None,
    stop: StopFlag | None = None,
) -> TrainResult:
    """Train ``arch`` on ``train_set``; returns the best-validation classifier.

    ``encoding`` (with ``code_length`` for ``"ecoc"``) is resolved by
    :func:`resolve_encoding`; the default is the dataset's own (one-hot, or
    multi-label for a multi-label dataset).

    ``adversarial`` trains on adversarial examples
    (:mod:`labelflip.models.adversarial`; one-hot models only): each batch is
    attacked with the model in eval mode, then the model steps in train mode
    on the method's loss. The kept epoch is then the one with the best robust
    validation accuracy (PGD on held-out training images), which also
    catches catastrophic overfitting (Wong et al. 2020, §5).

    ``state_path``: the stem of a training state (:mod:`labelflip.models.resume`)
    written after every epoch; when it exists for the same training, the
    training continues from it. When ``stop.is_set()`` turns true the state is
    saved at the next batch boundary and :class:`TrainingStopped` is raised.
    """
    settings.validate()
    enc = resolve_encoding(encoding, train_set, code_length=code_length)
    adv = adversarial.resolved() if adversarial is not None else None
    if adv is not None and enc.kind != "onehot":
        raise LabelflipError(
            f"adversarial training needs one-hot outputs (cross-entropy), not '{enc.kind}'"
        )
    device = torch.device(device)
    gen = torch.Generator().manual_seed(settings.seed)
    n = len(train_set)
    n_val = int(round(n * settings.val_fraction))
    if n - n_val < 1:
        raise LabelflipError(f"training split of '{train_set.name}' is too small ({n} images)")
    perm = torch.randperm(n, generator=gen)
    tr_idx, val_idx = perm[n_val:], perm[:n_val]
    robust_idx = val_idx[: adv.val_samples] if adv is not None else val_idx[:0]
    mean, std = channel_stats(train_set.x[tr_idx])
    x_all, y_all = train_set.x.to(device), train_set.y.to(device)
    path = Path(state_path) if state_path is not None else None
    fingerprint = _fingerprint(arch, train_set, settings, adv, enc)

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(settings.seed)
        model = build_model(arch, train_set.input_shape, enc.num_outputs)
        clf = Classifier(
            model,
            num_classes=train_set.num_labels,
            class_names=train_set.class_names,
            input_shape=train_set.input_shape,
            mean=mean,
            std=std,
            encoding=enc,
        ).to(device)
        labels = enc.num_outputs if enc.kind == "multilabel" else 0
        scale = ecoc_loss_scale(enc)
        steps_per_epoch = math.ceil(len(tr_idx) / settings.batch_size)
        total_steps = settings.epochs * steps_per_epoch
        opt = _optimizer(model, settings)
        started = time.perf_counter()
        prog = None
        if path is not None:
            prog = _restore_progress(path, fingerprint, model, opt, gen, device)
            if prog is not None:
                print(f"continuing the saved training at epoch {prog.epoch} of {settings.epochs}, "
                      f"batch {prog.batch} ({state_files_text(path)}; --restart discards it)",
                      file=sys.stderr, flush=True)  # fmt: skip
        if prog is None:
            prog = _Progress()
            prog.new_epoch_sums()

        def net(x: torch.Tensor) -> torch.Tensor:
            return model((x - clf.mean) / clf.std)

        def save() -> None:
            if path is not None:
                _save_progress(path, fingerprint, prog, model, opt, gen, device, started)

        while prog.epoch <= settings.epochs:
            epoch = prog.epoch
            t0 = time.perf_counter() - prog.epoch_seconds
            if prog.order is None:
                prog.order = tr_idx[torch.randperm(len(tr_idx), generator=gen)]
            bar = progress_bar(steps_per_epoch, f"epoch {epoch}/{settings.epochs}", progress)
            if bar is not None and prog.batch:
                bar.update(prog.batch)
            sums = prog.sums
            for b in range(prog.batch, steps_per_epoch):
                if stop is not None and stop.is_set():
                    if bar is not None:
                        bar.close()
                    prog.epoch_seconds = time.perf_counter() - t0
                    save()
                    where = f" to {state_files_text(path)}" if path is not None else ""
                    raise TrainingStopped(
                        f"training stopped in epoch {epoch}/{settings.epochs} after batch "
                        f"{b}/{steps_per_epoch}, its state saved{where}; the same command "
                        "continues it"
                    )
                idx = prog.order[b * settings.batch_size : (b + 1) * settings.batch_size]
                xb, yb = x_all[idx.to(device)], y_all[idx.to(device)]
                if settings.augment:
                    xb = _augment(xb, gen)
                lr = lr_at(settings, prog.step, total_steps)
                for group in opt.param_groups:
                    group["lr"] = lr
                if adv is not None:
                    model.eval()
                    ramp = adv.eps_ramp * steps_per_epoch
                    now = adv.at((prog.step + 1) / ramp) if ramp else adv
                    x_adv = perturb(clf, xb, yb, now, gen)
                    model.train()
                    loss, logits = adversarial_loss(adv, net, xb, x_adv, yb)
                else:
                    model.train()
                    logits = net(xb)
                    loss = encoding_loss(enc, logits, yb)
                if not torch.isfinite(loss):
                    raise LabelflipError(
                        f"training diverged at epoch {epoch} (loss is {loss.item()}); "
                        f"lower the learning rate (now {settings.lr})"
                    )
                opt.zero_grad(set_to_none=True)
                (loss * scale if scale != 1.0 else loss).backward()
                opt.step()
                prog.step += 1
                prog.batch = b + 1
                sums["loss"] += loss.item() * len(yb)
                with torch.no_grad():
                    decided = enc.decode(enc.scores(logits))
                sums["correct"] += int((decided == yb).sum())
                if labels:
                    sums["bits_right"] += int((index_to_bits(decided ^ yb, labels) == 0).sum())
                sums["seen"] += len(yb)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(
                        loss=f"{sums['loss'] / sums['seen']:.4f}",
                        acc=f"{sums['correct'] / sums['seen']:.4f}",
                    )
            model.eval()
            val_acc, val_label_acc, robust_val = None, None, None
            if n_val:
                vi = val_idx.to(device)
                val_pred = predict(clf, x_all[vi])
                val_acc = float((val_pred == y_all[vi].cpu()).double().mean())
                if labels:
                    val_label_acc = float(per_label_accuracy(val_pred, y_all[vi], labels).mean())
            if adv is not None and len(robust_idx):
                ri = robust_idx.to(device)
                robust_val = robust_accuracy(
                    clf,
                    x_all[ri],
                    y_all[ri],
                    eps=adv.eps,
                    norm=adv.norm,
                    steps=adv.val_steps,
                    step_size=2.5 * adv.eps / adv.val_steps,
                    seed=settings.seed,
                )
            seen = sums["seen"]
            stats = EpochStats(
                epoch,
                sums["loss"] / seen,
                sums["correct"] / seen,
                val_acc,
                time.perf_counter() - t0,
                sums["bits_right"] / (seen * labels) if labels else None,
                val_label_acc,
                robust_val,
            )
            prog.history.append(stats)
            if bar is not None:
                post = {"loss": f"{stats.loss:.4f}", "acc": f"{stats.train_accuracy:.4f}"}
                if val_acc is not None:
                    post["val"] = f"{val_acc:.4f}"
                if robust_val is not None:
                    post["robust"] = f"{robust_val:.4f}"
                bar.set_postfix(**post)
                bar.close()
            # the kept epoch: best robust validation accuracy when adversarially
            # trained, else best validation accuracy; without validation, the last
            score = robust_val if robust_val is not None else val_acc
            score = score if score is not None else float(epoch)
            if score > prog.best_score:
                prog.best_score, prog.best_epoch = score, epoch
                prog.best_state = copy.deepcopy(model.state_dict())
            prog.epoch, prog.batch, prog.order = epoch + 1, 0, None
            prog.new_epoch_sums()
            save()
            if on_epoch is not None:
                on_epoch(stats)
        assert prog.best_state is not None
        model.load_state_dict(prog.best_state)
        model.eval()
    best = prog.history[prog.best_epoch - 1]
    return TrainResult(
        classifier=clf,
        best_epoch=prog.best_epoch,
        val_accuracy=best.val_accuracy,
        history=prog.history,
        seconds=prog.seconds + (time.perf_counter() - started),
        robust_val_accuracy=best.robust_val_accuracy,
    )


def state_files_text(path: Path | None) -> str:
    from labelflip.models.resume import state_files

    return str(state_files(path)[0]) if path is not None else "-"


@contextlib.contextmanager
def stop_on_interrupt() -> Iterator[StopFlag | None]:
    """While inside, the first Ctrl-C (SIGINT) only sets the yielded flag (a
    training then stops at the next batch boundary, keeping its state); a
    second one interrupts at once. Outside the main thread nothing changes
    and ``None`` is yielded."""
    if threading.current_thread() is not threading.main_thread():
        yield None
        return
    flag = threading.Event()
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        if flag.is_set():
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        flag.set()
        print(
            "\nlabelflip: stopping after this batch and saving the training state "
            "(Ctrl-C again to stop at once, losing the current epoch)",
            file=sys.stderr,
        )

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def _optimizer(model: nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    if s.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    return torch.optim.SGD(
        model.parameters(),
        lr=s.lr,
        momentum=s.momentum,
        weight_decay=s.weight_decay,
        nesterov=s.nesterov and s.momentum > 0,
    )


def _augment(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random translation by up to ``pad`` pixels (zero fill) and horizontal flip."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)
    cols = torch.where(flip[:, None, None, None], cols.flip(-1), cols)
    ni = torch.arange(n, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[ni, ci, rows, cols]


def progress_bar(total: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar over ``total`` batches, or ``None`` when not ``enabled``."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=True, dynamic_ncols=True)

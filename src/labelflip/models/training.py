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
from labelflip.models.classifier import Classifier, checked_logits
from labelflip.models.encoding import ENCODINGS, OutputEncoding, hadamard_codebook, index_to_bits
from labelflip.models.registry import build_model


@dataclass(frozen=True)
class TrainSettings:
    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.9
    weight_decay: float = 0.0
    nesterov: bool = False
    optimizer: str = "sgd"
    schedule: str = "constant"
    augment: bool = False  # random 4-pixel translation + horizontal flip (CIFAR practice)
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


def resolve_encoding(
    encoding: str | OutputEncoding | None,
    dataset: Dataset,
    *,
    code_length: int | None = None,
) -> OutputEncoding:
    """The output encoding to train on ``dataset`` (JMA paper, §III).

    ``None`` means the dataset's own: ``multilabel`` for a multi-label
    dataset, else ``onehot``. ``"ecoc"`` uses the Hadamard codebook of
    :func:`~labelflip.models.encoding.hadamard_codebook` (``code_length``
    bits, default the smallest power of 2 ≥ the number of classes: 16 for
    10). A multi-label dataset trains only with ``multilabel`` and a
    single-label one never does; every mismatch is a one-line error.
    """
    name = dataset.name
    if isinstance(encoding, OutputEncoding):
        if code_length is not None:
            raise LabelflipError("a code length only goes with the name of the encoding 'ecoc'")
        kind = encoding.kind
    else:
        kind = encoding or ("multilabel" if dataset.multilabel else "onehot")
        if kind not in ENCODINGS:
            raise LabelflipError(
                f"unknown output encoding '{kind}' (known: {', '.join(ENCODINGS)})"
            )
        if code_length is not None and kind != "ecoc":
            raise LabelflipError(
                f"a code length only applies to the ecoc encoding, not to '{kind}'"
            )
    if dataset.multilabel and kind != "multilabel":
        raise LabelflipError(
            f"dataset '{name}' is multi-label: it trains with the encoding 'multilabel', "
            f"not '{kind}'"
        )
    if not dataset.multilabel and kind == "multilabel":
        raise LabelflipError(
            f"the encoding 'multilabel' needs a multi-label dataset (e.g. mnist-grid); "
            f"'{name}' has one class per image"
        )
    if isinstance(encoding, OutputEncoding):
        if encoding.num_classes != dataset.num_classes:
            raise LabelflipError(
                f"{kind} encoding has {encoding.num_classes} classes but dataset '{name}' "
                f"has {dataset.num_classes}"
            )
        return encoding
    if kind == "ecoc":
        return OutputEncoding.ecoc(hadamard_codebook(dataset.num_labels, code_length))
    if kind == "multilabel":
        return OutputEncoding.multilabel(dataset.num_labels)
    return OutputEncoding.onehot(dataset.num_labels)


def ecoc_hinge_loss(z: torch.Tensor, y: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """The ECOC hinge loss of the JMA paper, §III-B, averaged over the batch:
    ``L(x, y) = Σ_i max(1 − c_{y i} f_i(x), 0)`` with ``f = tanh(z)``, ``z``
    the ``(N, n)`` network outputs and ``c_y`` the true class's ±1 codeword
    (row ``y`` of the ``(l, n)`` ``codebook``)."""
    code = codebook.to(device=z.device, dtype=z.dtype)[y]
    return (1.0 - code * torch.tanh(z)).clamp_min(0.0).sum(1).mean()


def multilabel_bce_loss(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The multi-label binary cross-entropy of the JMA paper, §III-C, averaged
    over the batch: ``L = −Σ_i [b_i log σ(z_i) + (1 − b_i) log(1 − σ(z_i))]``
    with ``b`` the label vector of the bitmask ``y`` (computed from the
    logits ``z`` (N, n), numerically stable)."""
    bits = index_to_bits(y, z.shape[1]).to(z.dtype)
    return F.binary_cross_entropy_with_logits(z, bits, reduction="none").sum(1).mean()


def ecoc_loss_scale(encoding: OutputEncoding) -> float:
    """The factor the optimiser's loss is multiplied by: ``1 / √n`` for an
    ECOC model with codewords of length ``n`` (see the module docstring), 1
    otherwise."""
    return 1.0 / math.sqrt(encoding.num_outputs) if encoding.kind == "ecoc" else 1.0


def encoding_loss(encoding: OutputEncoding, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The training loss of network outputs ``z`` for decisions ``y``:
    cross-entropy (one-hot), the ECOC hinge loss or the multi-label BCE."""
    if encoding.kind == "ecoc":
        assert encoding.codebook is not None
        return ecoc_hinge_loss(z, y, encoding.codebook)
    if encoding.kind == "multilabel":
        return multilabel_bce_loss(z, y)
    return F.cross_entropy(z, y)


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
    """What makes a training this training (a saved state continues only the same)."""
    return {
        "architecture": arch,
        "dataset": train_set.name,
        "images": len(train_set),
        "settings": asdict(settings),
        "adversarial": adversarial.to_dict() if adversarial is not None else None,
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
                    x_adv = perturb(clf, xb, yb, adv, gen)
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


@torch.no_grad()
def predict(clf: Classifier, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Decisions for ``x`` (moved batch by batch to the classifier's device),
    on the CPU: class indices, or label bitmasks for a multi-label model."""
    return clf.decode(checked_logits(clf, x, batch_size))


def accuracy(clf: Classifier, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Decision accuracy: the share of ``x`` decided as ``y`` (for a
    multi-label model, the exact-match accuracy of the whole label vector)."""
    if len(x) == 0:
        return float("nan")
    return float((predict(clf, x, batch_size) == y.cpu()).double().mean())


def per_label_accuracy(pred: torch.Tensor, y: torch.Tensor, num_labels: int) -> torch.Tensor:
    """Per-label accuracy (``num_labels``,) float64 of the label-vector
    bitmasks ``pred`` against ``y``: the share of samples whose label ``j``
    is decided right (present or absent)."""
    if len(y) == 0:
        return torch.full((num_labels,), float("nan"), dtype=torch.float64)
    diff = pred.cpu().long() ^ y.cpu().long()
    return (index_to_bits(diff, num_labels) == 0).double().mean(0)


def label_accuracy(
    clf: Classifier, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512
) -> float:
    """Mean per-label accuracy of a multi-label model (JMA paper, §III-C)."""
    if not clf.multilabel:
        raise LabelflipError("per-label accuracy needs a multi-label model")
    pred = predict(clf, x, batch_size)
    return float(per_label_accuracy(pred, y, clf.num_outputs).mean())


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


def train_and_save(
    arch: str,
    dataset: str,
    settings: TrainSettings,
    out: str | os.PathLike[str],
    *,
    data_dir: str | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    on_epoch: Callable[[EpochStats], None] | None = None,
    on_start: Callable[[Dataset, Dataset], None] | None = None,
    encoding: str | OutputEncoding | None = None,
    code_length: int | None = None,
    adversarial: AdversarialSettings | None = None,
    recipe: str | None = None,
    command: str | None = None,
    robust_eps: float | None = None,
    robust_samples: int | None = None,
    restart: bool = False,
) -> tuple[Path, TrainResult, float]:
    """Train ``arch`` on ``dataset``'s train split, measure it on the test split
    and save a checkpoint (weights + metadata, the output encoding included)
    at ``out``.

    Returns the weights path, the training result and the clean test accuracy
    (decision accuracy; for a multi-label model the exact-match accuracy, its
    per-label accuracy in ``result.test_label_accuracy``).
    ``on_start(train_set, test_set)`` is called once the data is loaded and the
    architecture is known to fit it, before training starts. ``encoding`` and
    ``code_length``: see :func:`resolve_encoding`; ``adversarial``: see
    :func:`train`.

    The training can be stopped: its state is kept beside ``out``
    (``OUT.partial.*``, :mod:`labelflip.models.resume`) after every epoch and
    on Ctrl-C (in the main thread, at the next batch boundary); the same call
    continues it (``restart`` discards it instead). The state is removed once
    the checkpoint is written.

    With ``robust_eps`` (default: an adversarially trained model's ε), the
    robust test accuracy under labelflip's PGD-40 (random start) at that ε
    and the training norm is measured on the first ``robust_samples`` test
    images (default all) and recorded as ``training.robust_test`` in the
    sidecar (and ``result.robust_test``). The sidecar's ``training`` also
    holds the settings, the ``recipe`` name, the adversarial settings, the
    ``command`` that trained it and the torch thread count.
    """
    from labelflip.data import check_splits_match, load_dataset
    from labelflip.models.checkpoint import CheckpointMeta, check_writable, save_checkpoint
    from labelflip.models.resume import remove_state, state_path

    settings.validate()
    adv = adversarial.resolved() if adversarial is not None else None
    if robust_eps is None and adv is not None:
        robust_eps = adv.eps
    if robust_eps is not None and not (math.isfinite(robust_eps) and robust_eps > 0):
        raise LabelflipError(f"robust eps must be a positive number, got {robust_eps}")
    if robust_samples is not None and robust_samples < 0:
        raise LabelflipError(f"robust test samples must be >= 0, got {robust_samples}")
    train_set = load_dataset(dataset, "train", data_dir)
    test_set = load_dataset(dataset, "test", data_dir)
    check_splits_match(train_set, test_set, data_dir)  # e.g. grey train, colour test images
    enc = resolve_encoding(encoding, train_set, code_length=code_length)
    if adv is not None and enc.kind != "onehot":
        raise LabelflipError(
            f"adversarial training needs one-hot outputs (cross-entropy), not '{enc.kind}'"
        )
    build_model(arch, train_set.input_shape, enc.num_outputs)  # fail before training
    check_writable(out)  # a read-only --out fails now, not after the training
    partial = state_path(out)
    if restart:
        remove_state(partial)
    if on_start is not None:
        on_start(train_set, test_set)
    with stop_on_interrupt() as stop:
        result = train(
            arch,
            train_set,
            settings,
            device=device,
            progress=progress,
            on_epoch=on_epoch,
            encoding=enc,
            adversarial=adv,
            state_path=partial,
            stop=stop,
        )
        clf = result.classifier
        test_pred = predict(clf, test_set.x)
        test_acc = (
            float((test_pred == test_set.y).double().mean()) if len(test_set) else float("nan")
        )
        if robust_eps is not None and not clf.multilabel:
            result.robust_test = robust_test_accuracy(
                clf,
                test_set,
                eps=robust_eps,
                norm=adv.norm if adv is not None else "linf",
                samples=robust_samples,
                seed=settings.seed,
                progress=progress,
                stop=stop,
            )
    extra: dict[str, Any] = {}
    if clf.encoding.kind == "ecoc":
        extra["ecoc_loss_scale"] = ecoc_loss_scale(clf.encoding)  # the step on L / sqrt(n)
    if clf.multilabel:
        result.test_label_accuracy = float(
            per_label_accuracy(test_pred, test_set.y, clf.num_outputs).mean()
        )
        best = result.history[result.best_epoch - 1]
        extra = {
            "val_label_accuracy": best.val_label_accuracy,
            "test_label_accuracy": round(result.test_label_accuracy, 6),
        }
    if adv is not None:
        extra["adversarial"] = adv.to_dict()
        extra["robust_val_accuracy"] = result.robust_val_accuracy
        extra["history"] = [
            {"epoch": h.epoch, "val_accuracy": h.val_accuracy, "robust_val": h.robust_val_accuracy}
            for h in result.history
        ]
    if result.robust_test is not None:
        extra["robust_test"] = result.robust_test
    meta = CheckpointMeta(
        architecture=arch,
        dataset=dataset,
        class_names=list(clf.label_names),
        input_shape=list(train_set.input_shape),
        mean=clf.mean.flatten().tolist(),
        std=clf.std.flatten().tolist(),
        bounds=list(clf.bounds),
        clean_test_accuracy=round(test_acc, 6),
        seed=settings.seed,
        training={
            **({"command": command} if command else {}),
            "recipe": recipe,
            **asdict(settings),
            "best_epoch": result.best_epoch,
            "val_accuracy": result.val_accuracy,
            "seconds": round(result.seconds, 1),
            "device": str(device),
            "threads": torch.get_num_threads(),
            **extra,
        },
        encoding=clf.encoding.to_dict(),
    )
    path = save_checkpoint(out, clf.model, meta)
    remove_state(partial)
    return path, result, test_acc


def robust_test_accuracy(
    clf: Classifier,
    test_set: Dataset,
    *,
    eps: float,
    norm: str = "linf",
    samples: int | None = None,
    seed: int = 0,
    progress: bool = False,
    stop: StopFlag | None = None,
    batch_size: int = 500,
) -> dict[str, Any]:
    """Robust accuracy of ``clf`` on the first ``samples`` images of
    ``test_set`` (all when ``None``) under labelflip's PGD-40 with a random
    start (:func:`labelflip.models.adversarial.robust_predictions`), as the
    record the sidecar keeps: attack, eps, norm, steps, step size, samples,
    accuracy (and clean accuracy on the same images), seconds."""
    from labelflip.attacks.pgd import PGDSettings
    from labelflip.models.adversarial import ROBUST_STEPS, robust_predictions

    n = len(test_set) if samples is None else min(samples, len(test_set))
    x, y = test_set.x[:n], test_set.y[:n]
    step = PGDSettings(eps=eps, norm=norm, steps=ROBUST_STEPS).stepsize
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=f"PGD-{ROBUST_STEPS} at eps {eps:g}", unit="img", leave=True)

    def on_batch(k: int) -> None:
        if bar is not None:
            bar.update(k)
        if stop is not None and stop.is_set():
            raise TrainingStopped(
                "stopped during the robust test evaluation; the trained state is kept and "
                "the same command runs only the evaluation again"
            )

    t0 = time.perf_counter()
    try:
        clean, adv = robust_predictions(
            clf, x, y, eps=eps, norm=norm, steps=ROBUST_STEPS, step_size=step,
            batch_size=batch_size, seed=seed, on_batch=on_batch,
        )  # fmt: skip
    finally:
        if bar is not None:
            bar.close()
    correct = clean == y
    return {
        "attack": "pgd",
        "eps": eps,
        "norm": norm,
        "steps": ROBUST_STEPS,
        "step_size": step,
        "random_start": True,
        "seed": seed,
        "samples": n,
        "clean_accuracy": round(float(correct.double().mean()), 6) if n else None,
        "accuracy": round(float((correct & (adv == y)).double().mean()), 6) if n else None,
        "seconds": round(time.perf_counter() - t0, 1),
    }

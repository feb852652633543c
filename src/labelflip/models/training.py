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

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from labelflip.data import Dataset
from labelflip.errors import LabelflipError
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
        if self.schedule not in ("constant", "cosine"):
            raise LabelflipError(f"schedule must be 'constant' or 'cosine', got '{self.schedule}'")


@dataclass
class EpochStats:
    """One epoch: mean training loss, decision accuracies (exact label vector
    for multi-label) and, for a multi-label model, per-label accuracies."""

    epoch: int
    loss: float
    train_accuracy: float
    val_accuracy: float | None
    seconds: float
    train_label_accuracy: float | None = None
    val_label_accuracy: float | None = None


@dataclass
class TrainResult:
    classifier: Classifier
    best_epoch: int
    val_accuracy: float | None
    history: list[EpochStats] = field(default_factory=list)
    seconds: float = 0.0
    test_label_accuracy: float | None = None  # multi-label, set by train_and_save


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
) -> TrainResult:
    """Train ``arch`` on ``train_set``; returns the best-validation classifier.

    ``encoding`` (with ``code_length`` for ``"ecoc"``) is resolved by
    :func:`resolve_encoding`; the default is the dataset's own (one-hot, or
    multi-label for a multi-label dataset)."""
    settings.validate()
    enc = resolve_encoding(encoding, train_set, code_length=code_length)
    device = torch.device(device)
    gen = torch.Generator().manual_seed(settings.seed)
    n = len(train_set)
    n_val = int(round(n * settings.val_fraction))
    if n - n_val < 1:
        raise LabelflipError(f"training split of '{train_set.name}' is too small ({n} images)")
    perm = torch.randperm(n, generator=gen)
    tr_idx, val_idx = perm[n_val:], perm[:n_val]
    mean, std = channel_stats(train_set.x[tr_idx])
    x_all, y_all = train_set.x.to(device), train_set.y.to(device)

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
        opt = _optimizer(model, settings)
        sched = (
            torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=settings.epochs * steps_per_epoch)
            if settings.schedule == "cosine"
            else None
        )
        best_state, best_acc, best_epoch = None, -1.0, 0
        history: list[EpochStats] = []
        start = time.perf_counter()
        for epoch in range(1, settings.epochs + 1):
            t0 = time.perf_counter()
            model.train()
            order = tr_idx[torch.randperm(len(tr_idx), generator=gen)]
            total_loss, correct, seen, bits_right = 0.0, 0, 0, 0
            bar = progress_bar(steps_per_epoch, f"epoch {epoch}/{settings.epochs}", progress)
            for i in range(0, len(order), settings.batch_size):
                idx = order[i : i + settings.batch_size].to(device)
                xb, yb = x_all[idx], y_all[idx]
                if settings.augment:
                    xb = _augment(xb, gen)
                logits = model((xb - clf.mean) / clf.std)
                loss = encoding_loss(enc, logits, yb)
                if not torch.isfinite(loss):
                    raise LabelflipError(
                        f"training diverged at epoch {epoch} (loss is {loss.item()}); "
                        f"lower the learning rate (now {settings.lr})"
                    )
                opt.zero_grad(set_to_none=True)
                (loss * scale if scale != 1.0 else loss).backward()
                opt.step()
                if sched is not None:
                    sched.step()
                total_loss += loss.item() * len(yb)
                with torch.no_grad():
                    decided = enc.decode(enc.scores(logits))
                correct += int((decided == yb).sum())
                if labels:
                    bits_right += int((index_to_bits(decided ^ yb, labels) == 0).sum())
                seen += len(yb)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.4f}")
            model.eval()
            val_acc, val_label_acc = None, None
            if n_val:
                vi = val_idx.to(device)
                val_pred = predict(clf, x_all[vi])
                val_acc = float((val_pred == y_all[vi].cpu()).double().mean())
                if labels:
                    val_label_acc = float(per_label_accuracy(val_pred, y_all[vi], labels).mean())
            stats = EpochStats(
                epoch,
                total_loss / seen,
                correct / seen,
                val_acc,
                time.perf_counter() - t0,
                bits_right / (seen * labels) if labels else None,
                val_label_acc,
            )
            history.append(stats)
            if bar is not None:
                if val_acc is not None:
                    bar.set_postfix(
                        loss=f"{stats.loss:.4f}",
                        acc=f"{stats.train_accuracy:.4f}",
                        val=f"{val_acc:.4f}",
                    )
                bar.close()
            if on_epoch is not None:
                on_epoch(stats)
            score = val_acc if val_acc is not None else float(epoch)  # no validation: keep the last
            if score > best_acc:
                best_acc, best_epoch = score, epoch
                best_state = copy.deepcopy(model.state_dict())
        assert best_state is not None
        model.load_state_dict(best_state)
        model.eval()
    return TrainResult(
        classifier=clf,
        best_epoch=best_epoch,
        val_accuracy=best_acc if n_val else None,
        history=history,
        seconds=time.perf_counter() - start,
    )


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
) -> tuple[Path, TrainResult, float]:
    """Train ``arch`` on ``dataset``'s train split, measure it on the test split
    and save a checkpoint (weights + metadata, the output encoding included)
    at ``out``.

    Returns the weights path, the training result and the clean test accuracy
    (decision accuracy; for a multi-label model the exact-match accuracy, its
    per-label accuracy in ``result.test_label_accuracy``).
    ``on_start(train_set, test_set)`` is called once the data is loaded and the
    architecture is known to fit it, before training starts. ``encoding`` and
    ``code_length``: see :func:`resolve_encoding`.
    """
    from labelflip.data import check_splits_match, load_dataset
    from labelflip.models.checkpoint import CheckpointMeta, check_writable, save_checkpoint

    settings.validate()
    train_set = load_dataset(dataset, "train", data_dir)
    test_set = load_dataset(dataset, "test", data_dir)
    check_splits_match(train_set, test_set, data_dir)  # e.g. grey train, colour test images
    enc = resolve_encoding(encoding, train_set, code_length=code_length)
    build_model(arch, train_set.input_shape, enc.num_outputs)  # fail before training
    check_writable(out)  # a read-only --out fails now, not after the training
    if on_start is not None:
        on_start(train_set, test_set)
    result = train(
        arch,
        train_set,
        settings,
        device=device,
        progress=progress,
        on_epoch=on_epoch,
        encoding=enc,
    )
    clf = result.classifier
    test_pred = predict(clf, test_set.x)
    test_acc = float((test_pred == test_set.y).double().mean()) if len(test_set) else float("nan")
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
            **asdict(settings),
            "best_epoch": result.best_epoch,
            "val_accuracy": result.val_accuracy,
            "seconds": round(result.seconds, 1),
            "device": str(device),
            **extra,
        },
        encoding=clf.encoding.to_dict(),
    )
    path = save_checkpoint(out, clf.model, meta)
    return path, result, test_acc

"""Training of registered architectures with the papers' recipes.

Deterministic under a seed: the shuffling, the validation split and the
augmentation draw from one explicit ``torch.Generator``; weight
initialisation and dropout use the global RNG, seeded inside
``torch.random.fork_rng`` so the caller's RNG state is untouched. The best
epoch is chosen on a validation split held out of the *training* set (never
on the test set); its weights are the ones kept.
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
    epoch: int
    loss: float
    train_accuracy: float
    val_accuracy: float | None
    seconds: float


@dataclass
class TrainResult:
    classifier: Classifier
    best_epoch: int
    val_accuracy: float | None
    history: list[EpochStats] = field(default_factory=list)
    seconds: float = 0.0


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
) -> TrainResult:
    """Train ``arch`` on ``train_set``; returns the best-validation classifier."""
    settings.validate()
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
        model = build_model(arch, train_set.input_shape, train_set.num_classes)
        clf = Classifier(
            model,
            num_classes=train_set.num_classes,
            class_names=train_set.class_names,
            input_shape=train_set.input_shape,
            mean=mean,
            std=std,
        ).to(device)
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
            total_loss, correct, seen = 0.0, 0, 0
            bar = _bar(steps_per_epoch, f"epoch {epoch}/{settings.epochs}", progress)
            for i in range(0, len(order), settings.batch_size):
                idx = order[i : i + settings.batch_size].to(device)
                xb, yb = x_all[idx], y_all[idx]
                if settings.augment:
                    xb = _augment(xb, gen)
                logits = model((xb - clf.mean) / clf.std)
                loss = F.cross_entropy(logits, yb)
                if not torch.isfinite(loss):
                    raise LabelflipError(
                        f"training diverged at epoch {epoch} (loss is {loss.item()}); "
                        f"lower the learning rate (now {settings.lr})"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                total_loss += loss.item() * len(yb)
                correct += int((logits.argmax(1) == yb).sum())
                seen += len(yb)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.4f}")
            model.eval()
            val_acc = (
                accuracy(clf, x_all[val_idx.to(device)], y_all[val_idx.to(device)])
                if n_val
                else None
            )
            stats = EpochStats(
                epoch, total_loss / seen, correct / seen, val_acc, time.perf_counter() - t0
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
    """Predicted classes of ``x`` (moved batch by batch to the classifier's device)."""
    return checked_logits(clf, x, batch_size).argmax(1)


def accuracy(clf: Classifier, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    if len(x) == 0:
        return float("nan")
    return float((predict(clf, x, batch_size) == y.cpu()).double().mean())


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


def _bar(total: int, desc: str, enabled: bool):
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
) -> tuple[Path, TrainResult, float]:
    """Train ``arch`` on ``dataset``'s train split, measure it on the test split
    and save a checkpoint (weights + metadata) at ``out``.

    Returns the weights path, the training result and the clean test accuracy.
    ``on_start(train_set, test_set)`` is called once the data is loaded and the
    architecture is known to fit it, before training starts.
    """
    from labelflip.data import load_dataset
    from labelflip.models.checkpoint import CheckpointMeta, save_checkpoint

    settings.validate()
    train_set = load_dataset(dataset, "train", data_dir)
    test_set = load_dataset(dataset, "test", data_dir)
    build_model(arch, train_set.input_shape, train_set.num_classes)  # fail before training
    if on_start is not None:
        on_start(train_set, test_set)
    result = train(arch, train_set, settings, device=device, progress=progress, on_epoch=on_epoch)
    clf = result.classifier
    test_acc = accuracy(clf, test_set.x, test_set.y)
    meta = CheckpointMeta(
        architecture=arch,
        dataset=dataset,
        class_names=list(clf.class_names),
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
        },
    )
    path = save_checkpoint(out, clf.model, meta)
    return path, result, test_acc

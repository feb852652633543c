"""Train a model and save it: the workflow of ``labelflip train`` and of a
run's first-use training (data, split checks, training, test and robust
accuracy, the checkpoint with its sidecar)."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from labelflip.data import Dataset
from labelflip.errors import LabelflipError
from labelflip.models import training
from labelflip.models.adversarial import (
    AdversarialSettings,
)
from labelflip.models.classifier import Classifier
from labelflip.models.encoding import OutputEncoding
from labelflip.models.losses import ecoc_loss_scale, resolve_encoding
from labelflip.models.metrics import per_label_accuracy, predict
from labelflip.models.registry import build_model
from labelflip.models.training import (
    EpochStats,
    StopFlag,
    TrainingStopped,
    TrainResult,
    TrainSettings,
    train,
)


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
    with training.stop_on_interrupt() as stop:  # looked up at call time (tests replace it)
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

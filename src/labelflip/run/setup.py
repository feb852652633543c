"""A run's setup, computed once when it starts and saved in its store: the
class-distance matrices, the white-noise prior, the gallery's originals and
the run metadata (``started`` is written last and marks it complete).

:func:`compute_setup` does the work (and so meets every mistake left in the
``[similarity]`` table: a split without images of some class, an unknown
layer, a bad hierarchy file) before the run directory exists;
:func:`save_setup` stores it."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labelflip.config import SimilarityConfig
from labelflip.run.plan import RunPlan
from labelflip.run.seeds import SeedTree
from labelflip.run.step import PREDICT_CHUNK, decide
from labelflip.store import RunDir, RunStore


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Setup:
    """What :func:`compute_setup` computed: the class distances (name ->
    :class:`~labelflip.similarity.ClassDistance`), the white-noise
    predictions of the images with finite logits and the count of the others."""

    distances: dict[str, Any]
    noise_pred: list[int]
    noise_nonfinite: int


def compute_setup(plan: RunPlan, progress: bool = False) -> Setup:
    """The run's class distances and white-noise prior (the setup's work;
    ``progress``: bars for the perceptual distance)."""
    cfg, clf, device = plan.cfg, plan.clf, plan.device
    distances = class_distances(
        cfg.similarity, cfg.data.dataset, cfg.data.data_dir, plan.seeds, clf,
        plan.class_names, plan.y, plan.clean_pred, device, progress,
    )  # fmt: skip
    noise_pred, nonfinite = white_noise(clf, cfg.white_noise, plan.seeds, device)
    return Setup(distances, noise_pred, nonfinite)


def samples_digest(x: torch.Tensor, y: torch.Tensor) -> str:
    """SHA-256 of the chosen samples: their images (shape, dtype, bytes) and
    labels, so a resumed run sees exactly the images it started with."""
    h = hashlib.sha256()
    for a in (x, y):
        arr = np.ascontiguousarray(a.detach().cpu().numpy())
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def record_setup(store: RunStore, run_dir: RunDir, plan: RunPlan) -> dict[str, Any]:
    """Compute and save the run's setup; returns the class distances."""
    return save_setup(store, run_dir, plan, compute_setup(plan))


def save_setup(store: RunStore, run_dir: RunDir, plan: RunPlan, setup: Setup) -> dict[str, Any]:
    """Save the run's setup and metadata (``started`` last); returns the class distances."""
    cfg, clf = plan.cfg, plan.clf
    distances = setup.distances
    store.set_meta("distances", [d.to_dict() for d in distances.values()])
    noise_pred = setup.noise_pred
    g = plan.gallery
    run_dir.save_gallery_originals(plan.x[:g].numpy(), plan.y[:g].numpy())
    meta = plan.model.meta
    for key, value in {
        "name": cfg.name,
        "dataset": cfg.data.dataset,
        "split": cfg.data.split,
        "class_names": list(plan.class_names),  # the labels, for a multi-label model
        "num_classes": len(plan.class_names),
        "encoding": clf.encoding.to_dict(),
        "bounds": list(clf.bounds),
        "input_shape": list(plan.input_shape),
        "samples": plan.indices.tolist(),
        "samples_sha256": samples_digest(plan.x, plan.y),
        "torch_threads": torch.get_num_threads(),
        "seed": cfg.seed,
        "model": {
            "arch": meta.architecture,
            "checkpoint": str(plan.model.checkpoint),
            "sha256": meta.weights_sha256,
            "clean_accuracy": plan.clean_accuracy,
            "trained_on": meta.dataset,
        },
        "white_noise_pred": noise_pred,
        "white_noise_nonfinite": setup.noise_nonfinite,
        **judges_meta(plan),
        "started": datetime.now().isoformat(timespec="seconds"),
    }.items():
        store.set_meta(key, value)
    return distances


def judges_meta(plan: RunPlan) -> dict[str, Any]:
    """Run metadata of the oracle, the SVAE and the detector: what they are,
    the oracle's clean predictions and the clean samples' squeeze scores
    (the detector's calibration set)."""
    out: dict[str, Any] = {}
    if plan.oracle is not None:
        assert plan.oracle_clean_pred is not None
        pred = plan.oracle_clean_pred.cpu()
        out["oracle"] = {
            "arch": plan.oracle.meta.architecture,
            "checkpoint": str(plan.oracle.checkpoint),
            "sha256": plan.oracle.meta.weights_sha256,
            "clean_accuracy": float((pred == plan.y).float().mean()),
            "trained_on": plan.oracle.meta.dataset,
        }
        out["oracle_clean_pred"] = pred.tolist()
    if plan.svae is not None:
        svae, smeta = plan.svae.svae, plan.svae.meta
        training = smeta.get("training", {})
        f2 = svae.predict(plan.x.to(plan.device)).cpu()
        out["svae"] = {
            "checkpoint": str(plan.svae.checkpoint),
            "sha256": smeta.get("weights_sha256"),
            "arch": smeta.get("config", {}).get("arch", "mlp"),
            "latent_dim": svae.latent_dim,
            "f2_test_accuracy": training.get("f2_test_accuracy"),
            "f2_clean_accuracy": float((f2 == plan.y).float().mean()),
        }
    d = plan.cfg.detect
    if d.feature_squeezing:
        from labelflip.detect import squeeze_scores

        scores = squeeze_scores(
            plan.clf,
            plan.x.to(plan.device),
            squeezers=d.squeezers,
            distance=d.distance,
            batch_size=plan.cfg.batch_size,
        )
        out["detect"] = {
            "feature_squeezing": {
                "squeezers": list(d.squeezers),
                "distance": d.distance,
                "fpr": d.fpr,
                "thresholds": list(d.thresholds),
                "clean_scores": scores.cpu().tolist(),
            }
        }
    return out


def class_distances(
    sim: SimilarityConfig,
    dataset: str,
    data_dir: str | None,
    seeds: SeedTree,
    clf: Any,
    class_names: Any,
    y: torch.Tensor,
    clean_pred: torch.Tensor,
    device: torch.device,
    progress: bool = False,
) -> dict[str, Any]:
    """The class-distance matrices the ``[similarity]`` table asks for
    (name -> :class:`~labelflip.similarity.ClassDistance`); ``progress``: a
    bar for each stage of the perceptual distance."""
    from labelflip import similarity
    from labelflip.data import load_dataset

    names = list(class_names)
    out: dict[str, Any] = {}
    if clf.multilabel:  # classes are label vectors: no class distances
        return out
    if sim.perceptual:
        feature_model = clf
        if sim.checkpoint is not None:
            from labelflip.models import load_checkpoint

            feature_model, _ = load_checkpoint(Path(sim.checkpoint).expanduser(), device=device)
        train = load_dataset(dataset, sim.split, data_dir)
        per_class = sim.per_class or None  # 0 or None: every image
        cap = f"at most {per_class} per class" if per_class else "all of them"
        _log(
            f"perceptual class distance: {dataset} {sim.split} split "
            f"({len(train)} images, {cap}; [similarity] per_class)"
        )
        with _StageBars(progress) as bars:
            out["perceptual"] = similarity.perceptual_distance(
                feature_model,
                train.x,
                train.y,
                class_names=names,
                layer=sim.layer,
                per_class=per_class,
                generator=seeds.perceptual(),
                device=device,
                split=sim.split,
                progress=bars.update if progress else None,
            )
        info = out["perceptual"].info
        _log(
            f"perceptual class distance: {info.get('seconds_features', 0):.1f} s features, "
            f"{info.get('seconds_distances', 0):.1f} s Hausdorff"
        )
    hierarchy = sim.hierarchy
    if hierarchy == "auto":
        hierarchy = similarity.builtin_hierarchy_for(names) or "none"
    if hierarchy != "none":
        out["semantic"] = similarity.semantic_distance(hierarchy, names)
    if sim.confusion:
        out["confusion"] = similarity.confusion_distance(y.numpy(), clean_pred.numpy(), names)
    return out


class _StageBars:
    """One progress bar per stage of a computation reporting
    ``(stage, done, total)``; nothing when not ``enabled``."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.stage = ""

    def __enter__(self) -> _StageBars:
        return self

    def update(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage:
            from tqdm.auto import tqdm

            self.close()
            self.stage = stage
            self.bar = tqdm(
                total=total, desc=f"perceptual distance: {stage}", unit="img", leave=False
            )
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __exit__(self, *exc: object) -> None:
        self.close()


def stored_distances(store: RunStore) -> dict[str, Any]:
    from labelflip.similarity import ClassDistance

    return {d["name"]: ClassDistance.from_dict(d) for d in store.meta("distances") or []}


def white_noise(
    clf: Any, count: int, seeds: SeedTree, device: torch.device
) -> tuple[list[int], int]:
    """Predictions on ``count`` images drawn uniformly from the input box
    (drawn and classified a chunk at a time), left out where the model's
    logits are not finite, and how many were left out."""
    if count == 0 or clf.input_shape is None or clf.multilabel:
        return [], 0
    gen = seeds.white_noise()
    lo, hi = clf.bounds
    preds: list[int] = []
    nonfinite = 0
    for start in range(0, count, PREDICT_CHUNK):
        m = min(PREDICT_CHUNK, count - start)
        x = torch.rand((m, *clf.input_shape), generator=gen) * (hi - lo) + lo
        pred, finite = decide(clf, x.to(device))
        preds += pred[finite].cpu().tolist()
        nonfinite += int((~finite).sum())
    return preds, nonfinite

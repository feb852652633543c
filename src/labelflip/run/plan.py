"""The resolved, typed plan of a run: what :func:`prepare` loaded and
checked before any work (the samples, the model, the oracle, the SVAE, the
jobs with their validated settings, the seed tree)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labelflip import checks
from labelflip.config import PYTHON_DATA, DataConfig, RunConfig, config_from_json
from labelflip.errors import LabelflipError, LabelflipWarning
from labelflip.run.models import (
    DataRef,
    Loaded,
    LoadedSVAE,
    obtain_model,
    obtain_oracle,
    obtain_svae,
)
from labelflip.run.seeds import SeedTree
from labelflip.run.step import Judges, PlannedJob, gallery_size, plan_job
from labelflip.store import RunDir


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LabelflipError(f"unknown device '{name}' (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LabelflipError(f"device '{name}' requested but CUDA is not available here")
    return device


def select_samples(n_total: int, d: DataConfig, seeds: SeedTree) -> np.ndarray:
    """Dataset indices to attack (increasing), from the ``[data]`` table."""
    stop = n_total if d.stop is None else d.stop
    if stop > n_total or d.start >= n_total:
        raise LabelflipError(
            f"[data] index range [{d.start}, {stop}) is outside the {d.dataset} {d.split} split "
            f"({n_total} samples)"
        )
    pool = np.arange(d.start, stop)
    if d.samples is None or d.samples >= len(pool):
        if d.samples is not None and d.samples > len(pool):
            raise LabelflipError(
                f"[data] samples = {d.samples} but the range holds only {len(pool)} samples"
            )
        return pool
    if d.selection == "first":
        return pool[: d.samples]
    return np.sort(seeds.samples().choice(pool, size=d.samples, replace=False))


@dataclass(frozen=True)
class Inputs:
    """A model and samples given in Python (:func:`labelflip.evaluate`), used
    in place of loading the config's ``[model]`` and ``[data]``; the config
    still names them (the model's checkpoint, saved on the way; the samples as
    ``python:<digest>``), so a run made with them is resumed with the same
    ones. ``None`` parts are loaded from the config as usual."""

    model: Loaded | None = None
    data: Any = None  # a labelflip.data.Dataset


def _python_inputs_missing(cfg: RunConfig, inputs: Inputs) -> None:
    """A config whose samples (or model class) were given in Python cannot be
    run from the config alone: one line saying how to continue such a run."""
    arch = cfg.model.arch or ""
    if (cfg.data.dataset.startswith(PYTHON_DATA) and inputs.data is None) or (
        arch.startswith("__main__:") and inputs.model is None
    ):
        raise LabelflipError(
            "this run's model or samples were given in Python (labelflip.evaluate); continue "
            "it with labelflip.evaluate(model, data, attacks, ..., resume=RUNDIR) and the same "
            "model, data and arguments"
        )


@dataclass
class RunPlan:
    """Everything a run needs, loaded and checked (see :func:`prepare`)."""

    cfg: RunConfig
    seeds: SeedTree
    device: torch.device
    jobs: list[PlannedJob]
    model: Loaded
    class_names: tuple[str, ...]
    input_shape: tuple[int, ...]
    indices: np.ndarray
    x: torch.Tensor
    y: torch.Tensor
    clean_pred: torch.Tensor
    clean_accuracy: float
    oracle: Loaded | None = None
    oracle_clean_pred: torch.Tensor | None = None
    svae: LoadedSVAE | None = None

    @property
    def clf(self) -> Any:
        return self.model.clf

    @property
    def n(self) -> int:
        return len(self.indices)

    @property
    def gallery(self) -> int:
        return gallery_size(self.cfg.gallery, self.n, self.cfg.batch_size)

    def needs(self) -> dict[str, Any]:
        """The run resources an attack may take (``svae``)."""
        return {"svae": None if self.svae is None else self.svae.svae}

    def judges(self) -> Judges:
        d = self.cfg.detect
        return Judges(
            oracle=None if self.oracle is None else self.oracle.clf,
            detect=d if d.feature_squeezing else None,
        )


def prepare(
    cfg: RunConfig,
    progress: bool = False,
    device: torch.device | None = None,
    inputs: Inputs | None = None,
) -> RunPlan:
    """Load the data and the model and check everything a user can get wrong
    before any work (:mod:`labelflip.checks`): the model fits the data, the
    samples exist, the inputs lie in the model's bounds, every budget fits
    the input range, every attack applies to the model, every target
    strategy chooses a target for every class (a ``mapping`` covers them),
    the ``[similarity]`` hierarchy and layer exist, and the model runs on
    the chosen samples and gives finite logits. Warns if the clean accuracy
    is implausibly low. ``device`` overrides the config's (the Ray
    executor's driver device); ``inputs``: a model and samples given in
    Python instead of the config's (moved to ``device``)."""
    from labelflip.attacks import ATTACKS
    from labelflip.data import load_dataset
    from labelflip.models.classifier import checked_logits

    inputs = Inputs() if inputs is None else inputs
    _python_inputs_missing(cfg, inputs)
    seeds = SeedTree(cfg.seed)
    device = resolve_device(cfg.device) if device is None else device
    ref = DataRef(cfg.data.dataset, cfg.data.data_dir)
    data = inputs.data
    if data is None:
        data = load_dataset(cfg.data.dataset, cfg.data.split, cfg.data.data_dir)
    indices = select_samples(len(data), cfg.data, seeds)
    model = inputs.model
    if model is None:
        model = obtain_model(cfg.model, ref, seeds.model(), device, progress)
    else:
        model.clf.to(device)
    clf, ckpt = model.clf, model.checkpoint
    checks.model_fits_data(clf, "model", ckpt, cfg.data.dataset, data)
    x_all = data.x[torch.as_tensor(indices)]
    y_all = data.y[torch.as_tensor(indices)]
    checks.inputs_in_bounds(clf, x_all, f"{cfg.data.dataset} {cfg.data.split}", ckpt)
    jobs = [plan_job(spec) for spec in cfg.jobs()]
    checks.budgets_fit(jobs, clf, x_all)
    checks.attacks_apply(jobs, clf, ckpt, ATTACKS)
    checks.targets_apply(jobs, clf, y_all)
    checks.similarity_applies(cfg.similarity, clf, data.class_names)
    clean_pred = clf.decode(checked_logits(clf, x_all, cfg.batch_size, f"model {ckpt.name}"))
    clean_acc = float((clean_pred == y_all).float().mean())
    meta = model.meta
    reported = meta.clean_test_accuracy if meta.dataset == cfg.data.dataset else None
    note = checks.clean_accuracy_warning(clean_acc, len(indices), clf.num_classes, reported)
    if note is not None:
        warnings.warn(note, LabelflipWarning, stacklevel=2)

    checks.detector_applies(cfg.detect.feature_squeezing, clf)
    seed = seeds.oracle(None if cfg.oracle is None else cfg.oracle.seed)
    oracle = obtain_oracle(cfg.oracle, ref, seed, device, progress)
    oracle_pred = None
    if oracle is not None:
        checks.oracle_fits(oracle.clf, oracle.checkpoint, clf, cfg.data.dataset, data)
        checks.oracle_independent(
            oracle.meta.weights_sha256, meta.weights_sha256, oracle.checkpoint
        )
        oracle_pred = oracle.clf.decode(
            checked_logits(oracle.clf, x_all, cfg.batch_size, f"oracle {oracle.checkpoint.name}")
        )
    seed = seeds.svae(None if cfg.svae is None else cfg.svae.seed)
    svae = obtain_svae(cfg.svae, ref, seed, device, progress)
    if svae is not None:
        checks.svae_fits(svae.svae, svae.checkpoint, cfg.data.dataset, data)
    return RunPlan(
        cfg=cfg,
        seeds=seeds,
        device=device,
        jobs=jobs,
        model=model,
        class_names=tuple(data.class_names),
        input_shape=tuple(data.input_shape),
        indices=indices,
        x=x_all,
        y=y_all,
        clean_pred=clean_pred,
        clean_accuracy=clean_acc,
        oracle=oracle,
        oracle_clean_pred=oracle_pred,
        svae=svae,
    )


def stored_config(run_dir: str | Path, given: RunConfig | None = None) -> RunConfig:
    """The config a run directory was made with (its ``config.json``);
    ``given`` (if any) must equal it."""
    rd = RunDir(run_dir)
    stored = config_from_json(rd.config_text(), str(rd.path / "config.json"))
    checks.resume_same_config(rd.path, stored, given)
    return stored

"""The public API: one call from your own model and data to a run
(:func:`evaluate`), a config run from Python (:func:`run_experiment`), and a
run directory read back (:func:`open_run`). The CLI's ``labelflip run`` is
the same runner: a run made here is a run directory like any other
(``labelflip report`` / ``export`` / ``compare`` / ``run --resume`` read it)
and its records equal those of ``labelflip run`` on the equivalent config.

>>> run = labelflip.evaluate(net, loader, ["fgsm", {"attack": "pgd", "eps": [0.1, 0.3]}],
...                          mean=[0.1307], std=[0.3081], samples=500)   # doctest: +SKIP
>>> run.flip_matrix("pgd-eps0.1"), run.symmetry("pgd-eps0.1")         # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from labelflip import _inputs
from labelflip._settings import Settings
from labelflip.config import (
    RunConfig,
    default_config_text,
    load_config,
    parse_config,
    validate_config,
)
from labelflip.errors import LabelflipError
from labelflip.models import Classifier
from labelflip.results import Run, open_run
from labelflip.run import Executor, Inputs, new_run_dir, run

SOURCE = "labelflip.evaluate"

AttackLike = str | Mapping[str, Any] | Settings


def attack_tables(attacks: AttackLike | Sequence[AttackLike]) -> list[dict[str, Any]]:
    """``[[attacks]]`` tables from attack names, mappings as in a config
    (``{"attack": "pgd", "eps": [0.1, 0.3]}``: lists are grids) or settings
    objects (``PGDSettings(eps=0.1)``: the settings that differ from the
    defaults)."""
    if isinstance(attacks, (str, Mapping, Settings)):
        attacks = [attacks]
    if not isinstance(attacks, Sequence):
        raise LabelflipError(
            f"{SOURCE}: attacks must be a name, a mapping, a settings object or a list of them, "
            f"got {type(attacks).__name__}"
        )
    if not attacks:
        raise LabelflipError(f"{SOURCE}: give at least one attack (a name, a mapping or settings)")
    return [_attack_table(a) for a in attacks]


def _attack_table(a: Any) -> dict[str, Any]:
    from labelflip.attacks import ATTACKS

    if isinstance(a, str):
        return {"attack": a}
    if isinstance(a, Mapping):
        return dict(a)
    if isinstance(a, Settings):
        names = [n for n, spec in ATTACKS.items() if spec.settings_type is type(a)]
        if not names:
            raise LabelflipError(f"{SOURCE}: {type(a).__name__} are not an attack's settings")
        default = type(a)()
        return {
            "attack": names[0],
            **{
                f.name: getattr(a, f.name)
                for f in dataclasses.fields(a)
                if getattr(a, f.name) != getattr(default, f.name)
            },
        }
    raise LabelflipError(
        f"{SOURCE}: an attack is a name, a mapping or a settings object, got {type(a).__name__}"
    )


def _similarity(similarity: Mapping[str, Any] | None, in_python: bool) -> dict[str, Any]:
    table = dict(similarity or {})
    if in_python:
        if table.get("perceptual"):
            raise LabelflipError(
                f"{SOURCE}: the perceptual class distance needs a named dataset's training "
                "split; samples given in Python have none"
            )
        table["perceptual"] = False
    return table


@contextlib.contextmanager
def _training_kept(module: nn.Module | None) -> Iterator[None]:
    """The module's (and its submodules') train/eval flags as they were,
    after the run forced eval mode."""
    modes = [(m, m.training) for m in module.modules()] if module is not None else []
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def _executor(executor: str | Executor, live_model: bool) -> Any:
    if not isinstance(executor, str):
        return contextlib.nullcontext(executor)
    if executor == "ray" and live_model:
        raise LabelflipError(
            f"{SOURCE}: executor='ray' loads the model from a checkpoint on each worker; give "
            "a checkpoint path or zoo name, or use executor='local' for a live nn.Module"
        )
    from labelflip.run.ray import RayOptions, make_executor

    return make_executor(executor, RayOptions())


def evaluate(
    model: nn.Module | Classifier | str | os.PathLike[str],
    data: Any,
    attacks: AttackLike | Sequence[AttackLike],
    *,
    bounds: tuple[float, float] | None = None,
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    class_names: Sequence[str] | None = None,
    samples: int | None = None,
    selection: str = "first",
    seed: int = 0,
    out: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    name: str = "evaluate",
    executor: str | Executor = "local",
    device: str = "auto",
    batch_size: int = 256,
    split: str = "test",
    data_dir: str | os.PathLike[str] | None = None,
    similarity: Mapping[str, Any] | None = None,
    white_noise: int = 1000,
    gallery: int = 8,
    save_adversarials: bool = False,
    progress: bool = False,
) -> Run:
    """Attack ``model`` on ``data`` with ``attacks`` and record where every
    adversarial example lands, in a resumable run directory; returns the
    :class:`~labelflip.results.Run`.

    ``model``: an ``nn.Module`` returning logits (wrapped in a
    :class:`~labelflip.models.Classifier`: inputs live in ``bounds``,
    default ``(0, 1)``; ``mean``/``std`` normalise them inside the model, so
    every budget is in input units), a ``Classifier``, a labelflip checkpoint
    path or a zoo model name. A live model's weights are saved (safetensors
    and a JSON sidecar) in the model cache, so the run records a checkpoint
    and its SHA-256; the run uses the live module, on its own device
    (``device="auto"``) or moved to ``device``, and leaves its train/eval
    mode as it was.

    ``data``: a dataset name (``split``, ``data_dir``), tensors or arrays
    ``(x, y)`` (``x`` float N×C×H×W inside the bounds, ``y`` class indices),
    a torch ``Dataset`` or a ``DataLoader`` (not shuffling) yielding
    ``(x, y)``. ``class_names`` default to the dataset's (a torchvision
    dataset's ``classes``), else ``"0"``, ``"1"``, ...

    ``attacks``: names (``"deepfool"``), mappings as ``[[attacks]]`` tables
    in a config (``{"attack": "pgd", "eps": [0.1, 0.3]}``: a list is a grid,
    one job per value) or settings objects (``PGDSettings(eps=0.1)``).

    ``samples`` (all when ``None``), ``selection`` (``"first"`` or a seeded
    ``"random"`` choice), ``seed``, ``batch_size``, ``white_noise``,
    ``gallery``, ``save_adversarials`` and ``similarity`` (the
    ``[similarity]`` table; the perceptual distance is off for samples given
    in Python) are the config's settings of the same names. The run goes
    into ``out`` (default ``runs/<name>-<date>-<time>``); ``executor`` is
    ``"local"``, ``"ray"`` (for a checkpoint or zoo model) or an executor.

    ``resume=RUNDIR`` continues an interrupted evaluation: pass the same
    model, data and arguments (the config they give must equal the run's;
    the samples and the weights are checked by their digests), and only the
    batches not yet recorded are run. ``labelflip run --resume`` continues a
    run whose samples and model class it can load itself (a dataset name
    and a checkpoint or importable model).

    Every error a user can cause is one :class:`~labelflip.LabelflipError` line.
    """
    if resume is not None and out is not None:
        raise LabelflipError(f"{SOURCE}: resume= continues RUNDIR in place; drop out=")
    with _training_kept(model if isinstance(model, nn.Module) else None):
        cfg, inputs = _evaluation(
            model, data, attack_tables(attacks), bounds=bounds, mean=mean, std=std,
            class_names=class_names, samples=samples, selection=selection, seed=seed, name=name,
            executor=executor if isinstance(executor, str) else "local", device=device,
            batch_size=batch_size, split=split, data_dir=data_dir, similarity=similarity,
            white_noise=white_noise, gallery=gallery, save_adversarials=save_adversarials,
        )  # fmt: skip
        again = None if resume is None else Path(resume)
        run_dir = None if again else Path(out) if out is not None else new_run_dir(cfg, None)
        with _executor(executor, inputs.model is not None) as ex:
            outcome = run(
                cfg, run_dir=run_dir, resume=again, progress=progress, executor=ex, inputs=inputs
            )
    return Run(outcome.run_dir)


def _evaluation(
    model: Any,
    data: Any,
    tables: list[dict[str, Any]],
    *,
    bounds: tuple[float, float] | None,
    mean: Sequence[float] | float | None,
    std: Sequence[float] | float | None,
    class_names: Sequence[str] | None,
    samples: int | None,
    selection: str,
    seed: int,
    name: str,
    executor: str,
    device: str,
    batch_size: int,
    split: str,
    data_dir: str | os.PathLike[str] | None,
    similarity: Mapping[str, Any] | None,
    white_noise: int,
    gallery: int,
    save_adversarials: bool,
) -> tuple[RunConfig, Inputs]:
    """The config of an evaluation (validated as one read from TOML) and the
    model and samples given in Python (a live model saved on the way)."""
    named = isinstance(data, str)
    if named:
        ds = _inputs.named_dataset(data, split, None if data_dir is None else str(data_dir))
        if class_names is not None and list(class_names) != list(ds.class_names):
            raise LabelflipError(f"{SOURCE}: class_names differ from dataset '{data}''s own")
        x, y, data_names = ds.x, ds.y, list(ds.class_names)
    else:
        x, y = _inputs.samples_of(data)
        data_names = _inputs.class_names_of(data)
    m = _inputs.given_model(
        model, x, class_names=class_names, data_names=data_names,
        bounds=bounds, mean=mean, std=std, device=device,
    )  # fmt: skip
    if named:
        data_table = {"dataset": data, "split": split}
        if data_dir is not None:
            data_table["data_dir"] = str(data_dir)
    else:
        if m.multilabel:
            raise LabelflipError(
                f"{SOURCE}: a multi-label model needs a named dataset (its labels are bitmasks)"
            )
        _inputs.check_labels(y, len(m.names))
        _inputs.check_bounds(x, m.bounds)
        ds = _inputs.python_dataset(x, y, m.names)
        data_table = {"dataset": ds.name}
    data_table.update(
        {k: v for k, v in (("samples", samples), ("selection", selection)) if v is not None}
    )
    raw = {
        "name": name,
        "seed": seed,
        "device": m.device,
        "batch_size": batch_size,
        "save_adversarials": save_adversarials,
        "white_noise": white_noise,
        "gallery": gallery,
        "executor": executor,
        "data": data_table,
        "model": m.table,
        "similarity": _similarity(similarity, not named),
        "attacks": tables,
    }
    cfg = parse_config(raw, source=SOURCE)  # every setting checked before anything is saved
    return cfg, Inputs(model=None if m.live is None else m.live.save(ds.name), data=ds)


def run_experiment(
    config: RunConfig | Mapping[str, Any] | str | os.PathLike[str] | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    executor: str | Executor | None = None,
    progress: bool = False,
) -> Run:
    """Run an experiment config, as ``labelflip run`` does, and return the
    :class:`~labelflip.results.Run`: ``config`` is a TOML file's path, a
    :class:`~labelflip.config.RunConfig` (from :func:`~labelflip.config.load_config`),
    a mapping as parsed from TOML, or ``None`` (the built-in default).
    ``out``: the run directory (default ``OUTPUT/NAME-DATE-TIME``);
    ``resume``: continue that run instead (``config``, if given, must be its
    own); ``data_dir`` overrides ``[data] data_dir``; ``executor``:
    ``"local"``, ``"ray"`` or an executor (default: the config's)."""
    text = ""
    if isinstance(config, RunConfig):
        cfg = validate_config(config)
    elif isinstance(config, Mapping):
        cfg = parse_config(config, source="run_experiment")
    elif config is None:
        cfg, text = load_config(None), default_config_text()
    else:
        cfg = load_config(config)
        text = Path(config).read_text(encoding="utf-8")
    if data_dir is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, data_dir=str(data_dir)))
    kind = executor if executor is not None else cfg.executor
    with _executor(kind, False) as ex:
        if resume is not None:
            if out is not None:
                raise LabelflipError("run_experiment: resume= continues RUNDIR in place; drop out=")
            given = None if config is None else cfg
            outcome = run(given, resume=Path(resume), progress=progress, executor=ex)
        else:
            run_dir = Path(out) if out is not None else new_run_dir(cfg, None)
            outcome = run(cfg, config_text=text, run_dir=run_dir, progress=progress, executor=ex)
    return Run(outcome.run_dir)


__all__ = ["Run", "attack_tables", "evaluate", "open_run", "run_experiment"]

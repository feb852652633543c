"""The experiment runner behind ``labelflip run``: expands a config into jobs,
runs them batch by batch and writes every sample's record to the run's store.

Determinism and resumption: the samples are fixed by the config's seed; the
batches of a job are fixed slices of the sample list; the generator of batch
``b`` of job ``j`` is seeded from ``(seed, j, b)`` alone. Each finished batch
is one store transaction, so a run killed at any moment and resumed with
``labelflip run --resume RUNDIR`` redoes only the batches that were not
committed, and its records equal those of an uninterrupted run (apart from
the measured seconds). Ctrl-C (SIGINT) stops a run cleanly after the batch in
hand (a second Ctrl-C stops at once); it is resumed the same way.

Everything a user can get wrong (dataset, model, samples, budgets, a model
whose logits are NaN) is checked before the run directory is made, and the
run directory appears atomically with its config and an empty store: a run
that fails before any work leaves nothing behind, and a run directory that
exists can always be resumed. Before attacking, the clean accuracy on the
chosen samples is checked (:func:`clean_accuracy_warning`).

A run directory holds ``config.json`` (the resolved config), ``config.toml``
(the text it came from), ``records.sqlite`` (job table, records, metadata;
see :mod:`labelflip.store`), ``gallery/`` (the originals and adversarials of
the first few samples, shown in the report) and, at the end, ``report/``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shlex
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from labelflip._text import slug
from labelflip.config import JobSpec, RunConfig, config_from_json, missing_target_distance
from labelflip.errors import LabelflipError, LabelflipWarning, RunInterrupted, os_error

if TYPE_CHECKING:  # pragma: no cover
    from labelflip.executors import RayExecutor

CONFIG_JSON = "config.json"
CONFIG_TOML = "config.toml"
GALLERY_DIR = "gallery"
_FLOAT = ("l1", "l2", "linf")  # the other AttackResult columns are integers (success 0/1)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ pieces


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


def model_cache_dir() -> Path:
    """Where models trained for runs are cached: $LABELFLIP_CACHE/models, else
    the per-user cache directory."""
    env = os.environ.get("LABELFLIP_CACHE")
    if env:
        return Path(env).expanduser() / "models"
    import platformdirs

    return Path(platformdirs.user_cache_dir("labelflip")) / "models"


def select_samples(n_total: int, cfg: RunConfig) -> np.ndarray:
    """Dataset indices to attack (increasing), from the config's [data] table."""
    d = cfg.data
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
    rng = np.random.Generator(np.random.PCG64(cfg.seed))
    return np.sort(rng.choice(pool, size=d.samples, replace=False))


def batch_seed(seed: int, job_id: str, batch: int) -> int:
    """The generator seed of one batch of one job (stable across runs and resumes)."""
    digest = hashlib.sha256(f"{seed}:{job_id}:{batch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def obtain_model(cfg: RunConfig, device: torch.device, progress: bool):
    """Load the config's checkpoint, or train its architecture (cached)."""
    m = cfg.model
    return _obtain_classifier(
        cfg, m.checkpoint, m.arch, m.epochs, cfg.seed, m.encoding, device, progress
    )


def obtain_oracle(cfg: RunConfig, device: torch.device, progress: bool):
    """The ``[oracle]`` classifier (loaded, or trained with its own seed and
    cached), or ``(None, None, None)`` when the config has none."""
    o = cfg.oracle
    if o is None:
        return None, None, None
    seed = cfg.seed + 1 if o.seed is None else o.seed
    return _obtain_classifier(cfg, o.checkpoint, o.arch, o.epochs, seed, None, device, progress)


def _obtain_classifier(
    cfg: RunConfig,
    checkpoint: str | None,
    arch: str | None,
    epochs: int | None,
    seed: int,
    encoding: str | None,
    device: torch.device,
    progress: bool,
):
    from labelflip.models import load_checkpoint, recipe_for
    from labelflip.models.training import TrainSettings, train_and_save

    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
    else:
        assert arch is not None
        settings = TrainSettings.from_recipe(recipe_for(arch), epochs=epochs, seed=seed)
        # ECOC beside one-hot on the same data; a multi-label dataset only has one encoding
        kind = "-ecoc" if encoding == "ecoc" else ""
        path = (
            model_cache_dir()
            / f"{slug(cfg.data.dataset)}-{slug(arch)}{kind}-seed{seed}-e{settings.epochs}"
            ".safetensors"
        )
        if not path.is_file():
            _log(
                f"training {arch} on {cfg.data.dataset} ({settings.epochs} epochs, seed "
                f"{seed}{f', {encoding} outputs' if encoding else ''}); cached at {path}"
            )
            path, result, acc = train_and_save(
                arch,
                cfg.data.dataset,
                settings,
                path,
                data_dir=cfg.data.data_dir,
                device=device,
                progress=progress,
                encoding=encoding,
            )
            _log(f"trained in {result.seconds:.0f} s: test accuracy {acc:.4f}")
    trust = arch if arch and ":" in arch else None
    clf, meta = load_checkpoint(path, device=device, trust_code=trust)
    return clf, meta, path


def obtain_svae(cfg: RunConfig, device: torch.device, progress: bool):
    """The ``[svae]`` model: loaded from its checkpoint, or trained on the
    dataset's train split with the table's settings and cached (the cache
    name carries a digest of the settings). ``(None, None, None)`` when the
    config has no ``[svae]`` table."""
    from labelflip.models.svae import SVAESettings, load_svae, train_and_save_svae

    sv = cfg.svae
    if sv is None:
        return None, None, None
    if sv.checkpoint is not None:
        path = Path(sv.checkpoint).expanduser()
    else:
        settings = SVAESettings(seed=cfg.seed if sv.seed is None else sv.seed, **sv.training())
        digest = hashlib.sha256(
            json.dumps(dataclasses.asdict(settings), sort_keys=True).encode()
        ).hexdigest()[:10]
        path = model_cache_dir() / f"{slug(cfg.data.dataset)}-svae-{digest}.safetensors"
        if not path.is_file():
            _log(
                f"training an svae on {cfg.data.dataset} ({settings.epochs}+"
                f"{settings.dis_epochs} epochs, seed {settings.seed}); cached at {path}"
            )
            t = time.perf_counter()
            path.parent.mkdir(parents=True, exist_ok=True)
            path, acc = train_and_save_svae(
                cfg.data.dataset,
                settings,
                path,
                data_dir=cfg.data.data_dir,
                device=device,
                progress=progress,
            )
            _log(f"trained in {time.perf_counter() - t:.0f} s: f2 test accuracy {acc:.4f}")
    svae, meta = load_svae(path, device=device)
    return svae, meta, path


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise os_error(f"cannot write {path}", e) from None


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)

    _write_atomic(path, write)


def write_gallery_npz(run_dir: Path, job_ids: list[str]) -> Path | None:
    """Bundle ``gallery/`` into ``gallery.npz`` (positions, x, true, adv__<job>
    and, for Type I jobs, transition__<job>)."""
    gdir = run_dir / GALLERY_DIR
    if not (gdir / "x.npy").is_file():
        return None
    arrays: dict[str, np.ndarray] = {}
    for name in ("positions", "x", "true"):
        arrays[name] = np.load(gdir / f"{name}.npy", allow_pickle=False)
    for jid in job_ids:
        for kind in ("adv", "transition"):
            f = gdir / f"{kind}__{jid}.npy"
            if f.is_file():
                arrays[f"{kind}__{jid}"] = np.load(f, allow_pickle=False)
    out = run_dir / "gallery.npz"

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    _write_atomic(out, write)
    return out


# ------------------------------------------------------------------ run


@dataclass
class RunOutcome:
    run_dir: Path
    seconds: float


def new_run_dir(cfg: RunConfig, output: str | None) -> Path:
    base = Path(output if output is not None else cfg.output).expanduser()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = base / f"{cfg.name}-{stamp}"
    i = 2
    while run_dir.exists():
        run_dir = base / f"{cfg.name}-{stamp}-{i}"
        i += 1
    return run_dir


def run(
    cfg: RunConfig | None,
    *,
    config_text: str = "",
    run_dir: Path | None = None,
    resume: Path | None = None,
    progress: bool = True,
    executor: RayExecutor | None = None,
) -> RunOutcome:
    """Run a config into a new run directory, or resume ``resume`` (then
    ``cfg``, if given, must be the config the run was made with).

    ``executor``: where the attacks run; ``None`` (the local executor) runs
    them here, job by job; a :class:`~labelflip.executors.RayExecutor` runs
    them as shards on a Ray cluster. Either way only this process writes the
    run's store, and the records are the same."""
    from labelflip.models.checkpoint import library_versions
    from labelflip.store import Job, RunStore

    t_start = time.perf_counter()
    if resume is not None:
        run_dir = Path(resume)
        cfg = _resume_config(run_dir, cfg)
    else:
        assert cfg is not None and run_dir is not None
        if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
            raise LabelflipError(
                f"run directory {run_dir} already exists and is not empty "
                "(use --resume to continue it)"
            )
    driver_device = None if executor is None else executor.devices(cfg.device)[0]
    inputs = prepare(cfg, progress, driver_device)  # every check, before the run dir is touched
    if resume is None:
        _create_run_dir(run_dir, cfg, config_text)
        _log(f"run directory: {run_dir}")
    store = RunStore.open(run_dir)

    with store, _stop_on_sigint() as stop:
        started = store.meta("started") is not None
        if resume is not None:
            if started:
                _check_unchanged(store, run_dir, inputs)
            _log(f"resuming {run_dir}")
        if started:
            distances = _stored_distances(store)
        else:  # a new run, or one killed before its setup was saved
            distances = _record_setup(store, run_dir, cfg, inputs)

        versions = library_versions()
        jobs = cfg.jobs()
        for spec in jobs:
            job = Job(
                job_id=spec.job_id,
                attack=spec.attack,
                settings=spec.stored_settings(),
                seed=cfg.seed,
                model_sha256=inputs.meta.weights_sha256,
                versions=versions if resume is None else _old_versions(store, spec, versions),
                label=spec.label,
                group=spec.group,
                sweep_value=spec.sweep_value,
            )
            store.add_job(job)

        _check_target_distances(jobs, distances)
        n = len(inputs.indices)
        total_jobs = len(jobs)
        if executor is not None:  # shards of all jobs at once; committed here as they finish
            _stop_if_asked(stop, store, run_dir, jobs, n)
            executor.run_jobs(
                store,
                run_dir,
                cfg,
                jobs,
                inputs,
                distances,
                progress,
                lambda: _stop_if_asked(stop, store, run_dir, jobs, n),
            )
        for j, spec in enumerate(jobs, 1):  # the local executor (nothing left after Ray)
            if store.job_status(spec.job_id) == "done":
                continue
            _stop_if_asked(stop, store, run_dir, jobs, n)
            _run_job(
                store,
                run_dir,
                spec,
                inputs.clf,
                inputs.x,
                inputs.y,
                inputs.indices,
                cfg,
                inputs.device,
                progress,
                f"[{j}/{total_jobs}] {spec.job_id}",
                distances,
                lambda: _stop_if_asked(stop, store, run_dir, jobs, n),
                inputs.resources(cfg),
            )
            store.mark_done(spec.job_id)
        store.set_meta("finished", datetime.now().isoformat(timespec="seconds"))
        _log(f"{total_jobs} jobs x {n} samples done")

    write_gallery_npz(run_dir, [s.job_id for s in jobs])
    return RunOutcome(run_dir, time.perf_counter() - t_start)


@dataclass
class RunInputs:
    """What :func:`prepare` checked and computed: the model, the chosen samples
    and their clean predictions."""

    device: torch.device
    clf: Any
    meta: Any  # CheckpointMeta
    checkpoint: Path
    class_names: tuple[str, ...]
    input_shape: tuple[int, int, int]
    indices: np.ndarray
    x: torch.Tensor
    y: torch.Tensor
    clean_pred: torch.Tensor
    clean_accuracy: float
    oracle: Any = None  # the [oracle] Classifier, if any
    oracle_meta: Any = None
    oracle_checkpoint: Path | None = None
    oracle_clean_pred: torch.Tensor | None = None
    svae: Any = None  # the [svae] SVAE, if any
    svae_meta: dict[str, Any] | None = None
    svae_checkpoint: Path | None = None

    def resources(self, cfg: RunConfig) -> dict[str, Any]:
        """What an attack batch may need beside the model (see :func:`attack_batch`)."""
        return {
            "svae": self.svae,
            "oracle": self.oracle,
            "detect": cfg.detect if cfg.detect.feature_squeezing else None,
        }


def prepare(
    cfg: RunConfig, progress: bool = False, device: torch.device | None = None
) -> RunInputs:
    """Load the data and the model and check everything a user can get wrong
    before any work: the model fits the data, the samples exist, the inputs
    lie in the model's bounds, every budget fits the input range, and the
    model runs on the chosen samples and gives finite logits. Warns if the
    clean accuracy is implausibly low (:func:`clean_accuracy_warning`).
    ``device`` overrides the config's (the Ray executor's driver device)."""
    from labelflip.data import load_dataset
    from labelflip.models.classifier import checked_logits

    device = resolve_device(cfg.device) if device is None else device
    data = load_dataset(cfg.data.dataset, cfg.data.split, cfg.data.data_dir)
    indices = select_samples(len(data), cfg)
    clf, meta, ckpt = obtain_model(cfg, device, progress)
    if tuple(clf.input_shape or data.input_shape) != tuple(data.input_shape) or (
        clf.num_classes != data.num_classes
    ):
        raise LabelflipError(
            f"model {ckpt} ({clf.num_classes} classes, inputs {clf.input_shape}) does not "
            f"fit dataset '{cfg.data.dataset}' ({data.num_classes} classes, inputs "
            f"{tuple(data.input_shape)})"
        )
    x_all = data.x[torch.as_tensor(indices)]
    y_all = data.y[torch.as_tensor(indices)]
    try:
        clf.check_inputs(x_all)
    except LabelflipError as e:
        raise LabelflipError(f"{cfg.data.dataset} {cfg.data.split} samples: {e} ({ckpt})") from None
    _check_budgets(cfg.jobs(), clf, x_all)
    _check_encodings(cfg, clf, ckpt)
    clean_pred = clf.decode(checked_logits(clf, x_all, cfg.batch_size, f"model {ckpt.name}"))
    clean_acc = float((clean_pred == y_all).float().mean())
    reported = meta.clean_test_accuracy if meta.dataset == cfg.data.dataset else None
    note = clean_accuracy_warning(clean_acc, len(indices), clf.num_classes, reported)
    if note is not None:
        warnings.warn(note, LabelflipWarning, stacklevel=2)
    extra = _prepare_judges(cfg, clf, meta.weights_sha256, data, x_all, device, progress)
    return RunInputs(
        device=device,
        clf=clf,
        meta=meta,
        checkpoint=ckpt,
        class_names=tuple(data.class_names),
        input_shape=tuple(data.input_shape),
        indices=indices,
        x=x_all,
        y=y_all,
        clean_pred=clean_pred,
        clean_accuracy=clean_acc,
        **extra,
    )


def _prepare_judges(
    cfg: RunConfig,
    clf,
    model_sha256: str,
    data,
    x_all: torch.Tensor,
    device: torch.device,
    progress: bool,
) -> dict[str, Any]:
    """The ``[oracle]``, ``[svae]`` and ``[detect]`` parts of :func:`prepare`:
    load (or train) the oracle and the SVAE, check that they fit the data and
    the model, and that the detector applies to the model."""
    from labelflip.models.classifier import checked_logits

    out: dict[str, Any] = {}
    if cfg.detect.feature_squeezing and clf.multilabel:
        raise LabelflipError(
            "[detect] feature_squeezing compares softmax outputs; the model is multi-label"
        )
    oracle, ometa, opath = obtain_oracle(cfg, device, progress)
    if oracle is not None:
        if tuple(oracle.input_shape or data.input_shape) != tuple(data.input_shape) or (
            oracle.num_classes != data.num_classes or oracle.multilabel or clf.multilabel
        ):
            raise LabelflipError(
                f"oracle {opath} ({oracle.num_classes} classes, inputs {oracle.input_shape}, "
                f"{oracle.encoding.kind}) does not fit dataset '{cfg.data.dataset}' "
                f"({data.num_classes} classes, inputs {tuple(data.input_shape)}) and a "
                "single-label model"
            )
        if ometa.weights_sha256 == model_sha256:
            raise LabelflipError(
                f"the oracle {opath.name} is the attacked model itself (same weights); an "
                "independent judge must be trained separately (another seed or architecture)"
            )
        pred = oracle.decode(checked_logits(oracle, x_all, cfg.batch_size, f"oracle {opath.name}"))
        out.update(
            oracle=oracle, oracle_meta=ometa, oracle_checkpoint=opath, oracle_clean_pred=pred
        )
    svae, smeta, spath = obtain_svae(cfg, device, progress)
    if svae is not None:
        if tuple(svae.input_shape) != tuple(data.input_shape) or (
            svae.num_classes != data.num_classes
        ):
            raise LabelflipError(
                f"svae {spath} ({svae.num_classes} classes, inputs {svae.input_shape}) does not "
                f"fit dataset '{cfg.data.dataset}' ({data.num_classes} classes, inputs "
                f"{tuple(data.input_shape)})"
            )
        out.update(svae=svae, svae_meta=smeta, svae_checkpoint=spath)
    return out


def clean_accuracy_warning(
    accuracy: float, n: int, num_classes: int, reported: float | None = None
) -> str | None:
    """The sanity check before attacking (AutoAttack, Croce & Hein 2020, also
    reports clean accuracy first): the text of a warning when the clean
    accuracy on the ``n`` chosen samples is implausibly low, else ``None``.

    Implausibly low means below twice chance (``2 / k``, capped at halfway
    between chance and 100 % so that two classes give 0.75), or below half
    the clean test accuracy ``reported`` by the checkpoint for the same
    dataset. A weak model may be attacked on purpose, so this only warns.
    """
    chance = 1.0 / num_classes
    floor = min(2 * chance, (1 + chance) / 2)
    if accuracy < floor:
        why = f"below twice chance ({floor:.2f} for {num_classes} classes)"
    elif reported is not None and accuracy < reported / 2:
        why = f"less than half the {reported:.2f} its checkpoint reports on this dataset"
    else:
        return None
    return (
        f"clean accuracy on the {n} chosen samples is {accuracy:.2f}, {why}: wrong "
        "normalisation, dataset or class order? attacking anyway"
    )


def _check_budgets(jobs: list[JobSpec], clf, x: torch.Tensor) -> None:
    """Every ``eps`` must fit the model's input range (checked again by the attack)."""
    from labelflip.attacks import get_attack, settings_from_mapping
    from labelflip.attacks._common import check_eps

    for spec in jobs:
        settings = settings_from_mapping(get_attack(spec.attack), spec.settings)
        eps, norm = getattr(settings, "eps", None), getattr(settings, "norm", None)
        if isinstance(eps, (int, float)) and norm in ("linf", "l2"):
            try:
                check_eps(spec.attack, float(eps), norm, clf, x[:1])
            except LabelflipError as e:
                raise LabelflipError(f"job {spec.job_id}: {e}") from None


def _resume_config(run_dir: Path, given: RunConfig | None) -> RunConfig:
    """The config saved in ``run_dir``; ``given`` (if any) must equal it."""
    cfile = run_dir / CONFIG_JSON
    if not cfile.is_file():
        what = "does not exist" if not run_dir.exists() else f"has no {CONFIG_JSON}"
        raise LabelflipError(f"cannot resume {run_dir}: it {what} (not a run directory)")
    try:
        text = cfile.read_text()
    except OSError as e:
        raise os_error(f"cannot read {cfile}", e) from None
    stored = config_from_json(text, str(cfile))
    if given is not None:
        a, b = stored.to_dict(), given.to_dict()
        diff = [k for k in a if k not in ("output", "executor") and a[k] != b.get(k)]
        if diff:
            raise LabelflipError(
                f"cannot resume {run_dir}: it was made with a different config (differs in: "
                f"{', '.join(diff)}); resume it without a config, or run the new one elsewhere"
            )
    return stored


def stored_config(run_dir: Path) -> RunConfig:
    """The config a run directory was made with (its ``config.json``)."""
    return _resume_config(Path(run_dir), None)


def _check_unchanged(store, run_dir: Path, inputs: RunInputs) -> None:
    """A resumed run must see the samples and the model it started with."""
    if list(store.meta("samples")) != inputs.indices.tolist():
        raise LabelflipError(
            f"cannot resume {run_dir}: the dataset's samples changed since the run started"
        )
    for what, key, path, now in (
        ("model", "model", inputs.checkpoint, inputs.meta.weights_sha256),
        (
            "oracle",
            "oracle",
            inputs.oracle_checkpoint,
            None if inputs.oracle is None else inputs.oracle_meta.weights_sha256,
        ),
        (
            "svae",
            "svae",
            inputs.svae_checkpoint,
            None if inputs.svae is None else inputs.svae_meta.get("weights_sha256"),
        ),
    ):
        was = (store.meta(key) or {}).get("sha256")
        if was != now:
            raise LabelflipError(
                f"cannot resume {run_dir}: the {what} changed since the run started "
                f"({path} has SHA-256 {str(now)[:12]}..., the run used {str(was)[:12]}...)"
            )


def _create_run_dir(run_dir: Path, cfg: RunConfig, config_text: str) -> None:
    """Make ``run_dir`` with the config and an empty store, atomically: both
    are written into a hidden staging directory that is then renamed."""
    from labelflip.store import RunStore

    staging = run_dir.parent / f".{run_dir.name}.{os.getpid()}.tmp"
    try:
        staging.mkdir(parents=True)
    except OSError as e:
        raise os_error(f"cannot create run directory {run_dir}", e) from None
    try:
        _write_atomic(
            staging / CONFIG_JSON, lambda p: p.write_text(json.dumps(cfg.to_dict(), indent=2))
        )
        if config_text:
            _write_atomic(staging / CONFIG_TOML, lambda p: p.write_text(config_text))
        try:
            RunStore.create(staging, meta={}).close()
        except LabelflipError as e:  # name the run directory, not the staging one
            raise LabelflipError(str(e).replace(str(staging), str(run_dir))) from None
        try:
            os.rename(staging, run_dir)  # also replaces an empty run_dir
        except OSError as e:
            raise os_error(f"cannot create run directory {run_dir}", e) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _check_encodings(cfg: RunConfig, clf, ckpt: Path) -> None:
    """Every attack applies to the model's output encoding (a one-line error
    before any work)."""
    from labelflip.attacks import ATTACKS, get_attack

    kind = clf.encoding.kind
    for spec in cfg.jobs():
        if kind not in get_attack(spec.attack).encodings:
            able = ", ".join(n for n, a in ATTACKS.items() if kind in a.encodings)
            raise LabelflipError(
                f"attack '{spec.attack}' does not apply to the {kind} model {ckpt.name} "
                f"(attacks that do: {able})"
            )


def _record_setup(store, run_dir: Path, cfg: RunConfig, inputs: RunInputs) -> dict[str, Any]:
    """Compute and save the run's setup (distances, white-noise prior, gallery
    originals, metadata); ``started`` is written last and marks it complete."""
    clf, device = inputs.clf, inputs.device
    distances = class_distances(cfg, clf, inputs.class_names, inputs.y, inputs.clean_pred, device)
    store.set_meta("distances", [d.to_dict() for d in distances.values()])
    noise_pred = _white_noise(clf, cfg, device)
    _save_gallery_originals(run_dir, cfg, inputs.x, inputs.y)
    for key, value in {
        "name": cfg.name,
        "dataset": cfg.data.dataset,
        "split": cfg.data.split,
        "class_names": list(inputs.class_names),  # the labels, for a multi-label model
        "num_classes": len(inputs.class_names),
        "encoding": clf.encoding.to_dict(),
        "bounds": list(clf.bounds),
        "input_shape": list(inputs.input_shape),
        "samples": inputs.indices.tolist(),
        "seed": cfg.seed,
        "model": {
            "arch": inputs.meta.architecture,
            "checkpoint": str(inputs.checkpoint),
            "sha256": inputs.meta.weights_sha256,
            "clean_accuracy": inputs.clean_accuracy,
            "trained_on": inputs.meta.dataset,
        },
        "white_noise_pred": noise_pred,
        **_judges_meta(cfg, inputs),
        "started": datetime.now().isoformat(timespec="seconds"),
    }.items():
        store.set_meta(key, value)
    return distances


def _judges_meta(cfg: RunConfig, inputs: RunInputs) -> dict[str, Any]:
    """Run metadata of the oracle, the SVAE and the detector: what they are,
    the oracle's clean predictions and the clean samples' squeeze scores
    (the detector's calibration set)."""
    out: dict[str, Any] = {}
    if inputs.oracle is not None:
        assert inputs.oracle_clean_pred is not None
        pred = inputs.oracle_clean_pred.cpu()
        out["oracle"] = {
            "arch": inputs.oracle_meta.architecture,
            "checkpoint": str(inputs.oracle_checkpoint),
            "sha256": inputs.oracle_meta.weights_sha256,
            "clean_accuracy": float((pred == inputs.y).float().mean()),
            "trained_on": inputs.oracle_meta.dataset,
        }
        out["oracle_clean_pred"] = pred.tolist()
    if inputs.svae is not None:
        assert inputs.svae_meta is not None
        training = inputs.svae_meta.get("training", {})
        f2 = inputs.svae.predict(inputs.x.to(inputs.device)).cpu()
        out["svae"] = {
            "checkpoint": str(inputs.svae_checkpoint),
            "sha256": inputs.svae_meta.get("weights_sha256"),
            "arch": inputs.svae_meta.get("config", {}).get("arch", "mlp"),
            "latent_dim": inputs.svae.latent_dim,
            "f2_test_accuracy": training.get("f2_test_accuracy"),
            "f2_clean_accuracy": float((f2 == inputs.y).float().mean()),
        }
    if cfg.detect.feature_squeezing:
        from labelflip.detect import squeeze_scores

        d = cfg.detect
        scores = squeeze_scores(
            inputs.clf,
            inputs.x.to(inputs.device),
            squeezers=d.squeezers,
            distance=d.distance,
            batch_size=cfg.batch_size,
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


@contextlib.contextmanager
def _stop_on_sigint() -> Iterator[threading.Event]:
    """While running: the first Ctrl-C sets the returned event (the run stops
    after the batch in hand); a second one interrupts at once."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        _log("labelflip: stopping after the current batch (Ctrl-C again to stop at once)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop_if_asked(stop: threading.Event, store, run_dir: Path, jobs: list[JobSpec], n: int):
    if stop.is_set():
        kept = sum(len(store.done_samples(s.job_id)) for s in jobs)
        raise RunInterrupted(
            f"stopped after a finished batch, {kept} of {len(jobs) * n} records kept; "
            f"resume with: labelflip run --resume {shlex.quote(str(run_dir))}"
        )


def class_distances(
    cfg: RunConfig,
    clf,
    class_names,
    y: torch.Tensor,
    clean_pred: torch.Tensor,
    device: torch.device,
) -> dict[str, Any]:
    """The class-distance matrices the config's ``[similarity]`` table asks for
    (name -> :class:`~labelflip.similarity.ClassDistance`)."""
    from labelflip import similarity
    from labelflip.data import load_dataset

    sim = cfg.similarity
    names = list(class_names)
    out: dict[str, Any] = {}
    if clf.multilabel:  # classes are label vectors: no class distances
        return out
    if sim.perceptual:
        feature_model = clf
        if sim.checkpoint is not None:
            from labelflip.models import load_checkpoint

            feature_model, _ = load_checkpoint(Path(sim.checkpoint).expanduser(), device=device)
        train = load_dataset(cfg.data.dataset, sim.split, cfg.data.data_dir)
        _log(
            f"perceptual class distance: {cfg.data.dataset} {sim.split} split "
            f"({len(train)} images, per class cap {sim.per_class})"
        )
        out["perceptual"] = similarity.perceptual_distance(
            feature_model,
            train.x,
            train.y,
            class_names=names,
            layer=sim.layer,
            per_class=sim.per_class,
            generator=torch.Generator().manual_seed(cfg.seed),
            device=device,
            split=sim.split,
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


def _stored_distances(store) -> dict[str, Any]:
    from labelflip.similarity import ClassDistance

    return {d["name"]: ClassDistance.from_dict(d) for d in store.meta("distances") or []}


def _check_target_distances(jobs: list[JobSpec], distances: dict[str, Any]) -> None:
    missing = missing_target_distance(jobs, list(distances))
    if missing is not None:
        spec, name = missing
        raise LabelflipError(
            f"job {spec.job_id}: target strategy '{spec.target['strategy']}' needs the "
            f"'{name}' class distance, which this run does not have "
            f"(have: {', '.join(distances) or 'none'}; semantic needs a hierarchy: set "
            "[similarity] hierarchy)"
        )


def _old_versions(store, spec: JobSpec, versions: dict[str, Any]) -> dict[str, Any]:
    """A resumed run keeps the versions recorded when the job was first added."""
    for job in store.jobs():
        if job.job_id == spec.job_id:
            return job.versions
    return versions


def _white_noise(clf, cfg: RunConfig, device: torch.device) -> list[int]:
    """Predictions on ``cfg.white_noise`` images drawn uniformly from the input box."""
    if cfg.white_noise == 0 or clf.input_shape is None or clf.multilabel:
        return []
    gen = torch.Generator().manual_seed(cfg.seed)
    lo, hi = clf.bounds
    x = torch.rand((cfg.white_noise, *clf.input_shape), generator=gen) * (hi - lo) + lo
    with torch.no_grad():
        return clf.predict(x.to(device)).cpu().tolist()


def gallery_size(cfg: RunConfig, n: int) -> int:
    """Gallery samples are the first ones, all within the first batch."""
    return min(cfg.gallery, n, cfg.batch_size)


def _save_gallery_originals(run_dir: Path, cfg: RunConfig, x_all, y_all) -> None:
    g = gallery_size(cfg, len(x_all))
    if g == 0:
        return
    gdir = run_dir / GALLERY_DIR
    gdir.mkdir(exist_ok=True)
    _save_npy(gdir / "positions.npy", np.arange(g))
    _save_npy(gdir / "true.npy", y_all[:g].numpy())
    _save_npy(gdir / "x.npy", x_all[:g].numpy().astype(np.float32))


def _run_job(
    store,
    run_dir: Path,
    spec: JobSpec,
    clf,
    x_all: torch.Tensor,
    y_all: torch.Tensor,
    indices: np.ndarray,
    cfg: RunConfig,
    device: torch.device,
    progress: bool,
    desc: str,
    distances: dict[str, Any],
    after_batch: Callable[[], None],
    resources: dict[str, Any] | None = None,
) -> None:
    n = len(indices)
    bs = cfg.batch_size
    done = set(store.done_samples(spec.job_id).tolist())
    batches = pending_batches(n, bs, done)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=n, initial=len(done), desc=desc, unit="img", dynamic_ncols=True, leave=True
        )
    else:
        _log(f"{desc}: {n - len(done)} samples to attack")
    try:
        for b in batches:
            stop = min(b + bs, n)
            out = attack_batch(
                spec,
                clf,
                x_all[b:stop],
                y_all[b:stop],
                indices[b:stop],
                b,
                bs,
                cfg.seed,
                device,
                distances,
                resources,
            )
            commit_batch(store, run_dir, cfg, spec.job_id, b, n, out)
            if bar is not None:
                bar.update(stop - b)
                bar.set_postfix(success=f"{out.success_rate:.3f}")
            after_batch()  # Ctrl-C: stop here, after a committed batch
    finally:
        if bar is not None:
            bar.close()


def pending_batches(n: int, batch_size: int, done: set[int]) -> list[int]:
    """Start positions of the batches of a job of ``n`` samples that still
    hold a sample not in ``done`` (the batches a resumed run redoes)."""
    return [b for b in range(0, n, batch_size) if not set(range(b, min(b + batch_size, n))) <= done]


@dataclass
class BatchOutput:
    """One attacked batch, ready for :meth:`RunStore.write_batch`: its record
    columns, its adversarial examples (float32, on the CPU) and its success rate."""

    records: dict[str, np.ndarray]
    x_adv: np.ndarray
    success_rate: float
    transition: np.ndarray | None = None  # a Type I attack's halfway images


def attack_batch(
    spec: JobSpec,
    clf,
    x: torch.Tensor,
    y: torch.Tensor,
    indices: np.ndarray,
    start: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    distances: dict[str, Any],
    resources: dict[str, Any] | None = None,
) -> BatchOutput:
    """Attack the batch of job ``spec`` that starts at sample position
    ``start`` (``x``, ``y``, ``indices``: its samples), exactly as every
    executor does: its generator is seeded by :func:`batch_seed` from
    ``(seed, job, start // batch_size)`` alone, the target strategy (if any)
    sees the clean logits of the batch, and the attack runs on ``device``.
    Whoever calls it (the local loop or a Ray worker) gets the same records,
    bit for bit, apart from the measured seconds.

    ``resources`` (:meth:`RunInputs.resources`): ``svae`` for the attacks
    that need it; ``oracle``, whose class for each adversarial example is
    recorded as ``oracle_pred``; ``detect``, the ``[detect]`` config when
    feature squeezing is on (each example's score is recorded as
    ``squeeze``). Judging is not attack work: it is not in ``seconds``."""
    from labelflip.attacks import attack_resources, get_attack, settings_from_mapping
    from labelflip.targets import choose_targets

    attack = get_attack(spec.attack)
    kwargs = dataclasses.asdict(settings_from_mapping(attack, spec.settings))
    x = x.to(device)
    y = y.to(device)
    gen = torch.Generator().manual_seed(batch_seed(seed, spec.job_id, start // batch_size))
    t = time.perf_counter()
    target = None
    if spec.target is not None:
        with torch.no_grad():
            logits = clf(x)
        d = distances.get(spec.target.get("distance", ""))
        target = choose_targets(
            spec.target,
            logits,
            labels=y,
            distances=None if d is None else torch.as_tensor(d.matrix),
            generator=gen,
            class_names=None if clf.multilabel else clf.class_names,
            encoding=clf.encoding,
        )
    res = resources or {}
    needs = attack_resources(attack, res)
    result = attack.fn(clf, x, y, target=target, generator=gen, **needs, **kwargs)
    seconds = time.perf_counter() - t
    cols = result.to_numpy()
    m = len(indices)
    records = {
        "job_id": np.array([spec.job_id] * m),
        "sample": np.arange(start, start + m, dtype=np.int64),
        "index": np.asarray(indices).astype(np.int64),
        "true": cols.pop("y").astype(np.int64),
        **{k: v.astype(np.float64 if k in _FLOAT else np.int64) for k, v in cols.items()},
        "seconds": np.full(m, seconds / m),
        **_judge(result.x_adv, res, clf, batch_size),
    }
    x_adv = result.x_adv.detach().cpu().numpy().astype(np.float32)
    transition = None
    if result.transition is not None:
        transition = result.transition.detach().cpu().numpy().astype(np.float32)
    return BatchOutput(records, x_adv, store_success_rate(result), transition)


def _judge(x_adv: torch.Tensor, resources: dict[str, Any], clf, batch_size: int) -> dict:
    """The ``oracle_pred`` and ``squeeze`` columns of a batch (left out, and
    so at their defaults, without an oracle or a detector)."""
    out: dict[str, np.ndarray] = {}
    oracle = resources.get("oracle")
    if oracle is not None:
        with torch.no_grad():
            out["oracle_pred"] = oracle.predict(x_adv.to(oracle.mean.device)).cpu().numpy()
    detect = resources.get("detect")
    if detect is not None:
        from labelflip.detect import squeeze_scores

        out["squeeze"] = (
            squeeze_scores(
                clf,
                x_adv,
                squeezers=detect.squeezers,
                distance=detect.distance,
                batch_size=batch_size,
            )
            .cpu()
            .numpy()
        )
    return out


def commit_batch(
    store, run_dir: Path, cfg: RunConfig, job_id: str, start: int, n: int, out: BatchOutput
) -> None:
    """Write one attacked batch of a job of ``n`` samples into the run: the
    gallery's adversarials first (batch 0; a committed batch has them), then
    the records (and, when the config keeps them, the adversarials) as one
    store transaction. Only the process that owns the run (the driver) calls
    this."""
    gallery = gallery_size(cfg, n) if start == 0 else 0
    if gallery:
        if out.transition is not None:
            _save_npy(run_dir / GALLERY_DIR / f"transition__{job_id}.npy", out.transition[:gallery])
        _save_npy(run_dir / GALLERY_DIR / f"adv__{job_id}.npy", out.x_adv[:gallery])
    store.write_batch(job_id, out.records, out.x_adv if cfg.save_adversarials else None)


def store_success_rate(result) -> float:
    return float(result.success.float().mean()) if len(result) else float("nan")

"""Named preflight checks of a run: each one function and one message a
user understands (as AutoAttack's ``checks.py``). :func:`labelflip.run.prepare`
runs them before the run directory is made; a resumed run also runs the
``resume_*`` ones."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from labelflip.config import JobSpec, RunConfig, SimilarityConfig, missing_target_distance
from labelflip.errors import LabelflipError


def model_fits_data(clf: Any, what: str, path: Path, dataset: str, data: Any) -> None:
    """The model's input shape and class count are the dataset's."""
    if tuple(clf.input_shape or data.input_shape) != tuple(data.input_shape) or (
        clf.num_classes != data.num_classes
    ):
        raise LabelflipError(
            f"{what} {path} ({clf.num_classes} classes, inputs {clf.input_shape}) does not "
            f"fit dataset '{dataset}' ({data.num_classes} classes, inputs "
            f"{tuple(data.input_shape)})"
        )


def inputs_in_bounds(clf: Any, x: torch.Tensor, where: str, path: Path) -> None:
    """The chosen samples lie in the model's input box."""
    try:
        clf.check_inputs(x)
    except LabelflipError as e:
        raise LabelflipError(f"{where} samples: {e} ({path})") from None


def budgets_fit(jobs: Sequence[Any], clf: Any, x: torch.Tensor) -> None:
    """Every job's ``eps`` fits the model's input range (planned jobs:
    ``.spec`` and validated ``.settings``; checked again by the attack)."""
    from labelflip.attacks import check_eps

    for job in jobs:
        eps, norm = getattr(job.settings, "eps", None), getattr(job.settings, "norm", None)
        if isinstance(eps, (int, float)) and norm in ("linf", "l2"):
            try:
                check_eps(job.spec.attack, float(eps), norm, clf, x[:1])
            except LabelflipError as e:
                raise LabelflipError(f"job {job.job_id}: {e}") from None


def attacks_apply(jobs: Sequence[Any], clf: Any, path: Path, attacks: dict[str, Any]) -> None:
    """Every attack applies to the model's output encoding (``attacks``: the registry)."""
    kind = clf.encoding.kind
    for job in jobs:
        if kind not in job.attack.encodings:
            able = ", ".join(n for n, a in attacks.items() if kind in a.encodings)
            raise LabelflipError(
                f"attack '{job.spec.attack}' does not apply to the {kind} model {path.name} "
                f"(attacks that do: {able})"
            )


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


def detector_applies(feature_squeezing: bool, clf: Any) -> None:
    if feature_squeezing and clf.multilabel:
        raise LabelflipError(
            "[detect] feature_squeezing compares softmax outputs; the model is multi-label"
        )


def oracle_fits(oracle: Any, path: Path, clf: Any, dataset: str, data: Any) -> None:
    """The oracle fits the data, and it and the model are single-label."""
    if tuple(oracle.input_shape or data.input_shape) != tuple(data.input_shape) or (
        oracle.num_classes != data.num_classes or oracle.multilabel or clf.multilabel
    ):
        raise LabelflipError(
            f"oracle {path} ({oracle.num_classes} classes, inputs {oracle.input_shape}, "
            f"{oracle.encoding.kind}) does not fit dataset '{dataset}' "
            f"({data.num_classes} classes, inputs {tuple(data.input_shape)}) and a "
            "single-label model"
        )


def oracle_independent(oracle_sha256: str, model_sha256: str, path: Path) -> None:
    """The oracle is not the attacked model itself."""
    if oracle_sha256 == model_sha256:
        raise LabelflipError(
            f"the oracle {path.name} is the attacked model itself (same weights); an "
            "independent judge must be trained separately (another seed or architecture)"
        )


def svae_fits(svae: Any, path: Path, dataset: str, data: Any) -> None:
    if tuple(svae.input_shape) != tuple(data.input_shape) or (
        svae.num_classes != data.num_classes
    ):
        raise LabelflipError(
            f"svae {path} ({svae.num_classes} classes, inputs {svae.input_shape}) does not "
            f"fit dataset '{dataset}' ({data.num_classes} classes, inputs "
            f"{tuple(data.input_shape)})"
        )


def similarity_applies(sim: SimilarityConfig, clf: Any, class_names: Sequence[str]) -> None:
    """The ``[similarity]`` table fits the run: its hierarchy (a built-in
    name or a JSON file) covers the classes, and a named feature ``layer``
    exists in the feature model (``checkpoint``, else the attacked model)."""
    from labelflip import similarity

    if clf.multilabel:  # no class distances for label vectors
        return
    if sim.hierarchy not in ("auto", "none"):
        try:
            similarity.semantic_distance(sim.hierarchy, class_names)
        except LabelflipError as e:
            raise LabelflipError(f"[similarity] hierarchy: {e}") from None
    if sim.perceptual and sim.layer is not None:
        model = clf
        if sim.checkpoint is not None:
            from labelflip.models import load_checkpoint

            try:
                model, _ = load_checkpoint(Path(sim.checkpoint).expanduser())
            except LabelflipError as e:
                raise LabelflipError(f"[similarity] checkpoint: {e}") from None
        root = getattr(model, "model", model)  # layer names are the network's
        names = [name for name, _ in root.named_modules() if name]
        if sim.layer not in names:
            close = difflib.get_close_matches(sim.layer, names, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise LabelflipError(
                f"[similarity] unknown layer '{sim.layer}' in model {type(root).__name__}{hint} "
                f"(layers: {shown})"
            )


def targets_apply(jobs: Sequence[Any], clf: Any, y: torch.Tensor) -> None:
    """Every target strategy that needs no class distance chooses a target
    for every true class among the samples (e.g. a ``mapping`` table covers
    them all), tried on the labels before any attack runs."""
    from labelflip.targets import choose_targets, strategy_settings_from_mapping

    labels = torch.unique(y.cpu())
    logits = torch.zeros(len(labels), clf.encoding.num_scores)
    names = None if clf.multilabel else clf.class_names
    for job in jobs:
        target = job.spec.target
        if target is None or strategy_settings_from_mapping(target)[0].needs_distance:
            continue
        try:
            choose_targets(
                target,
                logits,
                labels=labels,
                generator=torch.Generator().manual_seed(0),
                class_names=names,
                encoding=clf.encoding,
            )
        except LabelflipError as e:
            raise LabelflipError(f"job {job.job_id}: {e}") from None


def target_distances_available(jobs: list[JobSpec], distances: dict[str, Any]) -> None:
    """Every target strategy that measures class distances has its matrix."""
    missing = missing_target_distance(jobs, list(distances))
    if missing is not None:
        spec, name = missing
        raise LabelflipError(
            f"job {spec.job_id}: target strategy '{spec.target['strategy']}' needs the "
            f"'{name}' class distance, which this run does not have "
            f"(have: {', '.join(distances) or 'none'}; semantic needs a hierarchy: set "
            "[similarity] hierarchy)"
        )


def resume_same_config(run_dir: Path, stored: RunConfig, given: RunConfig | None) -> None:
    """A resumed run is continued with the config it was made with."""
    if given is None:
        return
    a, b = stored.to_dict(), given.to_dict()
    # where and on how many threads it runs may change (a thread count only warns)
    diff = [k for k in a if k not in ("output", "executor", "threads") and a[k] != b.get(k)]
    if diff:
        raise LabelflipError(
            f"cannot resume {run_dir}: it was made with a different config (differs in: "
            f"{', '.join(diff)}); resume it without a config, or run the new one elsewhere"
        )


def resume_same_samples(run_dir: Path, stored: list[int], now: list[int]) -> None:
    if list(stored) != now:
        raise LabelflipError(
            f"cannot resume {run_dir}: the dataset's samples changed since the run started"
        )


def resume_same_images(run_dir: Path, stored: str, now: str) -> None:
    """A resumed run sees the very images and labels it started with (the
    SHA-256 of the chosen samples), not only the same indices."""
    if stored != now:
        raise LabelflipError(
            f"cannot resume {run_dir}: the images or labels of its samples changed since the "
            f"run started (SHA-256 {now[:12]}..., the run used {stored[:12]}...)"
        )


def resume_threads_note(was: Any, now: int) -> str | None:
    """The warning for a run resumed with another torch thread count than it
    started with (``None`` when the same or unknown): CPU results may then
    differ from an uninterrupted run's in the last bits."""
    if was is None or was == now:
        return None
    return (
        f"resuming a run started with {was} torch threads on {now}: records of the remaining "
        f"batches may differ from an uninterrupted run's in the last bits (resume with "
        f"--threads {was} to match it)"
    )


def resume_same_weights(run_dir: Path, what: str, path: Any, was: Any, now: Any) -> None:
    """The model (oracle, SVAE) of a resumed run has the weights it started with."""
    if was != now:
        raise LabelflipError(
            f"cannot resume {run_dir}: the {what} changed since the run started "
            f"({path} has SHA-256 {str(now)[:12]}..., the run used {str(was)[:12]}...)"
        )

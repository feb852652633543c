"""The typed experiment config of ``labelflip run``, loaded from TOML.

A config names the data (dataset, split, which samples), the model (a
checkpoint, or an architecture trained on first use and cached), the attacks
with their settings, and run-wide options. Any setting of an attack may be a
list: the attack then expands into one job per combination (a grid), e.g.
``eps = [0.01, 0.1, 1.0]`` gives three PGD jobs that form one sweep. Every
attack's settings are validated through the attack registry when the config
is loaded, so a typo fails before any work starts, with one line naming the
attack entry.

::

    name = "mnist-cw"
    seed = 0
    batch_size = 500

    [data]
    dataset = "mnist"
    split = "test"
    samples = 1000          # or omit for the whole split
    selection = "random"    # seeded choice of `samples` indices ("first": the first ones)

    [model]
    arch = "cw-mnist"       # or: checkpoint = "path.safetensors"

    [[attacks]]
    attack = "pgd"
    norm = "linf"
    eps = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from labelflip._text import slug
from labelflip.errors import LabelflipError

SELECTIONS = ("first", "random")
EXECUTORS = ("local", "ray")  # where the attacks run (labelflip.run); --executor overrides
TARGET_KEY = "target"  # the job-level setting of an [[attacks]] entry naming its target strategy


@dataclass(frozen=True)
class DataConfig:
    """Which samples to attack: ``samples`` of the split (all when ``None``),
    taken from the index range ``[start, stop)``, either the first ones or a
    seeded random choice (returned in increasing index order)."""

    dataset: str = "digits"
    split: str = "test"
    samples: int | None = None
    selection: str = "first"
    start: int = 0
    stop: int | None = None
    data_dir: str | None = None


@dataclass(frozen=True)
class ModelConfig:
    """A ``checkpoint`` to load, or an ``arch`` to train on the dataset's train
    split first (with its recipe; ``epochs`` overrides the recipe's), cached
    so later runs reuse it. A checkpoint of a user model also names its code,
    ``arch = "module:function"``, to trust it (the CLI's ``--arch``).

    ``encoding`` is the output encoding an ``arch`` is trained with (JMA
    paper, §III): ``"onehot"`` or ``"ecoc"`` (Hadamard codewords, hinge loss)
    for a single-label dataset, ``"multilabel"`` for a multi-label one (such
    as ``mnist-grid``); omitted, the dataset's own (one-hot or multi-label).
    A checkpoint carries its encoding in its sidecar. ``zoo`` names a model
    shipped with labelflip instead (``labelflip models`` lists them)."""

    checkpoint: str | None = None
    arch: str | None = None
    epochs: int | None = None
    encoding: str | None = None
    zoo: str | None = None


@dataclass(frozen=True)
class AttackConfig:
    """One ``[[attacks]]`` entry: the registry name, its settings (list values
    are grid axes) and an optional human label."""

    attack: str
    settings: dict[str, Any] = field(default_factory=dict)
    label: str | None = None


@dataclass(frozen=True)
class SimilarityConfig:
    """The ``[similarity]`` table: which class-distance matrices a run computes
    (see :mod:`labelflip.similarity`); they are saved with the run, drive the
    ``nearest`` / ``farthest`` / ``labelfool`` target strategies and the
    report's label-space section.

    - ``perceptual``: LabelFool's Hausdorff distance between classes in a
      model's feature space, computed on the ``split`` images (the training
      split, as in the paper), at most ``per_class`` images per class (a
      seeded choice; all when omitted), features from ``layer`` (default: the
      penultimate layer) of ``checkpoint`` (default: the attacked model).
    - ``hierarchy``: ``"auto"`` (a built-in hierarchy whose leaves are the
      dataset's classes, if there is one), ``"none"``, a built-in name or a
      JSON file: the semantic (tree) distance.
    - ``confusion``: the symmetrised clean confusion of the attacked samples.
    """

    perceptual: bool = True
    split: str = "train"
    per_class: int | None = None
    layer: str | None = None
    checkpoint: str | None = None
    hierarchy: str = "auto"
    confusion: bool = True

    def available(self) -> tuple[str, ...]:
        """Names of the distances this config may provide (semantic only if a
        hierarchy is found for the dataset at run time)."""
        out = []
        if self.perceptual:
            out.append("perceptual")
        if self.hierarchy != "none":
            out.append("semantic")
        if self.confusion:
            out.append("confusion")
        return tuple(out)


@dataclass(frozen=True)
class OracleConfig:
    """The ``[oracle]`` table: an independent classifier that judges every
    adversarial example (its class is recorded as ``oracle_pred``). A Type I
    example succeeds when the attacked model keeps its label and the oracle
    sees another class (Tang et al., §IV-B); for a Type II example, an oracle
    that also moved shows the change was not invisible after all.

    A ``checkpoint`` to load, or an ``arch`` trained on the dataset like
    ``[model]`` (cached), with its own ``seed`` (default: the run's seed + 1,
    so the oracle is trained separately from a ``[model]`` of the same
    architecture) and ``epochs``."""

    checkpoint: str | None = None
    arch: str | None = None
    epochs: int | None = None
    seed: int | None = None


@dataclass(frozen=True)
class SVAETableConfig:
    """The ``[svae]`` table: the supervised VAE a ``type-i`` attack searches
    in (:mod:`labelflip.models.svae`). A ``checkpoint`` written by
    ``labelflip train --arch svae``, or training settings (trained on the
    dataset's train split on first use and cached): ``arch`` (``mlp`` or
    ``conv``), ``epochs``, ``dis_epochs``, ``lr``, ``latent_dim``, ``hidden``,
    ``seed`` (default: the run's)."""

    checkpoint: str | None = None
    arch: str | None = None
    epochs: int | None = None
    dis_epochs: int | None = None
    lr: float | None = None
    latent_dim: int | None = None
    hidden: int | None = None
    seed: int | None = None

    def training(self) -> dict[str, Any]:
        """The training settings given (for :class:`~labelflip.models.svae.SVAESettings`)."""
        return {
            k: v
            for k, v in dataclasses.asdict(self).items()
            if k not in ("checkpoint", "seed") and v is not None
        }


@dataclass(frozen=True)
class DetectConfig:
    """The ``[detect]`` table: detectors run on every adversarial example.

    ``feature_squeezing``: Xu et al.'s feature squeezing
    (:mod:`labelflip.detect`), ``squeezers`` applied jointly (default: Tang
    et al.'s 1-bit depth + 2×2 median), ``distance`` ``l2`` (Tang et al.) or
    ``l1`` (Xu et al.) between the softmax outputs. The score of each
    example is recorded as ``squeeze``, that of the clean samples in the
    run's metadata; the report calibrates the threshold to flag ``fpr`` of
    the clean samples and also shows the rates at ``thresholds`` (default:
    Tang et al.'s Table I values)."""

    feature_squeezing: bool = False
    squeezers: tuple[str, ...] = ("bit_depth_1", "median_2x2")
    distance: str = "l2"
    fpr: float = 0.05
    thresholds: tuple[float, ...] = (0.2510, 0.6089, 0.9353)


@dataclass(frozen=True)
class JobSpec:
    """One expanded job: a single attack with scalar settings and, for a
    targeted job, its target strategy (``{"strategy": name, **settings}``)."""

    job_id: str
    attack: str
    settings: dict[str, Any]
    label: str
    group: str
    sweep_value: float | None
    target: dict[str, Any] | None = None

    def stored_settings(self) -> dict[str, Any]:
        """The settings recorded in the run's job table (the target strategy under ``target``)."""
        return {**self.settings, "target": self.target} if self.target else dict(self.settings)


@dataclass(frozen=True)
class RunConfig:
    name: str = "labelflip-run"
    seed: int = 0
    device: str = "auto"
    batch_size: int = 256
    output: str = "runs"
    save_adversarials: bool = False
    white_noise: int = 1000
    gallery: int = 8
    executor: str = "local"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    similarity: SimilarityConfig = field(default_factory=SimilarityConfig)
    oracle: OracleConfig | None = None
    svae: SVAETableConfig | None = None
    detect: DetectConfig = field(default_factory=DetectConfig)
    attacks: tuple[AttackConfig, ...] = ()

    def jobs(self) -> list[JobSpec]:
        """The attacks expanded into jobs (grid over list-valued settings)."""
        out: list[JobSpec] = []
        seen: dict[str, int] = {}
        for a in self.attacks:
            for spec in expand(a):
                jid = spec.job_id
                if jid in seen:
                    seen[jid] += 1
                    jid = f"{jid}-{seen[spec.job_id]}"
                else:
                    seen[jid] = 1
                out.append(dataclasses.replace(spec, job_id=jid))
        return out

    def validate(self, source: str = "config") -> RunConfig:
        """Check this config exactly as one parsed from TOML (a config built in
        Python is validated the same way); returns it, or raises a one-line
        :class:`~labelflip.errors.LabelflipError`."""
        parse_config(json.loads(json.dumps(self.to_dict())), source=source)
        return self

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["attacks"] = [
            {"attack": a.attack, **({"label": a.label} if a.label else {}), **a.settings}
            for a in self.attacks
        ]
        return d


# ------------------------------------------------------------------ loading


def default_config_text() -> str:
    """The built-in default config (offline: digits, a digits-cnn, four attacks)."""
    return resources.files("labelflip").joinpath("default.toml").read_text()


def load_config(path: str | Path | None = None) -> RunConfig:
    """Load and validate a TOML config (the built-in default when ``None``)."""
    if path is None:
        return parse_config(tomllib.loads(default_config_text()), source="built-in default")
    p = Path(path)
    if not p.is_file():
        raise LabelflipError(f"config file not found: {p}")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise LabelflipError(f"{p}: not a UTF-8 text file") from None
    except tomllib.TOMLDecodeError as e:
        raise LabelflipError(f"{p}: invalid TOML: {e}") from None
    return parse_config(data, source=str(p))


def config_from_json(text: str, source: str) -> RunConfig:
    """Rebuild a config saved by :meth:`RunConfig.to_dict` (a run's ``config.json``)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise LabelflipError(f"{source}: invalid JSON: {e}") from None
    return parse_config(data, source=source)


def _check_keys(where: str, mapping: Mapping[str, Any], allowed: list[str]) -> None:
    for key in mapping:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise LabelflipError(
                f"{where}: unknown key '{key}'{hint} (known: {', '.join(allowed)})"
            )


def _typed(where: str, key: str, value: Any, kind: type, *, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            raise LabelflipError(f"{where}: '{key}' must be finite, got {value!r}")
    else:
        ok = isinstance(value, kind)
    if not ok:
        names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
        raise LabelflipError(f"{where}: '{key}' must be {names.get(kind, kind)}, got {value!r}")
    return value


def _section(where: str, raw: Any, cls: type) -> Any:
    if not isinstance(raw, Mapping):
        raise LabelflipError(f"{where} must be a table, got {raw!r}")
    names = [f.name for f in dataclasses.fields(cls)]
    _check_keys(where, raw, names)
    hints = {f.name: f.type for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        hint = str(hints[key])
        kind = int if "int" in hint else str if "str" in hint else bool if "bool" in hint else float
        kwargs[key] = _typed(where, key, value, kind, optional="None" in hint)
    return cls(**kwargs)


def parse_config(data: Mapping[str, Any], source: str = "config") -> RunConfig:
    """Validate a config mapping (as parsed from TOML) into a :class:`RunConfig`."""
    top = [f.name for f in dataclasses.fields(RunConfig)]
    _check_keys(source, data, top)
    kwargs: dict[str, Any] = {}
    scalar = {
        "name": str,
        "seed": int,
        "device": str,
        "batch_size": int,
        "output": str,
        "save_adversarials": bool,
        "white_noise": int,
        "gallery": int,
        "executor": str,
    }
    for key, kind in scalar.items():
        if key in data:
            kwargs[key] = _typed(source, key, data[key], kind)
    if "data" in data:
        kwargs["data"] = _section(f"{source}: [data]", data["data"], DataConfig)
    if "model" in data:
        kwargs["model"] = _section(f"{source}: [model]", data["model"], ModelConfig)
    if "similarity" in data:
        kwargs["similarity"] = _section(
            f"{source}: [similarity]", data["similarity"], SimilarityConfig
        )
    if data.get("oracle") is not None:
        kwargs["oracle"] = _section(f"{source}: [oracle]", data["oracle"], OracleConfig)
    if data.get("svae") is not None:
        kwargs["svae"] = _section(f"{source}: [svae]", data["svae"], SVAETableConfig)
    if "detect" in data:
        kwargs["detect"] = _detect_section(f"{source}: [detect]", data["detect"])
    raw_attacks = data.get("attacks", [])
    if not isinstance(raw_attacks, list) or not all(isinstance(a, Mapping) for a in raw_attacks):
        raise LabelflipError(f"{source}: 'attacks' must be a list of [[attacks]] tables")
    kwargs["attacks"] = tuple(
        _attack_entry(f"{source}: attack #{i + 1}", a) for i, a in enumerate(raw_attacks)
    )
    cfg = RunConfig(**kwargs)
    _validate(cfg, source)
    _validate_targets(cfg, source)
    return cfg


def _detect_section(where: str, raw: Any) -> DetectConfig:
    """``[detect]``: scalars as :func:`_section`, plus the two lists."""
    from labelflip.detect import DISTANCES, get_squeezer

    if not isinstance(raw, Mapping):
        raise LabelflipError(f"{where} must be a table, got {raw!r}")
    raw = dict(raw)
    lists: dict[str, Any] = {}
    for key, kind in (("squeezers", str), ("thresholds", float)):
        if key in raw:
            value = raw.pop(key)
            if not isinstance(value, (list, tuple)) or not value:
                raise LabelflipError(f"{where}: '{key}' must be a non-empty list")
            lists[key] = tuple(_typed(where, key, v, kind) for v in value)
    cfg = dataclasses.replace(_section(where, raw, DetectConfig), **lists)
    if cfg.distance not in DISTANCES:
        raise LabelflipError(
            f"{where}: distance must be one of {', '.join(DISTANCES)}, got {cfg.distance!r}"
        )
    if not 0.0 < cfg.fpr < 1.0:
        raise LabelflipError(f"{where}: fpr must be in (0, 1), got {cfg.fpr}")
    if any(t < 0 for t in cfg.thresholds):
        raise LabelflipError(f"{where}: thresholds must be >= 0")
    for name in cfg.squeezers:
        try:
            get_squeezer(name)
        except LabelflipError as e:
            raise LabelflipError(f"{where}: {e}") from None
    return cfg


def _attack_entry(where: str, raw: Mapping[str, Any]) -> AttackConfig:
    from labelflip.attacks import get_attack

    raw = dict(raw)
    name = raw.pop("attack", None)
    if not isinstance(name, str):
        raise LabelflipError(f"{where}: 'attack' (the attack's name) is required")
    label = raw.pop("label", None)
    if label is not None and not isinstance(label, str):
        raise LabelflipError(f"{where}: 'label' must be a string")
    try:
        get_attack(name)
    except LabelflipError as e:
        raise LabelflipError(f"{where}: {e}") from None
    for key, value in raw.items():
        if isinstance(value, list) and not value:
            raise LabelflipError(f"{where}: '{key}' is an empty list")
    entry = AttackConfig(attack=name, settings=raw, label=label)
    try:
        specs = expand(entry)  # validates every grid point's target strategy
    except LabelflipError as e:
        raise LabelflipError(f"{where}: {e}") from None
    for spec in specs:  # and every grid point's settings
        _validated(where, spec.attack, spec.settings)
    return entry


def target_spec(attack: str, value: Any) -> dict[str, Any] | None:
    """The normalised target strategy of a job, ``{"strategy": name, **settings}``
    (validated), from its ``target`` setting: a strategy name or a table.
    ``None`` (no target) gives the attack's default strategy, if it has one."""
    from labelflip.attacks import get_attack

    spec = get_attack(attack)
    if value is None:
        default = getattr(spec, "default_target", None)
        if default is None:
            return None
        value = default
    if not getattr(spec, "accepts_target", True):
        raise LabelflipError(f"attack '{attack}' is untargeted; it takes no 'target'")
    if not isinstance(value, (str, Mapping)):
        raise LabelflipError(
            f"'target' must be a strategy name or a table with 'strategy', got {value!r}"
        )
    from labelflip.targets import strategy_settings_from_mapping

    strategy, settings = strategy_settings_from_mapping(value)
    return {"strategy": strategy.name, **dataclasses.asdict(settings)}


def missing_target_distance(
    jobs: list[JobSpec], available: tuple[str, ...] | list[str]
) -> tuple[JobSpec, str] | None:
    """The first job whose target strategy measures with a class distance not
    in ``available``, and that distance's name; ``None`` when all are there."""
    for spec in jobs:
        distance = (spec.target or {}).get("distance")
        if distance is not None and distance not in available:
            return spec, distance
    return None


def _validate_targets(cfg: RunConfig, source: str) -> None:
    """Every target strategy that measures class distances names one the
    ``[similarity]`` table provides."""
    available = cfg.similarity.available()
    for i, entry in enumerate(cfg.attacks):
        missing = missing_target_distance(expand(entry), available)
        if missing is not None:
            spec, distance = missing
            raise LabelflipError(
                f"{source}: attack #{i + 1}: target strategy '{spec.target['strategy']}' "
                f"uses the '{distance}' distance, which the [similarity] table does not "
                f"provide (available: {', '.join(available) or 'none'})"
            )


def _validated(where: str, attack: str, settings: Mapping[str, Any]) -> Any:
    from labelflip.attacks import get_attack, settings_from_mapping

    try:
        return settings_from_mapping(get_attack(attack), settings)
    except LabelflipError as e:
        raise LabelflipError(f"{where}: {e}") from None
    except TypeError as e:  # a value of a type the settings cannot hold
        raise LabelflipError(f"{where}: {e}") from None


def _validate(cfg: RunConfig, source: str) -> None:
    d, m = cfg.data, cfg.model
    if cfg.batch_size < 1:
        raise LabelflipError(f"{source}: batch_size must be >= 1, got {cfg.batch_size}")
    if cfg.white_noise < 0 or cfg.gallery < 0:
        raise LabelflipError(f"{source}: white_noise and gallery must be >= 0")
    if cfg.executor not in EXECUTORS:
        raise LabelflipError(
            f"{source}: executor must be one of {', '.join(EXECUTORS)}, got {cfg.executor!r}"
        )
    if not cfg.name.strip() or not re.fullmatch(r"[A-Za-z0-9._-]+", cfg.name):
        raise LabelflipError(
            f"{source}: name must be letters, digits, '.', '_' or '-', got {cfg.name!r}"
        )
    if d.split not in ("train", "test"):
        raise LabelflipError(f"{source}: [data] split must be 'train' or 'test', got {d.split!r}")
    if d.selection not in SELECTIONS:
        raise LabelflipError(
            f"{source}: [data] selection must be one of {', '.join(SELECTIONS)}, "
            f"got {d.selection!r}"
        )
    if d.samples is not None and d.samples < 1:
        raise LabelflipError(f"{source}: [data] samples must be >= 1, got {d.samples}")
    if d.start < 0 or (d.stop is not None and d.stop <= d.start):
        raise LabelflipError(f"{source}: [data] needs 0 <= start < stop, got {d.start}, {d.stop}")
    if m.zoo is not None and (m.checkpoint is not None or m.arch is not None):
        raise LabelflipError(f"{source}: [model] 'zoo' goes alone (no 'checkpoint' or 'arch')")
    if m.zoo is not None:
        from labelflip.models.zoo import ZOO

        try:
            ZOO.entry(m.zoo)
        except LabelflipError as e:
            raise LabelflipError(f"{source}: [model] {e}") from None
    elif m.checkpoint is None and m.arch is None:
        raise LabelflipError(
            f"{source}: [model] needs exactly one of 'checkpoint', 'zoo' or 'arch' (to train first)"
        )
    if m.checkpoint is not None and m.arch is not None and ":" not in m.arch:
        raise LabelflipError(
            f"{source}: [model] needs exactly one of 'checkpoint' or 'arch' (to train first); "
            "beside a checkpoint, 'arch' may only name its user code (module:function) to trust"
        )
    _validate_names(cfg, source)
    if m.epochs is not None and (m.checkpoint is not None or m.zoo is not None or m.epochs < 1):
        raise LabelflipError(f"{source}: [model] epochs must be >= 1 and only go with 'arch'")
    _validate_encoding(cfg, source)
    if not cfg.attacks:
        raise LabelflipError(f"{source}: no [[attacks]] given")
    _validate_type_i(cfg, source)


def _validate_type_i(cfg: RunConfig, source: str) -> None:
    """``[oracle]`` and ``[svae]``: one of checkpoint / training each; an
    ``[svae]`` table whenever an attack needs one."""
    from labelflip.attacks import get_attack
    from labelflip.models.registry import get_architecture

    o = cfg.oracle
    if o is not None:
        if (o.checkpoint is None) == (o.arch is None):
            raise LabelflipError(
                f"{source}: [oracle] needs exactly one of 'checkpoint' or 'arch' (to train first)"
            )
        if o.checkpoint is not None and (o.epochs is not None or o.seed is not None):
            raise LabelflipError(f"{source}: [oracle] epochs and seed only go with 'arch'")
        if o.epochs is not None and o.epochs < 1:
            raise LabelflipError(f"{source}: [oracle] epochs must be >= 1, got {o.epochs}")
        if o.arch is not None:
            try:
                get_architecture(o.arch)
            except LabelflipError as e:
                raise LabelflipError(f"{source}: [oracle] {e}") from None
    sv = cfg.svae
    if sv is not None and sv.checkpoint is not None and (sv.training() or sv.seed is not None):
        raise LabelflipError(
            f"{source}: [svae] gives a checkpoint and training settings "
            f"({', '.join([*sv.training(), *(['seed'] if sv.seed is not None else [])])}); "
            "keep one"
        )
    if sv is not None and sv.checkpoint is None:
        from labelflip.models.svae import SVAESettings

        try:
            SVAESettings(**sv.training()).validate()
        except TypeError as e:
            raise LabelflipError(f"{source}: [svae] {e}") from None
        except LabelflipError as e:
            raise LabelflipError(f"{source}: [svae] {e}") from None
    for i, entry in enumerate(cfg.attacks):
        needs = get_attack(entry.attack).needs
        if "svae" in needs and sv is None:
            raise LabelflipError(
                f"{source}: attack #{i + 1} ({entry.attack}) needs an [svae] table "
                '(checkpoint = "..." or training settings such as epochs = 8)'
            )


def _validate_encoding(cfg: RunConfig, source: str) -> None:
    """``[model] encoding``: a known encoding, only beside ``arch`` (a
    checkpoint carries its own), and fitting the dataset: ``multilabel`` for
    a multi-label dataset and only for one."""
    from labelflip.data import IMAGEFOLDER_PREFIX, REGISTRY
    from labelflip.errors import unknown_name
    from labelflip.models.encoding import ENCODINGS

    m, dataset = cfg.model, cfg.data.dataset
    source_ = None if dataset.startswith(IMAGEFOLDER_PREFIX) else REGISTRY.get(dataset)
    multilabel = bool(getattr(source_, "multilabel", False))
    if m.encoding is None:
        return
    if m.encoding not in ENCODINGS:
        raise LabelflipError(f"{source}: [model] {unknown_name('encoding', m.encoding, ENCODINGS)}")
    if m.checkpoint is not None or m.zoo is not None:
        raise LabelflipError(
            f"{source}: [model] encoding only goes with 'arch' (a checkpoint carries its own)"
        )
    if multilabel and m.encoding != "multilabel":
        raise LabelflipError(
            f"{source}: [model] encoding '{m.encoding}' does not fit the multi-label dataset "
            f"'{dataset}' (use 'multilabel' or omit it)"
        )
    if not multilabel and m.encoding == "multilabel":
        raise LabelflipError(
            f"{source}: [model] encoding 'multilabel' needs a multi-label dataset "
            f"(e.g. mnist-grid); '{dataset}' has one class per image"
        )


def _validate_names(cfg: RunConfig, source: str) -> None:
    """Unknown dataset and architecture names fail at load time, with a "did you mean"."""
    from labelflip.data import IMAGEFOLDER_PREFIX, REGISTRY
    from labelflip.errors import unknown_name
    from labelflip.models.registry import get_architecture

    name = cfg.data.dataset
    if not name.startswith(IMAGEFOLDER_PREFIX) and name not in REGISTRY:
        known = [*REGISTRY, f"{IMAGEFOLDER_PREFIX}<path>"]
        raise LabelflipError(f"{source}: [data] {unknown_name('dataset', name, known)}")
    arch = cfg.model.arch
    if arch is not None and ":" not in arch:
        try:
            get_architecture(arch)
        except LabelflipError as e:
            raise LabelflipError(f"{source}: [model] {e}") from None


# ------------------------------------------------------------------ job expansion


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Mapping):  # e.g. a target table: "nearest semantic"
        return " ".join(_fmt(v) for v in value.values())
    return str(value)


def expand(entry: AttackConfig) -> list[JobSpec]:
    """One job per combination of the entry's list-valued settings (in key order).

    A job id reads like ``pgd-linf-eps0.1``: the attack name, then each
    explicit setting (string values alone, others as key and value). The
    group is the entry's id without the grid keys; the sweep value is the
    grid value when exactly one setting is a list of numbers.
    """
    keys = list(entry.settings)
    grid = [k for k in keys if isinstance(entry.settings[k], list)]
    axes = [entry.settings[k] for k in grid]

    def part(k: str, v: Any) -> str:
        if k == TARGET_KEY:
            return "to-" + (_fmt(v) if isinstance(v, str) else part("", v))
        if isinstance(v, Mapping):
            return "-".join(part(kk, vv) for kk, vv in v.items())
        return _fmt(v) if isinstance(v, str) else f"{k}{_fmt(v)}"

    fixed = [part(k, entry.settings[k]) for k in keys if k not in grid]
    group = slug("-".join([entry.attack, *fixed]))
    out = []
    for combo in itertools.product(*axes) if grid else [()]:
        settings = dict(entry.settings)
        settings.update(zip(grid, combo, strict=True))
        jid = slug("-".join([entry.attack, *(part(k, settings[k]) for k in keys)]))
        shown = ", ".join(f"{k}={_fmt(settings[k])}" for k in keys)
        label = entry.label or entry.attack
        label = f"{label} ({shown})" if shown else label
        sweep = None
        if len(grid) == 1 and isinstance(combo[0], (int, float)) and not isinstance(combo[0], bool):
            sweep = float(combo[0])
        target = target_spec(entry.attack, settings.pop(TARGET_KEY, None))
        out.append(JobSpec(jid, entry.attack, settings, label, group, sweep, target))
    return out

"""Loading a run config from TOML (or a run's ``config.json``) into a typed
:class:`~labelflip.config.RunConfig`, validated once: every table's keys and
value types (through the settings engine, :mod:`labelflip._settings`), every
attack's settings and target strategy (through the registries), and the
relations between tables. A config built in Python is validated the same way
(:func:`validate_config`)."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import sys
import typing
import weakref
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from labelflip._settings import check_rule, coerce, rule_of
from labelflip.config.jobs import AttackConfig, expand, missing_target_distance
from labelflip.config.tables import (
    EXECUTORS,
    PYTHON_DATA,
    SELECTIONS,
    DataConfig,
    DetectConfig,
    ModelConfig,
    OracleConfig,
    RunConfig,
    SimilarityConfig,
    SVAETableConfig,
)
from labelflip.errors import LabelflipError


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


def validate_config(cfg: RunConfig, source: str = "config") -> RunConfig:
    """Check a config built in Python exactly as one parsed from TOML;
    returns it, or raises a one-line :class:`~labelflip.errors.LabelflipError`."""
    if id(cfg) not in _VALIDATED:
        parse_config(json.loads(json.dumps(cfg.to_dict())), source=source)
    return cfg


_VALIDATED: weakref.WeakValueDictionary[int, RunConfig] = weakref.WeakValueDictionary()
"""Configs :func:`parse_config` made (by id; an entry goes with its config)."""


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


def _typed(where: str, key: str, value: Any, hint: Any) -> Any:
    """``value`` of the type ``hint`` declares (the settings engine's coercion
    and finiteness check), or a one-line error naming the table and key."""
    value = coerce(where, key, value, hint, setting_word=False)
    if isinstance(value, float) and not math.isfinite(value):
        raise LabelflipError(f"{where}: '{key}' must be finite, got {value!r}")
    return value


def _section(where: str, raw: Any, cls: type) -> Any:
    if not isinstance(raw, Mapping):
        raise LabelflipError(f"{where} must be a table, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _check_keys(where, raw, list(fields))
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in raw.items():
        kwargs[key] = _typed(where, key, value, hints[key])
        check_rule(where, key, kwargs[key], rule_of(fields[key]))
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
        "threads": int | None,  # null in a config.json: not set
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
    _VALIDATED[id(cfg)] = cfg  # this very object: validate_config need not parse it again
    return cfg


def _detect_section(where: str, raw: Any) -> DetectConfig:
    """``[detect]``: scalars as :func:`_section`, plus the two lists."""
    from labelflip.detect import DISTANCES, parse_squeezer

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
    for name in cfg.squeezers:  # through the squeezer registry and its settings
        try:
            parse_squeezer(name)
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


MAX_SEED = 2**63 - 1  # seeds are integers in [0, MAX_SEED] (numpy's PCG64 takes no negative)
SIZE_LIMITS = {  # every size, bounded before any work (a typo must not allocate terabytes)
    "batch_size": (1, 1_000_000),
    "white_noise": (0, 1_000_000),
    "gallery": (0, 1_000),
    "threads": (1, 1_024),
    "[data] samples": (1, 100_000_000),
    "[similarity] per_class": (0, 100_000_000),  # 0: every image
}


def _check_sizes(cfg: RunConfig, source: str) -> None:
    """Every size within :data:`SIZE_LIMITS` and every seed within [0, :data:`MAX_SEED`]."""
    sizes = {
        "batch_size": cfg.batch_size,
        "white_noise": cfg.white_noise,
        "gallery": cfg.gallery,
        "threads": cfg.threads,
        "[data] samples": cfg.data.samples,
        "[similarity] per_class": cfg.similarity.per_class,
    }
    for name, value in sizes.items():
        lo, hi = SIZE_LIMITS[name]
        if value is not None and not lo <= value <= hi:
            raise LabelflipError(f"{source}: {name} must be >= {lo} and <= {hi:,}, got {value:,}")
    seeds = {"seed": cfg.seed}
    if cfg.oracle is not None:
        seeds["[oracle] seed"] = cfg.oracle.seed
    if cfg.svae is not None:
        seeds["[svae] seed"] = cfg.svae.seed
    for name, value in seeds.items():
        if value is not None and not 0 <= value <= MAX_SEED:
            raise LabelflipError(
                f"{source}: {name} must be an integer in [0, 2**63 - 1], got {value}"
            )


def _check_paths(cfg: RunConfig, source: str) -> None:
    """A path given as an empty string is a mistake, not "no path"."""
    tables = {
        "[model]": cfg.model,
        "[oracle]": cfg.oracle,
        "[svae]": cfg.svae,
        "[similarity]": cfg.similarity,
    }
    for table, section in tables.items():
        value = getattr(section, "checkpoint", None)
        if value is not None and not value.strip():
            raise LabelflipError(
                f"{source}: {table} checkpoint is empty; give the path of a checkpoint "
                "(.safetensors) or leave the key out"
            )
    if cfg.data.data_dir is not None and not cfg.data.data_dir.strip():
        raise LabelflipError(
            f"{source}: [data] data_dir is empty; give a directory or leave the key out"
        )


def _validate(cfg: RunConfig, source: str) -> None:
    d, m = cfg.data, cfg.model
    _check_sizes(cfg, source)
    _check_paths(cfg, source)
    if cfg.similarity.split not in ("train", "test"):
        raise LabelflipError(
            f"{source}: [similarity] split must be 'train' or 'test', got {cfg.similarity.split!r}"
        )
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
    from labelflip.models.registry import get_architecture, parse_user_arch

    name = cfg.data.dataset
    if not name.startswith((IMAGEFOLDER_PREFIX, PYTHON_DATA)) and name not in REGISTRY:
        known = [*REGISTRY, f"{IMAGEFOLDER_PREFIX}<path>"]
        raise LabelflipError(f"{source}: [data] {unknown_name('dataset', name, known)}")
    arch = cfg.model.arch
    try:
        if arch is not None and ":" not in arch:
            get_architecture(arch)
        elif arch is not None:
            parse_user_arch(arch)
    except LabelflipError as e:
        raise LabelflipError(f"{source}: [model] {e}") from None

"""The typed experiment config of ``labelflip run``, loaded from TOML.

A config names the data (dataset, split, which samples), the model (a
checkpoint, a zoo model, or an architecture trained on first use and
cached), the attacks with their settings, and run-wide options. Any setting
of an attack may be a list: the attack then expands into one job per
combination (a grid), e.g. ``eps = [0.01, 0.1, 1.0]`` gives three PGD jobs
that form one sweep. Every attack's settings are validated through the
attack registry when the config is loaded, so a typo fails before any work
starts, with one line naming the attack entry.

- :mod:`~labelflip.config.tables`: the typed tables (``RunConfig`` and its parts);
- :mod:`~labelflip.config.jobs`: ``[[attacks]]`` entries expanded into jobs;
- :mod:`~labelflip.config.parse`: loading and validation.
"""

from labelflip.config.jobs import (
    TARGET_KEY,
    AttackConfig,
    JobSpec,
    expand,
    missing_target_distance,
    target_spec,
)
from labelflip.config.parse import (
    config_from_json,
    default_config_text,
    load_config,
    parse_config,
    validate_config,
)
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

__all__ = [
    "EXECUTORS",
    "PYTHON_DATA",
    "SELECTIONS",
    "TARGET_KEY",
    "AttackConfig",
    "DataConfig",
    "DetectConfig",
    "JobSpec",
    "ModelConfig",
    "OracleConfig",
    "RunConfig",
    "SVAETableConfig",
    "SimilarityConfig",
    "config_from_json",
    "default_config_text",
    "expand",
    "load_config",
    "missing_target_distance",
    "parse_config",
    "target_spec",
    "validate_config",
]

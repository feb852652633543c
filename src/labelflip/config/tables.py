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
from dataclasses import dataclass, field
from typing import Any

from labelflip.config.jobs import AttackConfig, JobSpec, expand

SELECTIONS = ("first", "random")
EXECUTORS = ("local", "ray")  # where the attacks run (labelflip.run); --executor overrides
PYTHON_DATA = "python:"  # [data] dataset: samples given in Python (labelflip.evaluate)
PER_CLASS_DEFAULT = 500  # [similarity] per_class: images per class of the perceptual distance


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
class SimilarityConfig:
    """The ``[similarity]`` table: which class-distance matrices a run computes
    (see :mod:`labelflip.similarity`); they are saved with the run, drive the
    ``nearest`` / ``farthest`` / ``labelfool`` target strategies and the
    report's label-space section.

    - ``perceptual``: LabelFool's Hausdorff distance between classes in a
      model's feature space, computed on the ``split`` images (the training
      split, as in the paper), at most ``per_class`` images per class (a
      seeded choice; default :data:`PER_CLASS_DEFAULT`; ``0`` for all of them,
      as in the paper, at a cost quadratic in the images: 60,000 MNIST images
      take minutes on a CPU where 500 per class take seconds), features from
      ``layer`` (default: the penultimate layer) of ``checkpoint`` (default:
      the attacked model).
    - ``hierarchy``: ``"auto"`` (a built-in hierarchy whose leaves are the
      dataset's classes, if there is one), ``"none"``, a built-in name or a
      JSON file: the semantic (tree) distance.
    - ``confusion``: the symmetrised clean confusion of the attacked samples.
    """

    perceptual: bool = True
    split: str = "train"
    per_class: int | None = PER_CLASS_DEFAULT  # 0 (or None): every image
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
    # torch's CPU threads (labelflip.run.threads): None picks OMP_NUM_THREADS if
    # set, else 1 on a CPU; records are reproducible for a given count
    threads: int | None = None
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

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["attacks"] = [
            {"attack": a.attack, **({"label": a.label} if a.label else {}), **a.settings}
            for a in self.attacks
        ]
        return d

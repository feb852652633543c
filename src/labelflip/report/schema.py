"""The report's typed summaries: frozen dataclasses for a run and its jobs,
and their JSON form (``summary.json``, :func:`labelflip.report.summarize`).

Types follow the values: counts are ``int``, rates and statistics
``float`` (NaN when not available: no samples, no flips), matrices tuples of
tuples. Every class coerces its fields on construction (numpy arrays and
scalars, JSON lists, ``None`` for a NaN float), so the same constructor takes
freshly computed numpy values and the data read back from ``summary.json``:

>>> job = JobSummary.from_json(json.loads(text))      # doctest: +SKIP
>>> job.to_json() == json.loads(text)                  # doctest: +SKIP

In JSON a NaN float is ``null``; a field's JSON key is its name unless its
metadata says otherwise (``from``, ``to``, ``class`` are Python keywords).
The statistics of :mod:`labelflip.analysis` that the summaries hold
(:class:`~labelflip.analysis.BowkerResult`,
:class:`~labelflip.analysis.SpearmanResult`,
:class:`~labelflip.analysis.TypeIRates`,
:class:`~labelflip.analysis.GroupShare`) are used as they are.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labelflip.analysis import BowkerResult, GroupShare, SpearmanResult, TypeIRates

SUMMARY_VERSION = 2

# A statistic computed from fewer off-diagonal flips than this is shown as
# unreliable (in tables and plots): with so few flips, s and its bootstrap
# interval collapse onto a handful of cells (e.g. s = 0.00 [0.00, 0.00]).
MIN_FLIPS = 20


# ---------------------------------------------------------------- JSON values


def jsonable(value: Any) -> Any:
    """``value`` as JSON data: dataclasses as dicts (field metadata ``json``
    renames a key), numpy types as Python ones, NaN/inf floats as ``None``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {_key(f): jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    return value


def _key(f: dataclasses.Field) -> str:
    return f.metadata.get("json", f.name)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_nan(value: Any) -> bool:
    return isinstance(value, (float, np.floating)) and not math.isfinite(float(value))


def _coerce(tp: Any, value: Any) -> Any:
    """``value`` as type ``tp`` (the types the summaries use)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return jsonable(value)
    if origin in (typing.Union, types.UnionType):
        if value is None or _is_nan(value):
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(inner, value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return build(tp, value)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v) for v in value)
        return tuple(_coerce(a, v) for a, v in zip(args, value, strict=True))
    if origin in (dict, Mapping):
        _, inner = typing.get_args(tp)
        return {str(k): _coerce(inner, v) for k, v in value.items()}
    if tp is float:
        return math.nan if value is None else float(value)
    if tp in (int, bool, str):
        return tp(value)
    raise TypeError(f"no coercion to {tp!r}")


def build(cls: type, data: Mapping[str, Any]) -> Any:
    """An instance of the dataclass ``cls`` from JSON-like ``data`` (by JSON
    key; a missing key reads as ``None``)."""
    hints = _hints(cls)
    values = {f.name: _coerce(hints[f.name], data.get(_key(f))) for f in dataclasses.fields(cls)}
    return cls(**values)


class Typed:
    """Base of the summary dataclasses: fields coerced to their declared
    types on construction; :meth:`to_json` and :meth:`from_json`."""

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            object.__setattr__(self, f.name, _coerce(hints[f.name], getattr(self, f.name)))

    def to_json(self) -> dict[str, Any]:
        return jsonable(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]):  # noqa: ANN206
        return build(cls, data)


def _meta(key: str) -> Any:
    return field(metadata={"json": key})


# ---------------------------------------------------------------- job parts


@dataclass(frozen=True)
class Flip(Typed):
    """``count`` examples of class ``source`` landed in class ``dest``."""

    source: int = _meta("from")
    dest: int = _meta("to")
    count: int = _meta("count")
    from_name: str = _meta("from_name")
    to_name: str = _meta("to_name")


@dataclass(frozen=True)
class Attractor(Typed):
    """The class receiving the largest share of the successful examples
    (``cls`` and ``name`` ``None`` when nothing succeeded)."""

    cls: int | None = _meta("class")
    name: str | None = _meta("name")
    share: float = _meta("share")


@dataclass(frozen=True)
class LabelSpace(Typed):
    """Label-space numbers of a job (LabelFool §IV): the target strategy and
    the distance it used, the attack rate, the flips' mean class distance per
    distance, LabelFool's ``‖Δ‖``, (untargeted) the Spearman correlation
    of flip rates with each distance and, when the run has a class hierarchy,
    the flips that stay within their true class's top-level group."""

    strategy: str | None
    distance_used: str | None
    attack_rate: float
    n_flips: int
    flip_distance: Mapping[str, float]
    mean_sq_perturbation: float
    flip_correlation: Mapping[str, SpearmanResult]
    within_group: GroupShare | None = None


@dataclass(frozen=True)
class Detection(Typed):
    """Detection rates of ``n`` examples at the calibrated threshold
    (``rate``) and at each fixed threshold (``rates``)."""

    n: int
    rate: float
    rates: tuple[float, ...]


@dataclass(frozen=True)
class OracleView(Typed):
    """What the independent oracle sees of ``n`` successful Type II examples:
    the share it still sees as the true class and the share it agrees with
    the model's new class."""

    n: int
    kept_true_rate: float
    agrees_with_model_rate: float


@dataclass(frozen=True)
class TypeISummary(Typed):
    """A Type I job's judge (``"oracle"`` or ``"f2"``), the rates judged by
    each (``rates["oracle"]`` ``None`` without an oracle) and the number of
    samples counted."""

    judge: str
    rates: Mapping[str, TypeIRates | None]
    n_counted: int


@dataclass(frozen=True)
class MultiLabelSummary(Typed):
    """Per-label counts of labels switched on and off, the bit success rate
    (bASR), the mean number of bits the targets ask to change and the
    whole-vector success rate."""

    label_on: tuple[int, ...]
    label_off: tuple[int, ...]
    bit_success_rate: float
    mean_target_bits: float
    success_rate_whole_vector: float


@dataclass(frozen=True)
class JobSummary(Typed):
    """Everything the report says about one job. ``kind`` names its entry in
    :data:`labelflip.report.kinds.KINDS` (``type-ii``, ``type-i``,
    ``multilabel``), which says how the matrix is read; the kind-specific
    parts (``type_i``, ``multilabel``) are ``None`` for the other kinds, and
    ``oracle``/``detect`` ``None`` where the run has no such judge."""

    job_id: str
    label: str
    attack: str
    group: str
    sweep_value: float | None
    settings: Mapping[str, Any]
    seed: int
    status: str
    complete: bool
    kind: str
    targeted: bool
    n: int
    n_clean_correct: int
    n_success_clean: int
    clean_accuracy: float
    success_rate: float
    success_rate_clean: float
    median_l0: float
    median_l2: float
    median_linf: float
    flip_matrix: tuple[tuple[int, ...], ...]
    flip_matrix_all: tuple[tuple[int, ...], ...]
    symmetry: float
    symmetry_ci: tuple[float, float]
    symmetry_level: float
    bowker: BowkerResult
    top_flips: tuple[Flip, ...]
    landing_shares: tuple[float, ...]
    baseline_shares: tuple[float, ...] | None
    entropy: float
    top_attractor: Attractor
    white_noise_spearman: SpearmanResult
    label_space: LabelSpace
    oracle: OracleView | None = None
    detect: Detection | None = None
    type_i: TypeISummary | None = None
    multilabel: MultiLabelSummary | None = None

    @property
    def n_off_diagonal(self) -> int:
        """Off-diagonal entries of the matrix: the flips ``s`` is computed from."""
        a = np.asarray(self.flip_matrix, dtype=np.int64)
        return int(a.sum() - np.trace(a)) if a.size else 0

    @property
    def few_flips(self) -> bool:
        """Fewer than :data:`MIN_FLIPS` off-diagonal flips: ``s``, its
        interval and the Bowker test say little."""
        return self.n_off_diagonal < MIN_FLIPS


# ---------------------------------------------------------------- run parts


@dataclass(frozen=True)
class RunInfo(Typed):
    """Who and what the run attacked (from the run's metadata). The model's
    ``clean_accuracy`` is its accuracy on the attacked samples;
    ``test_accuracy`` the checkpoint's accuracy on its dataset's test split
    (from the run's metadata or the checkpoint's sidecar), NaN when unknown."""

    name: str | None
    dataset: str | None
    split: str | None
    model: Mapping[str, Any]
    num_classes: int
    class_names: tuple[str, ...]
    n_samples: int
    bounds: tuple[float, float]
    input_shape: tuple[int, ...] | None
    started: str | None
    finished: str | None
    generated: str
    encoding: Mapping[str, Any]
    test_accuracy: float = math.nan  # the checkpoint's own test accuracy, when known
    # Records left out of every statistic because the model's logits on the
    # adversarial example were not finite (job id -> count; only jobs with some),
    # and white-noise images left out of the prior for the same reason.
    invalid: Mapping[str, int] | None = None
    white_noise_invalid: int | None = None
    # The store's state the summary was read from (records, jobs_done): a
    # report is never overwritten by one of an earlier state.
    snapshot: Mapping[str, int] | None = None

    @property
    def multilabel(self) -> bool:
        return self.encoding.get("kind") == "multilabel"


@dataclass(frozen=True)
class WhiteNoise(Typed):
    """The model's class distribution on ``n`` uniform-noise images."""

    n: int
    distribution: tuple[float, ...]
    entropy: float
    top_class: int | None
    top_name: str | None
    top_share: float


@dataclass(frozen=True)
class Distance(Typed):
    """A class-distance matrix of the run (``perceptual``, ``semantic``,
    ``confusion``) and how it was computed."""

    name: str
    class_names: tuple[str, ...] | None
    matrix: tuple[tuple[float, ...], ...]
    info: Mapping[str, Any] | None


@dataclass(frozen=True)
class Boundary(Typed):
    """A ``boundary-profile`` job read as class distances (issue 20):
    ``matrix[i][j]`` the median distance (in the job's ``norm``) from the
    ``n`` clean-correct samples of class ``i`` to the boundary of class ``j``
    (:func:`labelflip.analysis.class_boundary_matrix`; NaN for the diagonal
    and a class without samples, ``inf`` when at least half were not
    reached, both ``null`` in JSON); ``margin`` the median relative margin
    ``(d_2 - d_1) / d_1`` between the nearest and the second-nearest
    boundary, ``near_ties`` the share of samples whose margin is below 5 %;
    ``landing`` for each untargeted Type II job of the run, the share of its
    successful clean-correct samples that land at their nearest boundary
    (:func:`labelflip.analysis.nearest_landing_rate`); ``correlation`` the
    Spearman correlation of the symmetrised matrix with each class distance
    of the run (:func:`labelflip.analysis.boundary_distance_correlation`)."""

    job_id: str
    label: str
    norm: str
    n: int
    matrix: tuple[tuple[float, ...], ...]
    margin: float
    near_ties: float
    landing: Mapping[str, float]
    correlation: Mapping[str, SpearmanResult]


@dataclass(frozen=True)
class Group(Typed):
    """A sweep: jobs of one attack entry ordered by the swept value."""

    group: str
    job_ids: tuple[str, ...]
    sweep_values: tuple[float | None, ...]
    setting: str | None = None  # the swept setting (e.g. "eps"), when one is


@dataclass(frozen=True)
class Detector(Typed):
    """Feature squeezing as the run configured it, the threshold calibrated
    on the clean scores and the clean samples' detection rates."""

    squeezers: tuple[str, ...]
    distance: str
    fpr: float
    threshold: float
    thresholds: tuple[float, ...]
    clean: Detection


@dataclass(frozen=True)
class RunSummary(Typed):
    """A run's summary: the run, its white-noise prior, its class distances,
    its jobs (run order), its sweeps, its judges and the class-boundary
    distances of its boundary-profile jobs."""

    version: int
    run: RunInfo
    white_noise: WhiteNoise | None
    distances: tuple[Distance, ...]
    jobs: tuple[JobSummary, ...]
    groups: tuple[Group, ...]
    oracle: Mapping[str, Any] | None
    svae: Any
    detect: Detector | None
    boundaries: tuple[Boundary, ...] | None = None  # boundary-profile jobs (None: none)

    def job(self, job_id: str) -> JobSummary:
        return next(j for j in self.jobs if j.job_id == job_id)


def as_summary(summary: RunSummary | Mapping[str, Any]) -> RunSummary:
    """``summary`` typed (a :class:`RunSummary` as it is, JSON data read)."""
    return summary if isinstance(summary, RunSummary) else RunSummary.from_json(summary)

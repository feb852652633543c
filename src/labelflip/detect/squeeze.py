"""Feature-squeezing detection (Xu, Evans & Qi, "Feature Squeezing: Detecting
Adversarial Examples in Deep Neural Networks", NDSS 2018), as used against
Type I attacks by Tang et al. ("Adversarial Attack Type I", §IV-C).

An input is flagged as adversarial when the model's prediction moves much
once the input is *squeezed* (its feature space reduced):

    reject x  iff  D(f(x), f(F(x))) > ζ

with ``f`` the softmax output of the classifier, ``F`` a squeezer and ``D``
a distance (Tang et al. write the rejection as ``D >= ζ``; Xu et al.'s code,
whose threshold calibration is followed here, flags ``D > ζ``; the two
differ only for a score exactly at ζ). With several squeezers (Xu et al.'s
*joint* detection) the score is the largest distance over the squeezers,
each applied to ``x`` on its own. Tang et al. use Xu et al.'s best MNIST
setting, 1-bit depth reduction jointly with 2×2 median smoothing; Xu et al.
measure the L1 distance, Tang et al. the Euclidean one (both are here).

Squeezers (names for :func:`squeeze_scores`), registered in :data:`SQUEEZERS`
next to their definitions, each with its settings declared once (a
:class:`~labelflip._settings.Settings` dataclass): a name is the squeezer's
name followed by its settings in field order, ``_<a>`` then ``x<b>``:

- ``bit_depth_<bits>`` (``b`` bits), :func:`bit_depth`: reduce to ``2**b`` levels over the
  classifier's bounds, Xu et al.'s color-depth squeezer, ``rint(u (2^b - 1)) / (2^b - 1)``
  with ``u`` the input rescaled to ``[0, 1]`` (ties to even, as ``np.rint``
  in Xu et al.'s code).
- ``median_<height>x<width>``, :func:`median_filter`: median smoothing over a
  ``height × width`` window per channel, Xu et al.'s spatial smoothing. Even windows follow
  Xu et al.'s reference code (EvadeML-Zoo, which imitates
  ``scipy.ndimage.median_filter(mode="reflect")``): see :func:`median_filter`.

The threshold ζ is chosen, as in Xu et al., so that a given share of
legitimate inputs is flagged (:func:`calibrate_threshold`);
:func:`detection_rate` is the share of inputs flagged, the quantity of Tang
et al.'s Tables I and II.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from numpy.typing import ArrayLike

from labelflip._settings import Settings, setting
from labelflip.analysis import detection
from labelflip.errors import LabelflipError
from labelflip.models.classifier import Classifier, check_logits

Squeezer = Callable[[torch.Tensor], torch.Tensor]

DEFAULT_SQUEEZERS: tuple[str, ...] = ("bit_depth_1", "median_2x2")
DISTANCES: tuple[str, ...] = ("l1", "l2")


def _check_tensor(x: object, name: str = "x", min_dim: int = 1) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise LabelflipError(f"{name} must be a torch tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise LabelflipError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.ndim < min_dim:
        raise LabelflipError(
            f"{name} must have at least {min_dim} dimensions, got shape {tuple(x.shape)}"
        )
    if not bool(torch.isfinite(x).all()):
        raise LabelflipError(f"{name} contains NaN or Inf values")
    return x


def _check_bounds(bounds: tuple[float, float]) -> tuple[float, float]:
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise LabelflipError(f"bounds must be two numbers (lower, upper), got {bounds!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise LabelflipError(f"bounds must satisfy lower < upper, got ({lo}, {hi})")
    return lo, hi


def _check_bits(bits: object) -> None:
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or bits < 1:
        raise LabelflipError(f"bits must be an integer >= 1, got {bits!r}")


def _check_window(kh: int, kw: int) -> None:
    if kh < 1 or kw < 1:
        raise LabelflipError(f"median window must be at least 1x1, got {kh}x{kw}")


def bit_depth(
    x: torch.Tensor, bits: int = 1, bounds: tuple[float, float] = (0.0, 1.0)
) -> torch.Tensor:
    """Reduce ``x`` to ``2**bits`` evenly spaced levels over ``bounds``
    (Xu et al. 2018, "reducing color bit depth").

    With ``u = (x - lo) / (hi - lo)`` and ``m = 2**bits - 1`` the squeezed
    value is ``lo + (hi - lo) · rint(u · m) / m``; ``rint`` rounds halves to
    even, like ``np.rint`` in Xu et al.'s code, so with ``bits=1`` the
    midpoint goes down (``0.5 -> 0``). ``x`` must lie in ``bounds`` (the
    classifier's input box); a new tensor of the same shape, dtype and
    device comes back.
    """
    _check_bits(bits)
    x = _check_tensor(x)
    lo, hi = _check_bounds(bounds)
    if x.numel() and (float(x.min()) < lo - 1e-6 or float(x.max()) > hi + 1e-6):
        raise LabelflipError(
            f"inputs span [{float(x.min()):g}, {float(x.max()):g}], outside the bounds "
            f"[{lo:g}, {hi:g}]"
        )
    levels = float(2 ** int(bits) - 1)
    u = ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
    return torch.round(u * levels) / levels * (hi - lo) + lo


def _symmetric_pad(x: torch.Tensor, dim: int, before: int, after: int) -> torch.Tensor:
    """Pad ``x`` along ``dim`` by mirroring with the edge repeated (``d c b a | a
    b c d | d c b a``: scipy's ``reflect``, numpy's/TensorFlow's ``symmetric``)."""
    n = x.shape[dim]
    idx = torch.arange(-before, n + after, device=x.device)
    period = 2 * n
    idx = idx % period
    idx = torch.where(idx >= n, period - 1 - idx, idx)
    return x.index_select(dim, idx)


def median_filter(x: torch.Tensor, size: int | tuple[int, int] = 2) -> torch.Tensor:
    """Median smoothing over a ``size`` window (``h × w``; an int for a square),
    per channel over the last two dimensions (Xu et al. 2018, median
    smoothing).

    The window and edges follow Xu et al.'s reference implementation
    (EvadeML-Zoo ``utils/median.py``, which reproduces
    ``scipy.ndimage.median_filter(x, size, mode="reflect")``):

    - the ``h - 1`` padded rows go ``h - 1 - (h - 1) // 2`` on top and
      ``(h - 1) // 2`` at the bottom (columns alike, left/right), so for an
      even window the output pixel ``(i, j)`` is the median of rows
      ``i - 1 .. i`` and columns ``j - 1 .. j`` for 2×2: the window reaches
      up and left, not down and right; odd windows are centred;
    - the border is padded by mirroring with the edge pixel repeated;
    - an even count of values is not averaged: the result is the upper of
      the two middle values (the ``n // 2 + 1``-th smallest of ``n``; for
      2×2 the third smallest of four), so the output holds input values only.

    ``x`` has shape ``(..., H, W)``; a new tensor of the same shape, dtype
    and device comes back.
    """
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        kh = kw = int(size)
    elif (
        isinstance(size, tuple)
        and len(size) == 2
        and all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in size)
    ):
        kh, kw = int(size[0]), int(size[1])
    else:
        raise LabelflipError(f"size must be an integer or a pair of integers, got {size!r}")
    _check_window(kh, kw)
    x = _check_tensor(x, min_dim=2)
    if x.numel() == 0 or (kh == 1 and kw == 1):
        return x.clone()
    pad_h, pad_w = kh - 1, kw - 1
    xp = _symmetric_pad(x, -2, pad_h - pad_h // 2, pad_h // 2)
    xp = _symmetric_pad(xp, -1, pad_w - pad_w // 2, pad_w // 2)
    windows = xp.unfold(-2, kh, 1).unfold(-2, kw, 1)  # (..., H, W, kh, kw)
    flat = windows.reshape(*x.shape, kh * kw)
    return flat.kthvalue(kh * kw // 2 + 1, dim=-1).values.contiguous()


# ------------------------------------------------------------------ the registry


@dataclass(frozen=True)
class BitDepthSettings(Settings):
    """Settings of the ``bit_depth_<bits>`` squeezer (:func:`bit_depth`)."""

    owner: ClassVar[str] = "bit_depth"
    bits: int = setting(1, doc="2**bits levels over the classifier's bounds (>= 1)")

    def check(self) -> None:
        _check_bits(self.bits)


@dataclass(frozen=True)
class MedianSettings(Settings):
    """Settings of the ``median_<height>x<width>`` squeezer (:func:`median_filter`)."""

    owner: ClassVar[str] = "median"
    height: int = setting(2, doc="rows of the window (>= 1)")
    width: int = setting(2, doc="columns of the window (>= 1)")

    def check(self) -> None:
        _check_window(self.height, self.width)


@dataclass(frozen=True)
class SqueezerSpec:
    """A registered squeezer: ``make(settings, bounds)`` builds the function
    of a batch. Its names and their parsing derive from the settings' fields
    (integers, in field order)."""

    name: str
    settings_type: type[Settings]
    make: Callable[[Any, tuple[float, float]], Squeezer]
    description: str

    @property
    def _fields(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self.settings_type)]

    @property
    def form(self) -> str:
        """The form of the names, e.g. ``median_<height>x<width>``."""
        return f"{self.name}_" + "x".join(f"<{f}>" for f in self._fields)

    @property
    def example(self) -> str:
        """The name of the default settings, e.g. ``median_2x2``."""
        defaults = self.settings_type()
        return f"{self.name}_" + "x".join(str(getattr(defaults, f)) for f in self._fields)

    def parse(self, name: str) -> Settings | None:
        """The validated settings a name of this squeezer gives; ``None`` for
        a name of another form."""
        pattern = re.escape(self.name) + "_" + "x".join([r"(\d+)"] * len(self._fields))
        m = re.fullmatch(pattern, name)
        if m is None:
            return None
        values = dict(zip(self._fields, map(int, m.groups()), strict=True))
        try:
            return self.settings_type(**values)
        except LabelflipError as e:
            raise LabelflipError(f"{e} in '{name}'") from None


SQUEEZERS: dict[str, SqueezerSpec] = {}
"""Every registered squeezer by name (filled by :func:`register_squeezer`)."""


def register_squeezer(
    name: str, settings: type[Settings], description: str
) -> Callable[[Callable[[Any, tuple[float, float]], Squeezer]], Any]:
    """Register the decorated ``make(settings, bounds) -> squeezer`` as ``name``."""

    def register(make: Callable[[Any, tuple[float, float]], Squeezer]) -> Any:
        if name in SQUEEZERS:
            raise ValueError(f"squeezer {name!r} registered twice")
        SQUEEZERS[name] = SqueezerSpec(name, settings, make, description)
        return make

    return register


@register_squeezer("bit_depth", BitDepthSettings, "colour-depth reduction (Xu et al.)")
def _bit_depth_squeezer(s: BitDepthSettings, bounds: tuple[float, float]) -> Squeezer:
    return lambda x: bit_depth(x, s.bits, bounds)


@register_squeezer("median", MedianSettings, "median smoothing (Xu et al.)")
def _median_squeezer(s: MedianSettings, bounds: tuple[float, float]) -> Squeezer:
    return lambda x: median_filter(x, (s.height, s.width))


def parse_squeezer(name: str) -> tuple[SqueezerSpec, Settings]:
    """The registered squeezer a name calls and its validated settings;
    one-line errors (with a did-you-mean for an unknown name) otherwise."""
    if not isinstance(name, str):
        raise LabelflipError(f"a squeezer is a name or a function, got {name!r}")
    for spec in SQUEEZERS.values():
        settings = spec.parse(name)
        if settings is not None:
            return spec, settings
    head = name.rstrip("0123456789x_")
    close = difflib.get_close_matches(head, list(SQUEEZERS), n=1)
    hint = f"; did you mean '{_guess(SQUEEZERS[close[0]], name[len(head) :])}'?" if close else ""
    known = "; ".join(f"{s.form}, e.g. {s.example}" for s in SQUEEZERS.values())
    raise LabelflipError(f"unknown squeezer '{name}'{hint} (known: {known})")


def _guess(spec: SqueezerSpec, tail: str) -> str:
    """``spec``'s name with the settings part ``tail`` of a mistyped name
    where that makes a valid name, else ``spec``'s example."""
    try:
        if spec.parse(spec.name + tail) is not None:
            return spec.name + tail
    except LabelflipError:
        pass
    return spec.example


def get_squeezer(name: str, bounds: tuple[float, float] = (0.0, 1.0)) -> Squeezer:
    """The squeezer called ``name`` (see :data:`SQUEEZERS`): ``bit_depth_<bits>``
    (over ``bounds``) or ``median_<height>x<width>``."""
    spec, settings = parse_squeezer(name)
    return spec.make(settings, bounds)


def _distance(p: torch.Tensor, q: torch.Tensor, distance: str) -> torch.Tensor:
    d = (p - q).double()
    if distance == "l1":
        return d.abs().sum(dim=1)
    return d.pow(2).sum(dim=1).sqrt()


@torch.no_grad()
def squeeze_scores(
    clf: Classifier,
    x: torch.Tensor,
    *,
    squeezers: Sequence[str | Squeezer] = DEFAULT_SQUEEZERS,
    distance: str = "l1",
    batch_size: int = 512,
) -> torch.Tensor:
    """Feature-squeezing score of each input: the largest, over the squeezers,
    distance between ``softmax(clf(x))`` and ``softmax(clf(F(x)))``
    (Xu et al. 2018, joint detection; Tang et al. §IV-C).

    ``squeezers`` are names (see :func:`get_squeezer`; the default is the
    joint 1-bit depth and 2×2 median of both papers; ``bit_depth`` squeezes
    over ``clf.bounds``) or functions of a batch. ``distance`` is ``"l1"``
    (Xu et al.; scores in ``[0, 2]``) or ``"l2"`` (Euclidean, Tang et al.;
    in ``[0, √2]``). Computed without gradients in batches of
    ``batch_size`` on the classifier's device; returns float64 scores of
    shape ``(N,)`` on the device of ``x``. ``x`` must be finite and inside
    the classifier's bounds. Higher means more likely adversarial.
    """
    if not isinstance(clf, Classifier):
        raise LabelflipError(f"clf must be a labelflip Classifier, got {type(clf).__name__}")
    if clf.multilabel:
        raise LabelflipError(
            "feature squeezing compares softmax outputs; it needs a single-label "
            "(one-hot or ECOC) classifier, not a multi-label one"
        )
    if distance not in DISTANCES:
        raise LabelflipError(f"unknown distance '{distance}' (known: {', '.join(DISTANCES)})")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise LabelflipError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(squeezers, str) or len(squeezers) == 0:
        raise LabelflipError(f"squeezers must be a non-empty sequence, got {squeezers!r}")
    fns = [s if callable(s) else get_squeezer(s, clf.bounds) for s in squeezers]
    x = _check_tensor(x, min_dim=2)
    if x.numel():
        clf.check_inputs(x)
    dev = clf.mean.device
    out = []
    for i in range(0, len(x), batch_size):
        batch = x[i : i + batch_size].to(dev)
        p = _probabilities(clf, batch)
        worst = torch.zeros(len(batch), dtype=torch.float64, device=dev)
        for fn in fns:
            squeezed = fn(batch)
            if not isinstance(squeezed, torch.Tensor) or squeezed.shape != batch.shape:
                raise LabelflipError(
                    f"a squeezer must return a tensor of the input's shape {tuple(batch.shape)}"
                )
            worst = torch.maximum(worst, _distance(p, _probabilities(clf, squeezed), distance))
        out.append(worst)
    if not out:
        return torch.empty(0, dtype=torch.float64, device=x.device)
    return torch.cat(out).to(x.device)


def _probabilities(clf: Classifier, x: torch.Tensor) -> torch.Tensor:
    scores = clf(x)
    check_logits(scores, clf.encoding.num_scores, "the classifier")
    return torch.softmax(scores.double(), dim=1)


def _numpy(scores: ArrayLike | torch.Tensor) -> ArrayLike:
    """A torch tensor's values as numpy (on the CPU, detached); other values as given."""
    return scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else scores


def calibrate_threshold(scores_clean: ArrayLike | torch.Tensor, fpr: float = 0.05) -> float:
    """:func:`labelflip.analysis.calibrate_threshold` (Xu et al.'s ζ for a
    clean false-positive rate ``fpr``), also for a torch tensor of scores."""
    return detection.calibrate_threshold(_numpy(scores_clean), fpr)


def detection_rate(scores: ArrayLike | torch.Tensor, threshold: float) -> float:
    """:func:`labelflip.analysis.detection_rate` (share of ``score > threshold``),
    also for a torch tensor of scores."""
    return detection.detection_rate(_numpy(scores), threshold)

"""The report's figures, each returned as a :class:`matplotlib.figure.Figure`
(the writer encodes them as PNG: :func:`labelflip.report.writer.png_bytes`).

Figures are built with the Agg canvas attached directly: pyplot is never
imported, so no backend is selected, no figure is registered globally and
``rcParams`` are left alone.
All user text (class names, labels) goes through :func:`_plain` so that a
``$`` is never read as mathtext.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import NullFormatter

DPI = 100
DIAGONAL_COLOR = "#d9d9d9"  # failed attacks: grey, hatched, outside the colour scale
ANNOTATE_MAX = 20  # annotate counts / label ticks up to this many classes
TICKS_MAX = 40


def _plain(text: object) -> str:
    """Text shown literally by matplotlib (``$`` escaped against mathtext)."""
    return str(text).replace("$", r"\$")


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _cmap(name: str) -> ListedColormap:
    """A copy of a registered colormap with masked cells transparent."""
    return matplotlib.colormaps[name].with_extremes(bad=(0, 0, 0, 0))


def _off_diagonal(matrix: np.ndarray) -> np.ma.MaskedArray:
    return np.ma.masked_array(matrix, mask=np.eye(matrix.shape[0], dtype=bool))


def _class_ticks(ax, names: Sequence[str], *, x: bool = True, y: bool = True) -> None:
    k = len(names)
    labels = [_plain(n) for n in names] if k <= TICKS_MAX else []
    ticks = range(k) if k <= TICKS_MAX else []
    if x:
        ax.set_xticks(ticks, labels, rotation=45, ha="right", rotation_mode="anchor")
    else:
        ax.set_xticks([])
    if y:
        ax.set_yticks(ticks, labels)
    else:
        ax.set_yticks([])


def _draw_diagonal(ax, k: int) -> None:
    for i in range(k):
        ax.add_patch(
            Rectangle(
                (i - 0.5, i - 0.5),
                1,
                1,
                facecolor=DIAGONAL_COLOR,
                edgecolor="#969696",
                hatch="///",
                linewidth=0.0,
            )
        )


def _flip_image(ax, values: np.ndarray, vmax: float, cmap: str = "Blues"):
    """Off-diagonal cells coloured on ``[0, vmax]``; diagonal grey and hatched."""
    k = values.shape[0]
    _draw_diagonal(ax, k)
    image = ax.imshow(
        _off_diagonal(values), cmap=_cmap(cmap), vmin=0, vmax=vmax, interpolation="nearest"
    )
    ax.set_xlim(-0.5, k - 0.5)
    ax.set_ylim(k - 0.5, -0.5)
    return image


def _annotate(ax, counts: np.ndarray, vmax: float) -> None:
    k = counts.shape[0]
    size = 9 if k <= 10 else 7
    for i in range(k):
        for j in range(k):
            c = int(counts[i, j])
            if c == 0 and i != j:
                continue
            dark = i != j and c > 0.6 * vmax
            ax.text(
                j,
                i,
                str(c),
                ha="center",
                va="center",
                fontsize=size,
                color="white" if dark else "black",
                fontstyle="italic" if i == j else "normal",
            )


def flip_heatmap(
    counts: Sequence[Sequence[int]],
    names: Sequence[str],
    title: str,
    *,
    xlabel: str = "adversarial prediction",
    ylabel: str = "true class",
    legend: str = "flips (diagonal: failed)",
) -> Figure:
    """Flip matrix (true class down, adversarial prediction across) with counts.

    The diagonal (attack failed: still the true class) is grey and hatched,
    with its counts in italics, outside the colour scale of the flips. The
    axis and colour-bar labels can be changed (a Type I job's label-stay
    matrix has the class its judge sees across).
    """
    a = np.asarray(counts, dtype=np.int64).reshape(len(names), len(names))
    k = a.shape[0]
    side = min(max(3.5, 0.5 * k + 2.0), 16.0)
    fig = _figure(side + 1.0, side)
    ax = fig.add_subplot()
    vmax = float(_off_diagonal(a).max() or 1) if k > 1 else 1.0
    image = _flip_image(ax, a, vmax)
    if k <= ANNOTATE_MAX:
        _annotate(ax, a, vmax)
    _class_ticks(ax, names)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(_plain(title), fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.8, label=legend)
    return fig


def distance_heatmap(matrix: Sequence[Sequence[float]], names: Sequence[str], title: str) -> Figure:
    """A class-distance matrix (symmetric, zero diagonal), values annotated for
    up to :data:`ANNOTATE_MAX` classes; darker = nearer."""
    d = np.asarray(matrix, dtype=np.float64).reshape(len(names), len(names))
    k = d.shape[0]
    side = min(max(3.5, 0.5 * k + 2.0), 16.0)
    fig = _figure(side + 1.0, side)
    ax = fig.add_subplot()
    off = _off_diagonal(d)
    vmax = float(off.max()) if k > 1 and off.count() else 1.0
    vmin = float(off.min()) if k > 1 and off.count() else 0.0
    _draw_diagonal(ax, k)
    image = ax.imshow(off, cmap=_cmap("viridis"), vmin=vmin, vmax=max(vmax, vmin + 1e-12))
    ax.set_xlim(-0.5, k - 0.5)
    ax.set_ylim(k - 0.5, -0.5)
    if k <= ANNOTATE_MAX:
        size = 8 if k <= 10 else 6
        for i in range(k):
            for j in range(k):
                if i != j:
                    bright = d[i, j] > vmin + 0.6 * (vmax - vmin)
                    ax.text(
                        j,
                        i,
                        f"{d[i, j]:.2g}",
                        ha="center",
                        va="center",
                        fontsize=size,
                        color="black" if bright else "white",
                    )
    _class_ticks(ax, names)
    ax.set_title(_plain(title), fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.8, label="class distance")
    return fig


def flip_multiples(
    matrices: Sequence[Sequence[Sequence[int]]],
    titles: Sequence[str],
    names: Sequence[str],
) -> Figure:
    """Small multiples of row-normalised flip matrices on one colour scale.

    Each row is the share of the class's (clean-correct) samples sent to each
    class, so panels with different success rates stay comparable.
    """
    rates = [_row_rates(np.asarray(m, dtype=np.float64)) for m in matrices]
    vmax = max([float(_off_diagonal(r).max() or 0) for r in rates if r.shape[0] > 1] + [0.0])
    vmax = vmax or 1.0
    n = len(rates)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    cell = 2.6 if len(names) <= 10 else 3.4
    fig = _figure(cell * cols + 1.0, cell * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False)
    image = None
    for idx, ax in enumerate(axes.flat):
        if idx >= n:
            ax.set_axis_off()
            continue
        image = _flip_image(ax, rates[idx], vmax, cmap="viridis")
        _class_ticks(
            ax,
            names if len(names) <= ANNOTATE_MAX else [],
            x=idx // cols == rows - 1 or idx + cols >= n,
            y=idx % cols == 0,
        )
        ax.tick_params(labelsize=7)
        ax.set_title(_plain(titles[idx]), fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="share of true class")
    return fig


def _row_rates(a: np.ndarray) -> np.ndarray:
    rows = a.sum(axis=1, keepdims=True)
    return np.divide(a, rows, out=np.zeros_like(a), where=rows > 0)


def _use_log(x: np.ndarray) -> bool:
    """Log x axis when all sweep values are positive and span more than 10x."""
    return x.size > 1 and bool(np.all(x > 0)) and x.max() / x.min() > 10


def _nan(values: Sequence[float | None]) -> np.ndarray:
    return np.array([math.nan if v is None else v for v in values], dtype=np.float64)


def sweep_lines(
    sweep: Sequence[float],
    symmetry: Sequence[float | None],
    ci_low: Sequence[float | None],
    ci_high: Sequence[float | None],
    top_share: Sequence[float | None],
    top_names: Sequence[str | None],
    title: str,
    level: float = 0.95,
) -> Figure:
    """Symmetry ``s`` (with its bootstrap band) and the top-attractor share
    against the sweep value; log x axis when the values span more than 10x."""
    x = _nan(sweep)
    s, lo, hi, share = _nan(symmetry), _nan(ci_low), _nan(ci_high), _nan(top_share)
    fig = _figure(9.0, 3.4)
    ax_s, ax_a = fig.subplots(1, 2)
    ax_s.fill_between(x, lo, hi, alpha=0.25, color="C0", label=f"{level:.0%} bootstrap CI")
    ax_s.plot(x, s, "o-", color="C0", label="s")
    ax_s.set_ylabel("symmetry s")
    ax_s.legend(fontsize=8, loc="best")
    ax_a.plot(x, share, "o-", color="C3")
    for xi, yi, name in zip(x, share, top_names, strict=True):
        if name is not None and math.isfinite(yi):
            ax_a.annotate(
                _plain(name),
                (xi, yi),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
                fontsize=7,
            )
    ax_a.set_ylabel("top attractor share")
    for ax in (ax_s, ax_a):
        ax.set_ylim(-0.02, 1.08)
        ax.set_xlabel("sweep value")
        ax.grid(alpha=0.3)
        if _use_log(x):
            ax.set_xscale("log")
            # one plain label per sweep value instead of crowded 2x10^-2 minor labels
            ax.set_xticks(x, [f"{v:g}" for v in x], fontsize=7)
            ax.xaxis.set_minor_formatter(NullFormatter())
    fig.suptitle(_plain(title), fontsize=10)
    return fig


def prior_bars(distribution: Sequence[float], names: Sequence[str], n: int) -> Figure:
    """The model's class distribution on uniform-noise images, one bar per class."""
    p = np.asarray(distribution, dtype=np.float64)
    fig = _figure(min(max(4.0, 0.45 * p.size + 1.5), 16.0), 3.2)
    ax = fig.add_subplot()
    ax.bar(np.arange(p.size), p, color="C2")
    _class_ticks(ax, names, y=False)
    ax.set_ylim(0, max(1e-9, float(p.max()) * 1.1) if p.size else 1)
    ax.set_ylabel("share of predictions")
    ax.set_title(f"predictions on {n} uniform-noise images", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return fig


# ---------------------------------------------------------------- gallery


def _to_image(x: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, str | None]:
    """A ``(C, H, W)`` example as an image in ``[0, 1]`` and its colormap."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    span = hi - lo if hi > lo else 1.0
    img = np.clip((x - lo) / span, 0.0, 1.0)
    if img.shape[0] == 3:
        return np.transpose(img, (1, 2, 0)), None
    return img.mean(axis=0), "gray"


def _perturbation(x: np.ndarray, x_adv: np.ndarray) -> np.ndarray:
    """``x_adv - x`` rescaled to ``[0, 1]`` around 0.5 (grey = unchanged)."""
    d = np.asarray(x_adv, dtype=np.float64) - np.asarray(x, dtype=np.float64)
    scale = float(np.max(np.abs(d))) if d.size else 0.0
    return 0.5 + d / (2 * scale) if scale > 0 else np.full_like(d, 0.5)


def _image_grid(
    columns: Sequence[Sequence[tuple[np.ndarray, str | None]]],
    rows: Sequence[str],
    titles: Sequence[str],
    height: float,
) -> Figure:
    """One column per example, one row per panel (an image in ``[0, 1]``
    and its colormap), the row names on the left, the titles on top."""
    n = len(columns)
    fig = _figure(max(1.7 * n + 0.8, 3.0), height)
    axes = fig.subplots(len(rows), n, squeeze=False)
    for i, panels in enumerate(columns):
        for r, (img, cmap) in enumerate(panels):
            ax = axes[r, i]
            ax.imshow(img, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(rows[r], fontsize=8)
        axes[0, i].set_title(_plain(titles[i]), fontsize=8)
    return fig


def gallery(
    x: np.ndarray,
    x_adv: np.ndarray,
    titles: Sequence[str],
    bounds: Sequence[float],
) -> Figure:
    """Columns of original, adversarial and amplified perturbation per example.

    ``x`` and ``x_adv`` are ``(N, C, H, W)`` in ``bounds``; grayscale for
    ``C = 1``, RGB for ``C = 3`` (other channel counts are averaged to grey).
    The perturbation of each example is rescaled to ``[0, 1]`` by its own
    largest absolute entry, so 0.5 grey means unchanged.
    """
    lo, hi = float(bounds[0]), float(bounds[1])
    columns = [
        (
            _to_image(x[i], lo, hi),
            _to_image(x_adv[i], lo, hi),
            _to_image(_perturbation(x[i], x_adv[i]), 0, 1),
        )
        for i in range(len(x))
    ]
    rows = ("original", "adversarial", "perturbation\n(rescaled)")
    return _image_grid(columns, rows, titles, 5.6)


def gallery_type_i(
    x: np.ndarray,
    transition: np.ndarray,
    x_adv: np.ndarray,
    titles: Sequence[str],
    bounds: Sequence[float],
) -> Figure:
    """Type I examples, one column each: the start image, the transition
    (halfway along the latent path) and the result, all ``(N, C, H, W)`` in
    ``bounds`` (see :func:`gallery`)."""
    lo, hi = float(bounds[0]), float(bounds[1])
    columns = [
        tuple(_to_image(image, lo, hi) for image in (x[i], transition[i], x_adv[i]))
        for i in range(len(x))
    ]
    return _image_grid(columns, ("start", "transition", "result"), titles, 6.0)

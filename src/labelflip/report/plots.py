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
from matplotlib.ticker import MaxNLocator, NullFormatter, PercentFormatter

DPI = 100
DIAGONAL_COLOR = "#d9d9d9"  # failed attacks: grey, hatched, outside the colour scale
ANNOTATE_MAX = 20  # annotate counts / label ticks up to this many classes
TICKS_MAX = 40
PER_ROW = 8  # gallery examples per row of the figure (more wrap to further rows)
TILE = 1.15  # gallery image side, inches (8 tiles and their titles fit 900 px)
FEW_COLOR = "#9e9e9e"  # statistics from too few flips
FAILED_COLOR = "#b2182b"  # gallery titles of failed attacks


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


def _class_ticks(
    ax, names: Sequence[str], *, x: bool = True, y: bool = True, which: str = "xy"
) -> None:
    """Class names as the tick labels of the axes in ``which`` (ticks without
    labels on an axis given ``False``: an inner panel of small multiples).
    Long names are rotated; beyond :data:`TICKS_MAX` classes no names."""
    k = len(names)
    labels = [_plain(n) for n in names] if k <= TICKS_MAX else []
    ticks = range(k) if k <= TICKS_MAX else []
    turn = max((len(n) for n in labels), default=0) > 3
    ax.set_xticks(ticks, labels if x else [""] * len(ticks))
    if turn:
        ax.tick_params(axis="x", labelrotation=45)
        for t in ax.get_xticklabels():
            t.set_ha("right")
            t.set_rotation_mode("anchor")
    if "y" in which:
        ax.set_yticks(ticks, labels if y else [""] * len(ticks))


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
    note: str | None = None,
) -> Figure:
    """Flip matrix (true class down, adversarial prediction across) with counts.

    The diagonal (attack failed: still the true class) is grey and hatched,
    with its counts in italics, outside the colour scale of the flips, whose
    colour bar ticks at whole counts. The axis and colour-bar labels can be
    changed (a Type I job's label-stay matrix has the class its judge sees
    across); ``note`` is a second title line (e.g. a warning of too few flips).
    """
    a = np.asarray(counts, dtype=np.int64).reshape(len(names), len(names))
    k = a.shape[0]
    side = min(max(3.5, 0.36 * k + 1.8), 16.0)
    fig = _figure(side + 1.0, side)
    ax = fig.add_subplot()
    vmax = float(_off_diagonal(a).max() or 1) if k > 1 else 1.0
    image = _flip_image(ax, a, vmax)
    if k <= ANNOTATE_MAX:
        _annotate(ax, a, vmax)
    _class_ticks(ax, names)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _title(ax, title, note)
    bar = fig.colorbar(image, ax=ax, shrink=0.8, label=legend)
    bar.locator = MaxNLocator(integer=True)
    bar.update_ticks()
    return fig


def _title(ax, title: str, note: str | None) -> None:
    ax.set_title(_plain(title), fontsize=10)
    if note:
        ax.set_title(_plain(title) + "\n", fontsize=10)
        ax.text(
            0.5, 1.0, _plain(note), transform=ax.transAxes, ha="center", va="bottom",
            fontsize=8, color=FEW_COLOR, style="italic",
        )  # fmt: skip


def distance_heatmap(matrix: Sequence[Sequence[float]], names: Sequence[str], title: str) -> Figure:
    """A class-distance matrix (symmetric, zero diagonal), values annotated for
    up to :data:`ANNOTATE_MAX` classes; darker = nearer. The colour scale
    starts at 0 (the distance of a class to itself) and ends at 1, or at the
    largest distance when that is larger: distances that all lie close
    together (e.g. 0.97-1.00) look alike, as they are. A missing or
    infinite entry (a class-boundary matrix's) is left blank, marked –."""
    d = np.asarray(matrix, dtype=np.float64).reshape(len(names), len(names))
    k = d.shape[0]
    side = min(max(3.5, 0.36 * k + 1.8), 16.0)
    fig = _figure(side + 1.0, side)
    ax = fig.add_subplot()
    off = np.ma.masked_invalid(_off_diagonal(d))
    vmin = 0.0
    vmax = max(float(off.max()) if k > 1 and off.count() else 1.0, 1.0)
    whole = bool(np.all(off.compressed() == np.round(off.compressed())))
    _draw_diagonal(ax, k)
    image = ax.imshow(off, cmap=_cmap("viridis"), vmin=vmin, vmax=vmax)
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
                        "–"
                        if not np.isfinite(d[i, j])
                        else f"{d[i, j]:.0f}"
                        if whole
                        else f"{d[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=size,
                        color="black" if bright else "white",
                    )
    _class_ticks(ax, names)
    ax.set_xlabel("class")
    ax.set_ylabel("class")
    ax.set_title(_plain(title), fontsize=10)
    bar = fig.colorbar(image, ax=ax, shrink=0.8, label=f"class distance ({vmin:g} to {vmax:.3g})")
    if whole:
        bar.locator = MaxNLocator(integer=True)
        bar.update_ticks()
    return fig


def flip_multiples(
    matrices: Sequence[Sequence[Sequence[int]]],
    titles: Sequence[str],
    names: Sequence[str],
    *,
    few: Sequence[bool] = (),
    xlabel: str = "adversarial prediction",
    ylabel: str = "true class",
) -> Figure:
    """Small multiples of row-normalised flip matrices on one colour scale.

    Each row is the share of the class's (clean-correct) samples sent to each
    class, so panels with different success rates stay comparable. Panels
    flagged in ``few`` (too few flips) get a grey title.
    """
    rates = [_row_rates(np.asarray(m, dtype=np.float64)) for m in matrices]
    vmax = max([float(_off_diagonal(r).max() or 0) for r in rates if r.shape[0] > 1] + [0.0])
    vmax = vmax or 1.0
    n = len(rates)
    cols = min(n, 3)  # three 10-class panels side by side stay readable at 900 px
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
        flagged = idx < len(few) and few[idx]
        ax.set_title(_plain(titles[idx]), fontsize=9, color=FEW_COLOR if flagged else "black")
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="share of true class")
    fig.supxlabel(xlabel, fontsize=9)
    fig.supylabel(ylabel, fontsize=9)
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
    *,
    xlabel: str = "sweep value",
    few: Sequence[bool] = (),
    few_label: str = "too few flips",
) -> Figure:
    """Symmetry ``s`` (with its bootstrap band) and the top-attractor share
    against the swept setting (``xlabel``); log x axis when the values span
    more than 10x. Points flagged in ``few`` (computed from too few flips)
    are drawn hollow and grey, outside the line and the band."""
    x = _nan(sweep)
    s, lo, hi, share = _nan(symmetry), _nan(ci_low), _nan(ci_high), _nan(top_share)
    bad = np.zeros(x.size, dtype=bool)
    bad[: len(few)] = np.asarray(few, dtype=bool)[: x.size]
    fig = _figure(9.0, 3.4)
    ax_s, ax_a = fig.subplots(1, 2)
    good = np.where(bad, math.nan, 1.0)
    ax_s.fill_between(
        x, lo * good, hi * good, alpha=0.25, color="C0", label=f"{level:.0%} bootstrap CI"
    )
    ax_s.plot(x, s * good, "o-", color="C0", label="s")
    ax_a.plot(x, share * good, "o-", color="C3")
    if bad.any():
        for ax, y in ((ax_s, s), (ax_a, share)):
            ax.plot(x[bad], y[bad], "o", mfc="none", color=FEW_COLOR, label=_plain(few_label))
    ax_s.set_ylabel("symmetry s")
    ax_s.legend(fontsize=8, loc="best")
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
        ax.set_xlabel(_plain(xlabel))
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
    _class_ticks(ax, names, which="x")
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    ax.set_ylim(0, max(1e-9, float(p.max()) * 1.1) if p.size else 1)
    ax.set_xlabel("predicted class")
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


def _rgb(img: np.ndarray) -> np.ndarray:
    """An image in ``[0, 1]`` as ``(H, W, 3)`` RGB (a 2-D one is grey)."""
    img = np.asarray(img, dtype=np.float64)
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img


def _strip(tiles: Sequence[tuple[np.ndarray, str | None]], slots: int) -> tuple[np.ndarray, int]:
    """``tiles`` side by side in one RGB image of ``slots`` equal slots (empty
    slots and the gaps between slots white), and the width of a slot."""
    images = [_rgb(img) for img, _ in tiles]
    h = max(im.shape[0] for im in images)
    w = max(im.shape[1] for im in images)
    gap = max(1, round(0.08 * w))
    strip = np.ones((h, slots * (w + gap) - gap, 3))
    for k, im in enumerate(images):
        x0 = k * (w + gap)
        strip[: im.shape[0], x0 : x0 + im.shape[1]] = im
    return strip, w + gap


def _image_grid(
    columns: Sequence[Sequence[tuple[np.ndarray, str | None]]],
    rows: Sequence[str],
    titles: Sequence[str],
    height: float,
    failed: Sequence[bool] = (),
) -> Figure:
    """One column per example, one row per panel (an image in ``[0, 1]``
    and its colormap), the row names on the left, the titles on top; at
    most :data:`PER_ROW` examples side by side (more wrap into further
    blocks of rows). Titles of ``failed`` examples are red.

    Each row of a block is one image (the tiles side by side with white
    gaps) in one axes, which draws several times faster than an axes per
    tile and looks the same."""
    n = len(columns)
    cols = max(min(n, PER_ROW), 1)
    blocks = max(math.ceil(n / cols), 1)
    fig = _figure(max(TILE * cols + 0.8, 3.0), height * blocks)
    axes = fig.subplots(len(rows) * blocks, 1, squeeze=False)[:, 0]
    for ax in axes:
        ax.set_axis_off()
    for block in range(blocks):
        members = list(range(block * cols, min(n, (block + 1) * cols)))
        if not members:
            continue
        for r, name in enumerate(rows):
            ax = axes[block * len(rows) + r]
            strip, slot = _strip([columns[i][r] for i in members], cols)
            ax.imshow(strip, vmin=0, vmax=1, interpolation="nearest", aspect="equal")
            ax.text(-0.01, 0.5, name, transform=ax.transAxes, ha="right", va="center",
                    fontsize=8)  # fmt: skip
            h, w = columns[members[0]][r][0].shape[:2]
            for k in range(len(members)):  # a frame per tile, as an axes had
                ax.add_patch(Rectangle((k * slot - 0.5, -0.5), w, h, fill=False, lw=0.8,
                                       edgecolor="black"))  # fmt: skip
            if r:
                continue
            for k, i in enumerate(members):
                bad = i < len(failed) and failed[i]
                colour = FAILED_COLOR if bad else "black"
                ax.text(k * slot + (slot - 1) / 2 - 0.5, -0.5, _plain(titles[i]), ha="center",
                        va="bottom", fontsize=7.5, color=colour)  # fmt: skip
    return fig


def gallery(
    x: np.ndarray,
    x_adv: np.ndarray,
    titles: Sequence[str],
    bounds: Sequence[float],
    failed: Sequence[bool] = (),
) -> Figure:
    """Columns of original, adversarial and amplified perturbation per example
    (titles of ``failed`` attacks in red).

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
    return _image_grid(columns, rows, titles, 3 * TILE + 0.6, failed)


def gallery_type_i(
    x: np.ndarray,
    transition: np.ndarray,
    x_adv: np.ndarray,
    titles: Sequence[str],
    bounds: Sequence[float],
    failed: Sequence[bool] = (),
) -> Figure:
    """Type I examples, one column each: the start image, the transition
    (halfway along the latent path) and the result, all ``(N, C, H, W)`` in
    ``bounds`` (see :func:`gallery`)."""
    lo, hi = float(bounds[0]), float(bounds[1])
    columns = [
        tuple(_to_image(image, lo, hi) for image in (x[i], transition[i], x_adv[i]))
        for i in range(len(x))
    ]
    rows = ("start", "transition", "result")
    return _image_grid(columns, rows, titles, 3 * TILE + 0.7, failed)

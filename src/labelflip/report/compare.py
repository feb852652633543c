"""Compare runs: does the same attack land differently on two models?

:func:`compare_runs` compares two or more run directories
(:func:`~labelflip.report.comparison.compare`: jobs matched by attack and
settings, each run against the first) and writes one self-contained HTML page,
``compare.html``, in the report's style and with its helpers
(:mod:`labelflip.report.plots`, :mod:`labelflip.report.page`: inline CSS,
PNGs as data URIs, no scripts, every string from the runs escaped), with
``compare.csv``, ``compare.json`` and the PNGs. :func:`format_table` is the
text table ``labelflip compare`` prints.

>>> compare_runs(["runs/std", "runs/robust"], "runs/std-vs-robust")   # doctest: +SKIP
PosixPath('runs/std-vs-robust/compare.html')
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from labelflip import analysis
from labelflip._files import write_bytes_atomic
from labelflip._text import slug
from labelflip.analysis import LandingTests
from labelflip.errors import os_error
from labelflip.report import plots
from labelflip.report.comparison import (
    CSV_COLUMNS,
    Comparison,
    JobSide,
    MatchedJob,
    Pair,
    RunSide,
    compare,
    csv_rows,
    to_json,
)
from labelflip.report.page import CSS, Png, _table, esc, img
from labelflip.report.schema import MIN_FLIPS
from labelflip.report.text import format_num, format_p, format_pct, missing
from labelflip.report.writer import _csv_bytes, _slug, png_bytes

PAGE = "compare.html"


# ---------------------------------------------------------------- numbers as text


def _ci(side: JobSide) -> str:
    """``0.42 [0.31, 0.55]``, marked as the report marks it when computed from
    fewer than :data:`~labelflip.report.schema.MIN_FLIPS` flips."""
    s, (lo, hi) = side.symmetry, side.symmetry_ci
    if missing(s):
        return "–"
    text = f"{s:.2f}" if missing(lo) else f"{s:.2f} [{lo:.2f}, {hi:.2f}]"
    few = side.n_flips < MIN_FLIPS
    return f"{text} ({side.n_flips} flips < {MIN_FLIPS})" if few else text


def _attractor(side: JobSide, names: Sequence[str]) -> str:
    if side.top_class is None:
        return "–"
    return f"{names[side.top_class]} ({format_pct(side.top_share)})"


def _verdict(tests: LandingTests, names: Sequence[str]) -> str:
    """``differ in 2/9 classes (3, 7)``, ``alike in 9 classes``, ``untested``."""
    if tests.n_tested == 0:
        return "untested"
    if tests.n_differ == 0:
        return f"no class differs ({tests.n_tested} tested)"
    which = ", ".join(names[i] for i in np.flatnonzero(tests.differs))
    return f"{tests.n_differ}/{tests.n_tested} classes differ ({which})"


def _agreement(pair: Pair) -> str:
    g = pair.agreement
    if g is None or g.n == 0:
        return "–"
    return f"{format_pct(g.rate)} of {g.n} (chance {format_pct(g.chance)})"


def format_table(c: Comparison) -> tuple[list[str], list[list[str]]]:
    """Header and text rows of the comparison table (the CLI prints it; the
    page shows it too): one row per matched job and run pair."""
    header = [
        "job",
        "runs",
        "success (clean)",
        "s [CI]",
        "top attractor",
        "landing test",
        "r (flip rates)",
        "same class (shared)",
    ]
    rows = []
    for job in c.jobs:
        for pair in job.pairs:
            a, b = job.sides[pair.a], job.sides[pair.b]
            assert a is not None and b is not None
            incomplete = "" if a.complete and b.complete else " (incomplete)"
            rows.append(
                [
                    job.label + incomplete,
                    f"{c.runs[pair.a].name} | {c.runs[pair.b].name}",
                    f"{format_pct(a.success_rate_clean)} | {format_pct(b.success_rate_clean)}",
                    f"{_ci(a)} | {_ci(b)}",
                    f"{_attractor(a, c.class_names)} | {_attractor(b, c.class_names)}",
                    _verdict(pair.tests, c.class_names),
                    format_num(pair.correlation.pearson),
                    _agreement(pair),
                ]
            )
    return header, rows


# ---------------------------------------------------------------- figures


def difference_heatmap(
    diff: np.ndarray, names: Sequence[str], title: str, marked: Sequence[bool]
) -> Figure:
    """Row-rate difference ``R_B - R_A`` in percentage points (blue: fewer under
    B, red: more), on a scale symmetric about 0 set by the off-diagonal cells;
    the diagonal (change in the attack's failure rate) grey, hatched, its
    value in italics. NaN rows (a run has no sample of the class) stay blank.
    Rows ``marked`` (the classes whose landings differ) get a ``*`` after
    their name."""
    d = 100 * np.asarray(diff, dtype=np.float64)
    k = d.shape[0]
    side = min(max(3.5, 0.5 * k + 2.0), 16.0)
    fig = plots._figure(side + 1.0, side)
    ax = fig.add_subplot()
    off = np.ma.masked_array(d, mask=np.eye(k, dtype=bool) | np.isnan(d))
    vmax = float(np.abs(off).max()) if off.count() else 0.0
    vmax = vmax if vmax > 0 else 1.0
    plots._draw_diagonal(ax, k)
    image = ax.imshow(
        off, cmap=plots._cmap("RdBu_r"), vmin=-vmax, vmax=vmax, interpolation="nearest"
    )
    ax.set_xlim(-0.5, k - 0.5)
    ax.set_ylim(k - 0.5, -0.5)
    if k <= plots.ANNOTATE_MAX:
        size = 8 if k <= 10 else 6
        for i, j in zip(*np.nonzero(~np.isnan(d)), strict=True):
            v = d[i, j]
            if i != j and abs(v) < 0.5:
                continue
            ax.text(
                j,
                i,
                f"{v:+.0f}",
                ha="center",
                va="center",
                fontsize=size,
                color="white" if i != j and abs(v) > 0.6 * vmax else "black",
                fontstyle="italic" if i == j else "normal",
            )
    plots._class_ticks(ax, [f"{n} *" if m else n for n, m in zip(names, marked, strict=True)])
    ax.set_xlabel("adversarial prediction")
    ax.set_ylabel("true class")
    ax.set_title(plots._plain(title), fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.8, label="difference (percentage points)")
    return fig


def landing_bars(shares: Sequence[np.ndarray], runs: Sequence[str], names: Sequence[str]) -> Figure:
    """Landing shares (successful clean-correct examples per class) of each
    run as grouped bars: the attractors side by side."""
    k = len(names)
    n = len(shares)
    fig = plots._figure(min(max(4.5, 0.5 * k * max(1, n / 2) + 1.5), 16.0), 3.2)
    ax = fig.add_subplot()
    width = 0.8 / max(n, 1)
    for r, (s, run) in enumerate(zip(shares, runs, strict=True)):
        x = np.arange(k) - 0.4 + width * (r + 0.5)
        ax.bar(x, s, width=width, color=f"C{r % 10}", label=plots._plain(run))
    if k <= plots.TICKS_MAX:
        labels = [plots._plain(name) for name in names]
        ax.set_xticks(range(k), labels, rotation=45, ha="right", rotation_mode="anchor")
    else:
        ax.set_xticks([])
    top = max([float(np.max(s)) for s in shares if len(s)] + [0.0])
    ax.set_ylim(0, max(top * 1.15, 1e-9))
    ax.set_ylabel("share of successful examples")
    ax.set_xlabel("adversarial class")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


@dataclass(frozen=True)
class JobFigures:
    matrices: Png
    shares: Png
    differences: tuple[Png, ...]  # one per pair


def figures(c: Comparison) -> list[JobFigures]:
    names = c.class_names
    out = []
    for n, job in enumerate(c.jobs):
        present = [s for s in job.sides if s is not None]
        titles = [c.runs[s.run].name + ("" if s.complete else " (incomplete)") for s in present]
        tag = f"{n:02d}_{_slug(present[0].job_id)}"
        fig = plots.flip_multiples([s.flip_matrix for s in present], titles, names)
        matrices = Png(f"compare_matrices__{tag}.png", png_bytes(fig))
        fig = landing_bars([s.shares for s in present], titles, names)
        shares = Png(f"compare_shares__{tag}.png", png_bytes(fig))
        diffs = []
        for pair in job.pairs:
            a, b = job.sides[pair.a], job.sides[pair.b]
            assert a is not None and b is not None
            diff = analysis.row_rates(b.flip_matrix) - analysis.row_rates(a.flip_matrix)
            empty = (a.flip_matrix.sum(axis=1) == 0) | (b.flip_matrix.sum(axis=1) == 0)
            diff[empty] = np.nan
            title = f"{job.label}: {c.runs[pair.b].name} − {c.runs[pair.a].name}"
            fig = difference_heatmap(diff, names, title, pair.tests.differs)
            diffs.append(Png(f"compare_difference__{tag}__{pair.b}.png", png_bytes(fig)))
        out.append(JobFigures(matrices, shares, tuple(diffs)))
    return out


# ---------------------------------------------------------------- page


def _method(c: Comparison) -> str:
    o = c.options
    correction = {
        "holm": "Holm's step-down correction (family-wise error rate)",
        "bh": "the Benjamini–Hochberg correction (false discovery rate)",
    }[o["correction"]]
    what = (
        "the whole row, the attack's failures (diagonal) included"
        if o["include_diagonal"]
        else "where the flipped examples land (the off-diagonal cells of the row; how many "
        "flip is not what is tested)"
    )
    return (
        "<h2>Method</h2><p>Jobs are matched by attack and settings. Every run's numbers use "
        "the samples its model classified correctly before the attack, as in the run's "
        f"report (s: symmetry, {o['level']:.0%} bootstrap interval of {o['n_boot']} "
        f"replicates, seed {o['seed']}; marked when computed from fewer than {MIN_FLIPS} "
        "off-diagonal flips). Each run is compared with the first, "
        f"<strong>{esc(c.runs[0].name)}</strong>.</p><ul>"
        f"<li><strong>Landing test</strong>, per true class: do the two runs' examples of "
        f"that class land alike? Compared: {esc(what)}. Pearson's chi-square test of "
        "homogeneity of the 2 × m table (m classes landed in by either run; "
        "<code>scipy.stats.chi2_contingency</code>, no continuity correction) when every "
        f"expected count is at least {o['min_expected']:g}, otherwise a permutation test "
        f"of the same statistic ({o['n_perm']} permutations of the run labels). The p-values "
        f"of the classes tested are adjusted with {correction}; a class differs when its "
        f"adjusted p ≤ {o['alpha']:g}. A class is untested when one run has no flips "
        "in it. The test takes the two runs' examples as independent samples; where both "
        "runs attacked the same images and these land alike image by image, it is "
        "conservative.</li>"
        "<li><strong>r (flip rates)</strong>: Pearson correlation of the off-diagonal flip "
        "rates (share of the true class sent to each other class), over the classes both "
        "runs have samples of (no p-value: the cells of a row are not independent).</li>"
        "<li><strong>Same class on shared samples</strong>: among the samples both runs "
        "attacked (same dataset index) that both models classified correctly and both "
        "attacks flipped, the share that landed in the same class under both, next to the "
        "share expected by chance if, within each true class, the two runs landed "
        "independently with their own landing shares (and Cohen's κ).</li></ul>"
    )


def _runs_table(c: Comparison) -> str:
    header = ["run", "directory", "dataset", "split", "model", "model sha256"]
    header += ["accuracy (attacked samples)"]
    header += ["samples", "jobs"]
    rows = []
    for r in c.runs:
        sha = r.model.get("sha256")
        acc = r.model.get("clean_accuracy")
        rows.append(
            [
                r.name,
                r.path,
                r.dataset,
                r.split,
                r.model.get("arch") or r.model.get("checkpoint"),
                sha[:16] + "…" if isinstance(sha, str) and len(sha) > 16 else sha,
                format_pct(acc) if isinstance(acc, (int, float)) else acc,
                r.n_samples,
                r.n_jobs,
            ]
        )
    return _table(header, rows, numeric=(6, 7, 8))


def _not_compared(c: Comparison) -> str:
    if not c.unmatched:
        return ""
    rows = [[c.runs[r].name, label, why] for r, label, why in c.unmatched]
    return "<h2>Not compared</h2>" + _table(["run", "job", "why"], rows)


def _side_rows(job: MatchedJob, c: Comparison) -> str:
    header = ["run", "job id", "records", "clean-correct", "success (clean)", "flips"]
    header += ["s [CI]", "Bowker p", "top attractor", "entropy"]
    rows = []
    for s in job.sides:
        if s is None:
            continue
        rows.append(
            [
                c.runs[s.run].name + ("" if s.complete else " (incomplete)"),
                s.job_id,
                s.n,
                s.n_clean_correct,
                format_pct(s.success_rate_clean),
                s.n_flips,
                _ci(s),
                format_p(s.bowker_p),
                _attractor(s, c.class_names),
                format_num(s.entropy),
            ]
        )
    return _table(header, rows, numeric=range(2, 10))


def _class_table(pair: Pair, c: Comparison) -> str:
    t = pair.tests
    a, b = c.runs[pair.a].name, c.runs[pair.b].name
    header = ["true class", f"flips {a}", f"flips {b}", "test", "statistic (df)", "p"]
    header += [f"adjusted p ({t.correction})", "differs"]
    rows = []
    for i, name in enumerate(c.class_names):
        tested = not missing(t.p_value[i])
        rows.append(
            [
                name,
                int(t.n_a[i]),
                int(t.n_b[i]),
                t.method[i],
                f"{t.statistic[i]:.3g} ({t.df[i]})" if tested else "–",
                format_p(t.p_value[i]),
                format_p(t.p_adjusted[i]),
                ("yes" if t.differs[i] else "no") if tested else "–",
            ]
        )
    return _table(header, rows, numeric=(1, 2, 4, 5, 6))


def _pair_section(job: MatchedJob, pair: Pair, figure: Png, c: Comparison) -> str:
    a, b = c.runs[pair.a].name, c.runs[pair.b].name
    t, r, g = pair.tests, pair.correlation, pair.agreement
    if g is None:
        shared = f"Same class on shared samples: {esc(pair.note)}."
    elif g.n == 0:
        shared = (
            f"{pair.n_shared} samples attacked by both runs; none was flipped by both "
            "attacks, so there is no landing to agree on."
        )
    else:
        shared = (
            f"{pair.n_shared} samples attacked by both runs; {g.n} of them classified "
            f"correctly and flipped under both. {g.n_same} ({format_pct(g.rate)}) landed in "
            f"the same class; chance level {format_pct(g.chance)}, κ = {format_num(g.kappa)}."
        )
    corr = (
        f"Flip rates: Pearson r = {format_num(r.pearson)}, Spearman ρ = "
        f"{format_num(r.spearman)} over {r.n_cells} off-diagonal cells."
    )
    verdict = (
        f"Landing test: {esc(_verdict(t, c.class_names))}; smallest adjusted p "
        f"{format_p(t.min_p_adjusted)} ({esc(t.correction)}, α = {t.alpha:g})."
    )
    caption = (
        f"Share of each true class sent to each class, {b} minus {a}, in percentage points "
        "(red: more under the second run, blue: fewer); grey hatched diagonal: change in "
        "the share the attack failed on (in italics); * after a class: its landings differ "
        "(adjusted p ≤ α); a blank row: a run has no clean-correct sample of that class."
    )
    return "".join(
        [
            f"<h4>{esc(b)} vs {esc(a)}</h4>",
            f"<p>{verdict}<br>{esc(corr)}<br>{esc(shared)}</p>",
            img(figure, f"flip-rate difference {b} minus {a}, {job.label}", caption),
            _class_table(pair, c),
        ]
    )


def _job_section(n: int, job: MatchedJob, figs: JobFigures, c: Comparison) -> str:
    settings = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(job.settings.items()))
    incomplete = any(s is not None and not s.complete for s in job.sides)
    badge = " <span class='badge'>incomplete</span>" if incomplete else ""
    parts = [
        f"<section class='job' id='job-{n}'>",
        f"<h3>{esc(job.label)}{badge}</h3>",
        f"<p class='note'>attack <code>{esc(job.attack)}</code>"
        f"{'; ' + esc(settings) if settings else ''}</p>",
        _side_rows(job, c),
        img(
            figs.matrices,
            f"flip matrices of {job.label}, side by side",
            "Row-normalised flip matrices (clean-correct samples), one colour scale: row = "
            "true class, column = adversarial prediction; grey hatched diagonal: attack "
            "failed.",
        ),
        img(
            figs.shares,
            f"landing shares of {job.label}",
            "Attractors: share of each run's successful clean-correct examples landing in "
            "each class.",
        ),
    ]
    for pair, fig in zip(job.pairs, figs.differences, strict=True):
        parts.append(_pair_section(job, pair, fig, c))
    parts.append("</section>")
    return "".join(parts)


def render(c: Comparison, figures: Sequence[JobFigures]) -> str:
    """The comparison page: self-contained HTML (inline CSS, PNGs as data URIs,
    no scripts); every string from the runs is escaped."""
    title = " vs ".join(r.name for r in c.runs)
    header, rows = format_table(c)
    summary = (
        "<h2>Summary</h2>"
        + _table(header, rows)
        + "<p class='note'>Each row: a run against the reference (first | second). "
        "success (clean), s and the top attractor over the samples each model classified "
        "correctly; landing test, r and same class as in the method above.</p>"
    )
    meta = (
        f"<dl class='meta'><dt>runs</dt><dd>{len(c.runs)}</dd><dt>classes</dt>"
        f"<dd>{len(c.class_names)}: {esc(', '.join(c.class_names))}</dd>"
        f"<dt>jobs compared</dt><dd>{len(c.jobs)}</dd>"
        f"<dt>comparison generated</dt><dd>{esc(c.generated)}</dd></dl>"
    )
    jobs = "".join(
        _job_section(n, j, f, c) for n, (j, f) in enumerate(zip(c.jobs, figures, strict=True))
    )
    body = "".join(
        [
            f"<h1>{esc(title)}</h1>",
            meta,
            "<h2>Runs</h2>",
            _runs_table(c),
            _method(c),
            summary,
            _not_compared(c),
            "<h2>Jobs</h2>",
            jobs,
        ]
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{esc(title)} — labelflip comparison</title><style>{CSS}</style></head>"
        f"<body>{body}</body></html>\n"
    )


# ---------------------------------------------------------------- files


def default_out(run_dirs: Sequence[str | os.PathLike]) -> Path:
    """``compare-A-vs-B`` beside the first run (the runs' directory names)."""
    paths = [Path(p).resolve() for p in run_dirs]
    return paths[0].parent / ("compare-" + "-vs-".join(slug(p.name) for p in paths))


def write_comparison(c: Comparison, out: str | os.PathLike) -> Path:
    """Write ``c`` into the folder ``out``: ``compare.html``, ``compare.csv``,
    ``compare.json`` and the PNGs, each atomically, the page last. Returns
    the page's path."""
    shown = figures(c)
    page = render(c, shown)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(f"cannot create comparison directory {out}", exc) from None
    for f in shown:
        for png in (f.matrices, f.shares, *f.differences):
            write_bytes_atomic(out / png.name, png.data)
    write_bytes_atomic(out / "compare.csv", _csv_bytes(CSV_COLUMNS, csv_rows(c)))
    text = json.dumps(to_json(c), indent=2, ensure_ascii=False, allow_nan=False)
    write_bytes_atomic(out / "compare.json", (text + "\n").encode("utf-8"))
    path = out / PAGE
    write_bytes_atomic(path, page.encode("utf-8"))
    return path


def compare_runs(
    run_dirs: Sequence[str | os.PathLike],
    out: str | os.PathLike | None = None,
    **options: Any,
) -> Path:
    """Compare ``run_dirs`` (:func:`compare`, with ``options``) and write the
    result into ``out`` (default :func:`default_out`) with
    :func:`write_comparison`. Returns the path of ``compare.html``."""
    c = compare(run_dirs, **options)
    return write_comparison(c, out if out is not None else default_out(run_dirs))


__all__ = [
    "CSV_COLUMNS",
    "Comparison",
    "JobSide",
    "MatchedJob",
    "Pair",
    "RunSide",
    "compare",
    "compare_runs",
    "csv_rows",
    "default_out",
    "format_table",
    "to_json",
    "write_comparison",
]

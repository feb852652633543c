"""The HTML report: one self-contained page (inline CSS, images as data URIs,
no scripts, no external resources; the only links are to the page's own
sections). Every string that comes from the run (class names, labels,
settings, meta, config) is escaped with :func:`html.escape`.

Layout: title and run facts, a table of contents, "what this run found"
(:mod:`labelflip.report.findings`), the summary table (each row links to its
job's section), the white-noise prior, label space, sweeps, the detector,
one section per job and, last, the run's config.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from labelflip.report.boundary import boundary_html
from labelflip.report.findings import findings
from labelflip.report.gallery import Shown
from labelflip.report.groups import within_group_html
from labelflip.report.kinds import detector_label, kind_of, table_notes
from labelflip.report.schema import MIN_FLIPS, Distance, JobSummary, RunSummary
from labelflip.report.summary import format_table, invalid_note
from labelflip.report.text import format_p, format_pct, missing

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1150px; padding: 0 1em; color: #222; background: #fff; line-height: 1.4; }
h1 { margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dl.meta dt { font-weight: 600; }
dl.meta dd { margin: 0; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; max-width: 100%; }
td.nw, span.nw { white-space: nowrap; }
td.flips { min-width: 10em; }
td.job { min-width: 8em; overflow-wrap: anywhere; }
table.summary { font-size: 0.8em; }
table.summary td, table.summary th { padding: 0.25em 0.35em; }
td.few, span.few, tr.few td { color: #8a8a8a; font-style: italic; }
nav.toc { background: #f7f7f7; border: 1px solid #ddd; padding: 0.5em 1em; margin: 1em 0; }
nav.toc ol { margin: 0.2em 0; padding-left: 1.5em; }
nav.toc ol.jobs { font-size: 0.9em; columns: 2 16em; }
section.findings ul { padding-left: 1.2em; }
section.findings li { margin: 0.3em 0; }
pre.config { background: #f7f7f7; border: 1px solid #ddd; padding: 0.5em; overflow-x: auto;
             font-size: 0.85em; }
a { color: #1f5fa8; }
.warn { background: #fff4e5; border-left: 4px solid #f0a020; padding: 0.5em 1em; }
.badge { font-size: 0.75em; padding: 0.1em 0.5em; border-radius: 0.6em; background: #f0a020;
         color: #fff; vertical-align: middle; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
figure { margin: 1em 0; }
figcaption, .note { font-size: 0.85em; color: #555; }
code { font-size: 0.9em; }
section.job { margin-bottom: 2.5em; }
.jobrow { display: flex; flex-wrap: wrap; gap: 0 1.5em; align-items: flex-start; }
.jobrow > * { min-width: 0; max-width: 100%; }
.jobrow figure { flex: 1 1 32em; }
"""


@dataclass(frozen=True)
class Png:
    """A rendered figure: its file name in the report folder and PNG bytes."""

    name: str
    data: bytes


def esc(value: object) -> str:
    """HTML-escaped text (``None`` as an en dash)."""
    return "–" if value is None else html.escape(str(value), quote=True)


def img(
    png: Png, alt: str, caption: str | None = None, data: Mapping[str, str] | None = None
) -> str:
    """A figure with the PNG embedded as a base64 data URI (``data``: the
    figure's ``data-*`` attributes)."""
    b64 = base64.b64encode(png.data).decode("ascii")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    attrs = "".join(f' data-{k}="{esc(v)}"' for k, v in (data or {}).items())
    return f'<figure{attrs}><img alt="{esc(alt)}" src="data:image/png;base64,{b64}">{cap}</figure>'


def _table(
    header: Sequence[str], rows: Sequence[Sequence[object]], numeric=(), few: Sequence[bool] = ()
) -> str:
    """A table of text cells (``numeric`` columns right-aligned); rows flagged
    in ``few`` (statistics from too few flips) greyed."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    flagged = list(few) + [False] * len(rows)
    body = "".join(
        ("<tr class='few'>" if flagged[k] else "<tr>")
        + "".join(
            f'<td class="num nw">{esc(c)}</td>' if i in numeric else f"<td>{esc(c)}</td>"
            for i, c in enumerate(r)
        )
        + "</tr>"
        for k, r in enumerate(rows)
    )
    return f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>'


def _header(summary: RunSummary) -> str:
    run = summary.run
    model = run.model
    sha = model.get("sha256")
    acc = model.get("clean_accuracy")
    test = run.test_accuracy
    trained_on = model.get("trained_on") or run.dataset
    items = [
        ("dataset", run.dataset),
        ("split", run.split),
        ("model", model.get("arch")),
        ("checkpoint", model.get("checkpoint")),
        ("model sha256", sha[:16] + "…" if isinstance(sha, str) and len(sha) > 16 else sha),
        (
            "accuracy on the attacked samples",
            f"{100 * acc:.2f}% (the {run.n_samples} samples below, before the attack)"
            if isinstance(acc, (int, float))
            else acc,
        ),
        (
            "checkpoint test accuracy",
            None
            if missing(test)
            else f"{100 * test:.2f}% ({trained_on} test split, recorded with the checkpoint)",
        ),
        ("output encoding", _encoding(run.encoding, run.num_classes)),
        ("oracle (independent judge)", _oracle_text(summary.oracle)),
        ("SVAE (Type I)", _svae_text(summary.svae)),
        ("samples", run.n_samples),
        ("labels" if run.multilabel else "classes", run.num_classes),
        ("run started", run.started),
        ("run finished", run.finished),
        ("report generated", run.generated),
    ]
    rows = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items if v is not None)
    title = run.name or "labelflip run"
    return f"<h1>{esc(title)}</h1><dl class='meta'>{rows}</dl>"


def job_anchor(job: JobSummary) -> str:
    """The id of a job's section (the job id is the runner's slug)."""
    return f"job-{job.job_id}"


def job_link(job: JobSummary, text: str | None = None) -> str:
    """A link to the job's section; a long label may break after ``_`` or ``=``."""
    href = quote(job_anchor(job), safe="")
    label = esc(job.label if text is None else text)
    return f"<a href='#{href}'>{label.replace('_', '_<wbr>').replace('=', '=<wbr>')}</a>"


def _toc(sections: Sequence[tuple[str, str]], jobs: Sequence[JobSummary]) -> str:
    """The table of contents: the page's sections and, under Jobs, each job."""
    items = []
    for anchor, title in sections:
        sub = ""
        if anchor == "jobs" and jobs:
            sub = "<ol class='jobs'>" + "".join(f"<li>{job_link(j)}</li>" for j in jobs) + "</ol>"
        items.append(f"<li><a href='#{anchor}'>{esc(title)}</a>{sub}</li>")
    return f"<nav class='toc'><strong>Contents</strong><ol>{''.join(items)}</ol></nav>"


def _findings(summary: RunSummary) -> str:
    found = findings(summary)
    if not found:
        return ""
    jobs = {j.job_id: j for j in summary.jobs}
    items = []
    for f in found:
        links = ", ".join(job_link(jobs[i]) for i in f.job_ids if i in jobs)
        if f.section:
            links = f"<a href='#{f.section}'>{esc(SECTION_TITLES[f.section])}</a>"
        see = f" <span class='note'>({links})</span>" if links else ""
        items.append(f"<li><strong>{esc(f.topic)}:</strong> {esc(f.text)}{see}</li>")
    return (
        "<h2>What this run found</h2>"
        f"<ul>{''.join(items)}</ul><p class='note'>Attractor and pairs: the untargeted jobs' "
        f"matrices added up. A statistic from fewer than {MIN_FLIPS} off-diagonal flips is not "
        "read (its s and interval collapse onto a few cells).</p>"
    )


def _config(text: str | None, name: str) -> str:
    if not text:
        return ""
    return (
        f"<h2>Run config</h2><p class='note'>The run's own <code>{esc(name)}</code>"
        f" (in the run directory).</p><pre class='config'>{esc(text)}</pre>"
    )


def _oracle_text(oracle: Mapping[str, Any] | None) -> str | None:
    if not oracle:
        return None
    acc = oracle.get("clean_accuracy")
    sha = str(oracle.get("sha256") or "")[:16]
    return (
        f"{oracle.get('arch')} ({oracle.get('checkpoint')}, sha256 {sha}…), clean accuracy "
        f"{format_pct(acc)}"
    )


def _svae_text(svae: Mapping[str, Any] | None) -> str | None:
    if not svae:
        return None
    return (
        f"{svae.get('arch', 'mlp')}, latent {svae.get('latent_dim')} ({svae.get('checkpoint')}); "
        f"f2 accuracy on the samples {format_pct(svae.get('f2_clean_accuracy'))}"
    )


def _encoding(enc: Mapping[str, Any] | None, k: int | None) -> str | None:
    """``one-hot``, ``ECOC, 16-bit codewords`` or ``multi-label, 10 labels``."""
    kind = (enc or {}).get("kind")
    if kind == "ecoc":
        codebook = enc.get("codebook") or [[]]  # type: ignore[union-attr]
        return f"ECOC, {len(codebook[0])}-bit codewords (decision: argmax tanh(z)·c)"
    if kind == "multilabel":
        return f"multi-label, {k} labels (decision: label vector, z > 0)"
    return "one-hot" if kind == "onehot" else None


def _incomplete(summary: RunSummary) -> str:
    pending = [j for j in summary.jobs if not j.complete]
    invalid = invalid_note(summary)  # records with non-finite logits, left out of every number
    warn = f"<div class='warn'>{esc(invalid)}</div>" if invalid else ""
    if not pending:
        return warn
    items = "".join(
        f"<li>{esc(j.label)} (<code>{esc(j.job_id)}</code>): {j.n} records so far</li>"
        for j in pending
    )
    return (
        f"<div class='warn'><strong>{len(pending)} job(s) incomplete</strong> — the numbers "
        f"below cover only the records written so far.<ul>{items}</ul></div>{warn}"
    )


def _summary_table(summary: RunSummary) -> str:
    header, rows = format_table(summary)
    level = summary.jobs[0].symmetry_level if summary.jobs else 0.95
    notes = "".join(f" {n}" for n in table_notes(summary.jobs))
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for job, row in zip(summary.jobs, rows, strict=True):
        few = " few" if job.few_flips and job.n else ""
        cells = [f"<td class='job'>{job_link(job, row[0])}</td>"]
        cells += [f"<td class='num nw'>{esc(c)}</td>" for c in row[1:8]]
        s_text, _, flag = row[8].partition(" (")
        value, _, interval = s_text.partition(" ")
        parts = [value, interval] + ([f"({flag}"] if flag else [])
        spans = " ".join(f"<span class='nw'>{esc(p)}</span>" for p in parts if p)
        cells.append(f"<td class='num{few}'>{spans}</td>")
        cells.append(f"<td class='num nw{few}'>{esc(row[9])}</td>")
        cells.append(f"<td class='nw'>{esc(row[10])}</td>")
        flips = row[11].split(", ")
        cells.append(
            "<td class='flips'>"
            + ", ".join(f"<span class='nw'>{esc(f)}</span>" for f in flips)
            + "</td>"
        )
        body.append(f"<tr>{''.join(cells)}</tr>")
    rows_html = "".join(body)
    table = f"<div class='scroll'><table class='summary'><tr>{head}</tr>{rows_html}</table></div>"
    note = (
        "<p class='note'>Success over all samples and over the samples classified correctly "
        "before the attack (clean). Median norms over successful clean samples. "
        f"s: symmetry of the clean flip matrix (1 symmetric, 0 one-way) with its {level:.0%} "
        "bootstrap interval; Bowker p: test of H0 p<sub>ij</sub> = p<sub>ji</sub>. "
        "Top attractor: class receiving the largest share of successful clean examples. "
        f"Grey, marked “(n flips &lt; {MIN_FLIPS})”: s, its interval and the Bowker test come "
        f"from fewer than {MIN_FLIPS} off-diagonal flips and say little. Each job links to its "
        f"section.{html.escape(notes, quote=False)}</p>"
    )
    return f"<h2>Summary</h2>{table}{note}"


def _white_noise(summary: RunSummary, figure: Png | None) -> str:
    noise = summary.white_noise
    left_out = summary.run.white_noise_invalid or 0  # images with non-finite logits
    if noise is None:
        why = (
            f"All {left_out} white-noise images had non-finite logits: no prior."
            if left_out
            else "The run recorded no white-noise predictions."
        )
        return f"<h2>White-noise prior</h2><p class='note'>{why}</p>"
    top = noise.top_name
    share = noise.top_share
    ent = noise.entropy
    text = (
        f"<p>Most frequent class on noise: <strong>{esc(top)}</strong> "
        f"({100 * share:.1f}%); normalised entropy "
        f"{'–' if missing(ent) else f'{ent:.3f}'}. Each job reports the Spearman correlation "
        "of its landing shares with this distribution."
        f"{f' {left_out} images with non-finite logits are left out.' if left_out else ''}</p>"
    )
    body = img(figure, "white-noise prediction distribution") if figure else ""
    return f"<h2>White-noise prior</h2>{text}{body}"


def _groups(summary: RunSummary, figures: Mapping[str, tuple[Png | None, Png | None]]) -> str:
    if not summary.groups:
        return ""
    parts = ["<h2>Sweeps</h2>"]
    for g in summary.groups:
        multiples, lines = figures.get(g.group, (None, None))
        parts.append(f"<h3>{esc(g.group)}</h3>")
        if multiples:
            parts.append(
                img(
                    multiples,
                    f"flip matrices of sweep {g.group}",
                    "Row-normalised flip matrices (clean samples), ordered by sweep value; "
                    "grey hatched diagonal: attack failed.",
                )
            )
        if lines:
            parts.append(img(lines, f"symmetry and attractor share against sweep value, {g.group}"))
    return "".join(parts)


DISTANCE_NOTES = {
    "perceptual": "Hausdorff distance between the classes' feature sets, image distance "
    "1 − cos of the features (LabelFool §III-A)",
    "semantic": "edges between the classes in a class hierarchy (our own grouping)",
    "confusion": "1 − symmetrised clean confusion rate of the attacked samples",
}


def _distance_info(d: Distance) -> str:
    info = d.info or {}
    if d.name == "perceptual":
        parts = [
            f"layer {info.get('layer', '–')}",
            f"{info.get('images', '–')} {info.get('split', '')} images".replace("  ", " "),
        ]
        if info.get("per_class") is not None:
            parts.append(f"at most {info['per_class']} per class")
        if "seconds_features" in info and "seconds_distances" in info:
            parts.append(
                f"{info['seconds_features']:.1f} s features + "
                f"{info['seconds_distances']:.1f} s distances"
            )
        return ", ".join(parts)
    if d.name == "semantic":
        return f"hierarchy {info.get('hierarchy', info.get('source', '–'))}"
    if d.name == "confusion":
        return f"{info.get('samples', '–')} samples"
    return ""


def _fmt_sq(x: float) -> str:
    return "–" if missing(x) or x <= 0 else f"{x:.3g} (ln {math.log(x):.2f})"


def _label_space(summary: RunSummary, figures: Mapping[str, Png]) -> str:
    distances = summary.distances
    jobs = [j for j in summary.jobs if j.n > 0]
    if not distances and not any(j.label_space.strategy for j in jobs) and not summary.boundaries:
        return ""
    names = [d.name for d in distances]
    parts = [
        "<h2>Label space</h2>",
        "<p>Where in label space do the flips land? For each job: the target strategy "
        "(untargeted: none), the attack rate (clean-correct samples whose label flipped), the "
        "mean class distance between true and adversarial class over those flips under each "
        "distance (smaller = a nearer, less noticeable flip) and LabelFool's image-space "
        "measure ‖Δ‖ = mean squared perturbation per pixel over the flips. Grey rows: fewer "
        f"than {MIN_FLIPS} off-diagonal flips, too few to read.</p>",
    ]
    header = ["job", "target", "attack rate", "flips", *[f"mean {n} distance" for n in names]]
    header.append("‖Δ‖")
    rows = []
    for j in jobs:
        ls = j.label_space
        strategy = ls.strategy or "untargeted"
        if ls.distance_used:
            strategy = f"{strategy} ({ls.distance_used})"
        rows.append(
            [
                j.label,
                strategy,
                format_pct(ls.attack_rate),
                ls.n_flips,
                *[_fmt_distance(ls.flip_distance.get(n)) for n in names],
                _fmt_sq(ls.mean_sq_perturbation),
            ]
        )
    few = [j.few_flips for j in jobs]
    parts.append(_table(header, rows, numeric=range(2, len(header)), few=few))
    untargeted = [j for j in jobs if j.label_space.flip_correlation]
    if untargeted and names:
        parts.append(
            "<h3>Do untargeted attacks land in near classes?</h3><p class='note'>Spearman "
            "correlation between the symmetrised flip rates of the clean flip matrix and each "
            "class distance (pairs above the diagonal). Negative: the nearer two classes, the "
            "more examples flip between them.</p>"
        )
        crow = []
        for j in untargeted:
            cells = []
            for n in names:
                c = j.label_space.flip_correlation.get(n)
                if c is None or missing(c.rho):
                    cells.append("–")
                else:
                    cells.append(f"{c.rho:.2f} (p = {format_p(c.p_value)})")
            crow.append([j.label, *cells])
        few = [j.few_flips for j in untargeted]
        parts.append(_table(["job", *[f"rho vs {n}" for n in names]], crow, few=few))
    parts.append(within_group_html(jobs, _table))
    for d in distances:
        parts.append(f"<h3>{esc(d.name)} distance</h3>")
        note = DISTANCE_NOTES.get(d.name, "")
        info = _distance_info(d)
        parts.append(f"<p class='note'>{esc(note)}{'; ' if note and info else ''}{esc(info)}.</p>")
        if d.name in figures:
            parts.append(img(figures[d.name], f"{d.name} class distance matrix"))
    parts.append(boundary_html(summary, figures, _table, img))
    return "".join(parts)


def _fmt_distance(x: float | None) -> str:
    return "–" if missing(x) else f"{x:.4f}"


def _job(
    job: JobSummary,
    heatmap: Png | None,
    gallery: Png | None,
    note: str,
    names: Sequence[str],
    shown: Shown | None = None,
) -> str:
    kind = kind_of(job)
    badge = "" if job.complete else " <span class='badge'>incomplete</span>"
    parts = [
        f"<section class='job' id='{esc(job_anchor(job))}'>",
        f"<h3>{esc(job.label)} <code>{esc(job.job_id)}</code>{badge}</h3>",
        "<div class='jobrow'>",  # the table beside the matrix when the page is wide
        _table(("", ""), kind.table_rows(job, names)),
    ]
    if heatmap:
        what = kind.axes(job).what
        caption = kind.caption(job)
        if job.few_flips and job.n:
            caption += (
                f" Only {job.n_off_diagonal} off-diagonal flips (fewer than {MIN_FLIPS}): "
                "s and the Bowker test say little here."
            )
        parts.append(img(heatmap, f"{what} of {job.label}", caption))
    else:
        parts.append("<p class='note'>No records yet.</p>")
    parts.append("</div>")
    if gallery:
        caption, data = _gallery_caption(kind.gallery_caption, shown)
        parts.append(img(gallery, f"examples of {job.label}", caption, data))
    elif note:
        parts.append(f"<p class='note'>{esc(note)}</p>")
    parts.append("</section>")
    return "".join(parts)


def _gallery_caption(base: str, shown: Shown | None) -> tuple[str, dict[str, str]]:
    """The gallery's caption (how its examples were chosen) and data attributes
    (true classes, landing classes, which are successes)."""
    if shown is None:
        return base, {}
    n, good = len(shown.good), sum(shown.good)
    ok = [i for i, g in enumerate(shown.good) if g]
    true = {shown.true[i] for i in ok}
    landed = {shown.landed[i] for i in ok}
    text = f"{base} {n} of the first batch's {shown.candidates} samples"
    if good:
        text += (
            f": {good} successful, spread over {len(true)} true and {len(landed)} landing classes"
        )
    text += f"; {n - good} without success (red titles) fill the rest." if good < n else "."
    data = {
        "true": " ".join(map(str, shown.true)),
        "landed": " ".join(map(str, shown.landed)),
        "good": " ".join(str(int(g)) for g in shown.good),
    }
    return text, data


def _detector(summary: RunSummary) -> str:
    """The feature-squeezing table (Tang et al., Table I): detection rates of
    the clean samples and of each job's successful examples."""
    d = summary.detect
    if not d:
        return ""
    fixed = d.thresholds
    header = ["examples", "n", f"detected at ζ = {d.threshold:.4g} (clean {d.fpr:.0%})"]
    header += [f"ζ = {t:g}" for t in fixed]
    rows = [["clean samples", d.clean.n, format_pct(d.clean.rate)]]
    rows[0] += [format_pct(r) for r in d.clean.rates]
    for j in summary.jobs:
        det = j.detect
        if not det:
            continue
        rows.append(
            [detector_label(j), det.n, format_pct(det.rate)] + [format_pct(r) for r in det.rates]
        )
    note = (
        "<p class='note'>Feature squeezing (Xu et al. 2018; Tang et al. §IV-C): an input is "
        f"flagged when the {d.distance.upper()} distance between the model's softmax on it "
        f"and on its squeezed versions ({', '.join(d.squeezers)}; the largest distance "
        "counts) exceeds ζ. The first threshold flags the given share of the clean samples; "
        "the others are fixed. Type II rows count the successful examples of clean-correct "
        "samples; Type I rows the examples the judge calls Type I.</p>"
    )
    table = _table(header, rows, numeric=range(1, 9))
    return f"<h2>Detector: feature squeezing</h2>{table}{note}"


SECTION_TITLES = {
    "findings": "What this run found",
    "summary": "Summary",
    "white-noise": "White-noise prior",
    "label-space": "Label space",
    "sweeps": "Sweeps",
    "detector": "Detector: feature squeezing",
    "jobs": "Jobs",
    "config": "Run config",
}


def render(
    summary: RunSummary,
    *,
    heatmaps: Mapping[str, Png],
    galleries: Mapping[str, Png],
    gallery_notes: Mapping[str, str],
    groups: Mapping[str, tuple[Png | None, Png | None]],
    white_noise: Png | None,
    distances: Mapping[str, Png] | None = None,
    shown: Mapping[str, Shown] | None = None,
    config: tuple[str, str] | None = None,
) -> str:
    """The whole report page for ``summary`` (from :func:`summarize_run`) and its
    figures (keyed by job id, or group name for ``groups``: (small multiples,
    line plot); ``distances`` by distance name); ``shown``: what each job's
    gallery shows; ``config``: the run's config file name and text."""
    names = summary.run.class_names
    jobs = "".join(
        _job(
            j,
            heatmaps.get(j.job_id),
            galleries.get(j.job_id),
            gallery_notes.get(j.job_id, ""),
            names,
            (shown or {}).get(j.job_id),
        )
        for j in summary.jobs
    )
    title = summary.run.name or "labelflip run"
    sections = {
        "findings": _findings(summary),
        "summary": _summary_table(summary),
        "white-noise": _white_noise(summary, white_noise),
        "label-space": _label_space(summary, distances or {}),
        "sweeps": _groups(summary, groups),
        "detector": _detector(summary),
        "jobs": ("<h2>Jobs</h2>" if summary.jobs else "<h2>Jobs</h2><p>The run has no jobs.</p>")
        + jobs,
        "config": _config(config[1], config[0]) if config else "",
    }
    present = {a: h for a, h in sections.items() if h}
    body = "".join(
        [
            _header(summary),
            _toc([(a, SECTION_TITLES[a]) for a in present], summary.jobs),
            _incomplete(summary),
            *(f"<section id='{a}' class='{a}'>{h}</section>" for a, h in present.items()),
        ]
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{esc(title)} — labelflip report</title><style>{CSS}</style></head>"
        f"<body>{body}</body></html>\n"
    )

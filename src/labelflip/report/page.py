"""The HTML report: one self-contained page (inline CSS, images as data URIs,
no scripts, no external resources). Every string that comes from the run
(class names, labels, settings, meta) is escaped with :func:`html.escape`.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from labelflip.report.kinds import detector_label, kind_of, table_notes
from labelflip.report.schema import Distance, JobSummary, RunSummary
from labelflip.report.summary import format_table
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
.scroll { overflow-x: auto; }
.warn { background: #fff4e5; border-left: 4px solid #f0a020; padding: 0.5em 1em; }
.badge { font-size: 0.75em; padding: 0.1em 0.5em; border-radius: 0.6em; background: #f0a020;
         color: #fff; vertical-align: middle; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
figure { margin: 1em 0; }
figcaption, .note { font-size: 0.85em; color: #555; }
code { font-size: 0.9em; }
section.job { margin-bottom: 2.5em; }
"""


@dataclass(frozen=True)
class Png:
    """A rendered figure: its file name in the report folder and PNG bytes."""

    name: str
    data: bytes


def esc(value: object) -> str:
    """HTML-escaped text (``None`` as an en dash)."""
    return "–" if value is None else html.escape(str(value), quote=True)


def img(png: Png, alt: str, caption: str | None = None) -> str:
    """A figure with the PNG embedded as a base64 data URI."""
    data = base64.b64encode(png.data).decode("ascii")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{data}">{cap}</figure>'


def _table(header: Sequence[str], rows: Sequence[Sequence[object]], numeric=()) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{esc(c)}</td>' if i in numeric else f"<td>{esc(c)}</td>"
            for i, c in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    return f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>'


def _header(summary: RunSummary) -> str:
    run = summary.run
    model = run.model
    sha = model.get("sha256")
    acc = model.get("clean_accuracy")
    items = [
        ("dataset", run.dataset),
        ("split", run.split),
        ("model", model.get("arch")),
        ("checkpoint", model.get("checkpoint")),
        ("model sha256", sha[:16] + "…" if isinstance(sha, str) and len(sha) > 16 else sha),
        ("model clean accuracy", f"{100 * acc:.2f}%" if isinstance(acc, (int, float)) else acc),
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
    if not pending:
        return ""
    items = "".join(
        f"<li>{esc(j.label)} (<code>{esc(j.job_id)}</code>): {j.n} records so far</li>"
        for j in pending
    )
    return (
        f"<div class='warn'><strong>{len(pending)} job(s) incomplete</strong> — the numbers "
        f"below cover only the records written so far.<ul>{items}</ul></div>"
    )


def _summary_table(summary: RunSummary) -> str:
    header, rows = format_table(summary)
    level = summary.jobs[0].symmetry_level if summary.jobs else 0.95
    notes = "".join(f" {n}" for n in table_notes(summary.jobs))
    note = (
        "<p class='note'>Success over all samples and over the samples classified correctly "
        "before the attack (clean). Median norms over successful clean samples. "
        f"s: symmetry of the clean flip matrix (1 symmetric, 0 one-way) with its {level:.0%} "
        "bootstrap interval; Bowker p: test of H0 p<sub>ij</sub> = p<sub>ji</sub>. "
        "Top attractor: class receiving the largest share of successful clean examples."
        f"{html.escape(notes, quote=False)}</p>"
    )
    return f"<h2>Summary</h2>{_table(header, rows, numeric=range(1, 10))}{note}"


def _white_noise(summary: RunSummary, figure: Png | None) -> str:
    noise = summary.white_noise
    if noise is None:
        return (
            "<h2>White-noise prior</h2>"
            "<p class='note'>The run recorded no white-noise predictions.</p>"
        )
    top = noise.top_name
    share = noise.top_share
    ent = noise.entropy
    text = (
        f"<p>Most frequent class on noise: <strong>{esc(top)}</strong> "
        f"({100 * share:.1f}%); normalised entropy "
        f"{'–' if missing(ent) else f'{ent:.3f}'}. Each job reports the Spearman correlation "
        "of its landing shares with this distribution.</p>"
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
    if not distances and not any(j.label_space.strategy for j in jobs):
        return ""
    names = [d.name for d in distances]
    parts = [
        "<h2>Label space</h2>",
        "<p>Where in label space do the flips land? For each job: the target strategy "
        "(untargeted: none), the attack rate (clean-correct samples whose label flipped), the "
        "mean class distance between true and adversarial class over those flips under each "
        "distance (smaller = a nearer, less noticeable flip) and LabelFool's image-space "
        "measure ‖Δ‖ = mean squared perturbation per pixel over the flips.</p>",
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
    parts.append(_table(header, rows, numeric=range(2, len(header))))
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
        parts.append(_table(["job", *[f"rho vs {n}" for n in names]], crow))
    for d in distances:
        parts.append(f"<h3>{esc(d.name)} distance</h3>")
        note = DISTANCE_NOTES.get(d.name, "")
        info = _distance_info(d)
        parts.append(f"<p class='note'>{esc(note)}{'; ' if note and info else ''}{esc(info)}.</p>")
        if d.name in figures:
            parts.append(img(figures[d.name], f"{d.name} class distance matrix"))
    return "".join(parts)


def _fmt_distance(x: float | None) -> str:
    return "–" if missing(x) else f"{x:.4f}"


def _job(
    job: JobSummary,
    heatmap: Png | None,
    gallery: Png | None,
    note: str,
    names: Sequence[str],
) -> str:
    kind = kind_of(job)
    badge = "" if job.complete else " <span class='badge'>incomplete</span>"
    parts = [
        f"<section class='job' id='job-{esc(job.job_id)}'>",
        f"<h3>{esc(job.label)} <code>{esc(job.job_id)}</code>{badge}</h3>",
        _table(("", ""), kind.table_rows(job, names)),
    ]
    if heatmap:
        what = kind.axes(job).what
        parts.append(img(heatmap, f"{what} of {job.label}", kind.caption(job)))
    else:
        parts.append("<p class='note'>No records yet.</p>")
    if gallery:
        parts.append(img(gallery, f"examples of {job.label}", kind.gallery_caption))
    elif note:
        parts.append(f"<p class='note'>{esc(note)}</p>")
    parts.append("</section>")
    return "".join(parts)


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
    return f"<h2>Detector: feature squeezing</h2>{_table(header, rows, numeric=range(1, 9))}{note}"


def render(
    summary: RunSummary,
    *,
    heatmaps: Mapping[str, Png],
    galleries: Mapping[str, Png],
    gallery_notes: Mapping[str, str],
    groups: Mapping[str, tuple[Png | None, Png | None]],
    white_noise: Png | None,
    distances: Mapping[str, Png] | None = None,
) -> str:
    """The whole report page for ``summary`` (from :func:`summarize_run`) and its
    figures (keyed by job id, or group name for ``groups``: (small multiples,
    line plot); ``distances`` by distance name)."""
    names = summary.run.class_names
    jobs = "".join(
        _job(
            j,
            heatmaps.get(j.job_id),
            galleries.get(j.job_id),
            gallery_notes.get(j.job_id, ""),
            names,
        )
        for j in summary.jobs
    )
    title = summary.run.name or "labelflip run"
    body = "".join(
        [
            _header(summary),
            _incomplete(summary),
            _summary_table(summary),
            _white_noise(summary, white_noise),
            _label_space(summary, distances or {}),
            _groups(summary, groups),
            _detector(summary),
            "<h2>Jobs</h2>" if summary.jobs else "<h2>Jobs</h2><p>The run has no jobs.</p>",
            jobs,
        ]
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{esc(title)} — labelflip report</title><style>{CSS}</style></head>"
        f"<body>{body}</body></html>\n"
    )

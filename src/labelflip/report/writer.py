"""Write ``RUNDIR/report/``: the HTML page, its PNGs, ``summary.json``,
``jobs.csv`` and one ``flip_matrix__<job_id>.csv`` per job.

Every file is written under a temporary name and renamed into place
(``os.replace``), ``report.html`` last, so a reader never sees a half-written
file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from labelflip._text import label_set_name
from labelflip.errors import LabelflipError, os_error
from labelflip.report import plots
from labelflip.report.page import Png, render
from labelflip.report.summary import CSV_COLUMNS, csv_rows, jsonable, summarize
from labelflip.store import RunStore

REPORT_DIR = "report"
GALLERY_FILE = "gallery.npz"
GALLERY_DIR = "gallery"  # the runner's per-array .npy files before bundling
MAX_EXAMPLES = 6


def _slug(text: str) -> str:
    """``text`` fit for a file name (characters outside ``[A-Za-z0-9._-]`` as ``_``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text) or "_"


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise os_error(f"cannot write {path}", exc) from None
    finally:
        tmp.unlink(missing_ok=True)


def _csv_bytes(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in r] for r in rows])
    return buf.getvalue().encode("utf-8")


def _flip_csv(job: Mapping[str, Any], names: Sequence[str]) -> bytes:
    """The clean-correct flip matrix with class names (rows: true, columns:
    adversarial); for a multi-label job the label-swap matrix (rows: label
    switched off, columns: label switched on); for a Type I job the
    label-stay matrix (rows: original class, columns: the class the judge sees)."""
    rows = [[name, *counts] for name, counts in zip(names, job["flip_matrix"], strict=True)]
    corner = "switched off \\ switched on" if job.get("multilabel") else "true \\ adversarial"
    if job.get("type_i"):
        corner = f"original \\ seen by {job['type_i']['judge']} (model kept the original)"
    return _csv_bytes([corner, *names], rows)


# ---------------------------------------------------------------- gallery


def _seen(job: Mapping[str, Any], rec: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """For a Type I job, the class its judge sees in each example (the
    oracle's, else f2's); ``None`` for other jobs."""
    ti = job.get("type_i")
    if not ti:
        return None
    return rec["oracle_pred"] if ti["judge"] == "oracle" else rec["attacker_pred"]


def _pick_examples(
    positions: np.ndarray,
    rec: Mapping[str, np.ndarray],
    limit: int,
    seen: np.ndarray | None = None,
) -> list[tuple[int, int]]:
    """Up to ``limit`` (gallery index, record row) pairs, successful clean-correct
    first (for a Type I job, ``seen`` given: the judge's Type I examples first)."""
    row_of = {int(s): i for i, s in enumerate(rec["sample"])}
    pairs = [(g, row_of[int(p)]) for g, p in enumerate(positions) if int(p) in row_of]
    if seen is not None:
        good = (rec["adv_pred"] == rec["true"]) & (seen != rec["true"])
    else:
        good = rec["success"].astype(bool)
    good = good & (rec["clean_pred"] == rec["true"])
    ordered = [p for p in pairs if good[p[1]]] + [p for p in pairs if not good[p[1]]]
    return ordered[:limit]


def _job_adversarials(
    gallery: Mapping[str, np.ndarray], store: RunStore, job_id: str, idx: list[int]
) -> np.ndarray | None:
    """The job's adversarial examples at gallery indices ``idx``: from ``gallery.npz``,
    else from the store's saved adversarial examples, else None."""
    key = f"adv__{job_id}"
    if key in gallery:
        return np.asarray(gallery[key])[idx]
    try:
        return store.adversarials(job_id, np.asarray(gallery["positions"])[idx])
    except LabelflipError:
        return None


def _gallery_png(
    gallery: Mapping[str, np.ndarray] | None,
    store: RunStore,
    job: Mapping[str, Any],
    rec: Mapping[str, np.ndarray],
    names: Sequence[str],
    bounds: Sequence[float],
    limit: int,
) -> tuple[Png | None, str]:
    """The job's gallery figure, or None and the reason there is none."""
    if gallery is None:
        return None, f"No {GALLERY_FILE} (or {GALLERY_DIR}/) in the run directory."
    seen = _seen(job, rec)
    picks = _pick_examples(np.asarray(gallery["positions"]), rec, limit, seen)
    if not picks:
        return None, "No gallery examples recorded for this job yet."
    idx = [g for g, _ in picks]
    x = np.asarray(gallery["x"])[idx]
    x_adv = _job_adversarials(gallery, store, job["job_id"], idx)
    if x_adv is None:
        return None, "No adversarial examples saved for this job."
    if x_adv.shape != x.shape:
        return None, f"Gallery shapes differ: originals {x.shape}, adversarial {x_adv.shape}."
    titles = []
    multilabel = bool(job.get("multilabel"))

    def name(i: int) -> str:
        return label_set_name(i, names) if multilabel else str(names[i])

    if seen is not None:
        return _type_i_gallery(gallery, job, rec, picks, x, x_adv, names, bounds)
    for _, row in picks:
        t, a = int(rec["true"][row]), int(rec["adv_pred"][row])
        failed = "" if rec["success"][row] else " (failed)"
        titles.append(f"true: {name(t)}\nadv: {name(a)}{failed}")
    data = plots.gallery(x, x_adv, titles, bounds)
    return Png(f"gallery__{_slug(job['job_id'])}.png", data), ""


def _type_i_gallery(
    gallery: Mapping[str, np.ndarray],
    job: Mapping[str, Any],
    rec: Mapping[str, np.ndarray],
    picks: list[tuple[int, int]],
    x: np.ndarray,
    x_adv: np.ndarray,
    names: Sequence[str],
    bounds: Sequence[float],
) -> tuple[Png | None, str]:
    """Start → transition → result for a Type I job; titles: the original
    class, the model's label of the result and what the judges see."""
    key = f"transition__{job['job_id']}"
    if key not in gallery:
        return None, "No transition images saved for this job."
    idx = [g for g, _ in picks]
    transition = np.asarray(gallery[key])[idx]
    oracle = job["type_i"]["judge"] == "oracle"
    titles = []
    for _, row in picks:
        t, a = int(rec["true"][row]), int(rec["adv_pred"][row])
        judged = f"f2: {names[int(rec['attacker_pred'][row])]}"
        if oracle:
            judged = f"oracle: {names[int(rec['oracle_pred'][row])]}, {judged}"
        ok = a == t and int(_seen(job, rec)[row]) != t  # type: ignore[index]
        titles.append(f"was {names[t]}, model: {names[a]}\n{judged}{'' if ok else ' (not Type I)'}")
    data = plots.gallery_type_i(x, transition, x_adv, titles, bounds)
    return Png(f"gallery__{_slug(job['job_id'])}.png", data), ""


def _load_gallery(run_dir: Path) -> dict[str, np.ndarray] | None:
    """``gallery.npz``, else the runner's ``gallery/*.npy`` (a run still going or
    interrupted before bundling them), else None."""
    path = run_dir / GALLERY_FILE
    folder = run_dir / GALLERY_DIR
    try:
        if path.is_file():
            with np.load(path, allow_pickle=False) as z:
                gallery = {k: z[k] for k in z.files}
        elif (folder / "x.npy").is_file():
            gallery = {f.stem: np.load(f, allow_pickle=False) for f in folder.glob("*.npy")}
        else:
            return None
    except (OSError, ValueError) as exc:
        raise LabelflipError(f"cannot read the gallery of {run_dir}: {exc}") from None
    missing = {"positions", "x"} - set(gallery)
    if missing:
        raise LabelflipError(f"gallery of {run_dir} lacks array(s) {', '.join(sorted(missing))}")
    return gallery


# ---------------------------------------------------------------- figures


def _group_figures(
    summary: Mapping[str, Any], names: Sequence[str]
) -> dict[str, tuple[Png | None, Png | None]]:
    """Per sweep group: small multiples of its jobs' flip matrices and, when at
    least two jobs have a sweep value, the line plot of s and attractor share."""
    jobs = {j["job_id"]: j for j in summary["jobs"]}
    out = {}
    for g in summary["groups"]:
        members = [jobs[i] for i in g["job_ids"] if jobs[i]["n"] > 0]
        slug = _slug(g["group"])
        multiples = lines = None
        if members:
            titles = [
                (j["label"] if j["complete"] else f"{j['label']} (incomplete)") for j in members
            ]
            data = plots.flip_multiples([j["flip_matrix"] for j in members], titles, names)
            multiples = Png(f"sweep_matrices__{slug}.png", data)
        swept = [j for j in members if j["sweep_value"] is not None]
        if len(swept) >= 2:
            data = plots.sweep_lines(
                [j["sweep_value"] for j in swept],
                [j["symmetry"] for j in swept],
                [j["symmetry_ci"][0] for j in swept],
                [j["symmetry_ci"][1] for j in swept],
                [j["top_attractor"]["share"] for j in swept],
                [j["top_attractor"]["name"] for j in swept],
                g["group"],
                level=swept[0]["symmetry_level"],
            )
            lines = Png(f"sweep_lines__{slug}.png", data)
        out[g["group"]] = (multiples, lines)
    return out


def write_report(
    run_dir: str | os.PathLike,
    *,
    summary: Mapping[str, Any] | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    max_examples: int = MAX_EXAMPLES,
) -> Path:
    """Write the report of the run in ``run_dir`` into ``run_dir/report/``.

    ``summary`` (from :func:`summarize` on the same store) is reused when
    given, otherwise computed with ``n_boot``, ``level`` and ``seed``. Jobs
    still pending are reported with the records written so far and flagged
    incomplete. Returns the path of ``report.html``.
    """
    run_dir = Path(run_dir)
    with RunStore.open(run_dir) as store:
        if summary is None:
            summary = summarize(store, n_boot=n_boot, level=level, seed=seed)
        records = {j.job_id: store.records(j.job_id) for j in store.jobs()}
        gallery = _load_gallery(run_dir)
        names = summary["run"]["class_names"]
        bounds = summary["run"]["bounds"] or [0.0, 1.0]
        heatmaps: dict[str, Png] = {}
        galleries: dict[str, Png] = {}
        notes: dict[str, str] = {}
        for job in summary["jobs"]:
            jid = job["job_id"]
            if job["n"] == 0:
                continue
            title = job["label"] if job["complete"] else f"{job['label']} (incomplete)"
            ti = job.get("type_i")
            if ti:
                who = "the oracle" if ti["judge"] == "oracle" else "f2"
                data = plots.flip_heatmap(
                    job["flip_matrix"],
                    names,
                    title,
                    xlabel=f"class {who} sees (the model kept the original)",
                    ylabel="original class",
                    legend="Type I examples (diagonal: unchanged)",
                )
            else:
                data = plots.flip_heatmap(job["flip_matrix"], names, title)
            heatmaps[jid] = Png(f"flip_matrix__{_slug(jid)}.png", data)
            png, notes[jid] = _gallery_png(
                gallery, store, job, records[jid], names, bounds, max_examples
            )
            if png is not None:
                galleries[jid] = png
    noise = summary["white_noise"]
    white_noise = (
        Png("white_noise.png", plots.prior_bars(noise["distribution"], names, noise["n"]))
        if noise
        else None
    )
    groups = _group_figures(summary, names)
    distances = {
        d["name"]: Png(
            f"distance__{_slug(d['name'])}.png",
            plots.distance_heatmap(d["matrix"], names, f"{d['name']} class distance"),
        )
        for d in summary.get("distances") or []
    }
    page = render(
        summary,
        heatmaps=heatmaps,
        galleries=galleries,
        gallery_notes=notes,
        groups=groups,
        white_noise=white_noise,
        distances=distances,
    )

    out = run_dir / REPORT_DIR
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(f"cannot create report directory {out}", exc) from None
    pngs = [*heatmaps.values(), *galleries.values(), *distances.values(), white_noise]
    pngs += [p for pair in groups.values() for p in pair]
    for png in pngs:
        if png is not None:
            _atomic_write(out / png.name, png.data)
    for job in summary["jobs"]:
        _atomic_write(out / f"flip_matrix__{_slug(job['job_id'])}.csv", _flip_csv(job, names))
    _atomic_write(out / "jobs.csv", _csv_bytes(CSV_COLUMNS, csv_rows(summary)))
    text = json.dumps(jsonable(summary), indent=2, ensure_ascii=False, allow_nan=False)
    _atomic_write(out / "summary.json", (text + "\n").encode("utf-8"))
    path = out / "report.html"
    _atomic_write(path, page.encode("utf-8"))
    return path

"""Write ``RUNDIR/report/``: the HTML page, its PNGs, ``summary.json``,
``jobs.csv`` and one ``flip_matrix__<job_id>.csv`` per job.

Every file is written under a temporary name and renamed into place
(``os.replace``), ``report.html`` last, so a reader never sees a half-written
file. The figures come from :mod:`labelflip.report.plots` as matplotlib
Figures; :func:`png_bytes` encodes them here.

A report made while the run is still writing (``labelflip report`` during a
run) is read from one snapshot of the store, and never replaces a report
made from a later state of the run (the state, records and jobs done, is in
``summary.json``; writers of one folder take turns on its ``.lock``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from labelflip._text import csv_cell
from labelflip.errors import LabelflipError, LabelflipWarning, os_error
from labelflip.report import plots
from labelflip.report.findings import setting_label
from labelflip.report.gallery import Shown, gallery_figure, load_gallery
from labelflip.report.kinds import kind_of
from labelflip.report.page import Png, render
from labelflip.report.schema import MIN_FLIPS, JobSummary, RunSummary, as_summary
from labelflip.report.summary import CSV_COLUMNS, csv_rows, summarize_run
from labelflip.store import CONFIG_JSON, CONFIG_TOML, RunStore, only_valid

REPORT_DIR = "report"
GALLERY_DEFAULT = 8  # examples per job when the run's config does not say (its default)
CONFIG_FILES = (CONFIG_TOML, CONFIG_JSON)  # the run's config: its TOML, else the resolved JSON
DPI = plots.DPI


def png_bytes(fig: Figure) -> bytes:
    """``fig`` encoded as PNG (then cleared, freeing its artists)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    fig.clear()
    return buf.getvalue()


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


def _remove_stale_tmp(out: Path) -> None:
    """Delete the temporary files of :func:`_atomic_write` (``.<name>.<pid>.tmp``)
    left in ``out`` by writers that died (killed while writing); those of a
    live process (a report being written now) are left alone."""
    for tmp in out.glob(".*.tmp"):
        pid = tmp.name[: -len(".tmp")].rpartition(".")[2]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:  # no such process: its file is stale
            tmp.unlink(missing_ok=True)
        except (PermissionError, OverflowError, OSError):  # alive (another user's), or no pid
            continue


def _csv_bytes(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> bytes:
    """CSV text; cells a spreadsheet would run as formulas are neutralised
    (:func:`labelflip._text.csv_cell`: labels and class names are the user's)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([csv_cell(v) for v in header])
    writer.writerows([["" if v is None else csv_cell(v) for v in r] for r in rows])
    return buf.getvalue().encode("utf-8")


def _run_config(run_dir: Path) -> tuple[tuple[str, str] | None, int]:
    """The run's config file (name and text; the TOML it was given, else the
    JSON the runner wrote) and its ``gallery`` setting (examples per job)."""
    shown = None
    for name in CONFIG_FILES:
        try:
            shown = (name, (run_dir / name).read_text(encoding="utf-8"))
            break
        except (OSError, UnicodeDecodeError):
            continue
    gallery = GALLERY_DEFAULT
    try:
        value = json.loads((run_dir / CONFIG_JSON).read_text(encoding="utf-8")).get("gallery")
    except (OSError, ValueError, AttributeError):
        value = None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        gallery = value
    return shown, gallery


def _flip_csv(job: JobSummary, names: Sequence[str]) -> bytes:
    """The job's matrix with class names (its kind says how it reads: the
    flip matrix, rows true and columns adversarial; the label-swap matrix;
    the label-stay matrix)."""
    rows = [[name, *counts] for name, counts in zip(names, job.flip_matrix, strict=True)]
    return _csv_bytes([kind_of(job).axes(job).corner, *names], rows)


# ---------------------------------------------------------------- figures


def _group_figures(
    summary: RunSummary, names: Sequence[str]
) -> dict[str, tuple[Png | None, Png | None]]:
    """Per sweep group: small multiples of its jobs' flip matrices and, when at
    least two jobs have a sweep value, the line plot of s and attractor share."""
    jobs = {j.job_id: j for j in summary.jobs}
    out = {}
    for g in summary.groups:
        members = [jobs[i] for i in g.job_ids if jobs[i].n > 0]
        slug = _slug(g.group)
        multiples = lines = None
        if members:
            titles = [_title(j) for j in members]
            axes = kind_of(members[0]).axes(members[0])
            fig = plots.flip_multiples(
                [j.flip_matrix for j in members],
                titles,
                names,
                few=[j.few_flips for j in members],
                xlabel=axes.xlabel,
                ylabel=axes.ylabel,
            )
            multiples = Png(f"sweep_matrices__{slug}.png", png_bytes(fig))
        swept = [j for j in members if j.sweep_value is not None]
        if len(swept) >= 2:
            fig = sweep_figure(
                swept, g.group, level=swept[0].symmetry_level, xlabel=setting_label(g.setting)
            )
            lines = Png(f"sweep_lines__{slug}.png", png_bytes(fig))
        out[g.group] = (multiples, lines)
    return out


def sweep_figure(swept: Sequence[JobSummary], title: str, *, level: float, xlabel: str) -> Figure:
    """The sweep lines (:func:`labelflip.report.plots.sweep_lines`) of the
    jobs ``swept``, in order: symmetry with its interval and the top
    attractor's share against each job's sweep value."""
    return plots.sweep_lines(
        [j.sweep_value for j in swept],
        [j.symmetry for j in swept],
        [j.symmetry_ci[0] for j in swept],
        [j.symmetry_ci[1] for j in swept],
        [j.top_attractor.share for j in swept],
        [j.top_attractor.name for j in swept],
        title,
        level=level,
        xlabel=xlabel,
        few=[j.few_flips for j in swept],
        few_label=f"fewer than {MIN_FLIPS} flips",
    )


def _title(job: JobSummary) -> str:
    label = job.label if job.complete else f"{job.label} (incomplete)"
    return f"{label}\n({job.n_off_diagonal} flips: too few)" if job.few_flips else label


def write_report(
    run_dir: str | os.PathLike,
    *,
    summary: RunSummary | Mapping[str, Any] | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    max_examples: int | None = None,
    out: str | os.PathLike | None = None,
) -> Path:
    """Write the report of the run in ``run_dir`` into ``run_dir/report/``
    (or the folder ``out``: e.g. for a run on read-only media, whose store is
    only read).

    ``summary`` (from :func:`summarize_run`, or its JSON from
    :func:`summarize`, on the same store) is reused when given, otherwise
    computed with ``n_boot``, ``level`` and ``seed``. Jobs still pending are
    reported with the records written so far and flagged incomplete. Each
    gallery shows ``max_examples`` examples (default: the run config's
    ``gallery``). Returns the path of ``report.html``.
    """
    run_dir = Path(run_dir)
    config, gallery_size = _run_config(run_dir)
    limit = gallery_size if max_examples is None else max_examples
    with RunStore.open(run_dir, read_only=True) as store, store.snapshot():
        if summary is None:
            summary = summarize_run(store, n_boot=n_boot, level=level, seed=seed)
        summary = as_summary(summary)
        records = {j.job_id: only_valid(store.records(j.job_id))[0] for j in store.jobs()}
        gallery = load_gallery(run_dir)
        names = summary.run.class_names
        bounds = summary.run.bounds
        heatmaps: dict[str, Png] = {}
        galleries: dict[str, Png] = {}
        notes: dict[str, str] = {}
        shown: dict[str, Shown] = {}
        for job in summary.jobs:
            jid = job.job_id
            if job.n == 0:
                continue
            title = job.label if job.complete else f"{job.label} (incomplete)"
            axes = kind_of(job).axes(job)
            few = f"only {job.n_off_diagonal} off-diagonal flips (< {MIN_FLIPS}): s says little"
            fig = plots.flip_heatmap(
                job.flip_matrix,
                names,
                title,
                xlabel=axes.xlabel,
                ylabel=axes.ylabel,
                legend=axes.legend,
                note=few if job.few_flips else None,
            )
            heatmaps[jid] = Png(f"flip_matrix__{_slug(jid)}.png", png_bytes(fig))
            if limit == 0:
                notes[jid] = "The run's config asks for no gallery (gallery = 0)."
                continue
            fig, notes[jid], info = gallery_figure(
                gallery, store, job, records[jid], names, bounds, limit
            )
            if fig is not None and info is not None:
                galleries[jid] = Png(f"gallery__{_slug(jid)}.png", png_bytes(fig))
                shown[jid] = info
    noise = summary.white_noise
    white_noise = (
        Png("white_noise.png", png_bytes(plots.prior_bars(noise.distribution, names, noise.n)))
        if noise
        else None
    )
    groups = _group_figures(summary, names)
    distances = {
        d.name: Png(
            f"distance__{_slug(d.name)}.png",
            png_bytes(plots.distance_heatmap(d.matrix, names, f"{d.name} class distance")),
        )
        for d in summary.distances
    }
    for b in summary.boundaries or ():  # a boundary-profile job's class-boundary matrix
        title = f"{b.label}: median {b.norm} distance to the class boundary"
        distances[f"boundary:{b.job_id}"] = Png(
            f"boundary__{_slug(b.job_id)}.png",
            png_bytes(plots.distance_heatmap(b.matrix, names, title)),
        )
    page = render(
        summary,
        heatmaps=heatmaps,
        galleries=galleries,
        gallery_notes=notes,
        groups=groups,
        white_noise=white_noise,
        distances=distances,
        shown=shown,
        config=config,
    )

    elsewhere = out is not None
    out = Path(out) if elsewhere else run_dir / REPORT_DIR
    hint = "" if elsewhere else "; write the report elsewhere with --out DIR"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        error = os_error(f"cannot create report directory {out}", exc)
        raise LabelflipError(f"{error}{hint}") from None
    probe = out / f".probe.{os.getpid()}.tmp"
    try:  # a report/ folder on read-only media: say so before any file is written
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise LabelflipError(f"{os_error(f'cannot write into {out}', exc)}{hint}") from None
    _remove_stale_tmp(out)
    path = out / "report.html"
    with _turn(out):
        newer = _newer_report(out, summary)
        if newer is not None:
            warnings.warn(newer, LabelflipWarning, stacklevel=2)
            return path
        pngs = [*heatmaps.values(), *galleries.values(), *distances.values(), white_noise]
        pngs += [p for pair in groups.values() for p in pair]
        for png in pngs:
            if png is not None:
                _atomic_write(out / png.name, png.data)
        for job in summary.jobs:
            _atomic_write(out / f"flip_matrix__{_slug(job.job_id)}.csv", _flip_csv(job, names))
        _atomic_write(out / "jobs.csv", _csv_bytes(CSV_COLUMNS, csv_rows(summary)))
        text = json.dumps(summary.to_json(), indent=2, ensure_ascii=False, allow_nan=False)
        _atomic_write(out / "summary.json", (text + "\n").encode("utf-8"))
        _atomic_write(path, page.encode("utf-8"))
    return path


@contextlib.contextmanager
def _turn(out: Path) -> Iterator[None]:
    """Writers of one report folder take turns (an exclusive ``flock`` on
    ``out/.lock``), so checking for a newer report and writing are one step."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no flock (Windows)
        yield
        return
    try:
        fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise os_error(f"cannot write into {out}", exc) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _state(snap: Any) -> tuple[int, int] | None:
    """``(records, jobs_done)`` of a summary's snapshot, if it has one."""
    if not isinstance(snap, Mapping):
        return None
    return int(snap.get("records") or 0), int(snap.get("jobs_done") or 0)


def _newer_report(out: Path, summary: RunSummary) -> str | None:
    """Why the report in ``out`` is kept: it was made from a later state of
    the same run (name and start time) than ``summary`` (more records, or as
    many and more jobs done); ``None`` when it may be replaced."""
    try:
        run = json.loads((out / "summary.json").read_text(encoding="utf-8")).get("run", {})
        old = _state(run.get("snapshot"))
        same_run = (run.get("name"), run.get("started")) == (summary.run.name, summary.run.started)
    except (OSError, ValueError, TypeError, AttributeError):
        return None  # no report there, or one that does not say its state
    if not same_run:  # a report of another run: replaced as ever
        return None
    new = _state(summary.run.snapshot)
    if old is None or new is None or old <= new:
        return None
    return (
        f"{out} already holds a report of a later state of the run ({old[0]} records, "
        f"{old[1]} jobs done; this one read {new[0]} records, {new[1]} jobs done): kept as it is"
    )

"""A finished (or running) run directory, read for analysis in Python.

>>> run = labelflip.open_run("runs/digits-default-20260101-120000")   # doctest: +SKIP
>>> run.job_ids                                     # the jobs, in run order
>>> run.flip_matrix("pgd-linf-eps0.1")             # int64 (true class x adversarial class)
>>> run.symmetry("pgd-linf-eps0.1")                # s, its bootstrap CI, Bowker's test
>>> run.records()                                   # one row per (job, sample): pandas
>>> run.plot_flips("pgd-linf-eps0.1")              # a matplotlib Figure
>>> run.report()                                    # RUNDIR/report/report.html
>>> run                                             # in a notebook: the table and heatmaps

Every number comes from the same typed summaries as the HTML report and
``summary.json`` (:func:`labelflip.report.summarize_run`): counts are
``int``, rates and statistics ``float`` (NaN when not available), so what
Python shows is what the report shows. The summary is computed once, on
first use; open the run again to see records written since.
"""

from __future__ import annotations

import base64
import functools
import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from labelflip.analysis import BowkerResult
from labelflip.errors import LabelflipError, unknown_name
from labelflip.report import format_table, kind_of, plots, summarize_run, write_report
from labelflip.report.gallery import gallery_figure, load_gallery
from labelflip.report.schema import MIN_FLIPS, Attractor, JobSummary, RunSummary, Typed
from labelflip.report.writer import png_bytes, sweep_figure
from labelflip.store import Job, RunDir, RunStore
from labelflip.store.schema import only_valid

NEEDS_PANDAS = "records() needs pandas: pip install 'labelflip[pandas]' (or use arrays())"
SUBSETS = ("clean", "all")  # flip-matrix subsets: clean-correct samples, every sample
INLINE_JOBS = 9  # jobs shown as heatmaps in a notebook


@dataclass(frozen=True)
class Symmetry(Typed):
    """How symmetric a job's clean flip matrix is: ``s`` (1 symmetric, 0
    one-way) with its percentile-bootstrap interval at ``level``, Bowker's
    test of ``H0: p_ij = p_ji``, and the ``n_flips`` off-diagonal counts
    they come from (``few``: fewer than the report's minimum, they say little)."""

    s: float
    ci: tuple[float, float]
    level: float
    bowker: BowkerResult
    n_flips: int
    few: bool


@dataclass(frozen=True)
class Attractors(Typed):
    """Where a job's ``n_success`` successful clean examples land: each
    class's share (``shares``, by class ``names``), the top attractor, the
    normalised entropy of the shares (1: spread evenly) and the shares
    expected if each had landed uniformly on a class other than its own
    (``baseline``; a catch-all class lies well above it)."""

    names: tuple[str, ...]
    shares: tuple[float, ...]
    top: Attractor
    entropy: float
    n_success: int
    baseline: tuple[float, ...] | None


class Run:
    """A run directory (made by :func:`labelflip.evaluate`,
    :func:`labelflip.run_experiment` or ``labelflip run``) for analysis; see
    the module docstring. A job is named by its id (``run.job_ids``), its
    position, or left out when the run has one job."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        with RunStore.open(self.path, read_only=True) as store:
            self._jobs = tuple(store.jobs())
            self._meta = store.all_meta()

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, jobs={len(self._jobs)})"

    # ---------------------------------------------------------------- what it holds

    @property
    def jobs(self) -> tuple[Job, ...]:
        """The job table: attack, settings, seed, model SHA-256, library versions."""
        return self._jobs

    @property
    def job_ids(self) -> list[str]:
        return [j.job_id for j in self._jobs]

    @property
    def meta(self) -> dict[str, Any]:
        """The run's metadata (dataset, class names, samples, model, ...)."""
        return dict(self._meta)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.summary.run.class_names

    @functools.cached_property
    def summary(self) -> RunSummary:
        """The typed summary of the run (the report's numbers)."""
        return summarize_run(self.path)

    def job(self, job: str | int | None = None) -> JobSummary:
        """The typed summary of one job (everything the report says about it)."""
        return self.summary.job(self._job_id(job))

    def _job_id(self, job: str | int | None) -> str:
        ids = self.job_ids
        if job is None:
            if len(ids) != 1:
                raise LabelflipError(
                    f"the run has {len(ids)} jobs: name one ({', '.join(ids[:6])}"
                    f"{', ...' if len(ids) > 6 else ''})"
                )
            return ids[0]
        if isinstance(job, (int, np.integer)) and not isinstance(job, bool):
            if not -len(ids) <= int(job) < len(ids):
                raise LabelflipError(f"job {int(job)} out of range: the run has {len(ids)} jobs")
            return ids[int(job)]
        if job not in ids:
            raise unknown_name("job", str(job), ids)
        return str(job)

    # ---------------------------------------------------------------- records

    def arrays(self, job: str | int | None = None) -> dict[str, np.ndarray]:
        """The records of one job, or of all jobs when ``job`` is ``None``
        (ordered by job, then sample), as numpy columns
        (:data:`labelflip.store.RECORD_COLUMNS`)."""
        jid = None if job is None else self._job_id(job)
        with RunStore.open(self.path, read_only=True) as store:
            return store.records(jid)

    def records(self, job: str | int | None = None) -> Any:
        """:meth:`arrays` as a pandas DataFrame, with each job's ``attack`` and
        ``label`` (needs the ``pandas`` extra)."""
        try:
            import pandas as pd
        except ImportError:
            raise LabelflipError(NEEDS_PANDAS) from None
        cols = self.arrays(job)
        by_id = {j.job_id: j for j in self._jobs}
        ids = cols["job_id"].tolist()
        frame = pd.DataFrame(cols)
        frame.insert(1, "attack", [by_id[i].attack for i in ids])
        frame.insert(2, "label", [by_id[i].label for i in ids])
        return frame

    def profile(self, job: str | int | None = None) -> np.ndarray:
        """The per-sample distances of a ``boundary-profile`` job (to each
        class's boundary) or a ``best-of`` job (each inner attack's norm),
        one row per sample position (the records' ``sample``), ``inf`` where
        nothing was found, NaN for a sample not yet attacked; see
        :mod:`labelflip.analysis.boundary` for what to do with it."""
        jid = self._job_id(job)
        profile = RunDir(self.path).load_profile(jid)
        if profile is None:
            raise LabelflipError(
                f"job '{jid}' has no profile (boundary-profile and best-of jobs have one)"
            )
        return profile

    # ---------------------------------------------------------------- numbers

    def flip_matrix(self, job: str | int | None = None, *, subset: str = "clean") -> np.ndarray:
        """The job's flip matrix (row: true class, column: class after the
        attack; for a Type I job the label-stay matrix, for a multi-label run
        the label-swap matrix) over the clean-correct samples (``"clean"``)
        or, for a Type II job, over ``"all"`` samples. int64."""
        if subset not in SUBSETS:
            raise LabelflipError(f"subset must be one of {', '.join(SUBSETS)}, got {subset!r}")
        j = self.job(job)
        matrix = j.flip_matrix if subset == "clean" else j.flip_matrix_all
        k = len(self.class_names)
        return np.asarray(matrix, dtype=np.int64).reshape(k, k)

    def symmetry(self, job: str | int | None = None) -> Symmetry:
        j = self.job(job)
        return Symmetry(
            s=j.symmetry,
            ci=j.symmetry_ci,
            level=j.symmetry_level,
            bowker=j.bowker,
            n_flips=j.n_off_diagonal,
            few=j.few_flips,
        )

    def attractors(self, job: str | int | None = None) -> Attractors:
        j = self.job(job)
        return Attractors(
            names=self.class_names,
            shares=j.landing_shares,
            top=j.top_attractor,
            entropy=j.entropy,
            n_success=j.n_success_clean,
            baseline=j.baseline_shares,
        )

    # ---------------------------------------------------------------- figures

    def plot_flips(self, job: str | int | None = None) -> Figure:
        """The job's flip matrix as the report draws it."""
        j = self.job(job)
        axes = kind_of(j).axes(j)
        few = f"only {j.n_off_diagonal} off-diagonal flips (< {MIN_FLIPS}): s says little"
        return plots.flip_heatmap(
            j.flip_matrix,
            self.class_names,
            j.label if j.complete else f"{j.label} (incomplete)",
            xlabel=axes.xlabel,
            ylabel=axes.ylabel,
            legend=axes.legend,
            note=few if j.few_flips else None,
        )

    def plot_jobs(self, jobs: list[str | int] | None = None) -> Figure:
        """Small multiples of the jobs' row-normalised flip matrices on one scale."""
        chosen = [self.job(j) for j in (self.job_ids if jobs is None else jobs)]
        chosen = [j for j in chosen if j.n > 0]
        if not chosen:
            raise LabelflipError("no job of the run has records yet")
        axes = kind_of(chosen[0]).axes(chosen[0])
        return plots.flip_multiples(
            [j.flip_matrix for j in chosen],
            [j.label for j in chosen],
            self.class_names,
            few=[j.few_flips for j in chosen],
            xlabel=axes.xlabel,
            ylabel=axes.ylabel,
        )

    def plot_sweep(self, group: str | None = None) -> Figure:
        """Symmetry and top-attractor share along a sweep (a group of jobs of
        one attack entry with a list-valued setting)."""
        groups = {g.group: g for g in self.summary.groups}
        if group is None and len(groups) == 1:
            group = next(iter(groups))
        if group not in groups:
            raise unknown_name("sweep group", str(group), groups)
        g = groups[group]
        swept = [j for j in (self.summary.job(i) for i in g.job_ids) if j.sweep_value is not None]
        level = swept[0].symmetry_level if swept else 0.95
        return sweep_figure(swept, g.group, level=level, xlabel=g.setting or "sweep value")

    def plot_white_noise(self) -> Figure:
        """The model's class distribution on uniform-noise images."""
        noise = self.summary.white_noise
        if noise is None:
            raise LabelflipError("the run classified no white noise (white_noise = 0)")
        return plots.prior_bars(noise.distribution, self.class_names, noise.n)

    def plot_distance(self, name: str) -> Figure:
        """A class-distance matrix of the run (``perceptual``, ``semantic``, ``confusion``)."""
        found = {d.name: d for d in self.summary.distances}
        if name not in found:
            raise unknown_name("class distance", name, found)
        return plots.distance_heatmap(
            found[name].matrix, self.class_names, f"{name} class distance"
        )

    def plot_gallery(self, job: str | int | None = None, max_examples: int = 8) -> Figure:
        """Originals, adversarial examples and perturbations of the job."""
        j = self.job(job)
        with RunStore.open(self.path, read_only=True) as store:
            fig, note, _ = gallery_figure(
                load_gallery(self.path), store, j, only_valid(store.records(j.job_id))[0],
                self.class_names, self.summary.run.bounds, max_examples,
            )  # fmt: skip
        if fig is None:
            raise LabelflipError(f"job {j.job_id}: {note}")
        return fig

    # ---------------------------------------------------------------- report

    def report(self, out: str | os.PathLike[str] | None = None) -> Path:
        """Write the HTML report (into ``RUNDIR/report`` or ``out``); its path."""
        return write_report(self.path, summary=self.summary, out=out)

    def _repr_html_(self) -> str:
        """The summary table and the flip heatmaps, for a notebook."""
        s = self.summary
        header, rows = format_table(s)
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
        )
        model = s.run.model
        about = (
            f"{html.escape(str(s.run.dataset))}, {s.run.n_samples} samples, model "
            f"{html.escape(str(model.get('arch')))}"
        )
        shown = [j for j in s.jobs if j.n > 0][:INLINE_JOBS]
        image = ""
        if shown:
            fig = (
                self.plot_flips(shown[0].job_id)
                if len(shown) == 1
                else self.plot_jobs([j.job_id for j in shown])
            )
            b64 = base64.b64encode(png_bytes(fig)).decode("ascii")
            image = f'<img alt="flip matrices" src="data:image/png;base64,{b64}">'
        return (
            f"<div><p><strong>labelflip run</strong> <code>{html.escape(str(self.path))}"
            f"</code>: {about}</p><table class='labelflip-summary'><tr>{head}</tr>{body}"
            f"</table>{image}</div>"
        )


def open_run(path: str | os.PathLike[str]) -> Run:
    """The run directory ``path`` for analysis (:class:`Run`)."""
    return Run(path)


__all__ = ["Attractors", "Run", "Symmetry", "open_run"]

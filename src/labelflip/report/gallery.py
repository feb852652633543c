"""The report's example galleries: read the run's gallery arrays, choose the
examples a job shows (its kind says which records are successes and where
each landed) and draw them.

The run saves (:class:`labelflip.store.RunDir`), before the first batch of
a job is committed, the originals of the first batch's samples (up to 256:
``gallery/x.npy``, their sample positions and true labels) and each job's
adversarial examples of the same rows (``gallery/adv__<job>.npy``; a Type I
job also its transition images), then bundles them into ``gallery.npz`` at
the end of the run. Older runs saved only the first ``gallery`` rows; the
report picks among whatever rows there are.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from labelflip.errors import LabelflipError
from labelflip.report.jobstats import Records
from labelflip.report.kinds import kind_of
from labelflip.report.schema import JobSummary
from labelflip.store import GALLERY_DIR, RunStore
from labelflip.store.rundir import GALLERY_NPZ as GALLERY_FILE

Gallery = Mapping[str, np.ndarray]


def load_gallery(run_dir: Path) -> dict[str, np.ndarray] | None:
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


@dataclass(frozen=True)
class Shown:
    """What a job's gallery shows: per example its true class, the class it
    landed in and whether it is one of the kind's successes; and how many
    candidates (the first batch's samples with a record) it was chosen from."""

    true: tuple[int, ...]
    landed: tuple[int, ...]
    good: tuple[bool, ...]
    candidates: int


def spread(
    rows: Sequence[int],
    true: np.ndarray,
    landed: np.ndarray,
    limit: int,
    shown: Sequence[int] = (),
) -> list[int]:
    """Up to ``limit`` of ``rows``, spread over true and landing classes:
    each pick is the earliest row whose true class, then landing class, has
    been picked least often so far, counting the rows already ``shown`` (so
    every true class comes once before any comes twice)."""
    left = list(rows)
    by_true: Counter[int] = Counter(int(true[r]) for r in shown)
    by_landed: Counter[int] = Counter(int(landed[r]) for r in shown)
    out: list[int] = []
    while left and len(out) < limit:
        best = min(
            range(len(left)),
            key=lambda i: (by_true[int(true[left[i]])], by_landed[int(landed[left[i]])], i),
        )
        row = left.pop(best)
        by_true[int(true[row])] += 1
        by_landed[int(landed[row])] += 1
        out.append(row)
    return out


def pick_examples(
    job: JobSummary, positions: np.ndarray, rec: Records, limit: int
) -> list[tuple[int, int]]:
    """Up to ``limit`` (gallery index, record row) pairs, chosen to inform:
    the kind's successes first (successful flips of clean-correct samples;
    a Type I job's judged Type I examples), spread over true classes and
    landing classes (:func:`spread`) and ordered by true class; then, when
    there are too few, the failures (clean-correct samples first), spread
    the same way."""
    row_of = {int(s): i for i, s in enumerate(rec["sample"])}
    gallery_of = {}
    for g, p in enumerate(positions):
        if int(p) in row_of:
            gallery_of.setdefault(row_of[int(p)], g)
    rows = list(gallery_of)
    ex = kind_of(job).examples(job, rec)
    true = rec["true"]
    correct = rec["clean_pred"] == true
    good = [r for r in rows if ex.good[r]]
    chosen = sorted(spread(good, true, ex.landed, limit), key=lambda r: (int(true[r]), r))
    rest = [r for r in rows if not ex.good[r] and correct[r]]
    rest += [r for r in rows if not ex.good[r] and not correct[r]]
    chosen += spread(rest, true, ex.landed, limit - len(chosen), shown=chosen)
    return [(gallery_of[r], r) for r in chosen]


def _adversarials(
    gallery: Gallery, store: RunStore, job_id: str, idx: list[int]
) -> np.ndarray | None:
    """The job's adversarial examples at gallery indices ``idx``: from the gallery,
    else from the store's saved adversarial examples, else None."""
    key = f"adv__{job_id}"
    if key in gallery:
        return np.asarray(gallery[key])[idx]
    try:
        return store.adversarials(job_id, np.asarray(gallery["positions"])[idx])
    except LabelflipError:
        return None


def candidates(gallery: Gallery, job_id: str) -> np.ndarray:
    """The gallery's sample positions that have the job's adversarial
    example (a run resumed across versions may hold fewer for a job)."""
    positions = np.asarray(gallery["positions"])
    key = f"adv__{job_id}"
    return positions[: len(gallery[key])] if key in gallery else positions


def gallery_figure(
    gallery: Gallery | None,
    store: RunStore,
    job: JobSummary,
    rec: Records,
    names: Sequence[str],
    bounds: Sequence[float],
    limit: int,
) -> tuple[Figure | None, str, Shown | None]:
    """The job's gallery figure and what it shows, or None, the reason there
    is none and None."""
    if gallery is None:
        return None, f"No {GALLERY_FILE} (or {GALLERY_DIR}/) in the run directory.", None
    positions = candidates(gallery, job.job_id)
    picks = pick_examples(job, positions, rec, limit)
    if not picks:
        return None, "No gallery examples recorded for this job yet.", None
    idx = [g for g, _ in picks]
    x = np.asarray(gallery["x"])[idx]
    x_adv = _adversarials(gallery, store, job.job_id, idx)
    if x_adv is None:
        return None, "No adversarial examples saved for this job.", None
    if x_adv.shape != x.shape:
        return (
            None,
            f"Gallery shapes differ: originals {x.shape}, adversarial {x_adv.shape}.",
            None,
        )
    kind = kind_of(job)
    ex = kind.examples(job, rec)
    rows = [r for _, r in picks]
    titles = [kind.gallery_title(job, rec, r, names) for r in rows]
    good = [bool(ex.good[r]) for r in rows]
    fig, note = kind.draw_gallery(job, gallery, idx, x, x_adv, titles, bounds, good)
    n_candidates = len({int(p) for p in positions} & {int(s) for s in rec["sample"]})
    shown = Shown(
        true=tuple(int(rec["true"][r]) for r in rows),
        landed=tuple(int(ex.landed[r]) for r in rows),
        good=tuple(good),
        candidates=n_candidates,
    )
    return fig, note, shown if fig is not None else None

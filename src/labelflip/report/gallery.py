"""The report's example galleries: read the run's gallery arrays, choose the
examples a job shows (its kind says which records are successes and where
each landed) and draw them.

The runner saves, before the first batch of a job is committed, the
originals of the first batch's samples (``gallery/x.npy``, their sample
positions and true labels) and each job's adversarial examples of the same
rows (``gallery/adv__<job>.npy``; a Type I job also its transition images),
then bundles them into ``gallery.npz`` at the end of the run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from labelflip.errors import LabelflipError
from labelflip.report.jobstats import Records
from labelflip.report.kinds import kind_of
from labelflip.report.schema import JobSummary
from labelflip.store import RunStore

GALLERY_FILE = "gallery.npz"
GALLERY_DIR = "gallery"  # the runner's per-array .npy files before bundling

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


def pick_examples(
    job: JobSummary, positions: np.ndarray, rec: Records, limit: int
) -> list[tuple[int, int]]:
    """Up to ``limit`` (gallery index, record row) pairs: the kind's
    successes (successful clean-correct examples; a Type I job's judged Type
    I examples) first, in gallery order."""
    row_of = {int(s): i for i, s in enumerate(rec["sample"])}
    pairs = [(g, row_of[int(p)]) for g, p in enumerate(positions) if int(p) in row_of]
    good = kind_of(job).examples(job, rec).good
    ordered = [p for p in pairs if good[p[1]]] + [p for p in pairs if not good[p[1]]]
    return ordered[:limit]


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


def gallery_figure(
    gallery: Gallery | None,
    store: RunStore,
    job: JobSummary,
    rec: Records,
    names: Sequence[str],
    bounds: Sequence[float],
    limit: int,
) -> tuple[Figure | None, str]:
    """The job's gallery figure, or None and the reason there is none."""
    if gallery is None:
        return None, f"No {GALLERY_FILE} (or {GALLERY_DIR}/) in the run directory."
    picks = pick_examples(job, np.asarray(gallery["positions"]), rec, limit)
    if not picks:
        return None, "No gallery examples recorded for this job yet."
    idx = [g for g, _ in picks]
    x = np.asarray(gallery["x"])[idx]
    x_adv = _adversarials(gallery, store, job.job_id, idx)
    if x_adv is None:
        return None, "No adversarial examples saved for this job."
    if x_adv.shape != x.shape:
        return None, f"Gallery shapes differ: originals {x.shape}, adversarial {x_adv.shape}."
    kind = kind_of(job)
    titles = [kind.gallery_title(job, rec, row, names) for _, row in picks]
    return kind.draw_gallery(job, gallery, idx, x, x_adv, titles, bounds)

"""The run directory: its layout, the config files, the gallery files, and
how it comes into being atomically.

::

    <run>/config.json        the resolved config (RunConfig.to_dict)
    <run>/config.toml        the text it came from (absent for a config built in Python)
    <run>/records.sqlite     job table, records, metadata (RunStore)
    <run>/gallery/           positions.npy, x.npy, true.npy: the gallery's originals;
                             adv__<job>.npy (and transition__<job>.npy for Type I
                             jobs): its adversarials, written before the batch that
                             holds them is committed
    <run>/gallery.npz        the gallery bundled at the end of the run
    <run>/profiles/          <job>.npy: a profiling attack's (N, C) distances (boundary-profile,
                             best-of; row = sample position, NaN until its batch is
                             written), written before the batch holding them is committed
    <run>/report/            the report (labelflip.report)
    <run>/.lock              held (flock) by the one process running the run

A run directory appears atomically with its config and an empty store: both
are written into a hidden staging directory that is then renamed, so a run
that fails before any work leaves nothing behind and a run directory that
exists can always be resumed."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from labelflip._files import save_npy_atomic, write_atomic, write_text_atomic
from labelflip.errors import LabelflipError, os_error
from labelflip.store._runstore import RunStore

CONFIG_JSON = "config.json"
CONFIG_TOML = "config.toml"
GALLERY_DIR = "gallery"
GALLERY_NPZ = "gallery.npz"
PROFILES_DIR = "profiles"
REPORT_DIR = "report"
LOCK = ".lock"


def new_run_path(base: str | os.PathLike, name: str) -> Path:
    """``<base>/<name>-<date>-<time>`` (with ``-2``, ``-3``, ... if taken)."""
    base = Path(base).expanduser()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = base / f"{name}-{stamp}"
    i = 2
    while path.exists():
        path = base / f"{name}-{stamp}-{i}"
        i += 1
    return path


class RunDir:
    """A run directory (see the module docstring)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def gallery(self) -> Path:
        return self.path / GALLERY_DIR

    @property
    def report(self) -> Path:
        return self.path / REPORT_DIR

    @property
    def profiles(self) -> Path:
        return self.path / PROFILES_DIR

    # ---------------------------------------------------------------- create

    @classmethod
    def create(cls, path: str | os.PathLike, config: Mapping[str, Any], text: str = "") -> RunDir:
        """Make the run directory with ``config`` (JSON), its ``text`` (TOML,
        if any) and an empty store, atomically (see the module docstring)."""
        run_dir = Path(path)
        if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
            raise LabelflipError(
                f"run directory {run_dir} already exists and is not empty "
                "(use --resume to continue it)"
            )
        staging = run_dir.parent / f".{run_dir.name}.{os.getpid()}.tmp"
        try:
            staging.mkdir(parents=True)
        except OSError as e:
            raise os_error(f"cannot create run directory {run_dir}", e) from None
        try:
            write_text_atomic(staging / CONFIG_JSON, json.dumps(config, indent=2))
            if text:
                write_text_atomic(staging / CONFIG_TOML, text)
            try:
                RunStore.create(staging, meta={}).close()
            except LabelflipError as e:  # name the run directory, not the staging one
                raise LabelflipError(str(e).replace(str(staging), str(run_dir))) from None
            try:
                os.rename(staging, run_dir)  # also replaces an empty run_dir
            except OSError as e:
                raise os_error(f"cannot create run directory {run_dir}", e) from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return cls(run_dir)

    # ---------------------------------------------------------------- config

    def config_text(self) -> str:
        """The resolved config (``config.json``) as text; one-line errors when
        the directory is not a run directory."""
        cfile = self.path / CONFIG_JSON
        if not cfile.is_file():
            what = "does not exist" if not self.path.exists() else f"has no {CONFIG_JSON}"
            raise LabelflipError(f"cannot resume {self.path}: it {what} (not a run directory)")
        try:
            return cfile.read_text()
        except OSError as e:
            raise os_error(f"cannot read {cfile}", e) from None

    def store(self) -> RunStore:
        return RunStore.open(self.path)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run for this process (an exclusive ``flock`` on
        ``<run>/.lock``, which names the holder's pid), released on exit or
        when the process dies; a second process running or resuming the run
        meanwhile gets a one-line error."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - no flock (Windows): unlocked
            yield
            return
        path = self.path / LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise os_error(f"cannot lock run directory {self.path}", e) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
                raise LabelflipError(
                    f"run {self.path} is in use by another process (pid {holder}); wait for "
                    "it to finish, or stop it, before resuming"
                ) from None
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            yield
        finally:
            os.close(fd)  # releases the lock

    # ---------------------------------------------------------------- gallery

    def save_gallery_originals(self, x: np.ndarray, y: np.ndarray) -> None:
        """The gallery's originals: the first ``len(x)`` samples."""
        if len(x) == 0:
            return
        self.gallery.mkdir(exist_ok=True)
        save_npy_atomic(self.gallery / "positions.npy", np.arange(len(x)))
        save_npy_atomic(self.gallery / "true.npy", y)
        save_npy_atomic(self.gallery / "x.npy", x.astype(np.float32))

    def save_gallery_adversarials(
        self, job_id: str, x_adv: np.ndarray, transition: np.ndarray | None = None
    ) -> None:
        """The gallery's adversarials of job ``job_id`` (and a Type I job's
        transition images), written before the batch holding them is committed."""
        if transition is not None:
            save_npy_atomic(self.gallery / f"transition__{job_id}.npy", transition)
        save_npy_atomic(self.gallery / f"adv__{job_id}.npy", x_adv)

    # ---------------------------------------------------------------- profiles

    def save_profile(self, job_id: str, start: int, rows: np.ndarray) -> None:
        """Rows ``start ..`` (sample positions) of job ``job_id``'s profile
        (an attack's ``(N, C)`` per-sample distances, see
        :attr:`labelflip.attacks.AttackResult.profile`), written into
        ``profiles/<job>.npy`` (atomically) before the batch holding them is
        committed; rows no batch has written yet are NaN."""
        rows = np.asarray(rows, dtype=np.float64)
        path = self.profiles / f"{job_id}.npy"
        old = np.load(path, allow_pickle=False) if path.is_file() else None
        if old is not None and old.shape[1:] != rows.shape[1:]:
            old = None  # another job's (not resumable): replaced
        n = max(start + len(rows), 0 if old is None else len(old))
        table = np.full((n, *rows.shape[1:]), np.nan)
        if old is not None:
            table[: len(old)] = old
        table[start : start + len(rows)] = rows
        self.profiles.mkdir(exist_ok=True)
        save_npy_atomic(path, table)

    def load_profile(self, job_id: str) -> np.ndarray | None:
        """Job ``job_id``'s profile, one row per sample position (NaN for a
        sample whose batch is not committed), or ``None`` for a job without one."""
        path = self.profiles / f"{job_id}.npy"
        if not path.is_file():
            return None
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise LabelflipError(f"cannot read profile {path}: {e}") from None

    def write_gallery_npz(self, job_ids: Sequence[str]) -> Path | None:
        """Bundle ``gallery/`` into ``gallery.npz`` (positions, x, true,
        adv__<job> and, for Type I jobs, transition__<job>)."""
        gdir = self.gallery
        if not (gdir / "x.npy").is_file():
            return None
        arrays: dict[str, np.ndarray] = {}
        for name in ("positions", "x", "true"):
            arrays[name] = np.load(gdir / f"{name}.npy", allow_pickle=False)
        for jid in job_ids:
            for kind in ("adv", "transition"):
                f = gdir / f"{kind}__{jid}.npy"
                if f.is_file():
                    arrays[f"{kind}__{jid}"] = np.load(f, allow_pickle=False)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)

        return write_atomic(self.path / GALLERY_NPZ, write)

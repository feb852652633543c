"""The one atomic file writer of labelflip (run directories, reports,
checkpoints, class-distance files): write to a hidden temporary file beside
the target, fsync, rename onto it, fsync the directory. A reader never sees a
half-written file, and a failure (a full or read-only disk) is one line and
leaves no temporary file behind. Also the one reader of a user's text file
(:func:`read_user_text`), whose failures are one line too."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from labelflip.errors import LabelflipError, os_error


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` for a temporary path beside ``path``, fsync it and
    rename it onto ``path``; returns ``path``. OS errors become one-line
    :class:`~labelflip.errors.LabelflipError` s."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        raise os_error(f"cannot write {path}", exc) from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)

    return write_atomic(path, write)


def read_user_text(path: Path, what: str) -> str:
    """The UTF-8 text of the user's ``what`` (e.g. ``"hierarchy file"``) at
    ``path``; a missing or unreadable file is a one-line error."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LabelflipError(f"{what} '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelflipError(f"cannot read {what} '{path}': {exc}") from None

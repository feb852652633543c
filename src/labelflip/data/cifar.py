"""CIFAR-10 in its canonical "python version" (pickled batches).

Looked for, in order: ``<data_dir>/cifar10/cifar-10-batches-py/``,
``<data_dir>/cifar-10-batches-py/``, then the archive
``<data_dir>/cifar10/cifar-10-python.tar.gz`` (or ``<data_dir>/cifar-10-python.tar.gz``),
whose members are read straight from the tar without extracting. Missing
files are downloaded (the archive) unless downloads are off.

Batches are unpickled with a restricted unpickler that only resolves the
few numpy globals an array needs, so a planted pickle cannot run code.
"""

from __future__ import annotations

import pickle
import posixpath
import tarfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from labelflip.data._base import (
    Dataset,
    DatasetStatus,
    check_split,
    download_refusal,
    downloads_allowed,
)
from labelflip.data._download import fetch
from labelflip.errors import LabelflipError

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
BATCH_DIR = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_URLS = ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",)
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
SPLIT_FILES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
META = "batches.meta"
CANONICAL_SIZES = {"train": 50000, "test": 10000}


def _codecs_encode_latin1(text: str, encoding: str = "latin1") -> bytes:
    """Stand-in for ``_codecs.encode``, which Python 3 protocol-2 pickles use for bytes."""
    if not isinstance(text, str) or encoding.lower().replace("-", "") != "latin1":
        raise pickle.UnpicklingError("_codecs.encode is only allowed for latin1 text")
    return text.encode("latin1")


def _empty_bytes(*args: object) -> bytes:
    """Stand-in for ``bytes``, which Python 3 protocol-2 pickles call for ``b''``."""
    if args:
        raise pickle.UnpicklingError("bytes(...) is only allowed without arguments")
    return b""


def _allowed_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _codecs_encode_latin1,
        ("builtins", "bytes"): _empty_bytes,
        ("__builtin__", "bytes"): _empty_bytes,
    }
    for pkg in ("numpy.core", "numpy._core"):
        allowed[(f"{pkg}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{pkg}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy globals a plain array needs."""

    _allowed: dict[tuple[str, str], Any] | None = None

    def __init__(self, file: BinaryIO, source: str) -> None:
        super().__init__(file, encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if _RestrictedUnpickler._allowed is None:
            _RestrictedUnpickler._allowed = _allowed_globals()
        found = _RestrictedUnpickler._allowed.get((module, name))
        if found is None:
            raise LabelflipError(
                f"refusing to unpickle {module}.{name} from {self.source}: "
                "CIFAR batches may only contain plain dicts, lists and arrays"
            )
        return found


def restricted_load(file: BinaryIO, source: str) -> Any:
    """Unpickle ``file`` allowing nothing but builtin containers and numpy arrays."""
    try:
        return _RestrictedUnpickler(file, source).load()
    except LabelflipError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        KeyError,
        IndexError,
        MemoryError,
        OSError,
        zlib.error,
    ) as e:
        raise LabelflipError(
            f"cannot read CIFAR batch {source}: corrupt or not a pickle ({e})"
        ) from None


def _get(d: dict[Any, Any], key: str) -> Any:
    if key.encode() in d:
        return d[key.encode()]
    return d.get(key)


def _decode_batch(obj: Any, source: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate one unpickled batch; return ``(uint8 (N,3072), int64 (N,))``."""
    if not isinstance(obj, dict):
        raise LabelflipError(f"CIFAR batch {source} is a {type(obj).__name__}, expected a dict")
    data, labels = _get(obj, "data"), _get(obj, "labels")
    if data is None or labels is None:
        raise LabelflipError(f"CIFAR batch {source} lacks 'data' or 'labels'")
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3072
    ):
        what = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise LabelflipError(
            f"CIFAR batch {source} has data of {what}, expected uint8 of shape (N, 3072)"
        )
    try:
        y = np.asarray(labels)
        ok = y.ndim == 1 and (y.size == 0 or np.issubdtype(y.dtype, np.integer))
    except (ValueError, TypeError):
        ok = False
    if not ok:
        raise LabelflipError(f"CIFAR batch {source} has labels that are not a list of integers")
    if len(y) != len(data):
        raise LabelflipError(f"CIFAR batch {source} has {len(data)} images but {len(y)} labels")
    bad = np.flatnonzero((y < 0) | (y >= num_classes))
    if bad.size:
        i = int(bad[0])
        raise LabelflipError(
            f"CIFAR batch {source}: label {int(y[i])} at index {i} is out of range "
            f"0-{num_classes - 1}"
        )
    return data, y.astype(np.int64)


def _class_names(meta: Any, source: str) -> tuple[str, ...]:
    if meta is None:
        return CIFAR10_CLASSES
    names = _get(meta, "label_names") if isinstance(meta, dict) else None
    if names is None:
        return CIFAR10_CLASSES
    try:
        out = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    except (TypeError, UnicodeDecodeError):
        raise LabelflipError(f"{source} has unreadable label_names") from None
    if not out:
        raise LabelflipError(f"{source} has an empty label_names list")
    return out


class Cifar10Source:
    """CIFAR-10, 32x32 RGB, 50000 train / 10000 test (see module docstring)."""

    def __init__(self) -> None:
        self.name = "cifar10"
        self.description = "CIFAR-10 objects, 32x32 RGB, 50000 train / 10000 test"
        self.class_names = CIFAR10_CLASSES
        self.urls = CIFAR10_URLS
        self.md5 = CIFAR10_MD5
        self.folder = "cifar10"

    def __repr__(self) -> str:
        return "Cifar10Source()"

    def _batch_dirs(self, data_dir: Path) -> list[Path]:
        return [data_dir / self.folder / BATCH_DIR, data_dir / BATCH_DIR]

    def _archives(self, data_dir: Path) -> list[Path]:
        return [data_dir / self.folder / ARCHIVE, data_dir / ARCHIVE]

    def locate(self, split: str, data_dir: Path) -> Path | None:
        """The batch directory or archive that provides ``split``, or None."""
        for d in self._batch_dirs(data_dir):
            if all((d / f).is_file() for f in SPLIT_FILES[split]):
                return d
        for a in self._archives(data_dir):
            if a.is_file():
                return a
        return None

    def _obtain(self, split: str, data_dir: Path, download: bool) -> Path:
        dest = data_dir / self.folder / ARCHIVE
        why = download_refusal(download)
        if why is None:
            try:
                return fetch(list(self.urls), dest, md5=self.md5)
            except LabelflipError as e:
                why = f"download failed: {e}"
        files = ", ".join(SPLIT_FILES[split])
        raise LabelflipError(
            f"{self.name}: missing {BATCH_DIR}/{{{files}}} or {ARCHIVE} in "
            f"{data_dir / self.folder} ({why}; place the files there or set "
            "LABELFLIP_DATA / --data-dir)"
        )

    def _read_members(self, where: Path, wanted: tuple[str, ...]) -> dict[str, Any]:
        """Unpickle the wanted batch files (and the meta file if present)."""
        found: dict[str, Any] = {}
        names = (*wanted, META)
        if where.is_dir():
            for name in names:
                path = where / name
                if path.is_file():
                    with open(path, "rb") as f:
                        found[name] = restricted_load(f, str(path))
            return found
        try:
            with tarfile.open(where, "r|gz") as tar:
                for member in tar:
                    base = posixpath.basename(member.name)
                    if base in names and base not in found and member.isfile():
                        f = tar.extractfile(member)
                        assert f is not None
                        found[base] = restricted_load(f, f"{where}:{member.name}")
                        if len(found) == len(names):
                            break
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            raise LabelflipError(f"{where} is corrupt or truncated ({e})") from None
        missing = [n for n in wanted if n not in found]
        if missing:
            raise LabelflipError(f"{where} lacks {BATCH_DIR}/{', '.join(missing)}")
        return found

    def load(self, split: str, data_dir: Path, *, download: bool = True) -> Dataset:
        """Load one split; download the archive if needed and allowed."""
        check_split(self.name, split)
        data_dir = Path(data_dir)
        where = self.locate(split, data_dir) or self._obtain(split, data_dir, download)
        wanted = SPLIT_FILES[split]
        found = self._read_members(where, wanted)
        meta_source = f"{where}/{META}" if where.is_dir() else f"{where}:{META}"
        names = _class_names(found.get(META), meta_source)
        parts = []
        for name in wanted:
            source = f"{where / name}" if where.is_dir() else f"{where}:{name}"
            parts.append(_decode_batch(found[name], source, len(names)))
        data = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
        data = np.require(data, np.uint8, ["C_CONTIGUOUS", "WRITEABLE"])
        x = torch.from_numpy(data).reshape(-1, 3, 32, 32)
        x = x.to(torch.float32).div_(255.0)
        return Dataset(self.name, split, x, torch.from_numpy(labels), names)

    def status(self, data_dir: Path) -> DatasetStatus:
        """Presence from a directory listing; sizes are the canonical ones (not decoded)."""
        data_dir = Path(data_dir)
        sizes: dict[str, int] = {}
        location: Path | None = None
        for split in SPLIT_FILES:
            where = self.locate(split, data_dir)
            if where is not None:
                sizes[split] = CANONICAL_SIZES[split]
                location = location or where
        present = len(sizes) == len(SPLIT_FILES)
        if present:
            note = "sizes as in the canonical release (batches not decoded)"
        else:
            missing = [s for s in SPLIT_FILES if s not in sizes]
            note = f"missing {BATCH_DIR} ({', '.join(missing)}) or {ARCHIVE}"
            if downloads_allowed():
                note += "; downloaded on first use"
        return DatasetStatus(
            name=self.name,
            description=self.description,
            class_names=self.class_names,
            location=location or data_dir / self.folder,
            present=present,
            sizes=sizes,
            input_shape=(3, 32, 32),
            note=note,
        )


CIFAR10 = Cifar10Source()

"""IDX files (the MNIST format) and the ``mnist`` / ``fashion-mnist`` sources.

A source's files live in ``<data_dir>/<name>/``: ``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
``t10k-labels-idx1-ubyte``, each raw or gzip-compressed (``.gz`` preferred
when both exist). Missing files are downloaded unless downloads are off.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from labelflip.data._base import (
    Dataset,
    DatasetStatus,
    check_split,
    download_refusal,
    downloads_allowed,
)
from labelflip.data._download import fetch, file_digest
from labelflip.errors import LabelflipError

IMAGES_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dimension
MAX_PAYLOAD = 1 << 34  # refuse headers that promise more than 16 GiB

# IDX type code -> numpy dtype (multi-byte types are big-endian)
IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}

FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
# SHA-256 of the decompressed files (the official .gz files decompress to these)
MNIST_CHECKSUMS: dict[str, tuple[str, str]] = {
    "train-images-idx3-ubyte": (
        "sha256_decompressed",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    "train-labels-idx1-ubyte": (
        "sha256_decompressed",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    "t10k-images-idx3-ubyte": (
        "sha256_decompressed",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    "t10k-labels-idx1-ubyte": (
        "sha256_decompressed",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
}

FASHION_MNIST_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
# published MD5 of the official .gz files
FASHION_MNIST_CHECKSUMS: dict[str, tuple[str, str]] = {
    "train-images-idx3-ubyte": ("md5", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    "train-labels-idx1-ubyte": ("md5", "25c81989df183df01b3e8a0aad5dffbe"),
    "t10k-images-idx3-ubyte": ("md5", "bef4ecab320f06d8554ea6380940ec79"),
    "t10k-labels-idx1-ubyte": ("md5", "bb300cfdad3c16e7a12a480ee83cd310"),
}

_GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)


def _open(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # type: ignore[return-value]


def _read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    return data if data is not None else b""


def _parse_header(
    f: BinaryIO, path: Path, magic: int | None
) -> tuple[int, int, str, tuple[int, ...]]:
    """``(header length, magic, dtype, dims)``; checks the magic number."""
    head = _read_exact(f, 4)
    if len(head) < 4:
        raise LabelflipError(f"{path} is too short to be an IDX file ({len(head)} bytes)")
    found = struct.unpack(">I", head)[0]
    if magic is not None and found != magic:
        kind = {IMAGES_MAGIC: "images", LABELS_MAGIC: "labels"}.get(magic, "IDX")
        raise LabelflipError(
            f"{path} has magic number {found}, expected {magic} for an IDX {kind} file"
        )
    if head[0] != 0 or head[1] != 0 or head[2] not in IDX_DTYPES or head[3] == 0:
        raise LabelflipError(f"{path} is not an IDX file (bad magic number {found})")
    ndim = head[3]
    raw = _read_exact(f, 4 * ndim)
    if len(raw) < 4 * ndim:
        raise LabelflipError(f"{path} is truncated inside its IDX header")
    dims = struct.unpack(f">{ndim}I", raw)
    return 4 + 4 * ndim, found, IDX_DTYPES[head[2]], tuple(int(d) for d in dims)


def read_idx_header(path: str | Path, *, magic: int | None = None) -> tuple[int, tuple[int, ...]]:
    """``(magic, dims)`` of an IDX file (raw or ``.gz``), reading only the header."""
    path = Path(path)
    try:
        with _open(path) as f:
            _, found, _, dims = _parse_header(f, path, magic)
    except _GZIP_ERRORS as e:
        raise LabelflipError(f"{path} is corrupt or truncated ({e})") from None
    except OSError as e:
        raise LabelflipError(f"cannot read {path}: {e}") from None
    return found, dims


def read_idx(path: str | Path, *, magic: int | None = None) -> np.ndarray:
    """Read a whole IDX file (raw or ``.gz``) into a writable numpy array.

    The payload must match the header's dimensions exactly: truncated files
    and trailing bytes are errors, as are gzip CRC/truncation failures.
    """
    path = Path(path)
    try:
        with _open(path) as f:
            header_len, _, dtype, dims = _parse_header(f, path, magic)
            itemsize = np.dtype(dtype).itemsize
            nbytes = math.prod(dims) * itemsize
            if nbytes > MAX_PAYLOAD:
                raise LabelflipError(f"{path} has implausible IDX dimensions {dims}")
            if path.suffix != ".gz":  # cheap exact size check before allocating
                have = path.stat().st_size - header_len
                if have != nbytes:
                    raise LabelflipError(_size_message(path, dims, nbytes, have))
            buf = bytearray(nbytes)
            view = memoryview(buf)
            got = 0
            while got < nbytes:
                n = f.readinto(view[got:])  # type: ignore[attr-defined]
                if not n:
                    break
                got += n
            if got < nbytes:
                raise LabelflipError(_size_message(path, dims, nbytes, got))
            extra = len(f.read(1 << 16))
            if extra:
                raise LabelflipError(_size_message(path, dims, nbytes, nbytes + extra, more=True))
    except _GZIP_ERRORS as e:
        raise LabelflipError(f"{path} is corrupt or truncated ({e})") from None
    except OSError as e:
        raise LabelflipError(f"cannot read {path}: {e}") from None
    return np.frombuffer(buf, dtype=dtype).reshape(dims)


def _size_message(
    path: Path, dims: tuple[int, ...], want: int, have: int, more: bool = False
) -> str:
    shape = "x".join(map(str, dims))
    if have < want:
        return (
            f"{path} is truncated: header says {shape} ({want} data bytes) but only {have} follow"
        )
    plus = "+" if more else ""
    return (
        f"{path} has trailing bytes: header says {shape} ({want} data bytes) "
        f"but {have}{plus} follow"
    )


class IdxSource:
    """An MNIST-format dataset in ``<data_dir>/<folder>/`` (see module docstring)."""

    def __init__(
        self,
        name: str,
        description: str,
        class_names: Sequence[str],
        mirrors: Sequence[str],
        checksums: dict[str, tuple[str, str]],
        folder: str | None = None,
    ) -> None:
        self.name = name
        self.description = description
        self.class_names = tuple(class_names)
        self.mirrors = tuple(mirrors)
        self.checksums = dict(checksums)
        self.folder = folder or name

    def __repr__(self) -> str:
        return f"IdxSource({self.name!r})"

    @staticmethod
    def find(folder: Path, base: str) -> Path | None:
        """``<base>.gz`` if it exists, else ``<base>``, else None."""
        for candidate in (folder / f"{base}.gz", folder / base):
            if candidate.is_file():
                return candidate
        return None

    def _obtain(self, missing: list[str], folder: Path, download: bool) -> None:
        why = download_refusal(download)
        if why is None:
            try:
                for base in missing:
                    kind, digest = self.checksums[base]
                    fetch(
                        [m + base + ".gz" for m in self.mirrors],
                        folder / f"{base}.gz",
                        **{kind: digest},
                    )
                return
            except LabelflipError as e:
                why = f"download failed: {e}"
        names = ", ".join(f"{base}(.gz)" for base in missing)
        raise LabelflipError(
            f"{self.name}: missing {names} in {folder} "
            f"({why}; place the files there or set LABELFLIP_DATA / --data-dir)"
        )

    def load(self, split: str, data_dir: Path, *, download: bool = True) -> Dataset:
        """Load one split; download missing files if allowed."""
        check_split(self.name, split)
        folder = Path(data_dir) / self.folder
        bases = FILES[split]
        missing = [b for b in bases if self.find(folder, b) is None]
        if missing:
            self._obtain(missing, folder, download)
        img_path, lbl_path = (self.find(folder, b) for b in bases)
        assert img_path is not None and lbl_path is not None
        # headers first: a count mismatch is reported without decoding anything
        _, idims = read_idx_header(img_path, magic=IMAGES_MAGIC)
        _, ldims = read_idx_header(lbl_path, magic=LABELS_MAGIC)
        if idims[0] != ldims[0]:
            raise LabelflipError(
                f"{self.name}: {img_path} has {idims[0]} images "
                f"but {lbl_path} has {ldims[0]} labels"
            )
        if idims[1] == 0 or idims[2] == 0:
            raise LabelflipError(f"{img_path} has empty images ({idims[1]}x{idims[2]})")
        images = read_idx(img_path, magic=IMAGES_MAGIC)
        labels = read_idx(lbl_path, magic=LABELS_MAGIC)
        k = len(self.class_names)
        bad = np.flatnonzero(labels >= k)
        if bad.size:
            i = int(bad[0])
            raise LabelflipError(
                f"{lbl_path}: label {int(labels[i])} at index {i} is out of range 0-{k - 1} "
                f"({bad.size} such labels)"
            )
        n, rows, cols = images.shape
        x = torch.from_numpy(images).reshape(n, 1, rows, cols).to(torch.float32).div_(255.0)
        y = torch.from_numpy(labels.astype(np.int64))
        return Dataset(self.name, split, x, y, self.class_names)

    def status(self, data_dir: Path) -> DatasetStatus:
        """Presence, sizes and shape from the file headers only (fast)."""
        folder = Path(data_dir) / self.folder
        sizes: dict[str, int] = {}
        shape: tuple[int, int, int] | None = None
        missing: list[str] = []
        problems: list[str] = []
        for split, (ibase, lbase) in FILES.items():
            ipath, lpath = self.find(folder, ibase), self.find(folder, lbase)
            missing += [f"{b}(.gz)" for b, p in ((ibase, ipath), (lbase, lpath)) if p is None]
            if ipath is None or lpath is None:
                continue
            try:
                _, idims = read_idx_header(ipath, magic=IMAGES_MAGIC)
                _, ldims = read_idx_header(lpath, magic=LABELS_MAGIC)
            except LabelflipError as e:
                problems.append(str(e))
                continue
            if idims[0] != ldims[0]:
                problems.append(f"{split}: {idims[0]} images but {ldims[0]} labels")
                continue
            sizes[split] = idims[0]
            shape = (1, idims[1], idims[2])
        notes = []
        if len(missing) == 2 * len(FILES):
            notes.append("no IDX files")
        elif missing:
            notes.append("missing " + ", ".join(missing))
            if downloads_allowed():
                notes.append("downloaded on first use")
        notes += problems
        return DatasetStatus(
            name=self.name,
            description=self.description,
            class_names=self.class_names,
            location=folder,
            present=not missing and not problems,
            sizes=sizes,
            input_shape=shape,
            note="; ".join(notes),
        )

    def verify(self, data_dir: Path) -> dict[str, str]:
        """Check the files against the known checksums (slow: reads every file).

        Returns file base name -> ``"ok"``, ``"mismatch"``, ``"missing"`` or
        ``"unknown"`` (no checksum known for this form of the file, e.g. a raw
        file when only the ``.gz`` MD5 is published).
        """
        folder = Path(data_dir) / self.folder
        result: dict[str, str] = {}
        for base in (b for pair in FILES.values() for b in pair):
            path = self.find(folder, base)
            kind, digest = self.checksums[base]
            if path is None:
                result[base] = "missing"
                continue
            gz = path.suffix == ".gz"
            try:
                if kind == "sha256_decompressed":
                    actual = file_digest(path, "sha256", gunzip=gz)
                elif kind in ("md5", "sha256") and gz:
                    actual = file_digest(path, kind)
                else:
                    result[base] = "unknown"
                    continue
            except LabelflipError:
                actual = ""
            result[base] = "ok" if actual == digest else "mismatch"
        return result


MNIST = IdxSource(
    "mnist",
    "MNIST handwritten digits, 28x28 grayscale, 60000 train / 10000 test",
    MNIST_CLASSES,
    MNIST_MIRRORS,
    MNIST_CHECKSUMS,
)

FASHION_MNIST = IdxSource(
    "fashion-mnist",
    "Fashion-MNIST clothing images, 28x28 grayscale, 60000 train / 10000 test",
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_MIRRORS,
    FASHION_MNIST_CHECKSUMS,
)

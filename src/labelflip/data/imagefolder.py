"""Image folders: ``<root>/{train,test}/<class>/*.{png,jpg,jpeg}``.

Class order is the sorted class-folder names of both splits together (so a
label means the same class in train and test) unless an explicit class list
is given. Files are read in name order. If every image of the split is
grayscale (Pillow mode ``L`` or ``1``) the data has 1 channel, otherwise all
images are converted to RGB. All images must have the same size.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from labelflip.data._base import SPLITS, Dataset, DatasetStatus, check_split
from labelflip.errors import LabelflipError

IMAGEFOLDER_PREFIX = "imagefolder:"
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg"})
GRAY_MODES = frozenset({"L", "1"})


def _subdirs(folder: Path) -> list[str]:
    """Sorted names of the non-hidden subdirectories of ``folder``."""
    try:
        with os.scandir(folder) as it:
            return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return []


def image_files(folder: Path) -> list[Path]:
    """The image files of one class folder, sorted by name."""
    with os.scandir(folder) as it:
        names = sorted(
            e.name
            for e in it
            if not e.name.startswith(".")
            and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
            and e.is_file()
        )
    return [folder / n for n in names]


def _count_images(folder: Path) -> int:
    try:
        with os.scandir(folder) as it:
            return sum(
                1
                for e in it
                if not e.name.startswith(".")
                and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
            )
    except OSError:
        return 0


def _is_imagefolder(path: Path) -> bool:
    return any(_subdirs(path / split) for split in SPLITS if (path / split).is_dir())


def discover_imagefolders(data_dir: Path) -> list[str]:
    """Dataset names (``imagefolder:<dir>``) of the image folders directly in ``data_dir``."""
    return [
        f"{IMAGEFOLDER_PREFIX}{name}"
        for name in _subdirs(Path(data_dir))
        if _is_imagefolder(Path(data_dir) / name)
    ]


def resolve_root(spec: str, data_dir: Path) -> Path:
    """``spec`` itself if absolute or existing relative to the cwd, else ``data_dir/spec``."""
    path = Path(spec).expanduser()
    if path.is_absolute() or path.exists():
        return path
    return Path(data_dir) / spec


class _Restart(Exception):
    """A colour image turned up while decoding a split assumed grayscale."""


def _decode_all(files: list[Path], workers: int | None = None) -> np.ndarray:
    """Decode ``files`` into uint8 ``(N, H, W)`` (all grayscale) or ``(N, H, W, 3)``."""
    try:
        with Image.open(files[0]) as im:
            size, gray = im.size, im.mode in GRAY_MODES
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise LabelflipError(f"cannot read image {files[0]}: {e}") from None
    try:
        return _decode_as(files, size, gray, workers)
    except _Restart:
        return _decode_as(files, size, False, workers)


def _decode_as(
    files: list[Path], size: tuple[int, int], gray: bool, workers: int | None
) -> np.ndarray:
    w, h = size
    out = np.empty((len(files), h, w) if gray else (len(files), h, w, 3), dtype=np.uint8)
    target = "L" if gray else "RGB"

    def run(lo: int, hi: int) -> tuple[int, str] | None:
        """Decode files[lo:hi]; return the first problem as (index, message)."""
        for i in range(lo, hi):
            path = files[i]
            try:
                with Image.open(path) as im:
                    if im.size != size:
                        return i, (
                            f"image {path} is {im.size[0]}x{im.size[1]} but the first image "
                            f"({files[0]}) is {w}x{h}; all images must have the same size"
                        )
                    if gray and im.mode not in GRAY_MODES:
                        return i, "restart"
                    out[i] = np.asarray(im if im.mode == target else im.convert(target))
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
                return i, f"cannot read image {path}: {e}"
        return None

    n = len(files)
    workers = workers or min(8, os.cpu_count() or 1)
    chunk = max(64, -(-n // (workers * 8)))
    bounds = [(lo, min(lo + chunk, n)) for lo in range(0, n, chunk)]
    if workers == 1 or len(bounds) == 1:
        problems = []
        for lo, hi in bounds:
            p = run(lo, hi)
            if p is not None:
                problems.append(p)
                break
    else:
        with ThreadPoolExecutor(workers) as pool:
            problems = [p for p in pool.map(lambda b: run(*b), bounds) if p is not None]
    if problems:
        _, message = min(problems)
        if message == "restart":
            raise _Restart
        raise LabelflipError(message)
    return out


class ImageFolderSource:
    """Images in ``<root>/{train,test}/<class>/`` (see module docstring)."""

    def __init__(
        self, root: Path, classes: Sequence[str] | None = None, *, spec: str | None = None
    ) -> None:
        self.root = Path(root)
        self.spec = spec if spec is not None else str(root)
        self.name = f"{IMAGEFOLDER_PREFIX}{self.spec}"
        self.description = f"image folder {self.root}/{{train,test}}/<class>/"
        self.classes = tuple(classes) if classes is not None else None
        if self.classes is not None and not self.classes:
            raise LabelflipError(f"{self.name}: the class list is empty")
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            raise LabelflipError(f"{self.name}: the class list has duplicates")

    def __repr__(self) -> str:
        return f"ImageFolderSource({self.root!r}, classes={self.classes!r})"

    def class_names(self) -> tuple[str, ...]:
        """The given classes, else the sorted class folders of both splits."""
        if self.classes is not None:
            return self.classes
        names: set[str] = set()
        for split in SPLITS:
            names.update(_subdirs(self.root / split))
        return tuple(sorted(names))

    def _split_dir(self, split: str) -> Path:
        if not self.root.is_dir():
            raise LabelflipError(f"{self.name}: image folder {self.root} does not exist")
        folder = self.root / split
        if not folder.is_dir():
            raise LabelflipError(
                f"{self.name}: no '{split}' folder in {self.root} "
                f"(expected {folder}/<class>/<image>)"
            )
        return folder

    def listing(self, split: str) -> tuple[tuple[str, ...], list[Path], np.ndarray]:
        """``(class names, image files, labels)`` of one split, without decoding."""
        check_split(self.name, split)
        folder = self._split_dir(split)
        present = _subdirs(folder)
        if not present:
            raise LabelflipError(f"{self.name}: no class folders in {folder}")
        names = self.class_names()
        if self.classes is not None:
            missing = [c for c in names if c not in present]
            if missing:
                raise LabelflipError(
                    f"{self.name}: no folder for class(es) {', '.join(missing)} in {folder} "
                    f"(found: {', '.join(present)})"
                )
        files: list[Path] = []
        labels: list[int] = []
        for k, cls in enumerate(names):
            if cls not in present:
                continue  # a class that only the other split has
            found = image_files(folder / cls)
            if not found:
                raise LabelflipError(
                    f"{self.name}: class folder {folder / cls} has no images "
                    f"({', '.join(sorted(IMAGE_EXTENSIONS))})"
                )
            files += found
            labels += [k] * len(found)
        return names, files, np.asarray(labels, dtype=np.int64)

    def load(self, split: str, data_dir: Path | None = None, *, download: bool = True) -> Dataset:
        """Decode one split into memory (``data_dir``/``download`` are unused)."""
        names, files, labels = self.listing(split)
        pixels = _decode_all(files)
        x = torch.from_numpy(pixels)
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
        x = x.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)
        return Dataset(self.name, split, x, torch.from_numpy(labels), names)

    def status(self, data_dir: Path | None = None) -> DatasetStatus:
        """Counts image files per split; the shape comes from the first image's header."""
        sizes: dict[str, int] = {}
        notes: list[str] = []
        shape: tuple[int, int, int] | None = None
        names: tuple[str, ...] = ()
        if not self.root.is_dir():
            notes.append(f"{self.root} does not exist")
        else:
            names = self.class_names()
            for split in SPLITS:
                folder = self.root / split
                if not folder.is_dir():
                    notes.append(f"no {split}/ folder")
                    continue
                sizes[split] = sum(_count_images(folder / c) for c in names)
                if shape is None:
                    shape = self._first_shape(folder, names)
        return DatasetStatus(
            name=self.name,
            description=self.description,
            class_names=names,
            location=self.root,
            present=any(sizes.values()),
            sizes=sizes,
            input_shape=shape,
            note="; ".join(notes),
        )

    @staticmethod
    def _first_shape(folder: Path, names: Sequence[str]) -> tuple[int, int, int] | None:
        for cls in names:
            if not (folder / cls).is_dir():
                continue
            files = image_files(folder / cls)
            if files:
                try:
                    with Image.open(files[0]) as im:
                        return (1 if im.mode in GRAY_MODES else 3, im.size[1], im.size[0])
                except (OSError, ValueError):
                    return None
        return None

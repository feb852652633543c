"""Image folders: ``<root>/{train,test}/<class>/*.{png,jpg,jpeg}``.

Class order is the sorted class-folder names of both splits together (so a
label means the same class in train and test) unless an explicit class list
is given. Files are read in name order. If every image of the split is
greyscale (Pillow mode ``L`` or ``1``, or 16-bit ``I;16``) the data has 1
channel, otherwise all images are converted to RGB. Pixels are scaled to
[0, 1] at their own depth: 8-bit values by 1/255, 16-bit greyscale (PNG)
values by 1/65535, so a split with any 16-bit image is read at 16 bits. All
images must have the same size.

Hidden folders (names starting with ``.``, e.g. ``.ipynb_checkpoints``) are
not classes: they are skipped with a warning. A class folder that only one
of the two splits has is kept (labels follow the classes of both splits) with
a warning. :func:`check_splits_match` refuses a train and a test split of
different image shapes (e.g. greyscale training images beside colour test
images), naming the files that differ.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from labelflip.data._base import SPLITS, Dataset, DatasetStatus, check_split
from labelflip.errors import LabelflipError, LabelflipWarning

IMAGEFOLDER_PREFIX = "imagefolder:"
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg"})
GRAY_MODES = frozenset({"L", "1"})  # 8-bit (and 1-bit) greyscale
WIDE_GRAY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})  # 16-bit greyscale PNGs
_READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def _subdirs(folder: Path, *, hidden: bool = False) -> list[str]:
    """Sorted names of the non-hidden (``hidden``: the hidden) subdirectories of ``folder``."""
    try:
        with os.scandir(folder) as it:
            return sorted(e.name for e in it if e.is_dir() and e.name.startswith(".") == hidden)
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


def _kind(mode: str) -> tuple[bool, bool]:
    """``(greyscale, 16-bit)`` of a Pillow image mode."""
    return mode in GRAY_MODES or mode in WIDE_GRAY_MODES, mode in WIDE_GRAY_MODES


class _Restart(Exception):
    """An image needs more than the split was assumed to hold: colour in a
    greyscale split, or 16 bits in an 8-bit one."""

    def __init__(self, colour: bool, wide: bool) -> None:
        super().__init__()
        self.colour, self.wide = colour, wide


def _pixels(im: Image.Image, gray: bool, wide: bool) -> np.ndarray:
    """One image as ``(H, W)`` (``gray``) or ``(H, W, 3)``, uint16 if ``wide``
    (8-bit values times 257, so that k/255 = 257k/65535) else uint8."""
    if im.mode in WIDE_GRAY_MODES:
        a = np.asarray(im)
        if a.dtype.kind == "i" and a.size and (a.min() < 0 or a.max() > 65535):
            raise ValueError(f"mode {im.mode} pixel values outside 0-65535")
        a = a.astype(np.uint16)
        return a if gray else np.repeat(a[..., None], 3, axis=2)
    target = "L" if gray else "RGB"
    a = np.asarray(im if im.mode == target else im.convert(target))
    return a.astype(np.uint16) * np.uint16(257) if wide else a


def _decode_all(files: list[Path], workers: int | None = None) -> tuple[np.ndarray, int]:
    """Decode ``files`` into ``(N, H, W)`` (all greyscale) or ``(N, H, W, 3)``
    pixels and their full scale (255 for uint8, 65535 for uint16 pixels)."""
    try:
        with Image.open(files[0]) as im:
            size, (gray, wide) = im.size, _kind(im.mode)
    except _READ_ERRORS as e:
        raise LabelflipError(f"cannot read image {files[0]}: {e}") from None
    while True:
        try:
            return _decode_as(files, size, gray, wide, workers), 65535 if wide else 255
        except _Restart as r:
            gray, wide = gray and not r.colour, wide or r.wide


def _decode_as(
    files: list[Path], size: tuple[int, int], gray: bool, wide: bool, workers: int | None
) -> np.ndarray:
    w, h = size
    shape = (len(files), h, w) if gray else (len(files), h, w, 3)
    out = np.empty(shape, dtype=np.uint16 if wide else np.uint8)

    def run(lo: int, hi: int) -> tuple[int, str | _Restart] | None:
        """Decode files[lo:hi]; return the first problem as (index, message or restart)."""
        for i in range(lo, hi):
            path = files[i]
            try:
                with Image.open(path) as im:
                    if im.size != size:
                        return i, (
                            f"image {path} is {im.size[0]}x{im.size[1]} but the first image "
                            f"({files[0]}) is {w}x{h}; all images must have the same size"
                        )
                    g, wd = _kind(im.mode)
                    if (gray and not g) or (wd and not wide):
                        return i, _Restart(colour=gray and not g, wide=wd and not wide)
                    out[i] = _pixels(im, gray, wide)
            except _READ_ERRORS as e:
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
        _, problem = min(problems, key=lambda p: p[0])
        if isinstance(problem, _Restart):
            raise problem
        raise LabelflipError(problem)
    return out


def colour_files(files: Sequence[Path]) -> list[Path]:
    """The files among ``files`` that are not greyscale (from their headers)."""
    found = []
    for path in files:
        try:
            with Image.open(path) as im:
                if not _kind(im.mode)[0]:
                    found.append(path)
        except _READ_ERRORS:
            continue
    return found


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
        """``(class names, image files, labels)`` of one split, without decoding
        (warns about hidden folders and class folders that one split lacks)."""
        check_split(self.name, split)
        folder = self._split_dir(split)
        present = _subdirs(folder)
        hidden = _subdirs(folder, hidden=True)
        if hidden:
            warnings.warn(
                f"{self.name}: ignoring hidden folder(s) {', '.join(hidden)} in {folder} "
                "(names starting with '.' are not classes)",
                LabelflipWarning,
                stacklevel=1,  # one location: the same folder is reported once per process
            )
        if not present:
            raise LabelflipError(f"{self.name}: no class folders in {folder}")
        names = self.class_names()
        if self.classes is None:
            self._warn_one_split_classes()
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

    def _warn_one_split_classes(self) -> None:
        """One warning when both splits exist and their class folders differ."""
        if not all((self.root / split).is_dir() for split in SPLITS):
            return
        have = {split: set(_subdirs(self.root / split)) for split in SPLITS}
        only = sorted(
            (name, split) for split, other in zip(SPLITS, SPLITS[::-1], strict=True)
            for name in have[split] - have[other]
        )  # fmt: skip
        if only and all(have.values()):
            listed = ", ".join(f"{name} ({split} only)" for name, split in only)
            warnings.warn(
                f"{self.name}: class folder(s) in one split only: {listed}; labels follow "
                "the classes of both splits",
                LabelflipWarning,
                stacklevel=1,
            )

    def load(self, split: str, data_dir: Path | None = None, *, download: bool = True) -> Dataset:
        """Decode one split into memory (``data_dir``/``download`` are unused)."""
        names, files, labels = self.listing(split)
        pixels, scale = _decode_all(files)
        x = torch.from_numpy(pixels if pixels.dtype == np.uint8 else pixels.astype(np.float32))
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
        x = x.to(torch.float32, memory_format=torch.contiguous_format).div_(float(scale))
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
                    shape, problem = self._first_shape(folder, names)
                    if problem:
                        notes.append(problem)
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
    def _first_shape(folder: Path, names: Sequence[str]) -> tuple[tuple[int, int, int] | None, str]:
        """The shape of the split's first image from its header, or ``None``
        and why it cannot be read."""
        for cls in names:
            if not (folder / cls).is_dir():
                continue
            files = image_files(folder / cls)
            if files:
                try:
                    with Image.open(files[0]) as im:
                        return (1 if _kind(im.mode)[0] else 3, im.size[1], im.size[0]), ""
                except _READ_ERRORS as e:
                    return None, f"cannot read {files[0]}: {' '.join(str(e).split())}"
        return None, ""

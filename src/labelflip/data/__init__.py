"""The dataset layer: a registry of named sources plus ``imagefolder:<path>``.

>>> ds = load_dataset("mnist", "test")          # doctest: +SKIP
>>> ds.x.shape, ds.class_names[:3]               # doctest: +SKIP
(torch.Size([10000, 1, 28, 28]), ('0', '1', '2'))

``mnist-grid`` is multi-label (``ds.multilabel``): its ``class_names`` are
label names and ``y`` label-vector bitmasks (see :mod:`labelflip.data.grid`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from labelflip.data._base import (
    DATA_ENV,
    OFFLINE_ENV,
    SPLITS,
    Dataset,
    DatasetSource,
    DatasetStatus,
    downloads_allowed,
    resolve_data_dir,
)
from labelflip.data.cifar import CIFAR10
from labelflip.data.digits import DIGITS
from labelflip.data.grid import MNIST_GRID
from labelflip.data.idx import FASHION_MNIST, MNIST
from labelflip.data.imagefolder import (
    IMAGEFOLDER_PREFIX,
    ImageFolderSource,
    colour_files,
    discover_imagefolders,
    resolve_root,
)
from labelflip.errors import LabelflipError, unknown_name

REGISTRY: dict[str, DatasetSource] = {
    source.name: source for source in (DIGITS, MNIST, FASHION_MNIST, CIFAR10, MNIST_GRID)
}


def get_source(name: str, data_dir: Path, *, classes: Sequence[str] | None = None) -> DatasetSource:
    """The source registered as ``name``, or an :class:`ImageFolderSource` for
    ``imagefolder:<path>`` (``<path>`` absolute or relative to the cwd if it
    exists there, else relative to ``data_dir``). ``classes`` (an explicit class
    list and order) only applies to image folders.
    """
    if name.startswith(IMAGEFOLDER_PREFIX):
        spec = name[len(IMAGEFOLDER_PREFIX) :]
        if not spec:
            raise LabelflipError("imagefolder: needs a path, e.g. imagefolder:my-images")
        return ImageFolderSource(resolve_root(spec, Path(data_dir)), classes, spec=spec)
    source = REGISTRY.get(name)
    if source is None:
        raise unknown_name("dataset", name, [*REGISTRY, f"{IMAGEFOLDER_PREFIX}<path>"])
    if classes is not None:
        raise LabelflipError(
            f"dataset '{name}' has fixed classes; a class list only applies to imagefolder:<path>"
        )
    return source


def load_dataset(
    name: str,
    split: str = "test",
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    classes: Sequence[str] | None = None,
) -> Dataset:
    """Load one split of a dataset; ``data_dir`` is resolved with :func:`resolve_data_dir`."""
    root = resolve_data_dir(data_dir)
    return get_source(name, root, classes=classes).load(split, root, download=download)


def dataset_statuses(data_dir: Path) -> list[DatasetStatus]:
    """Status of every registered dataset, then of every image folder found in
    ``data_dir``. A dataset whose status cannot be read (a corrupt file, a
    decompression bomb) is listed with the error as its note; the others are
    listed as usual."""
    data_dir = Path(data_dir)
    sources: list[DatasetSource] = list(REGISTRY.values())
    for name in discover_imagefolders(data_dir):
        spec = name[len(IMAGEFOLDER_PREFIX) :]
        sources.append(ImageFolderSource(data_dir / spec, spec=spec))
    statuses = []
    for source in sources:
        try:
            statuses.append(source.status(data_dir))
        except (LabelflipError, OSError) as e:
            statuses.append(
                DatasetStatus(
                    name=source.name,
                    description=source.description,
                    class_names=(),
                    location=None,
                    present=False,
                    note=f"error: {e}",
                )
            )
    return statuses


def check_splits_match(
    train: Dataset, test: Dataset, data_dir: str | os.PathLike[str] | None = None
) -> None:
    """Refuse a train and a test split whose images differ in shape (one line,
    before a model is trained on one and tested on the other). For an image
    folder the message names the colour files of a split whose other images,
    or whose other split, are greyscale."""
    if train.input_shape == test.input_shape:
        return
    name = test.name
    (c_train, h_train, w_train), (c_test, h_test, w_test) = train.input_shape, test.input_shape
    if (h_train, w_train) != (h_test, w_test):
        raise LabelflipError(
            f"{name}: the train images are {w_train}x{h_train} but the test images are "
            f"{w_test}x{h_test}; both splits must have one image size"
        )
    grey, colour = ("train", "test") if c_train == 1 else ("test", "train")
    detail = f"the {colour} images have {max(c_train, c_test)} channels"
    if name.startswith(IMAGEFOLDER_PREFIX):
        source = get_source(name, resolve_data_dir(data_dir))
        assert isinstance(source, ImageFolderSource)
        _, files, _ = source.listing(colour)
        found = colour_files(files)
        shown = ", ".join(str(f) for f in found[:5])
        more = f" and {len(found) - 5} more" if len(found) > 5 else ""
        detail = f"{len(found)} of the {len(files)} {colour} images are colour: {shown}{more}"
    raise LabelflipError(
        f"{name}: the {grey} images are greyscale (1 channel) but {detail}; make both "
        "splits greyscale or both colour"
    )


__all__ = [
    "DATA_ENV",
    "OFFLINE_ENV",
    "REGISTRY",
    "SPLITS",
    "Dataset",
    "DatasetSource",
    "DatasetStatus",
    "ImageFolderSource",
    "check_splits_match",
    "dataset_statuses",
    "discover_imagefolders",
    "downloads_allowed",
    "get_source",
    "load_dataset",
    "resolve_data_dir",
]

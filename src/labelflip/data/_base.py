"""Shared types of the dataset layer: the loaded :class:`Dataset`, the
:class:`DatasetSource` protocol every registered dataset implements, and the
data-directory resolution rule (CLI option > ``LABELFLIP_DATA`` > user cache).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from labelflip.errors import LabelflipError

SPLITS = ("train", "test")
DATA_ENV = "LABELFLIP_DATA"
OFFLINE_ENV = "LABELFLIP_OFFLINE"


@dataclass(frozen=True, eq=False)
class Dataset:
    """One split of a dataset, fully in memory.

    ``x`` is float32 in ``[0, 1]`` with shape ``(N, C, H, W)``; ``y`` is int64
    with shape ``(N,)`` and values in ``[0, num_classes)``.

    A ``multilabel`` dataset (JMA paper, §III-C) has several labels per
    image: ``class_names`` are then the label names, ``y`` holds each
    image's label vector as a bitmask ``Σ_j 2^j [label j present]`` and
    :attr:`num_classes` is the number of label vectors, ``2**labels`` (as for
    a multi-label :class:`~labelflip.models.Classifier`).
    """

    name: str
    split: str
    x: torch.Tensor
    y: torch.Tensor
    class_names: tuple[str, ...]
    multilabel: bool = False

    def __post_init__(self) -> None:
        if self.x.ndim != 4 or self.x.dtype != torch.float32:
            raise ValueError(f"x must be float32 NCHW, got {self.x.dtype} {tuple(self.x.shape)}")
        if self.y.shape != (self.x.shape[0],) or self.y.dtype != torch.int64:
            raise ValueError(f"y must be int64 of shape ({self.x.shape[0]},)")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.x.shape[1:]
        return (int(c), int(h), int(w))

    @property
    def num_classes(self) -> int:
        """Decision classes: the classes, or ``2**labels`` label vectors if multi-label."""
        return 1 << len(self.class_names) if self.multilabel else len(self.class_names)

    @property
    def label_names(self) -> tuple[str, ...]:
        """The class names, or for a multi-label dataset the label names (the same tuple)."""
        return self.class_names

    @property
    def num_labels(self) -> int:
        """``len(class_names)``: classes, or labels of a multi-label dataset."""
        return len(self.class_names)


@dataclass(frozen=True)
class DatasetStatus:
    """What ``labelflip datasets`` reports for one dataset."""

    name: str
    description: str
    class_names: tuple[str, ...]
    location: Path | None  # where the files are (or are expected); None if built in
    present: bool
    sizes: dict[str, int] = field(default_factory=dict)  # split -> number of images
    input_shape: tuple[int, int, int] | None = None
    note: str = ""  # e.g. which files are missing
    multilabel: bool = False  # class_names are label names; labels are bitmasks


class DatasetSource(Protocol):
    """A registered dataset: knows its files, loads a split, reports status."""

    name: str
    description: str

    def load(self, split: str, data_dir: Path, *, download: bool = True) -> Dataset: ...

    def status(self, data_dir: Path) -> DatasetStatus: ...


def resolve_data_dir(option: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: the CLI option, else ``$LABELFLIP_DATA``, else the
    per-user cache directory (``platformdirs.user_cache_path('labelflip')/datasets``).
    """
    if option:
        return Path(option).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return platformdirs.user_cache_path("labelflip") / "datasets"


def downloads_allowed() -> bool:
    """False when ``LABELFLIP_OFFLINE`` is set to a true value (1, true, yes)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in {"1", "true", "yes", "on"}


def download_refusal(download: bool) -> str | None:
    """Why missing files will not be downloaded, or ``None`` if they may be."""
    if not download:
        return "download not requested"
    if not downloads_allowed():
        return f"downloads disabled by {OFFLINE_ENV}"
    return None


def check_split(name: str, split: str) -> None:
    if split not in SPLITS:
        raise LabelflipError(f"dataset '{name}' has no split '{split}' (use one of: train, test)")

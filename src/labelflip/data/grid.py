"""The ``mnist-grid`` source: a multi-label dataset built from MNIST.

A test bed for multi-label classifiers (JMA paper, §III-C): each image is a
28×28 grayscale composite of a 2×2 grid of 14×14 cells. Every cell is, on
its own, empty (all zeros) with probability :data:`P_EMPTY` = 0.25, or holds
an MNIST digit drawn uniformly at random (with replacement) from the same
MNIST split and downsampled to 14×14 by 2×2 average pooling. The ten labels
``"0"`` … ``"9"`` mark which digits are present; the label vector is stored
as one int64 bitmask ``y = Σ_j 2^j [digit j present]`` (see
:mod:`labelflip.models.encoding`), so ``Dataset.multilabel`` is true,
``class_names`` are the label names and ``num_classes`` is ``2**10``.

The **train** split has 60 000 composites made from the MNIST training
images, the **test** split 10 000 made from the MNIST test images (so no
test digit is ever seen in training). Generation is deterministic: one
explicit :class:`torch.Generator` seeded with :data:`GRID_SEED` (train) or
``GRID_SEED + 1`` (test) draws first the empty cells, then the source
digits; the same MNIST files give the same dataset bit for bit. An
all-empty image (label vector ∅) occurs with probability
``0.25**4 ≈ 0.4 %``, which is kept: a realistic "nothing there" case.

Only the four MNIST IDX files are needed (``<data_dir>/mnist/``); they are
downloaded like MNIST's when missing and downloads are allowed.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from labelflip.data._base import Dataset, DatasetStatus, check_split
from labelflip.data.idx import MNIST, MNIST_CLASSES, IdxSource

GRID_SEED = 20240917  # train: GRID_SEED, test: GRID_SEED + 1
P_EMPTY = 0.25
GRID = 2  # cells per side
CELL = 14  # cell side in pixels (MNIST's 28 pooled 2x2)


def pool_digits(images: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Images ``(M, H, W)`` downsampled by ``factor × factor`` average pooling
    (deterministic), ``(M, H / factor, W / factor)``."""
    return F.avg_pool2d(images.unsqueeze(1), factor).squeeze(1)


def make_grid(
    cells: torch.Tensor,
    labels: torch.Tensor,
    n: int,
    generator: torch.Generator,
    *,
    p_empty: float = P_EMPTY,
    grid: int = GRID,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` composites of ``grid × grid`` cells drawn from ``cells`` (M, h, w).

    Each cell is empty with probability ``p_empty`` (drawn first, one uniform
    per cell, row-major), else a copy of ``cells[i]`` with ``i`` uniform in
    ``[0, M)`` (drawn second). Returns the images ``(n, 1, grid·h, grid·w)``
    (float32), their label bitmasks ``(n,)`` (int64: bit ``labels[i]`` set
    for every placed ``i``) and the placed source indices ``(n, grid²)``
    (``-1`` for an empty cell, row-major).
    """
    m, h, w = cells.shape
    k = grid * grid
    empty = torch.rand(n, k, generator=generator) < p_empty
    source = torch.randint(0, m, (n, k), generator=generator)
    source = torch.where(empty, torch.full_like(source, -1), source)
    placed = cells[source.clamp_min(0)]  # (n, k, h, w), a copy
    placed[empty] = 0.0
    x = (
        placed.view(n, grid, grid, h, w)
        .permute(0, 1, 3, 2, 4)  # (n, grid row, pixel row, grid col, pixel col)
        .reshape(n, 1, grid * h, grid * w)
        .contiguous()
    )
    bits = torch.where(empty, torch.zeros_like(source), 1 << labels.long()[source.clamp_min(0)])
    y = bits[:, 0]
    for j in range(1, k):
        y = y | bits[:, j]
    return x, y, source


class MnistGridSource:
    """MNIST digits composed into 2×2 multi-label grids (see module docstring)."""

    multilabel = True

    def __init__(self, base: IdxSource = MNIST) -> None:
        self.name = "mnist-grid"
        self.base = base
        self.description = (
            "multi-label: 2x2 grid of 14x14 MNIST digits (a cell empty w.p. 0.25), "
            "labels = digits present; 60000 train / 10000 test, generated"
        )
        self.class_names = MNIST_CLASSES

    def __repr__(self) -> str:
        return "MnistGridSource()"

    def load(self, split: str, data_dir: Path, *, download: bool = True) -> Dataset:
        """Generate one split from the MNIST split of the same name (deterministic)."""
        check_split(self.name, split)
        mnist = self.base.load(split, data_dir, download=download)
        seed = GRID_SEED + (0 if split == "train" else 1)
        gen = torch.Generator().manual_seed(seed)
        x, y, _ = make_grid(pool_digits(mnist.x[:, 0]), mnist.y, len(mnist), gen)
        return Dataset(self.name, split, x, y, self.class_names, multilabel=True)

    def status(self, data_dir: Path) -> DatasetStatus:
        """Present when the MNIST files are (status read from their headers)."""
        st = self.base.status(data_dir)
        note = f"generated from {self.base.name}" + (f"; {st.note}" if st.note else "")
        return DatasetStatus(
            name=self.name,
            description=self.description,
            class_names=self.class_names,
            location=st.location,
            present=st.present,
            sizes=dict(st.sizes),
            input_shape=(1, GRID * CELL, GRID * CELL) if st.present else st.input_shape,
            note=note,
            multilabel=True,
        )


MNIST_GRID = MnistGridSource()

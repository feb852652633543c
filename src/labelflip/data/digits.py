"""The ``digits`` source: scikit-learn's bundled 8x8 handwritten digits.

1797 grayscale images with values 0..16, loaded as ``value / 16`` with shape
``(N, 1, 8, 8)``. There is no official split, so a fixed one is used: image
``i`` (in ``load_digits()`` order) is in the **test** split when
``i % 5 == 4`` (359 images) and in the **train** split otherwise (1438
images). Nothing is downloaded; the data ships with scikit-learn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from labelflip.data._base import Dataset, DatasetStatus, check_split

DIGITS_CLASSES = tuple(str(d) for d in range(10))
TOTAL = 1797
TEST_EVERY = 5  # index i is a test image iff i % TEST_EVERY == TEST_EVERY - 1


def split_mask(n: int, split: str) -> np.ndarray:
    """Boolean mask over ``n`` images selecting ``split`` under the fixed rule."""
    is_test = np.arange(n) % TEST_EVERY == TEST_EVERY - 1
    return is_test if split == "test" else ~is_test


class DigitsSource:
    """scikit-learn's ``load_digits()`` with a fixed split (see module docstring)."""

    def __init__(self) -> None:
        self.name = "digits"
        self.description = (
            "scikit-learn 8x8 digits (bundled), 1438 train / 359 test (i % 5 == 4 is test)"
        )
        self.class_names = DIGITS_CLASSES

    def __repr__(self) -> str:
        return "DigitsSource()"

    def load(self, split: str, data_dir: Path | None = None, *, download: bool = True) -> Dataset:
        """Load one split; ``data_dir`` and ``download`` are ignored (data is bundled)."""
        check_split(self.name, split)
        images, labels = _load_digits()
        mask = split_mask(len(images), split)
        x = torch.from_numpy(np.ascontiguousarray(images[mask])).div_(16.0).unsqueeze(1)
        y = torch.from_numpy(np.ascontiguousarray(labels[mask]))
        return Dataset(self.name, split, x, y, self.class_names)

    def status(self, data_dir: Path | None = None) -> DatasetStatus:
        """Always present (bundled with scikit-learn)."""
        test = int(split_mask(TOTAL, "test").sum())
        return DatasetStatus(
            name=self.name,
            description=self.description,
            class_names=self.class_names,
            location=None,
            present=True,
            sizes={"train": TOTAL - test, "test": test},
            input_shape=(1, 8, 8),
            note="bundled with scikit-learn",
        )


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """``load_digits()``'s images (float32, N x 8 x 8) and labels, read straight
    from scikit-learn's bundled ``digits.csv.gz`` as ``load_digits`` does, which
    spares importing ``sklearn.datasets`` (most of a second on every command)."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path) as f:
                data = np.loadtxt(f, delimiter=",")
            images = data[:, :-1].reshape(-1, 8, 8).astype(np.float32)
            return images, data[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits  # a layout we do not know: the slow way

    bunch = load_digits()
    return np.asarray(bunch.images, np.float32), np.asarray(bunch.target, np.int64)


DIGITS = DigitsSource()

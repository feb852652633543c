"""The dataset layer on the real datasets (skipped when they are absent)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from labelflip.data import dataset_statuses, load_dataset
from labelflip.data._download import file_digest
from labelflip.data.cifar import CIFAR10_CLASSES
from labelflip.data.idx import MNIST, MNIST_CHECKSUMS

pytestmark = pytest.mark.slow

# the published MNIST label histograms
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("LABELFLIP_OFFLINE", "1")


def _need(real_data_dir: Path, folder: str) -> Path:
    path = real_data_dir / folder
    if not path.is_dir():
        pytest.skip(f"{path} not available")
    return path


def test_real_mnist(real_data_dir):
    folder = _need(real_data_dir, "mnist")
    labels_gz = folder / "t10k-labels-idx1-ubyte.gz"
    want = MNIST_CHECKSUMS["t10k-labels-idx1-ubyte"][1]
    assert want == "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"
    assert file_digest(labels_gz, "sha256", gunzip=True) == want

    start = time.perf_counter()
    train = load_dataset("mnist", "train", real_data_dir)
    elapsed = time.perf_counter() - start
    test = load_dataset("mnist", "test", real_data_dir)
    assert (len(train), len(test)) == (60000, 10000)
    assert train.input_shape == test.input_shape == (1, 28, 28)
    assert train.y.bincount(minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert test.y.bincount(minlength=10).tolist() == MNIST_TEST_COUNTS
    assert float(train.x.min()) == 0.0 and float(train.x.max()) == 1.0
    assert float(train.x.mean()) == pytest.approx(0.1307, abs=1e-3)  # the well-known mean
    assert elapsed < 10, f"loading MNIST train took {elapsed:.1f} s"


def test_real_mnist_checksums_and_status(real_data_dir):
    _need(real_data_dir, "mnist")
    assert set(MNIST.verify(real_data_dir).values()) == {"ok"}
    st = MNIST.status(real_data_dir)
    assert st.present and st.sizes == {"train": 60000, "test": 10000}
    assert st.input_shape == (1, 28, 28)


def test_real_cifar10_jpeg_test_split(real_data_dir):
    _need(real_data_dir, "cifar10-jpeg")
    start = time.perf_counter()
    ds = load_dataset("imagefolder:cifar10-jpeg", "test", real_data_dir)
    elapsed = time.perf_counter() - start
    assert len(ds) == 10000 and ds.input_shape == (3, 32, 32)
    assert ds.class_names == CIFAR10_CLASSES
    assert ds.y.bincount(minlength=10).tolist() == [1000] * 10
    assert torch.equal(ds.y, ds.y.sort().values)  # grouped by class folder
    assert 0.0 <= float(ds.x.min()) and float(ds.x.max()) <= 1.0
    assert 0.3 < float(ds.x.mean()) < 0.6  # natural images, not blank
    assert elapsed < 20, f"decoding 10000 JPEGs took {elapsed:.1f} s"


def test_real_statuses(real_data_dir):
    statuses = {s.name: s for s in dataset_statuses(real_data_dir)}
    if (real_data_dir / "mnist").is_dir():
        assert statuses["mnist"].present
    if (real_data_dir / "cifar10-jpeg").is_dir():
        st = statuses["imagefolder:cifar10-jpeg"]
        assert st.present and st.sizes == {"train": 10000, "test": 10000}
        assert st.class_names == CIFAR10_CLASSES and st.input_shape == (3, 32, 32)

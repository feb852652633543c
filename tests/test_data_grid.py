"""The multi-label ``mnist-grid`` dataset: grids by construction on synthetic
cells (offline), then the real thing from the MNIST IDX files (skipped when
they are absent): determinism, shapes, ranges and labels checked cell by cell."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time

import pytest
import torch

from labelflip.data import REGISTRY, load_dataset
from labelflip.data.grid import GRID_SEED, MNIST_GRID, P_EMPTY, make_grid, pool_digits
from labelflip.data.idx import MNIST
from labelflip.models import CheckpointMeta, build_model, save_checkpoint
from labelflip.models.encoding import index_to_bits


def test_pool_digits_hand_computed():
    img = torch.tensor([[[0.0, 1.0, 0.5, 0.5], [1.0, 0.0, 0.5, 0.5], [1, 1, 0, 0], [1, 1, 0, 1]]])
    assert torch.equal(pool_digits(img), torch.tensor([[[0.5, 0.5], [1.0, 0.25]]]))


def _cells(m: int = 10, h: int = 3, w: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Cells that tell themselves apart: cell i is constant (i + 1) / m."""
    cells = ((torch.arange(m, dtype=torch.float32) + 1) / m).view(m, 1, 1).repeat(1, h, w)
    return cells, torch.arange(m) % 7  # labels 0..6 (several cells share a label)


def test_make_grid_places_cells_and_labels_by_construction():
    cells, labels = _cells()
    x, y, source = make_grid(cells, labels, 200, torch.Generator().manual_seed(0))
    assert x.shape == (200, 1, 6, 4) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and source.shape == (200, 4)
    for i in range(200):
        want = 0
        for k in range(4):
            r, c = divmod(k, 2)
            cell = x[i, 0, 3 * r : 3 * r + 3, 2 * c : 2 * c + 2]
            s = int(source[i, k])
            if s < 0:
                assert bool((cell == 0).all())
            else:
                assert torch.equal(cell, cells[s])
                want |= 1 << int(labels[s])
        assert int(y[i]) == want
    assert bool((source == -1).any()) and bool((source >= 0).any())


def test_make_grid_is_deterministic_under_its_generator():
    cells, labels = _cells()
    a = make_grid(cells, labels, 50, torch.Generator().manual_seed(3))
    b = make_grid(cells, labels, 50, torch.Generator().manual_seed(3))
    c = make_grid(cells, labels, 50, torch.Generator().manual_seed(4))
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not torch.equal(a[2], c[2])


def test_make_grid_empty_share_and_all_empty_images():
    cells, labels = _cells()
    _, y, source = make_grid(cells, labels, 20000, torch.Generator().manual_seed(0))
    assert float((source == -1).float().mean()) == pytest.approx(P_EMPTY, abs=0.01)
    assert float((y == 0).float().mean()) == pytest.approx(P_EMPTY**4, abs=0.002)  # rare
    assert bool(((source == -1).all(1) == (y == 0)).all())


def test_registered_as_multilabel_with_mnist_files(tmp_path):
    assert REGISTRY["mnist-grid"] is MNIST_GRID and MNIST_GRID.multilabel
    st = MNIST_GRID.status(tmp_path)
    assert not st.present and st.multilabel and st.location == tmp_path / "mnist"
    assert st.class_names == tuple(str(d) for d in range(10))
    assert "generated from mnist" in st.note
    assert not getattr(REGISTRY["mnist"], "multilabel", False)
    assert not load_dataset("digits", "test").multilabel


def test_missing_mnist_is_a_one_line_error(tmp_path):
    from labelflip.errors import LabelflipError

    with pytest.raises(LabelflipError, match="mnist: missing") as e:
        load_dataset("mnist-grid", "test", tmp_path, download=False)
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------ real MNIST


@pytest.fixture(scope="module")
def mnist_dir(real_data_dir):
    if MNIST.find(real_data_dir / "mnist", "t10k-images-idx3-ubyte") is None:
        pytest.skip(f"MNIST IDX files not available in {real_data_dir / 'mnist'}")
    return real_data_dir


def test_real_grid_test_split_by_construction(mnist_dir):
    ds = load_dataset("mnist-grid", "test", mnist_dir)
    again = load_dataset("mnist-grid", "test", mnist_dir)
    assert torch.equal(ds.x, again.x) and torch.equal(ds.y, again.y)  # bit for bit
    assert ds.multilabel and ds.class_names == tuple(str(d) for d in range(10))
    assert ds.x.shape == (10000, 1, 28, 28) and ds.x.dtype == torch.float32
    assert float(ds.x.min()) == 0.0 and float(ds.x.max()) <= 1.0
    assert ds.num_classes == 1024 and int(ds.y.min()) >= 0 and int(ds.y.max()) < 1024
    # rebuild the layout from the documented seed and check every cell and label
    mnist = load_dataset("mnist", "test", mnist_dir)
    small = pool_digits(mnist.x[:, 0])
    gen = torch.Generator().manual_seed(GRID_SEED + 1)
    _, _, source = make_grid(small, mnist.y, 10000, gen)
    for k in range(4):
        r, c = divmod(k, 2)
        cell = ds.x[:, 0, 14 * r : 14 * r + 14, 14 * c : 14 * c + 14]
        s = source[:, k]
        placed = s >= 0
        assert torch.equal(cell[placed], small[s[placed]])
        assert bool((cell[~placed] == 0).all())
    bits = torch.zeros(10000, 10, dtype=torch.long)
    for k in range(4):
        s = source[:, k]
        placed = s >= 0
        bits[placed, mnist.y[s[placed]]] = 1
    assert torch.equal(index_to_bits(ds.y, 10), bits)
    share = bits.float().mean(0)  # each digit in ~27 % of the images
    assert bool(((share > 0.2) & (share < 0.35)).all())
    assert 0 < int((ds.y == 0).sum()) < 100  # all-empty images exist but are rare


def test_real_grid_train_split(mnist_dir):
    t0 = time.perf_counter()
    ds = load_dataset("mnist-grid", "train", mnist_dir)
    elapsed = time.perf_counter() - t0
    assert ds.x.shape == (60000, 1, 28, 28) and ds.split == "train"
    assert elapsed < 15, f"building mnist-grid train took {elapsed:.1f} s"
    test = load_dataset("mnist-grid", "test", mnist_dir)
    assert not torch.equal(ds.y[:10000], test.y)  # own seed per split
    st = MNIST_GRID.status(mnist_dir)
    assert st.present and st.sizes == {"train": 60000, "test": 10000}
    assert st.input_shape == (1, 28, 28)


def _cli(*args, env_extra=None):
    env = {**os.environ, "LABELFLIP_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "labelflip.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def test_datasets_lists_the_grid_with_labels(mnist_dir):
    proc = _cli("datasets", "--data-dir", mnist_dir)
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("mnist-grid "))
    assert line.split()[1] == "yes" and "10 labels: 0, 1" in line


def test_evaluate_a_multilabel_checkpoint(mnist_dir, tmp_path):
    torch.manual_seed(0)
    model = build_model("cw-mnist", (1, 28, 28), 10)
    meta = CheckpointMeta(
        architecture="cw-mnist",
        dataset="mnist-grid",
        class_names=[str(d) for d in range(10)],
        input_shape=[1, 28, 28],
        encoding={"kind": "multilabel"},
    )
    path = save_checkpoint(tmp_path / "ml", model, meta)
    out = tmp_path / "labels.csv"
    proc = _cli("evaluate", path, "--data-dir", mnist_dir, "--csv", out)
    assert proc.returncode == 0, proc.stderr
    assert "exact-match accuracy" in proc.stdout and "per-label accuracy" in proc.stdout
    rows = list(csv.reader(open(out)))
    assert rows[0] == ["label", "present", "predicted", "accuracy", "precision", "recall"]
    assert [r[0] for r in rows[1:]] == [str(d) for d in range(10)]
    assert all(0.0 <= float(r[3]) <= 1.0 for r in rows[1:])
    proc = _cli("evaluate", path, "--data-dir", mnist_dir, "--dataset", "mnist")
    assert proc.returncode == 1
    assert "error: model is multi-label but dataset 'mnist' is single-label" in proc.stderr

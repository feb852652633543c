"""The dataset layer on small files written here in each canonical format."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import os
import pickle
import struct
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import labelflip.data as data
from labelflip.data import (
    REGISTRY,
    Dataset,
    dataset_statuses,
    get_source,
    load_dataset,
    resolve_data_dir,
)
from labelflip.data._download import fetch, file_digest
from labelflip.data.cifar import CIFAR10, CIFAR10_CLASSES
from labelflip.data.digits import DIGITS
from labelflip.data.idx import (
    FASHION_MNIST,
    FASHION_MNIST_CLASSES,
    MNIST,
    read_idx,
    read_idx_header,
)
from labelflip.data.imagefolder import ImageFolderSource, discover_imagefolders
from labelflip.errors import LabelflipError

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No test reaches the internet; download tests switch this off explicitly."""
    monkeypatch.setenv("LABELFLIP_OFFLINE", "1")
    monkeypatch.delenv("LABELFLIP_DATA", raising=False)


def raises_one_line(*fragments: str):
    """Context manager: a LabelflipError with a one-line message containing ``fragments``."""

    class _Check:
        def __enter__(self):
            self.ctx = pytest.raises(LabelflipError)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self.ctx.__exit__(*exc)
            message = str(self.info.value)
            assert "\n" not in message, message
            for frag in fragments:
                assert frag in message, f"{frag!r} not in {message!r}"
            return handled

    return _Check()


# ----------------------------------------------------------------------------- IDX writers


def idx_bytes(arr: np.ndarray, magic: int | None = None) -> bytes:
    arr = np.asarray(arr, dtype=np.uint8)
    magic = magic if magic is not None else 0x800 | arr.ndim
    return struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_idx(path: Path, payload: bytes, gz: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def make_idx_split(folder: Path, split: str, n: int, gz: bool, rows=5, cols=7, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, rows, cols), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    labels = (np.arange(n) % 10).astype(np.uint8)
    ibase, lbase = IDX_FILES[split]
    write_idx(folder / ibase, idx_bytes(images), gz)
    write_idx(folder / lbase, idx_bytes(labels), gz)
    return images, labels


# ----------------------------------------------------------------------------- IDX / MNIST


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_idx_round_trip_exact(tmp_path, gz, split):
    images, labels = make_idx_split(tmp_path / "mnist", split, 13, gz)
    ds = MNIST.load(split, tmp_path)
    assert isinstance(ds, Dataset) and ds.name == "mnist" and ds.split == split
    assert ds.x.shape == (13, 1, 5, 7) and ds.x.dtype == torch.float32
    assert ds.y.dtype == torch.int64
    expected = torch.from_numpy(images.astype(np.float32)).unsqueeze(1) / 255
    assert torch.equal(ds.x, expected)
    assert ds.x[0, 0, 0, 0] == 0.0 and ds.x[0, 0, 0, 1] == 1.0
    assert ds.y.tolist() == labels.tolist()
    assert ds.class_names == tuple("0123456789")


def test_idx_gz_preferred_over_raw(tmp_path):
    folder = tmp_path / "mnist"
    gz_images, _ = make_idx_split(folder, "test", 4, gz=True, seed=1)
    make_idx_split(folder, "test", 6, gz=False, seed=2)
    ds = MNIST.load("test", tmp_path)
    assert len(ds) == 4
    assert torch.equal(ds.x[:, 0], torch.from_numpy(gz_images.astype(np.float32)) / 255)


def test_fashion_mnist_class_names_and_folder(tmp_path):
    make_idx_split(tmp_path / "fashion-mnist", "train", 10, gz=True, rows=28, cols=28)
    ds = FASHION_MNIST.load("train", tmp_path)
    assert ds.class_names == FASHION_MNIST_CLASSES
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    assert ds.input_shape == (1, 28, 28) and len(ds) == 10
    with raises_one_line("mnist: missing", "train-images-idx3-ubyte(.gz)"):
        MNIST.load("train", tmp_path)  # the mnist folder is separate


def test_idx_header_and_status(tmp_path):
    folder = tmp_path / "mnist"
    make_idx_split(folder, "train", 12, gz=True, rows=9, cols=4)
    assert read_idx_header(folder / "train-images-idx3-ubyte.gz") == (2051, (12, 9, 4))
    st = MNIST.status(tmp_path)
    assert not st.present and st.sizes == {"train": 12} and st.input_shape == (1, 9, 4)
    assert "t10k-images-idx3-ubyte(.gz)" in st.note and st.location == folder
    make_idx_split(folder, "test", 3, gz=False, rows=9, cols=4)
    st = MNIST.status(tmp_path)
    assert st.present and st.sizes == {"train": 12, "test": 3} and st.note == ""


def test_read_idx_generic(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "x", idx_bytes(arr), gz=False)
    out = read_idx(path)
    assert out.flags.writeable and np.array_equal(out, arr)


def _corrupt_gzip(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    raw[len(raw) // 2 + 1] ^= 0x55
    path.write_bytes(bytes(raw))


def test_corrupt_gzip_is_reported(tmp_path):
    make_idx_split(tmp_path / "mnist", "test", 200, gz=True)
    path = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    _corrupt_gzip(path)
    with raises_one_line(str(path), "is corrupt or truncated"):
        MNIST.load("test", tmp_path)


def test_truncated_gzip_is_reported(tmp_path):
    make_idx_split(tmp_path / "mnist", "test", 200, gz=True)
    path = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with raises_one_line(str(path), "is corrupt or truncated"):
        MNIST.load("test", tmp_path)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_wrong_magic(tmp_path, gz):
    folder = tmp_path / "mnist"
    make_idx_split(folder, "test", 5, gz)
    labels = np.zeros(5, dtype=np.uint8)
    path = write_idx(folder / "t10k-images-idx3-ubyte", idx_bytes(labels), gz)  # a labels file
    with raises_one_line(str(path), "magic number 2049", "expected 2051"):
        MNIST.load("test", tmp_path)


def test_not_an_idx_file(tmp_path):
    folder = tmp_path / "mnist"
    make_idx_split(folder, "test", 5, gz=False)
    path = folder / "t10k-labels-idx1-ubyte"
    path.write_bytes(b"hello, this is not IDX")
    with raises_one_line(str(path), "magic number"):
        MNIST.load("test", tmp_path)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("delta,fragment", [(-1, "is truncated"), (3, "trailing bytes")])
def test_payload_size_must_match_header(tmp_path, gz, delta, fragment):
    folder = tmp_path / "mnist"
    make_idx_split(folder, "test", 5, gz)
    payload = idx_bytes(np.ones((5, 5, 7), dtype=np.uint8))
    payload = payload[:delta] if delta < 0 else payload + b"\0" * delta
    path = write_idx(folder / "t10k-images-idx3-ubyte", payload, gz)
    with raises_one_line(str(path), fragment, "5x5x7"):
        MNIST.load("test", tmp_path)


def test_image_label_count_mismatch(tmp_path):
    folder = tmp_path / "mnist"
    make_idx_split(folder, "train", 8, gz=True)
    path = write_idx(folder / "train-labels-idx1-ubyte", idx_bytes(np.zeros(7)), gz=True)
    with raises_one_line("has 8 images", "has 7 labels", str(path)):
        MNIST.load("train", tmp_path)
    assert "7 labels" in MNIST.status(tmp_path).note


def test_label_out_of_range(tmp_path):
    folder = tmp_path / "mnist"
    make_idx_split(folder, "test", 6, gz=False)
    path = write_idx(folder / "t10k-labels-idx1-ubyte", idx_bytes([1, 2, 3, 10, 4, 12]), False)
    with raises_one_line(str(path), "label 10 at index 3", "out of range 0-9"):
        MNIST.load("test", tmp_path)


def test_missing_idx_files_offline(tmp_path):
    folder = tmp_path / "mnist"
    with raises_one_line(
        "mnist: missing train-images-idx3-ubyte(.gz), train-labels-idx1-ubyte(.gz)",
        f"in {folder} ",
        "LABELFLIP_OFFLINE",
        "LABELFLIP_DATA",
    ):
        load_dataset("mnist", "train", tmp_path)
    make_idx_split(folder, "test", 3, gz=True)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with raises_one_line("missing t10k-labels-idx1-ubyte(.gz) in", "not requested") as info:
        MNIST.load("test", tmp_path, download=False)
    assert "t10k-images" not in str(info.value)


def test_mnist_verify_reports_each_file(tmp_path, monkeypatch):
    folder = tmp_path / "mnist"
    make_idx_split(folder, "test", 3, gz=True)
    sums = {b: ("sha256_decompressed", "0" * 64) for pair in IDX_FILES.values() for b in pair}
    good = file_digest(folder / "t10k-images-idx3-ubyte.gz", "sha256", gunzip=True)
    sums["t10k-images-idx3-ubyte"] = ("sha256_decompressed", good)
    monkeypatch.setattr(MNIST, "checksums", sums)
    assert MNIST.verify(tmp_path) == {
        "train-images-idx3-ubyte": "missing",
        "train-labels-idx1-ubyte": "missing",
        "t10k-images-idx3-ubyte": "ok",
        "t10k-labels-idx1-ubyte": "mismatch",
    }


# ----------------------------------------------------------------------------- CIFAR writers


class Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes pickles the way Python 2 did: str/bytes as BINSTRING, numpy.core names."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_py2_string(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[str] = save_py2_string
    dispatch[bytes] = save_py2_string

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)


def pickle_batch(obj, protocol) -> bytes:
    if protocol == "py2":
        buf = io.BytesIO()
        Py2Pickler(buf, protocol=2).dump(obj)
        return buf.getvalue()
    return pickle.dumps(obj, protocol=protocol)


def cifar_batch(n: int, seed: int, keys=str):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    y = [int(v) for v in rng.integers(0, 10, size=n)]
    k = (lambda s: s.encode()) if keys is bytes else (lambda s: s)
    return {
        k("batch_label"): k(f"batch {seed}"),
        k("labels"): y,
        k("data"): x,
        k("filenames"): [k(f"{i}.png") for i in range(n)],
    }


def cifar_files(protocol, meta_names=None) -> dict[str, bytes]:
    keys = bytes if protocol == "py2" else str
    files = {
        f"data_batch_{i}": pickle_batch(cifar_batch(2 + i, i, keys), protocol) for i in range(1, 6)
    }
    files["test_batch"] = pickle_batch(cifar_batch(4, 99, keys), protocol)
    if meta_names is not None:
        files["batches.meta"] = pickle_batch({"label_names": meta_names}, protocol)
    return files


def write_cifar_dir(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, blob in files.items():
        (folder / name).write_bytes(blob)
    return folder


def write_cifar_tar(path: Path, files: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def expected_cifar(protocol, split):
    keys = bytes if protocol == "py2" else str
    seeds = [(2 + i, i) for i in range(1, 6)] if split == "train" else [(4, 99)]
    batches = [cifar_batch(n, s, keys) for n, s in seeds]
    k = (lambda s: s.encode()) if keys is bytes else (lambda s: s)
    x = np.concatenate([b[k("data")] for b in batches])
    y = sum((b[k("labels")] for b in batches), [])
    return torch.from_numpy(x.astype(np.float32)).reshape(-1, 3, 32, 32) / 255, y


# ----------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("protocol", ["py2", 2, 5])
@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar_batches_round_trip(tmp_path, protocol, split):
    names = [f"c{i}" for i in range(10)]
    meta = [n.encode() for n in names] if protocol == "py2" else names
    write_cifar_dir(tmp_path / "cifar10" / "cifar-10-batches-py", cifar_files(protocol, meta))
    ds = CIFAR10.load(split, tmp_path)
    x, y = expected_cifar(protocol, split)
    assert ds.x.shape == (len(y), 3, 32, 32) and ds.x.dtype == torch.float32
    assert len(ds) == (3 + 4 + 5 + 6 + 7 if split == "train" else 4)
    assert torch.equal(ds.x, x) and ds.y.tolist() == y
    assert ds.class_names == tuple(names)


def test_cifar_channel_layout(tmp_path):
    """A row is 1024 red, 1024 green, 1024 blue values, each 32x32 row-major."""
    row = np.zeros((1, 3072), dtype=np.uint8)
    row[0, 0] = 10  # red, pixel (0, 0)
    row[0, 1024 + 33] = 20  # green, pixel (1, 1)
    row[0, 2048 + 1023] = 30  # blue, pixel (31, 31)
    files = cifar_files(5)
    files["test_batch"] = pickle.dumps({"data": row, "labels": [3]}, protocol=5)
    write_cifar_dir(tmp_path / "cifar-10-batches-py", files)  # directly in data_dir
    ds = CIFAR10.load("test", tmp_path)
    assert ds.x[0, 0, 0, 0] * 255 == 10 and ds.x[0, 1, 1, 1] * 255 == 20
    assert ds.x[0, 2, 31, 31] * 255 == 30 and ds.x.sum() * 255 == pytest.approx(60)
    assert ds.class_names == CIFAR10_CLASSES  # no batches.meta


def test_cifar_from_archive_without_extracting(tmp_path):
    archive = write_cifar_tar(
        tmp_path / "cifar10" / "cifar-10-python.tar.gz",
        cifar_files("py2", [n.encode() for n in CIFAR10_CLASSES]),
    )
    for split in ("train", "test"):
        ds = CIFAR10.load(split, tmp_path)
        x, y = expected_cifar("py2", split)
        assert torch.equal(ds.x, x) and ds.y.tolist() == y
    assert ds.class_names == CIFAR10_CLASSES
    assert sorted(p.name for p in (tmp_path / "cifar10").iterdir()) == [archive.name]
    st = CIFAR10.status(tmp_path)
    assert st.present and st.location == archive and st.input_shape == (3, 32, 32)


@pytest.mark.parametrize(
    "batch,fragments",
    [
        (
            {"data": np.zeros((4, 3000), np.uint8), "labels": [0] * 4},
            ["uint8 (4, 3000)", "expected uint8 of shape (N, 3072)"],
        ),
        ({"data": np.zeros((4, 3072), np.float32), "labels": [0] * 4}, ["float32"]),
        ({"data": np.zeros((4, 3072), np.uint8), "labels": [0] * 3}, ["4 images but 3 labels"]),
        (
            {"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]},
            ["label 10 at index 1", "out of range 0-9"],
        ),
        ({"labels": [0]}, ["lacks 'data' or 'labels'"]),
        ([1, 2, 3], ["is a list, expected a dict"]),
    ],
)
def test_cifar_bad_batch(tmp_path, batch, fragments):
    files = cifar_files(5)
    files["test_batch"] = pickle.dumps(batch, protocol=5)
    folder = write_cifar_dir(tmp_path / "cifar10" / "cifar-10-batches-py", files)
    with raises_one_line(str(folder / "test_batch"), *fragments):
        CIFAR10.load("test", tmp_path)


def test_cifar_truncated_pickle(tmp_path):
    files = cifar_files(2)
    files["data_batch_3"] = files["data_batch_3"][:-100]
    folder = write_cifar_dir(tmp_path / "cifar10" / "cifar-10-batches-py", files)
    with raises_one_line(str(folder / "data_batch_3"), "corrupt or not a pickle"):
        CIFAR10.load("train", tmp_path)


class _OpenMarker:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


class _SystemMarker:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("payload", [_OpenMarker, _SystemMarker])
@pytest.mark.parametrize("protocol", [2, 5])
@pytest.mark.parametrize("container", ["dir", "tar"])
def test_malicious_pickle_is_refused(tmp_path, payload, protocol, container):
    # the payload is live: plain pickle.loads really creates the marker
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps({"data": payload(probe)}, protocol=protocol))
    assert probe.exists()

    marker = tmp_path / "pwned"
    files = cifar_files(protocol)
    files["test_batch"] = pickle.dumps(
        {"data": np.zeros((1, 3072), np.uint8), "labels": [payload(marker)]}, protocol=protocol
    )
    if container == "dir":
        write_cifar_dir(tmp_path / "cifar10" / "cifar-10-batches-py", files)
    else:
        write_cifar_tar(tmp_path / "cifar10" / "cifar-10-python.tar.gz", files)
    name = "open" if payload is _OpenMarker else "system"
    with raises_one_line(
        "refusing to unpickle",
        f".{name} from",
        "test_batch",
        "may only contain plain dicts, lists and arrays",
    ):
        CIFAR10.load("test", tmp_path)
    assert not marker.exists()


def test_missing_cifar_offline(tmp_path):
    with raises_one_line(
        "cifar10: missing cifar-10-batches-py/{test_batch}",
        "cifar-10-python.tar.gz",
        str(tmp_path / "cifar10"),
        "LABELFLIP_OFFLINE",
    ):
        CIFAR10.load("test", tmp_path)
    st = CIFAR10.status(tmp_path)
    assert not st.present and "cifar-10-python.tar.gz" in st.note


# ----------------------------------------------------------------------------- downloads


@pytest.fixture
def http_root(tmp_path):
    """Serve ``tmp_path/served`` on 127.0.0.1; yields (folder, base URL)."""
    served = tmp_path / "served"
    served.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(served))
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _closed_port_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/"


def _serve_mnist(served: Path, monkeypatch, good=True):
    images, labels = make_idx_split(served, "test", 7, gz=True)
    sums = {}
    for base in IDX_FILES["test"]:
        digest = file_digest(served / f"{base}.gz", "sha256", gunzip=True)
        sums[base] = ("sha256_decompressed", digest if good else "ab" * 32)
    monkeypatch.setattr(MNIST, "checksums", {**MNIST.checksums, **sums})
    monkeypatch.delenv("LABELFLIP_OFFLINE")
    return images, labels


def test_mnist_download_with_mirror_fallback(tmp_path, http_root, monkeypatch):
    served, url = http_root
    images, labels = _serve_mnist(served, monkeypatch)
    monkeypatch.setattr(MNIST, "mirrors", (_closed_port_url(), url + "missing/", url))
    data_dir = tmp_path / "data"
    ds = load_dataset("mnist", "test", data_dir)
    assert torch.equal(ds.x[:, 0], torch.from_numpy(images.astype(np.float32)) / 255)
    assert ds.y.tolist() == labels.tolist()
    assert sorted(p.name for p in (data_dir / "mnist").iterdir()) == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]


def test_mnist_download_checksum_mismatch_leaves_nothing(tmp_path, http_root, monkeypatch):
    served, url = http_root
    _serve_mnist(served, monkeypatch, good=False)
    monkeypatch.setattr(MNIST, "mirrors", (url,))
    data_dir = tmp_path / "data"
    with raises_one_line(
        "mnist: missing t10k-images-idx3-ubyte(.gz)",
        "download failed",
        f"checksum mismatch for t10k-images-idx3-ubyte.gz from {url}",
        "expected sha256 (decompressed) " + "ab" * 32,
    ):
        MNIST.load("test", data_dir)
    assert list((data_dir / "mnist").iterdir()) == []


def test_download_failure_names_file_urls_and_reason(tmp_path, http_root, monkeypatch):
    _, url = http_root
    dead = _closed_port_url()
    monkeypatch.delenv("LABELFLIP_OFFLINE")
    monkeypatch.setattr(FASHION_MNIST, "mirrors", (url + "nothing/", dead))
    with raises_one_line(
        "fashion-mnist: missing t10k-images-idx3-ubyte(.gz)",
        "could not download t10k-images-idx3-ubyte.gz",
        f"{url}nothing/t10k-images-idx3-ubyte.gz",
        "404",
        f"{dead}t10k-images-idx3-ubyte.gz",
        "refused",
    ):
        FASHION_MNIST.load("test", tmp_path / "data")


def test_fetch_md5_and_sha256(tmp_path, http_root):
    served, url = http_root
    blob = os.urandom(3000)
    (served / "f.bin").write_bytes(blob)
    md5, sha = hashlib.md5(blob).hexdigest(), hashlib.sha256(blob).hexdigest()
    dest = tmp_path / "out" / "f.bin"
    assert fetch([url + "f.bin"], dest, md5=md5, sha256=sha) == dest
    assert dest.read_bytes() == blob and not dest.with_suffix(".bin.part").exists()
    assert file_digest(dest, "md5") == md5
    dest.unlink()
    with raises_one_line(
        f"checksum mismatch for f.bin from {url}f.bin", f"expected md5 {'0' * 32}, got {md5}"
    ):
        fetch([url + "f.bin"], dest, md5="0" * 32)
    assert list(dest.parent.iterdir()) == []


def test_cifar_download(tmp_path, http_root, monkeypatch):
    served, url = http_root
    archive = write_cifar_tar(served / "cifar-10-python.tar.gz", cifar_files(5))
    monkeypatch.delenv("LABELFLIP_OFFLINE")
    monkeypatch.setattr(CIFAR10, "urls", (url + archive.name,))
    monkeypatch.setattr(CIFAR10, "md5", "f" * 32)
    data_dir = tmp_path / "data"
    with raises_one_line("cifar10: missing", "checksum mismatch for cifar-10-python.tar.gz"):
        CIFAR10.load("test", data_dir)
    assert list((data_dir / "cifar10").iterdir()) == []
    monkeypatch.setattr(CIFAR10, "md5", file_digest(archive, "md5"))
    ds = CIFAR10.load("test", data_dir)
    assert torch.equal(ds.x, expected_cifar(5, "test")[0])
    assert (data_dir / "cifar10" / "cifar-10-python.tar.gz").read_bytes() == archive.read_bytes()


# ----------------------------------------------------------------------------- digits


def test_digits_fixed_split():
    from sklearn.datasets import load_digits

    train, test = DIGITS.load("train"), load_dataset("digits", "test")
    assert (len(train), len(test)) == (1438, 359) and len(train) + len(test) == 1797
    assert train.x.shape == (1438, 1, 8, 8) and test.input_shape == (1, 8, 8)
    assert float(train.x.min()) == 0.0 and float(train.x.max()) == 1.0
    bunch = load_digits()
    idx = np.arange(1797)
    want = torch.from_numpy(bunch.images[idx % 5 == 4].astype(np.float32)).unsqueeze(1) / 16
    assert torch.equal(test.x, want)
    assert test.y.tolist() == bunch.target[idx % 5 == 4].tolist()
    assert train.y.tolist() == bunch.target[idx % 5 != 4].tolist()
    st = DIGITS.status(Path("/nonexistent"))
    assert st.present and st.location is None and st.sizes == {"train": 1438, "test": 359}


# ----------------------------------------------------------------------------- image folders


def save_tree(root: Path, split: str, images: dict[str, list[np.ndarray]], ext=".png"):
    for cls, arrays in images.items():
        folder = root / split / cls
        folder.mkdir(parents=True, exist_ok=True)
        for i, arr in enumerate(arrays):
            Image.fromarray(arr).save(folder / f"{i:03d}{ext}")


def test_imagefolder_grayscale_png_exact(tmp_path):
    rng = np.random.default_rng(0)
    imgs = {
        c: [rng.integers(0, 256, (6, 9), dtype=np.uint8) for _ in range(n)]
        for c, n in (("zebra", 2), ("ant", 3), ("mole", 1))
    }
    save_tree(tmp_path / "gray", "test", imgs)
    (tmp_path / "gray" / "test" / "ant" / "notes.txt").write_text("not an image")
    ds = ImageFolderSource(tmp_path / "gray").load("test")
    assert ds.class_names == ("ant", "mole", "zebra")
    assert ds.x.shape == (6, 1, 6, 9) and ds.y.tolist() == [0, 0, 0, 1, 2, 2]
    order = imgs["ant"] + imgs["mole"] + imgs["zebra"]
    want = torch.from_numpy(np.stack(order).astype(np.float32)).unsqueeze(1) / 255
    assert torch.equal(ds.x, want)


def test_imagefolder_rgb_png_exact_and_mixed_modes(tmp_path):
    rng = np.random.default_rng(1)
    rgb = [rng.integers(0, 256, (4, 5, 3), dtype=np.uint8) for _ in range(2)]
    gray = rng.integers(0, 256, (4, 5), dtype=np.uint8)
    save_tree(tmp_path / "f", "train", {"a": rgb})
    save_tree(tmp_path / "f", "train", {"b": [gray]})
    ds = ImageFolderSource(tmp_path / "f").load("train")
    assert ds.x.shape == (3, 3, 4, 5) and ds.x.is_contiguous()
    for i in range(2):
        want = torch.from_numpy(rgb[i].astype(np.float32)).permute(2, 0, 1) / 255
        assert torch.equal(ds.x[i], want)
    g = torch.from_numpy(gray.astype(np.float32)) / 255
    assert all(torch.equal(ds.x[2, c], g) for c in range(3))  # gray replicated to RGB


def test_imagefolder_gray_first_then_colour(tmp_path):
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5)
    rgb = np.stack([gray, gray + 100, gray + 200], axis=-1)
    save_tree(tmp_path / "f", "test", {"a": [gray, gray]})
    bits = np.where(np.indices((4, 5)).sum(0) % 2 == 0, 255, 0).astype(np.uint8)
    Image.fromarray(bits).convert("1").save(tmp_path / "f" / "test" / "a" / "002.png")
    save_tree(tmp_path / "f", "test", {"b": [rgb]})
    ds = ImageFolderSource(tmp_path / "f").load("test")
    assert ds.x.shape == (4, 3, 4, 5)
    g = torch.from_numpy(gray.astype(np.float32)) / 255
    assert all(torch.equal(ds.x[0, c], g) for c in range(3))
    assert torch.equal(ds.x[3], torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1) / 255)
    only_gray = ImageFolderSource(tmp_path / "f", classes=["a"]).load("test")
    assert only_gray.x.shape == (3, 1, 4, 5) and torch.equal(only_gray.x[1, 0], g)
    assert Image.open(tmp_path / "f" / "test" / "a" / "002.png").mode == "1"
    assert torch.equal(only_gray.x[2, 0], torch.from_numpy(bits / 255).float())


def test_imagefolder_jpeg_case_insensitive_extensions(tmp_path):
    root = tmp_path / "j"
    for i, (cls, ext) in enumerate([("cat", ".JPG"), ("cat", ".jpeg"), ("dog", ".Png")]):
        (root / "test" / cls).mkdir(parents=True, exist_ok=True)
        arr = np.full((8, 8, 3), 40 * (i + 1), dtype=np.uint8)
        Image.fromarray(arr).save(
            root / "test" / cls / f"img{i}{ext}",
            format="PNG" if ext == ".Png" else "JPEG",
            quality=95,
        )
    ds = ImageFolderSource(root).load("test")
    assert ds.y.tolist() == [0, 0, 1]
    for i in range(3):
        assert (ds.x[i] * 255 - 40 * (i + 1)).abs().max() <= 2  # JPEG is lossy


def test_imagefolder_classes_option_and_split_consistency(tmp_path):
    px = np.zeros((3, 3), dtype=np.uint8)
    save_tree(tmp_path / "f", "train", {"a": [px], "b": [px], "c": [px]})
    save_tree(tmp_path / "f", "test", {"a": [px], "c": [px, px]})
    test = ImageFolderSource(tmp_path / "f").load("test")
    assert test.class_names == ("a", "b", "c") and test.y.tolist() == [0, 2, 2]
    ds = ImageFolderSource(tmp_path / "f", classes=["c", "a"]).load("train")
    assert ds.class_names == ("c", "a") and ds.y.tolist() == [0, 1]
    with raises_one_line("no folder for class(es) b", str(tmp_path / "f" / "test")):
        ImageFolderSource(tmp_path / "f", classes=["a", "b"]).load("test")


def test_imagefolder_structure_errors(tmp_path):
    root = tmp_path / "f"
    with raises_one_line(f"image folder {root} does not exist"):
        ImageFolderSource(root).load("train")
    (root / "train").mkdir(parents=True)
    with raises_one_line("no 'test' folder in", str(root)):
        ImageFolderSource(root).load("test")
    with raises_one_line(f"no class folders in {root / 'train'}"):
        ImageFolderSource(root).load("train")
    save_tree(root, "train", {"a": [np.zeros((2, 2), np.uint8)]})
    (root / "train" / "b").mkdir()
    (root / "train" / "b" / "readme.txt").write_text("x")
    with raises_one_line(f"class folder {root / 'train' / 'b'} has no images"):
        ImageFolderSource(root).load("train")


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_imagefolder_unreadable_image(tmp_path, kind):
    rng = np.random.default_rng(2)
    imgs = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(3)]
    save_tree(tmp_path / "f", "test", {"a": imgs}, ext=".jpg")
    bad = tmp_path / "f" / "test" / "a" / "001.jpg"
    blob = bad.read_bytes()
    bad.write_bytes(b"definitely not a jpeg" if kind == "garbage" else blob[: len(blob) // 2])
    with raises_one_line(f"cannot read image {bad}"):
        ImageFolderSource(tmp_path / "f").load("test")


def test_imagefolder_mixed_sizes(tmp_path):
    save_tree(tmp_path / "f", "test", {"a": [np.zeros((6, 8), np.uint8)] * 2})
    save_tree(
        tmp_path / "f", "test", {"b": [np.zeros((6, 8), np.uint8), np.zeros((5, 7), np.uint8)]}
    )
    odd = tmp_path / "f" / "test" / "b" / "001.png"
    with raises_one_line(f"image {odd} is 7x5", "is 8x6", "same size"):
        ImageFolderSource(tmp_path / "f").load("test")


def test_imagefolder_many_files_threaded(tmp_path):
    rng = np.random.default_rng(3)
    imgs = {
        c: [rng.integers(0, 256, (4, 4), dtype=np.uint8) for _ in range(150)] for c in ("x", "y")
    }
    save_tree(tmp_path / "f", "train", imgs)
    ds = ImageFolderSource(tmp_path / "f").load("train")
    want = np.stack(imgs["x"] + imgs["y"]).astype(np.float32) / 255
    assert torch.equal(ds.x[:, 0], torch.from_numpy(want))
    assert ds.y.tolist() == [0] * 150 + [1] * 150


def test_imagefolder_resolution_discovery_and_status(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    px = np.zeros((5, 6, 3), dtype=np.uint8)
    save_tree(data_dir / "pics", "train", {"a": [px] * 3, "b": [px]})
    save_tree(data_dir / "pics", "test", {"a": [px], "b": [px]})
    (data_dir / "empty" / "train").mkdir(parents=True)  # no class folders: not an image folder
    (data_dir / "mnist").mkdir()
    assert discover_imagefolders(data_dir) == ["imagefolder:pics"]

    monkeypatch.chdir(tmp_path)
    src = get_source("imagefolder:pics", data_dir)
    assert src.name == "imagefolder:pics" and src.root == data_dir / "pics"
    assert get_source("imagefolder:data/pics", Path("/nowhere")).root == Path("data/pics")
    assert get_source(f"imagefolder:{data_dir / 'pics'}", Path("/x")).root == data_dir / "pics"
    ds = load_dataset("imagefolder:pics", "train", data_dir)
    assert ds.name == "imagefolder:pics" and len(ds) == 4 and ds.input_shape == (3, 5, 6)

    statuses = {s.name: s for s in dataset_statuses(data_dir)}
    assert list(statuses) == [
        "digits",
        "mnist",
        "fashion-mnist",
        "cifar10",
        "mnist-grid",
        "imagefolder:pics",
    ]
    st = statuses["imagefolder:pics"]
    assert st.present and st.sizes == {"train": 4, "test": 2} and st.input_shape == (3, 5, 6)
    assert st.class_names == ("a", "b") and st.location == data_dir / "pics"
    assert not statuses["mnist"].present and statuses["digits"].present


# ----------------------------------------------------------------------------- registry


def test_registry_and_lookup_errors(tmp_path):
    assert list(REGISTRY) == ["digits", "mnist", "fashion-mnist", "cifar10", "mnist-grid"]
    assert get_source("mnist", tmp_path) is MNIST
    with raises_one_line("unknown dataset 'mnsit'", "did you mean 'mnist'", "imagefolder:<path>"):
        get_source("mnsit", tmp_path)
    with raises_one_line("no split 'val'"):
        load_dataset("digits", "val")
    with raises_one_line("only applies to imagefolder"):
        get_source("digits", tmp_path, classes=["0"])
    with raises_one_line("needs a path"):
        get_source("imagefolder:", tmp_path)
    for name in ("Dataset", "DatasetStatus", "resolve_data_dir", "SPLITS"):
        assert hasattr(data, name)


def test_resolve_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert resolve_data_dir(None) == tmp_path / "cache" / "labelflip" / "datasets"
    monkeypatch.setenv("LABELFLIP_DATA", str(tmp_path / "env"))
    assert resolve_data_dir(None) == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "opt") == tmp_path / "opt"
    assert resolve_data_dir(str(tmp_path / "opt")) == tmp_path / "opt"


def test_load_dataset_uses_env_data_dir(tmp_path, monkeypatch):
    make_idx_split(tmp_path / "env" / "mnist", "test", 3, gz=False)
    monkeypatch.setenv("LABELFLIP_DATA", str(tmp_path / "env"))
    assert len(load_dataset("mnist")) == 3  # split defaults to test
    with raises_one_line(str(tmp_path / "opt" / "mnist")):
        load_dataset("mnist", "test", tmp_path / "opt")  # the option wins over the env


def test_statuses_on_empty_dir(tmp_path):
    statuses = dataset_statuses(tmp_path)
    names = ["digits", "mnist", "fashion-mnist", "cifar10", "mnist-grid"]
    assert [s.name for s in statuses] == names
    assert [s.present for s in statuses] == [True, False, False, False, False]
    assert statuses[1].location == tmp_path / "mnist"
    assert "downloaded on first use" not in statuses[1].note  # offline in these tests

"""Shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Tests never reach the internet: a missing file is an error, not a download
# (the download tests serve files from a local HTTP server and lift this).
os.environ.setdefault("LABELFLIP_OFFLINE", "1")

# Under pytest-xdist (`-n auto`: one worker process per CPU) every worker, and
# every run it starts in a subprocess, uses one torch thread: workers with a
# thread per CPU each would oversubscribe the machine several times over.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# The repository's sibling ../shared/datasets (see its README), used when
# LABELFLIP_DATA is not set.
SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The directory with the real datasets ($LABELFLIP_DATA, else ../shared/datasets).

    Skips the test when neither exists; tests needing one dataset should also
    skip when its own folder is absent.
    """
    env = os.environ.get("LABELFLIP_DATA")
    path = Path(env).expanduser() if env else SHARED_DATASETS
    if not path.is_dir():
        pytest.skip(
            f"real datasets not available: {path} does not exist "
            "(set LABELFLIP_DATA to a folder like ../shared/datasets)"
        )
    return path


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a whole module (``pytestmark =
    pytest.mark.usefixtures("one_thread")``), restored afterwards. Tiny models
    run fastest single-threaded, and much faster than with several threads on
    a machine busy with other work; and results then match those of runs in
    subprocesses with ``OMP_NUM_THREADS=1`` bit for bit (with another thread
    count torch may sum floats in another order on small batches)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

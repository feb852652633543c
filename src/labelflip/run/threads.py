"""How many CPU threads torch uses during a run (``threads`` in a config,
``labelflip run --threads N``).

torch's default is one thread per core. On a CPU that other processes share,
that is the slowest choice: torch's OpenMP threads wait for each other at
every operation, so one thread held up by another process holds up all of
them. On this project's shared 2-core machine the built-in default run took
247 s with torch's default (2 threads) and 32 s with one thread (issue 22),
and the attacks run the small models of labelflip in passes of at most 128
rows on a CPU (``attacks._common.CPU_ROWS_PER_PASS``), where a second thread
gains little even on an idle machine (figures in docs/benchmarks.md).
So, unless told otherwise, a run on the CPU uses :data:`AUTO_CPU_THREADS`
thread(s); ``OMP_NUM_THREADS`` set in the environment, ``threads`` in the
config or ``--threads`` say otherwise, in increasing priority. On an
accelerator torch's default stays (the CPU threads only feed it).

Records are reproducible for a given thread count: a CPU kernel may sum in
another order with another count, and the last bits of a result (and so,
rarely, a decision) can change. The count is recorded in the run's metadata
(``torch_threads``) and in each job's ``versions``, and a run resumed with
another count is warned about.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from labelflip.errors import LabelflipError

AUTO_CPU_THREADS = 1
"""Threads of a run on the CPU when neither the config, the command line nor
``OMP_NUM_THREADS`` chooses (see the module docstring)."""

MAX_THREADS = 1024


@dataclass(frozen=True)
class Threads:
    """The thread count of a run and what chose it (for the run's header)."""

    count: int
    source: str

    def describe(self) -> str:
        word = "thread" if self.count == 1 else "threads"
        return f"{self.count} torch {word} ({self.source})"


def resolve_threads(
    configured: int | None, device: torch.device, given: int | None = None
) -> Threads:
    """The thread count of a run: ``given`` (``--threads``), else the config's
    ``threads``, else ``OMP_NUM_THREADS`` (torch's count, as the environment
    set it), else :data:`AUTO_CPU_THREADS` on a CPU and torch's default on an
    accelerator."""
    if given is not None:
        return Threads(given, "--threads")
    if configured is not None:
        return Threads(configured, "config 'threads'")
    if os.environ.get("OMP_NUM_THREADS", "").strip():
        return Threads(torch.get_num_threads(), "OMP_NUM_THREADS")
    if device.type == "cpu":
        return Threads(min(AUTO_CPU_THREADS, torch.get_num_threads()), "default on a CPU")
    return Threads(torch.get_num_threads(), f"torch's default, device {device.type}")


@contextlib.contextmanager
def using_threads(count: int) -> Iterator[None]:
    """torch uses ``count`` intra-op threads inside the block, its previous
    count again after it (a run started from Python leaves the process as it
    found it)."""
    before = torch.get_num_threads()
    if count != before:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def checked_threads(threads: object) -> int | None:
    """``threads`` given to :func:`labelflip.run.run` (``None``, or an integer
    in [1, :data:`MAX_THREADS`]); a one-line error otherwise."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int):
        raise LabelflipError(f"threads must be an integer, got {threads!r}")
    if not 1 <= threads <= MAX_THREADS:
        raise LabelflipError(f"threads must be >= 1 and <= {MAX_THREADS:,}, got {threads}")
    return threads

"""Progress inside a batch: attacks report the share of their work done
(``report_progress``, narrowed by ``progress_part`` and per chunk of
``map_chunks``) to a listener set with ``reporting_progress``; the runner's
bar listens. Reporting changes nothing an attack computes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from labelflip.attacks import run_attack
from labelflip.attacks._common import CPU_ROWS_PER_PASS, map_chunks
from labelflip.attacks.primitives import progress_part, report_progress, reporting_progress
from labelflip.data import load_dataset
from labelflip.models import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "records" / "digits-cnn.safetensors"


def test_shares_are_mapped_into_parts_by_hand():
    heard: list[float] = []
    report_progress(1, 2)  # nobody listens: nothing happens
    with reporting_progress(heard.append):
        report_progress(1, 4)
        with progress_part(2, 4):  # the third quarter
            report_progress(1, 2)  # half of it: 2/4 + 1/8
            with progress_part(1, 2):  # its second half
                report_progress(1, 1)  # 2/4 + 1/4
        report_progress(5, 4)  # clamped to 1
        report_progress(1, 0)  # no total: ignored
    report_progress(1, 2)  # the listener is gone after the block
    assert heard == [0.25, 0.625, 0.75, 1.0]


def test_map_chunks_gives_each_chunk_its_share():
    heard: list[float] = []
    n = 3 * CPU_ROWS_PER_PASS  # three chunks on a CPU

    def fn(x: torch.Tensor) -> tuple[torch.Tensor]:
        report_progress(1, 2)
        report_progress(2, 2)
        return (x * 2,)

    with reporting_progress(heard.append):
        (out,) = map_chunks(fn, 1, torch.arange(n, dtype=torch.float32))
    assert torch.equal(out, torch.arange(n, dtype=torch.float32) * 2)
    assert heard == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0])


@pytest.fixture(scope="module")
def digits():
    clf, _ = load_checkpoint(FIXTURE)
    test = load_dataset("digits", "test")
    n = CPU_ROWS_PER_PASS + 32  # two chunks on a CPU
    return clf, test.x[:n], test.y[:n]


CASES = [  # attack, settings, whether the last report is the whole work
    ("pgd", {"eps": 0.05, "steps": 10}, True),
    ("cw-l2", {"binary_search_steps": 2, "steps": 20, "abort_early": False}, True),
    ("deepfool", {}, True),
    ("ddn", {"steps": 10}, True),
    ("alma", {"steps": 10}, True),
    ("fmn", {"steps": 10}, False),  # its last step only keeps the books
    ("superdeepfool", {"steps": 3}, True),  # every sample done: all of it
    ("best-of", {"attacks": ["deepfool", "ddn"], "options": {"ddn": {"steps": 5}}}, True),
]


@pytest.mark.parametrize("name, settings, whole", CASES, ids=[c[0] for c in CASES])
def test_attacks_report_and_compute_the_same(digits, name, settings, whole):
    clf, x, y = digits
    quiet = run_attack(name, clf, x, y, settings, generator=torch.Generator().manual_seed(1))
    heard: list[float] = []
    with reporting_progress(heard.append):
        loud = run_attack(name, clf, x, y, settings, generator=torch.Generator().manual_seed(1))
    for field in ("x_adv", "adv_pred", "success", "iterations", "forwards", "backwards"):
        assert torch.equal(getattr(quiet, field), getattr(loud, field)), field
    assert len(heard) >= 2, heard
    assert all(0.0 <= a <= b <= 1.0 for a, b in zip(heard, heard[1:], strict=False)), heard
    assert heard[0] < 0.75
    if whole:
        assert heard[-1] == pytest.approx(1.0)


def test_a_targeted_attack_reports_too(digits):
    clf, x, y = digits
    target = (y + 1) % 10
    heard: list[float] = []
    with reporting_progress(heard.append):
        run_attack("labelfool", clf, x, y, {}, target=target)
    assert heard and heard == sorted(heard) and heard[-1] <= 1.0


def test_the_local_executor_forwards_the_reports(tmp_path, monkeypatch):
    from labelflip.config import parse_config
    from labelflip.run import LocalExecutor, Shard, prepare
    from labelflip.run.executors import Hooks

    monkeypatch.setenv("LABELFLIP_CACHE", str(tmp_path / "cache"))
    cfg = parse_config(
        {
            "name": "progress",
            "batch_size": 20,
            "white_noise": 0,
            "data": {"dataset": "digits", "samples": 40},
            "model": {"checkpoint": str(FIXTURE)},
            "similarity": {"perceptual": False},
            "attacks": [{"attack": "pgd", "eps": 0.05, "steps": 4}],
        }
    )
    plan = prepare(cfg)
    heard: list[tuple[int, float]] = []
    hooks = Hooks(lambda s: None, print, lambda s, share: heard.append((s.start, share)))
    shards = [Shard(0, 0, 20), Shard(0, 20, 40)]
    done = [s.start for s, _ in LocalExecutor().compute(plan, shards, {}, hooks)]
    assert done == [0, 20]
    assert [share for start, share in heard if start == 0] == [0.25, 0.5, 0.75, 1.0]
    assert [share for start, share in heard if start == 20] == [0.25, 0.5, 0.75, 1.0]

"""torch's CPU threads of a run: ``threads`` in a config and ``labelflip run
--threads N`` (labelflip.run.threads), the rule when neither is given, the
header line, the count recorded in the run metadata and the job table, and
the process's own count left as it was."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from labelflip.config import load_config, parse_config
from labelflip.errors import LabelflipError
from labelflip.run import run
from labelflip.run.threads import AUTO_CPU_THREADS, checked_threads, resolve_threads

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "records" / "digits-cnn.safetensors"

CONFIG = f"""
name = "threads-test"
batch_size = 16
white_noise = 20
gallery = 2
{{threads}}

[data]
dataset = "digits"
samples = 16

[model]
checkpoint = "{FIXTURE}"

[similarity]
perceptual = false

[[attacks]]
attack = "fgsm"
eps = 0.1
"""

CPU = torch.device("cpu")


def _meta(run_dir: Path) -> tuple[dict, list[dict]]:
    con = sqlite3.connect(f"file:{run_dir / 'records.sqlite'}?mode=ro", uri=True)
    try:
        meta = {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM meta")}
        versions = [json.loads(v) for (v,) in con.execute("SELECT versions FROM jobs")]
    finally:
        con.close()
    return meta, versions


def test_the_config_key_is_validated(tmp_path):
    base = load_config().to_dict()
    assert base["threads"] is None  # the built-in default leaves it to the rule
    assert parse_config({**base, "threads": 3}).threads == 3
    assert parse_config({**base, "threads": None}).threads is None  # a config.json's null
    for bad, match in ((0, r"threads must be >= 1 and <= 1,024, got 0"),
                       (2000, r"threads must be >= 1"),
                       ("2", r"'threads' must be an integer"),
                       (1.5, r"'threads' must be an integer")):  # fmt: skip
        with pytest.raises(LabelflipError, match=match):
            parse_config({**base, "threads": bad}, source="x.toml")
    assert checked_threads(None) is None and checked_threads(4) == 4
    for bad in (0, True, 2.0, "1"):
        with pytest.raises(LabelflipError, match="threads must be"):
            checked_threads(bad)


def test_the_rule_when_nothing_is_given(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    assert resolve_threads(None, CPU).count == min(AUTO_CPU_THREADS, before)
    assert resolve_threads(None, CPU).source == "default on a CPU"
    # the config, then --threads, win over the rule
    assert resolve_threads(3, CPU).count == 3
    assert resolve_threads(3, CPU, given=2).describe() == "2 torch threads (--threads)"
    # OMP_NUM_THREADS set by the user: torch's count, as the environment made it
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    assert resolve_threads(None, CPU).count == before
    assert resolve_threads(None, CPU).source == "OMP_NUM_THREADS"
    # an accelerator keeps torch's default (the CPU only feeds it)
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert resolve_threads(None, torch.device("cuda")).count == before


def test_a_run_uses_records_and_restores_the_thread_count(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(1)
    try:
        path = tmp_path / "run.toml"
        path.write_text(CONFIG.format(threads="threads = 2"))
        out = run(load_config(path), run_dir=tmp_path / "a", progress=False)
        assert torch.get_num_threads() == 1  # the process's count is left as it was
        err = capsys.readouterr().err
        assert "threads-test: device cpu, 2 torch threads (config 'threads')" in err
        assert "1 jobs x 16 samples = 16 attacks" in err
        meta, versions = _meta(out.run_dir)
        assert meta["torch_threads"] == 2
        assert [v["torch_threads"] for v in versions] == [2]
        # the argument (--threads) overrides the config
        out = run(load_config(path), run_dir=tmp_path / "b", progress=False, threads=1)
        assert _meta(out.run_dir)[0]["torch_threads"] == 1
        assert "1 torch thread (--threads)" in capsys.readouterr().err
    finally:
        torch.set_num_threads(1)


def test_the_cli_flag(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(CONFIG.format(threads=""))
    env = {**os.environ, "LABELFLIP_CACHE": str(tmp_path / "cache")}
    env.pop("OMP_NUM_THREADS", None)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "labelflip.cli", "run", *args],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip

    bad = cli(str(path), "--threads", "0")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "labelflip: error: argument --threads: must be >= 1 and <= 1,024, got 0 "
        "(see 'labelflip run --help')"
    ]
    # nothing given: one thread on the CPU
    ok = cli(str(path), "--out", "auto", "--no-progress", "--no-report")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert f"{AUTO_CPU_THREADS} torch thread" in ok.stderr
    assert _meta(tmp_path / "auto")[0]["torch_threads"] == AUTO_CPU_THREADS
    # --threads is recorded in config.json, so --resume keeps it
    ok = cli(str(path), "--out", "two", "--no-progress", "--no-report", "--threads", "2")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "2 torch threads (--threads)" in ok.stderr
    assert json.loads((tmp_path / "two" / "config.json").read_text())["threads"] == 2
    assert _meta(tmp_path / "two")[0]["torch_threads"] == 2
    again = cli("--resume", "two", "--no-progress", "--no-report")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "2 torch threads (config 'threads')" in again.stderr
    assert "warning" not in again.stderr

"""The README's two commands are what CI runs: .ci/run reads them from the
README (after the ``<!-- ci:... -->`` markers), the Quick start installs
what a run needs and runs it, the test command installs what the tests
need (the test extras and torchattacks without torchvision) and runs them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ci_command(marker: str) -> str:
    """The command .ci/run's own ``readme_command`` reads for ``marker``."""
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    script = (ROOT / ".ci" / "run").read_text()
    start = script.index("readme_command() {")
    function = script[start : script.index("\n}\n", start) + 3]
    proc = subprocess.run(
        ["bash", "-c", f"{function}\nreadme_command {marker}"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return proc.stdout.strip()


def test_ci_runs_the_quick_start_as_written():
    command = _ci_command("quick-start")
    steps = [s.strip() for s in command.split("&&")]
    assert steps == [
        "python3 -m venv .venv",
        ". .venv/bin/activate",
        "pip install torch==2.13.0",
        "pip install -e .",  # what a run needs, not the test tools
        "labelflip run",
    ]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.count(command) == 1


def test_ci_runs_the_test_command_as_written():
    command = _ci_command("tests")
    steps = [s.strip() for s in command.split("&&")]
    assert steps[0] == ". .venv/bin/activate"
    assert 'pip install -e ".[test]"' in steps
    # as pyproject.toml says: torchattacks declares torchvision, which it does not need
    assert "pip install --no-deps torchattacks==3.5.1" in steps
    assert '"torchattacks==3.5.1"' in (ROOT / "pyproject.toml").read_text()
    assert steps[-1].startswith("python -m pytest")


def test_the_fast_part_of_the_suite_is_named():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert 'python -m pytest -m "not slow"' in readme
    assert "slow:" in (ROOT / "pyproject.toml").read_text()  # the marker is declared

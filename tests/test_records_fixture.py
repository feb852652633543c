"""The middle redesign (issue 17) changed no record: four fixed runs (the
built-in default's attacks on 90 digits, a Type I toy run, a multi-label run
and a Ray run), on checkpoints shipped in tests/fixtures/records, give
records bit-identical to those recorded with the code before the redesign
(0f8a43f; digests.json, made by make_fixture.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent / "fixtures" / "records"
sys.path.insert(0, str(HERE))
import records_configs as rc  # noqa: E402

EXPECTED = json.loads((HERE / "digests.json").read_text())
pytestmark = pytest.mark.slow


def _run(name: str, text: str, tmp_path: Path) -> dict[str, str]:
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(text)
    out = tmp_path / name
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LABELFLIP_CACHE": str(tmp_path / "cache")}
    code = "import sys; from labelflip.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run(
        [sys.executable, "-c", code, "run", str(cfg), "--out", str(out), "--no-progress",
         "--no-report"],
        env=env, capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return rc.digests(out)


@pytest.mark.parametrize("name", ["default", "type-i", "ray", "multilabel"])
def test_records_equal_those_before_the_redesign(name, tmp_path, request):
    data = None
    if name == "multilabel":
        data = str(request.getfixturevalue("real_data_dir"))
        if not (Path(data) / "mnist").is_dir():
            pytest.skip(f"MNIST not in {data}")
    if name == "ray" and importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (pip install 'labelflip[ray]')")
    text = rc.configs(HERE, data)[name]
    got = _run(name, text, tmp_path)
    assert got == EXPECTED[name]

"""The report as a browser sees it: every embedded image decodes, and headless
Chromium renders a page that is not blank."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image
from test_report import make_run

from labelflip.report import write_report

DATA_URI = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return write_report(make_run(tmp_path_factory.mktemp("browser") / "run", channels=3), n_boot=50)


def test_embedded_images_decode(report):
    uris = DATA_URI.findall(report.read_text(encoding="utf-8"))
    assert len(uris) == 12
    for uri in uris:
        with Image.open(io.BytesIO(base64.b64decode(uri, validate=True))) as im:
            assert im.format == "PNG"
            im.load()
            assert im.width > 50 and im.height > 50


def render(report, tmp_path) -> np.ndarray:
    """Grey-level screenshot (2000 x 1200) of ``report`` in headless Chromium;
    skips the test when Debian's chromium is not installed."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian chromium not installed (apt-get install chromium)")
    shot = tmp_path / "shot.png"
    cmd = [
        chromium,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1200,2000",
        report.resolve().as_uri(),
    ]
    subprocess.run(cmd, check=True, timeout=60, capture_output=True)
    with Image.open(shot) as im:
        return np.asarray(im.convert("L"), dtype=np.float64) / 255


def assert_not_blank(pixels: np.ndarray) -> None:
    assert pixels.shape == (2000, 1200)
    assert pixels.std() > 0.05
    assert (pixels < 0.9).mean() > 0.01  # not all white: text, tables and figures drawn


def test_chromium_renders(report, tmp_path):
    assert_not_blank(render(report, tmp_path))

"""Small text helpers shared by the CLI, the config and the runner."""

from __future__ import annotations

import re
from pathlib import Path


def slug(text: str) -> str:
    """A file-name-safe version of a dataset, architecture or job name."""
    text = text.rstrip("/\\")
    if text.startswith("imagefolder:"):
        text = "imagefolder-" + Path(text.split(":", 1)[1]).name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "model"

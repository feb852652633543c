"""Small text helpers shared by the CLI, the config, the runner and the CSV writers."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path


def slug(text: str) -> str:
    """A file-name-safe version of a dataset, architecture or job name."""
    text = text.rstrip("/\\")
    if text.startswith("imagefolder:"):
        text = "imagefolder-" + Path(text.split(":", 1)[1]).name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "model"


def label_set_name(index: int, label_names: Sequence[str]) -> str:
    """A multi-label decision's readable name: the labels present in the
    bitmask ``index`` joined by ``+`` (``∅`` if none)."""
    present = [label_names[j] for j in range(len(label_names)) if (int(index) >> j) & 1]
    return "+".join(present) if present else "∅"


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet read a CSV cell as a formula."""


def csv_cell(value: object) -> object:
    """``value`` fit for a CSV cell a spreadsheet may open: a string starting
    with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading
    ``'`` so it reads as text, never as a formula (OWASP, "CSV Injection");
    anything else, numbers included, is returned as it is."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value

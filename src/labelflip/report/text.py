"""Numbers as the report's tables print them; ``–`` for a value that is not
available (``None`` or NaN)."""

from __future__ import annotations

import math


def missing(x: float | None) -> bool:
    """``x`` is not available: ``None`` or NaN."""
    return x is None or (isinstance(x, float) and math.isnan(x))


def format_pct(x: float | None) -> str:
    """``12.3%``; ``–`` for a missing value."""
    return "–" if missing(x) else f"{100 * x:.1f}%"  # type: ignore[operator]


def format_num(x: float | None) -> str:
    """Three significant digits: ``0.624``; ``–`` for a missing value."""
    return "–" if missing(x) else f"{x:.3g}"


def format_p(x: float | None) -> str:
    """A p-value: ``0.032``, ``<1e-4``, ``–`` when untested."""
    if missing(x):
        return "–"
    return "<1e-4" if x < 1e-4 else f"{x:.3g}"  # type: ignore[operator]

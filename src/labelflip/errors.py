"""The one exception type for errors a user can cause.

Every problem a user can fix (a config value, a missing or corrupt file, a
shape or bounds mismatch) is raised as :class:`LabelflipError` with a
one-line message; the CLI prints that line and exits non-zero.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LabelflipError(Exception):
    """A user-facing error whose message is one line, fit to print as-is."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def unknown_name(kind: str, name: str, known: Iterable[str]) -> LabelflipError:
    """Build the error for an unknown registry name, with a "did you mean"."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return LabelflipError(f"unknown {kind} '{name}'{hint} (known: {', '.join(known)})")

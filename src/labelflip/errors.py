"""The one exception type for errors a user can cause.

Every problem a user can fix (a config value, a missing or corrupt file, a
shape or bounds mismatch) is raised as :class:`LabelflipError` with a
one-line message; the CLI prints that line and exits non-zero.
"""

from __future__ import annotations

import difflib
import errno
from collections.abc import Iterable

_NO_SPACE = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


class LabelflipError(Exception):
    """A user-facing error whose message is one line, fit to print as-is."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class LabelflipWarning(UserWarning):
    """Something the user should know that does not stop the work (the CLI
    prints it as one ``labelflip: warning:`` line)."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run cleanly between batches; the message says how to resume."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def os_error(action: str, exc: OSError) -> LabelflipError:
    """A one-line error for an operating-system failure while ``action``
    (e.g. "cannot write runs/x/config.json"): the system's reason, plus the
    likely cause when that reason is cryptic (``File too large``: a full disk
    or a file-size limit)."""
    reason = exc.strerror or str(exc)
    if exc.errno in _NO_SPACE:
        reason += " (the disk is full or a file-size limit was reached)"
    return LabelflipError(f"{action}: {reason}")


def unknown_name(
    kind: str, name: str, known: Iterable[str], *, ignore_case: bool = False
) -> LabelflipError:
    """Build the error for an unknown registry name, with a "did you mean"
    (found regardless of case with ``ignore_case``)."""
    known = sorted(known)
    if ignore_case:
        lower = {k.lower(): k for k in known}
        close = [lower[c] for c in difflib.get_close_matches(str(name).lower(), list(lower), n=1)]
    else:
        close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return LabelflipError(f"unknown {kind} '{name}'{hint} (known: {', '.join(known)})")

"""Helpers shared by the subcommands: the device, a plain table."""

from __future__ import annotations

from collections.abc import Sequence


def resolve_device(name: str):
    """The torch device named ``name`` (``auto``: cuda when available, else cpu)."""
    from labelflip.run import resolve_device as resolve

    return resolve(name)


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, indent: str = "") -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    print(indent + line.rstrip())
    print(indent + "  ".join("-" * w for w in widths))
    for r in rows:
        print(indent + "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())

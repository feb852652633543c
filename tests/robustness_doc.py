"""Regenerate the table of bad-input cases in ``docs/robustness.md`` from real runs.

    python tests/robustness_doc.py

runs ``tests/test_robustness.py`` and ``tests/test_robustness_files.py`` with
``LABELFLIP_ROBUSTNESS_JSON`` set (every case then records its command, exit
status and the line it printed; the second file's rows go to ``<stem>-files.json``
beside it) and, if every test passed, rewrites the part of
``docs/robustness.md`` between the ``<!-- cases:begin -->`` and
``<!-- cases:end -->`` markers. Nothing in the table is typed by hand except
the one-phrase description of each mistake.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "robustness.md"
BEGIN, END = "<!-- cases:begin -->", "<!-- cases:end -->"
QUIET_FLAGS = (" --no-progress", " --no-report")
TESTS = ("test_robustness.py", "test_robustness_files.py")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _code(text: str) -> str:
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{_cell(text)}{pad}{fence}"


def render(rows: list[dict], first: int | None = None) -> str:
    """The table; ``first`` rows come from ``tests/test_robustness.py``, the
    rest from ``tests/test_robustness_files.py``."""
    first = len(rows) if first is None else first
    lines = [
        f"{len(rows)} cases, each run as a subprocess by `tests/test_robustness.py` "
        f"(1-{first}) or `tests/test_robustness_files.py` ({first + 1}-{len(rows)}); none "
        "printed a traceback. "
        "`run` commands also pass `--no-progress --no-report`. The last column is the "
        "`labelflip:` line on stderr; for a command that succeeds without a warning, the "
        "line of its output that shows the outcome.",
        "",
        "| # | case | mistake | command | exit | what it prints |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for i, r in enumerate(rows, 1):
        command = r["command"]
        for flag in QUIET_FLAGS:
            command = command.replace(flag, "")
        lines.append(
            f"| {i} | {r['case']} | {_cell(r['what'])} | {_code(command)} | {r['exit']} "
            f"| {_code(r['message'])} |"
        )
    return "\n".join(lines)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cases.json"
        env = {**os.environ, "LABELFLIP_ROBUSTNESS_JSON": str(out), "OMP_NUM_THREADS": "1"}
        tests = [str(ROOT / "tests" / name) for name in TESTS]
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", *tests], env=env, cwd=ROOT)
        if proc.returncode != 0:
            print("tests failed: docs/robustness.md left as it was", file=sys.stderr)
            return 1
        rows = json.loads(out.read_text())
        first = len(rows)
        rows += json.loads(out.with_name(f"{out.stem}-files{out.suffix}").read_text())
    text = DOC.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{BEGIN}\n{render(rows, first)}\n{END}{tail}", encoding="utf-8")
    print(f"{DOC}: {len(rows)} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())

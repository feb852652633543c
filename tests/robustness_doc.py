"""Regenerate the table of bad-input cases in ``docs/robustness.md`` from real runs.

    python tests/robustness_doc.py

runs ``tests/test_robustness.py`` with ``LABELFLIP_ROBUSTNESS_JSON`` set (every
case then records its command, exit status and the line it printed) and, if
every test passed, rewrites the part of ``docs/robustness.md`` between the
``<!-- cases:begin -->`` and ``<!-- cases:end -->`` markers. Nothing in the
table is typed by hand except the one-phrase description of each mistake.
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


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _code(text: str) -> str:
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{_cell(text)}{pad}{fence}"


def render(rows: list[dict]) -> str:
    lines = [
        f"{len(rows)} cases, each run as a subprocess by `tests/test_robustness.py`; "
        "none printed a traceback. `run` commands also pass `--no-progress --no-report`.",
        "",
        "| # | case | mistake | command | exit | what it prints (stderr) |",
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
        test = ROOT / "tests" / "test_robustness.py"
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", str(test)], env=env, cwd=ROOT)
        if proc.returncode != 0:
            print("tests failed: docs/robustness.md left as it was", file=sys.stderr)
            return 1
        rows = json.loads(out.read_text())
    text = DOC.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{BEGIN}\n{render(rows)}\n{END}{tail}", encoding="utf-8")
    print(f"{DOC}: {len(rows)} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())

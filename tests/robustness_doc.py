"""Regenerate the table of bad-input cases in ``docs/robustness.md`` from real runs.

    python tests/robustness_doc.py

runs ``tests/test_robustness.py``, ``tests/test_robustness_files.py`` and
``tests/test_robustness_run.py`` with ``LABELFLIP_ROBUSTNESS_JSON`` set (every
case then records its command, exit status and the line it printed; the
second and third files' rows go to ``<stem>-files.json`` and ``<stem>-run.json``
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
TESTS = {  # test file -> suffix of the JSON file its rows go to
    "test_robustness.py": "",
    "test_robustness_files.py": "-files",
    "test_robustness_run.py": "-run",
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _code(text: str) -> str:
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{_cell(text)}{pad}{fence}"


def render(rows: list[dict], counts: dict[str, int] | None = None) -> str:
    """The table; ``counts``: how many of the rows, in order, each test file made."""
    counts = counts or {next(iter(TESTS)): len(rows)}
    spans, start = [], 1
    for name, n in counts.items():
        spans.append(f"`tests/{name}` ({start}-{start + n - 1})")
        start += n
    made_by = spans[0] if len(spans) == 1 else f"{', '.join(spans[:-1])} or {spans[-1]}"
    lines = [
        f"{len(rows)} cases, each run as a subprocess by {made_by}; none printed a traceback. "
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
        rows, counts = [], {}
        for name, suffix in TESTS.items():
            part = json.loads(out.with_name(f"{out.stem}{suffix}{out.suffix}").read_text())
            rows += part
            counts[name] = len(part)
    text = DOC.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{BEGIN}\n{render(rows, counts)}\n{END}{tail}", encoding="utf-8")
    print(f"{DOC}: {len(rows)} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""docs/records.md documents every exported column; its table is generated
from the schema's declarations (``labelflip.store.export.EXPORT_COLUMNS``).

    python tests/test_records_doc.py      # rewrite the table after a schema change
"""

from __future__ import annotations

import sys
from pathlib import Path

from labelflip.store import RECORD_COLUMNS
from labelflip.store.export import EXPORT_COLUMNS, columns_markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "records.md"
BEGIN, END = "<!-- columns:begin -->\n", "<!-- columns:end -->"


def _table(text: str) -> str:
    return text[text.index(BEGIN) + len(BEGIN) : text.index(END)]


def test_the_doc_table_is_generated_from_the_schema():
    assert _table(DOC.read_text(encoding="utf-8")) == columns_markdown(), (
        "docs/records.md is stale: run python tests/test_records_doc.py"
    )


def test_every_exported_column_is_documented_once():
    names = [c.name for c in EXPORT_COLUMNS]
    assert len(names) == len(set(names))
    assert names[7:] == list(RECORD_COLUMNS[1:])  # the record columns, in order
    assert all(c.doc.strip() for c in EXPORT_COLUMNS)
    table = columns_markdown()
    for name in names:
        assert f"| `{name}` |" in table


def test_the_none_marked_columns_say_so():
    nullable = {c.name for c in EXPORT_COLUMNS if c.missing is not None}
    # every "no class" and "no score" column, whatever the marker
    assert {"target", "adv_pred", "oracle_pred", "attacker_pred", "squeeze"} <= nullable
    assert not {"true", "clean_pred", "sample", "index"} & nullable


if __name__ == "__main__":
    text = DOC.read_text(encoding="utf-8")
    DOC.write_text(text.replace(_table(text), columns_markdown()), encoding="utf-8")
    print(f"rewrote the table of {DOC}", file=sys.stderr)

"""docs/hdf5-layout.md shows the table of kinds as the code has it."""

from __future__ import annotations

from pathlib import Path

from epyclab.notebooks.kinds import KINDS, kinds_table

LAYOUT = Path(__file__).resolve().parent.parent / "docs" / "hdf5-layout.md"


def test_the_layout_page_holds_the_table_of_kinds_as_generated():
    text = LAYOUT.read_text(encoding="utf-8")
    start = text.index("<!-- kinds table:")
    start = text.index("\n", start) + 1
    end = text.index("<!-- end of kinds table -->")
    assert text[start:end] == kinds_table(), (
        "docs/hdf5-layout.md's kinds table differs from epyclab/notebooks/kinds.py: "
        "paste epyclab.notebooks.kinds.kinds_table() between its markers"
    )


def test_every_kind_documents_itself():
    for kind in KINDS.values():
        assert all((kind.accepts_doc, kind.frame_doc, kind.h5_doc, kind.missing_doc, kind.widens_doc)), kind.name

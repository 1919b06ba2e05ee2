"""Every Python code block of the tutorial and cookbook runs, so the docs cannot rot.

The blocks of one page run in order in one namespace, in a fresh working
directory, as a reader following the page would run them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(
    p for sub in ("tutorial", "cookbook") for p in (DOCS / sub).glob("*.md") if p.name != "index.md"
)
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(page: Path) -> list[str]:
    """The ```python blocks of a Markdown page, in order."""
    return _BLOCK.findall(page.read_text())


def test_every_page_has_code() -> None:
    assert PAGES, "no tutorial pages found"
    without = [p.name for p in PAGES if not python_blocks(p)]
    assert not without, f"pages with no python block to run: {without}"


@pytest.mark.parametrize("page", PAGES, ids=[f"{p.parent.name}/{p.stem}" for p in PAGES])
def test_page_runs(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for i, block in enumerate(python_blocks(page)):
        code = compile(block, f"{page.relative_to(DOCS)}[block {i + 1}]", "exec")
        exec(code, namespace)  # noqa: S102 - running the documentation is the point

"""What the docs say about ParallelLab's local cluster is what the code does.

The cluster is not stopped when a sweep ends: one warm local cluster per
process (and size and profile directory) serves the next sweeps, and is
stopped at exit, after :data:`epyclab.labs.transports.warm.IDLE_SECONDS` idle, after a
failed sweep or by ``shutdown()`` (tests/test_parallel_processes.py shows the
behaviour; this test keeps the pages in line with it).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from epyclab.labs.transports import warm

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]

# Claims of a cluster per sweep or per lab, which the code does not make true.
_WRONG = [
    r"stops?\s+(the|its)\s+(local\s+)?cluster\s+(when|once|after)\s+the\s+sweep",
    r"starts\s+and\s+stops\s+(a|the|its)\s+(local\s+)?cluster",
    r"cluster\s+for\s+(each|every)\s+sweep",
    r"its\s+own\s+(local\s+)?cluster",
]
_NUMBERS = {"one": 1, "two": 2, "three": 3, "five": 5, "ten": 10, "fifteen": 15, "thirty": 30}


def _prose(page: Path) -> str:
    return re.sub(r"\s+", " ", page.read_text(encoding="utf-8"))


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_no_page_says_the_cluster_lives_for_one_sweep(page: Path) -> None:
    text = _prose(page)
    for pattern in _WRONG:
        m = re.search(pattern, text, re.IGNORECASE)
        assert m is None, f"{page.relative_to(ROOT)}: {m.group(0)!r} is not what ParallelLab does"


def test_the_idle_time_the_pages_give_is_the_codes() -> None:
    said = []
    for page in PAGES:
        for m in re.finditer(r"after (\w+) (?:idle minutes|minutes without a sweep)", _prose(page)):
            said.append((page.relative_to(ROOT), m.group(1)))
    assert said, "no page says when an idle local cluster is stopped"
    for page, number in said:
        assert _NUMBERS.get(number) == warm.IDLE_SECONDS / 60, f"{page}: after {number} minutes"

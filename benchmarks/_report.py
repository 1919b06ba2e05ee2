"""Shared by the benchmark scripts: format a table and write it into docs/performance.md.

Each benchmark owns one section of docs/performance.md, between the markers
``<!-- NAME:start -->`` and ``<!-- NAME:end -->``, and replaces only that.
"""

from __future__ import annotations

import os
import platform
import re
from datetime import date
from pathlib import Path

PERFORMANCE_MD = Path(__file__).resolve().parent.parent / "docs" / "performance.md"

_HEADER = """# Performance

Every figure on this page is written by a script in `benchmarks/`; run it again
to refresh its section. Ratios are measured within one run, because the
machines are noisy.
"""


def compile_package() -> None:
    """Compile epyclab's modules to bytecode, as installing it does, before fresh processes are measured.

    pip compiles a package's modules when it installs it, and a checkout installed with ``pip install -e``
    writes them at its first import, unless ``PYTHONDONTWRITEBYTECODE`` is set (as it is on some shared
    machines, this one included). Then every fresh process (a cold script, each engine or worker that
    unpacks an experiment) compiles epyclab's modules again: 0.07-0.09 CPU-s per process here, which no
    installed epyclab costs its user, and which a 2-core cold sweep pays once per engine.
    """
    import compileall

    compileall.compile_dir(str(Path(__file__).resolve().parent.parent / "epyclab"), quiet=1)


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    """One line saying where the figures were measured."""
    return (
        f"Measured {date.today().isoformat()} on {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}."
    )


class Load:
    """The machine's load average, taken when made and again by :meth:`footer` (the figures' conditions)."""

    def __init__(self) -> None:
        self.before = os.getloadavg()

    def text(self) -> str:
        """One line: the load average (1, 5, 15 min) at the start and now."""
        after = os.getloadavg()
        return (
            f"Load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in self.before)}; "
            f"after: {', '.join(f'{x:.2f}' for x in after)}."
        )

    def footer(self) -> str:
        """The lines that end a section: the load average at the start and now, and where it was measured."""
        return f"{self.text()}\n\n{machine()}"


def write_section(name: str, body: str) -> None:
    """Replace section ``name`` of docs/performance.md with ``body`` (appending it if new)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = PERFORMANCE_MD.read_text() if PERFORMANCE_MD.exists() else _HEADER
    block = f"{start}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    PERFORMANCE_MD.parent.mkdir(parents=True, exist_ok=True)
    PERFORMANCE_MD.write_text(text)

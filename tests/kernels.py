"""Running a real Jupyter notebook through a real IPython kernel (nbclient), for the Jupyter tests.

Not a conftest: the test modules import it. The kernel is started with this
test run's own Python (a kernel spec written to a temporary Jupyter path), in
a working directory and an IPython directory of the test's own, and nbclient
shuts it down when the notebook has run. Outputs come back as nbformat's
output dicts (``output_type``, ``name``, ``text``, ``data``).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import nbformat
import psutil
from nbclient import NotebookClient

KERNEL_NAME = "epyclab-test"

#: What the local cluster's controller and engines print, which must never reach a cell or a terminal.
CLUSTER_NOISE = (
    "received signal 15",
    "Received signal 15",
    "Event loop stopped before Future completed",
    "engine set stopped",
    "Output for",
    "[IPEngine",
    "[IPController",
    "KernelNanny",
    "CRITICAL",
    "TqdmWarning",
    "IProgress not found",
    "engine/s",
)


def install_kernel(jupyter_path: Path) -> None:
    """Write a kernel spec that runs this Python's ipykernel under ``jupyter_path/kernels``."""
    spec = jupyter_path / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "epyclab tests",
        "language": "python",
    }))


def run_notebook(cells: list[str], workdir: Path, timeout: int = 300) -> list[list[dict[str, Any]]]:
    """Run ``cells`` in order in a fresh kernel in ``workdir``; return each cell's outputs.

    The caller sets ``JUPYTER_PATH`` (see :func:`install_kernel`) and
    ``IPYTHONDIR`` in ``os.environ``; the kernel inherits them. A cell that
    raises fails the call with nbclient's CellExecutionError.
    """
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = NotebookClient(nb, kernel_name=KERNEL_NAME, timeout=timeout,
                            resources={"metadata": {"path": str(workdir)}})
    client.execute()
    return [[dict(o) for o in cell.outputs] for cell in nb.cells]


def streams(outputs: list[dict[str, Any]], name: str) -> str:
    """The text a cell wrote to stream ``name`` ('stdout' or 'stderr'), concatenated."""
    return "".join(o["text"] for o in outputs if o["output_type"] == "stream" and o["name"] == name)


def all_text(outputs: list[dict[str, Any]]) -> str:
    """Every text of a cell's outputs (streams, text/plain of displays, tracebacks), for searching."""
    parts = []
    for o in outputs:
        if o["output_type"] == "stream":
            parts.append(o["text"])
        elif "data" in o:
            parts.append(str(o["data"].get("text/plain", "")))
        elif o["output_type"] == "error":
            parts.extend(o.get("traceback", []))
    return "\n".join(parts)


_DRAW = re.compile(r"^(?P<desc>\w+): +\d+%\|.*\| *(?P<n>\d+)/(?P<total>\d+) ")


def text_bar_draws(text: str) -> list[tuple[str, int, int]]:
    """The draws of text progress bars in ``text``: (description, count, total), in order.

    A text bar redraws itself after a carriage return; every non-empty
    segment between carriage returns and newlines must be a draw, or
    :class:`AssertionError` says what else was printed.
    """
    draws = []
    for segment in re.split(r"[\r\n]", text):
        if not segment.strip():
            continue
        m = _DRAW.match(segment)
        assert m is not None, f"not a progress bar draw: {segment!r}"
        draws.append((m["desc"], int(m["n"]), int(m["total"])))
    return draws


def processes_under(path: Path) -> list[psutil.Process]:
    """Running processes whose command line or IPYTHONDIR mentions ``path`` (other than this one)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            text = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["environ"] or {}).get("IPYTHONDIR", "")
        except (psutil.Error, TypeError):
            continue
        if str(path) in text and proc.pid != os.getpid():
            found.append(proc)
    return found

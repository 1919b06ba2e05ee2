"""A notebook file just made by ``create=True`` and still open keeps out a writer in another process that
comes through a hard link (another name for the same inode): the writer lock moves to the new file's inode
as soon as it is made, before anything is committed (issue 19.7)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from epyclab import HDF5LabNotebook, JSONLabNotebook
from epyclab.experiment import Experiment

# Opens argv[2] for writing with class argv[1]; prints the error's class and message, or "opened".
OPEN_FOR_WRITING = """
import sys
import epyclab
cls = getattr(epyclab, sys.argv[1])
try:
    nb = cls(sys.argv[2])
except epyclab.EpyclabError as exc:
    print(type(exc).__name__, exc, flush=True)
else:
    nb.close()
    print("opened", flush=True)
"""


def _open_elsewhere(cls: type, path: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-c", OPEN_FOR_WRITING, cls.__name__, str(path)],
        capture_output=True, text=True, timeout=120, check=True,
    )
    return out.stdout.strip()


@pytest.mark.parametrize("cls", [HDF5LabNotebook, JSONLabNotebook])
@pytest.mark.parametrize("over_existing", [False, True])
def test_a_new_open_notebook_refuses_a_writer_through_a_hard_link(cls: type, over_existing: bool,
                                                                  tmp_path: Path) -> None:
    path = tmp_path / f"new.{'h5' if cls is HDF5LabNotebook else 'json'}"
    if over_existing:
        # create=True over a notebook that was there: the new file is a new inode, which must be locked too.
        with cls(path, create=True) as old:
            old.addResult({Experiment.PARAMETERS: {"x": 0}, Experiment.RESULTS: {"y": 0},
                           Experiment.METADATA: {Experiment.STATUS: True}})
    nb = cls(path, create=True)
    try:
        link = tmp_path / "elsewhere" / "another-name"
        link.parent.mkdir()
        os.link(path, link)
        said = _open_elsewhere(cls, link)
        assert said.startswith("NotebookInUseError"), said
        assert str(link) in said and "another name" in said
        # Still this process's: it commits and closes, and the rows are in the file.
        nb.addResult({Experiment.PARAMETERS: {"x": 1}, Experiment.RESULTS: {"y": 2},
                      Experiment.METADATA: {Experiment.STATUS: True}})
    finally:
        nb.close()
    assert cls(path, readonly=True).numberOfResults() == 1
    # Closed, it lets the other name in.
    assert _open_elsewhere(cls, link) == "opened"

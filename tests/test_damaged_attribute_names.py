"""An attribute whose name a damaged byte has made other than UTF-8 text (issue 19.2, found from outside).

h5py gives such a name back as ``bytes``; epyc 1.x notebooks keep a result set's user attributes as HDF5
attributes, so the name reached the result set's attributes and failed deep in building its DataFrame
with a bare ``TypeError`` (``epyclab show`` printed a traceback). It must be refused as damage, naming
the file and where.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from epyclab import HDF5LabNotebook, NotebookFormatError

FIXTURE = Path(__file__).parent / "fixtures" / "epyc-1.7.2-notebook.h5"


@pytest.fixture
def damaged_name(tmp_path: Path) -> Path:
    """The epyc 1.7.2 fixture with the name of result set "walks"' attribute ``description`` damaged.

    The fuzz run (byte 1994, 'n' -> 0x8c) made it ``b"descriptio\\x8c"``, which is not UTF-8.
    """
    path = tmp_path / "epyc.h5"
    shutil.copyfile(FIXTURE, path)
    data = bytearray(path.read_bytes())
    at = data.find(b"description\x00", 1900) + len("description") - 1
    assert at == 1994 and data[at] == ord("n")
    data[at] = 0x8C
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("kwargs", [{"readonly": True}, {}], ids=["readonly", "writing"])
def test_an_attribute_name_that_is_not_text_is_refused_naming_the_file(damaged_name: Path, kwargs: dict) -> None:
    with pytest.raises(NotebookFormatError) as caught:
        nb = HDF5LabNotebook(damaged_name, **kwargs)
        try:
            for tag in nb.resultSets():
                nb.resultSet(tag).dataframe()
        finally:
            nb.close()
    assert str(damaged_name) in str(caught.value) and "walks" in str(caught.value)


def test_show_says_the_file_is_damaged_without_a_traceback(damaged_name: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "epyclab", "show", str(damaged_name)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and str(damaged_name) in proc.stderr, proc.stderr

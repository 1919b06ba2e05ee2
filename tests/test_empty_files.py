"""An empty file (``touch``, ``tempfile.mkstemp``) holds no notebook, and nothing to lose.

``create=True`` makes a notebook in it, whatever ``force``; without it (or
read-only) the error says the file holds no notebook and how to make one. A
file that holds anything that is not a notebook is still refused, never
overwritten.
"""

from __future__ import annotations

import os
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from notebook_cases import results_dict

from epyclab import HDF5LabNotebook, JSONLabNotebook, openNotebook
from epyclab.errors import NotebookFormatError

CLASSES = {".h5": HDF5LabNotebook, ".hdf5": HDF5LabNotebook, ".json": JSONLabNotebook}


def empty_file(directory: str, suffix: str, how: str) -> str:
    if how == "mkstemp":
        fd, path = tempfile.mkstemp(suffix=suffix, dir=directory)
        os.close(fd)
        return path
    path = os.path.join(directory, f"touched{suffix}")
    open(path, "w").close()
    return path


@settings(max_examples=30)
@given(
    suffix=st.sampled_from(sorted(CLASSES)),
    how=st.sampled_from(["touch", "mkstemp"]),
    force=st.booleans(),
    through=st.sampled_from(["class", "openNotebook"]),
    rows=st.integers(0, 3),
)
def test_create_makes_a_notebook_in_an_empty_file(tmp_path_factory, suffix, how, force, through, rows):
    path = empty_file(str(tmp_path_factory.mktemp("empty")), suffix, how)
    cls = CLASSES[suffix]
    nb = cls(path, create=True, force=force) if through == "class" else openNotebook(path, create=True, force=force)
    assert isinstance(nb, cls)
    for i in range(rows):
        nb.addResult(results_dict(i, y=i / 2))
    nb.close()
    assert os.path.getsize(path) > 0
    again = openNotebook(path, readonly=True)
    assert isinstance(again, cls) and again.numberOfResults() == rows


@pytest.mark.parametrize("suffix", sorted(CLASSES))
@pytest.mark.parametrize("readonly", [False, True])
def test_an_empty_file_opened_without_create_says_it_holds_no_notebook_and_how_to_make_one(tmp_path, suffix,
                                                                                             readonly):
    path = empty_file(str(tmp_path), suffix, "touch")
    cls = CLASSES[suffix]
    for opener in (cls, openNotebook):
        with pytest.raises(NotebookFormatError) as err:
            opener(path, readonly=readonly)
        message = str(err.value)
        assert path in message and "empty" in message and "holds no notebook" in message
        assert "create=True" in message
    assert os.path.getsize(path) == 0  # left as it was
    assert not any(name != os.path.basename(path) for name in os.listdir(tmp_path))  # no side file left


@settings(max_examples=30)
@given(
    suffix=st.sampled_from(sorted(CLASSES)),
    content=st.binary(min_size=1, max_size=64).filter(lambda b: not b.lstrip().startswith((b"{", b"\x89HDF"))),
    force=st.booleans(),
)
def test_a_file_that_holds_something_else_is_still_refused(tmp_path_factory, suffix, content, force):
    path = os.path.join(tmp_path_factory.mktemp("other"), f"other{suffix}")
    with open(path, "wb") as f:
        f.write(content)
    with pytest.raises(NotebookFormatError, match="not"):
        CLASSES[suffix](path, create=True, force=force)
    with open(path, "rb") as f:
        assert f.read() == content  # never overwritten

"""A notebook opened with the other format's class is refused saying what the file is, and left alone."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from notebook_cases import results_dict

from epyclab import HDF5LabNotebook, JSONLabNotebook
from epyclab.errors import NotebookFormatError
from epyclab.notebooks.registry import openNotebook

CLASSES = {"HDF5": HDF5LabNotebook, "JSON": JSONLabNotebook}
OTHER = {"HDF5": "JSON", "JSON": "HDF5"}


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(
    fmt=st.sampled_from(sorted(CLASSES)),
    # The name says nothing reliable: the content does.
    suffix=st.sampled_from([".h5", ".json", ".hdf5", ".nb", ""]),
    mode=st.sampled_from([{}, {"readonly": True}, {"create": True}]),
)
def test_the_other_class_says_what_the_file_is(tmp_path_factory, fmt, suffix, mode):
    path = tmp_path_factory.mktemp("fmt") / f"results{suffix}"
    with CLASSES[fmt](path, create=True) as nb:
        nb.addResult(results_dict(0, y=1.0))
    original = path.read_bytes()
    wrong = CLASSES[OTHER[fmt]]
    with pytest.raises(NotebookFormatError) as err:
        wrong(path, **mode)
    article = "an" if fmt == "HDF5" else "a"
    assert str(err.value).startswith(f"{path} is {article} {fmt} notebook"), err.value
    assert f"open it with {CLASSES[fmt].__name__} or openNotebook" in str(err.value)
    assert "codec" not in str(err.value)
    assert path.read_bytes() == original  # nothing written, nothing lost
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no lock or journal left
    nb = openNotebook(path, readonly=True)
    assert type(nb) is CLASSES[fmt] and nb.numberOfResults() == 1


def test_replacing_a_file_of_the_other_format_needs_force(tmp_path):
    path = tmp_path / "results.h5"
    HDF5LabNotebook(path, create=True).close()
    with pytest.raises(NotebookFormatError, match="is an HDF5 notebook"):
        JSONLabNotebook(path, create=True)
    JSONLabNotebook(path, create=True, force=True).close()
    assert type(openNotebook(path, readonly=True)) is JSONLabNotebook

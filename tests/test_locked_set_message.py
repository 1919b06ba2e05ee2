"""A change to a finished (locked) result set is refused with a message naming the set and the notebook file."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from notebook_cases import results_dict

from epyclab import Experiment, HDF5LabNotebook, JSONLabNotebook, Lab, LabNotebook
from epyclab.errors import ResultSetLockedException

FORMATS = {"h5": HDF5LabNotebook, "json": JSONLabNotebook}
TAGS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=12)


class Echo(Experiment):
    def do(self, params):
        return {"y": params["i"]}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(tag=TAGS)
def test_a_run_into_a_finished_set_names_the_set_and_the_file(tmp_path_factory, fmt, tag):
    path = tmp_path_factory.mktemp("locked") / f"nb.{fmt}"
    ran = []

    class Counting(Echo):
        def do(self, params):
            ran.append(params)
            return super().do(params)

    with FORMATS[fmt](path, create=True) as nb:
        nb.addResultSet(tag)
        nb.addResult(results_dict(0, y=1.0))
        nb.current().finish()
    nb = FORMATS[fmt](path)  # reopened: the lock is read back from the file
    nb.select(tag)
    lab = Lab(nb)
    lab["i"] = range(3)
    with pytest.raises(ResultSetLockedException) as err:
        lab.runExperiment(Counting())
    assert f"result set {tag!r}" in str(err.value) and str(path) in str(err.value)
    assert ran == []  # refused before any point ran
    with pytest.raises(ResultSetLockedException, match=repr(tag)):
        nb.current().setAttribute("a", 1)
    nb.close()


def test_an_in_memory_notebook_names_the_set():
    nb = LabNotebook()
    nb.addResultSet("first")
    nb.current().finish()
    with pytest.raises(ResultSetLockedException, match="result set 'first'"):
        nb.addResult(results_dict(0, y=1.0))

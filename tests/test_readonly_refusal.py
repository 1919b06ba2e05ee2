"""Every change to a read-only notebook is refused at once, naming the file; reading (and select) still work."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from notebook_cases import results_dict

from epyclab import Experiment, HDF5LabNotebook, JSONLabNotebook, Lab
from epyclab.errors import NotebookReadOnlyError

FORMATS = {"h5": HDF5LabNotebook, "json": JSONLabNotebook}

# Every way to change a notebook or one of its result sets, by name.
CHANGES = {
    "addResultSet": lambda nb: nb.addResultSet("x"),
    "already (new set)": lambda nb: nb.already("new"),
    "addResult": lambda nb: nb.addResult(results_dict(7, y=1.0)),
    "addResult to a tag": lambda nb: nb.addResult(results_dict(7, y=1.0), "other"),
    "addPendingResult": lambda nb: nb.addPendingResult({"i": 1}, "job-new"),
    "resolvePendingResult": lambda nb: nb.resolvePendingResult(results_dict(5, y=1.0), "job-1"),
    "cancelPendingResult": lambda nb: nb.cancelPendingResult("job-1"),
    "deleteResultSet": lambda nb: nb.deleteResultSet("other"),
    "setDescription": lambda nb: nb.setDescription("new"),
    "finish": lambda nb: nb.finish(),
    "result set setAttribute": lambda nb: nb.current().setAttribute("a", 2),
    "result set item": lambda nb: nb.current().__setitem__("a", 2),
    "result set deleteAttribute": lambda nb: nb.current().deleteAttribute("a"),
    "result set setDescription": lambda nb: nb.current().setDescription("d"),
    "result set addSingleResult": lambda nb: nb.current().addSingleResult(results_dict(8, y=1.0)),
    "result set addSinglePendingResult": lambda nb: nb.current().addSinglePendingResult({"i": 2}, "j2"),
    "result set finish": lambda nb: nb.current().finish(),
}


def make(path: Path, fmt: str) -> None:
    with FORMATS[fmt](path, create=True) as nb:
        nb.addResult(results_dict(0, y=1.0))
        nb.addPendingResult({"i": 5}, "job-1")
        nb.current().setAttribute("a", 1)
        nb.addResultSet("other")
        nb.select("epyc.resultset.default")


def snapshot(nb) -> tuple:
    return (
        nb.description(), nb.isLocked(), sorted(nb.resultSets()),
        {t: (nb.resultSet(t).numberOfResults(), nb.resultSet(t).pendingResults(),
             dict(nb.resultSet(t).attributes()), nb.resultSet(t).isLocked(), nb.resultSet(t).description())
         for t in nb.resultSets()},
    )


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(changes=st.lists(st.sampled_from(sorted(CHANGES)), min_size=1, max_size=5))
def test_every_change_to_a_read_only_notebook_is_refused_at_once(tmp_path_factory, fmt, changes):
    path = tmp_path_factory.mktemp("ro") / f"nb.{fmt}"
    make(path, fmt)
    original = path.read_bytes()
    ro = FORMATS[fmt](path, readonly=True)
    before = snapshot(ro)
    for name in changes:
        with pytest.raises(NotebookReadOnlyError, match=str(path)):
            CHANGES[name](ro)
        assert snapshot(ro) == before, name  # nothing changed in memory either
    ro.commit()  # nothing to save, nothing refused
    assert path.read_bytes() == original
    # Reading, and select (only which set reads default to; never saved), still work.
    assert ro.select("other") is ro.resultSet("other")
    assert ro.numberOfResults("epyc.resultset.default") == 1


class Echo(Experiment):
    def do(self, params):
        return {"y": params["i"]}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_a_sweep_into_a_read_only_notebook_is_refused_before_any_point_runs(tmp_path, fmt):
    path = tmp_path / f"nb.{fmt}"
    make(path, fmt)
    lab = Lab(FORMATS[fmt](path, readonly=True))
    lab["i"] = range(3)
    ran = []

    class Counting(Echo):
        def do(self, params):
            ran.append(params)
            return super().do(params)

    with pytest.raises(NotebookReadOnlyError, match=str(path)):
        lab.runExperiment(Counting())
    assert ran == []

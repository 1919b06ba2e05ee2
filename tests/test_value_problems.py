"""A problem with one run's values is data, never a stopped sweep; a parameter the notebook cannot keep stops the
sweep before anything runs.

Parameters are known before any point runs and are kept with every row, failed ones too: a parameter value the
result set cannot store (another kind than its column's, a dict, an aware datetime...) or a parameter named like a
result or metadata column is refused up front, naming the point, and nothing runs. What a run returns is checked
when it comes back: a value that cannot be stored, or a result named like a metadata key, makes that point a failed
row, in a lab's sweep and when a pending job is collected, and the sweep goes on. (A user saw a sweep stop at the
first str among int parameters, and a ClusterLab whose every later wait() raised on one collected row.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_kinds_property import VALUES

from epyclab import (
    Experiment,
    HDF5LabNotebook,
    Lab,
    LabNotebook,
    ResultsStructureException,
    UnstorableValueError,
)
from epyclab.designs import PointwiseDesign

# Names a run's results may take: a plain name, the parameter's own name, and metadata keys.
RESULT_NAMES = st.sampled_from(["y", "v", Experiment.START_TIME, Experiment.STATUS, Experiment.EXCEPTION, "z"])


class Spy(Experiment):
    """Returns the results given per point (by the point's position ``i``), and records which points ran."""

    def __init__(self, results: list[dict[str, Any]]) -> None:
        super().__init__()
        self.results = results
        self.ran: list[int] = []

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        self.ran.append(params["i"])
        return self.results[params["i"] % len(self.results)] if self.results else {}


def notebook(kind: str, tmp_path_factory: pytest.TempPathFactory) -> LabNotebook:
    if kind == "memory":
        return LabNotebook()
    return HDF5LabNotebook(str(tmp_path_factory.mktemp("values") / "nb.h5"), create=True)


@pytest.mark.parametrize("kind", ["memory", "hdf5"])
@given(earlier=st.lists(VALUES, max_size=2), values=st.lists(VALUES, min_size=1, max_size=5))
def test_a_sweep_runs_every_point_or_none(kind: str, earlier: list[Any], values: list[Any],
                                          tmp_path_factory: pytest.TempPathFactory) -> None:
    nb = notebook(kind, tmp_path_factory)
    try:
        # Earlier rows give the column a kind (when they could be stored at all).
        for v in earlier:
            try:
                nb.addResult({Experiment.PARAMETERS: {"v": v, "i": -1}, Experiment.METADATA: {},
                              Experiment.RESULTS: {}})
            except (UnstorableValueError, ResultsStructureException):
                pass
        before = nb.numberOfResults()
        lab = Lab(nb, design=PointwiseDesign())  # one point per value, paired with its position i
        lab["v"] = values
        lab["i"] = range(len(values))
        spy = Spy([])
        try:
            lab.runExperiment(spy)
        except (UnstorableValueError, ResultsStructureException) as exc:
            # Refused up front: nothing ran, nothing was added, and the message names the point.
            assert spy.ran == []
            assert nb.numberOfResults() == before
            assert "Nothing was run" in str(exc) and "point " in str(exc)
        else:
            assert sorted(spy.ran) == list(range(len(values)))
            assert nb.numberOfResults() == before + len(values)
            df = nb.dataframe(only_successful=False)
            assert sorted(i for i in df["i"] if i >= 0) == list(range(len(values)))
    finally:
        nb.close()


@pytest.mark.parametrize("kind", ["memory", "hdf5"])
@given(results=st.lists(st.dictionaries(RESULT_NAMES, VALUES, max_size=3), min_size=1, max_size=4))
def test_what_a_run_returns_never_stops_the_sweep(kind: str, results: list[dict[str, Any]],
                                                  tmp_path_factory: pytest.TempPathFactory) -> None:
    nb = notebook(kind, tmp_path_factory)
    try:
        lab = Lab(nb)
        lab["i"] = range(6)
        spy = Spy(results)
        lab.runExperiment(spy)
        assert sorted(spy.ran) == list(range(6))
        df = nb.dataframe(only_successful=False)
        # Exactly one row per point, whatever the runs returned.
        assert sorted(df["i"]) == list(range(6))
        failed = df[~df[Experiment.STATUS].astype(bool)]
        for exc in failed[Experiment.EXCEPTION]:
            assert exc.startswith(("epyclab.errors.UnstorableValueError", "epyclab.errors.ResultsStructureException",
                                   "UnstorableValueError", "ResultsStructureException")), exc
    finally:
        nb.close()


@given(result=st.dictionaries(RESULT_NAMES, VALUES, min_size=1, max_size=3))
def test_a_collected_job_is_always_resolved(result: dict[str, Any]) -> None:
    nb = LabNotebook()
    nb.addResult({Experiment.PARAMETERS: {"i": 0}, Experiment.METADATA: {}, Experiment.RESULTS: {"y": 1}})
    nb.addPendingResult({"i": 1}, "job-1")
    rc = {Experiment.PARAMETERS: {"i": 1}, Experiment.METADATA: {Experiment.STATUS: True},
          Experiment.RESULTS: result}
    nb.resolvePendingResult(rc, "job-1")
    assert nb.numberOfPendingResults() == 0
    assert nb.numberOfResults() == 2
    row = nb.dataframe(only_successful=False).iloc[-1]
    assert row["i"] == 1


def test_the_users_sweep_is_refused_naming_the_point(tmp_path: Path) -> None:
    """The case a user met: a str among int parameter values; before, 6 of 12 points ran and the sweep raised."""
    nb = HDF5LabNotebook(str(tmp_path / "p.h5"), create=True)
    lab = Lab(nb)
    lab["v"] = [1, 2, 3, "a", 5, 6]
    lab["seed"] = [0, 1]
    spy = Spy([{"ok": 1}])
    with pytest.raises(UnstorableValueError) as raised:
        lab.runExperiment(_Indexed(spy))
    message = str(raised.value)
    assert "point 7 of 12 ({'v': 'a', 'seed': 0})" in message
    assert "cannot store parameter 'v' = 'a' (a str)" in message and "Nothing was run" in message
    assert spy.ran == [] and nb.numberOfResults() == 0
    nb.close()


def test_a_parameter_named_like_a_result_column_is_refused_up_front() -> None:
    nb = LabNotebook()
    nb.addResult({Experiment.PARAMETERS: {"x": 0}, Experiment.METADATA: {}, Experiment.RESULTS: {"y": 1}})
    lab = Lab(nb)
    lab["y"] = range(3)
    spy = Spy([{"z": 1}])
    with pytest.raises(ResultsStructureException, match=r"'y' is a result column of this result set"):
        lab.runExperiment(_Indexed(spy))
    assert spy.ran == [] and nb.numberOfResults() == 1


class _Indexed(Experiment):
    """Runs ``inner`` with a made-up point index, for sweeps whose parameters do not include ``i``."""

    def __init__(self, inner: Spy) -> None:
        super().__init__()
        self.inner = inner
        self.n = 0

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        self.n += 1
        return self.inner.do({**params, "i": self.n - 1})


@pytest.mark.parametrize("kind", ["memory", "hdf5"])
@given(values=st.lists(st.sampled_from([None, 0, 1, 2.5, None]), min_size=1, max_size=6),
       wanted=st.one_of(st.sampled_from([None, 0, 1, 2.5]), st.lists(st.sampled_from([None, 0, 1]), max_size=2)))
def test_dataframefor_tells_a_none_parameter_from_the_fill(kind: str, values: list[Any], wanted: Any,
                                                          tmp_path_factory: pytest.TempPathFactory) -> None:
    """A None parameter reads as its column's fill (0 in an int column) but selects as None, never as 0."""
    nb = notebook(kind, tmp_path_factory)
    lab = Lab(nb, design=PointwiseDesign())
    lab["v"] = values
    lab["i"] = range(len(values))
    lab.runExperiment(Spy([{"y": 1}]))

    def same(a: Any, b: Any) -> bool:
        return a is None if b is None else (a is not None and a == b)

    targets = wanted if isinstance(wanted, list) else [wanted]
    expected = sorted(i for i, v in enumerate(values) if any(same(v, t) for t in targets))
    assert sorted(nb.dataframeFor({"v": wanted})["i"]) == expected
    if kind == "hdf5":
        path = nb.name()
        nb.close()
        nb = HDF5LabNotebook(path)  # the missing cells are known from the file too
        assert sorted(nb.dataframeFor({"v": wanted})["i"]) == expected
    nb.close()

"""resume=True with None among a parameter's values: a missing cell matches None, so nothing runs twice."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from epyclab.experiment import Experiment
from epyclab.labs.lab import Lab
from epyclab.notebooks.hdf5 import HDF5LabNotebook
from epyclab.notebooks.labnotebook import LabNotebook


class Counted(Experiment):
    def __init__(self) -> None:
        super().__init__()
        self.runs: list[dict[str, Any]] = []

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        self.runs.append(dict(params))
        return {"y": 1}


# One kind per parameter (a notebook column holds one kind) with None mixed in.
_ints = st.integers(-1000, 1000)
_numbers = st.one_of(_ints, st.floats(-1e6, 1e6, allow_nan=False))
_texts = st.text(alphabet="abcxyz ", max_size=5)


def _parameter(kind: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    return st.lists(st.one_of(st.none(), kind), min_size=1, max_size=4).filter(lambda vs: None in vs)


spaces = st.dictionaries(
    st.sampled_from(["a", "b", "p"]),
    st.one_of(_parameter(_ints), _parameter(_numbers), _parameter(_texts)),
    min_size=1, max_size=2,
)


def _sweep(lab: Lab, space: dict[str, list[Any]], resume: bool) -> Counted:
    for k, vs in space.items():
        lab[k] = vs
    ex = Counted()
    lab.runExperiment(ex, progress=False, resume=resume)
    return ex


def test_the_reported_case_resumes_to_three_rows() -> None:
    for values in ([None, 0, 1.5], [None, 1, 2], [None, "a"]):
        lab = Lab(LabNotebook("mem"))
        assert len(_sweep(lab, {"p": values}, False).runs) == len(values)
        assert _sweep(lab, {"p": values}, True).runs == []
        assert len(lab.dataframe()) == len(values)


@given(spaces)
def test_resume_in_the_same_notebook_runs_nothing(space: dict[str, list[Any]]) -> None:
    lab = Lab(LabNotebook("mem"))
    first = _sweep(lab, space, False)
    rows = len(lab.dataframe())
    assert rows == len(first.runs)
    assert _sweep(lab, space, True).runs == []
    assert len(lab.dataframe()) == rows


@given(spaces)
def test_resume_after_reopening_an_hdf5_notebook_runs_nothing(space: dict[str, list[Any]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "nb.h5")
        nb = HDF5LabNotebook(path, create=True)
        first = _sweep(Lab(nb), space, False)
        nb.close()
        nb = HDF5LabNotebook(path)
        try:
            lab = Lab(nb)
            assert _sweep(lab, space, True).runs == []
            assert len(lab.dataframe()) == len(first.runs)
        finally:
            nb.close()

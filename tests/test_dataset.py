"""``ResultSet.dataset()``: a result set as an xarray Dataset, checked cell by cell against the DataFrame.

The property test generates sweeps (factorial and pointwise designs, one to
three parameters of ints, floats and text, repetitions, failing points, array
results), runs them on a real Lab, and checks that every row of the DataFrame
is in its cell of the Dataset with the same values, failed cells are missing and
masked, and every other cell is 'missing'. Then the layouts a user meets:
pending jobs, a partial grid, a pointwise design, attributes and provenance.
"""

from __future__ import annotations

import math
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from epyclab.combinators import RepeatedExperiment
from epyclab.designs import FactorialDesign, PointwiseDesign
from epyclab.experiment import Experiment
from epyclab.labs.lab import Lab
from epyclab.notebooks.dataset import MASK, POINT_DIM, REPETITION_DIM, STATE
from epyclab.notebooks.labnotebook import LabNotebook

STATUS = Experiment.STATUS


class Many(Experiment):
    """Results of several kinds from the point; fails at the points whose index is in ``bad``."""

    def __init__(self, bad: frozenset[tuple[Any, ...]] = frozenset(), arrays: bool = True) -> None:
        super().__init__()
        self.bad = bad
        self.arrays = arrays

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        key = tuple(sorted(params.items()))
        if key in self.bad:
            raise ArithmeticError(f"bad point {key}")
        h = abs(hash(repr(key))) % 1000
        res: dict[str, Any] = {"y": h / 7.0, "k": h, "t": f"t{h}", "flag": h % 2 == 0,
                               "u": float(np.random.random())}
        if self.arrays:
            res["arr"] = np.arange(1 + h % 3, dtype=float) * h
        return res


VALUES = {
    "N": st.lists(st.integers(-5, 50), min_size=1, max_size=4, unique=True),
    "p": st.lists(st.floats(-1, 1, allow_nan=False, width=32), min_size=1, max_size=3, unique=True),
    "s": st.lists(st.text("abc", min_size=1, max_size=3), min_size=1, max_size=3, unique=True),
}


@st.composite
def sweeps(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(sorted(VALUES)), min_size=1, max_size=3, unique=True))
    pointwise = draw(st.booleans())
    space = {n: draw(VALUES[n]) for n in names}
    if pointwise:
        n = max(len(v) for v in space.values())
        space = {k: (v * n)[:n] if len(v) > 1 else v for k, v in space.items()}
    design = PointwiseDesign() if pointwise else FactorialDesign()
    points = [p for _, p in design.experiments(None, space)]
    bad = draw(st.sets(st.sampled_from(range(len(points))), max_size=len(points)))
    return {"space": space, "pointwise": pointwise, "reps": draw(st.integers(1, 3)),
            "bad": frozenset(tuple(sorted(points[i].items())) for i in bad), "arrays": draw(st.booleans())}


def run_sweep(case: dict[str, Any]) -> LabNotebook:
    nb = LabNotebook()
    lab = Lab(nb, design=PointwiseDesign() if case["pointwise"] else FactorialDesign())
    for k, v in case["space"].items():
        lab[k] = v
    e: Experiment = Many(case["bad"], case["arrays"])
    if case["reps"] > 1:
        e = RepeatedExperiment(e, case["reps"])
    lab.runExperiment(e, progress=False, seed=1)
    return nb


def missing(v: Any) -> bool:
    return v is None or v == "" or (isinstance(v, float) and math.isnan(v))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(sweeps())
def test_every_row_is_in_its_cell_and_every_other_cell_is_missing(case: dict[str, Any]) -> None:
    nb = run_sweep(case)
    rs = nb.current()
    ds = nb.dataset()
    df = nb.dataframe(only_successful=False)
    swept = [k for k, v in case["space"].items() if len(v) > 1]
    # Dimensions: the swept parameters (a grid), or one point dimension; repetitions when there are any.
    dims = list(ds[STATE].dims)
    repeated = case["reps"] > 1
    assert (REPETITION_DIM in dims) == repeated
    body = [d for d in dims if d != REPETITION_DIM]
    if swept and body != [POINT_DIM]:
        assert body == swept
        for p in swept:
            # Coordinates in the design's order: as the values first appear in the DataFrame.
            assert list(ds[p].values) == list(dict.fromkeys(df[p].tolist()))
    elif swept:
        # Points that do not fill a grid (a pointwise design over two or more parameters) lie along one dimension.
        assert ds.attrs["epyclab.layout"] == "points" and case["pointwise"] and len(swept) > 1
    for k, v in case["space"].items():
        if len(v) == 1:
            assert ds[k].values.item() == v[0]
    seen: dict[tuple[Any, ...], int] = {}
    cells = set()
    for _, row in df.iterrows():
        point = tuple(row[p] for p in swept)
        index: dict[str, Any] = {}
        if body == [POINT_DIM]:
            matches = [i for i in range(ds.sizes[POINT_DIM]) if all(ds[p].values[i] == row[p] for p in swept)]
            assert len(matches) == 1
            index[POINT_DIM] = matches[0]
        else:
            index.update({p: list(ds[p].values).index(row[p]) for p in swept})
        if repeated:
            index[REPETITION_DIM] = seen.get(point, 0)
            seen[point] = seen.get(point, 0) + 1
        cell = ds.isel(index)
        cells.add(tuple(sorted(index.items())))
        ok = bool(row[STATUS])
        assert bool(cell[MASK]) == ok
        assert cell[STATE].item() == ("ok" if ok else "failed")
        for name in rs.resultNames():
            got = cell[name].values
            if ok:
                if isinstance(row[name], np.ndarray):
                    n = len(row[name])
                    assert np.array_equal(got[:n], row[name]) and np.isnan(got[n:]).all()
                else:
                    assert got.item() == row[name], name
            elif name == "flag":
                assert not got.item()  # a bool variable holds False where the mask says no run
            else:
                assert np.all([missing(v) for v in np.ravel(got)]), name
        for name in (Experiment.ELAPSED_TIME, Experiment.SEED, Experiment.EXCEPTION):
            assert cell[name].item() == row[name]
    total = math.prod(ds[STATE].shape)
    states = list(np.ravel(ds[STATE].values))
    assert len(cells) == len(df) and states.count("missing") == total - len(df)


def test_pending_jobs_and_a_partial_grid_show_as_pending_and_missing_cells() -> None:
    nb = LabNotebook()
    lab = Lab(nb)
    lab["N"] = [10, 20]
    lab["p"] = [0.1, 0.2, 0.3]
    lab.runExperiment(Many(arrays=False), progress=False)
    # A second sweep at one more N, of which one point is pending and the rest never ran.
    nb.addPendingResult({"N": 30, "p": 0.2}, "job-1")
    ds = nb.dataset()
    assert ds[STATE].dims == ("N", "p") and ds.attrs["epyclab.layout"] == "grid"
    assert ds[STATE].sel(N=30, p=0.2).item() == "pending"
    assert ds[STATE].sel(N=30, p=0.1).item() == "missing"
    assert math.isnan(ds["y"].sel(N=30, p=0.2).item())
    # The int result has missing cells: it is float with NaN there.
    assert ds["k"].dtype == np.float64 and ds["k"].sel(N=10, p=0.1).item() == nb.dataframe()["k"][0]
    # Asked for points, the same rows lie along one dimension.
    points = nb.dataset(layout="points")
    assert points[STATE].dims == (POINT_DIM,) and points.sizes[POINT_DIM] == 7
    assert list(points["N"].values) == [10, 10, 10, 20, 20, 20, 30]
    with pytest.raises(ValueError, match="layout must be"):
        nb.dataset(layout="cube")


def test_a_pointwise_design_gives_a_point_dimension_and_the_sets_attributes_come_along() -> None:
    nb = LabNotebook()
    lab = Lab(nb, design=PointwiseDesign())
    lab["N"] = [1, 2, 3]
    lab["p"] = [0.5, 0.25, 0.125]
    lab.runExperiment(Many(), progress=False, seed=77)
    nb.current()["note"] = "hello"
    ds = nb.dataset()
    assert ds[STATE].dims == (POINT_DIM,)
    assert list(ds["N"].values) == [1, 2, 3] and list(ds["p"].values) == [0.5, 0.25, 0.125]
    assert ds.attrs["note"] == "hello" and ds.attrs["epyclab.lab.seed"] == 77
    assert ds.attrs["epyclab.provenance.experiment.class"].endswith("Many")
    assert ds.attrs["epyclab.description"] == nb.current().description()
    # Array results keep their own dimension.
    assert ds["arr"].dims == (POINT_DIM, "arr_dim_0")


def test_a_notebook_gives_the_dataset_of_a_tagged_set_and_an_empty_set_gives_an_empty_dataset() -> None:
    nb = LabNotebook()
    nb.addResultSet("first")
    lab = Lab(nb)
    lab["x"] = [1, 2]
    lab.runExperiment(Many(), progress=False)
    nb.addResultSet("empty")
    assert nb.dataset("first").sizes["x"] == 2
    assert dict(nb.dataset().sizes) == {POINT_DIM: 0} and nb.dataset()[STATE].size == 0


def test_without_xarray_the_error_says_which_extra_to_install() -> None:
    code = (
        "import sys; sys.modules['xarray'] = None\n"
        "from epyclab import LabNotebook\n"
        "try:\n    LabNotebook().dataset()\n"
        "except ImportError as e:\n    print(type(e).__name__, e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "OptionalDependencyError" in out.stdout
    assert "pip install xarray" in out.stdout and "'.[xarray]'" in out.stdout


def test_an_epyc_notebook_gives_its_dataset() -> None:
    from pathlib import Path

    from epyclab.notebooks.hdf5 import HDF5LabNotebook

    fixture = Path(__file__).with_name("fixtures") / "epyc-1.7.2-notebook.h5"
    with HDF5LabNotebook(str(fixture), readonly=True) as nb:
        df = nb.dataframe("walks", only_successful=False)
        ds = nb.dataset("walks")
        note = nb.resultSet("walks")["note"]
    assert ds[STATE].dims == ("n", "seed") and ds.sizes == {"n": 4, "seed": 3}
    for _, row in df.iterrows():
        cell = ds.sel(n=row["n"], seed=row["seed"])
        if row[STATUS]:
            assert cell["mean"].item() == row["mean"] and cell[MASK].item()
        else:
            # epyc kept a zero in a failed run's result cells; the Dataset has no value there.
            assert math.isnan(cell["mean"].item()) and not cell[MASK].item() and cell[STATE].item() == "failed"
    assert not df[STATUS].all()
    assert ds.attrs["note"] == note

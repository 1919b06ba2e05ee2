"""Rerunning failed points on the sequential Lab: filters, repetitions, files, and the current view.

tests/test_lab_results_contract.py runs the same on every lab; here the details:
which rows a filter picks, how a rerun of a repeated experiment replaces the
point's rows repetition by repetition, that the replacement survives a file's
reopening (HDF5 and JSON), and that the stored rows are never rewritten.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from epyclab.combinators import RepeatedExperiment
from epyclab.designs import FactorialDesign, PointwiseDesign
from epyclab.experiment import Experiment
from epyclab.labs.lab import Lab
from epyclab.labs.parallel import ParallelLab
from epyclab.notebooks.hdf5 import HDF5LabNotebook
from epyclab.notebooks.json_notebook import JSONLabNotebook
from epyclab.notebooks.labnotebook import LabNotebook
from epyclab.notebooks.reruns import HISTORY
from epyclab.order import POINT

STATUS = Experiment.STATUS


class Fails(Experiment):
    """y = x + 10 * n, except the points in ``bad``, which raise the exception given there."""

    def __init__(self, bad: dict[int, BaseException] | None = None, n: int = 0) -> None:
        super().__init__()
        self.bad = bad or {}
        self.n = n

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        if params["x"] in self.bad:
            raise self.bad[params["x"]]
        return {"y": params["x"] + 10 * params.get("n", 0)}


class Unlucky(Experiment):
    """Fails when its first draw from numpy's global state is below ``below``: which runs fail follows the seed."""

    def __init__(self, below: float) -> None:
        super().__init__()
        self.below = below

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        u = float(np.random.random())
        if u < self.below:
            raise FloatingPointError(f"unlucky draw {u}")
        return {"u": u}


def swept(nb: LabNotebook, bad: dict[int, BaseException], n: int = 6, **kw: Any) -> Lab:
    lab = Lab(nb, **kw)
    lab["x"] = range(n)
    lab.runExperiment(Fails(bad), progress=False, seed=1)
    return lab


def test_exception_filters_take_a_class_and_its_subclasses_a_name_or_a_tuple() -> None:
    bad = {0: ZeroDivisionError("z"), 1: OverflowError("o"), 2: KeyError("k"), 3: ValueError("v")}
    nb = LabNotebook()
    lab = swept(nb, bad)
    # ArithmeticError covers ZeroDivisionError and OverflowError.
    assert lab.rerunFailed(Fails(bad), exception=ArithmeticError, progress=False) == 2
    assert lab.rerunFailed(Fails(bad), exception="KeyError", progress=False) == 1
    assert lab.rerunFailed(Fails(bad), exception=(KeyError, "ValueError"), progress=False) == 2
    assert lab.rerunFailed(Fails(bad), exception=TypeError, progress=False) == 0
    df = nb.dataframe(only_successful=False)
    assert [len(json.loads(h)) if h else 0 for h in df[HISTORY]] == [1, 1, 2, 1, 0, 0]


def test_a_where_filter_takes_values_lists_or_a_function_and_names_a_wrong_parameter() -> None:
    bad = {x: ValueError(str(x)) for x in range(6)}
    nb = LabNotebook()
    lab = swept(nb, bad)
    assert lab.rerunFailed(Fails(), where={"x": 4}, progress=False) == 1
    assert lab.rerunFailed(Fails(), where={"x": [0, 1, 4]}, progress=False) == 2
    assert lab.rerunFailed(Fails(), where=lambda p: p["x"] % 2 == 1, progress=False) == 2
    assert nb.dataframe(only_successful=False)[STATUS].tolist() == [True, True, False, True, True, True]
    with pytest.raises(KeyError, match="'z'.*not a parameter"):
        lab.rerunFailed(Fails(), where={"z": 1}, progress=False)
    with pytest.raises(TypeError, match="exception= takes"):
        lab.rerunFailed(Fails(), exception=3, progress=False)


def test_a_repeated_point_with_a_failed_repetition_is_rerun_whole_and_its_good_repetitions_come_out_the_same() -> None:
    nb = LabNotebook()
    lab = Lab(nb)
    lab["x"] = range(6)
    lab.runExperiment(RepeatedExperiment(Unlucky(0.3), 4), progress=False, seed=12)
    before = nb.dataframe(only_successful=False)
    failed_points = sorted(set(before.loc[~before[STATUS], "x"]))
    assert 0 < len(failed_points) < 6  # the seed was chosen so that some, not all, points fail
    assert lab.rerunFailed(RepeatedExperiment(Unlucky(0.0), 4), progress=False) == len(failed_points)
    after = nb.dataframe(only_successful=False)
    assert len(after) == 24 and after[STATUS].all()
    assert after["x"].tolist() == before["x"].tolist()
    assert after["epyc.experiment.rep"].tolist() == before["epyc.experiment.rep"].tolist()
    # Same seeds: the repetitions that succeeded the first time drew the same numbers.
    good = before[STATUS].to_numpy()
    assert after["u"].to_numpy()[good].tolist() == before["u"].to_numpy()[good].tolist()
    assert after[Experiment.SEED].tolist() == before[Experiment.SEED].tolist()
    assert len(nb.current().storedFrame()) == 24 + 4 * len(failed_points)


@pytest.mark.parametrize("make", [HDF5LabNotebook, JSONLabNotebook], ids=["hdf5", "json"])
def test_the_replacement_survives_reopening_the_file_and_the_failed_rows_stay_stored(tmp_path: Path, make: Any) -> None:
    fn = str(tmp_path / ("nb.h5" if make is HDF5LabNotebook else "nb.json"))
    with make(fn, create=True) as nb:
        lab = swept(nb, {1: ValueError("one"), 4: ValueError("four")})
        assert lab.rerunFailed(Fails({4: ValueError("four again")}), progress=False) == 2
        shown = nb.dataframe(only_successful=False)
    with make(fn) as nb:
        again = nb.dataframe(only_successful=False)
        assert again[["x", "y", STATUS, HISTORY]].equals(shown[["x", "y", STATUS, HISTORY]])
        assert again[STATUS].tolist() == [True, True, True, True, False, True]
        assert json.loads(again.loc[4, HISTORY])[0]["exception"] == "ValueError: four"
        stored = nb.current().storedFrame()
        assert len(stored) == 8 and stored[STATUS].tolist().count(False) == 3
        # dataframeFor answers from the current view too.
        assert nb.dataframeFor({"x": 1}, only_successful=False)[STATUS].tolist() == [True]


def test_a_set_with_nothing_failed_or_no_rows_records_nothing() -> None:
    nb = LabNotebook()
    lab = Lab(nb)
    assert lab.rerunFailed(Fails(), progress=False) == 0
    swept(nb, {})
    assert lab.rerunFailed(Fails(), progress=False) == 0
    assert not [k for k in nb.current().keys() if k.startswith("epyclab.rerun.")]
    assert HISTORY not in nb.dataframe().columns


def test_a_copied_set_shows_the_same_rows_and_histories(tmp_path: Path) -> None:
    import subprocess
    import sys

    src, dest = str(tmp_path / "src.h5"), str(tmp_path / "dest.h5")
    with HDF5LabNotebook(src, create=True) as nb:
        lab = swept(nb, {1: ValueError("one"), 4: ValueError("four")})
        lab.rerunFailed(Fails({4: ValueError("four again")}), progress=False)
        shown = nb.dataframe(only_successful=False)
    epyclab = str(Path(sys.executable).with_name("epyclab"))
    out = subprocess.run([epyclab, "copy", f"{src}:{Lab(LabNotebook()).notebook().currentTag()}", dest],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    with HDF5LabNotebook(dest, readonly=True) as nb:
        copied = nb.dataframe(only_successful=False)
        assert copied[["x", "y", STATUS, HISTORY]].equals(shown[["x", "y", STATUS, HISTORY]])
        assert len(nb.current().storedFrame()) == 8


@pytest.mark.parametrize("damaged", ["{not json", '{"start": "x", "groups": []}', '[1, 2]',
                                     '{"start": 0, "groups": [[999, -4]]}'])
def test_a_damaged_rerun_record_leaves_the_rows_as_stored_and_says_so(damaged: str, caplog: Any) -> None:
    nb = LabNotebook()
    swept(nb, {1: ValueError("one")})
    nb.current()["epyclab.rerun.0001"] = damaged
    df = nb.dataframe(only_successful=False)
    assert df["x"].tolist() == list(range(6)) and df[STATUS].tolist().count(False) == 1
    # A well-formed record of rows that do not exist replaces nothing, and is no error; the others are named.
    well_formed = damaged.startswith('{"start": 0')
    assert ("'epyclab.rerun.0001' is not a rerun record" in caplog.text) is not well_formed


def test_show_counts_the_rows_shown_and_names_those_replaced(tmp_path: Path) -> None:
    import subprocess
    import sys

    fn = str(tmp_path / "nb.h5")
    with HDF5LabNotebook(fn, create=True) as nb:
        lab = swept(nb, {1: ValueError("one"), 4: ValueError("four")})
        lab.rerunFailed(Fails({4: ValueError("four again")}), progress=False)
    epyclab = str(Path(sys.executable).with_name("epyclab"))
    out = subprocess.run([epyclab, "show", fn], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "rows: 6  failed: 1  pending: 0  (and 2 replaced by reruns, kept)" in out.stdout


class FailsAt(Experiment):
    """Raises at the points (x, n) in ``bad``; else y = x + 10 n."""

    def __init__(self, bad: frozenset[tuple[int, int]] = frozenset()) -> None:
        super().__init__()
        self.bad = bad

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        if (params["x"], params["n"]) in self.bad:
            raise ValueError(f"fails at {params}")
        return {"y": params["x"] + 10 * params["n"]}


def _positions(df: Any) -> dict[tuple[int, int], set[int]]:
    found: dict[tuple[int, int], set[int]] = {}
    for x, n, where in zip(df["x"], df["n"], df[POINT]):
        found.setdefault((int(x), int(n)), set()).add(int(where))
    return found


@settings(max_examples=60, deadline=None)
@given(pointwise=st.booleans(), xs=st.integers(1, 6), ns=st.integers(1, 3), data=st.data())
def test_a_rerun_row_keeps_its_points_position_in_the_design(pointwise: bool, xs: int, ns: int, data: Any) -> None:
    lab = Lab(LabNotebook(), design=PointwiseDesign() if pointwise else FactorialDesign())
    lab["x"] = list(range(xs))
    lab["n"] = [i % ns for i in range(xs)] if pointwise else list(range(ns))
    points = [(p["x"], p["n"]) for _, p in lab.experiments(FailsAt())]
    bad = data.draw(st.sets(st.sampled_from(points)), label="fail first")
    again = data.draw(st.sets(st.sampled_from(sorted(bad))), label="fail again") if bad else set()
    lab.runExperiment(FailsAt(frozenset(bad)), progress=False, seed=3)
    first = lab.dataframe(only_successful=False)
    design = {pt: {i} for i, pt in enumerate(points)}
    assert _positions(first) == design
    # A rerun (whose points fail again or not), then a rerun of what failed again: every row of a point, shown or
    # stored, carries the point's position in the first sweep's design, not its place among the rerun points.
    assert lab.rerunFailed(FailsAt(frozenset(again)), progress=False) == len(bad)
    assert lab.rerunFailed(FailsAt(), progress=False) == len(again)
    shown = lab.dataframe(only_successful=False)
    assert shown[STATUS].all()
    assert [(int(x), int(n)) for x, n in zip(shown["x"], shown["n"])] == points  # in the design's order
    assert _positions(shown) == design
    assert _positions(lab.notebook().current().storedFrame()) == design


def test_a_rerun_on_forked_copies_keeps_the_design_position() -> None:
    lab = ParallelLab(LabNotebook(), cores=2, backend="fork")
    lab["x"] = range(8)
    lab["n"] = [0]
    lab.runExperiment(FailsAt(frozenset({(5, 0), (6, 0)})), progress=False)
    assert lab.rerunFailed(FailsAt(), progress=False) == 2
    stored = lab.notebook().current().storedFrame()
    assert len(stored) == 10 and sorted(stored[POINT][8:]) == [5, 6]  # rows are stored as they arrive
    assert _positions(stored) == {(x, 0): {x} for x in range(8)}
    shown = lab.dataframe(only_successful=False)
    assert shown[POINT].tolist() == list(range(8)) and shown[STATUS].all()

"""The table of kinds: each example of issue 10's "Values a run returns", and the rules around them.

Every test runs on the three notebooks (in memory, HDF5, JSON): a value is
accepted by all or refused by all, and what is accepted reads back, after the
file is closed and opened again for writing, with the value and dtype the user
gave (float32 stays float32, int8 stays int8).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest

from epyclab import (
    Experiment,
    HDF5LabNotebook,
    JSONLabNotebook,
    Lab,
    LabNotebook,
    ResultSet,
    ResultsStructureException,
    UnstorableValueError,
)
from epyclab.notebooks.kinds import KINDS, promote

FORMATS = ["memory", "hdf5", "json"]


class Store:
    """One notebook of a format, reopened for writing as a user would (close, open by name)."""

    def __init__(self, fmt: str, tmp_path: Any) -> None:
        self.fmt = fmt
        self.path = tmp_path / {"memory": "", "hdf5": "nb.h5", "json": "nb.json"}[fmt]
        self.nb = self._make(create=True)

    def _make(self, create: bool = False) -> Any:
        if self.fmt == "memory":
            return LabNotebook()
        cls = HDF5LabNotebook if self.fmt == "hdf5" else JSONLabNotebook
        return cls(self.path, create=create)

    def reopen(self) -> Any:
        """Close and open again for writing (the in-memory notebook stays as it is)."""
        if self.fmt != "memory":
            self.nb.close()
            self.nb = self._make()
        return self.nb

    def frame(self) -> pd.DataFrame:
        return self.nb.dataframe(only_successful=False)


@pytest.fixture(params=FORMATS)
def store(request, tmp_path):
    s = Store(request.param, tmp_path)
    yield s
    if s.fmt != "memory":
        s.nb.close()


def rc(i: int, ok: bool = True, params: dict[str, Any] | None = None, **results: Any) -> dict[str, Any]:
    return {
        Experiment.PARAMETERS: {"i": i, **(params or {})},
        Experiment.METADATA: {Experiment.STATUS: ok},
        Experiment.RESULTS: results if ok else {},
    }


def test_uint32_then_minus_one_widens_to_int64_and_the_file_stays_writable(store):
    store.nb.addResult(rc(0, u=np.uint32(7)))
    store.nb.commit()
    store.reopen()
    store.nb.addResult(rc(1, u=-1))
    nb = store.reopen()
    col = store.frame()["u"]
    assert col.dtype == np.int64 and col.tolist() == [7, -1]
    nb.addResult(rc(2, u=np.uint32(2**32 - 1)))
    nb = store.reopen()
    assert store.frame()["u"].tolist() == [7, -1, 2**32 - 1]


def test_uint64_beyond_int64_then_minus_one_is_refused_at_addresult(store):
    big = np.uint64(2**63 + 12345)
    store.nb.addResult(rc(0, u=big))
    with pytest.raises(UnstorableValueError) as err:
        store.nb.addResult(rc(1, u=-1))
    text = str(err.value)
    assert "'u'" in text and "-1" in text and "int" in text and "uint64" in text
    with pytest.raises(UnstorableValueError, match="'u'.*int64"):
        store.nb.addResult(rc(1, u=np.int64(-1)))
    store.nb.addResult(rc(2, u=5))  # a Python int that fits uint64 is fine
    store.reopen()
    col = store.frame()["u"]
    assert col.dtype == np.uint64 and col.tolist() == [2**63 + 12345, 5]
    store.nb.addResult(rc(3, u=np.uint8(1)))
    store.reopen()
    assert store.frame()["u"].tolist() == [2**63 + 12345, 5, 1]


def test_a_nanosecond_timestamp_and_year_2500_cannot_share_a_column_in_any_session(store):
    ns = pd.Timestamp("2020-01-01 00:00:00.000000001")
    store.nb.addResult(rc(0, t=ns))
    with pytest.raises(UnstorableValueError, match="'t'.*datetime.*nanoseconds"):
        store.nb.addResult(rc(1, t=datetime(2500, 1, 1)))
    store.reopen()
    with pytest.raises(UnstorableValueError, match="'t'.*datetime.*nanoseconds"):
        store.nb.addResult(rc(1, t=datetime(2500, 1, 1)))
    store.nb.addResult(rc(2, t=datetime(2000, 1, 1, 0, 0, 0, 5)))
    store.reopen()
    col = store.frame()["t"]
    assert col.dtype == "datetime64[ns]"
    assert col.tolist() == [ns, pd.Timestamp(datetime(2000, 1, 1, 0, 0, 0, 5))]
    assert col[0].nanosecond == 1


def test_dates_from_year_1_to_9999_read_back_exactly_and_refuse_nanoseconds(store):
    dates = [datetime(1, 1, 1), datetime(2500, 1, 1), datetime(9999, 12, 31, 23, 59, 59, 999999)]
    for i, d in enumerate(dates):
        store.nb.addResult(rc(i, t=d))
    store.reopen()
    col = store.frame()["t"]
    assert col.dtype == "datetime64[us]"
    assert [pd.Timestamp(x).to_pydatetime() for x in col.to_numpy()] == dates
    with pytest.raises(UnstorableValueError, match="'t'"):
        store.nb.addResult(rc(9, t=pd.Timestamp("2020-01-01 00:00:00.000000001")))


def test_an_empty_list_then_ints_and_bools_come_back_as_ints_and_bools(store):
    store.nb.addResult(rc(0, l=[], b=[]))
    store.nb.commit()
    store.reopen()
    store.nb.addResult(rc(1, l=[1, 2, 3], b=[True, False]))
    store.reopen()
    df = store.frame()
    assert df["l"].tolist() == [[], [1, 2, 3]] and [type(x) for x in df["l"][1]] == [int] * 3
    assert df["b"].tolist() == [[], [True, False]] and [type(x) for x in df["b"][1]] == [bool] * 2
    with pytest.raises(UnstorableValueError, match="'b'.*bools and numbers|'b'"):
        store.nb.addResult(rc(2, b=[1, 2]))
    with pytest.raises(UnstorableValueError, match="mixes bools and numbers"):
        store.nb.addResult(rc(2, m=[True, 2]))


def test_none_is_a_missing_cell_with_the_columns_fill(store):
    store.nb.addResult(rc(0, y=1.5, n=1, s="a", t=datetime(2020, 1, 1), a=np.ones(2)))
    store.nb.addResult(rc(1, y=None, n=None, s=None, t=None, a=None))
    store.nb.addResult(rc(2, only=None))
    store.reopen()
    df = store.frame()
    assert math.isnan(df["y"][1]) and df["n"][1] == 0 and df["s"][1] == ""
    assert pd.isna(df["t"][1]) and df["a"][1] is None
    assert df["only"].tolist() == [None, None, None]
    store.nb.addResult(rc(3, only=2.5))
    store.reopen()
    only = store.frame()["only"]
    assert only.dtype == np.float64 and math.isnan(only[0]) and only[3] == 2.5


class ReturnsNoneOnce(Experiment):
    def do(self, params):
        return {"y": None if params["x"] == 13 else float(params["x"])}


@pytest.mark.parametrize("fmt", ["memory", "hdf5"])
def test_a_sweep_with_a_none_result_finishes_every_point(fmt, tmp_path):
    nb = LabNotebook() if fmt == "memory" else HDF5LabNotebook(tmp_path / "nb.h5", create=True)
    lab = Lab(nb)
    lab["x"] = range(40)
    lab.runExperiment(ReturnsNoneOnce())
    df = lab.dataframe()
    assert len(df) == 40 and df[Experiment.STATUS].all()
    y = df.set_index("x")["y"]
    assert math.isnan(y[13]) and y.drop(13).tolist() == [float(x) for x in range(40) if x != 13]
    nb.close()


@pytest.mark.parametrize("where", ["result", "parameter", "metadata"])
def test_a_name_holding_nul_is_refused_when_given_and_the_notebook_stays_writable(store, where):
    row = rc(0, y=1.0)
    row[{"result": Experiment.RESULTS, "parameter": Experiment.PARAMETERS, "metadata": Experiment.METADATA}[
        where]]["a\x00b"] = 1
    with pytest.raises(UnstorableValueError, match=f"{where} name.*NUL"):
        store.nb.addResult(row)
    with pytest.raises(UnstorableValueError, match="result set tag.*NUL"):
        store.nb.addResultSet("t\x00g")
    with pytest.raises(UnstorableValueError, match="parameter name.*NUL"):
        store.nb.addPendingResult({"p\x00": 1}, "job-1")
    store.nb.addResult(rc(1, y=2.0))
    store.reopen()
    assert store.frame()["y"].tolist() == [2.0] and "a\x00b" not in store.frame().columns


@pytest.mark.parametrize(
    "value, typename",
    [({"a": 1}, "dict"), ({1, 2}, "set"), (object(), "object"), (2**64, "int"), ("nul\x00", "str"),
     (np.array(["a"]), "numpy.ndarray"), ([1, [2, 3]], "list"), (np.longdouble(1), "longdouble"),
     (datetime(2020, 1, 1).date(), "date")],
)
def test_what_no_format_can_store_is_refused_naming_key_value_and_type(store, value, typename):
    store.nb.addResult(rc(0, x=1.0))
    with pytest.raises(UnstorableValueError) as err:
        store.nb.addResult(rc(1, x=1.0, bad=value))
    assert "result 'bad'" in str(err.value) and typename in str(err.value)
    assert store.nb.numberOfResults() == 1
    store.reopen()
    assert store.frame()["x"].tolist() == [1.0]


def test_check_result_gives_the_failed_row_to_record(store):
    rs = store.nb.current()
    good = rc(0, y=1.0)
    assert rs.checkResult(good) is None
    bad = rc(1, y={"no": 1})
    bad[Experiment.METADATA]["note"] = "kept"
    bad[Experiment.METADATA]["junk"] = {1, 2}
    failed = rs.checkResult(bad)
    assert failed is not None and failed[Experiment.RESULTS] == {}
    meta = failed[Experiment.METADATA]
    assert meta[Experiment.STATUS] is False and meta["note"] == "kept" and "junk" not in meta
    assert "result 'y'" in str(meta[Experiment.EXCEPTION]) and "dict" in str(meta[Experiment.EXCEPTION])
    assert failed[Experiment.PARAMETERS] == {"i": 1}
    assert rs.numberOfResults() == 0  # checking adds nothing
    store.nb.addResult(good)
    store.nb.addResult(failed)
    store.reopen()
    df = store.frame()
    assert df[Experiment.STATUS].tolist() == [True, False] and "UnstorableValueError" in df[Experiment.EXCEPTION][1]


@pytest.mark.parametrize(
    "value", [np.float32(1.25), np.float16(0.5), np.int8(-3), np.uint16(9), np.complex64(1 + 2j), np.bool_(True)]
)
def test_a_numpy_scalar_keeps_its_dtype_in_every_format(store, value):
    store.nb.addResult(rc(0, v=value))
    store.nb.addResult(rc(1, v=value))
    store.reopen()
    col = store.frame()["v"]
    assert col.dtype == value.dtype and col.tolist() == [value, value]


def test_arrays_keep_shape_and_dtype_and_widen_their_elements_together(store):
    a = np.arange(6, dtype=np.int16).reshape(2, 3)
    store.nb.addResult(rc(0, a=a, e=np.zeros((0, 2), dtype=np.float32)))
    store.reopen()
    cell = store.frame()["a"][0]
    assert cell.dtype == np.int16 and cell.shape == (2, 3) and (cell == a).all()
    assert store.frame()["e"][0].dtype == np.float32 and store.frame()["e"][0].shape == (0, 2)
    store.nb.addResult(rc(1, a=np.array([0.5])))
    store.reopen()
    cells = store.frame()["a"].tolist()
    assert [c.dtype for c in cells] == [np.float64, np.float64] and cells[0].shape == (2, 3)


def test_a_failed_results_dict_without_results_is_accepted(store):
    epyc_failed = {
        Experiment.PARAMETERS: {"i": 3},
        Experiment.METADATA: {Experiment.STATUS: False, Experiment.EXCEPTION: "boom"},
    }
    store.nb.addResult(rc(0, y=1.0))
    store.nb.addResult(epyc_failed)
    store.nb.current().addSingleResult(dict(epyc_failed, **{Experiment.PARAMETERS: {"i": 4}}))
    store.reopen()
    df = store.frame()
    assert df["i"].tolist() == [0, 3, 4] and df[Experiment.STATUS].tolist() == [True, False, False]
    with pytest.raises(Exception, match="results"):
        store.nb.addResult({Experiment.PARAMETERS: {}, Experiment.METADATA: {Experiment.STATUS: True}})


# ---- epyc's type API on ResultSet --------------------------------------------------------------


def test_type_api_answers_from_the_table_of_kinds():
    assert ResultSet.typeToDtype(int) == np.int64 and ResultSet.typeToDtype(float) == np.float64
    assert ResultSet.typeToDtype(np.float32) == np.float32 and ResultSet.typeToDtype(str) == np.dtype(object)
    assert ResultSet.typeToDtype(datetime) == np.dtype("datetime64[us]")
    with pytest.raises(TypeError, match="dict"):
        ResultSet.typeToDtype(dict)
    assert ResultSet.valueToDtype(np.int8(1)) == np.int8 and ResultSet.valueToDtype(2**63) == np.uint64
    assert ResultSet.valueToDtype([1, 2]) == np.dtype(object)
    with pytest.raises(UnstorableValueError):
        ResultSet.valueToDtype({})
    assert math.isnan(ResultSet.zero(np.float32)) and ResultSet.zero(np.int8) == 0
    assert ResultSet.zero(bool) is False and ResultSet.zero(object) == ""
    assert ResultSet.TypeMapping[float] == np.float64


def test_dtype_infer_and_set_dtype_describe_the_columns():
    rs = ResultSet()
    with pytest.raises(ResultsStructureException, match="no dtype yet"):
        rs.dtype()  # as in epyc: nothing is known yet
    assert not rs.isDirty() and not rs.isTypeChanged()
    rs.addSingleResult(rc(0, u=np.uint32(7), s="a"))
    assert rs.isDirty() and rs.isTypeChanged()
    assert rs.dtype() == np.dtype([("i", np.int64), ("u", np.uint32), ("s", object),
                                   (Experiment.STATUS, bool)])
    rs.dirty(False)
    rs.typechanged(False)
    inferred = rs.inferDtype(rc(1, u=-1, z=2.5))
    assert inferred["u"] == np.int64 and inferred["z"] == np.float64
    # Inferring registers what it inferred (as epyc): u widened, z a column, no row added.
    assert rs.dtype()["u"] == np.int64 and "z" in rs.resultNames() and rs.numberOfResults() == 1
    assert rs.isTypeChanged() and not rs.isDirty()
    assert rs.dataframe()["u"].tolist() == [7] and math.isnan(rs.dataframe()["z"][0])
    with pytest.raises(UnstorableValueError, match="'u'"):
        rs.inferDtype(rc(1, u={}))
    assert rs.dtype()["u"] == np.int64  # a refused inference changes nothing
    rs.typechanged(False)
    rs.addSingleResult(rc(1, u=np.uint32(8), s="b"))
    assert rs.isDirty() and not rs.isTypeChanged()
    rs.setDtype(np.dtype([("u", np.float64)]))
    assert rs.isTypeChanged() and rs.dtype()["u"] == np.float64
    assert rs.dataframe()["u"].tolist() == [7.0, 8.0]
    with pytest.raises(UnstorableValueError, match="'u'"):
        rs.setDtype(np.dtype([("u", bool)]))


def test_pending_dtype():
    rs = ResultSet()
    rs.addSinglePendingResult({"x": 1, "y": 0.5}, "job-1")
    d = rs.pendingdtype()
    assert d[ResultSet.JOBID] == np.dtype(object) and d["x"] == np.int64 and d["y"] == np.float64
    assert rs.inferPendingResultDtype({"x": 2.5, "z": "a"})["x"] == np.float64
    assert rs.inferPendingResultDtype({"x": 2.5, "z": "a"})["z"] == np.dtype(object)
    rs.setPendingResultDtype(np.dtype([("x", np.float32)]))
    # The declared fields as declared; every other parameter of a pending job too (as in epyc).
    d = rs.pendingdtype()
    assert d["x"] == np.float32 and d["y"] == np.float64 and d[ResultSet.JOBID] == np.dtype(object)
    assert ResultSet().pendingdtype().names == (ResultSet.JOBID,)


def test_promotion_refuses_what_no_dtype_keeps_exactly():
    assert promote(np.dtype(np.uint32), np.dtype(np.int8)) == np.int64
    assert promote(np.dtype(np.uint64), np.dtype(np.int64)) is None
    assert promote(np.dtype(bool), np.dtype(np.int8)) is None
    assert promote(np.dtype(np.float32), np.dtype(np.complex64)) == np.complex64
    assert set(KINDS) >= {"missing", "bool", "int", "float", "complex", "str", "datetime", "array", "list", "tuple"}


# ---- a fresh user's trial: values that were silently changed or accepted then lost -------------


def _cells(store: Store, key: str) -> list[Any]:
    return store.reopen() and store.frame()[key].tolist()


@pytest.mark.parametrize("first, then", [([], [0.25, 0.75]), ([], [0.0, 7.0]), ((), (1.5, 2.5)), ([[]], [[1.5]])])
def test_an_empty_list_first_does_not_decide_the_elements(store, first, then):
    store.nb.addResult(rc(0, l=first))
    store.nb.addResult(rc(1, l=then))
    store.nb.addResult(rc(2, l=type(then)([7]) if not isinstance(then[0], list) else [[7]]))
    cells = _cells(store, "l")
    assert cells[:2] == [first, then]
    assert all(type(x) is float for x in np.asarray(cells[1], dtype=object).reshape(-1))


@pytest.mark.parametrize("value", [np.timedelta64(3, "s"), np.datetime64("2020-01-01"), np.array([1, 2], dtype="m8[s]"),
                                   np.ma.masked_array([1, 2], mask=[0, 1]), np.array([1.5], dtype=">f8"),
                                   np.longdouble(1), np.bytes_(b"x")])
def test_numpy_values_no_format_keeps_are_refused_at_addresult(store, value):
    store.nb.addResult(rc(0, t=1.0))
    with pytest.raises(UnstorableValueError, match=r"(?s)result 't' = .*\(a numpy"):
        store.nb.addResult(rc(1, t=value))
    assert _cells(store, "t") == [1.0]  # nothing stored is lost, and the file still closes


@pytest.mark.parametrize("first, then", [
    (2**53 + 1, 0.5), (np.uint64(2**64 - 1), 0.5), (np.int64(2**62 + 1), np.float32(0.5)),
    ([2**53 + 1], [0.5]), (0.5, 2**53 + 1), (np.float32(0.5), 2**24 + 1),
])
def test_a_float_never_rounds_the_ints_of_its_column(store, first, then):
    store.nb.addResult(rc(0, x=first))
    store.reopen()  # the column's ints are known again from the file
    with pytest.raises(UnstorableValueError, match=r"result 'x'.*exactly"):
        store.nb.addResult(rc(1, x=then))
    assert _cells(store, "x") == [first]


def test_ints_that_floats_keep_exactly_still_widen(store):
    store.nb.addResult(rc(0, x=2**53))
    store.nb.addResult(rc(1, x=0.5))
    store.nb.addResult(rc(2, y=np.float32(0.5)))
    store.nb.addResult(rc(3, y=2**24))
    assert _cells(store, "x")[:2] == [2.0**53, 0.5] and store.frame()["y"].dtype == np.float32


def test_nat_is_a_missing_datetime(store):
    store.nb.addResult(rc(0, t=pd.NaT))
    store.nb.addResult(rc(1, t=datetime(2020, 1, 1)))
    store.reopen()
    store.nb.addResult(rc(2, t=pd.NaT))
    col = store.reopen() and store.frame()["t"]
    assert col.dtype == "datetime64[us]"
    assert col.isna().tolist() == [True, False, True] and col[1] == datetime(2020, 1, 1)


def test_nat_alone_makes_a_datetime_column_and_never_joins_other_kinds(store):
    store.nb.addResult(rc(0, t=pd.NaT))
    assert _cells(store, "t") == [pd.NaT]  # a missing datetime: the column is one of datetimes
    # An int after NaT is refused, as NaT after an int is, in every format and session (a NaT left in an
    # int column once made the notebook unreadable).
    with pytest.raises(UnstorableValueError, match="result 't'"):
        store.nb.addResult(rc(3, t=0))
    store.nb.addResult(rc(1, n=1))
    with pytest.raises(UnstorableValueError, match="result 'n'"):
        store.nb.addResult(rc(2, n=pd.NaT))

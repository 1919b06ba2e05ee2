"""The table of kinds: every kind of value a result can hold, defined in one place.

A *kind* says, for one family of values: which Python and numpy types it
accepts, whether a value of such a type can still be unstorable (its value
check), the fill of a missing cell, the column's DataFrame dtype, how a column
is stored (as a :class:`~epyclab.notebooks.types.StoredColumn`, which the HDF5
and JSON notebooks lay out) and read back, its JSON encoding, the globals the
journal's unpickler may build for it, and how two kinds (or two dtypes of one
kind) meet in one column: they *widen* to a common dtype that keeps every value,
or the second value is refused.

A column's *state* (:class:`ColumnState`) is its kind and dtype: for numbers the
numpy dtype (``int8`` stays ``int8``, ``float32`` stays ``float32``), for
datetimes ``datetime64[us]`` or ``datetime64[ns]``, for arrays, lists and tuples
the dtype of their elements. Every format and the DataFrame builder ask the
kind; none compares kind names itself. Adding a kind is one class and one
:func:`register_kind` call.

The kinds, in the order a value's type is matched: missing (``None``), bool,
int, float, complex, str, datetime, array, list, tuple; then textlist, which
*refines* list (:attr:`Kind.refines`): a list whose leaves are all text is of
that kind, matched by its value. :func:`kinds_table`
renders each kind's documentation as the table in docs/hdf5-layout.md.

Numbers widen as numpy promotes them, except where no dtype keeps both values
exactly: bool never mixes with numbers, and ``uint64`` never meets a signed int
(numpy would make both float64). A Python ``int`` takes the column's int dtype if
it fits (``-1`` in a ``uint32`` column widens it to ``int64``; in a ``uint64``
column it is refused). A Python ``float`` is float64. A datetime column is
``datetime64[us]`` (years 1 to 9999), or ``datetime64[ns]`` once a
``pandas.Timestamp`` with nanoseconds comes, which is refused if any date of the
column lies outside 1677-09-22 .. 2262-04-11 (and such a date is refused in an
ns column): a date never changes silently.

An int column's missing cells are 0, and files keep which cells are missing
(HDF5 ``missing/<name>``, JSON ``"missing"``), so that if the column later
widens to float, in this session or a later one, every missing cell is NaN.

Acceptance is an allow-list: each kind lists exactly the types it takes (not
their subclasses), and numpy values only of the dtypes in :data:`NUMERIC_DTYPES`.
Anything else (dicts, sets, objects, ``datetime.date``, ``numpy.longdouble``,
``numpy.timedelta64``, ``numpy.datetime64``, bytes, records, byte-swapped or
masked arrays, text arrays, ragged lists, lists mixing bools and numbers,
time-zone aware datetimes, ints beyond 64 bits) is refused at ``addResult`` with an
:class:`~epyclab.errors.UnstorableValueError` naming the key, value and type.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, replace
from datetime import datetime
from itertools import repeat
from operator import is_
from typing import Any, ClassVar

import numpy as np

from epyclab.errors import UnstorableValueError
from epyclab.notebooks.columns import MISSING
from epyclab.notebooks.jsonvalues import decode_float as _decode_float
from epyclab.notebooks.jsonvalues import decode_value as _decode_value
from epyclab.notebooks.jsonvalues import encode_float as _encode_float
from epyclab.notebooks.jsonvalues import encode_value as _encode_value
from epyclab.notebooks.packedtext import PackedText
from epyclab.notebooks.types import StoredColumn

__all__ = [
    "Kind",
    "ColumnState",
    "KINDS",
    "register_kind",
    "kind_named",
    "kind_of_type",
    "kind_of_value",
    "kind_of_dtype",
    "state_of_value",
    "admit",
    "promote",
    "check_name",
    "column_state",
    "kinds_table",
    "journal_globals",
    "NotStorable",
    "INT64_MIN",
    "INT64_MAX",
    "INT64",
]

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT64_MAX = 2**64 - 1
INT64 = np.dtype(np.int64)
_OBJECT = np.dtype(object)
# The cell types a text column stores as they are (a missing cell is stored as '').
_JUST_STR = frozenset({str, type(None), type(MISSING)})
_SIGNED = tuple(np.dtype(c) for c in ("i1", "i2", "i4", "i8"))
#: The dates a datetime64[ns] holds.
NS_MIN = datetime(1677, 9, 22)
NS_MAX = datetime(2262, 4, 11)
#: The numpy dtypes every format keeps exactly (native byte order): an allow-list, so that a
#: dtype numpy adds, or one no format keeps (timedelta64, extended precision, bytes, records,
#: objects, byte-swapped data), is refused at addResult instead of failing at a commit.
NUMERIC_DTYPES = frozenset(np.dtype(c) for c in ("?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8",
                                                 "f2", "f4", "f8", "c8", "c16"))


def _numpy_types(dtype_kinds: str) -> tuple[type, ...]:
    """Every numpy scalar type whose dtype is allowed and of one of ``dtype_kinds`` (aliases included)."""
    found = {t for t in np.sctypeDict.values() if np.dtype(t) in NUMERIC_DTYPES and np.dtype(t).kind in dtype_kinds}
    return tuple(sorted(found, key=lambda t: t.__name__))


def _dtype_problem(dtype: np.dtype) -> str:
    if dtype.kind in "biufc" and dtype.byteorder not in "=|" and dtype.newbyteorder("=") in NUMERIC_DTYPES:
        return f"its dtype {dtype.str} is byte-swapped; convert it with .astype({dtype.newbyteorder('=').str!r})"
    if dtype.kind in "fc":
        return f"its dtype is {dtype}, which no notebook format keeps exactly; convert it to float64 or complex128"
    return (
        f"its dtype is {dtype}; only bool, int8..int64, uint8..uint64, float16/32/64 and complex64/128 "
        f"can be stored (store a timedelta as a float of seconds, text as str)"
    )


class NotStorable(ValueError):
    """Raised inside the table: why a value cannot be stored (the caller names key and role)."""


@dataclass(frozen=True, eq=False)
class ColumnState:
    """A column's kind and dtype (see the module docstring for what the dtype means per kind).

    ``dtype`` is None only for a list or tuple column with no element yet
    (every cell empty): the first element decides it. ``fits_ns`` is for
    datetime columns: every value lies in datetime64[ns]'s range.
    """

    kind: "Kind"
    dtype: np.dtype | None
    fits_ns: bool = True
    #: For ints (int columns, cells of int elements): the fewest mantissa bits of a float
    #: that holds every int of the column exactly (11, 24, 53, or 64: none); 0 with no int.
    span: int = 0

    def _fields(self) -> tuple[Any, ...]:
        # numpy takes None for float64 (np.dtype(None) == float64), so dtypes are compared by
        # their string: a list column with no element yet must never equal a float64 one.
        return (self.kind, None if self.dtype is None else self.dtype.str, self.fits_ns, self.span)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ColumnState):
            return NotImplemented
        return self is other or self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def key(self) -> tuple[str, Any]:
        """What decides whether stored data of this column can be appended to as it is."""
        return (self.kind.name, None if self.dtype is None else self.dtype.str)


class Kind:
    """One kind of value. Subclasses fill in the class attributes and override what differs."""

    #: The name stored in files (HDF5 attribute ``kind``, JSON ``"kind"``).
    name: ClassVar[str] = ""
    #: The Python and numpy types whose values are of this kind.
    types: ClassVar[tuple[type, ...]] = ()
    #: Cells are values of their own (object column, one array per cell in a file).
    cell: ClassVar[bool] = False
    #: True if a value's type alone does not say whether (and how) it fits a column.
    checks_values: ClassVar[bool] = False
    #: (module, name) globals the journal's unpickler may build for values of this kind.
    journal: ClassVar[frozenset[tuple[str, str]]] = frozenset()
    #: For the docs (docs/hdf5-layout.md's table is made of these, see :func:`kinds_table`):
    #: what it accepts, its DataFrame dtype, its HDF5 dataset, its missing cell, how it widens.
    accepts_doc: ClassVar[str] = ""
    frame_doc: ClassVar[str] = ""
    h5_doc: ClassVar[str] = ""
    missing_doc: ClassVar[str] = ""
    widens_doc: ClassVar[str] = ""
    #: Files keep which cells are missing: the stored fill (0) is a value of the kind, and
    #: a missing cell must become the wider kind's fill (NaN) if the column widens later.
    masks_missing: ClassVar[bool] = False
    #: The name of the kind whose types this kind shares, taking the values :meth:`claims` says
    #: (lists of text among lists); None for a kind matched by type alone.
    refines: ClassVar[str | None] = None

    def claims(self, v: Any) -> bool:
        """For a kind that :attr:`refines` another: True if ``v`` (of that kind's types) is of this kind."""
        return False

    # ---- values ----------------------------------------------------------------------

    def accepts_type(self, t: type) -> bool:
        """True if values of type ``t`` are of this kind (checked in registry order).

        An allow-list: exactly the types listed, not their subclasses (a subclass may
        carry what no format keeps, as a masked array carries its mask).
        """
        return t in self.types

    def state(self, v: Any) -> ColumnState:
        """The state a new column would take for value ``v``. Raises NotStorable."""
        raise NotImplementedError

    def admit(self, state: ColumnState, v: Any) -> ColumnState:
        """The state of a column in ``state`` (of this kind) once it holds ``v``. Raises NotStorable."""
        return self.widen(state, self.state(v))

    def widen(self, a: ColumnState, b: ColumnState) -> ColumnState:
        """The state holding every value of ``a`` (this kind) and ``b``. Raises NotStorable."""
        if b.kind is MISSING_KIND:
            return a
        if b.kind is not self:
            raise NotStorable(_mixed(a, b))
        return a if a.dtype == b.dtype else replace(a, dtype=b.dtype)

    def absorbs(self, other: "Kind") -> bool:
        """True if values of kind ``other`` join a column of this kind as values of this kind."""
        return False

    # ---- columns --------------------------------------------------------------------

    def fill(self, state: ColumnState) -> Any:
        """The value of a missing cell."""
        return None

    def frame_dtype(self, state: ColumnState) -> Any:
        """The column's dtype in a DataFrame."""
        return _OBJECT

    def numpy_dtype(self, state: ColumnState) -> np.dtype:
        """The numpy dtype describing the column (epyc's type API): object for text and cells."""
        return _OBJECT

    def column(self, values: list[Any], state: ColumnState) -> Any:
        """The DataFrame column of raw cells ``values`` (None and MISSING are missing cells)."""
        raise NotImplementedError

    def cast(self, col: Any, old: ColumnState, state: ColumnState) -> Any:
        """A typed column of state ``old`` (of any kind) as a column of ``state`` (this kind)."""
        if old.kind is MISSING_KIND:
            return self.column([None] * len(col), state)
        return self.column(list(col), state)

    def to_storage(self, col: Any, state: ColumnState) -> StoredColumn:
        """The stored form of a typed column."""
        return StoredColumn(self.name, np.asarray(col, dtype=self.numpy_dtype(state)))

    def stored(self, values: list[Any], state: ColumnState) -> StoredColumn:
        """The stored form of raw cells ``values``: ``to_storage(column(values, state), state)``."""
        return self.to_storage(self.column(values, state), state)

    def from_storage(self, stored: StoredColumn) -> Any:
        """The typed column of a stored one."""
        return stored.data

    def stored_state(self, stored: StoredColumn, col: Any) -> ColumnState:
        """The state of a column read from a file (``col``: its typed cells)."""
        return self.typed_state(col)

    def read_state(self, stored: StoredColumn) -> tuple[ColumnState, Any]:
        """The state of a column read from a file, and its typed cells if making the state made them.

        A reader keeps the cells for the DataFrame; ``None`` (a kind whose state needs no look
        at its cells) leaves them to be made when the DataFrame is first asked for.
        """
        col = self.from_storage(stored)
        return self.stored_state(stored, col), col

    def typed_state(self, col: Any) -> ColumnState:
        """The state of a typed column of this kind (as a DataFrame holds it)."""
        return ColumnState(self, np.asarray(col).dtype)

    def h5_dtype(self, stored: StoredColumn) -> Any:
        """The HDF5 dataset dtype of a stored column."""
        return stored.data.dtype

    def json_values(self, stored: StoredColumn) -> list[Any]:
        """A stored column's cells as JSON values."""
        return stored.data.tolist()

    def json_column(self, values: list[Any], dtype: np.dtype | None, unit: str | None) -> StoredColumn:
        """The stored column of JSON values (:meth:`json_values` reversed)."""
        return StoredColumn(self.name, np.array(values, dtype=dtype))

    def storage_dtype(self, stored: StoredColumn) -> np.dtype | None:
        """The dtype written beside a stored column (JSON ``"dtype"``)."""
        return stored.data.dtype


#: kind name -> kind, in the order types are matched (bool before int: bool is an int).
KINDS: dict[str, Kind] = {}


def register_kind(kind: Kind) -> Kind:
    """Add ``kind`` to the table (it is matched after the kinds already there).

    Raises:
        ValueError: a kind of that name is already registered, or it has no name.
    """
    if not isinstance(kind, Kind) or not kind.name:
        raise ValueError(f"register_kind takes a named Kind instance, got {kind!r}")
    if kind.name in KINDS:
        raise ValueError(f"a kind named {kind.name!r} is already registered")
    KINDS[kind.name] = kind
    _BY_TYPE.clear()
    _REFINED.clear()
    return kind


def kind_named(name: str) -> Kind:
    """The kind stored under ``name`` in a file.

    Raises:
        ValueError: no kind has that name (the file was written by a newer epyclab).
    """
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(
            f"unknown column kind {name!r} (this epyclab knows {sorted(KINDS)}); "
            f"the notebook was written by a newer epyclab"
        ) from None


_BY_TYPE: dict[type, Kind | None] = {}


def kind_of_type(t: type) -> Kind | None:
    """The kind of values of type ``t``, or None if no format can store them."""
    try:
        return _BY_TYPE[t]
    except KeyError:
        pass
    found = next((k for k in KINDS.values() if k.accepts_type(t)), None)
    _BY_TYPE[t] = found
    return found


def kind_of_value(v: Any) -> Kind | None:
    """The kind of value ``v``: its type's kind, or a kind refining that one which claims ``v``."""
    kind = kind_of_type(type(v))
    if kind is not None:
        for refined in _refinements(kind):
            if refined.claims(v):
                return refined
    return kind


def _refinements(kind: Kind) -> tuple[Kind, ...]:
    try:
        return _REFINED[kind.name]
    except KeyError:
        found = tuple(k for k in KINDS.values() if k.refines == kind.name)
        _REFINED[kind.name] = found
        return found


_REFINED: dict[str, tuple[Kind, ...]] = {}


def kind_of_dtype(dtype: np.dtype) -> Kind:
    """The numeric kind of a numeric numpy dtype (bool, int, float, complex)."""
    return _NUMERIC_BY_DTYPE_KIND[dtype.kind]


def state_of_value(v: Any) -> ColumnState:
    """The state of a new column holding ``v``. Raises NotStorable."""
    kind = kind_of_value(v)
    if kind is None:
        raise NotStorable(_STORABLE + _hint(v))
    return kind.state(v)


def admit(state: ColumnState | None, v: Any) -> ColumnState:
    """The state of a column in ``state`` (None: a new column) once it holds ``v``. Raises NotStorable."""
    kind = kind_of_value(v)
    if kind is None:
        raise NotStorable(_STORABLE + _hint(v))
    if state is None or state.kind is MISSING_KIND:
        return kind.state(v)
    if state.kind is not kind and is_nat(v):
        # NaT is missing only where a datetime could be.
        raise NotStorable(_mixed(state, ColumnState(kind, np.dtype("datetime64[us]"))))
    if kind is state.kind or kind is MISSING_KIND:
        return state.kind.admit(state, v) if kind is state.kind else state
    if state.kind.absorbs(kind):
        # An int in a float or complex column: the int kind says how it fits (a Python int keeps the dtype).
        return kind.admit(state, v)
    return state.kind.widen(state, kind.state(v))


def promote(a: np.dtype, b: np.dtype) -> np.dtype | None:
    """The dtype keeping every value of numeric dtypes ``a`` and ``b``, or None if there is none.

    numpy's promotion, except that bool never mixes with numbers and ``uint64``
    never meets a signed int (numpy would make both float64).
    """
    if a == b:
        return a
    if (a.kind == "b") != (b.kind == "b"):
        return None
    r = np.result_type(a, b)
    if a.kind in "iu" and b.kind in "iu" and r.kind == "f":
        return None
    return r


#: Mantissa bits (with the implicit one) of each float and complex dtype: ints up to 2**bits are exact.
_MANTISSA = {"f2": 11, "f4": 24, "f8": 53, "c8": 24, "c16": 53}
_SPANS = (11, 24, 53)


def int_span(lo: int, hi: int) -> int:
    """The fewest mantissa bits keeping every int in ``lo..hi`` exact (11, 24, 53; 64: no float does)."""
    m = max(-int(lo), int(hi))
    for bits in _SPANS:
        if m <= 1 << bits:
            return bits
    return 64


def mantissa(dtype: np.dtype) -> int:
    """The ints a float or complex dtype holds exactly: up to 2**mantissa(dtype)."""
    return _MANTISSA[dtype.str[1:]]


def join_ints(a: ColumnState, b: ColumnState, dtype: np.dtype) -> int:
    """The span of a column of ``dtype`` holding the ints of ``a`` and ``b``. Raises NotStorable.

    Ints widen to a float (or complex) only if the float keeps every int of the
    column, and the new one, exactly: no value ever changes silently.
    """
    if dtype.kind in "iu":
        return max(a.span, b.span)
    if dtype.kind in "fc":
        bits = mantissa(dtype)
        for st in (a, b):
            if st.span > bits:
                raise NotStorable(
                    f"the column would become {dtype}, which does not hold every int of it (or this value) "
                    f"exactly (only up to 2**{bits}); convert the ints to float yourself if rounding is "
                    f"acceptable, or use another key"
                )
    return 0


def column_state(kind: "str | ColumnState", col: Any) -> ColumnState:
    """The state of typed column ``col`` whose kind is named ``kind`` (a state is returned as it is)."""
    if isinstance(kind, ColumnState):
        return kind
    return kind_named(kind).typed_state(col)


def kinds_table() -> str:
    """The table of kinds as Markdown (docs/hdf5-layout.md holds it; a test keeps the two equal)."""
    lines = [
        "| kind | accepts | DataFrame dtype | HDF5 dataset | missing cell | widens |",
        "|---|---|---|---|---|---|",
    ]
    for kind in KINDS.values():
        cells = [f"`{kind.name}`", kind.accepts_doc, kind.frame_doc, kind.h5_doc, kind.missing_doc, kind.widens_doc]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def check_name(name: Any, what: str) -> None:
    """Refuse a name (result key, parameter, tag) no format can store.

    Raises:
        UnstorableValueError: the name is not a str, holds NUL, or is not valid Unicode.
    """
    if type(name) is str and name.isascii() and "\x00" not in name:
        return
    if not isinstance(name, str):
        raise UnstorableValueError(f"{what} {name!r} is a {type(name).__name__}; names must be str")
    problem = _text_problem(name)
    if problem is not None:
        raise UnstorableValueError(f"cannot use {what} {name!r}: {problem}")


def journal_globals() -> frozenset[tuple[str, str]]:
    """Every global the journal may unpickle for the values of every kind."""
    out: set[tuple[str, str]] = {("epyclab.notebooks.columns", "MISSING")}
    for kind in KINDS.values():
        out |= kind.journal
    return frozenset(out)


_STORABLE = (
    "a notebook stores str, int, float, complex, bool, datetime, None (a missing cell), "
    "numeric numpy arrays, lists of str and lists or tuples of numbers"
)


def _hint(v: Any) -> str:
    if isinstance(v, np.datetime64):
        return "; datetimes are kept as naive datetime.datetime or pandas.Timestamp: store pandas.Timestamp(value)"
    if _is_na(v):
        return "; for a missing value, store None"
    if isinstance(v, np.generic):
        return "; " + _dtype_problem(v.dtype)
    if isinstance(v, np.ndarray):
        return "; a subclass of numpy.ndarray (its extra state would be lost): store np.asarray(value)"
    if isinstance(v, dict):
        return "; store each entry under a key of its own"
    if isinstance(v, (set, frozenset)):
        return "; store it as a sorted list"
    return "; convert it to one of those (e.g. str(value))"


def _mixed(a: ColumnState, b: ColumnState) -> str:
    return (
        f"the column holds {a.kind.name} values ({a.dtype}) and no kind keeps both exactly "
        f"(ints widen to floats and complex numbers, floats to complex numbers); convert the "
        f"value, or use another key for {b.kind.name} values"
    )


def _text_problem(v: str) -> str | None:
    if "\x00" in v:
        return "it holds NUL characters ('\\x00'), which HDF5 text cannot hold; remove them"
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return "it holds characters UTF-8 cannot encode (lone surrogates); clean the text"
    return None


def _pandas() -> Any:
    # pandas is imported when a column is typed for a DataFrame, not with the table:
    # `epyclab show` and other readers of counts and names never load it.
    import pandas

    return pandas


def is_nat(v: Any) -> bool:
    """True if ``v`` is ``pandas.NaT`` (which only exists once pandas is imported)."""
    pandas = sys.modules.get("pandas")
    return pandas is not None and v is pandas.NaT


def _is_na(v: Any) -> bool:
    """True if ``v`` is ``pandas.NA`` (which only exists once pandas is imported)."""
    pandas = sys.modules.get("pandas")
    return pandas is not None and v is pandas.NA


def _pandas_datetime_types() -> tuple[type, ...]:
    """``pandas.Timestamp`` and the type of ``pandas.NaT``, once pandas is imported (no value has them before)."""
    pandas = sys.modules.get("pandas")
    return () if pandas is None else (pandas.Timestamp, type(pandas.NaT))


def _has_missing(values: list[Any]) -> bool:
    return any(map(is_, values, repeat(None))) or any(map(is_, values, repeat(MISSING)))


def _filled(values: list[Any], fill: Any) -> list[Any]:
    if _has_missing(values):
        return [fill if v is None or v is MISSING else v for v in values]
    return values


# ---- the kinds ----------------------------------------------------------------------------


class MissingKind(Kind):
    """``None``: a missing cell. A column of missing cells only takes the kind of its first value."""

    name = "missing"
    accepts_doc = '`None` (a missing cell)'
    frame_doc = 'object (None)'
    h5_doc = 'uint8 zeros (only the row count matters)'
    missing_doc = '`None`'
    widens_doc = 'to the kind of the first value'
    types = (type(None), type(MISSING))
    def state(self, v: Any) -> ColumnState:
        return ColumnState(self, _OBJECT)

    def widen(self, a: ColumnState, b: ColumnState) -> ColumnState:
        return b

    def column(self, values: list[Any], state: ColumnState) -> Any:
        out = np.empty(len(values), dtype=object)
        out[:] = [None] * len(values)
        return out

    def to_storage(self, col: Any, state: ColumnState) -> StoredColumn:
        return StoredColumn(self.name, np.zeros(len(col), dtype=np.uint8))

    def from_storage(self, stored: StoredColumn) -> Any:
        return self.column([None] * len(stored.data), ColumnState(self, _OBJECT))

    def typed_state(self, col: Any) -> ColumnState:
        return ColumnState(self, _OBJECT)

    def json_values(self, stored: StoredColumn) -> list[Any]:
        return [None] * len(stored.data)

    def json_column(self, values: list[Any], dtype: np.dtype | None, unit: str | None) -> StoredColumn:
        return StoredColumn(self.name, np.zeros(len(values), dtype=np.uint8))


class NumberKind(Kind):
    """bool, int, float and complex: one numpy dtype per column, widened as :func:`promote` says."""

    journal = frozenset({
        ("builtins", "complex"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    })

    def state(self, v: Any) -> ColumnState:
        dtype = getattr(v, "dtype", None)
        if dtype is None:
            dtype = _PYTHON_DTYPES[self.name]
        elif dtype not in NUMERIC_DTYPES:
            raise NotStorable(_dtype_problem(dtype))
        return ColumnState(self, dtype)

    def widen(self, a: ColumnState, b: ColumnState) -> ColumnState:
        if b.kind is MISSING_KIND:
            return a
        if not isinstance(b.kind, NumberKind):
            raise NotStorable(_mixed(a, b))
        assert a.dtype is not None
        assert b.dtype is not None
        dtype = promote(a.dtype, b.dtype)
        if dtype is None:
            raise NotStorable(
                f"the column holds {a.dtype} values and no dtype keeps both those and {b.dtype} values "
                f"exactly (bools never mix with numbers; uint64 never meets a signed int); convert the "
                f"value, or use another key"
            )
        span = join_ints(a, b, dtype)
        if dtype == a.dtype and span == a.span:
            return a
        return ColumnState(kind_of_dtype(dtype), dtype, span=span)

    def fill(self, state: ColumnState) -> Any:
        return self.missing

    missing: ClassVar[Any] = None

    def frame_dtype(self, state: ColumnState) -> Any:
        return state.dtype

    def numpy_dtype(self, state: ColumnState) -> np.dtype:
        assert state.dtype is not None
        return state.dtype

    def column(self, values: list[Any], state: ColumnState) -> Any:
        return np.array(_filled(values, self.missing), dtype=state.dtype)

    def cast(self, col: Any, old: ColumnState, state: ColumnState) -> Any:
        if old.kind is MISSING_KIND:
            return np.full(len(col), self.missing, dtype=state.dtype)
        return np.asarray(col).astype(state.dtype)

    def json_column(self, values: list[Any], dtype: np.dtype | None, unit: str | None) -> StoredColumn:
        return StoredColumn(self.name, np.array(values, dtype=dtype))


class BoolKind(NumberKind):
    """True or False."""

    name = "bool"
    accepts_doc = '`bool`, `numpy.bool_`'
    frame_doc = 'bool'
    h5_doc = 'bool (HDF5 enum)'
    missing_doc = '`False`'
    widens_doc = 'never (bools do not mix with numbers)'
    types = (bool, *_numpy_types("b"))
    missing = False

    def column(self, values: list[Any], state: ColumnState) -> Any:
        return np.array(_filled(values, False), dtype=bool)


_NOT_64_BITS = "it does not fit in 64 bits; store it as a float or a str"


class IntKind(NumberKind):
    """Integers, signed or unsigned, of the width numpy gives them (Python ints: as narrow as the column)."""

    name = "int"
    accepts_doc = '`int` (-2\\*\\*63 .. 2\\*\\*64-1), numpy integers of every width and sign'
    frame_doc = 'its integer dtype (int64 for Python ints; int8 stays int8)'
    h5_doc = "the column's integer dtype; `missing/<name>` marks missing cells"
    missing_doc = '`0` (NaN if the column widens to float)'
    widens_doc = (
        "to a wider int that holds both (uint32 and -1: int64); to float or complex only while that keeps "
        "every int of the column exactly (float32: \\|v\\| ≤ 2\\*\\*24, float64: 2\\*\\*53), else the value is "
        "refused; uint64 never meets a signed int"
    )
    types = (int, *_numpy_types("iu"))
    missing = 0
    checks_values = True
    masks_missing = True

    def state(self, v: Any) -> ColumnState:
        if isinstance(v, np.integer):
            return ColumnState(self, v.dtype, span=int_span(v, v))
        if not INT64_MIN <= v <= UINT64_MAX:
            raise NotStorable(_NOT_64_BITS)
        return ColumnState(self, INT64 if v <= INT64_MAX else np.dtype(np.uint64), span=int_span(v, v))

    def admit(self, state: ColumnState, v: Any) -> ColumnState:
        if isinstance(v, np.integer):
            return self.widen(state, self.state(v))
        # A Python int keeps the column's dtype if it fits, else widens it as little as it can.
        if not INT64_MIN <= v <= UINT64_MAX:
            raise NotStorable(_NOT_64_BITS)
        dtype = state.dtype
        assert dtype is not None
        span = int_span(v, v)
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            if info.min <= v <= info.max:
                return state if span <= state.span else replace(state, span=span)
            least = np.min_scalar_type(v)
            if dtype.kind == "i" and least.kind == "u" and v <= INT64_MAX:
                # A signed column takes a positive int as the narrowest signed dtype holding it: numpy
                # pairs int8 with uint64 (for 2**32) as float64, which would refuse what int64 holds.
                least = next(d for d in _SIGNED if v <= np.iinfo(d).max)
            wider = promote(dtype, least)
            if wider is None:
                raise NotStorable(
                    f"the column holds {dtype} values and no integer dtype holds both those and {v}; "
                    f"convert the value (or the column's values) to float, or use another key"
                )
            return ColumnState(self, wider, span=max(span, state.span))
        # A float or complex column: the int becomes a number of that dtype, if it stays exact.
        join_ints(state, ColumnState(self, INT64, span=span), dtype)
        return state

    def typed_state(self, col: Any) -> ColumnState:
        col = np.asarray(col)
        span = int_span(col.min(), col.max()) if len(col) else 11
        return ColumnState(self, col.dtype, span=span)


class FloatKind(NumberKind):
    """Real numbers, NaN and infinities included, of the float width numpy gives them."""

    name = "float"
    accepts_doc = '`float`, numpy float16/32/64, NaN, inf'
    frame_doc = 'its float dtype (float32 stays float32)'
    h5_doc = "the column's float dtype"
    missing_doc = 'NaN'
    widens_doc = 'to a wider float, complex'
    types = (float, *_numpy_types("f"))
    missing = math.nan

    def absorbs(self, other: Kind) -> bool:
        return isinstance(other, IntKind)

    def json_values(self, stored: StoredColumn) -> list[Any]:
        return [_encode_float(x) for x in stored.data.tolist()]

    def json_column(self, values: list[Any], dtype: np.dtype | None, unit: str | None) -> StoredColumn:
        return StoredColumn(self.name, np.array([_decode_float(x) for x in values], dtype=dtype))


class ComplexKind(NumberKind):
    """Complex numbers of the width numpy gives them."""

    name = "complex"
    accepts_doc = '`complex`, numpy complex64/128'
    frame_doc = 'its complex dtype'
    h5_doc = "the column's complex dtype (`r`, `i` compound)"
    missing_doc = 'NaN'
    widens_doc = 'to a wider complex'
    types = (complex, *_numpy_types("c"))
    missing = complex(math.nan, 0.0)

    def absorbs(self, other: Kind) -> bool:
        return isinstance(other, IntKind)

    def json_values(self, stored: StoredColumn) -> list[Any]:
        return [[_encode_float(x.real), _encode_float(x.imag)] for x in stored.data.tolist()]

    def json_column(self, values: list[Any], dtype: np.dtype | None, unit: str | None) -> StoredColumn:
        data = [complex(_decode_float(r), _decode_float(i)) for r, i in values]
        return StoredColumn(self.name, np.array(data, dtype=dtype))


class StrKind(Kind):
    """Text: any length, any Unicode except NUL and lone surrogates."""

    name = "str"
    accepts_doc = '`str`: any length, any Unicode but NUL and lone surrogates'
    frame_doc = 'str'
    h5_doc = 'variable-length UTF-8'
    missing_doc = "`''`"
    widens_doc = 'never'
    types = (str, np.str_)
    checks_values = True
    journal = frozenset({("numpy", "dtype"), ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")})

    def state(self, v: Any) -> ColumnState:
        if not v.isascii() or "\x00" in v:
            problem = _text_problem(v)
            if problem is not None:
                raise NotStorable(problem)
        return ColumnState(self, _OBJECT)

    def admit(self, state: ColumnState, v: Any) -> ColumnState:
        self.state(v)
        return state

    def fill(self, state: ColumnState) -> Any:
        return ""

    def frame_dtype(self, state: ColumnState) -> Any:
        return "str"

    def column(self, values: list[Any], state: ColumnState) -> Any:
        return _pandas().array(_filled(values, ""), dtype="str")

    def to_storage(self, col: Any, state: ColumnState) -> StoredColumn:
        return StoredColumn(self.name, np.asarray(col, dtype=object))

    def stored(self, values: list[Any], state: ColumnState) -> StoredColumn:
        # Plain str cells (as good as always) are stored as they are: through a pandas array and
        # back (column, then to_storage) was a third of a checkpoint's time for a text column.
        if set(map(type, values)) <= _JUST_STR:
            return StoredColumn(self.name, np.array(_filled(values, ""), dtype=object))
        return self.to_storage(self.column(values, state), state)

    def from_storage(self, stored: StoredColumn) -> Any:
        if isinstance(stored.data, PackedText):
            return stored.data.pandas_array()
        return _pandas().array(stored.data, dtype="str")

    def read_state(self, stored: StoredColumn) -> tuple[ColumnState, Any]:
        # Text needs no look at its cells: its pandas array is made with the DataFrame.
        return ColumnState(self, _OBJECT), None

    def typed_state(self, col: Any) -> ColumnState:
        return ColumnState(self, _OBJECT)

    def h5_dtype(self, stored: StoredColumn) -> Any:
        import h5py

        return h5py.string_dtype()

    def json_column(self, values: list[Any], dtype: np.dtype | None, unit: str | None) -> StoredColumn:
        return StoredColumn(self.name, np.array(values, dtype=object))

    def storage_dtype(self, stored: StoredColumn) -> np.dtype | None:
        return _OBJECT


class DatetimeKind(Kind):
    """Naive dates and times: microseconds for years 1 to 9999, or nanoseconds in 1677..2262."""

    name = "datetime"
    accepts_doc = 'naive `datetime.datetime`, `pandas.Timestamp`, `pandas.NaT` (a missing datetime)'
    frame_doc = 'datetime64[us] (years 1..9999), datetime64[ns] once a value has nanoseconds'
    h5_doc = 'int64 ticks since 1970 of the `unit` attribute (`us` or `ns`); NaT is the int64 minimum'
    missing_doc = 'NaT (`None` or `pandas.NaT`; a column of NaT only is a datetime column)'
    widens_doc = 'us to ns, only while every date lies in 1677-09-22..2262-04-11'
    # With pandas.Timestamp and pandas.NaT, once pandas is imported (see accepts_type).
    types = (datetime,)
    checks_values = True
    journal = frozenset({
        ("datetime", "datetime"),
        ("pandas._libs.tslibs.timestamps", "_unpickle_timestamp"),
    })
    _US = np.dtype("datetime64[us]")
    _NS = np.dtype("datetime64[ns]")

    def accepts_type(self, t: type) -> bool:
        return t in self.types or t in _pandas_datetime_types()

    def state(self, v: Any) -> ColumnState:
        if is_nat(v):
            # A missing datetime: the column can only ever hold datetimes (a later int or str is
            # refused, as it is after a date), whatever order the values come in and whichever format
            # keeps them. It fits any unit, so a later date decides the unit.
            return ColumnState(self, self._US, True)
        if v.tzinfo is not None:
            raise NotStorable(
                "it has a time zone; store naive datetimes (e.g. converted to UTC with .replace(tzinfo=None))"
            )
        fits = NS_MIN <= v <= NS_MAX
        if getattr(v, "nanosecond", 0):
            return ColumnState(self, self._NS, fits)
        return ColumnState(self, self._US, fits)

    def admit(self, state: ColumnState, v: Any) -> ColumnState:
        if is_nat(v):
            return state
        if v.tzinfo is None and state.fits_ns and state.dtype is self._US and NS_MIN <= v <= NS_MAX \
                and not getattr(v, "nanosecond", 0):
            return state
        return self.widen(state, self.state(v))

    def widen(self, a: ColumnState, b: ColumnState) -> ColumnState:
        if b.kind is MISSING_KIND:
            return a
        if b.kind is not self:
            raise NotStorable(_mixed(a, b))
        ns = a.dtype == self._NS or b.dtype == self._NS
        fits = a.fits_ns and b.fits_ns
        if ns and not fits:
            raise NotStorable(
                "the column would need nanoseconds (a pandas.Timestamp with nanoseconds) and dates "
                "outside 1677-09-22..2262-04-11, and no datetime dtype holds both; round the "
                "nanoseconds, or use another key"
            )
        new = ColumnState(self, self._NS if ns else self._US, fits)
        return a if new == a else new

    def fill(self, state: ColumnState) -> Any:
        return _pandas().NaT

    def frame_dtype(self, state: ColumnState) -> Any:
        return state.dtype

    def numpy_dtype(self, state: ColumnState) -> np.dtype:
        assert state.dtype is not None
        return state.dtype

    def column(self, values: list[Any], state: ColumnState) -> Any:
        # pandas converts datetime objects many times faster than numpy does.
        pandas = _pandas()
        return pandas.array(_filled(values, pandas.NaT), dtype=state.dtype).to_numpy()

    def cast(self, col: Any, old: ColumnState, state: ColumnState) -> Any:
        if old.kind is MISSING_KIND:
            return np.full(len(col), np.datetime64("NaT"), dtype=state.dtype)
        return np.asarray(col).astype(state.dtype)

    def to_storage(self, col: Any, state: ColumnState) -> StoredColumn:
        arr = np.asarray(col, dtype=state.dtype)
        return StoredColumn(self.name, arr.view(np.int64), unit=np.datetime_data(arr.dtype)[0])

    def from_storage(self, stored: StoredColumn) -> Any:
        return np.asarray(stored.data, dtype=np.int64).view(f"datetime64[{stored.unit}]")

    def typed_state(self, col: Any) -> ColumnState:
        col = np.asarray(col)
        present = col[~np.isnat(col)]
        lo, hi = np.datetime64(NS_MIN, "us"), np.datetime64(NS_MAX, "us")
        fits = bool(len(present) == 0 or (present.min() >= lo and present.max() <= hi))
        return ColumnState(self, self._NS if col.dtype == self._NS else self._US, fits)

    def json_values(self, stored: StoredColumn) -> list[Any]:
        times = stored.data.view(f"datetime64[{stored.unit}]")
        return [None if np.isnat(t) else str(t) for t in times]

    def json_column(self, values: list[Any], dtype: np.dtype | None, unit: str | None) -> StoredColumn:
        times = np.array([v if v is not None else "NaT" for v in values], dtype=f"datetime64[{unit}]")
        return StoredColumn(self.name, times.view(np.int64), unit=unit)

    def storage_dtype(self, stored: StoredColumn) -> np.dtype | None:
        return np.dtype(f"datetime64[{stored.unit}]")


_NONE_SHAPE = np.array([-1], dtype=np.int64)


class CellKind(Kind):
    """Numeric arrays of any shape, one per cell, stored flat with their shape; the element dtype widens."""

    checks_values = True
    cell = True
    journal = frozenset({
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("builtins", "complex"),
    })

    def elements(self, v: Any) -> tuple[np.ndarray, np.dtype | None]:
        """The value as an array, and its element dtype (None: it has no element to say). Raises NotStorable."""
        raise NotImplementedError

    def state(self, v: Any) -> ColumnState:
        a, dtype = self.elements(v)
        if dtype is not None and dtype.kind in "iu" and a.size:
            return ColumnState(self, dtype, span=int_span(a.min(), a.max()))
        return ColumnState(self, dtype)

    def widen(self, a: ColumnState, b: ColumnState) -> ColumnState:
        if b.kind is MISSING_KIND:
            return a
        if a.dtype is None and b.kind.refines == self.name:
            # Only empty cells so far (they say nothing): the column takes the refining kind.
            return b
        if b.kind is not self:
            raise NotStorable(_mixed(a, b))
        # Test None first: numpy compares None equal to float64.
        if b.dtype is None:
            return a
        if a.dtype is None:
            return b
        dtype = promote(a.dtype, b.dtype)
        if dtype is None:
            raise NotStorable(
                f"the column's cells hold {a.dtype} elements and no dtype keeps both those and {b.dtype} "
                f"elements exactly; convert the value, or use another key"
            )
        span = join_ints(a, b, dtype)
        return a if dtype == a.dtype and span == a.span else replace(a, dtype=dtype, span=span)

    def one(self, v: Any, dtype: np.dtype | None) -> Any:
        """A cell as the column shows it (elements of the column's dtype)."""
        raise NotImplementedError

    def column(self, values: list[Any], state: ColumnState) -> Any:
        out = np.empty(len(values), dtype=object)
        out[:] = [None] * len(values)
        for i, v in enumerate(values):
            if v is not None and v is not MISSING:
                out[i] = self.one(v, state.dtype)
        return out

    def cast(self, col: Any, old: ColumnState, state: ColumnState) -> Any:
        if old.kind is MISSING_KIND:
            return self.column([None] * len(col), state)
        return self.column(list(col), state)

    def to_storage(self, col: Any, state: ColumnState) -> StoredColumn:
        # One cell per element: np.asarray(col, dtype=object) would nest a list of lists.
        cells = list(col)
        # With no element yet, bool: the smallest element type, and it reads back as empty cells.
        element = state.dtype if state.dtype is not None else np.dtype(bool)
        flats = np.empty(len(cells), dtype=object)
        shapes = np.empty(len(cells), dtype=object)
        empty = np.array([], dtype=element)
        for i, c in enumerate(cells):
            if c is None:
                flats[i], shapes[i] = empty, _NONE_SHAPE
            else:
                a = np.asarray(c)
                flats[i] = np.ravel(np.asarray(a, dtype=element))
                shapes[i] = np.asarray(a.shape, dtype=np.int64)
        return StoredColumn(self.name, flats, shapes=shapes, element=element)

    def from_storage(self, stored: StoredColumn) -> Any:
        out = np.empty(len(stored.data), dtype=object)
        out[:] = [None] * len(stored.data)
        shapes = stored.shapes
        assert shapes is not None
        for i, (flat, shape) in enumerate(zip(stored.data, shapes)):
            if len(shape) == 1 and shape[0] == -1:
                continue
            out[i] = self.rebuild(np.asarray(flat, dtype=stored.element).reshape(tuple(shape)))
        return out

    def rebuild(self, a: np.ndarray) -> Any:
        """A cell from its array."""
        return a

    def stored_state(self, stored: StoredColumn, col: Any) -> ColumnState:
        if stored.element is None:
            return self.typed_state(col)
        element = np.dtype(stored.element)
        return ColumnState(self, element, span=self._span(col) if element.kind in "iu" else 0)

    def _span(self, col: Any) -> int:
        flat = [np.asarray(c).reshape(-1) for c in col if c is not None]
        flat = [f for f in flat if f.size]
        if not flat:
            return 0
        return max(int_span(f.min(), f.max()) for f in flat)

    def typed_state(self, col: Any) -> ColumnState:
        dtype = None
        for c in col:
            if c is not None:
                d = self.elements(c)[1]
                dtype = d if dtype is None else (dtype if d is None else promote(dtype, d) or dtype)
        return ColumnState(self, dtype, span=self._span(col) if dtype is not None and dtype.kind in "iu" else 0)

    def h5_dtype(self, stored: StoredColumn) -> Any:
        import h5py

        return h5py.vlen_dtype(stored.element)

    def json_values(self, stored: StoredColumn) -> list[Any]:
        # Each cell as a tagged JSON value (see jsonvalues), readable without the column's dtype.
        return [None if c is None else _encode_value(c) for c in self.from_storage(stored)]

    def json_column(self, values: list[Any], dtype: np.dtype | None, unit: str | None) -> StoredColumn:
        cells = [None if v is None else _decode_value(v) for v in values]
        if dtype is not None and not self.cell_dtype_known(cells):
            dtype = None
        return self.to_storage(cells, ColumnState(self, None if dtype is None else np.dtype(dtype)))

    def cell_dtype_known(self, cells: list[Any]) -> bool:
        """True if the cells say the element dtype (arrays always do; lists only when not empty)."""
        return True

    def storage_dtype(self, stored: StoredColumn) -> np.dtype | None:
        return stored.element


class ArrayKind(CellKind):
    """A numeric numpy array of any shape; it reads back with the column's element dtype."""

    name = "array"
    accepts_doc = 'numeric `numpy.ndarray` of any shape (bool, int, float, complex)'
    frame_doc = 'object: arrays of the element dtype'
    h5_doc = 'variable-length arrays of the element dtype, flattened; shape in `shapes/`'
    missing_doc = '`None` (shape `[-1]`)'
    widens_doc = 'the element dtype widens as numbers do'
    types = (np.ndarray,)

    def elements(self, v: Any) -> tuple[np.ndarray, np.dtype | None]:
        if v.dtype not in NUMERIC_DTYPES:
            raise NotStorable(_dtype_problem(v.dtype))
        return v, v.dtype

    def one(self, v: Any, dtype: np.dtype | None) -> Any:
        return np.asarray(v, dtype=dtype)


class ListKind(CellKind):
    """A regular (nested) list of numbers, all bools or all numbers; it reads back as a list."""

    name = "list"
    accepts_doc = 'regular (nested) `list` of numbers: all bools, or all numbers'
    frame_doc = 'object: lists'
    h5_doc = 'as `array`; read back as lists'
    missing_doc = '`None`'
    widens_doc = 'the element dtype widens as numbers do; `[]` says nothing about it'
    types = (list,)
    _what = "list"

    def elements(self, v: Any) -> tuple[np.ndarray, np.dtype | None]:
        try:
            a = np.asarray(v)
        except (ValueError, OverflowError):
            raise NotStorable(f"it is ragged; only regular {self._what}s of numbers can be stored") from None
        if a.size == 0:
            return a, None
        if a.dtype not in NUMERIC_DTYPES:
            raise NotStorable(
                f"only {self._what}s of numbers (or regular nested {self._what}s of numbers) can be stored"
            )
        if a.dtype.kind != "b":
            leaves = np.asarray(v, dtype=object).ravel()
            if any(isinstance(x, (bool, np.bool_)) for x in leaves):
                raise NotStorable(
                    "it mixes bools and numbers, which would come back as numbers; make them all one or the other"
                )
        return a, a.dtype

    def one(self, v: Any, dtype: np.dtype | None) -> Any:
        if dtype is None:
            return list(v)
        return np.asarray(v, dtype=dtype).tolist()

    def rebuild(self, a: np.ndarray) -> Any:
        return a.tolist()

    def cell_dtype_known(self, cells: list[Any]) -> bool:
        return any(c is not None and np.size(c) for c in cells)

    def stored_state(self, stored: StoredColumn, col: Any) -> ColumnState:
        # A column whose cells are all empty has no element dtype yet: the first element decides.
        if all(c is None or np.size(c) == 0 for c in col):
            return ColumnState(self, None)
        return super().stored_state(stored, col)


class TupleKind(ListKind):
    """A regular (nested) tuple of numbers; it reads back as a tuple."""

    name = "tuple"
    accepts_doc = 'regular (nested) `tuple` of numbers'
    frame_doc = 'object: tuples'
    h5_doc = 'as `array`; read back as tuples'
    missing_doc = '`None`'
    widens_doc = 'as `list`'
    types = (tuple,)
    _what = "tuple"

    def one(self, v: Any, dtype: np.dtype | None) -> Any:
        if dtype is None:
            return tuple(v)
        return tuple(np.asarray(v, dtype=dtype).tolist())

    def rebuild(self, a: np.ndarray) -> Any:
        return tuple(a.tolist())


class TextListKind(Kind):
    """A (nested) list of text, kept as it is: a cell of any shape whose leaves are all str.

    Stored as one JSON text per cell (a missing cell as ``''``, which is no JSON list), so any
    nesting reads back as it was given. A list of numbers is a ``list``; an empty list says
    nothing, so it joins either kind.
    """

    name = "textlist"
    accepts_doc = '(nested) `list` whose leaves are all `str` (any Unicode but NUL and lone surrogates)'
    frame_doc = 'object: lists of str'
    h5_doc = 'variable-length UTF-8: each cell as JSON text'
    missing_doc = '`None` (stored as `\'\'`)'
    widens_doc = 'never (an empty list joins it)'
    types = (list,)
    refines = "list"
    checks_values = True

    def claims(self, v: Any) -> bool:
        leaves = _leaves(v)
        return bool(leaves) and all(type(x) is str for x in leaves)

    def state(self, v: Any) -> ColumnState:
        leaves = _leaves(v)
        if not leaves or not all(type(x) is str for x in leaves):
            raise NotStorable("only lists whose every element is a str (or a list of such) are lists of text")
        for x in leaves:
            if not x.isascii() or "\x00" in x:
                problem = _text_problem(x)
                if problem is not None:
                    raise NotStorable(f"an element {problem}")
        return ColumnState(self, _OBJECT)

    def admit(self, state: ColumnState, v: Any) -> ColumnState:
        if type(v) is list and not _leaves(v):
            return state  # an empty list says nothing
        self.state(v)
        return state

    def widen(self, a: ColumnState, b: ColumnState) -> ColumnState:
        if b.kind is MISSING_KIND or b.kind is self:
            return a
        if b.kind.name == self.refines and b.dtype is None:
            return a  # empty lists
        raise NotStorable(_mixed(a, b))

    def column(self, values: list[Any], state: ColumnState) -> Any:
        out = np.empty(len(values), dtype=object)
        out[:] = [None if v is None or v is MISSING else _copy_list(v) for v in values]
        return out

    def to_storage(self, col: Any, state: ColumnState) -> StoredColumn:
        data = np.empty(len(col), dtype=object)
        data[:] = ["" if c is None else _json_text(c) for c in col]
        return StoredColumn(self.name, data)

    def from_storage(self, stored: StoredColumn) -> Any:
        out = np.empty(len(stored.data), dtype=object)
        out[:] = [None if t == "" else _text_list(t) for t in stored.data]
        return out

    def typed_state(self, col: Any) -> ColumnState:
        return ColumnState(self, _OBJECT)

    def h5_dtype(self, stored: StoredColumn) -> Any:
        import h5py

        return h5py.string_dtype()

    def json_values(self, stored: StoredColumn) -> list[Any]:
        return list(self.from_storage(stored))

    def json_column(self, values: list[Any], dtype: np.dtype | None, unit: str | None) -> StoredColumn:
        data = np.empty(len(values), dtype=object)
        data[:] = ["" if v is None else _json_text(v) for v in values]
        return StoredColumn(self.name, data)

    def storage_dtype(self, stored: StoredColumn) -> np.dtype | None:
        return _OBJECT


def _leaves(v: Any) -> list[Any]:
    """The elements of (nested) list ``v`` that are not lists."""
    out: list[Any] = []
    stack = [v]
    while stack:
        x = stack.pop()
        if type(x) is list:
            stack.extend(reversed(x))
        else:
            out.append(x)
    return out


def _copy_list(v: Any) -> Any:
    """A copy of (nested) list ``v``, so that changing a cell read back changes nothing stored."""
    return [_copy_list(x) for x in v] if type(v) is list else v


def _json_text(v: Any) -> str:
    import json

    return json.dumps(v, ensure_ascii=False)


def _text_list(t: str) -> Any:
    """A cell of a text-list column from its stored JSON text.

    Raises:
        ValueError: the text is not a (nested) list of str (a damaged or foreign file).
    """
    import json

    v = json.loads(t)
    if type(v) is not list or not all(type(x) is str for x in _leaves(v)):
        raise ValueError(f"a text-list cell holds {t[:80]!r}, which is not a list of str")
    return v


_PYTHON_DTYPES = {
    "bool": np.dtype(bool),
    "int": INT64,
    "float": np.dtype(np.float64),
    "complex": np.dtype(np.complex128),
}

MISSING_KIND = register_kind(MissingKind())
register_kind(BoolKind())
register_kind(IntKind())
register_kind(FloatKind())
register_kind(ComplexKind())
register_kind(StrKind())
register_kind(DatetimeKind())
register_kind(ArrayKind())
register_kind(ListKind())
register_kind(TupleKind())
register_kind(TextListKind())

_NUMERIC_BY_DTYPE_KIND = {"b": KINDS["bool"], "i": KINDS["int"], "u": KINDS["int"], "f": KINDS["float"],
                          "c": KINDS["complex"]}

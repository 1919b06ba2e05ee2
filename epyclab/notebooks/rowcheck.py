"""The check a result set runs on every row before it stores it.

It refuses a value no notebook format could keep exactly (see the table of
kinds, :mod:`epyclab.notebooks.kinds`) with an
:class:`~epyclab.errors.UnstorableValueError` that names the key, the value and
its type, so nothing is stored, in memory or on disk, that a commit would later
fail on; and it keeps each column's state (kind and dtype), widening it as
values come.

Lab adds a row in a few microseconds, so the check must cost less than that.
A row is reduced to its signature: its keys (the roles apart) and the types of
its values, made in C. The first row of a signature has every value
checked in full (:meth:`RowCheck.full`). From then on a *plan* for the
signature, made from the columns' states, says what each value still needs,
kind by kind rather than value by value: a value whose type alone says how it
fits its column (a float in a float column, None) needs nothing; the texts of a
row are joined and tested at once for NUL and non-ASCII (unless they equal the
last texts that passed); its ints are compared with the span each column
already has; its datetimes with the range of
datetime64[ns]; only the rest (arrays, lists, an int in a float column) is
admitted value by value. A value that fails its quick test sends the row to the
full check, which widens the column or refuses the value. A plan holds while the
columns' states do; when one changes, each plan is made again when next used.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from operator import itemgetter
from typing import Any, Callable

from epyclab.errors import UnstorableValueError
from epyclab.experiment import Experiment
from epyclab.notebooks.kinds import (
    INT64,
    INT64_MAX,
    KINDS,
    NS_MAX,
    NS_MIN,
    ColumnState,
    NotStorable,
    admit,
    check_name,
    kind_of_type,
)

__all__ = ["RowCheck", "value_message"]

_ROLES = ("parameter", "result", "metadata")
_STR = KINDS["str"]
_INT = KINDS["int"]
_DATETIME = KINDS["datetime"]
_MISSING = KINDS["missing"]
_US = _DATETIME.state(datetime(2000, 1, 1)).dtype
_EXCEPTION = Experiment.EXCEPTION
# Signatures remembered per check; a sweep has one or two (successful and failed rows).
_MAX_PLANS = 256

#: A row's keys, its roles apart: ``(*params, None, *results, None, *metadata)`` (a key is never None).
Keys = tuple[Any, ...]


class RowCheck:
    """Checks rows against the states of a result set's columns, widening them as values come.

    ``states`` maps the columns already stored to their state. After each
    accepted row, :attr:`changes` lists ``(key, old, new)`` for the columns
    whose state changed (``old`` None for a new column).
    """

    def __init__(self, states: Mapping[str, ColumnState] | None = None) -> None:
        self._states: dict[str, ColumnState] = dict(states or {})
        self.changes: list[tuple[str, ColumnState | None, ColumnState]] = []
        # Changes whenever a column's state does: a plan holds for the states it was made from.
        self._version = 0
        self._plans: dict[tuple[Keys, tuple[type, ...]], _Plan] = {}
        self._last: _Plan | None = None

    @property
    def version(self) -> int:
        """A number that changes whenever a column's state does (so a copy of the states is known stale)."""
        return self._version

    @property
    def states(self) -> dict[str, ColumnState]:
        """Each column's state (the dict itself: change it only through :meth:`setStates`)."""
        return self._states

    @states.setter
    def states(self, states: Mapping[str, ColumnState]) -> None:
        self.setStates(states)

    def setStates(self, states: Mapping[str, ColumnState]) -> None:
        """Replace the columns' states (the plans made from the old ones no longer hold)."""
        self._states = dict(states)
        self._version += 1

    def __call__(
        self,
        params: Mapping[str, Any],
        results: Mapping[str, Any],
        metadata: Mapping[str, Any],
        keys: Keys | None = None,
    ) -> tuple[Keys, list[Any]]:
        """Check one row; raise :class:`UnstorableValueError` (changing nothing) if it cannot be stored.

        ``keys``, if the caller has them already, are the row's keys as :data:`Keys` says.
        Returns the row's keys and its values (a list, in the keys' order), in that order.
        """
        if self.changes:
            self.changes = []
        if keys is None:
            keys = (*params, None, *results, None, *metadata)
        # Lists, not tuples: a tuple is a copy of the list the unpacking builds (~1% of a row each).
        values = [*params.values(), *results.values(), *metadata.values()]
        types = [*map(type, values)]
        plan = self._last
        # The caller may pass the keys tuple the plan was made with: then no key is compared.
        if plan is None or plan.type_list != types or (plan.keys is not keys and plan.keys != keys):
            signature = (keys, tuple(types))
            plan = self._plans.get(signature)
            if plan is None:
                return self._first(params, results, metadata, keys, signature[1], values)
            self._last = plan
        if plan.version != self._version:
            if self._replan(plan) is None:
                return self._first(params, results, metadata, keys, plan.types, values)
        # The quick tests, a few C calls per kind for the whole row; a value that fails one
        # sends the row to the full check (which widens a column or refuses the value).
        if plan.texts is not None:
            texts = plan.texts(values)
            # The texts of the last row that passed again (a sweep repeats most texts): passed.
            if texts != plan.passed_texts:
                text = "".join(texts)
                if (not text.isascii() or "\x00" in text) and not plan.texts_fit(values):
                    return self._again(params, results, metadata, keys, values)
                plan.passed_texts = texts
        if plan.ranges is not None:
            # Ints within their columns' spans, datetimes within datetime64[ns]'s range: one test of
            # chained comparisons made for the plan (see _range_test).
            try:
                fits = plan.ranges(values)
            except TypeError:
                fits = False  # aware datetimes do not compare with naive ones: they take the full check
            if not fits:
                return self._again(params, results, metadata, keys, values)
        if plan.others:
            states = self._states
            for pos, k in plan.others:
                old = states[k]
                try:
                    st = admit(old, values[pos])
                except NotStorable:
                    return self._again(params, results, metadata, keys, values)
                if st is not old and st != old:
                    return self._again(params, results, metadata, keys, values)
        return plan.keys, values  # equal to keys; this one a caller can pass back to skip comparing them

    # ---- the full check, and plans ------------------------------------------------------

    def _first(
        self,
        params: Mapping[str, Any],
        results: Mapping[str, Any],
        metadata: Mapping[str, Any],
        keys: Keys,
        types: tuple[type, ...],
        values: list[Any],
    ) -> tuple[Keys, list[Any]]:
        """The first row of a signature: the full check, then a plan for the rows like it."""
        self.full(params, results, metadata)
        if len(self._plans) >= _MAX_PLANS:
            self._plans.clear()
        plan = _Plan(keys, types, -1)
        self._plans[(keys, types)] = plan
        self._last = self._replan(plan)
        return keys, values

    def _again(
        self,
        params: Mapping[str, Any],
        results: Mapping[str, Any],
        metadata: Mapping[str, Any],
        keys: Keys,
        values: list[Any],
    ) -> tuple[Keys, list[Any]]:
        """A value failed its quick test: the full check (plans are made again if a state changed)."""
        self.full(params, results, metadata)
        return keys, values

    def _replan(self, plan: _Plan) -> _Plan | None:
        """Make ``plan`` again for the current states (None if a key has no column: the full check decides)."""
        states = self._states
        texts: list[int] = []
        ints: list[int] = []
        highs: list[int] = []
        np_ints: list[int] = []
        np_lows: list[int] = []
        np_highs: list[int] = []
        times: list[int] = []
        others: list[tuple[int, str]] = []
        pos = 0
        for k in plan.keys:
            if k is None:
                continue  # the boundary between two roles
            t = plan.types[pos]
            st = states.get(k)
            kind = kind_of_type(t)
            if k == _EXCEPTION and issubclass(t, BaseException) and st is not None and st.kind is _STR:
                pass  # the result set stores exceptions as text, and the column is text
            elif st is None or kind is None:
                return None
            elif kind is _MISSING or (not kind.checks_values and kind is st.kind):
                pass  # the type alone says how it fits, and it did
            elif kind is _STR and st.kind is _STR:
                texts.append(pos)
            elif kind is _INT and st.kind is _INT and st.dtype == (INT64 if t is int else t):
                # Within the span the column already has: no state change (a column's ints
                # decide which float may later hold them exactly).
                limit = INT64_MAX if st.span >= 64 else 1 << st.span
                if t is int:
                    ints.append(pos)
                    highs.append(limit)
                else:
                    np_ints.append(pos)
                    np_lows.append(-limit)
                    np_highs.append(limit)
            elif t is datetime and st.kind is _DATETIME and st.dtype == _US and st.fits_ns:
                # Only a pandas.Timestamp can have nanoseconds: those take the value-by-value path.
                times.append(pos)
            else:
                others.append((pos, k))
            pos += 1
        plan.version = self._version
        plan.texts = _getter(texts)
        plan.passed_texts = None
        plan.text_keys = tuple(texts)
        plan.ranges = _range_test(
            [(pos, -high, high) for pos, high in zip(ints, highs)]
            + [(pos, low, high) for pos, low, high in zip(np_ints, np_lows, np_highs)]
            + [(pos, NS_MIN, NS_MAX) for pos in times]
        )
        plan.others = tuple(others)
        return plan

    def full(self, params: Mapping[str, Any], results: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
        """Check every value of a row (new names too); raise (changing nothing) or apply the state changes."""
        if self.changes:
            self.changes = []
        new: dict[str, ColumnState] | None = None
        for role, part in zip(_ROLES, (params, results, metadata)):
            for k, v in part.items():
                if k not in self._states and (new is None or k not in new):
                    check_name(k, f"{role} name")
                if k == _EXCEPTION and isinstance(v, BaseException):
                    # The result set stores exceptions as text (None, no exception, is a missing cell).
                    v = ""
                new = self._admit(role, k, v, new)
        if new:
            states = self._states
            for k, st in new.items():
                old = states.get(k)
                if old != st:
                    self.changes.append((k, old, st))
                states[k] = st
            self._version += 1

    def _admit(self, role: str, k: str, v: Any, new: dict[str, ColumnState] | None) -> dict[str, ColumnState] | None:
        """Fit ``v`` into column ``k``, noting a changed state in ``new`` (returned)."""
        old = (new or {}).get(k) or self._states.get(k)
        try:
            st = admit(old, v)
        except NotStorable as exc:
            raise UnstorableValueError(value_message(role, k, v, str(exc))) from None
        if st is not old:
            new = {} if new is None else new
            new[k] = st
        return new


class _Plan:
    """For one signature and the states of one version: what each value of a row still needs."""

    __slots__ = (
        "keys", "types", "type_list", "version", "texts", "text_keys", "passed_texts", "ranges", "others",
    )

    def __init__(self, keys: Keys, types: tuple[type, ...], version: int) -> None:
        self.keys, self.types, self.version = keys, types, version
        #: ``types`` as a list (the check compares a row's types as a list: making a tuple costs a copy).
        self.type_list = list(types)
        #: The texts of the last row whose texts passed the quick test (None: none yet with this plan).
        self.passed_texts: tuple[Any, ...] | None = None
        self.texts: Callable[[list[Any]], tuple[Any, ...]] | None = None
        self.text_keys: tuple[int, ...] = ()
        #: True if the row's ints and datetimes are in their ranges (None: the row has none to test).
        self.ranges: Callable[[list[Any]], Any] | None = None
        self.others: tuple[tuple[int, str], ...] = ()

    def texts_fit(self, values: list[Any]) -> bool:
        """True if no text of the row is refused (non-ASCII text is fine, NUL and lone surrogates are not)."""
        for pos in self.text_keys:
            try:
                _STR.state(values[pos])
            except NotStorable:
                return False
        return True


def _getter(positions: list[int]) -> Callable[[list[Any]], tuple[Any, ...]] | None:
    """A C-speed getter of the values at ``positions``, always a tuple (None if there are none)."""
    if not positions:
        return None
    if len(positions) == 1:
        # itemgetter of one position gives the value itself; twice, a tuple (the tests do not mind).
        return itemgetter(positions[0], positions[0])
    return itemgetter(*positions)


def _range_test(bounds: list[tuple[int, Any, Any]]) -> Callable[[list[Any]], Any] | None:
    """A test that ``low <= values[pos] <= high`` for each ``(pos, low, high)`` (None if there are none).

    Made once per plan as one expression of chained comparisons, as
    :func:`collections.namedtuple` makes its methods: run at every row, it
    costs a quarter of ``all(map(le, ...))`` over the same values (a C call
    per value and comparison, where an expression compares in the
    interpreter). Bounds are passed in, never written into the source.
    A datetime that cannot be compared (an aware one) raises TypeError.
    """
    if not bounds:
        return None
    names: dict[str, Any] = {}
    terms = []
    for i, (pos, low, high) in enumerate(bounds):
        names[f"lo{i}"], names[f"hi{i}"] = low, high
        terms.append(f"lo{i} <= v[{int(pos)}] <= hi{i}")
    # The bounds as the function's globals (read by LOAD_GLOBAL, specialized); no builtins reachable.
    return eval(f"lambda v: {' and '.join(terms)}", {"__builtins__": {}, **names})  # noqa: S307 (our own text)


def value_message(role: str, k: str, v: Any, why: str) -> str:
    """The error for value ``v`` of key ``k`` (a ``role``): the key, the value, its type, why, what to do."""
    text = repr(v)
    if len(text) > 60:
        text = text[:57] + "..."
    t = type(v)
    name = t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
    article = "an" if name[:1].lower() in "aeiou" else "a"
    return f"cannot store {role} {k!r} = {text} ({article} {name}): {why}"

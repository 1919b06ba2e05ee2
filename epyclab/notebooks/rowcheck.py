"""The check a result set runs on every row before it stores it.

It refuses a value no notebook format could keep exactly (see the table of
kinds, :mod:`epyclab.notebooks.kinds`) with an
:class:`~epyclab.errors.UnstorableValueError` that names the key, the value and
its type, so nothing is stored, in memory or on disk, that a commit would later
fail on; and it keeps each column's state (kind and dtype), widening it as
values come.

Lab adds a row in a few microseconds, so the check must cost less than that:
each part of a row (parameters, results, metadata) is reduced to a signature,
its keys and the types of its values, computed in C. A signature seen before
was already checked type by type, and a column's state only ever widens, so
only the values whose type alone does not say how they fit (Python ints, text,
datetimes, arrays, lists) are looked at again.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from operator import itemgetter
from typing import Any

import numpy as np

from epyclab.errors import UnstorableValueError
from epyclab.experiment import Experiment
from epyclab.notebooks.kinds import (
    INT64,
    INT64_MAX,
    INT64_MIN,
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
_US = _DATETIME.state(datetime(2000, 1, 1)).dtype


class RowCheck:
    """Checks rows against the states of a result set's columns, widening them as values come.

    ``states`` maps the columns already stored to their state. After each
    accepted row, :attr:`changes` lists ``(key, old, new)`` for the columns
    whose state changed (``old`` None for a new column).
    """

    def __init__(self, states: Mapping[str, ColumnState] | None = None) -> None:
        self.states: dict[str, ColumnState] = dict(states or {})
        self.changes: list[tuple[str, ColumnState | None, ColumnState]] = []
        # signature -> the keys whose values need a look: (text, Python ints, datetimes, other keys).
        self._seen: dict[Any, _Deep] = {}
        self._last: list[Any] = [None, None, None]
        # Changes whenever a column's state does: a signature's quick checks assume the states they saw.
        self._version = 0

    def __call__(self, params: Mapping[str, Any], results: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
        """Check one row; raise :class:`UnstorableValueError` (changing nothing) if it cannot be stored."""
        last = self._last
        new: dict[str, ColumnState] | None = None
        learned = None
        if self.changes:
            self.changes = []
        for i, part in enumerate((params, results, metadata)):
            keys, types = tuple(part), tuple(map(type, part.values()))
            # Rows of a sweep repeat the previous row's signature: compare with it (no hashing).
            previous = last[i]
            if previous is not None and keys == previous[0] and types == previous[1]:
                deep = previous[2]
            else:
                sig = (keys, types)
                deep = self._seen.get(sig)
                if deep is None:
                    # Every value of a new signature is checked here, in full.
                    new = self._learn(_ROLES[i], part, new)
                    # Remembered once the whole row is accepted.
                    learned = learned or []
                    learned.append((sig, _Deep(part)))
                    continue
                last[i] = (keys, types, deep)
            if deep.empty:
                continue
            # The common values pass quick tests, a few C calls for the whole part;
            # only when one fails does each value get the full check.
            if deep.verified != self._version:
                if not deep.verify(self.states):
                    new = self._check_each(_ROLES[i], part, deep.all_keys + deep.others, new)
                    continue
                deep.verified = self._version
            if deep.texts is not None:
                text = deep.texts(part)
                text = text if type(text) is str else "".join(text)
                if not text.isascii() or "\x00" in text:
                    new = self._check_each(_ROLES[i], part, deep.text_keys, new)
            if deep.ints is not None:
                ints = deep.ints(part)
                if type(ints) is not tuple:
                    ints = (ints,)
                if not (INT64_MIN <= min(ints) and max(ints) <= INT64_MAX):
                    new = self._check_each(_ROLES[i], part, deep.int_keys, new)
            if deep.times is not None:
                times = deep.times(part)
                if type(times) is not tuple:
                    times = (times,)
                try:
                    # Aware datetimes do not compare with naive ones: they take the full check.
                    fits = NS_MIN <= min(times) and max(times) <= NS_MAX
                except TypeError:
                    fits = False
                if not fits or not deep.plain_times:
                    new = self._check_each(_ROLES[i], part, deep.time_keys, new)
            for k in deep.others:
                new = self._admit(_ROLES[i], k, part[k], new)
        if learned:
            for sig, deep in learned:
                self._seen[sig] = deep
        if new:
            states = self.states
            for k, st in new.items():
                old = states.get(k)
                if old != st:
                    self.changes.append((k, old, st))
                states[k] = st
            self._version += 1

    def _check_each(
        self, role: str, part: Mapping[str, Any], keys: tuple[str, ...], new: dict[str, ColumnState] | None
    ) -> dict[str, ColumnState] | None:
        for k in keys:
            new = self._admit(role, k, part[k], new)
        return new

    def _admit(self, role: str, k: str, v: Any, new: dict[str, ColumnState] | None) -> dict[str, ColumnState] | None:
        """Fit ``v`` into column ``k``, noting a changed state in ``new`` (returned)."""
        old = (new or {}).get(k) or self.states.get(k)
        try:
            st = admit(old, v)
        except NotStorable as exc:
            raise UnstorableValueError(value_message(role, k, v, str(exc))) from None
        if st is not old:
            new = {} if new is None else new
            new[k] = st
        return new

    def _learn(
        self, role: str, part: Mapping[str, Any], new: dict[str, ColumnState] | None
    ) -> dict[str, ColumnState] | None:
        """Check every value of a signature not seen before."""
        for k, v in part.items():
            if k not in self.states and (new is None or k not in new):
                check_name(k, f"{role} name")
            if k == Experiment.EXCEPTION and (v is None or isinstance(v, BaseException)):
                # The result set stores exceptions (and their absence) as text.
                v = ""
            new = self._admit(role, k, v, new)
        return new


class _Deep:
    """For one signature: the keys whose values need a look each time, and getters for them (C speed)."""

    def __init__(self, part: Mapping[str, Any]) -> None:
        texts, ints, times, others = [], [], [], []
        plain_times = True
        for k, v in part.items():
            t = type(v)
            kind = kind_of_type(t)
            if kind is None or not kind.checks_values:
                continue
            if k == Experiment.EXCEPTION and (v is None or isinstance(v, BaseException)):
                continue
            if kind is _STR:
                texts.append(k)
            elif kind is _INT:
                if not issubclass(t, np.integer):
                    ints.append(k)
            elif kind is _DATETIME:
                times.append(k)
                # Only a pandas.Timestamp can have nanoseconds.
                plain_times = plain_times and t is datetime
            else:
                others.append(k)
        self.text_keys, self.int_keys, self.time_keys = tuple(texts), tuple(ints), tuple(times)
        self.others = tuple(others)
        self.all_keys = self.text_keys + self.int_keys + self.time_keys
        self.plain_times = plain_times
        self.texts = itemgetter(*texts) if texts else None
        self.ints = itemgetter(*ints) if ints else None
        self.times = itemgetter(*times) if times else None
        self.empty = not (texts or ints or times or others)
        self.verified = -1

    def verify(self, states: Mapping[str, ColumnState]) -> bool:
        """True if the quick checks hold for ``states``: int columns are int64, datetime columns us within ns range."""
        return all(states[k].dtype is INT64 for k in self.int_keys) and all(
            states[k].dtype is _US and states[k].fits_ns for k in self.time_keys
        )


def value_message(role: str, k: str, v: Any, why: str) -> str:
    """The error for value ``v`` of key ``k`` (a ``role``): the key, the value, its type, why, what to do."""
    text = repr(v)
    if len(text) > 60:
        text = text[:57] + "..."
    t = type(v)
    name = t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
    article = "an" if name[:1].lower() in "aeiou" else "a"
    return f"cannot store {role} {k!r} = {text} ({article} {name}): {why}"

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
from typing import Any

import numpy as np

from epyclab.errors import UnstorableValueError
from epyclab.experiment import Experiment
from epyclab.notebooks.kinds import (
    INT64,
    INT64_MAX,
    INT64_MIN,
    KINDS,
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
        self._seen: dict[Any, tuple[Any, ...]] = {}
        self._last: list[Any] = [None, None, None]

    def __call__(self, params: Mapping[str, Any], results: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
        """Check one row; raise :class:`UnstorableValueError` (changing nothing) if it cannot be stored."""
        last = self._last
        states = self.states
        new: dict[str, ColumnState] | None = None
        learned = []
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
                    learned.append((sig, _deep(part)))
                    continue
                last[i] = (keys, types, deep)
            texts, ints, times, others = deep
            # The common values pass quick tests; only the others get the full check.
            for k in texts:
                v = part[k]
                if not v.isascii() or "\x00" in v:
                    new = self._admit(_ROLES[i], k, v, new)
            for k in ints:
                v = part[k]
                if not (states[k].dtype is INT64 and INT64_MIN <= v <= INT64_MAX):
                    new = self._admit(_ROLES[i], k, v, new)
            for k in times:
                v = part[k]
                st = states[k]
                if v.tzinfo is not None or _DATETIME.admit(st, v) is not st:
                    new = self._admit(_ROLES[i], k, v, new)
            for k in others:
                new = self._admit(_ROLES[i], k, part[k], new)
        for sig, deep in learned:
            self._seen[sig] = deep
        if new:
            for k, st in new.items():
                old = states.get(k)
                if old != st:
                    self.changes.append((k, old, st))
                states[k] = st

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

    def signature_kinds(self) -> dict[str, str]:
        """Each column's kind name."""
        return {k: st.kind.name for k, st in self.states.items()}


def _deep(part: Mapping[str, Any]) -> tuple[Any, ...]:
    """The keys of a part whose values need a look each time: by kind."""
    texts, ints, times, others = [], [], [], []
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
        else:
            others.append(k)
    return tuple(texts), tuple(ints), tuple(times), tuple(others)


def value_message(role: str, k: str, v: Any, why: str) -> str:
    """The error for value ``v`` of key ``k`` (a ``role``): the key, the value, its type, why, what to do."""
    text = repr(v)
    if len(text) > 60:
        text = text[:57] + "..."
    t = type(v)
    name = t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
    article = "an" if name[:1].lower() in "aeiou" else "a"
    return f"cannot store {role} {k!r} = {text} ({article} {name}): {why}"

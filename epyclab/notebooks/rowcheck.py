"""The check a persistent notebook runs on every row before its result set stores it.

It refuses a value the notebook could not write (see :mod:`epyclab.notebooks.types`)
with an :class:`~epyclab.errors.UnstorableValueError` that names the key and the
type, so nothing is stored, in memory or on disk, that a commit would later
fail on.

Lab adds a row in a few microseconds, so the check must cost less than that:
each part of a row (parameters, results, metadata) is reduced to a signature,
its keys and the types of its values, computed in C. A signature seen before
was already checked type by type; only the values whose type alone does not
say they can be stored (ints beyond 64 bits, text, arrays, lists, datetimes)
are looked at again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from epyclab.errors import UnstorableValueError
from epyclab.experiment import Experiment
from epyclab.notebooks.types import (
    INT64_MAX,
    INT64_MIN,
    kind_of_type,
    merge_kinds,
    needs_value_check,
    value_problem,
)

__all__ = ["RowCheck"]

_ROLES = ("parameter", "result", "metadata")
_STORABLE = (
    "a notebook stores str, int, float, complex, bool, datetime, numeric numpy arrays "
    "and lists of numbers"
)


class RowCheck:
    """Checks rows against the kinds of a result set's columns, learning new columns' kinds.

    ``kinds`` maps the columns already stored to their kind.
    """

    def __init__(self, kinds: Mapping[str, str] | None = None) -> None:
        self.kinds: dict[str, str] = dict(kinds or {})
        # signature -> the keys whose values need a look: text, Python ints, datetimes, (key, kind) of the rest.
        self._seen: dict[Any, tuple[Any, ...]] = {}
        self._last: list[Any] = [None, None, None]

    def __call__(self, params: Mapping[str, Any], results: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
        last = self._last
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
                    deep = self._learn(_ROLES[i], part, sig)
                last[i] = (keys, types, deep)
            texts, ints, times, others = deep
            # The common values pass quick tests; only the others get the full check.
            for k in texts:
                v = part[k]
                if not v.isascii() or "\x00" in v:
                    _refuse_if_unstorable(_ROLES[i], k, v, "str")
            for k in ints:
                v = part[k]
                if not INT64_MIN <= v <= INT64_MAX:
                    _refuse_if_unstorable(_ROLES[i], k, v, "int")
            for k in times:
                if part[k].tzinfo is not None:
                    _refuse_if_unstorable(_ROLES[i], k, part[k], "datetime")
            for k, kind in others:
                _refuse_if_unstorable(_ROLES[i], k, part[k], kind)

    def _learn(self, role: str, part: Mapping[str, Any], sig: Any) -> tuple[Any, ...]:
        """Check a signature not seen before, type by type, and remember it."""
        kinds = dict(self.kinds)
        deep = []
        for k, v in part.items():
            t = type(v)
            if k == Experiment.EXCEPTION and (v is None or isinstance(v, BaseException)):
                # The result set stores exceptions (and their absence) as text.
                kind, check = "str", False
            else:
                kind = kind_of_type(t)
                if kind is None:
                    raise UnstorableValueError(_message(role, k, v, _STORABLE + _hint(v)))
                check = needs_value_check(t, kind)
            merged = merge_kinds(kinds.get(k), kind)
            if merged is None:
                raise UnstorableValueError(
                    _message(
                        role,
                        k,
                        v,
                        f"column {k!r} holds {kinds[k]} values and a column keeps one kind "
                        f"(ints may widen to floats and complex numbers); convert the value, "
                        f"or use another key for {kind} values",
                    )
                )
            kinds[k] = merged
            if check:
                deep.append((k, kind))
            _refuse_if_unstorable(role, k, v, kind if check else "")
        self.kinds = kinds
        texts = tuple(k for k, kind in deep if kind == "str")
        ints = tuple(k for k, kind in deep if kind == "int")
        times = tuple(k for k, kind in deep if kind == "datetime")
        others = tuple((k, kind) for k, kind in deep if kind not in ("str", "int", "datetime"))
        self._seen[sig] = (texts, ints, times, others)
        return self._seen[sig]


def _refuse_if_unstorable(role: str, k: str, v: Any, kind: str) -> None:
    if not kind:
        return
    why = value_problem(v, kind)
    if why is not None:
        raise UnstorableValueError(_message(role, k, v, why))


def _hint(v: Any) -> str:
    if v is None:
        return (
            "; None cannot be stored: leave the key out of the results dict (its cell then "
            "reads as the column's missing value) or use float('nan')"
        )
    if isinstance(v, dict):
        return "; store each entry under a key of its own"
    return ""


def _message(role: str, k: str, v: Any, why: str) -> str:
    text = repr(v)
    if len(text) > 60:
        text = text[:57] + "..."
    t = type(v)
    name = t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
    article = "an" if name[:1].lower() in "aeiou" else "a"
    return f"cannot store {role} {k!r} = {text} ({article} {name}): {why}"

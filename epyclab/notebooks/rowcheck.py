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
from epyclab.notebooks.types import kind_of_type, merge_kinds, needs_value_check, value_problem

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
        # signature -> the keys (with their kind) whose values need a look.
        self._seen: dict[tuple[tuple[str, ...], tuple[type, ...]], tuple[tuple[str, str], ...]] = {}

    def __call__(self, params: Mapping[str, Any], results: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
        seen = self._seen
        for role, part in zip(_ROLES, (params, results, metadata)):
            sig = (tuple(part), tuple(map(type, part.values())))
            deep = seen.get(sig)
            if deep is None:
                deep = self._learn(role, part, sig)
            for k, kind in deep:
                v = part[k]
                if value_problem(v, kind) is not None:
                    raise UnstorableValueError(_message(role, k, v, value_problem(v, kind)))

    def _learn(self, role: str, part: Mapping[str, Any], sig: Any) -> tuple[tuple[str, str], ...]:
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
        self.kinds = kinds
        self._seen[sig] = tuple(deep)
        return self._seen[sig]


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

"""A result set's own state apart from its rows: description, user attributes, lock.

A counter changes at every change, so a persistent notebook can tell cheaply
whether the state needs saving. Attribute values keep their type (an int stays
an int; epyc 1.7 turned them into strings: see docs/migrating.md). Whether a
change is allowed (locks, read-only notebooks) is the
:class:`~epyclab.notebooks.resultset.ResultSet`'s question, asked before it
changes anything here.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

__all__ = ["SetAttributes"]


class SetAttributes:
    """The description, user attributes and lock of one result set."""

    def __init__(self, description: str | None = None) -> None:
        if description is None:
            description = f"Result set created at {datetime.now().isoformat(timespec='seconds')}"
        self._description = description
        self._attributes: dict[str, Any] = {}
        self._locked = False
        self._version = 0

    def description(self) -> str:
        """The free-text description."""
        return self._description

    def setDescription(self, d: str) -> None:
        """Change the description."""
        self._description = d
        self._version += 1

    def set(self, k: str, v: Any) -> None:
        """Set attribute ``k`` to ``v``.

        Raises:
            TypeError: ``k`` is not a string.
        """
        if not isinstance(k, str):
            raise TypeError(f"result set attribute names are strings, got {k!r}")
        self._attributes[k] = v
        self._version += 1

    def get(self, k: str) -> Any:
        """Attribute ``k``.

        Raises:
            KeyError: there is no attribute ``k``.
        """
        return self._attributes[k]

    def delete(self, k: str) -> None:
        """Remove attribute ``k``.

        Raises:
            KeyError: there is no attribute ``k``.
        """
        del self._attributes[k]
        self._version += 1

    def __contains__(self, k: object) -> bool:
        return k in self._attributes

    def names(self) -> list[str]:
        """The attribute names, in the order they were set."""
        return list(self._attributes)

    def copy(self) -> dict[str, Any]:
        """A copy of the attributes."""
        return dict(self._attributes)

    def lock(self) -> None:
        """Mark the set finished."""
        self._locked = True
        self._version += 1

    def isLocked(self) -> bool:
        """True once :meth:`lock` was called (or a file recorded the set as finished)."""
        return self._locked

    def version(self) -> int:
        """A counter that changes at every change."""
        return self._version

    def restore(self, description: str, locked: bool, attributes: Mapping[str, Any]) -> None:
        """Set what a file recorded (description, lock, attributes), unchecked; the counter is kept."""
        self._description, self._locked = description, locked
        self._attributes = dict(attributes)

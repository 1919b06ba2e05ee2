"""Pipes whose write end only this process may hold: closed in every child forked from it.

A helper process (the local cluster's reaper, its fork server) learns that its
owner died when the pipe the owner writes to closes. A child forked from the
owner (a forked copy running points, a multiprocessing worker) would keep a
copy of that write end open, and the helper would wait for ever: so each such
pipe is registered here, and an ``at fork`` hook closes every registered one
in the child.
"""

from __future__ import annotations

import os
import weakref
from typing import IO, Any

__all__ = ["keep_from_children", "release"]

_pipes: weakref.WeakSet[IO[Any]] = weakref.WeakSet()


def keep_from_children(pipe: IO[Any]) -> None:
    """Close ``pipe`` in every child forked from this process from now on."""
    _pipes.add(pipe)


def release(pipe: IO[Any]) -> None:
    """Stop closing ``pipe`` in forked children (its owner is closing it)."""
    _pipes.discard(pipe)


def _close_in_child() -> None:
    for pipe in list(_pipes):
        try:
            os.close(pipe.fileno())
        except (OSError, ValueError):
            continue  # closed already


os.register_at_fork(after_in_child=_close_in_child)

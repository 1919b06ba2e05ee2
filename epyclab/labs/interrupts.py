"""Ctrl-C during a sweep: taken between points, never halfway through storing one, and told in one line.

A sweep's loop (:meth:`epyclab.labs.lab.Lab.runExperiment`) spends its time in
two kinds of places: waiting for the next point (running it, in a sequential
lab, or waiting for an engine's reply) and storing what came back (adding a
row, committing). Ctrl-C must stop the first at once, but a
``KeyboardInterrupt`` raised halfway through adding a row or writing a commit
could leave the notebook's buffers or files half-changed. :class:`CtrlCGate`
therefore lets SIGINT through while the gate is open and holds it while the
gate is closed, raising it the moment the gate opens again.

When the interrupt has stopped the sweep (its finished results committed, its
processes stopped), :func:`interruptedNote` makes the one line the user reads:
how many points are saved in which file, and how to go on. :func:`oneLineOnCtrlC`
does the same for a lab's ``wait()``, which collects results submitted earlier.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeVar

from epyclab.log import logger

_Wait = TypeVar("_Wait", bound=Callable[..., Any])

__all__ = ["CtrlCGate", "SweepTally", "interruptedNote", "oneLineOnCtrlC"]


class CtrlCGate:
    """Holds SIGINT while closed; open, Ctrl-C raises ``KeyboardInterrupt`` (or runs the handler in force) at once.

    A context manager for one sweep. It changes nothing for a sweep run
    outside the main thread (Python runs signal handlers in the main thread
    only), nor when SIGINT is ignored or left to the system's default action:
    only a Python-level handler (Python's own, which raises
    ``KeyboardInterrupt``, or the user's) is wrapped, and it is put back when
    the sweep ends. It starts closed.
    """

    def __init__(self) -> None:
        self._previous: Any = None
        self._installed = False
        self._holding = True
        self._pending: tuple[int, FrameType | None] | None = None

    def __enter__(self) -> "CtrlCGate":
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if callable(previous):
                self._previous = previous
                signal.signal(signal.SIGINT, self._received)
                self._installed = True
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False

    def _received(self, signum: int, frame: FrameType | None) -> None:
        if self._holding:
            self._pending = (signum, frame)
            return
        self._previous(signum, frame)

    def open(self) -> None:
        """Let Ctrl-C through from now on; one that came while closed acts now."""
        self._holding = False
        pending, self._pending = self._pending, None
        if pending is not None:
            self._previous(*pending)

    def close(self) -> None:
        """Hold Ctrl-C from now on, until :meth:`open`."""
        self._holding = True

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold Ctrl-C during the block, then leave the gate as it was (acting on one that came, if it was open)."""
        was_holding = self._holding
        self._holding = True
        try:
            yield
        except BaseException:
            # The block's own error goes first; a Ctrl-C that came meanwhile acts at the next open().
            self._holding = was_holding
            raise
        if not was_holding:
            self.open()


@dataclass
class SweepTally:
    """What a sweep has done so far: ``points`` of ``total`` run (or submitted), and whether a commit failed."""

    total: int = 0
    points: int = 0
    notebook: str = ""
    persistent: bool = False
    tag: str | None = None
    commit_failed: bool = False


def _place(notebook: str, persistent: bool) -> str:
    """The notebook as the line names it: its file's absolute path, or where an in-memory one lives."""
    return os.path.abspath(notebook) if persistent else "this lab's in-memory notebook (in no file)"


def _where(tally: SweepTally, default_tag: str) -> str:
    where = _place(tally.notebook, tally.persistent)
    if tally.tag is not None and tally.tag != default_tag:
        where += f", result set {tally.tag!r}"
    return where


def _collect_hint(persistent: bool) -> str:
    # Only a notebook in a file can be collected into by another process.
    return "wait() or updateResults() collects them" + (", here or in a later process" if persistent else "")


def interruptedNote(tally: SweepTally, submits: bool, default_tag: str) -> str:
    """The one line that says what a sweep stopped by Ctrl-C left, and how to go on.

    ``submits``: the lab submits points to be collected later (ClusterLab),
    rather than running them.
    """
    if not tally.total:
        return f"Ctrl-C: the sweep stopped before any point ran; nothing was added to {_where(tally, default_tag)}"
    others = tally.total - tally.points
    if submits:
        head = f"Ctrl-C: {tally.points:,} of {tally.total:,} points submitted"
        if tally.commit_failed:
            kept = f"but could not be recorded as pending in {_where(tally, default_tag)} (see the error above)"
        else:
            kept = f"recorded as pending in {_where(tally, default_tag)}"
        then = _collect_hint(tally.persistent)
        if others:
            then += f"; submit the other {others:,} with runExperiment(e, resume=True)"
        return f"{head}, {kept}; {then}"
    head = f"Ctrl-C: {tally.points:,} of {tally.total:,} points done"
    if tally.commit_failed:
        kept = f"but their results could not be saved in {_where(tally, default_tag)} (see the error above)"
    else:
        kept = f"{'saved' if tally.persistent else 'kept'} in {_where(tally, default_tag)}"
    then = f"run the other {others:,} with runExperiment(e, resume=True)" if others else "none is left to run"
    return f"{head}, {kept}; {then}"


def oneLineOnCtrlC(method: _Wait) -> _Wait:
    """Make a lab's ``wait()`` end in one line on Ctrl-C: how many results it collected, where, and what is left.

    The wrapped method commits what it collected however it ends (as
    ``ClusterLab.wait`` does); this says so in the ``KeyboardInterrupt``'s
    message, whose traceback then ends at the user's call.
    """

    # Named as the method it wraps: the traceback the user sees names this frame.
    @functools.wraps(method)
    def wait(lab: Any, *args: Any, **kwargs: Any) -> Any:
        nb = lab.notebook()
        before = nb.numberOfAllPendingResults()
        try:
            return method(lab, *args, **kwargs)
        except KeyboardInterrupt:
            left = nb.numberOfAllPendingResults()
            persistent = nb.isPersistent()
            note = (f"Ctrl-C: stopped waiting; {before - left:,} of {before:,} pending results collected, "
                    f"{'saved' if persistent else 'kept'} in {_place(nb.name(), persistent)}; the other {left:,} "
                    f"stay pending: {_collect_hint(persistent)}")
            logger.info("%s", note)
            # Ctrl-C: what was collected is saved; the message says where and what next.
            raise KeyboardInterrupt(note) from None

    return wait  # type: ignore[return-value]

"""The Ctrl-C gate and the one line: real SIGINTs sent to this process, at the worst moments of a sweep.

:class:`~epyclab.labs.interrupts.CtrlCGate` lets SIGINT through while a point
runs and holds it while a result is stored or a commit written; these tests
send real signals (``os.kill``) at those moments and check that the row or the
commit is complete, that the interrupt then stops the sweep, and that the
user's own SIGINT handling (ignored, or a handler of theirs) is respected and
put back. :func:`~epyclab.labs.interrupts.interruptedNote` is checked over
every shape of tally.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from epyclab.experiment import Experiment
from epyclab.labs.interrupts import CtrlCGate, SweepTally, interruptedNote
from epyclab.labs.lab import Lab
from epyclab.notebooks.hdf5 import HDF5LabNotebook
from epyclab.notebooks.labnotebook import LabNotebook

DEFAULT = LabNotebook.DEFAULT_RESULTSET


def ctrl_c() -> None:
    """A real SIGINT to this process, as the terminal sends on Ctrl-C (handled before os.kill returns)."""
    os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture(autouse=True)
def python_handles_sigint() -> Iterator[None]:
    """Each test starts with Python's own SIGINT handler and must leave it in place."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "the gate did not put the handler back"
    signal.signal(signal.SIGINT, before)


# ---- the gate --------------------------------------------------------------------------------------


def test_closed_the_gate_holds_ctrl_c_and_open_it_raises_at_once() -> None:
    with CtrlCGate() as gate:
        ctrl_c()  # closed at first: held
        with pytest.raises(KeyboardInterrupt):
            gate.open()
        ctrl_c_raised = False
        try:
            ctrl_c()  # open: raised on the spot
        except KeyboardInterrupt:
            ctrl_c_raised = True
        assert ctrl_c_raised
        gate.close()
        gate.open()  # nothing came while closed: nothing raised


def test_a_ctrl_c_while_held_acts_once_the_block_ends_and_a_failing_block_keeps_its_own_error() -> None:
    with CtrlCGate() as gate:
        gate.open()
        steps = []
        with pytest.raises(KeyboardInterrupt):
            with gate.held():
                ctrl_c()
                steps.append("the block ran to its end")
        assert steps == ["the block ran to its end"]
        with pytest.raises(OSError, match="disk full"):
            with gate.held():
                ctrl_c()
                raise OSError("disk full")
        with pytest.raises(KeyboardInterrupt):  # the Ctrl-C that came in the failing block is not dropped
            gate.open()


def test_a_users_handler_is_called_and_an_ignored_sigint_stays_ignored() -> None:
    seen: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    try:
        with CtrlCGate() as gate:
            ctrl_c()
            assert seen == []
            gate.open()
            assert seen == [signal.SIGINT]
            ctrl_c()
            assert seen == [signal.SIGINT, signal.SIGINT]
        assert signal.getsignal(signal.SIGINT) not in (signal.default_int_handler, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with CtrlCGate() as gate:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            gate.open()
            ctrl_c()  # ignored, as the user (or nohup) asked
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def test_outside_the_main_thread_the_gate_changes_nothing() -> None:
    handlers: list[Any] = []

    def sweep_thread() -> None:
        with CtrlCGate() as gate:
            gate.open()
            handlers.append(signal.getsignal(signal.SIGINT))

    t = threading.Thread(target=sweep_thread)
    t.start()
    t.join()
    assert handlers == [signal.default_int_handler]


# ---- in a sweep ------------------------------------------------------------------------------------


class Square(Experiment):
    def do(self, params: dict) -> dict:
        return {"y": params["x"] ** 2}


class InterruptedWhileStoring(HDF5LabNotebook):
    """Sends a real SIGINT in the middle of adding the ``at``-th row, or of the first commit after it."""

    def __init__(self, path: str, at: int, during: str) -> None:
        super().__init__(path, create=True)
        self.at, self.during = at, during

    def addResult(self, rc: Any, tag: str | None = None) -> None:
        if self.during == "add" and self.numberOfResults() == self.at - 1:
            ctrl_c()  # before the row is in: without the gate, it would be lost
        super().addResult(rc, tag)

    def commit(self) -> None:
        if self.during == "commit" and self.numberOfResults() >= self.at:
            self.during = "done"
            ctrl_c()  # before the commit is written
        super().commit()


@pytest.mark.parametrize("during", ["add", "commit"])
def test_a_ctrl_c_while_a_row_is_stored_or_committed_stops_the_sweep_after_it(tmp_path: Path, during: str) -> None:
    path = tmp_path / "nb.h5"
    nb = InterruptedWhileStoring(str(path), at=4, during=during)
    lab = Lab(nb, commitEvery=2)
    lab["x"] = range(10)
    with pytest.raises(KeyboardInterrupt) as raised:
        lab.runExperiment(Square(), progress=False)
    done = nb.numberOfResults()
    assert done == 4  # the row being stored when Ctrl-C came is in, and no later point ran
    assert str(raised.value) == (f"Ctrl-C: 4 of 10 points done, saved in {path}; "
                                 f"run the other 6 with runExperiment(e, resume=True)")
    assert raised.value.__suppress_context__  # the internals' traceback is not chained on
    nb.close()
    reread = HDF5LabNotebook(str(path), readonly=True)
    try:
        assert sorted(reread.dataframe()["y"]) == [0, 1, 4, 9]
    finally:
        reread.close()


def test_resuming_after_ctrl_c_as_the_line_says_finishes_the_sweep(tmp_path: Path) -> None:
    path = tmp_path / "nb.h5"
    nb = InterruptedWhileStoring(str(path), at=3, during="add")
    lab = Lab(nb)
    lab["x"] = range(7)
    with pytest.raises(KeyboardInterrupt, match="run the other 4 with"):
        lab.runExperiment(Square(), progress=False)
    nb.during = "never"
    lab.runExperiment(Square(), resume=True, progress=False)
    assert sorted(nb.dataframe()["x"]) == list(range(7))
    nb.close()


def test_an_in_memory_notebook_is_said_to_be_in_no_file_and_a_named_set_is_named() -> None:
    class Interrupting(LabNotebook):
        def addResult(self, rc: Any, tag: str | None = None) -> None:
            super().addResult(rc, tag)
            if self.numberOfResults() == 2:
                ctrl_c()

    nb = Interrupting()
    nb.addResultSet("first try")
    lab = Lab(nb)
    lab["x"] = range(5)
    with pytest.raises(KeyboardInterrupt) as raised:
        lab.runExperiment(Square(), progress=False)
    assert str(raised.value) == ("Ctrl-C: 2 of 5 points done, kept in this lab's in-memory notebook (in no file), "
                                 "result set 'first try'; run the other 3 with runExperiment(e, resume=True)")


# ---- the line ----------------------------------------------------------------------------------------

tallies = st.builds(
    lambda total, share, persistent, tag, failed: SweepTally(
        total=total, points=int(total * share), notebook="results/nb.h5" if persistent else "",
        persistent=persistent, tag=tag, commit_failed=failed),
    st.integers(0, 10**7), st.floats(0, 1), st.booleans(), st.sampled_from([DEFAULT, "second", None]), st.booleans())


@given(tally=tallies, submits=st.booleans())
def test_the_line_says_how_many_where_and_what_next(tally: SweepTally, submits: bool) -> None:
    note = interruptedNote(tally, submits, DEFAULT)
    assert "\n" not in note and note.startswith("Ctrl-C: ")
    where = os.path.abspath("results/nb.h5") if tally.persistent else "in-memory notebook (in no file)"
    assert where in note
    assert ("result set 'second'" in note) is (tally.tag == "second")
    if not tally.total:
        assert "before any point ran; nothing was added" in note
        return
    numbers = [int(n.replace(",", "")) for n in re.findall(r"\d[\d,]*", note.replace(where, ""))]
    others = tally.total - tally.points
    assert numbers[:2] == [tally.points, tally.total]
    assert ("runExperiment(e, resume=True)" in note) is (others > 0)
    if others:
        assert numbers[2] == others
    assert ("could not be" in note) is tally.commit_failed
    assert ("wait() or updateResults() collects them" in note) is submits
    assert ("in a later process" in note) is (submits and tally.persistent)

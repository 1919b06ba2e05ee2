"""A notebook closed by close() or a ``with`` block: a lab's sweep opens it again (epyc 1.7 reopened its file at
every commit, so ``with nb.open(): lab.runExperiment(e)`` followed later by ``lab.runExperiment(e)`` kept both
sweeps), and any other change is refused at once, before anything is run or changed, never at the next commit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from epyclab import (
    Experiment,
    HDF5LabNotebook,
    JSONLabNotebook,
    Lab,
    NotebookClosedError,
    NotebookReadOnlyError,
    ParallelLab,
)

FORMATS = {"hdf5": (HDF5LabNotebook, ".h5"), "json": (JSONLabNotebook, ".json")}
POINTS = 3


class Count(Experiment):
    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"y": params["x"] + 1}


def rows_in_file(cls: type, path: Path) -> int:
    nb = cls(str(path), readonly=True)
    try:
        return sum(nb.resultSet(tag).numberOfResults() for tag in nb.resultSets())
    finally:
        nb.close()


# A user's session: sweeps run in and out of `with` blocks, with explicit opens and closes between them.
STEPS = st.lists(st.sampled_from(["sweep", "with-sweep", "close", "open", "with"]), min_size=1, max_size=8)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@settings(max_examples=25)
@given(steps=STEPS)
def test_every_sweep_is_kept_whatever_the_notebook_was_opened_and_closed_around_it(
    tmp_path_factory: pytest.TempPathFactory, fmt: str, steps: list[str]
) -> None:
    cls, suffix = FORMATS[fmt]
    path = tmp_path_factory.mktemp("closed") / f"nb{suffix}"
    nb = cls(str(path), create=True)
    lab = Lab(nb)
    lab["x"] = range(POINTS)
    sweeps = 0
    for step in steps:
        if step == "sweep":
            lab.runExperiment(Count())
            sweeps += 1
        elif step == "with-sweep":
            with nb.open():
                lab.runExperiment(Count())
            sweeps += 1
            assert not nb.isOpen()  # the block's end closes it, as the user asked
        elif step == "close":
            nb.close()
        elif step == "open":
            nb.open()
        else:
            with nb:
                pass
    # What the user sees in memory, and what the file holds once closed, are every sweep's rows.
    assert nb.numberOfResults() == sweeps * POINTS
    nb.close()
    assert rows_in_file(cls, path) == sweeps * POINTS


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_a_change_to_a_closed_notebook_is_refused_at_once_and_changes_nothing(tmp_path: Path, fmt: str) -> None:
    cls, suffix = FORMATS[fmt]
    path = tmp_path / f"nb{suffix}"
    with cls(str(path), create=True) as nb:
        nb.addResult(Count().set({"x": 1}).run())
    assert not nb.isOpen()
    before = nb.numberOfResults()
    rc = Count().set({"x": 2}).run()
    with pytest.raises(NotebookClosedError, match=r"is closed and cannot change; call open\(\)") as raised:
        nb.addResult(rc)
    assert str(path) in str(raised.value)
    assert isinstance(raised.value, NotebookReadOnlyError)  # code catching the older class still catches it
    with pytest.raises(NotebookClosedError):
        nb.addResultSet("another")
    assert nb.numberOfResults() == before and "another" not in nb.resultSets()
    # open() reads what the file holds: the committed row, and nothing refused.
    nb.open()
    assert nb.numberOfResults() == before == 1
    nb.addResult(rc)
    nb.close()
    assert rows_in_file(cls, path) == 2


def test_a_read_only_notebook_is_not_reopened_for_writing_by_a_sweep(tmp_path: Path) -> None:
    path = tmp_path / "nb.h5"
    HDF5LabNotebook(str(path), create=True).close()
    nb = HDF5LabNotebook(str(path), readonly=True)
    lab = Lab(nb)
    lab["x"] = range(POINTS)
    ran: list[int] = []

    class Spy(Experiment):
        def do(self, params: dict[str, Any]) -> dict[str, Any]:
            ran.append(params["x"])
            return {}

    with pytest.raises(NotebookReadOnlyError, match="read-only"):
        lab.runExperiment(Spy())
    assert ran == []  # refused before any point ran
    nb.close()


def test_a_parallel_sweep_after_a_with_block_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "nb.h5"
    nb = HDF5LabNotebook(str(path), create=True)
    lab = ParallelLab(nb)
    lab["x"] = range(POINTS)
    with nb.open():
        lab.runExperiment(Count())
    lab.runExperiment(Count())
    nb.close()
    assert rows_in_file(HDF5LabNotebook, path) == 2 * POINTS

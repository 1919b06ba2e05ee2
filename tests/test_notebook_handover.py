"""A second notebook object for the same file in one process takes the file over; epyc's notebook idioms work."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
from notebook_cases import results_dict

from epyclab import (
    CancelledException,
    HDF5LabNotebook,
    JSONLabNotebook,
    Lab,
    LabNotebook,
    NotebookInUseError,
    NotebookTakenOverError,
)
from epyclab.experiment import Experiment

FORMATS = [HDF5LabNotebook, JSONLabNotebook]


@pytest.mark.parametrize("cls", FORMATS)
def test_a_second_object_takes_the_file_over_and_loses_nothing(cls, tmp_path, caplog):
    path = tmp_path / "study"
    first = cls(path, create=True)
    first.addResult(results_dict(0, y=1.0))
    first.commit()
    first.addResult(results_dict(1, y=2.0))  # not committed: the hand-over commits it
    with caplog.at_level(logging.WARNING, logger="epyclab"):
        second = cls(path)
    assert second.numberOfResults() == 2
    assert [r["results"]["y"] for r in second.results()] == [1.0, 2.0]
    assert "takes the file over" in caplog.text and str(path) in caplog.text
    assert not first.isOpen()
    # The old object refuses every change, naming where the new holder was opened.
    with pytest.raises(NotebookTakenOverError, match=r"test_notebook_handover\.py:\d+") as err:
        first.addResult(results_dict(2, y=3.0))
    assert "open() on this one" in str(err.value)
    first.commit()  # nothing changed through it since the take-over: nothing to do (as in epyc)
    assert not first.isOpen() and first.numberOfResults() == 2
    second.addResult(results_dict(2, y=3.0))
    second.close()
    assert cls(path, readonly=True).numberOfResults() == 3


def test_a_re_run_cell_pattern_keeps_every_sweep(tmp_path):
    # The same cell run three times: each run opens the notebook again and adds a sweep.
    path = tmp_path / "study.h5"
    objects = []
    for run in range(3):
        nb = HDF5LabNotebook(path)
        nb.addResult(results_dict(run, y=float(run)))
        nb.commit()
        objects.append(nb)
    assert [o.isOpen() for o in objects] == [False, False, True]
    objects[-1].close()
    assert HDF5LabNotebook(path, readonly=True).numberOfResults() == 3


class Square(Experiment):
    def do(self, params):
        return {"y": params["x"] ** 2}


def test_epyc_createWith_then_already_on_a_second_object(tmp_path):
    # epyc's "avoid repeated computation" pattern: the second object finds the set and does not recompute.
    path = tmp_path / "study.h5"
    lab = Lab(HDF5LabNotebook(path, create=True))

    def sweep(lab: Lab) -> None:
        lab["x"] = range(4)
        lab.runExperiment(Square())

    assert lab.createWith("squares", sweep) is True
    nb2 = HDF5LabNotebook(path)
    assert nb2.already("squares") is True
    assert sorted(nb2.dataframe()["y"]) == [0, 1, 4, 9]
    with pytest.raises(NotebookTakenOverError):
        lab.createWith("cubes", sweep)
    nb2.close()


def test_a_second_object_through_a_hard_link_takes_the_file_over_too(tmp_path):
    path = tmp_path / "study.h5"
    first = HDF5LabNotebook(path, create=True)
    first.addResult(results_dict(0, y=1.0))
    first.commit()
    os.link(path, tmp_path / "alias.h5")
    second = HDF5LabNotebook(tmp_path / "alias.h5")
    assert second.numberOfResults() == 1 and not first.isOpen()
    second.close()


def test_taking_a_file_back_with_open(tmp_path):
    path = tmp_path / "study.h5"
    first = HDF5LabNotebook(path, create=True)
    second = HDF5LabNotebook(path)
    second.addResult(results_dict(0, y=1.0))
    assert first.open() is first  # takes the file back from second, which commits on the way out
    assert first.numberOfResults() == 1
    with pytest.raises(NotebookTakenOverError):
        second.addResult(results_dict(1, y=2.0))
    first.close()


HOLD = """
import sys
from epyclab import HDF5LabNotebook
nb = HDF5LabNotebook(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
nb.close()
"""


def test_another_process_is_still_refused(tmp_path):
    path = tmp_path / "study.h5"
    HDF5LabNotebook(path, create=True).close()
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(NotebookInUseError, match=f"process {proc.pid}"):
            HDF5LabNotebook(path)
    finally:
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 0


@pytest.mark.parametrize("cls", FORMATS)
def test_open_returns_the_notebook_for_epycs_with_idiom(cls, tmp_path):
    path = tmp_path / "study"
    with cls(path, create=True).open() as nb:
        assert isinstance(nb, cls)
        nb.addResult(results_dict(0, y=1.0))
    assert not nb.isOpen()
    assert cls(path, readonly=True).numberOfResults() == 1
    assert LabNotebook().open().numberOfResults() == 0


@pytest.mark.parametrize("cls", FORMATS)
def test_a_cancelled_result_carries_the_exception_in_session_and_text_once_stored(cls, tmp_path):
    path = tmp_path / "study"
    with cls(path, create=True) as nb:
        nb.addPendingResult({"n": 3}, "job-7")
        nb.cancelPendingResult("job-7")
        (rc,) = nb.results()
        exc = rc[Experiment.METADATA][Experiment.EXCEPTION]
        assert isinstance(exc, CancelledException) and "job-7" in str(exc)
        assert not rc[Experiment.METADATA][Experiment.STATUS]
    (rc,) = cls(path, readonly=True).results()
    assert rc[Experiment.METADATA][Experiment.EXCEPTION] == "epyclab.errors.CancelledException: job job-7 was cancelled"


def test_the_lock_file_goes_when_the_last_object_closes(tmp_path):
    path = tmp_path / "study.h5"
    HDF5LabNotebook(path, create=True)
    HDF5LabNotebook(path).close()
    assert not os.path.exists(f"{path}.lock")


TAKEN_OVER_RUN = """
import sys
from epyclab import Experiment, HDF5LabNotebook, JSONLabNotebook, Lab, ParallelLab
from epyclab.errors import NotebookTakenOverError

class Echo(Experiment):
    def do(self, params):
        return {"y": params["i"]}

cls = {"h5": HDF5LabNotebook, "json": JSONLabNotebook}[sys.argv[2]]
old = cls(sys.argv[1], create=True)
new = cls(sys.argv[1])  # takes the file over
lab = Lab(old) if sys.argv[3] == "Lab" else ParallelLab(old, cores=2)
lab["i"] = range(4)
try:
    lab.runExperiment(Echo())
except NotebookTakenOverError as exc:
    print("refused:", exc)
new.close()
"""


@pytest.mark.parametrize("lab", ["Lab", "ParallelLab"])
@pytest.mark.parametrize("fmt", ["h5", "json"])
def test_a_run_through_a_taken_over_object_raises_one_clear_error_and_logs_no_traceback(tmp_path, fmt, lab):
    path = tmp_path / f"nb.{fmt}"
    done = subprocess.run([sys.executable, "-c", TAKEN_OVER_RUN, str(path), fmt, lab], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("refused: this notebook object for"), done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    assert "could not commit" not in done.stderr, done.stderr

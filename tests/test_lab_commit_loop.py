"""The pieces of the lab's commit loop on their own (epyclab/labs/lab.py): what reaches the notebook, and when.

A result that cannot be stored becomes a failed row keeping its parameters
and metadata; the committer commits after every ``every`` results (at least
1); each sweep's marks keep its rows in the design's order.
"""

from __future__ import annotations

from datetime import datetime

from epyclab.experiment import Experiment
from epyclab.labs.lab import Committer, SweepMarks, unstorable_result
from epyclab.notebooks.labnotebook import LabNotebook
from epyclab.order import POINT, SWEEP


class Counting(LabNotebook):
    def __init__(self) -> None:
        super().__init__("counting")
        self.commits = 0

    def commit(self) -> None:
        super().commit()
        self.commits += 1


def test_an_unstorable_result_becomes_a_failed_row_keeping_parameters_and_metadata() -> None:
    now = datetime(2026, 11, 30, 1, 15)
    rc = {
        Experiment.PARAMETERS: {"x": 1},
        Experiment.METADATA: {Experiment.STATUS: True, Experiment.START_TIME: now, Experiment.TRACEBACK: "t",
                              Experiment.EXCEPTION: None},
        Experiment.RESULTS: {"y": object()},
    }  # fmt: skip
    exc = ValueError("cannot store y")
    failed = unstorable_result(rc, exc)
    assert failed == {
        Experiment.PARAMETERS: {"x": 1},
        Experiment.METADATA: {Experiment.STATUS: False, Experiment.START_TIME: now, Experiment.TRACEBACK: "",
                              Experiment.EXCEPTION: exc},
        Experiment.RESULTS: {},
    }  # fmt: skip
    assert failed[Experiment.METADATA][Experiment.EXCEPTION] is exc
    # The run's own dict is left as it was.
    assert rc[Experiment.METADATA][Experiment.STATUS] is True and rc[Experiment.METADATA][Experiment.TRACEBACK] == "t"
    assert failed[Experiment.PARAMETERS] is not rc[Experiment.PARAMETERS]


def test_the_committer_commits_every_n_results() -> None:
    for every, commits in ((1, 5), (2, 2), (0, 5), (5, 1)):
        nb = Counting()
        committer = Committer(nb, every=every, interval=3600.0)
        for _ in range(5):
            committer.added()
        assert nb.commits == commits, every


def test_the_committer_commits_when_the_interval_passed() -> None:
    nb = Counting()
    committer = Committer(nb, every=1000, interval=0.0)
    committer.added()
    assert nb.commits == 1


def test_sweep_marks_give_each_point_its_design_position() -> None:
    marks = SweepMarks([0, 2, 5])
    assert len(marks.id) == 16 and int(marks.id, 16) >= 0
    assert marks.id != SweepMarks([0]).id
    assert marks.mark(1) == {SWEEP: marks.id, POINT: 2}
    rc = {Experiment.PARAMETERS: {}, Experiment.METADATA: {}, Experiment.RESULTS: {}}
    marks.stamp(rc, 2)
    assert rc[Experiment.METADATA][SWEEP] == marks.id and rc[Experiment.METADATA][POINT] == 5

"""The ClusterLab job policy against a real controller: what each pending job of a notebook ends as.

One controller (epyclab's durable task store) and two engines on 127.0.0.1
for the module. Each test puts pending jobs into a notebook as a user's
sweep (or another process's) leaves them, and checks what a pass of
``updateResults()`` / ``wait()`` makes of them:

- a job of another process that the hub has no record of stays pending for
  the grace period after its set got points, then becomes a failed row saying
  why and how to re-run it (this process does not hold its experiment; or
  the lab was told ``lost='fail'``);
- a job naming a place in a task that the task's reply does not have is a
  failed row saying so; the other places of the same task get their results,
  also when another lab collects the task first.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from clusterhub import HubProcesses, Square

from epyclab.experiment import Experiment
from epyclab.labs.clusterlab import ClusterLab
from epyclab.labs.collect import SUBMITTED_ATTRIBUTE
from epyclab.labs.jobs import parse_job_id
from epyclab.notebooks.labnotebook import LabNotebook

STATUS = Experiment.STATUS
EXCEPTION = Experiment.EXCEPTION


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcesses]:
    procs = HubProcesses(tmp_path_factory.mktemp("profile"), engines=2, durable=True)
    try:
        procs.start()
        yield procs
    finally:
        procs.stop()
    assert procs.alive() == []


def unknown_job(attempt: int = 0) -> str:
    return f"{uuid.uuid4()}_4242_9/0" + (f"/{attempt}" if attempt else "")


@pytest.mark.parametrize(
    ("lost", "attempt", "why"),
    [
        ("fail", 0, "the lab was told not to resubmit lost jobs (lost='fail')"),
        ("resubmit", 0, "this process does not have the experiment to submit it again"),
        ("resubmit", 2, "this process does not have the experiment to submit it again"),
        ("resubmit", 3, "it was already resubmitted 3 times (the lab's LostRetries)"),
    ],
)
def test_a_job_the_hub_never_heard_of_waits_out_the_grace_then_fails_saying_why(
    hub, lost: str, attempt: int, why: str
) -> None:
    nb = LabNotebook()
    lab = ClusterLab(nb, profile_dir=str(hub.profile_dir), lost=lost)
    try:
        nb.addPendingResult({"x": 7}, unknown_job(attempt))
        nb.current()[SUBMITTED_ATTRIBUTE] = time.time()  # points went into this set just now
        assert lab.updateResults() == 0
        assert nb.numberOfPendingResults() == 1  # the hub may not have recorded it yet
        nb.current()[SUBMITTED_ATTRIBUTE] = time.time() - 2 * lab.LostGrace
        assert lab.updateResults() == 1
        assert nb.numberOfPendingResults() == 0
        df = nb.dataframe(only_successful=False)
        assert df["x"].tolist() == [7] and not df[STATUS].any()
        message = df[EXCEPTION].iloc[0]
        assert "LostJobError" in message and "no record" in message and "resume=True" in message
        assert f"It was not run again because {why}." in message
    finally:
        lab.close()


def test_a_job_without_a_submission_time_fails_only_after_the_grace_this_process_saw(hub) -> None:
    nb = LabNotebook()
    lab = ClusterLab(nb, profile_dir=str(hub.profile_dir))
    try:
        nb.addPendingResult({"x": 1}, unknown_job())  # no SUBMITTED_ATTRIBUTE: another tool's notebook
        assert lab.updateResults() == 0
        assert nb.numberOfPendingResults() == 1
    finally:
        lab.close()


def test_each_place_of_a_task_gets_its_own_result_and_a_place_beyond_it_a_failed_row(hub) -> None:
    mine, other = LabNotebook(), LabNotebook()
    lab = ClusterLab(mine, profile_dir=str(hub.profile_dir), chunkSize=3)
    reader = ClusterLab(other, profile_dir=str(hub.profile_dir))
    try:
        lab["x"] = [2, 3, 4]
        lab.runExperiment(Square(0.2))
        jobs = sorted(mine.pendingResults(), key=lambda j: parse_job_id(j).index)
        assert len({parse_job_id(j).msg_id for j in jobs}) == 1  # one task of 3 points
        msg_id = parse_job_id(jobs[0]).msg_id
        # Another notebook waits on places 2 and 5 of the same task (as a copy of the sweep would).
        other.addPendingResult({"x": 4}, f"{msg_id}/2")
        other.addPendingResult({"x": 99}, f"{msg_id}/5")
        assert reader.wait(timeout=120, progress=False)
        df = other.dataframe(only_successful=False).sort_values("x")
        assert df["x"].tolist() == [4, 99]
        assert df[STATUS].tolist() == [True, False]
        assert df["y"].iloc[0] == 16
        assert "returned 3 results" in df[EXCEPTION].iloc[1]
        # The lab that submitted it still gets every result (from its own future).
        assert lab.wait(timeout=120, progress=False)
        got = mine.dataframe().sort_values("x")
        assert got["x"].tolist() == [2, 3, 4] and got["y"].tolist() == [4, 9, 16]
    finally:
        reader.close()
        lab.close()

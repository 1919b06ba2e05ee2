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
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from clusterhub import HubProcesses, Square

from epyclab.experiment import Experiment
from epyclab.labs.clusterlab import ClusterLab
from epyclab.labs.engine.wire import client_paths, package, submit_chunk
from epyclab.labs.remote.collect import SUBMITTED_ATTRIBUTE, Collector
from epyclab.labs.remote.hub import Hub
from epyclab.labs.remote.jobs import Observation, TaskState, job_id, observe_record, parse_job_id
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


# ---- resubmitting: from the experiment this process holds, or by the hub from its stored request ----------


@pytest.fixture
def connected(hub) -> Iterator[Hub]:
    client = hub.connect()
    try:
        yield Hub(client, timeout=30)
    finally:
        client.close()


def submitter(h: Hub, collector: list[Collector]) -> Callable[[str, list[dict[str, Any]]], str]:
    """Submits a chunk as ClusterLab does (``collector[0]``'s experiment, recorded in its task table)."""
    view = h.client.load_balanced_view()

    def submit(key: str, points: list[dict[str, Any]]) -> str:
        c = collector[0]
        payload = c.tasks.payload(key)
        ar = submit_chunk(view, key, points, payload.blob, client_paths())
        c.tasks.submitted(ar.msg_ids[0], key, ar)
        return ar.msg_ids[0]

    return submit


def holding(nb: LabNotebook, h: Hub, **kwargs: Any) -> tuple[Collector, str]:
    """A collector in the process that submitted the sweep: it holds the experiment (under the returned key)."""
    box: list[Collector] = []
    c = Collector(nb, hub=lambda: h, submit=submitter(h, box), **kwargs)
    box.append(c)
    _, payloads = package([(Square(), {})])
    c.tasks.addPayloads(payloads)
    return c, next(iter(payloads))


def collect_all(c: Collector, nb: LabNotebook, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while nb.numberOfAllPendingResults() and time.monotonic() < deadline:
        c.update()
        time.sleep(0.05)
    assert nb.numberOfAllPendingResults() == 0, nb.allPendingResults()


DIED_RECORD = {"completed": "2026-11-30", "result_content": {
    "status": "error", "ename": "EngineError", "evalue": "Engine 1 died while running task"}}


@pytest.mark.parametrize("points", [2, 3])
def test_a_chunk_whose_engine_died_runs_again_here_one_point_per_task_and_every_point_gets_its_result(
    connected, points: int
) -> None:
    nb = LabNotebook()
    c, key = holding(nb, connected)
    dead = f"{uuid.uuid4()}"
    c.tasks.submitted(dead, key, None)
    for i in range(points):
        nb.addPendingResult({"x": i + 2}, job_id(dead, i))
    ob = observe_record(DIED_RECORD)
    assert ob.state is TaskState.DIED
    tally = c.act(connected, dead, ob)
    assert (tally.collected, tally.failed, tally.changed) == (0, 0, True)
    assert tally.resubmitted == {"the engine running it died": points}
    refs = [parse_job_id(j) for j in nb.allPendingResults()]
    # One task per point, each the first place of its task, one attempt more.
    assert len({r.msg_id for r in refs}) == points and dead not in {r.msg_id for r in refs}
    assert {(r.index, r.attempt) for r in refs} == {(0, 1)}
    assert sorted(nb.pendingResultParameters(r.jobid)["x"] for r in refs) == [i + 2 for i in range(points)]
    collect_all(c, nb)
    df = nb.dataframe()
    assert sorted(zip(df["x"], df["y"])) == [(i + 2, (i + 2) ** 2) for i in range(points)]


def test_a_lost_chunk_this_process_holds_runs_again_here_as_one_task_once_past_the_grace(connected) -> None:
    nb = LabNotebook()
    c, key = holding(nb, connected, grace=0.0)
    lost = f"{uuid.uuid4()}"  # submitted from here, but the hub has no record of it (culled, or lost)
    c.tasks.submitted(lost, key, None)
    for i in range(2):
        nb.addPendingResult({"x": i + 5}, job_id(lost, i))
    tally = c.update()
    assert tally.resubmitted == {
        "the controller has no record of it and is not running it: it was culled from the hub's task store "
        "(the default in-memory store keeps only 1024 tasks) or lost when the controller stopped": 2}
    refs = [parse_job_id(j) for j in nb.allPendingResults()]
    assert len({r.msg_id for r in refs}) == 1 and {(r.index, r.attempt) for r in refs} == {(0, 1), (1, 1)}
    collect_all(c, nb)
    df = nb.dataframe()
    assert sorted(zip(df["x"], df["y"])) == [(5, 25), (6, 36)]


def test_a_lost_chunk_this_process_just_submitted_waits_out_its_grace(connected) -> None:
    nb = LabNotebook()
    c, key = holding(nb, connected, grace=600.0)
    lost = f"{uuid.uuid4()}"
    c.tasks.submitted(lost, key, None)
    nb.addPendingResult({"x": 1}, job_id(lost, 0))
    tally = c.update()
    assert (tally.collected, tally.changed, tally.resubmitted) == (0, False, {})
    assert nb.allPendingResults() == [job_id(lost, 0)]


def test_a_job_of_another_process_fails_once_this_process_has_watched_it_missing_for_the_grace(connected) -> None:
    nb = LabNotebook()  # no submission time in the notebook: only this process's own watching counts
    c = Collector(nb, hub=lambda: connected, submit=submitter(connected, []), grace=0.3)
    nb.addPendingResult({"x": 1}, unknown_job())
    assert c.update().collected == 0 and nb.numberOfAllPendingResults() == 1
    deadline = time.monotonic() + 30
    while nb.numberOfAllPendingResults() and time.monotonic() < deadline:
        c.update()
    assert nb.numberOfAllPendingResults() == 0
    (message,) = nb.dataframe(only_successful=False)[EXCEPTION].tolist()
    assert "LostJobError" in message and "this process does not have the experiment" in message


def test_a_task_the_hub_will_never_finish_is_run_again_by_the_hub_and_its_points_keep_their_places(
    connected,
) -> None:
    # Another process's chunk of 3 points (this collector does not hold its experiment), of which this
    # notebook waits on places 1 and 2; the hub's stranded-task finder calls it an orphan.
    _, payloads = package([(Square(), {})])
    (payload,) = payloads.values()
    ar = submit_chunk(connected.client.load_balanced_view(), payload.key, [{"x": 2}, {"x": 3}, {"x": 4}],
                      payload.blob, client_paths())
    ar.get(timeout=60)
    msg_id = ar.msg_ids[0]
    assert not connected.recorded([msg_id])
    nb = LabNotebook()
    nb.addPendingResult({"x": 3}, job_id(msg_id, 1))
    nb.addPendingResult({"x": 4}, job_id(msg_id, 2))
    c = Collector(nb, hub=lambda: connected, submit=submitter(connected, []))
    tally = c.act(connected, msg_id, Observation(TaskState.ORPHAN))
    assert (tally.collected, tally.changed) == (0, True)
    assert tally.resubmitted == {
        "the controller is not running it and never will (it restarted while the task was queued or running, "
        "or dropped it with the engine it was on)": 2}
    refs = sorted((parse_job_id(j) for j in nb.allPendingResults()), key=lambda r: r.index)
    (new,) = {r.msg_id for r in refs}
    assert new != msg_id and [(r.index, r.attempt) for r in refs] == [(1, 1), (2, 1)]
    collect_all(c, nb)
    df = nb.dataframe().sort_values("x")
    assert df["x"].tolist() == [3, 4] and df["y"].tolist() == [9, 16]

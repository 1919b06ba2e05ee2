"""What the ClusterLab job policy makes of each task state, decided on the hub's own task records.

A pass of :class:`~epyclab.labs.remote.collect.Collector` first reads each pending
task's record from the hub (``observe_record``), then acts on what it says
(:meth:`Collector.act`). These tests give the second half records in the form
the hub keeps them (``completed``, ``resubmitted``, ``result_content``,
``result_buffers`` as ipyparallel serializes an engine's reply, made here by
the engine's own ``worker.run_points``), without starting a controller: none
of these decisions asks the hub anything (the hub given to them fails the test
if it is used). What a user relies on: every pending point ends as a result or
a failed row saying why, or follows its task to a new id, and never stays
pending for ever; nothing else in the notebook changes.
The decisions that do ask the hub (resubmitting) are in test_collect_mutants.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from clusterhub import Square
from ipyparallel.serialize import serialize_object

from epyclab.experiment import Experiment
from epyclab.labs.engine import worker
from epyclab.labs.engine.wire import package, serialize_experiment
from epyclab.labs.remote.collect import Collector, Tally
from epyclab.labs.remote.jobs import Observation, TaskState, job_id, observe_error, observe_record, parse_job_id
from epyclab.notebooks.labnotebook import LabNotebook

STATUS, EXCEPTION, TRACEBACK = Experiment.STATUS, Experiment.EXCEPTION, Experiment.TRACEBACK
CLASSNAME = Experiment.EXPERIMENT
TASK = "0f1e2d3c-task"


class NoHub:
    """What these decisions are given as the hub: they must not ask it anything."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"this decision asked the hub for {name!r}")


def never_submit(key: str, points: list[dict[str, Any]]) -> str:
    raise AssertionError(f"this decision submitted {points} of {key!r} again")


def collector(nb: LabNotebook, **kwargs: Any) -> Collector:
    return Collector(nb, hub=NoHub, submit=never_submit, **kwargs)  # type: ignore[arg-type]


def done_record(points: list[dict[str, Any]], experiment: Experiment | None = None) -> dict[str, Any]:
    """The hub's record of a task that ran ``points`` on an engine (its reply made by the engine's code)."""
    key = "sweep-key"
    worker.load_experiment(key, serialize_experiment(experiment or Square()))
    try:
        reply = worker.run_points(key, points)
    finally:
        worker.forget_experiment(key)
    return {
        "completed": datetime.now(),
        "resubmitted": None,
        "result_content": {"status": "ok"},
        "result_buffers": serialize_object(reply),
    }


def error_record(ename: str, evalue: str, traceback: Any = None, status: str = "error") -> dict[str, Any]:
    content: dict[str, Any] = {"status": status, "ename": ename, "evalue": evalue}
    if traceback is not None:
        content["traceback"] = traceback
    return {"completed": datetime.now(), "resubmitted": None, "result_content": content, "result_buffers": []}


def pending(nb: LabNotebook, points: dict[str, dict[str, Any]]) -> None:
    for jobid, params in points.items():
        nb.addPendingResult(params, jobid)


def rows(nb: LabNotebook) -> list[dict[str, Any]]:
    df = nb.dataframe(only_successful=False)
    return df.sort_values("x").to_dict("records") if len(df) else []


def same(t: Tally, collected: int, failed: int, changed: bool) -> bool:
    return (t.collected, t.failed, t.changed, t.resubmitted) == (collected, failed, changed, {})


# ---- a task that finished ------------------------------------------------------------------------------


def test_each_place_of_a_finished_task_gets_its_own_result_and_a_place_beyond_it_a_failed_row() -> None:
    nb = LabNotebook()
    # Places 0, 1 and 2 of a chunk of 3, and a place 3 the reply does not have (a copied notebook's job).
    pending(nb, {job_id(TASK, i): {"x": x} for i, x in enumerate([2, 3, 4, 5])})
    ob = observe_record(done_record([{"x": 2}, {"x": 3}, {"x": 4}]))
    assert ob.state is TaskState.DONE
    tally = collector(nb).act(NoHub(), TASK, ob)  # type: ignore[arg-type]
    assert same(tally, 4, 1, True)
    assert nb.numberOfAllPendingResults() == 0
    got = rows(nb)
    assert [r["x"] for r in got] == [2, 3, 4, 5]
    assert [r[STATUS] for r in got] == [True, True, True, False]
    assert [r["y"] for r in got[:3]] == [4, 9, 16]
    assert f"task {TASK} returned 3 results, so job {job_id(TASK, 3)} has none" in got[3][EXCEPTION]


def test_a_finished_task_of_a_later_attempt_fills_the_places_its_ids_name() -> None:
    nb = LabNotebook()
    # Only places 1 and 0 of attempt 2 are waiting, in that order in the notebook.
    pending(nb, {job_id(TASK, 1, 2): {"x": 7}, job_id(TASK, 0, 2): {"x": 6}})
    tally = collector(nb).act(NoHub(), TASK, observe_record(done_record([{"x": 6}, {"x": 7}])))  # type: ignore[arg-type]
    assert same(tally, 2, 0, True)
    assert [(r["x"], r["y"]) for r in rows(nb)] == [(6, 36), (7, 49)]


def test_a_failed_run_inside_a_finished_task_is_a_result_counted_as_failed() -> None:
    from clusterhub import AlwaysRaises

    nb = LabNotebook()
    pending(nb, {job_id(TASK, 0): {"x": 1}, job_id(TASK, 1): {"x": 2}})
    tally = collector(nb).act(NoHub(), TASK, observe_record(done_record([{"x": 1}, {"x": 2}], AlwaysRaises())))  # type: ignore[arg-type]
    assert same(tally, 2, 2, True)
    got = rows(nb)
    assert [r[STATUS] for r in got] == [False, False]
    assert "no result at x=1" in got[0][EXCEPTION] and "no result at x=2" in got[1][EXCEPTION]


def test_a_reply_that_is_not_a_workers_fails_every_point_of_its_task_saying_so() -> None:
    nb = LabNotebook()
    pending(nb, {job_id(TASK, 0): {"x": 1}, job_id(TASK, 1): {"x": 2}})
    record = {"completed": datetime.now(), "result_content": {"status": "ok"},
              "result_buffers": serialize_object(["not", "a", "reply"])}
    tally = collector(nb).act(NoHub(), TASK, observe_record(record))  # type: ignore[arg-type]
    assert same(tally, 2, 2, True)
    got = rows(nb)
    assert [r[STATUS] for r in got] == [False, False]
    assert all("ResultsStructureException" in r[EXCEPTION] and "list" in r[EXCEPTION] for r in got)
    assert [r[TRACEBACK] for r in got] == ["", ""]  # no traceback exists for a reply read here


def test_a_pending_task_changes_nothing() -> None:
    nb = LabNotebook()
    pending(nb, {job_id(TASK, 0): {"x": 1}})
    tally = collector(nb).act(NoHub(), TASK, observe_record({"completed": None}))  # type: ignore[arg-type]
    assert same(tally, 0, 0, False)
    assert nb.pendingResults() == [job_id(TASK, 0)] and rows(nb) == []


# ---- a task that failed on its engine (not because of the experiment) -----------------------------------


@pytest.mark.parametrize("trace", [["Traceback (most recent call last):", '  File "w.py"', "MemoryError: oom"],
                                   "Traceback: MemoryError: oom"])
def test_a_task_that_failed_on_its_engine_fails_each_point_with_the_remote_error_and_traceback(trace: Any) -> None:
    nb = LabNotebook()
    pending(nb, {job_id(TASK, 0): {"x": 1}, job_id(TASK, 1): {"x": 2}})
    ob = observe_record(error_record("MemoryError", "oom", trace))
    assert ob.state is TaskState.FAILED
    tally = collector(nb).act(NoHub(), TASK, ob)  # type: ignore[arg-type]
    assert same(tally, 2, 2, True)
    got = rows(nb)
    assert [r["x"] for r in got] == [1, 2] and [r[STATUS] for r in got] == [False, False]
    text = trace if isinstance(trace, str) else "\n".join(trace)
    assert all("MemoryError" in r[EXCEPTION] and "oom" in r[EXCEPTION] for r in got)
    assert [r[TRACEBACK] for r in got] == [text, text]


def test_an_aborted_task_fails_each_point_and_invents_no_traceback() -> None:
    nb = LabNotebook()
    pending(nb, {job_id(TASK, 0): {"x": 1}})
    record = {"completed": datetime.now(), "result_content": {"status": "aborted"}}
    tally = collector(nb).act(NoHub(), TASK, observe_record(record))  # type: ignore[arg-type]
    assert same(tally, 1, 1, True)
    (row,) = rows(nb)
    assert not row[STATUS] and "TaskAborted" in row[EXCEPTION] and row[TRACEBACK] == ""


# ---- a task someone else resubmitted ----------------------------------------------------------------------


def test_the_points_of_a_task_resubmitted_elsewhere_follow_it_keeping_their_places() -> None:
    nb = LabNotebook()
    other = LabNotebook()  # nothing of another set may move
    pending(nb, {job_id(TASK, 0): {"x": 1}, job_id(TASK, 2): {"x": 3}, job_id(TASK, 1, 1): {"x": 2}})
    nb.addPendingResult({"x": 9}, job_id("another-task", 0))
    ob = observe_record({"completed": datetime.now(), "resubmitted": "new-task"})
    assert ob.state is TaskState.MOVED
    tally = collector(nb).act(NoHub(), TASK, ob)  # type: ignore[arg-type]
    assert same(tally, 0, 0, True)
    moved = {parse_job_id(j): nb.pendingResultParameters(j) for j in nb.pendingResults()}
    # Each point keeps its place in the task, and counts one more attempt (the highest one's).
    assert {(r.msg_id, r.index, r.attempt): p["x"] for r, p in moved.items()} == {
        ("new-task", 0, 1): 1, ("new-task", 2, 1): 3, ("new-task", 1, 2): 2, ("another-task", 0, 0): 9,
    }
    assert rows(nb) == [] and other.numberOfAllPendingResults() == 0


# ---- a task that died or was lost, and is not run again ---------------------------------------------------

LOST = {
    # state: a record saying so (None: the hub has no record)
    TaskState.DIED: error_record("EngineError", "Engine 3 died while running task"),
    TaskState.MISSING: None,
}


def observed(state: TaskState) -> Observation:
    if state in LOST:
        return observe_record(LOST[state])
    return Observation(state)  # ORPHAN and STUCK are found by StrandedFinder, not by a record alone


@pytest.mark.parametrize("state", [TaskState.DIED, TaskState.ORPHAN, TaskState.STUCK, TaskState.MISSING])
def test_purging_cancels_every_point_of_a_dead_or_lost_task_as_a_failed_row(state: TaskState) -> None:
    nb = LabNotebook()
    pending(nb, {job_id(TASK, 0): {"x": 1}, job_id(TASK, 1): {"x": 2}})
    nb.addPendingResult({"x": 9}, job_id("another-task", 0))
    tally = collector(nb).act(NoHub(), TASK, observed(state), purge=True)  # type: ignore[arg-type]
    assert same(tally, 2, 2, True)
    assert nb.pendingResults() == [job_id("another-task", 0)]
    got = rows(nb)
    assert [r["x"] for r in got] == [1, 2] and [r[STATUS] for r in got] == [False, False]
    cancelled = "epyclab.errors.CancelledException: job {} was cancelled"
    assert [r[EXCEPTION] for r in got] == [cancelled.format(job_id(TASK, i)) for i in (0, 1)]


WHY = {
    TaskState.DIED: "the engine running it died",
    TaskState.ORPHAN: (
        "the controller is not running it and never will (it restarted while the task was queued or running, "
        "or dropped it with the engine it was on)"
    ),
    TaskState.STUCK: (
        "the controller assigned it to an engine that never received it (a message lost while the engine "
        "reconnected, as happens right after a controller restart)"
    ),
    TaskState.MISSING: (
        "the controller has no record of it and is not running it: it was culled from the hub's task store "
        "(the default in-memory store keeps only 1024 tasks) or lost when the controller stopped"
    ),
}
LOST_ERROR, DIED_ERROR = "epyclab.labs.remote.jobs.LostJobError", "ipyparallel.error.EngineError"


@pytest.mark.parametrize(
    ("state", "lost", "attempt", "because", "error"),
    [
        (TaskState.ORPHAN, "fail", 0, "the lab was told not to resubmit lost jobs (lost='fail')", LOST_ERROR),
        (TaskState.STUCK, "fail", 0, "the lab was told not to resubmit lost jobs (lost='fail')", LOST_ERROR),
        (TaskState.MISSING, "fail", 0, "the lab was told not to resubmit lost jobs (lost='fail')", LOST_ERROR),
        (TaskState.MISSING, "resubmit", 3, "it was already resubmitted 3 times (the lab's LostRetries)", LOST_ERROR),
        (TaskState.ORPHAN, "resubmit", 4, "it was already resubmitted 4 times (the lab's LostRetries)", LOST_ERROR),
        (TaskState.DIED, "fail", 1, "it was already resubmitted 1 times (the lab's Retries)", DIED_ERROR),
        (TaskState.DIED, "resubmit", 2, "it was already resubmitted 2 times (the lab's Retries)", DIED_ERROR),
    ],
)
def test_a_dead_or_lost_task_past_its_retries_or_policy_fails_each_point_saying_why_and_how_to_rerun(
    state: TaskState, lost: str, attempt: int, because: str, error: str
) -> None:
    nb = LabNotebook()
    # The attempt that counts is the highest of the task's points.
    pending(nb, {job_id(TASK, 0, max(0, attempt - 1)): {"x": 1}, job_id(TASK, 1, attempt): {"x": 2}})
    c = collector(nb, lost=lost, retries=1, lost_retries=3)
    tally = c.act(NoHub(), TASK, observed(state))  # type: ignore[arg-type]
    assert same(tally, 2, 2, True)
    assert nb.numberOfAllPendingResults() == 0
    got = rows(nb)
    assert [r["x"] for r in got] == [1, 2] and [r[STATUS] for r in got] == [False, False]
    ob = observed(state)
    # A death says what the engine's error was; a lost task has none.
    why = WHY[state] + (f" ({ob.error})" if state is TaskState.DIED else "")
    assert [r[EXCEPTION] for r in got] == 2 * [
        f"{error}: task {TASK} did not complete: {why}. It was not run again because {because}. "
        f"Run the sweep again with runExperiment(e, resume=True) to re-run the points that failed"
    ]
    assert [r[TRACEBACK] for r in got] == ["", ""]


# ---- in the process that submitted the task: its rows name the experiment ---------------------------------


def holding(nb: LabNotebook) -> Collector:
    """A collector that submitted task TASK itself (it holds the experiment; the future is gone)."""
    c = collector(nb)
    _, payloads = package([(Square(), {})])
    c.tasks.addPayloads(payloads)
    c.tasks.submitted(TASK, next(iter(payloads)), None)
    return c


def test_a_place_beyond_the_reply_of_a_task_submitted_here_is_a_failed_row_of_its_experiment() -> None:
    nb = LabNotebook()
    pending(nb, {job_id(TASK, 0): {"x": 2}, job_id(TASK, 4): {"x": 6}})
    tally = holding(nb).act(NoHub(), TASK, observe_record(done_record([{"x": 2}])))  # type: ignore[arg-type]
    assert same(tally, 2, 1, True)
    ok, beyond = rows(nb)
    assert (ok["y"], ok[STATUS]) == (4, True)
    assert not beyond[STATUS] and beyond[TRACEBACK] == ""
    assert beyond[EXCEPTION] == (f"epyclab.errors.ResultsStructureException: task {TASK} returned 1 results, "
                                 f"so job {job_id(TASK, 4)} has none")
    assert ok[CLASSNAME] == beyond[CLASSNAME] == "clusterhub.Square"


def test_a_task_submitted_here_that_failed_on_its_engine_fails_as_rows_of_its_experiment() -> None:
    nb = LabNotebook()
    pending(nb, {job_id(TASK, 0): {"x": 1}})
    tally = holding(nb).act(NoHub(), TASK, observe_record(error_record("MemoryError", "oom", "trace")))  # type: ignore[arg-type]
    assert same(tally, 1, 1, True)
    (row,) = rows(nb)
    assert row[CLASSNAME] == "clusterhub.Square" and row[TRACEBACK] == "trace"


def test_a_future_that_failed_without_a_traceback_fails_its_points_with_no_invented_one() -> None:
    # What this process's own future reports for a task aborted before it ran (no remote traceback).
    from ipyparallel.error import TaskAborted

    nb = LabNotebook()
    pending(nb, {job_id(TASK, 0): {"x": 1}})
    ob = observe_error(TaskAborted(f"task {TASK} was aborted"))
    assert ob.state is TaskState.FAILED
    tally = holding(nb).act(NoHub(), TASK, ob)  # type: ignore[arg-type]
    assert same(tally, 1, 1, True)
    (row,) = rows(nb)
    assert "TaskAborted" in row[EXCEPTION] and row[TRACEBACK] == ""

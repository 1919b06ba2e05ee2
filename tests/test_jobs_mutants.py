"""What a ClusterLab's collector knows of its own tasks (TaskTable), and what a hub record says of a task.

The table decides whether a lost task can be submitted again from this
process (it must hold the experiment), follows a task the hub resubmitted
under its new id, and forgets every future when the client goes; a hub
record (as ``db_query`` returns it) says whether the task is pending, done,
failed, moved or missing. Sequences of operations on the table are checked
against a plain model of those promises (hypothesis).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ipyparallel.controller.dictdb import DictDB
from ipyparallel.serialize import serialize_object

from epyclab.labs.engine.wire import Payload
from epyclab.labs.remote.jobs import (
    HUB_RECORD_LIMIT,
    HubCapacityError,
    TaskState,
    TaskTable,
    fit_to_hub,
    observe_record,
)

ids = st.sampled_from(["t1", "t2", "t3"])
keys = st.sampled_from(["k1", "k2"])
ops = st.lists(
    st.one_of(
        st.tuples(st.just("submitted"), ids, keys),
        st.tuples(st.just("forget"), ids, st.one_of(st.none(), ids)),
        st.tuples(st.just("hold"), keys),
        st.tuples(st.just("detach")),
    ),
    max_size=12,
)


class Future:
    """Stands for a task's AsyncResult: the table only keeps it and hands it back."""


@given(ops=ops)
def test_the_task_table_follows_submitted_moved_and_forgotten_tasks(ops: list[tuple[Any, ...]]) -> None:
    table = TaskTable()
    tasks: dict[str, tuple[str, Any]] = {}  # msg_id -> (key, future or None)
    held: set[str] = set()
    for op in ops:
        if op[0] == "submitted":
            future = Future()
            table.submitted(op[1], op[2], future)
            tasks[op[1]] = (op[2], future)
        elif op[0] == "forget":
            own = tasks.pop(op[1], None)
            table.forget(op[1], op[2])
            if op[2] is not None and own is not None:
                tasks[op[2]] = (own[0], None)  # followed under its new id; its old future is no use there
        elif op[0] == "hold":
            table.addPayloads({op[1]: Payload(op[1], b"", f"Experiment{op[1]}")})
            held.add(op[1])
        else:
            table.detach()
            tasks = {m: (k, None) for m, (k, _) in tasks.items()}
        assert len(table) == len(tasks)
        for msg_id in ("t1", "t2", "t3"):
            own = table.get(msg_id)
            if msg_id not in tasks:
                assert own is None and table.keyHeld(msg_id) is None and table.classname(msg_id) == ""
                continue
            key, future = tasks[msg_id]
            assert own is not None and own.key == key and own.ar is future
            assert table.keyHeld(msg_id) == (key if key in held else None)
            assert table.classname(msg_id) == (f"Experiment{key}" if key in held else "")
    for key in held:
        assert table.payload(key).classname == f"Experiment{key}"


def test_a_hub_record_says_what_became_of_its_task() -> None:
    assert observe_record(None).state is TaskState.MISSING
    assert observe_record({"completed": None, "resubmitted": None}).state is TaskState.PENDING
    moved = observe_record({"completed": "2026-01-01", "resubmitted": "new-id"})
    assert moved.state is TaskState.MOVED and moved.moved_to == "new-id"
    done = observe_record({"completed": "2026-01-01", "result_content": {"status": "ok"},
                           "result_buffers": serialize_object({"rows": [1, 2]})})
    assert done.state is TaskState.DONE and done.reply == {"rows": [1, 2]}
    failed = observe_record({"completed": "2026-01-01", "result_content": {
        "status": "error", "ename": "ValueError", "evalue": "bad", "traceback": ["line 1", "line 2"]}})
    assert failed.state is TaskState.FAILED
    assert failed.error.ename == "ValueError" and failed.error.evalue == "bad"
    assert failed.error.traceback == "line 1\nline 2"
    aborted = observe_record({"completed": "2026-01-01", "result_content": {"status": "aborted"}})
    assert aborted.state is TaskState.FAILED and aborted.error.ename == "TaskAborted"
    assert "'aborted'" in aborted.error.evalue
    assert aborted.error.traceback == ""  # none came: none is made up


# ---- fitting a sweep into a culling task store ----------------------------------------------------------


def test_the_assumed_record_limit_is_ipyparallels_default() -> None:
    assert HUB_RECORD_LIMIT == DictDB.class_traits()["record_limit"].default_value == 1024


@given(points=st.integers(1, 5000), size=st.integers(1, 60), limit=st.integers(10, 2000),
       used=st.integers(0, 2000), explicit=st.booleans())
def test_a_sweep_is_fitted_into_nine_tenths_of_a_culling_store_or_refused_naming_the_way_out(
    points: int, size: int, limit: int, used: int, explicit: bool
) -> None:
    free = int(limit * 0.9) - used  # a tenth is left for probes, resubmissions and other clients

    def tasks(n: int) -> int:
        return -(-points // n)

    if tasks(size) <= free:
        assert fit_to_hub(points, size, limit, used, explicit, "the controller") == size
        return
    if free < 1 or explicit:
        with pytest.raises(HubCapacityError) as refused:
            fit_to_hub(points, size, limit, used, explicit, "the controller")
        message = str(refused.value)
        assert message.startswith("the controller keeps task records")
        assert "epyclab cluster init PROFILE" in message and "epyclab cluster start PROFILE" in message
        assert "--IPController.db_class=epyclab.clustersetup.taskstore.TaskStore" in message
        told = f"c.DictDB.record_limit is not {limit}, give it to the lab as ClusterLab(..., hubRecordLimit=N)"
        assert told in message
        if free >= 1:
            least = min(n for n in range(1, points + 1) if tasks(n) <= free)
            assert f"Give chunkSize={least} or more" in message
        return
    got = fit_to_hub(points, size, limit, used, explicit, "the controller")
    # The least chunk size that fits: fewer, larger tasks only as far as needed.
    assert tasks(got) <= free and (got == 1 or tasks(got - 1) > free)


DURABLE = (
    "start a controller with a durable task store instead: `epyclab cluster init PROFILE` and "
    "`epyclab cluster start PROFILE` (SQLite, kept over restarts, never culled), or by hand "
    "`ipcontroller --reuse --restore --IPController.db_class=epyclab.clustersetup.taskstore.TaskStore`; "
    "if its c.DictDB.record_limit is not {limit}, give it to the lab as ClusterLab(..., hubRecordLimit=N)"
)


@pytest.mark.parametrize(
    ("points", "size", "limit", "used", "explicit", "want"),
    [
        (900, 1, 1000, 0, True, 1),  # exactly as many tasks as fit: kept
        (901, 1, 1000, 0, False, 2),  # one task too many: the least larger size
        (1801, 1, 1000, 0, False, 3),
        (2, 1, 10, 8, False, 2),  # one record free: a single task of both points
        (1, 1, 10, 9, False, None),  # nothing free: refused
        (901, 1, 1000, 0, True, None),  # the user's size does not fit: refused
        (1802, 4, 1000, 0, True, 4),  # 451 tasks of 4 (the last of 2) fit in 900
        (3601, 4, 1000, 0, True, None),  # 901 tasks of 4 do not
    ],
)
def test_fitting_at_the_edges(points: int, size: int, limit: int, used: int, explicit: bool, want: int | None) -> None:
    if want is not None:
        assert fit_to_hub(points, size, limit, used, explicit, "C") == want
        return
    with pytest.raises(HubCapacityError) as refused:
        fit_to_hub(points, size, limit, used, explicit, "C")
    message = str(refused.value)
    free = int(limit * 0.9) - used
    assert message.endswith(DURABLE.format(limit=limit))
    if free < 1:
        assert message == (
            f"C keeps task records in ipyparallel's in-memory store, which culls the oldest (finished or not) "
            f"beyond {limit} records, and it holds {used} already: a sweep submitted now could lose its tasks "
            f"before they are collected. Collect or purge what is there, or " + DURABLE.format(limit=limit)
        )
    else:
        tasks, least = -(-points // size), -(-points // free)
        assert message == (
            f"C keeps task records in ipyparallel's in-memory store, which culls the oldest (finished or not) "
            f"beyond {limit} records ({used} held now): {points} points in chunks of {size} are {tasks} tasks, "
            f"more than the {free} it can keep until they are collected. Give chunkSize={least} or more "
            f"(or chunkSize=None to let the lab choose), or " + DURABLE.format(limit=limit)
        )

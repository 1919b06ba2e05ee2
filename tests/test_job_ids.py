"""ClusterLab's job ids, chunks and task states on their own (epyclab/labs/remote/jobs.py).

A pending result is found again by its job id alone (after the notebook was
reopened, in another process): the id must name its task, its place in the
chunk and its attempt, unambiguously; chunks must keep every point once, in
order, never mixing experiments; a hub record must be read as the state that
decides whether a point is collected, failed, run again or still waited for.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ipyparallel.error import EngineError, RemoteError
from ipyparallel.serialize import serialize_object

from epyclab.labs.remote.jobs import (
    CHUNKS_PER_ENGINE,
    LARGEST_CHUNK,
    JobRef,
    TaskState,
    chunk_size,
    group_by_task,
    job_id,
    observe_error,
    observe_record,
    parse_job_id,
    record_keys,
    split,
)

msg_ids = st.text(st.characters(blacklist_characters="/", blacklist_categories=("Cs",)), min_size=1, max_size=20)


@given(msg_id=msg_ids, index=st.integers(0, 10**6), attempt=st.integers(0, 50), outside=st.integers(0, 50))
def test_a_job_id_names_its_task_place_and_attempt(msg_id: str, index: int, attempt: int, outside: int) -> None:
    jobid = job_id(msg_id, index, attempt, outside)
    assert parse_job_id(jobid) == JobRef(jobid, msg_id, index, attempt, outside)


def test_the_job_id_forms() -> None:
    assert job_id("abc", 3) == "abc/3"
    assert job_id("abc", 3, 0) == "abc/3"
    assert job_id("abc", 3, 2) == "abc/3/2"
    assert job_id("abc", 3, 0, 1) == "abc/3/0/1"  # ended from outside once: not an attempt


@pytest.mark.parametrize("jobid", ["abc", "/3", "abc/", "abc/x", "abc/3/", "abc/3/x", "abc/-1", "abc/3/2/x",
                                   "abc/3/2/1/0", "abc/3//1"])
def test_an_id_of_another_form_is_index_0_of_its_own_task(jobid: str) -> None:
    assert parse_job_id(jobid) == JobRef(jobid, jobid, 0, 0)


def test_jobs_are_grouped_by_task_in_order() -> None:
    ids = ["a/0", "b/0", "a/1/1", "old", "a/2"]
    assert group_by_task(ids) == {
        "a": [JobRef("a/0", "a", 0), JobRef("a/1/1", "a", 1, 1), JobRef("a/2", "a", 2)],
        "b": [JobRef("b/0", "b", 0)],
        "old": [JobRef("old", "old", 0)],
    }
    assert group_by_task([]) == {}


@pytest.mark.parametrize(
    "total, engines, expected",
    [(0, 2, 1), (1, 2, 1), (16, 2, 1), (17, 2, 2), (160, 2, 10), (10**6, 2, 50), (100, 0, 13), (801, 1, 50)],
)
def test_chunk_size_is_total_over_8_per_engine_rounded_up_capped_at_50(total: int, engines: int, expected: int) -> None:
    assert (CHUNKS_PER_ENGINE, LARGEST_CHUNK) == (8, 50)
    assert chunk_size(total, engines) == expected


def test_chunk_size_takes_another_cap() -> None:
    assert chunk_size(10**6, 2, largest=7) == 7
    assert chunk_size(10**6, 2, largest=0) == 1


@given(
    keys=st.lists(st.sampled_from(["e1", "e2"]), max_size=40),
    size=st.integers(-1, 12),
)
def test_split_keeps_every_point_once_in_order_never_mixing_experiments(keys: list[str], size: int) -> None:
    items = [(k, {"i": i}) for i, k in enumerate(keys)]
    chunks = list(split(items, size))
    assert [(k, p) for k, chunk in chunks for p in chunk] == items
    limit = max(1, size)
    assert all(1 <= len(chunk) <= limit for _, chunk in chunks)
    # A chunk ends early only where the experiment changes.
    for (k1, c1), (k2, _) in zip(chunks, chunks[1:]):
        assert len(c1) == limit or k1 != k2


def test_split_examples() -> None:
    items = [("a", {"x": 1}), ("a", {"x": 2}), ("a", {"x": 3}), ("b", {"x": 4})]
    assert list(split(items, 2)) == [("a", [{"x": 1}, {"x": 2}]), ("a", [{"x": 3}]), ("b", [{"x": 4}])]
    assert list(split([], 2)) == []


def test_record_keys() -> None:
    assert record_keys() == ["completed", "resubmitted", "result_content", "result_buffers"]
    assert record_keys(with_results=False) == ["completed", "resubmitted", "result_content"]


def test_no_record_is_missing_and_a_resubmitted_one_moved() -> None:
    assert observe_record(None).state is TaskState.MISSING
    moved = observe_record({"resubmitted": "new-id", "completed": "yesterday"})
    assert (moved.state, moved.moved_to) == (TaskState.MOVED, "new-id")
    for rec in ({"completed": None}, {"resubmitted": None}, {"resubmitted": ""}):
        assert observe_record(rec).state is TaskState.PENDING, rec


def test_a_finished_record_gives_its_reply() -> None:
    reply = ("pickle", 0.5, b"payload")
    rec = {"completed": 1, "result_content": {"status": "ok"}, "result_buffers": serialize_object(reply)}
    seen = observe_record(rec)
    assert (seen.state, seen.reply, seen.error) == (TaskState.DONE, reply, None)


@pytest.mark.parametrize(
    "content, ename, evalue, state",
    [
        ({"status": "error", "ename": "ValueError", "evalue": "bad", "traceback": ["l1", "l2"]},
         "ValueError", "bad", TaskState.FAILED),
        ({"status": "error", "ename": "EngineError", "evalue": "died", "traceback": "t"},
         "EngineError", "died", TaskState.DIED),
        ({"status": "aborted"}, "TaskAborted", "the task ended with status 'aborted'", TaskState.FAILED),
        ({"status": "odd"}, "UnknownError", "the task ended with status 'odd'", TaskState.FAILED),
        (None, "UnknownError", "the task ended with status None", TaskState.FAILED),
    ],
)  # fmt: skip
def test_a_failed_record_gives_its_error(content: dict | None, ename: str, evalue: str, state: TaskState) -> None:
    seen = observe_record({"completed": 1, "result_content": content})
    assert seen.state is state
    assert isinstance(seen.error, RemoteError)
    assert (seen.error.ename, seen.error.evalue) == (ename, evalue)
    if content and content.get("traceback") == ["l1", "l2"]:
        assert seen.error.traceback == "l1\nl2"


def test_an_engine_death_is_told_from_another_error() -> None:
    assert observe_error(EngineError("engine 1 died")).state is TaskState.DIED
    failed = observe_error(RuntimeError("no"))
    assert failed.state is TaskState.FAILED and str(failed.error) == "no"

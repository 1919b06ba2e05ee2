"""PendingResults: the jobs a result set waits for, alone."""

from __future__ import annotations

import pytest

from epyclab.errors import PendingResultException, UnstorableValueError
from epyclab.notebooks.pending import PendingResults


def test_jobs_are_kept_in_order_with_their_parameters():
    p = PendingResults()
    p.add({"a": 1, "b": "x"}, "j1")
    p.add({"a": 2, "c": 0.5}, "j2")
    assert p.jobs() == ["j1", "j2"] and len(p) == 2 and "j1" in p and "j3" not in p
    assert p.parameters("j2") == {"a": 2, "c": 0.5}
    assert p.parameterNames() == ["a", "b", "c"]
    assert p.values("a") == [1, 2] and p.values("c") == [0.5]
    assert p.jobsFor({"a": 1}) == ["j1"] and p.jobsFor({"a": [1, 2]}) == ["j1", "j2"]
    assert p.jobsFor({"c": 0.5}) == ["j2"] and p.jobsFor({"d": 1}) == []


def test_the_parameters_are_copied_when_added():
    p, params = PendingResults(), {"a": 1}
    p.add(params, "j")
    params["a"] = 2
    assert p.parameters("j") == {"a": 1}


def test_a_job_pending_twice_or_missing_is_refused():
    p = PendingResults()
    p.add({}, "j")
    with pytest.raises(PendingResultException, match="already pending"):
        p.add({}, "j")
    with pytest.raises(PendingResultException):
        p.remove("k")
    with pytest.raises(PendingResultException):
        p.parameters("k")


def test_unstorable_names_and_values_are_refused_and_nothing_is_kept():
    p = PendingResults()
    with pytest.raises(UnstorableValueError, match="'bad'"):
        p.add({"bad": {"a": "dict"}}, "j")
    with pytest.raises(UnstorableValueError):
        p.add({"a\x00b": 1}, "j")
    with pytest.raises(UnstorableValueError):
        p.add({}, "j\x00")
    assert len(p) == 0 and p.version() == 0


def test_the_version_changes_at_every_change_and_only_then():
    p = PendingResults()
    versions = [p.version()]
    p.add({}, "j1")
    versions.append(p.version())
    p.jobs(), p.items(), p.jobsFor({})
    assert p.version() == versions[-1]
    p.remove("j1")
    versions.append(p.version())
    p.apply({"j2": {"a": 1}}, [])
    versions.append(p.version())
    assert len(set(versions)) == 4


def test_a_recorded_change_is_replayed_unchecked_and_a_load_replaces_everything():
    p = PendingResults()
    p.add({"a": 1}, "j1")
    p.apply({"j2": {"a": 2}}, ["j1", "gone already"])
    assert p.items() == {"j2": {"a": 2}}
    p.load({"j9": {"a": 9}})
    assert p.jobs() == ["j9"]

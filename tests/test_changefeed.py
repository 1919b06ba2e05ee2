"""changefeed: marks and changes over any ChangeSource (here a real ResultSet, read through its methods)."""

from __future__ import annotations

from epyclab.notebooks.changefeed import change_mark, changes_since
from epyclab.notebooks.resultset import ResultSet


def rc(i, **results):
    return {"parameters": {"i": i}, "metadata": {}, "results": results}


def test_a_mark_records_rows_columns_pending_and_versions():
    rs = ResultSet()
    rs.addSingleResult(rc(0, y=1.0))
    rs.addSinglePendingResult({"i": 1}, "j")
    mark = change_mark(rs)
    assert mark.rows == 1 and mark.sizes == (1, 1, 0) and mark.pending == {"j": {"i": 1}}
    assert (mark.state_version, mark.pending_version) == rs.versions()


def test_unchanged_pending_results_are_not_copied_again():
    rs = ResultSet()
    rs.addSinglePendingResult({"i": 1}, "j")
    mark = change_mark(rs)
    rs.addSingleResult(rc(0, y=1.0))
    changes = changes_since(rs, mark)
    assert changes.mark.pending is mark.pending  # shared: a commit costs what it adds
    assert not changes.pending_changed and changes.pending_added == {} and changes.pending_removed == []


def test_roles_are_given_only_when_a_column_came():
    rs = ResultSet()
    rs.addSingleResult(rc(0, y=1.0))
    mark = change_mark(rs)
    rs.addSingleResult(rc(1, y=2.0))
    same = changes_since(rs, mark)
    assert same.roles is None and same.rows == {"i": [1], "y": [2.0]} and same.start == 1
    rs.addSingleResult(rc(2, z="new"))
    grown = changes_since(rs, same.mark)
    assert grown.roles == {"parameter": ["i"], "result": ["y", "z"], "metadata": []}
    assert grown.start == 2 and grown.rows["z"] == ["new"]


def test_a_mark_is_not_changed_by_asking_and_later_marks_see_only_later_changes():
    rs = ResultSet()
    mark = change_mark(rs)
    rs.addSinglePendingResult({"i": 1}, "j1")
    rs["note"] = 1
    first = changes_since(rs, mark)
    assert first.pending_added == {"j1": {"i": 1}} and first.state_changed
    assert changes_since(rs, mark).pending_added == {"j1": {"i": 1}}  # asking again: the same
    rs.resolveSinglePendingResult("j1")
    second = changes_since(rs, first.mark)
    assert second.pending_removed == ["j1"] and second.pending_added == {} and not second.state_changed

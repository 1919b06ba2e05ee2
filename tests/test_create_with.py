"""createWith's failure is told once: by the exception it re-raises, or (propagate=False) by a warning."""

from __future__ import annotations

import logging

import pytest

from epyclab import Lab, LabNotebook


def _fails(lab: Lab) -> None:
    raise ValueError("no data for this set")


def test_a_failure_that_is_re_raised_is_logged_without_a_second_traceback(caplog):
    lab = Lab(LabNotebook())
    with caplog.at_level(logging.DEBUG, logger="epyclab"), pytest.raises(ValueError, match="no data"):
        lab.createWith("broken", _fails)
    records = [r for r in caplog.records if "broken" in r.getMessage()]
    assert [(r.levelno, r.exc_info) for r in records] == [(logging.INFO, None)]
    assert "no data for this set" in records[0].getMessage()
    assert "broken" not in lab.notebook().resultSets()


def test_a_failure_returned_as_false_is_logged_as_a_warning_with_its_traceback(caplog):
    lab = Lab(LabNotebook())
    with caplog.at_level(logging.DEBUG, logger="epyclab"):
        assert lab.createWith("broken", _fails, propagate=False) is False
    (record,) = [r for r in caplog.records if "broken" in r.getMessage()]
    assert record.levelno == logging.WARNING and record.exc_info is not None
    assert record.exc_info[0] is ValueError

"""A point that runs far longer than the others, with no time limit, is named in the log: a hang is never silent.

Found by a new user: a forked copy hung in OpenMP (no point could finish) was
reported as running "far longer than any point that finished (0.0 s at most)",
though none had finished.
"""

from __future__ import annotations

import logging
import time

import pytest

from epyclab import Experiment, ParallelLab
from epyclab.labs.transports.scheduler import Sweep


class Sleepy(Experiment):
    """Point x sleeps ``seconds[x]``."""

    def __init__(self, seconds: list[float]) -> None:
        super().__init__()
        self._seconds = seconds

    def do(self, params):  # type: ignore[no-untyped-def]
        time.sleep(self._seconds[params["x"]])
        return {"y": params["x"]}


@pytest.mark.parametrize(
    ("seconds", "hung", "says"),
    [
        ([4.0, 4.0], "[x=0]", "and no point has finished yet"),
        ([0.01, 4.0], "[x=1]", "far longer than any point that finished ("),
    ],
    ids=["none-finished", "one-finished"],
)
def test_a_long_point_is_named_and_compared_truthfully(monkeypatch, caplog, seconds, hung, says) -> None:
    monkeypatch.setattr(Sweep, "HangSeconds", 1.0)
    lab = ParallelLab(cores=2, backend="fork")
    lab["x"] = range(len(seconds))
    with caplog.at_level(logging.WARNING, logger="epyclab"):
        lab.runExperiment(Sleepy(seconds), progress=False)
    assert len(lab.dataframe()) == len(seconds)
    warnings = [r.getMessage() for r in caplog.records if "has been running for" in r.getMessage()]
    assert any(hung in w and says in w for w in warnings), warnings
    if hung == "[x=0]":
        assert not any("s at most" in w for w in warnings), warnings

"""Git is asked for a sweep's provenance while its first points run, and leaves no process behind.

(What is recorded is checked in tests/test_cluster_provenance.py.)
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest

from epyclab.experiment import Experiment
from epyclab.labs import provenance
from epyclab.labs.lab import Lab


class Interrupted(Experiment):
    """Its first point is interrupted (as by Ctrl-C) before any result is out."""

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        os.kill(os.getpid(), signal.SIGINT)
        return {"y": 1}


def children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def test_a_sweep_stopped_before_its_first_result_leaves_no_git_process() -> None:
    before = children()
    lab = Lab()
    lab["x"] = [1, 2]
    with pytest.raises(KeyboardInterrupt):
        lab.runExperiment(Interrupted(), progress=False)
    assert lab.notebook().numberOfResults() == 0
    assert children() - before == set()


def test_a_query_closed_unread_stops_its_processes_and_one_read_gives_the_state(tmp_path: Path) -> None:
    before = children()
    provenance.GitQuery(tmp_path).close()
    assert children() - before == set()
    # Not a work tree: no state, whether asked at once or through a query.
    assert provenance.gitState(tmp_path) is None
    here = Path(__file__).resolve().parent
    assert provenance.gitState(here) == provenance.GitQuery(here).result()
    assert children() - before == set()

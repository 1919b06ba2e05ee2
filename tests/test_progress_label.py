"""A bar says what it counts: runs (with their failures) for a sweep, jobs sent for a ClusterLab's submission."""

from __future__ import annotations

from epyclab.experiment import Experiment
from epyclab.progress import Progress


def _rc(ok: bool) -> dict:
    return {Experiment.PARAMETERS: {}, Experiment.RESULTS: {}, Experiment.METADATA: {Experiment.STATUS: ok}}


def test_a_sweep_bar_counts_runs_and_failures(capsys):
    with Progress(3, enabled=True, desc="Lab") as bar:
        for ok in (True, False, True):
            bar.record(_rc(ok))
    err = capsys.readouterr().err
    assert "Lab" in err and "3/3" in err and "run" in err and "failed=1" in err


def test_a_submission_bar_counts_jobs_and_no_failures(capsys):
    with Progress(4, enabled=True, desc="ClusterLab: submitting", unit="job") as bar:
        bar.add(4, 0)
    err = capsys.readouterr().err
    assert "ClusterLab: submitting" in err and "4/4" in err and "job" in err
    assert "failed" not in err and "run/s" not in err

"""The function that runs one point: the same code inline, on local engines, or on a cluster.

Whatever the lab, a point is run by :func:`run`, so a failure is always data in
the results dict (status False, exception, traceback), never an exception that
stops a sweep.
"""

from __future__ import annotations

from typing import Any

from epyclab.experiment import Experiment, ResultsDict

__all__ = ["run"]


def run(experiment: Experiment, point: dict[str, Any]) -> ResultsDict:
    """Configure ``experiment`` for ``point``, run it, and return its results dict."""
    return experiment.set(point).run()

"""A chunk's future always ends, even when taking in its task's outcome raises.

The executor transport learns how a task ended in the task's done-callback,
run by whatever thread the executor settles its futures in; an exception
there is only logged by ``concurrent.futures``, so the chunk's future would
never end and the sweep would wait for ever. Here a real executor whose
futures cannot say how their task ended runs a sweep: the sweep ends, at once,
with an error naming the cause.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from epyclab.errors import ClusterConnectionError
from epyclab.experiment import Experiment
from epyclab.labs.parallel import ParallelLab
from epyclab.notebooks.labnotebook import LabNotebook


class Double(Experiment):
    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"y": 2 * params["x"]}


class Mute(Future):  # type: ignore[type-arg]
    """A future that ends, but cannot say how (as a buggy third-party executor's might)."""

    def exception(self, timeout: float | None = None) -> BaseException | None:
        raise RuntimeError("this executor cannot say how its task ended")


class MuteExecutor(ThreadPoolExecutor):
    """Runs tasks in threads; hands back futures that end when the task does, and cannot say how."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future:  # type: ignore[type-arg]
        inner = super().submit(fn, *args, **kwargs)
        outer = Mute()
        inner.add_done_callback(lambda _: outer.set_result(None))
        return outer


def test_a_task_whose_outcome_cannot_be_taken_in_ends_the_sweep_with_its_error() -> None:
    with MuteExecutor(2) as executor:
        nb = LabNotebook()
        lab = ParallelLab(nb, executor=executor)
        lab["x"] = range(6)
        t0 = time.monotonic()
        try:
            with pytest.raises(ClusterConnectionError, match="cannot say how its task ended"):
                lab.runExperiment(Double(), progress=False)
        finally:
            lab.shutdown()
        assert time.monotonic() - t0 < 30
        assert len(nb.dataframe(only_successful=False)) == 0

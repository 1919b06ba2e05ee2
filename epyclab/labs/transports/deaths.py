"""What a worker's death costs the points it was running: the one policy of ParallelLab and ClusterLab.

A worker (an engine, a forked copy, an executor's process) that dies while
running a chunk takes the chunk's results with it. The points are run again,
one per task (so that a point that kills its worker cannot take the others
with it), and a point whose worker died under it more than ``retries`` times
becomes a failed result carrying the last death's error: a point that crashes
its process (``os._exit``, a segfault) costs at most ``retries + 1`` workers.

A death from outside (a signal sent to the worker, its batch job cancelled or
out of walltime, its host gone) is not the point's doing: the point is run
again without counting it, up to :attr:`DeathPolicy.OutsideLimit` times (so a
worker killed over and over by something else still ends the sweep).

Both labs use :class:`DeathPolicy`: :class:`~epyclab.labs.transports.scheduler.Sweep`
(ParallelLab) as deaths are seen, and :class:`~epyclab.labs.remote.collect.Collector`
(ClusterLab) with the attempt counts it records in the notebook.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DeathPolicy", "Verdict", "RETRIES"]

#: Times a point whose worker died under it is run again before it fails (ParallelLab.Retries and
#: ClusterLab.Retries default to it).
RETRIES = 1


@dataclass(frozen=True)
class Verdict:
    """What to do after a death: run the point(s) again, or record them as failed, and why."""

    again: bool
    reason: str


@dataclass(frozen=True)
class DeathPolicy:
    """Decides, after a worker died, whether its points run again (see the module docstring)."""

    #: Times a point whose worker it killed is run again before it is a failed result.
    retries: int = RETRIES
    #: Deaths from outside a point may suffer before it is a failed result anyway.
    OutsideLimit = 16

    def after(self, deaths: int, outside: int = 0) -> Verdict:
        """The verdict for a point whose workers died ``deaths`` times under it (``outside`` more from outside).

        ``deaths`` counts this death if the point caused it.
        """
        if outside > self.OutsideLimit:
            return Verdict(False, f"its worker was ended from outside {outside} times")
        if deaths > self.retries:
            return Verdict(False, f"the workers running it died {deaths} times (the lab's Retries is {self.retries})")
        return Verdict(True, "")

    def maxDeaths(self) -> int:
        """How many workers a point that kills every worker it runs on costs before it fails."""
        return self.retries + 1

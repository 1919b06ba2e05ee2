"""The parallel lab: a sweep on every core of this machine, on a local ipyparallel cluster."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable

from epyclab.designs import Design, ExperimentalConfiguration
from epyclab.errors import ClusterConnectionError
from epyclab.experiment import ResultsDict
from epyclab.labs.lab import Lab, SweepMarks
from epyclab.log import logger
from epyclab.notebooks.labnotebook import LabNotebook

if TYPE_CHECKING:
    # ipyparallel (and IPython with it) takes about 0.5 s to import: only a sweep pays for it.
    import ipyparallel as ipp

    from epyclab.labs.parallelcluster import LocalCluster

__all__ = ["ParallelLab", "machine_cores", "resolve_cores"]


def machine_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_cores(cores: int, available: int | None = None) -> int:
    """Engines for a ``cores`` request: 0 all, +n n (capped), -n all but n; at least 1."""
    if isinstance(cores, bool) or not isinstance(cores, int):
        raise TypeError(f"cores must be an int (0 all, n > 0 that many, -n all but n), not {cores!r}")
    available = machine_cores() if available is None else available
    if cores == 0:
        n = available
    elif cores > 0:
        n = min(cores, available)
    else:
        n = available + cores
    return max(1, n)


class ParallelLab(Lab):
    """A lab that runs the points of a sweep in parallel on this machine.

    ``cores`` says how many engines to use: 0 (the default) all cores, ``n > 0``
    that many (at most the machine's), ``-n`` all but ``n``; always at least
    one. :meth:`runExperiment` returns when every point is done, with the
    results added to the notebook and committed as they arrived (every
    ``commitEvery`` results or ``commitInterval`` seconds).

    Where the engines come from, three ways:

    - By default the lab runs on this process's local ipyparallel cluster (a
      controller and the engines, on 127.0.0.1, in the profile directory
      ``profile_dir``), started on the first sweep (a second or two) and kept
      warm for the next ones, so a Jupyter user's next cell starts at once
      (see :mod:`epyclab.labs.warm`). The first sweep does not wait for it:
      until every engine has registered, a forked copy of this process runs
      points (see :mod:`epyclab.labs.interim`; ``UseInterim = False`` turns
      that off), so a short sweep may end before the cluster is even up. It is stopped at interpreter exit, after
      :data:`epyclab.labs.warm.IDLE_SECONDS` without a sweep, by
      :meth:`shutdown`, and when a sweep ends with an error (the controller
      died, the notebook raised, Ctrl-C: the results that finished are
      committed, then the error propagates). Engines that die are replaced. No
      process it started outlives this one; a cluster left behind by a killed
      Python process is stopped by the next start.
    - ``cluster=``: an ``ipyparallel.Cluster`` you started (e.g.
      ``cluster = ipyparallel.Cluster(n=4); cluster.start_cluster_sync()``).
      The lab connects to it for each sweep and leaves it running; you stop
      it (``cluster.stop_cluster_sync()``). Use it for many short sweeps, in
      Jupyter, or to choose the cluster's settings yourself.
    - ``client=``: an ``ipyparallel.Client`` already connected (e.g. from
      ``with ipyparallel.Cluster(n=4) as client:``). The lab uses all of its
      engines and neither closes it nor stops them. Use it when you already
      hold a client for other work.

    An experiment travels to the engines with dill (classes defined in a
    script or in Jupyter work), once per sweep; each task carries only its
    points, which are batched when cheap (see
    :class:`~epyclab.labs.scheduler.ChunkSizer`). An experiment that raises is
    a failed result; an engine that dies has its points run by the others.
    """

    _runs_elsewhere = True  # on engines: their output is replayed when results arrive

    #: While the lab's own cluster starts, run points in a forked copy of this process
    #: (see :mod:`epyclab.labs.interim`). Off, a cold sweep waits for the first engine.
    UseInterim = True

    def __init__(
        self,
        notebook: LabNotebook | None = None,
        cores: int = 0,
        design: Design | None = None,
        commitEvery: int | None = None,
        commitInterval: float | None = None,
        cluster: "ipp.Cluster | None" = None,
        client: "ipp.Client | None" = None,
        profile_dir: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        super().__init__(notebook, design, commitEvery=commitEvery, commitInterval=commitInterval)
        if cluster is not None and client is not None:
            raise ValueError("give ParallelLab a cluster or a client, not both")
        self._cores = cores
        self._n = resolve_cores(cores)
        self._cluster = cluster
        self._client = client
        self._profile_dir = profile_dir
        self._timeout = timeout
        #: The local cluster of the sweep running now (None otherwise); tests read its PIDs.
        self.localCluster: "LocalCluster | None" = None
        #: What the last sweep did: engines, largest chunk submitted, most points run by one task,
        #: chunks resubmitted because their engine died.
        self.lastSweep: dict[str, int] = {}

    def numberOfCores(self) -> int:
        """The number of engines the sweeps use."""
        if self._client is not None:
            return len(self._client.ids)
        if self._cluster is not None:
            return sum(getattr(es, "n", 0) or 0 for es in self._cluster.engines.values()) or self._n
        return self._n

    def recreate(self) -> tuple[str, dict[str, Any]]:
        cls = type(self)
        return (
            f"{cls.__module__}.{cls.__qualname__}",
            {"design": self._design, "cores": self._cores, "profile_dir": self._profile_dir},
        )

    def shutdown(self) -> None:
        """Stop the local cluster this lab started (kept warm for the next sweep); a borrowed one is left alone."""
        local, self.localCluster = self.localCluster, None
        if local is not None:
            from epyclab.labs import warm

            warm.shutdown(local)

    # ---- the engines ----------------------------------------------------------------------

    @contextmanager
    def _engines(self, blobs: dict[str, bytes]) -> Iterator[dict[str, Any]]:
        """What the sweep runs on, as keyword arguments of :class:`~epyclab.labs.scheduler.Sweep`.

        ``client`` (None while the lab's own cluster starts), ``connect``,
        ``health``, ``interim``, and ``engines``: how many to size chunks for.
        """
        if self._client is not None:
            yield {"client": self._client, "engines": max(1, len(self._client.ids))}
            return
        if self._cluster is not None:
            if self._cluster.controller is None:
                raise ClusterConnectionError(
                    "the ipyparallel.Cluster given to ParallelLab is not running; start it first "
                    "(cluster.start_cluster_sync()) or let the lab start its own (no cluster=)"
                )
            client = self._cluster.connect_client_sync()
            try:
                if not client.ids:
                    client.wait_for_engines(1, timeout=self._timeout, interactive=False)
                yield {"client": client, "engines": max(1, len(client.ids))}
            finally:
                client.close()
            return
        from epyclab.labs import warm
        from epyclab.labs.interim import Interim, fork_allowed

        local = warm.acquire(self._n, self._profile_dir, self._timeout)
        self.localCluster = local
        broken = True
        try:
            make_interim: Callable[[Callable[[Any], None]], Interim] | None = None
            if self.UseInterim and not local.ready() and fork_allowed():
                # The engines are not all there yet: a copy of this process runs points meanwhile,
                # from the start (before the controller is even launched).
                def make_interim(deliver: Callable[[Any], None]) -> Interim:
                    copy = Interim(blobs, deliver, local.log_file("interim"))
                    local.adopt(copy.pid)
                    return copy

            def connect() -> "ipp.Client | None":
                local.launch()  # once: the controller and the engines start while the copy works
                local.poll()
                return local.client

            yield {"client": local.client if local.ready() else None, "connect": connect,
                   "health": local.check, "interim": make_interim, "engines": self._n}
            broken = False
        finally:
            # A sweep that ended with an error may leave a point running on an engine: start afresh.
            warm.release(local, broken=broken)

    # ---- running ------------------------------------------------------------------------------

    def _dispatch(self, points: ExperimentalConfiguration, sweep: SweepMarks) -> Iterator[tuple[int, ResultsDict]]:
        """Run the points on the engines; yield each result as it arrives."""
        from epyclab.labs.scheduler import ChunkSizer, Sweep
        from epyclab.labs.wire import client_paths, package

        # Serialize first: an experiment that cannot travel fails before any process starts.
        items, payloads = package(points)
        with self._engines({key: pl.blob for key, pl in payloads.items()}) as on:
            engines = on.pop("engines")
            sizer = ChunkSizer(len(items), engines)
            with Sweep(items=items, payloads=payloads, sizer=sizer, paths=client_paths(), forget=True,
                       **on) as run:
                yield from run.results()
                self.lastSweep = {
                    "engines": engines,
                    "largest_chunk": run.largest_chunk,
                    "most_run_by_a_task": run.most_run_by_a_task,
                    "resubmitted": run.resubmitted,
                    "run_by_interim": run.run_by_interim,
                }
        logger.info("ParallelLab ran %d points on %d engines (largest chunk %d)", len(items), engines,
                    self.lastSweep["largest_chunk"])

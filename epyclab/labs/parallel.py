"""The parallel lab: a sweep on every core of this machine (forked copies of this process, or a local cluster)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from epyclab.designs import Design, ExperimentalConfiguration
from epyclab.experiment import ResultsDict
from epyclab.labs.lab import Lab, SweepMarks
from epyclab.labs.transports.contract import Settings, Transport, defaultTransport, makeTransport
from epyclab.labs.transports.cores import machine_cores
from epyclab.labs.transports.deaths import OUTSIDE_RETRIES, RETRIES, DeathPolicy
from epyclab.log import logger
from epyclab.notebooks.labnotebook import LabNotebook

if TYPE_CHECKING:
    # ipyparallel (and IPython with it) takes about 0.5 s to import: only a sweep pays for it.
    import ipyparallel as ipp

    from epyclab.labs.transports.localcluster import LocalCluster

__all__ = ["ParallelLab", "machine_cores", "resolve_cores"]


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

    Where the engines come from:

    - By default (``backend="auto"``), each sweep looks at this process first
      (see :mod:`epyclab.labs.transports.cleanworkers`). Where forking cannot
      hang a child (Linux, one thread, no OpenMP runtime loaded) it forks
      ``cores`` copies of this process and runs every point on them
      (``"fork"``, below); otherwise (a BLAS thread pool, OpenMP used before
      the sweep, any other thread) it runs on clean worker processes
      (``"workers"``: loky's reusable executor, as joblib's default), started
      on the first sweep and kept warm for the next ones. Either way the
      experiment's modules are imported by the workers, never pickled with
      their state. :attr:`lastBackend` says which one a sweep ran on.
    - ``backend="workers"``: always clean worker processes, kept warm (stopped
      by :meth:`shutdown`, after idling, and at exit).
    - ``backend="fork"``: each sweep forks ``cores`` copies of this process,
      whatever it holds: a copy already holds the experiment and every module,
      so the first point starts within milliseconds. **Hazard**: a process that
      used GNU OpenMP (numba, scikit-learn, PyTorch, any ``-fopenmp``
      extension) or runs other threads may leave a forked copy blocked for
      ever (with a per-point ``timeout`` the copy is stopped and the point
      fails). Each copy runs the points exactly as an engine does (output
      captured and replayed, failures as data). A copy that dies is replaced
      by a fresh fork; its points are run again, and a point that killed
      ``Retries + 1`` copies is a failed result (a copy killed from outside,
      by SIGKILL or SIGTERM, does not count against its point). The copies
      exit when the sweep ends, are killed at once on Ctrl-C or an error, and
      die with this process even if it is killed (SIGKILL). Run the sweep from
      the thread that will outlive it (a copy dies when the thread that forked
      it ends).
    - ``backend="ipyparallel"``: the lab runs on this process's local ipyparallel cluster (a
      controller and the engines, on 127.0.0.1, in the profile directory
      ``profile_dir``), started on the first sweep (a second or two) and kept
      warm for the next ones, so a Jupyter user's next cell starts at once
      (see :mod:`epyclab.labs.transports.warm`). The first sweep does not wait for it:
      until the engines have registered, forked copies of this process (one per engine to come) run
      points where forking is safe (see :mod:`epyclab.labs.transports.forkedcopy`; ``UseInterim = False`` turns
      that off), so a short sweep may end before the cluster is even up. It is stopped at interpreter exit, after
      :data:`epyclab.labs.transports.warm.IDLE_SECONDS` without a sweep, by
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
    - ``executor=``: any ``concurrent.futures.Executor`` (a
      ``ProcessPoolExecutor`` of any start method, a loky executor) or a Dask
      ``distributed.Client`` (or its ``get_executor()``), so a sweep runs
      unchanged on a Dask cluster (dask-jobqueue, dask-gateway, Kubernetes).
      Same chunks, progress, commits, captured output, failures as data and
      death handling as the other transports (see
      :mod:`epyclab.labs.transports.executors`); the executor is yours to shut down.

    An experiment travels to the workers as cloudpickle bytes (classes defined
    in a script, in Jupyter or in a module beside the script travel by value,
    installed packages by reference), once per sweep; each task carries only its
    points, which are batched when cheap (see
    :class:`~epyclab.labs.transports.scheduler.ChunkSizer`). An experiment that raises is
    a failed result; an engine that dies has its points run by the others.

    Other local transports can be registered by name
    (:func:`epyclab.labs.transports.contract.registerTransport`, shaped like the notebook
    format registry); every transport runs under the same scheduler
    (:class:`~epyclab.labs.transports.scheduler.Sweep`) and the same death policy as
    ClusterLab (:mod:`epyclab.labs.transports.deaths`, :attr:`Retries`).

    Raises:
        ValueError: more than one of ``cluster``, ``client`` and ``executor``; ``backend`` with any;
            an unknown ``backend`` (or ``"fork"`` where forking is not allowed).
    """

    _runs_elsewhere = True  # on engines: their output is replayed when results arrive

    #: While the lab's own cluster starts, run points in a forked copy of this process
    #: (see :mod:`epyclab.labs.transports.forkedcopy`). Off, a cold sweep waits for the first engine.
    UseInterim = True
    #: Times a point whose worker died under it is run again before it is a failed result (see
    #: :mod:`epyclab.labs.transports.deaths`; ClusterLab has the same): a point that crashes its process costs
    #: at most Retries + 1 workers.
    Retries = RETRIES
    #: Times a point whose worker was ended from outside (a signal from another process) is run again,
    #: not counted against it, before it is a failed result anyway (the same policy as ClusterLab's).
    OutsideRetries = OUTSIDE_RETRIES

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
        backend: str | None = None,
        executor: Any = None,
    ) -> None:
        super().__init__(notebook, design, commitEvery=commitEvery, commitInterval=commitInterval)
        offered = (("cluster", cluster), ("client", client), ("executor", executor))
        given = [name for name, v in offered if v is not None]
        if len(given) > 1:
            raise ValueError(f"give ParallelLab one of cluster, client or executor, not {' and '.join(given)}")
        if backend is not None and given:
            raise ValueError(f"ParallelLab(backend={backend!r}) runs on its own workers: give it a backend, or a "
                             f"{given[0]} to run on, not both")
        self._cores = cores
        self._n = resolve_cores(cores)
        self._cluster = cluster
        self._client = client
        self._profile_dir = profile_dir
        self._timeout = timeout
        self._backend_name = backend
        # Where the points run when no cluster or client is given; a bad name fails here, at once.
        self._local: Transport | None = None
        self._executor: Transport | None = None
        if executor is not None:
            from epyclab.labs.transports.executors import ExecutorTransport

            self._executor = ExecutorTransport(executor)
        elif cluster is None and client is None:
            self._local = makeTransport(backend, Settings(self._n, profile_dir, timeout, self.UseInterim))
        #: The PIDs of the copies of this process the last sweep forked (the fork backend's workers).
        self.lastCopies: list[int] = []
        #: What the last sweep did: engines, largest chunk submitted, most points run by one task,
        #: chunks resubmitted because their engine died, points run by forked copies, copies forked
        #: (and how many of them replaced one that died).
        self.lastSweep: dict[str, int] = {}
        #: What the last sweep ran on: a backend's name ("fork" or "workers" when the default, "auto",
        #: chose), or "client", "cluster", "executor".
        self.lastBackend: str | None = None

    @property
    def localCluster(self) -> "LocalCluster | None":
        """The local ipyparallel cluster of the last sweep (None on the fork backend, or with a cluster or client)."""
        from epyclab.labs.transports.coldstart import LocalClusterTransport

        return self._local.localCluster if isinstance(self._local, LocalClusterTransport) else None

    def backend(self) -> str | None:
        """The name of the local backend the sweeps run on (None with ``cluster=`` or ``client=``)."""
        if self._local is None:
            return None
        return self._backend_name or defaultTransport()

    def numberOfCores(self) -> int:
        """The number of engines the sweeps use."""
        if self._executor is not None:
            return self._executor.engines()[1]
        if self._client is not None:
            return len(self._client.ids)
        if self._cluster is not None:
            return sum(getattr(es, "n", 0) or 0 for es in self._cluster.engines.values()) or self._n
        return self._n

    def recreate(self) -> tuple[str, dict[str, Any]]:
        cls = type(self)
        return (
            f"{cls.__module__}.{cls.__qualname__}",
            {"design": self._design, "cores": self._cores, "profile_dir": self._profile_dir,
             "backend": self._backend_name},
        )

    def shutdown(self) -> None:
        """Stop the local cluster this lab started (kept warm for the next sweep); a borrowed one is left alone.

        On the fork backend there is nothing to stop: a sweep's copies end with it.
        """
        if self._local is not None:
            self._local.close()

    # ---- the engines ----------------------------------------------------------------------

    def _transport(self) -> Transport:
        """What the next sweep runs on: the user's executor, client or cluster, or the lab's own local transport."""
        if self._executor is not None:
            return self._executor
        if self._client is not None:
            from epyclab.labs.transports.ipyparallelclient import ClientTransport

            return ClientTransport(self._client)
        if self._cluster is not None:
            from epyclab.labs.transports.ipyparallelclient import ClusterTransport

            return ClusterTransport(self._cluster, self._timeout)
        assert self._local is not None
        return self._local

    # ---- running ------------------------------------------------------------------------------

    def _dispatch(self, points: ExperimentalConfiguration, sweep: SweepMarks) -> Iterator[tuple[int, ResultsDict]]:
        """Run the points on the transport; yield each result as it arrives."""
        from epyclab.labs.engine.wire import package
        from epyclab.labs.transports.scheduler import ChunkSizer, Sweep

        # Serialize first: an experiment that cannot travel fails before any process starts.
        items, payloads = package(points)
        transport = self._transport()
        transport.begin(payloads)
        engines = transport.engines()[1]
        policy = DeathPolicy(self.Retries, self.OutsideRetries)
        run = Sweep(transport, items, payloads, ChunkSizer(len(items), engines), policy, self._limit)
        finished = False
        try:
            yield from run.results()
            finished = True
        finally:
            run.close()
            # An abandoned sweep (an error, Ctrl-C) may leave points running: the transport stops them.
            transport.end(abandon=not finished)
            self._record_sweep(transport, run, engines)
        logger.info("ParallelLab ran %d points on %d engines (largest chunk %d)", len(items), engines,
                    self.lastSweep["largest_chunk"])

    def _record_sweep(self, transport: Transport, run: Any, engines: int) -> None:
        """Keep what the last sweep did, for :attr:`lastSweep` and :attr:`lastCopies`."""
        self.lastBackend = (getattr(transport, "chosen", None) or self.backend()
                            or next(k for k, v in (("executor", self._executor), ("client", self._client),
                                                   ("cluster", self._cluster)) if v is not None))
        pids = getattr(transport, "pids", None)
        forks = getattr(transport, "forks", None)
        self.lastCopies = pids() if pids is not None else []
        forked, replaced = forks() if forks is not None else (0, 0)
        self.lastSweep = {
            "engines": engines,
            "largest_chunk": run.largest_chunk,
            "most_run_by_a_task": run.most_run_by_a_task,
            "resubmitted": run.resubmitted,
            "outside_deaths": run.outside_deaths,
            "counted_deaths": run.counted_deaths,
            "run_by_interim": run.run_by_interim,
            "forked": forked,
            "replaced": replaced,
        }

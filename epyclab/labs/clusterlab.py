"""The cluster lab: submit a sweep to a running ipyparallel controller, disconnect, collect later."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from time import monotonic
from typing import Any

import ipyparallel as ipp

from epyclab.designs import Design, ExperimentalConfiguration
from epyclab.errors import ClusterConnectionError
from epyclab.labs import provenance
from epyclab.labs.engine.wire import client_paths, package, submit_chunk
from epyclab.labs.interrupts import oneLineOnCtrlC
from epyclab.labs.lab import Committer, Lab, Submitted, SweepMarks
from epyclab.labs.remote.collect import SUBMITTED_ATTRIBUTE, Collector, Tally
from epyclab.labs.remote.hub import Connection, Hub, NoAnswer
from epyclab.labs.remote.jobs import HUB_RECORD_LIMIT, chunk_size, fit_to_hub, group_by_task, job_id, split
from epyclab.labs.remote.placement import Placement, engineHost
from epyclab.labs.remote.points import PointCounts, describeCounts, hubTasks, pointCounts
from epyclab.labs.transports.deaths import CLUSTER_OUTSIDE_RETRIES, RETRIES
from epyclab.log import logger
from epyclab.notebooks.labnotebook import LabNotebook
from epyclab.progress import Progress

__all__ = ["ClusterLab"]


class ClusterLab(Lab):
    """A lab whose points run on a remote ipyparallel cluster, collected now or days later.

    **Connecting.** The connection arguments are those of
    ``ipyparallel.Client``: a ``profile`` name (``~/.ipython/profile_<name>``),
    a ``profile_dir``, or the controller's client connection file
    (``url_file``), with ``cluster_id``, ``ipython_dir``, ``timeout`` and the
    ssh options as there. The lab connects when it is made (trying
    :attr:`Reconnections` times); if no controller answers it raises
    :class:`~epyclab.errors.ClusterConnectionError` naming the profile or file
    and the command that starts a controller (``epyclab cluster start
    PROFILE``).

    Keyword-only options: ``design`` (as for :class:`Lab`), ``lost``
    (``'resubmit'`` or ``'fail'``, see below), ``chunkSize`` (points per task;
    None lets the lab choose), ``commitEvery`` / ``commitInterval`` (how often
    :meth:`wait` commits the notebook), ``hubRecordLimit`` (see below),
    ``hostParameter`` and ``maxPerNode`` (see *Data locality*). Other keywords go to
    ``ipyparallel.Client``.

    **Submitting.** :meth:`runExperiment` serializes the experiment once (with
    cloudpickle; the user's own modules by reference with their source, so
    engines that lack them import the source: see
    :mod:`epyclab.labs.engine.packaging`), submits the points in
    chunks, one task per chunk, without waiting, records each point as a
    pending result in the notebook's current result set, commits, and
    returns. A point's job id is ``"<task id>/<index in chunk>"``: collecting
    one task resolves its whole chunk, and the ids are plain text that
    survive reopening the notebook. Every task carries the experiment's
    bytes, so an engine that joins later, or restarts, can run it (each
    engine unpacks it once). Chunks hold ``chunkSize`` points, or by default
    ``ceil(points / (8 * engines))`` capped at 50 (see
    :func:`epyclab.labs.remote.jobs.chunk_size`); give ``chunkSize=1`` when each
    point takes seconds or more.

    **Collecting.** :meth:`updateResults` collects every finished task (from
    this process, or any other process that opens the notebook later and
    connects to the same controller), resolves its points in whichever result
    set holds them, commits, and purges the task from the hub. A failed task
    never blocks the others. :meth:`wait` collects until nothing is pending
    (or ``timeout`` seconds), with a progress bar; it returns within a
    fraction of a second of the last job finishing (the futures of tasks
    this process submitted wake it; other tasks are polled every
    :attr:`WaitingTime` seconds).

    **Nothing is lost silently** (see :mod:`epyclab.labs.remote.collect`). A task
    whose engine died is resubmitted, one point per task when this process
    has the experiment, at most :attr:`Retries` times (so a point that kills
    its engine costs at most ``Retries + 1`` engines, then is a failed result
    carrying the EngineError). An engine ended from outside (its batch job
    cancelled, preempted, out of walltime, its node failed: see
    :mod:`epyclab.clustersetup.outside`) costs its points nothing, up to
    :attr:`OutsideRetries` times (default 10); a point ended from outside
    once more is a failed result whose error says so and how to raise the
    bound. A task the controller lost is found and, with
    ``lost='resubmit'`` (the default), resubmitted at most
    :attr:`LostRetries` times, or, with ``lost='fail'``, recorded as failed
    results carrying a :class:`~epyclab.labs.remote.jobs.LostJobError` that says
    why. Lost means: the hub has no record of it and is not running it
    (culled from its store, or gone with a controller that stopped), declared
    only :attr:`LostGrace` seconds after submission since the hub records a
    task a moment after it is sent; or the hub knows it but is not running it
    (the controller restarted while it was queued or running); or it was
    given to an engine that never received it (found by sending that engine
    a trivial task, which it runs only after all it received before). The
    hub resubmits a task it knows from the request it stored, so any process
    can; a task missing from the hub can only be resubmitted by the process
    that has the experiment, and otherwise becomes failed results, which
    ``runExperiment(e, resume=True)`` runs again. After seeing a controller
    restart the lab waits until the engines answer again before submitting
    anything (a restarted controller drops tasks sent to engines that have
    not reconnected). ``updateResults(purge=True)`` cancels dead and lost
    tasks instead of resubmitting them; it never drops one that is queued,
    running, or finished. If the controller stops answering, the lab
    reconnects (:attr:`Reconnections` attempts, so ``wait(timeout)`` can
    overrun its timeout by that much) and otherwise raises
    :class:`~epyclab.errors.ClusterConnectionError`; the pending results stay
    in the notebook.

    **Controller settings that keep results.** ipyparallel's default task
    store keeps 1024 records in memory and culls the oldest 10% (finished or
    not) when a task is submitted past that, and it loses everything when
    the controller stops. Profiles made by ``epyclab cluster init`` use
    :class:`epyclab.clustersetup.taskstore.TaskStore`, an SQLite store that a
    restarted controller reads again, and make the controller reuse its
    connection files and restore its engines, so that clients and engines
    reconnect to a restarted controller. By hand::

        ipcontroller --profile=P --reuse --restore \\
            --IPController.db_class=epyclab.clustersetup.taskstore.TaskStore

    On a controller with the default in-memory store the lab sizes its chunks
    so that a sweep's tasks, with what the hub holds already, stay within 90%
    of ``hubRecordLimit`` (default 1024, ipyparallel's ``c.DictDB.record_limit``;
    give the controller's own if it was changed), so that none is culled
    before it is collected; a ``chunkSize`` given too small for that, or a
    hub already full, is refused with :class:`~epyclab.labs.remote.jobs.HubCapacityError`
    saying how to start a durable controller. The store is recognised by the
    queries it accepts (see :meth:`epyclab.labs.remote.hub.Hub.culls`).

    **Data locality.** A point whose parameters include ``hostParameter``
    (default ``'host'``) runs only on engines of that host (an engine started
    for that worker by ``epyclab cluster start``, or on a machine of that host
    name), through ipyparallel ``targets``, and on at most ``maxPerNode`` of
    them, so no host runs more than ``maxPerNode`` of those points at once;
    resubmitted points keep their host. A host no engine runs on is refused
    (:class:`~epyclab.labs.remote.placement.PlacementError`) before anything is
    submitted. :func:`~epyclab.labs.remote.placement.readMapfile` reads a LOFAR-style
    mapfile (host -> input files) into the ranges of a pointwise design.

    Engine-side code never raises because of the experiment (a failure is a
    failed result), and the lab's view does not use ipyparallel's
    ``retries``: those would re-run ordinary errors too.
    """

    _runs_elsewhere = True  # on engines: their output is replayed when results arrive
    _submits = True  # runExperiment submits; wait() or updateResults() collects (said on Ctrl-C)

    #: Seconds between checks for finished jobs of other processes in :meth:`wait`.
    WaitingTime = 0.25
    #: Attempts at connecting (or reconnecting) before giving up.
    Reconnections = 5
    #: Times a point whose engine died is resubmitted before it fails (so a point that kills its
    #: engine costs at most Retries + 1 engines).
    Retries = RETRIES
    #: Times a point whose engine was ended from outside (a signal from the batch system, or its job's state:
    #: a failed node, preemption, walltime) is resubmitted, not counted as a retry, before it fails anyway: a
    #: point whose jobs are preempted again and again, or a broken node, must not be resubmitted for ever.
    OutsideRetries = CLUSTER_OUTSIDE_RETRIES
    #: Times a point the controller lost (culled, orphaned, stuck) is resubmitted before it fails.
    LostRetries = 3
    #: Seconds after submission before a task missing from the hub is declared lost.
    LostGrace = 20.0
    #: Seconds between full checks (tasks of this process included) in :meth:`wait`.
    CheckSeconds = 2.0
    #: Seconds between attempts at reconnecting.
    ReconnectDelay = 1.0
    #: Seconds wait() lets other tasks finish after one did, before collecting (fewer, larger passes).
    CoalesceSeconds = 0.02
    #: Seconds between checks of which tasks the controller still runs (finds tasks it lost).
    OrphanCheckSeconds = 5.0
    #: Seconds between the per-result-set counts of points (queued, running, done, failed) wait() logs.
    CountsSeconds = 60.0

    def __init__(
        self,
        notebook: LabNotebook | None = None,
        url_file: str | None = None,
        profile: str | None = None,
        profile_dir: str | None = None,
        ipython_dir: str | None = None,
        context: Any = None,
        debug: bool = False,
        sshserver: str | None = None,
        sshkey: str | None = None,
        password: str | None = None,
        paramiko: bool | None = None,
        timeout: float = 10,
        cluster_id: str | None = None,
        *,
        design: Design | None = None,
        lost: str = "resubmit",
        chunkSize: int | None = None,
        commitEvery: int | None = None,
        commitInterval: float | None = None,
        hubRecordLimit: int | None = None,
        hostParameter: str = "host",
        maxPerNode: int | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(notebook, design, commitEvery=commitEvery, commitInterval=commitInterval)
        if chunkSize is not None and (isinstance(chunkSize, bool) or not isinstance(chunkSize, int) or chunkSize < 1):
            raise ValueError(f"chunkSize must be a positive int or None (the lab chooses), not {chunkSize!r}")
        self._connection = Connection(
            url_file=url_file, profile=profile, profile_dir=profile_dir, ipython_dir=ipython_dir, context=context,
            debug=debug, sshserver=sshserver, sshkey=sshkey, password=password, paramiko=paramiko,
            timeout=timeout, cluster_id=cluster_id, extra=dict(extra),
        )
        self._chunk_size = chunkSize
        self._host_parameter = hostParameter
        self._max_per_node = maxPerNode
        if maxPerNode is not None:
            Placement({}, maxPerNode)  # checks the value now, not at the first sweep
        self._placement_: Placement | None = None
        self._environments: Any = None
        self._views: dict[tuple[int, ...], Any] = {}
        self._record_limit = HUB_RECORD_LIMIT if hubRecordLimit is None else int(hubRecordLimit)
        self._hub_: Hub | None = None
        self._session: str | None = None  # the hub session last seen, to notice a restart across reconnections
        self._view: Any = None
        self._paths = client_paths()
        self._wakeup = threading.Event()
        self._collector = Collector(
            self._notebook, self._hub, self._submit,
            lost=lost, retries=self.Retries, grace=self.LostGrace, settle=self._settle,
            outside=self._ended_from_outside, outside_retries=self.OutsideRetries,
        )
        self.open()

    # ---- connection ------------------------------------------------------------------------

    def connect(self) -> None:
        """Connect to the controller (a no-op when connected); ClusterConnectionError if none answers."""
        if self._hub_ is not None:
            return
        client = self._connection.open(self.Reconnections, self.ReconnectDelay)
        self._hub_ = Hub(client, self._connection.timeout, self._session, where=self._connection.where())
        self._collector.reset()
        view = client.load_balanced_view()
        # Engine death is handled by the lab (resubmission); retries would re-run ordinary errors too.
        view.retries = 0
        self._view = view
        logger.info("connected to %s: %d engines", self._connection.where(), len(client.ids))

    def _ended_from_outside(self, engine: str) -> str | None:
        """Why ``engine`` (a uuid) was ended from outside, by the marker it left in the profile (None: no marker)."""
        from epyclab.clustersetup.outside import endedFromOutside
        from epyclab.clustersetup.witness import askScheduler

        # The connection file is <profile>/security/<file>: markers are in <profile>/ended/.
        profile = self._connection.connection_file().parent.parent
        why = endedFromOutside(profile, engine)
        if why is not None:
            return why
        # No marker: an engine of a batch job may have died with no signal it could act on (its node failed,
        # a preemption killed it at once); its job's state is the witness (clustersetup/witness.py).
        try:
            marked = askScheduler(profile, engine)
        except OSError as exc:  # the profile's files cannot be read: the death counts, as without a witness
            logger.info("could not ask the scheduler about engine %s: %s", engine, exc)
            return None
        return endedFromOutside(profile, engine) if marked else None

    def _hub(self) -> Hub:
        self.connect()
        assert self._hub_ is not None
        return self._hub_

    def _disconnect(self) -> None:
        hub, self._hub_ = self._hub_, None
        if hub is not None and hub.session is not None:
            self._session = hub.session
        self._view = None
        self._views.clear()
        self._placement_ = None
        # The old client's futures will never fire: tasks of this lab are now followed through the hub.
        self._collector.tasks.detach()
        if hub is not None:
            hub.close()

    def _reconnect(self, why: BaseException) -> None:
        logger.warning("%s; reconnecting to %s", why, self._connection.where())
        self._disconnect()
        self.connect()

    def open(self) -> None:
        """Open the notebook and connect to the controller."""
        super().open()
        self.connect()

    def close(self) -> None:
        """Purge what was collected from the hub, disconnect (the cluster keeps running), and close the notebook."""
        try:
            if self._hub_ is not None and self._collector.purgesOutstanding():
                self._collector.flushPurges(self._hub_)
        except Exception as exc:
            logger.warning("could not purge collected tasks from the hub before closing: %s", exc)
        finally:
            self._disconnect()
            super().close()

    def client(self) -> ipp.Client:
        """The ipyparallel client (connecting if needed)."""
        return self._hub().client

    def numberOfEngines(self) -> int:
        """How many engines the controller has now."""
        return len(self._hub().client.ids)

    def engines(self) -> ipp.DirectView:
        """A direct view on every engine."""
        return self._hub().client[:]

    def sync_imports(self, quiet: bool = False) -> Any:
        """A context manager importing modules here and on every engine (ipyparallel's ``sync_imports``)."""
        return self.engines().sync_imports(quiet=quiet)

    def engineEnvironments(self) -> list[dict[str, str]]:
        """The Python, platform and package versions of every engine (asked as the sweep was submitted)."""
        asked, self._environments = self._environments, None
        if asked is None:
            return []
        try:
            return list(asked.get(timeout=self._connection.timeout))
        except (TimeoutError, ipp.error.CompositeError, ipp.error.RemoteError) as exc:
            logger.warning("could not ask the engines for their versions (%s); provenance records this process's",
                           exc)
            return []

    def activate(self) -> None:
        """Make the engines the target of the ``%px`` magics in IPython."""
        self.engines().activate()

    def recreate(self) -> tuple[str, dict[str, Any]]:
        cls = type(self)
        c = self._connection
        kwargs: dict[str, Any] = {"design": self._design}
        for name in ("url_file", "profile", "profile_dir", "ipython_dir", "sshserver", "sshkey", "cluster_id"):
            if getattr(c, name) is not None:
                kwargs[name] = getattr(c, name)
        kwargs["timeout"] = c.timeout
        return (f"{cls.__module__}.{cls.__qualname__}", kwargs)

    # ---- submitting ------------------------------------------------------------------------

    def _progress_label(self) -> tuple[str, str]:
        # runExperiment only submits: its bar counts jobs sent, not runs done (wait() shows those).
        return f"{type(self).__name__}: submitting", "job"

    def _dispatch(self, points: ExperimentalConfiguration, sweep: SweepMarks) -> Iterator[tuple[int, Submitted]]:
        """Submit the points in chunks without waiting; yield each as Submitted under its job id.

        :meth:`Lab.runExperiment` records each as a pending result of the
        current result set and commits before returning. Collect with
        :meth:`updateResults` or :meth:`wait`.
        """
        # Serialize first: an experiment that cannot travel fails before anything is submitted.
        items, payloads = package(points)
        hub = self._hub()
        engines = len(hub.client.ids)
        if engines == 0:
            logger.warning("no engines are registered yet; the tasks wait at the controller until some join")
        size = self._chunk_size or chunk_size(len(items), engines)
        if hub.culls():
            # Every task of the sweep must still be at the hub when it is collected.
            size = fit_to_hub(len(items), size, self._record_limit, hub.recordCount(),
                              self._chunk_size is not None, self._connection.where())
        hub.settle()
        if engines and f"{provenance.PREFIX}python" not in self._notebook.current():
            # Asked before the sweep's tasks, so the engines answer at once (see engineEnvironments).
            self._environments = hub.client[:].apply_async(provenance.environment)
        self._collector.tasks.addPayloads(payloads)
        rs = self._notebook.current()
        submitted = 0
        sent: list[str] = []
        try:
            for key, positions, chunk in self._chunks(items, size):
                marks = [sweep.mark(i) for i in positions]
                msg_id = self._submit(key, chunk, marks)
                sent.append(msg_id)
                for i, (position, p) in enumerate(zip(positions, chunk)):
                    yield position, Submitted(p, job_id(msg_id, i))
                submitted += len(chunk)
        finally:
            if submitted:
                rs[SUBMITTED_ATTRIBUTE] = time.time()
            # Also when Ctrl-C stopped the submission: the process is about to exit, and a task still in
            # its sockets' queues would be a pending result that no controller ever heard of.
            self._confirm_recorded(hub, sent, submitted)
        logger.info("submitted %d points in chunks of %d to %s", submitted, size, self._connection.where())

    def _confirm_recorded(self, hub: Hub, sent: list[str], submitted: int) -> None:
        """Wait until the hub's store holds every task in ``sent``: then the submitting process may exit at once.

        A controller killed after that does not take tasks no one else can submit again.
        """
        if not sent:
            return
        try:
            missing = hub.recorded(sent)
        except NoAnswer as exc:
            logger.warning("submitted %d points, but the controller did not confirm: %s", submitted, exc)
        else:
            if missing:
                logger.warning("submitted %d points, but after %g s the controller had not yet recorded %d of "
                               "its tasks; they are lost if it stops now", submitted, hub.timeout, len(missing))

    def _chunks(
        self, items: list[tuple[str, dict[str, Any]]], size: int
    ) -> Iterator[tuple[str, list[int], list[dict[str, Any]]]]:
        """Chunks of at most ``size`` points sharing an experiment (and a host, for placed points), with positions."""
        hosts: dict[Any, list[int]] = {}
        for position, (_, p) in enumerate(items):
            hosts.setdefault(p.get(self._host_parameter) if isinstance(p, dict) else None, []).append(position)
        if len(hosts) > 1 or None not in hosts:
            placement = self._placement()
            for host in hosts:
                if host is not None:
                    placement.targets(host)  # no engine there: refused before anything is submitted
        for positions in hosts.values():
            done = 0
            for key, chunk in split([items[i] for i in positions], size):
                yield key, positions[done:done + len(chunk)], chunk
                done += len(chunk)

    def _placement(self) -> Placement:
        """Which engines run on which host (asked once per connection; see :mod:`epyclab.labs.remote.placement`)."""
        if self._placement_ is None:
            client = self._hub().client
            ids = list(client.ids)
            where = client[ids].apply_async(engineHost).get(timeout=max(30.0, self._connection.timeout)) if ids else []
            self._placement_ = Placement(dict(zip(ids, map(tuple, where))), self._max_per_node)
        return self._placement_

    def _view_for(self, points: list[dict[str, Any]]) -> Any:
        """The load-balanced view for a chunk: all engines, or the capped engines of the chunk's host."""
        host = points[0].get(self._host_parameter) if points and isinstance(points[0], dict) else None
        if host is None:
            return self._view
        targets = tuple(self._placement().targets(host))
        view = self._views.get(targets)
        if view is None:
            view = self._views[targets] = self._hub().client.load_balanced_view(list(targets))
            view.retries = 0
        return view

    def _submit(self, key: str, points: list[dict[str, Any]], marks: list[dict[str, Any]] | None = None) -> str:
        """Submit one chunk of experiment ``key`` (``marks``: metadata for each point's row); return its task id."""
        self._hub()
        payload = self._collector.tasks.payload(key)
        ar = submit_chunk(self._view_for(points), key, points, payload.blob, self._paths, marks=marks,
                          limit=self._limit)
        msg_id = ar.msg_ids[0]
        self._collector.tasks.submitted(msg_id, key, ar)
        ar.add_done_callback(self._wake)
        return msg_id

    def _wake(self, _: Any) -> None:
        self._wakeup.set()

    # ---- collecting ------------------------------------------------------------------------

    def _update(self, purge: bool, full: bool, flush: bool = True) -> Tally:
        """One collection pass, reconnecting if the controller stops answering."""
        c = self._collector
        c.retries, c.lost_retries, c.grace = self.Retries, self.LostRetries, self.LostGrace
        c.outside_retries = self.OutsideRetries
        c.stranded.interval = self.OrphanCheckSeconds
        attempts = max(1, self.Reconnections)
        for attempt in range(1, attempts + 1):
            try:
                return self._collector.update(purge=purge, full=full, flush=flush)
            except NoAnswer as exc:
                if attempt == attempts:
                    raise ClusterConnectionError(
                        f"{self._connection.where()} stopped answering ({exc}); the pending results stay in the "
                        f"notebook: collect them once it runs again. {self._connection.how_to_start()}. "
                        f"The results collected so far can be read with lab.notebook().dataframe()"
                    ) from exc
                self._reconnect(exc)
        raise AssertionError("unreachable")

    def updateResults(self, purge: bool = False) -> int:
        """Collect the results of finished jobs into the notebook; return how many were added.

        ``purge=True`` cancels jobs whose engine died or that the controller
        lost, instead of resubmitting them (see the class docstring).
        """
        if self._notebook.numberOfAllPendingResults() == 0:
            return 0
        tally = self._update(purge, full=True)
        if tally.changed:
            self._notebook.commit()
        return tally.collected

    @oneLineOnCtrlC
    def wait(self, timeout: float = -1, progress: bool | None = None) -> bool:
        """Collect until nothing is pending in the notebook; False if ``timeout`` seconds pass first.

        ``timeout < 0`` waits for as long as it takes. ``progress`` shows a
        progress bar (True), hides it (False), or shows it when someone is
        watching (None).
        """
        nb = self._notebook
        total = nb.numberOfAllPendingResults()
        if total == 0:
            return True
        deadline = None if timeout is None or timeout < 0 else monotonic() + float(timeout)
        committer = Committer(nb, self._commit_every, self._commit_interval)
        # Tasks this lab submitted report through their futures; the hub is asked about them every CheckSeconds.
        last_full = monotonic() if len(self._collector.tasks) else -float("inf")
        self._log_counts()
        last_counts = monotonic()
        with Progress(total, progress, desc=type(self).__name__) as bar, self._committing(committer):
            while True:
                now = monotonic()
                full = now - last_full >= self.CheckSeconds
                if full:
                    last_full = now
                self._wakeup.clear()
                tally = self._update(False, full, flush=False)
                bar.add(tally.collected, tally.failed)
                if tally.changed:
                    committer.added(max(1, tally.collected))
                if nb.numberOfAllPendingResults() == 0:
                    self._update(False, False)  # purge what was collected from the hub
                    self._log_counts(finished=True)
                    return True
                if monotonic() - last_counts >= self.CountsSeconds:
                    last_counts = monotonic()
                    self._log_counts()
                left = None if deadline is None else deadline - monotonic()
                if left is not None and left <= 0:
                    return False
                if self._wakeup.wait(self.WaitingTime if left is None else min(self.WaitingTime, left)):
                    # A task finished: let the ones finishing with it arrive too, and collect them in one pass.
                    time.sleep(self.CoalesceSeconds)

    def lostPolicy(self) -> str:
        """What happens to jobs the cluster lost: ``'resubmit'`` or ``'fail'``."""
        return self._collector.lost

    def pointCounts(self) -> dict[str, PointCounts]:
        """Result set tag -> its points queued, running (in a chunk an engine runs now), finished but not
        collected (the result waits at the controller), done and failed: as ``epyclab cluster status
        PROFILE NOTEBOOK`` counts them (see :mod:`epyclab.labs.remote.points`).

        Raises:
            NoAnswer: the controller did not answer in time.
        """
        hub = self._hub()
        queues, _ = hub.request("queue_request", {"targets": None, "verbose": True})
        tasks = list(group_by_task(self._notebook.allPendingResults()))
        running, finished = hubTasks(queues, hub.records(tasks, ["msg_id", "completed"]).values())
        return pointCounts(self._notebook, running, finished)

    def _log_counts(self, finished: bool = False) -> None:
        try:
            # Finished: nothing runs, so the hub need not be asked (wait() returns without one more round trip).
            lines = describeCounts(pointCounts(self._notebook) if finished else self.pointCounts())
        except NoAnswer as exc:
            logger.info("points: the controller did not say which tasks run (%s)", exc)
            return
        logger.info("points per result set:\n%s", "\n".join(lines))

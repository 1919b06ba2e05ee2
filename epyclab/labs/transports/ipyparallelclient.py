"""ipyparallel engines as a transport (see :mod:`epyclab.labs.transports.contract`): a client's load-balanced view.

:class:`ClientTransport` submits each chunk as one load-balanced task
(:func:`epyclab.labs.engine.wire.submit_chunk`); the first chunks of a sweep (one per
engine) bring the experiment along, later ones carry only their points, and an
engine that joined later and lacks it says so (the sweep submits the chunk
again with it). A task whose engine died fails its future with
:class:`~epyclab.labs.transports.contract.WorkerDied` carrying ipyparallel's
``EngineError``; it is a death from outside when the engine's exit status
says so (:mod:`epyclab.labs.transports.deaths`: known for the lab's local
cluster, whose fork server reports how each engine ended), or, on the lab's
local cluster, when the chunk had not started on the engine (every engine
there notes a chunk in the sweep's ledger before it touches it: an engine
stopped with SIGTERM finishes its point and exits, failing the tasks queued
on it). ipyparallel's scheduler reports the tasks of an engine that
died 5 s after the death (to let results in flight arrive), so a death costs
its chunks about that much time.

:class:`ClusterTransport` connects to an ``ipyparallel.Cluster`` the user
started, for each sweep, and leaves it running.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from time import monotonic
from typing import TYPE_CHECKING, Any

from epyclab.errors import ClusterConnectionError
from epyclab.labs.engine.wire import Payload, client_paths, forget_experiment, is_engine_death, submit_chunk
from epyclab.labs.transports.contract import ChunkFuture, WorkerDied
from epyclab.labs.transports.deaths import child_exit_code, ended_from_outside, oom_kills
from epyclab.labs.transports.ledger import Ledger
from epyclab.log import logger

if TYPE_CHECKING:
    import ipyparallel as ipp
    from ipyparallel import AsyncResult

__all__ = ["ClientTransport", "ClusterTransport"]


class ClientTransport:
    """A client's engines as a transport.

    ``client`` is the connected client, or None while the cluster starts:
    ``connect()`` is then called as the sweep waits and returns the client once
    the controller is up (None before; it raises when the cluster cannot
    start). ``health()`` raises when the cluster is broken. ``expected``: the
    engines to size the sweep for (default: those the client has). With no
    engine left for :attr:`EngineGrace` seconds, :meth:`check` raises.
    """

    #: Chunks in flight per engine: the scheduler hands them out as engines free up, and enough
    #: of them hide the round trip when chunks are short. A chunk waiting in the scheduler's
    #: queue holds no point back, since the first engine to free up takes it.
    window = 4
    #: Seconds a task costs beyond its points (measured: 10-20 ms between an engine's points on a busy
    #: 2-core machine, against 1 ms in a forked copy): chunks of costly points aim longer (see ChunkSizer).
    task_seconds = 0.01
    #: Seconds without any engine before the sweep gives up.
    EngineGrace = 10.0

    def __init__(
        self,
        client: "ipp.Client | None" = None,
        connect: Callable[[], "ipp.Client | None"] | None = None,
        health: Callable[[], None] | None = None,
        expected: int | None = None,
        forget: bool = True,
        exit_code: Callable[[int], int | None] | None = None,
        local_engines: bool = False,
    ) -> None:
        if client is None and connect is None:
            raise ValueError("an ipyparallel transport needs a client or a way to connect one")
        self._client: "ipp.Client | None" = None
        self._view: Any = None
        self._connect = connect
        self._health = health
        self._forget = forget
        self._expected = expected
        self._seen = False
        self._payloads: dict[str, Payload] = {}
        self._firsts: dict[str, int] = {}
        self._paths = client_paths()
        self._pending: dict[str, "AsyncResult"] = {}
        self._finished: list["AsyncResult"] = []
        self._lock = threading.Lock()
        self._no_engines_since: float | None = None
        # Which engine runs which chunk (made for each sweep; engines on this machine write to it).
        self._ledger: Ledger | None = None
        # How an engine process that died ended (see deaths.py): the local cluster knows its engines',
        # waitpid a child's; a user's engines elsewhere are not known (their deaths count).
        self._exit_code = exit_code if exit_code is not None else child_exit_code
        # Every engine is on this machine (the lab's own local cluster): each writes in the ledger before it
        # touches a chunk, so a chunk with no entry never started.
        self._local_engines = local_engines
        self._oom: int | None = None
        if client is not None:
            self._use(client)

    def _use(self, client: "ipp.Client") -> None:
        self._client = client
        self._view = client.load_balanced_view()
        # Engine death is handled by the sweep, by resubmitting the chunk: ipyparallel's
        # retries would also re-run tasks that raised, and can hang.
        self._view.retries = 0
        if self._expected is None:
            self._expected = max(1, len(client.ids))

    def begin(self, payloads: dict[str, Payload]) -> None:
        self._payloads = dict(payloads)
        self._firsts = dict.fromkeys(payloads, 0)
        self._ledger = Ledger()
        self._oom = oom_kills()

    def connected(self) -> bool:
        """True once the transport has a client."""
        return self._client is not None

    def count(self) -> int:
        """How many engines have registered now (connecting the client if it is time)."""
        if self._client is None and self._connect is not None:
            client = self._connect()
            if client is not None:
                self._use(client)
        if self._client is None:
            return 0
        n = len(self._client.ids)
        if n:
            self._seen = True
        elif not self._seen and self._connect is not None:
            self._connect()  # raises if the engines take too long to register
        return n

    def engines(self) -> tuple[int, int]:
        return self.count(), self._expected or 1

    def capacity(self) -> int:
        self._purge()
        n = self.count()
        if self._client is None:
            return 0
        return max(1, n) * self.window

    def submit(self, key: str, points: list[dict[str, Any]], budget: float | None, ship: bool = False,
               limit: float | None = None) -> ChunkFuture:
        assert self._view is not None, "submit() before the client is connected"
        payload = self._payloads[key]
        # The first chunk to each engine brings the experiment along: no separate round trip to ship
        # it first. (An engine that gets another chunk first says so, and is sent it then.)
        first = self._firsts[key] < max(len(self._client.ids) if self._client else 0, self._expected or 1)
        self._firsts[key] += 1
        blob = payload.blob if (ship or first) else None
        future = ChunkFuture("engine")
        ledger = self._ledger.tag(future) if self._ledger is not None else None
        ar = submit_chunk(self._view, key, points, blob, self._paths if blob else None, budget, limit=limit,
                          ledger=ledger)
        with self._lock:
            self._pending[ar.msg_ids[0]] = ar
        ar.add_done_callback(lambda done: self._settle(done, future))
        return future

    def _settle(self, ar: "AsyncResult", future: ChunkFuture) -> None:
        # From ipyparallel's thread: no client call here (the sweep's thread purges).
        with self._lock:
            self._pending.pop(ar.msg_ids[0], None)
            self._finished.append(ar)
        # Before the ledger forgets the chunk: the engine process that ran it.
        entry = self._ledger.running(future, fresh=True) if self._ledger is not None else None
        if self._ledger is not None:
            self._ledger.forget(future)
        if future.done():
            return  # stopped past its time limit: the sweep has recorded its points already
        try:
            reply = ar.get(0)
        except Exception as exc:
            if is_engine_death(exc):
                from ipyparallel.error import EngineError

                code = self._exit_code(entry.pid) if entry is not None else None
                how = f"; exit status {code}" if code is not None else ""
                if entry is None and self._local_engines and self._ledger is not None:
                    # The engine died before it started this chunk (it was queued there, or the engine was
                    # between chunks): nothing of the chunk's did it. An engine stopped from outside with
                    # SIGTERM ends so: it finishes its point, then exits, failing the tasks queued on it.
                    how += "; the chunk had not started"
                    outside = True
                else:
                    outside = code is not None and ended_from_outside(code, self._oom)
                message = f"engine {ar.engine_id} died: {exc}{how}"
                self._oom = oom_kills()
                future.set_exception(WorkerDied(message, error=EngineError(message), outside=outside))
            else:
                future.set_exception(exc)
            return
        future.set_result(reply)

    def started(self, future: Any) -> float | None:
        """When ``future``'s chunk started on its engine, if the engine runs on this machine (see the ledger)."""
        return self._ledger.started(future) if self._ledger is not None else None

    def working(self) -> int:
        """How many engines on this machine have started a chunk of this sweep (so have its experiment; the ledger)."""
        return self._ledger.workers() if self._ledger is not None else 0

    def stop(self, future: Any) -> bool:
        """SIGKILL the engine running ``future``'s chunk (stuck past its time limit); False if it is not known here.

        Only an engine on this machine can be stopped (it wrote its PID in the
        sweep's ledger); the lab's own local cluster then starts a new engine in
        its place (:meth:`~epyclab.labs.transports.localcluster.LocalCluster.check`),
        a user's cluster runs on with one engine fewer. The chunk's future fails at once.
        """
        if self._ledger is None:
            return False
        pid = self._ledger.kill(future)
        if pid is None:
            return False
        from ipyparallel.error import EngineError

        message = f"engine process {pid} was stopped: its chunk ran past the time limit"
        if not future.done():
            future.set_exception(WorkerDied(message, error=EngineError(message), outside=True))
        return True

    def _purge(self) -> None:
        # The client caches every result; a long sweep would keep them all twice.
        with self._lock:
            finished, self._finished = self._finished, []
        if self._client is None:
            return
        for ar in finished:
            try:
                self._client.purge_local_results(ar)
            except RuntimeError as exc:
                logger.debug("could not purge a finished task from the client cache: %s", exc)

    def check(self) -> None:
        if self._health is not None:
            self._health()
        if self._client is None or (not self._seen and self._connect is not None):
            return  # still starting: connect() says when that takes too long
        if self._client.ids:
            self._no_engines_since = None
            return
        now = monotonic()
        if self._no_engines_since is None:
            self._no_engines_since = now
        elif now - self._no_engines_since > self.EngineGrace:
            raise ClusterConnectionError(
                f"no engine has been running for {self.EngineGrace:.0f} s, so the sweep cannot go on. "
                f"Start engines (or a new lab) and run the sweep again with resume=True"
            )

    def end(self, abandon: bool) -> None:
        """Abort the chunks not yet started and make the engines drop the experiments."""
        with self._lock:
            pending = [ar for ar in self._pending.values() if not ar.done()]
            self._pending.clear()
        ledger, self._ledger = self._ledger, None
        if ledger is not None:
            ledger.close()
        if self._client is None:
            return
        try:
            if pending:
                self._client.abort(pending, block=False)
            if self._forget:
                for key in self._payloads:
                    forget_experiment(self._client, key)
        except Exception as exc:
            # Cleaning up must not hide why the sweep ended; the engines only keep
            # a little memory (or a chunk) longer.
            logger.warning("could not abort the sweep's remaining tasks on the engines: %s", exc)

    def close(self) -> None:
        """Nothing: the client is the user's (or the local cluster's)."""


class ClusterTransport:
    """An ``ipyparallel.Cluster`` the user started: connected for each sweep, left running.

    Raises:
        ClusterConnectionError: (from :meth:`begin`) the cluster is not running, or no engine
            registered within ``timeout`` seconds.
    """

    window = ClientTransport.window
    task_seconds = ClientTransport.task_seconds

    def __init__(self, cluster: "ipp.Cluster", timeout: float) -> None:
        self._cluster = cluster
        self._timeout = timeout
        self._client: "ipp.Client | None" = None
        self._inner: ClientTransport | None = None

    def begin(self, payloads: dict[str, Payload]) -> None:
        if self._cluster.controller is None:
            raise ClusterConnectionError(
                "the ipyparallel.Cluster given to ParallelLab is not running; start it first "
                "(cluster.start_cluster_sync()) or let the lab start its own (no cluster=)"
            )
        client = self._client = self._cluster.connect_client_sync()
        if not client.ids:
            client.wait_for_engines(1, timeout=self._timeout, interactive=False)
        self._inner = ClientTransport(client)
        self._inner.begin(payloads)

    def _live(self) -> ClientTransport:
        if self._inner is None:
            raise RuntimeError("the cluster transport has no sweep: call begin() first")
        return self._inner

    def submit(self, key: str, points: list[dict[str, Any]], budget: float | None, ship: bool = False,
               limit: float | None = None) -> ChunkFuture:
        return self._live().submit(key, points, budget, ship, limit)

    def capacity(self) -> int:
        return self._live().capacity()

    def engines(self) -> tuple[int, int]:
        return self._live().engines()

    def check(self) -> None:
        self._live().check()

    def started(self, future: Any) -> float | None:
        """When ``future``'s chunk started on its engine (engines on this machine only)."""
        return self._live().started(future)

    def stop(self, future: Any) -> bool:
        """SIGKILL the engine running ``future``'s chunk, if it runs on this machine (the cluster is the user's)."""
        return self._live().stop(future)

    def end(self, abandon: bool) -> None:
        try:
            if self._inner is not None:
                self._inner.end(abandon)
        finally:
            self._inner = None
            if self._client is not None:
                self._client.close()
                self._client = None

    def close(self) -> None:
        """Nothing: the cluster is the user's to stop."""

"""ParallelLab's scheduling: how many points go in a task, and a live sweep on local engines.

:class:`ChunkSizer` decides how many points go in each task (the rule is
documented there); :class:`Sweep` runs the points on ipyparallel engines, on
forked copies of this process (:class:`~epyclab.labs.copies.CopyPool`), or
both; it keeps a few chunks per engine in flight (one per copy),
yields results as they arrive, resubmits the points of an engine that died,
and never retries an experiment that raised (that is a failed result). What
travels (packaging, submitting a chunk, decoding a reply) is in
:mod:`epyclab.labs.wire`.
"""

from __future__ import annotations

import queue
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from time import monotonic
from typing import TYPE_CHECKING, Any

from epyclab.errors import ClusterConnectionError, EngineDied, ExperimentSerializationError
from epyclab.experiment import ResultsDict, exception_text
from epyclab.labs import worker
from epyclab.labs.copies import CopyPool
from epyclab.labs.interim import Interim, InterimDied
from epyclab.labs.wire import (
    MissingExperiment,
    Payload,
    decode_reply,
    forget_experiment,
    is_engine_death,
    submit_chunk,
)
from epyclab.log import logger

if TYPE_CHECKING:
    # Only a sweep on ipyparallel engines imports ipyparallel (0.5 s); one on forked copies never does.
    from ipyparallel import AsyncResult, Client

__all__ = ["ChunkSizer", "Sweep"]


class ChunkSizer:
    """How many points go in each task, and how long a task may run.

    The rule: a chunk holds at most ``largest = total // (ChunksPerEngine *
    engines)`` points (at least 1), so every engine gets at least
    :attr:`ChunksPerEngine` chunks and the sweep ends evenly. Before anything
    is known, chunks have that largest size. Every chunk is bounded in time on
    its engine: it starts no new point after :attr:`BudgetSeconds` (0.2 s) and
    gives the rest back, to be queued again. Each finished chunk reports its
    engine's time per point (an exponentially weighted average, so a sweep
    whose points grow costlier is followed), and later chunks hold as many
    points as run in :attr:`TargetSeconds` (0.1 s), at least 1.

    So cheap points are batched until a task's fixed cost is a few percent
    of its work (measured on a 2-core machine with ipyparallel 9.2: one
    load-balanced ``apply_async`` per point gives only 300-380 trivial
    points/s, while ``map_async`` with chunks of 50 gives 14-21k points/s);
    no round trip is spent on a probe before the real work; and points
    costing 0.1 s or more end up one per task: a point is never held back
    behind more than 0.2 s of other points, and load stays balanced.

    ClusterLab keeps a rule of its own (:func:`epyclab.labs.jobs.chunk_size`),
    and must: it submits the whole sweep before any point has run, so it
    cannot time points, cannot bound a task in time (nobody is there to take
    back the rest), and sizes chunks from the point count alone.
    """

    #: Seconds of work a chunk aims at.
    TargetSeconds = 0.1
    #: A chunk starts no new point after this many seconds on its engine.
    BudgetSeconds = 0.2
    #: Every engine gets at least this many chunks (when there are enough points).
    ChunksPerEngine = 4
    #: Weight of the newest chunk in the per-point time estimate.
    Smoothing = 0.5

    def __init__(
        self,
        total: int,
        engines: int,
        target: float | None = None,
        largest: int | None = None,
        budget: float | None = None,
    ) -> None:
        self.total = max(0, int(total))
        self.engines = max(1, int(engines))
        self.target = self.TargetSeconds if target is None else float(target)
        self.budget = self.BudgetSeconds if budget is None else float(budget)
        cap = max(1, self.total // (self.ChunksPerEngine * self.engines))
        self.largest = cap if largest is None else max(1, min(cap, int(largest)))
        self.per_point: float | None = None

    def record(self, points: int, seconds: float) -> None:
        """Learn from a finished chunk of ``points`` points that took ``seconds`` on its engine."""
        if points <= 0:
            return
        t = max(seconds, 0.0) / points
        self.per_point = t if self.per_point is None else self.Smoothing * t + (1 - self.Smoothing) * self.per_point

    def estimated(self) -> bool:
        """True once a chunk has reported its time."""
        return self.per_point is not None

    def size(self) -> int:
        """The number of points for the next chunk."""
        if self.per_point is None or self.per_point <= 0:
            return self.largest
        return max(1, min(self.largest, int(self.target / self.per_point)))


# ---- a live sweep -----------------------------------------------------------------------


@dataclass
class _Chunk:
    key: str
    points: list[dict[str, Any]]
    positions: list[int]
    deaths: int = 0
    missing: int = 0
    blob: bool = False


class Sweep:
    """Runs points on a client's engines, or forked copies, and yields their results dicts as they arrive.

    ``items`` and ``payloads`` come from :func:`package`. :meth:`results` keeps
    :attr:`Window` chunks per engine in flight, sized and time-bounded by
    ``sizer`` (the points a chunk had no time for are queued again), sends
    the experiment with the first chunk for each engine, and yields exactly
    one results dict per point:

    - the points of a chunk whose engine died are resubmitted to the others,
      one per task; a point that was running on :attr:`MaxDeaths` engines
      that died (in its chunk or alone) is recorded as a failed run (an
      ``EngineError``), so a point that crashes its process cannot take
      every engine with it;
    - a task that fails for any other reason gives failed results for its
      points, and is never retried (an experiment's own failures never fail
      a task: they are failed results already); if that happens before any
      task has worked, the engines cannot run the worker at all, and the
      sweep stops with ClusterConnectionError;
    - an engine that joined after the start and was not sent the experiment
      says so; the chunk is resubmitted with the experiment;
    - with no engine left for :attr:`EngineGrace` seconds, or when
      ``health()`` (called every :attr:`PollSeconds`) raises, the sweep stops
      with that error.

    A sweep may start before its cluster is up: ``client`` is then None and
    ``connect()`` (called as the sweep waits) returns the client once the
    controller is up (None before; it raises when the cluster cannot start).

    ``copies(deliver)`` makes a :class:`~epyclab.labs.copies.CopyPool` of
    forked copies of this process; each copy is given one chunk at a time. A
    copy that dies holding a chunk counts as an engine that died, and the pool
    forks a fresh one in its place (if it replaces copies). With neither
    ``client`` nor ``connect`` the copies run every point (ParallelLab's
    ``"fork"`` backend); with the death of every copy and no fresh fork, the
    sweep stops with ClusterConnectionError. With a cluster too (its cold
    start), the sweep stops giving the copies chunks once ``sizer.engines``
    engines have registered: they finish their chunks and exit.

    ipyparallel's scheduler reports the tasks of an engine that died 5 s
    after the death (to let results in flight arrive), so an engine's death
    costs its chunks about that much time.

    Use it as a context manager: on exit, chunks not yet started are aborted
    and (with ``forget=True``) the engines drop the experiment.
    """

    #: Chunks in flight per engine: the scheduler hands them out as engines free up, and enough
    #: of them hide the round trip when chunks are short. A chunk waiting in the scheduler's
    #: queue holds no point back, since the first engine to free up takes it.
    Window = 4
    #: A point that was running on this many engines that died is recorded as failed.
    MaxDeaths = 2
    #: Seconds without any engine before the sweep gives up.
    EngineGrace = 10.0
    #: Seconds between checks while waiting for results.
    PollSeconds = 0.25

    def __init__(
        self,
        client: Client | None,
        items: list[tuple[str, dict[str, Any]]],
        payloads: dict[str, Payload],
        sizer: ChunkSizer | None = None,
        paths: list[str] | None = None,
        forget: bool = True,
        health: Callable[[], None] | None = None,
        connect: Callable[[], Client | None] | None = None,
        copies: Callable[[Callable[[Interim, Any], None]], CopyPool] | None = None,
    ) -> None:
        if client is None and connect is None and copies is None:
            raise ValueError("a sweep needs a client, a way to connect one, or forked copies")
        # Whether engines take part: then a point that kills them fails with ipyparallel's EngineError.
        self._on_engines = client is not None or connect is not None
        self._client: Client | None = None
        self._view: Any = None
        self._connect = connect
        self._items = items
        self._payloads = payloads
        engines = max(1, len(client.ids)) if client is not None else 1
        self._sizer = sizer if sizer is not None else ChunkSizer(len(items), engines)
        self._paths = paths
        self._forget = forget
        self._health = health
        if client is not None:
            self._use(client)
        self._engines_seen = False
        self._next = 0
        self._firsts = dict.fromkeys(payloads, 0)
        self._retry: deque[_Chunk] = deque()
        self._pending: dict[str, tuple[AsyncResult, _Chunk]] = {}
        self._arrived: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._no_engines_since: float | None = None
        # The forked copies that run points, and the chunk each holds.
        self._copies: CopyPool | None = None
        self._held: dict[Interim, _Chunk] = {}
        if copies is not None:
            try:
                self._copies = copies(self._from_copy)
            except OSError as exc:
                if not self._on_engines:
                    raise ClusterConnectionError(
                        f"could not fork a copy of this process to run points: {exc}. Free memory (or raise the "
                        f"process limit), or use ParallelLab(backend='ipyparallel')"
                    ) from exc
                # The sweep waits for the engines instead.
                logger.warning("could not fork a process to run points while the engines start: %s", exc)
        self._replies = 0
        #: The largest chunk submitted, and the most points one task ran (for reports).
        self.largest_chunk = 0
        self.most_run_by_a_task = 0
        #: How many chunks were resubmitted because their engine died.
        self.resubmitted = 0
        #: How many points the forked copies ran.
        self.run_by_interim = 0

    def __enter__(self) -> "Sweep":
        return self

    def _use(self, client: Client) -> None:
        self._client = client
        self._view = client.load_balanced_view()
        # Engine death is handled here, by resubmitting the chunk: ipyparallel's
        # retries would also re-run tasks that raised, and can hang.
        self._view.retries = 0

    def copy_pids(self) -> list[int]:
        """The PIDs of every copy of this process the sweep forked (none without copies)."""
        return self._copies.pids() if self._copies is not None else []

    def forks(self) -> tuple[int, int]:
        """How many copies the sweep forked in all, and how many of them replaced one that died."""
        return (self._copies.forked, self._copies.replaced) if self._copies is not None else (0, 0)

    def _from_copy(self, copy: Interim, reply: Any) -> None:
        # From a copy's reader thread: into the same queue as the engines' replies.
        self._arrived.put(_CopyReply(copy, reply))

    def _copies_open(self) -> bool:
        return self._copies is not None and self._copies.open()

    def _engine_count(self) -> int:
        if self._client is None and self._connect is not None:
            client = self._connect()
            if client is not None:
                self._use(client)
        if self._client is None:
            return 0
        n = len(self._client.ids)
        if n:
            self._engines_seen = True
        elif not self._engines_seen and self._connect is not None:
            self._connect()  # raises if the engines take too long to register
        return n

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # ---- the loop --------------------------------------------------------------------

    def results(self) -> Iterator[tuple[int, ResultsDict]]:
        """Yield ``(position in items, results dict)`` once per point, in the order they finish."""
        checked = monotonic()
        while self._next < len(self._items) or self._retry or self._pending or self._held:
            self._fill()
            if monotonic() - checked >= self.PollSeconds:
                self._check_alive()
                checked = monotonic()
            starting = self._on_engines and self._copies_open()
            try:
                # While the engines register, look for them often: each one takes work at once.
                arrived = self._arrived.get(timeout=self.PollSeconds / 5 if starting else self.PollSeconds)
            except queue.Empty:
                continue
            if isinstance(arrived, _CopyReply):
                yield from self._from_copy_reply(arrived.copy, arrived.reply)
                continue
            ar_and_chunk = self._pending.pop(arrived.msg_ids[0], None)
            if ar_and_chunk is None:
                continue
            yield from self._collect(*ar_and_chunk)

    def _from_copy_reply(self, copy: Interim, reply: Any) -> Iterator[tuple[int, ResultsDict]]:
        chunk = self._held.pop(copy, None)
        if isinstance(reply, InterimDied) and self._copies is not None:
            # A fresh fork takes its place (in this thread: a copy dies with the thread that forked it).
            self._copies.replace(copy, idle=not reply.lost_chunk)
        if chunk is not None:
            yield from self._collect_interim(reply, chunk)

    def _fill(self) -> None:
        if self._copies is not None:
            # First, so that the copies work while this process connects (or launches the cluster).
            for copy in self._copies.copies():
                if copy in self._held or copy.busy():
                    continue
                chunk = self._next_chunk(0, blob=False)
                if chunk is None:
                    break
                self._held[copy] = chunk
                self.largest_chunk = max(self.largest_chunk, len(chunk.points))
                copy.submit(chunk.key, chunk.points, self._sizer.budget)
        if not self._on_engines:
            return
        engines = self._engine_count()
        if self._copies_open() and engines >= self._sizer.engines:
            # Every engine is here: the copies finish their chunks and exit, so that no more
            # processes than cores run points.
            assert self._copies is not None
            self._copies.close()
        if self._client is None:
            return
        if not engines and self._copies_open():
            # Nothing for the scheduler to hold yet: the points stay for the copy until an engine is here.
            return
        while len(self._pending) < max(1, engines) * self.Window:
            chunk = self._next_chunk(engines, blob=True)
            if chunk is None:
                return
            self._submit(chunk)

    def _next_chunk(self, engines: int, blob: bool) -> _Chunk | None:
        if self._retry:
            return self._retry.popleft()
        if self._next < len(self._items):
            chunk = self._take(self._sizer.size())
            if blob:
                # The first chunk to each engine brings the experiment along: no separate
                # round trip to ship it first. (An engine that gets another chunk first
                # says so, and is sent the experiment then.)
                chunk.blob = self._firsts[chunk.key] < max(engines, self._sizer.engines)
                self._firsts[chunk.key] += 1
            return chunk
        return None

    def _take(self, n: int) -> _Chunk:
        """The next ``n`` points, or fewer where the experiment changes."""
        items = self._items
        start = self._next
        key = items[start][0]
        stop = min(start + n, len(items))
        points = []
        for i in range(start, stop):
            k, p = items[i]
            if k != key:
                stop = i
                break
            points.append(p)
        self._next = stop
        return _Chunk(key, points, list(range(start, stop)))

    def _submit(self, chunk: _Chunk) -> None:
        assert self._view is not None
        blob = self._payloads[chunk.key].blob if chunk.blob else None
        ar = submit_chunk(self._view, chunk.key, chunk.points, blob, self._paths if blob else None,
                          self._sizer.budget)
        self._pending[ar.msg_ids[0]] = (ar, chunk)
        self.largest_chunk = max(self.largest_chunk, len(chunk.points))
        ar.add_done_callback(self._arrived.put)

    def _collect(self, ar: AsyncResult, chunk: _Chunk) -> Iterator[tuple[int, ResultsDict]]:
        classname = self._payloads[chunk.key].classname
        try:
            reply = ar.get()
        except Exception as exc:
            self._purge(ar)
            if is_engine_death(exc):
                yield from self._engine_died(chunk, exc, classname)
                return
            if not self._replies:
                # Not one task has worked: the engines cannot run epyclab's worker at all
                # (another environment, a broken install). Recording every point as failed
                # would only fill the notebook; stop, and let resume run them later.
                raise ClusterConnectionError(
                    f"the engines could not run epyclab's worker: {exc}. If that is an import error, "
                    f"the engines must run the same Python environment as this process, with epyclab "
                    f"installed; if the experiment raised it, it must raise an Exception, not a BaseException"
                ) from exc
            logger.warning("a task of %d points failed on the engine: %s", len(chunk.points), exc)
            trace = _remote_traceback(exc)
            yield from ((i, worker.failed_result(p, exc, trace, classname))
                        for i, p in zip(chunk.positions, chunk.points))
            return
        self._purge(ar)
        self._replies += 1
        try:
            rcs, seconds = decode_reply(reply, classname, ar.engine_id)
        except MissingExperiment:
            yield from self._missing(ar, chunk, classname)
            return
        except ExperimentSerializationError:
            raise
        except Exception as exc:
            yield from self._undecodable(chunk, exc, classname)
            return
        yield from self._accept(chunk, rcs, seconds)

    def _undecodable(self, chunk: _Chunk, exc: Exception, classname: str) -> Iterator[tuple[int, ResultsDict]]:
        logger.warning("could not decode the results of %d points: %s", len(chunk.points), exception_text(exc))
        yield from ((i, worker.failed_result(p, exc, "", classname)) for i, p in zip(chunk.positions, chunk.points))

    def _collect_interim(self, reply: Any, chunk: _Chunk) -> Iterator[tuple[int, ResultsDict]]:
        classname = self._payloads[chunk.key].classname
        if isinstance(reply, InterimDied):
            yield from self._engine_died(chunk, self._death(str(reply)), classname)
            return
        try:
            rcs, seconds = decode_reply(reply, classname, "interim")
        except ExperimentSerializationError:
            raise
        except Exception as exc:
            yield from self._undecodable(chunk, exc, classname)
            return
        self._replies += 1
        self.run_by_interim += len(rcs)
        yield from self._accept(chunk, rcs, seconds)

    def _accept(self, chunk: _Chunk, rcs: list[ResultsDict], seconds: float) -> Iterator[tuple[int, ResultsDict]]:
        """The results of a chunk that ran (perhaps only its first points: out of time); requeue the rest."""
        done = len(rcs)
        self._sizer.record(done, seconds)
        self.most_run_by_a_task = max(self.most_run_by_a_task, done)
        if done < len(chunk.points):
            # The chunk ran out of time: the rest go next, sized by what was just learnt.
            rest, where, size = chunk.points[done:], chunk.positions[done:], self._sizer.size()
            pieces = [(rest[i:i + size], where[i:i + size]) for i in range(0, len(rest), size)]
            self._retry.extendleft(
                _Chunk(chunk.key, piece, at, deaths=chunk.deaths) for piece, at in reversed(pieces)
            )
        yield from zip(chunk.positions, rcs)

    def _engine_died(self, chunk: _Chunk, exc: BaseException, classname: str) -> Iterator[tuple[int, ResultsDict]]:
        if len(chunk.points) > 1:
            # Run them one by one: if one of them kills its engine, the others still get done.
            logger.warning("an engine died running %d points; resubmitting them one per task", len(chunk.points))
            self.resubmitted += 1
            self._retry.extend(
                _Chunk(chunk.key, [p], [i], deaths=chunk.deaths + 1) for p, i in zip(chunk.points, chunk.positions)
            )
            return
        chunk.deaths += 1
        if chunk.deaths < self.MaxDeaths:
            logger.warning("an engine died running point %r; resubmitting it", chunk.points[0])
            self.resubmitted += 1
            self._retry.append(chunk)
            return
        logger.error("point %r was running on %d engines that died; recording it as failed",
                     chunk.points[0], chunk.deaths)
        died = self._death(f"the engines running this point died {chunk.deaths} times (last: {exc})")
        yield chunk.positions[0], worker.failed_result(chunk.points[0], died, "", classname)

    def _death(self, message: str) -> Exception:
        """The exception recorded for a death: ipyparallel's EngineError where engines take part, else EngineDied."""
        if self._on_engines:
            from ipyparallel.error import EngineError

            return EngineError(message)
        return EngineDied(message)

    def _missing(self, ar: AsyncResult, chunk: _Chunk, classname: str) -> Iterator[tuple[int, ResultsDict]]:
        chunk.missing += 1
        engine = ar.engine_id
        if chunk.missing > 2:
            why = ClusterConnectionError(f"engine {engine} never received experiment {classname}")
            yield from ((i, worker.failed_result(p, why, "", classname)) for i, p in zip(chunk.positions, chunk.points))
            return
        # Again, with the experiment this time. Not shipped to that engine first: that is one more
        # round trip, and fails the sweep if the engine dies meanwhile (running another point).
        chunk.blob = True
        self._retry.append(chunk)

    def _purge(self, ar: AsyncResult) -> None:
        # The client caches every result; a long sweep would keep them all twice.
        try:
            self._client.purge_local_results(ar)
        except RuntimeError as exc:
            logger.debug("could not purge a finished task from the client cache: %s", exc)

    def _check_alive(self) -> None:
        if self._health is not None:
            self._health()
        if not self._on_engines:
            if self._copies is not None and not self._copies.open():
                raise ClusterConnectionError(
                    f"every forked copy of this process running points died and none could be forked again, so "
                    f"the sweep cannot go on; {self.remaining()} points have no result. Run the sweep again with "
                    f"resume=True, or use ParallelLab(backend='ipyparallel')"
                )
            return
        if self._client is None or (not self._engines_seen and self._connect is not None):
            return  # still starting: connect() says when that takes too long
        if self._client.ids:
            self._no_engines_since = None
            return
        now = monotonic()
        if self._no_engines_since is None:
            self._no_engines_since = now
        elif now - self._no_engines_since > self.EngineGrace:
            raise ClusterConnectionError(
                f"no engine has been running for {self.EngineGrace:.0f} s, so the sweep cannot go on; "
                f"{self.remaining()} points have no result. Start engines (or a new lab) and run the sweep "
                f"again with resume=True"
            )

    def remaining(self) -> int:
        """Points not yet returned (queued, in flight or waiting to be resubmitted)."""
        return (
            len(self._items) - self._next
            + sum(len(c.points) for c in self._retry)
            + sum(len(c.points) for _, c in self._pending.values())
            + sum(len(c.points) for c in self._held.values())
        )

    def close(self) -> None:
        """Abort the chunks not yet started and (if asked) make the engines drop the experiments."""
        pending = [ar for ar, _ in self._pending.values() if not ar.done()]
        self._pending.clear()
        if self._copies is not None:
            # At once those still holding a chunk (the sweep ended with an error); the others have exited,
            # or are about to.
            self._copies.stop()
            self._held.clear()
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


@dataclass(frozen=True)
class _CopyReply:
    """A reply of a forked copy (see :mod:`epyclab.labs.interim`), as it arrives in the sweep's queue."""

    copy: Interim
    reply: Any


def _remote_traceback(exc: BaseException) -> str:
    tb = getattr(exc, "traceback", None)
    return tb if isinstance(tb, str) else ""

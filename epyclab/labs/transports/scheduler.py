"""ParallelLab's scheduling: how many points go in a task, and a live sweep over any transport.

:class:`ChunkSizer` decides how many points go in each task (the rule is
documented there); :class:`Sweep` runs the points on a transport (see
:mod:`epyclab.labs.transports.contract`: forked copies, ipyparallel engines, any
``concurrent.futures`` executor): it keeps the transport's window of chunks
in flight, yields results as they arrive, resubmits the points of a worker
that died as :mod:`epyclab.labs.transports.deaths` says, and never retries an
experiment that raised (that is a failed result). What travels (packaging,
decoding a reply) is in :mod:`epyclab.labs.engine.wire`.
"""

from __future__ import annotations

import queue
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from time import monotonic
from typing import Any

from epyclab import progress
from epyclab.errors import ClusterConnectionError, EngineDied, ExperimentSerializationError
from epyclab.experiment import ResultsDict, exception_text
from epyclab.labs.engine import worker
from epyclab.labs.engine.wire import MissingExperiment, Payload, decode_reply
from epyclab.labs.transports.contract import Transport, WorkerDied
from epyclab.labs.transports.deaths import DeathPolicy
from epyclab.log import logger

__all__ = ["ChunkSizer", "Sweep"]


class ChunkSizer:
    """How many points go in each task, and how long a task may run.

    The rule: a chunk holds at most ``largest = total // (ChunksPerEngine *
    engines)`` points (at least 1), so every engine gets at least
    :attr:`ChunksPerEngine` chunks and the sweep ends evenly. Before anything
    is known, chunks have that largest size (but see the end-game below). Every chunk is bounded in time on
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

    A transport whose tasks cost more than a forked copy's (``task_seconds``:
    ipyparallel's 10 ms a task) raises the target and the budget to
    :attr:`OverheadRatio` times that (:meth:`expect_overhead`: four points of
    0.25 s a task on engines, and a point held back behind at most 1.2 s of
    others), and the end-game shrinks those longer chunks back, one point
    each, as the last points are handed out (:meth:`size`). On such a
    transport the end-game also holds back the first chunks, handed out before
    any point has run: a transport's window takes several chunks per engine at
    once, and a sweep of a few dozen costly points would otherwise go out whole
    in them (40 points of 0.25 s on 2 engines: 8 chunks of 5), leaving nothing to
    even out the end.

    ClusterLab keeps a rule of its own (:func:`epyclab.labs.remote.jobs.chunk_size`),
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
    #: On a transport whose every task costs ``overhead`` seconds beyond its points (see
    #: :meth:`expect_overhead`), chunks aim at this many times that at least, so that it stays under 1%
    #: (at 2% it was a quarter of what a warm 2-engine sweep of 0.25-s points lost against the ideal 2x;
    #: measured: 20 tasks for 40 such points at 60 times, 15 at 120, each costing the engines' 2 cores
    #: 6.5 CPU-ms in the client, the controller and the engine, and the engine a round trip).
    OverheadRatio = 120

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
        # The target before a transport's overhead raised it: the end-game never goes below it.
        self._least_target = self.target

    def expect_overhead(self, seconds: float) -> None:
        """The transport costs ``seconds`` per task beyond its points: aim at :attr:`OverheadRatio` times that.

        The target (and the budget with it) rises to that, so that a task's fixed cost stays small:
        ipyparallel's round trip through its scheduler and an engine's kernel costs about 10 ms a task on
        a busy 2-core machine, a forked copy's pipe about 1 ms. Those longer chunks shrink back at the end
        of the sweep (see :meth:`size`).
        """
        if seconds > 0:
            self.target = max(self.target, self.OverheadRatio * float(seconds))
            self.budget = max(self.budget, self.target)

    def record(self, points: int, seconds: float) -> None:
        """Learn from a finished chunk of ``points`` points that took ``seconds`` on its engine."""
        if points <= 0:
            return
        t = max(seconds, 0.0) / points
        self.per_point = t if self.per_point is None else self.Smoothing * t + (1 - self.Smoothing) * self.per_point

    def estimated(self) -> bool:
        """True once a chunk has reported its time."""
        return self.per_point is not None

    def size(self, remaining: int | None = None) -> int:
        """The number of points for the next chunk; ``remaining``: points not yet handed out, for the end-game.

        The end-game: chunks longer than the least target (a costly transport's) hold at most
        ``remaining // (2 * engines)`` points, never fewer than the least target's, so that the last
        points go one per chunk, and no engine waits, idle, while another runs a long last chunk.
        Before any chunk has reported its time, such a transport's chunks hold at most that many too
        (at least 1), so that the first window of chunks does not hand out the whole sweep.
        """
        costly = remaining is not None and self.target > self._least_target
        if self.per_point is None or self.per_point <= 0:
            if costly:
                # Before anything is known, the transport's window takes the first chunks of every engine at
                # once: the end-game holds them back too, or a sweep of a few costly points is handed out whole
                # in its first, largest chunks, and one engine idles while another runs its last.
                assert remaining is not None
                return max(1, min(self.largest, remaining // (2 * self.engines)))
            return self.largest
        n = self._fitting(self.target)
        if costly:
            assert remaining is not None
            n = max(self._fitting(self._least_target), min(n, remaining // (2 * self.engines)))
        return n

    def _fitting(self, seconds: float) -> int:
        assert self.per_point is not None
        return max(1, min(self.largest, int(seconds / self.per_point)))




# ---- a live sweep -----------------------------------------------------------------------


@dataclass
class _Chunk:
    key: str
    points: list[dict[str, Any]]
    positions: list[int]
    deaths: int = 0
    outside: int = 0
    missing: int = 0
    ship: bool = False
    # Stopped by the sweep for running past its time limit (its worker's death is then no death).
    timed_out: bool = False
    warned: bool = False
    # When it was last handed to the transport (time.monotonic()).
    submitted: float = 0.0


class Sweep:
    """Runs points on a transport and yields their results dicts as they arrive.

    ``items`` and ``payloads`` come from :func:`~epyclab.labs.engine.wire.package`;
    the transport has been given the payloads (``transport.begin``).
    :meth:`results` keeps as many chunks in flight as the transport asks for
    (:meth:`~epyclab.labs.transports.contract.Transport.capacity`), sized and
    time-bounded by ``sizer`` (the points a chunk had no time for are queued
    again), and yields exactly one results dict per point:

    - the points of a chunk whose worker died are run again, one per task, as
      ``policy`` (:class:`~epyclab.labs.transports.deaths.DeathPolicy`) says; a point that
      keeps killing its workers is recorded as a failed run carrying the
      transport's death error (ipyparallel's ``EngineError`` on engines,
      :class:`~epyclab.errors.EngineDied` elsewhere), so a point that crashes
      its process cannot take every worker with it;
    - a task that fails for any other reason gives failed results for its
      points, and is never retried (an experiment's own failures never fail
      a task: they are failed results already); if that happens before any
      task has worked, the workers cannot run epyclab's worker at all, and the
      sweep stops with ClusterConnectionError;
    - a worker that says it was not given the experiment (it joined after
      the start) gets the chunk again with the experiment;
    - when the transport's ``check()`` (called every :attr:`PollSeconds`)
      raises, the sweep stops with that error.

    Use it as a context manager, or call :meth:`close`.
    """

    #: Seconds between checks while waiting for results.
    PollSeconds = 0.25
    #: Without a time limit, a chunk running this long (and ten times longer than any finished chunk) is named
    #: in the log, so that a hang is never silent.
    HangSeconds = 60.0

    def __init__(
        self,
        transport: Transport,
        items: list[tuple[str, dict[str, Any]]],
        payloads: dict[str, Payload],
        sizer: ChunkSizer | None = None,
        policy: DeathPolicy | None = None,
        limit: float | None = None,
    ) -> None:
        self._transport = transport
        self._items = items
        self._payloads = payloads
        self._sizer = sizer if sizer is not None else ChunkSizer(len(items), transport.engines()[1])
        self._sizer.expect_overhead(getattr(transport, "task_seconds", 0.0))
        self._policy = policy if policy is not None else DeathPolicy()
        self._limit = limit
        # The longest a finished chunk took on its worker (seconds), to tell a point that hangs.
        self._longest = 0.0
        self._finished = 0  # points whose results came back
        # Said once: the transport cannot tell when a chunk starts, so a stuck worker cannot be stopped.
        self._blind = False
        # A point that runs far too long is shown on the progress bar.
        self._noted = False
        self._next = 0
        self._retry: deque[_Chunk] = deque()
        self._pending: dict[Future, _Chunk] = {}  # type: ignore[type-arg]
        self._arrived: queue.SimpleQueue[Future] = queue.SimpleQueue()  # type: ignore[type-arg]
        self._replies = 0
        #: The chunks submitted, the largest of them, and the most points one task ran (for reports).
        self.chunks = 0
        self.largest_chunk = 0
        self.most_run_by_a_task = 0
        #: How many chunks were resubmitted because their worker died.
        self.resubmitted = 0
        #: Worker deaths seen: ended from outside (not counted against the points), and counted.
        self.outside_deaths = 0
        self.counted_deaths = 0
        #: How many points each kind of worker ran (a future's ``where``: "copy", "engine", ...).
        self.run_by: dict[str, int] = {}

    def __enter__(self) -> "Sweep":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    @property
    def run_by_interim(self) -> int:
        """How many points forked copies of this process ran."""
        return self.run_by.get("copy", 0)

    # ---- the loop --------------------------------------------------------------------

    def results(self) -> Iterator[tuple[int, ResultsDict]]:
        """Yield ``(position in items, results dict)`` once per point, in the order they finish."""
        checked = monotonic()
        check = self._transport.check
        while self._next < len(self._items) or self._retry or self._pending:
            self._fill()
            if monotonic() - checked >= self.PollSeconds:
                check()
                self._watch()
                checked = monotonic()
            # While a transport has no worker yet (its engines register), look for them often.
            wait = self.PollSeconds if self._pending else self.PollSeconds / 5
            try:
                future = self._arrived.get(timeout=wait)
            except queue.Empty:
                continue
            chunk = self._pending.pop(future, None)
            if chunk is not None:
                yield from self._collect(future, chunk)

    def _fill(self) -> None:
        transport = self._transport
        for _ in range(transport.capacity() - len(self._pending)):
            chunk = self._next_chunk()
            if chunk is None:
                return
            future = transport.submit(chunk.key, chunk.points, self._sizer.budget, chunk.ship, self._limit)
            chunk.submitted = monotonic()
            self._pending[future] = chunk
            self.chunks += 1
            self.largest_chunk = max(self.largest_chunk, len(chunk.points))
            future.add_done_callback(self._arrived.put)

    def _next_chunk(self) -> _Chunk | None:
        if self._retry:
            return self._retry.popleft()
        if self._next < len(self._items):
            return self._take(self._sizer.size(self._unhanded()))
        return None

    def _unhanded(self) -> int:
        """Points not handed to the transport yet (never submitted, or waiting to be submitted again)."""
        return len(self._items) - self._next + sum(len(c.points) for c in self._retry)

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

    def _collect(self, future: Future, chunk: _Chunk) -> Iterator[tuple[int, ResultsDict]]:  # type: ignore[type-arg]
        classname = self._payloads[chunk.key].classname
        try:
            reply = future.result()
        except WorkerDied as died:
            yield from self._died(chunk, died, classname)
            return
        except ExperimentSerializationError:
            raise
        except Exception as exc:
            if not self._replies:
                # Not one task has worked: the workers cannot run epyclab's worker at all
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
        self._replies += 1
        try:
            rcs, seconds = decode_reply(reply, classname, getattr(future, "where", "?"))
        except MissingExperiment:
            yield from self._missing(chunk, classname)
            return
        except ExperimentSerializationError:
            raise
        except Exception as exc:
            logger.warning("could not decode the results of %d points: %s", len(chunk.points), exception_text(exc))
            yield from ((i, worker.failed_result(p, exc, "", classname))
                        for i, p in zip(chunk.positions, chunk.points))
            return
        where = getattr(future, "where", "")
        self.run_by[where] = self.run_by.get(where, 0) + len(rcs)
        yield from self._accept(chunk, rcs, seconds)

    def _accept(self, chunk: _Chunk, rcs: list[ResultsDict], seconds: float) -> Iterator[tuple[int, ResultsDict]]:
        """The results of a chunk that ran (perhaps only its first points: out of time); requeue the rest."""
        done = len(rcs)
        self._sizer.record(done, seconds)
        self._longest = max(self._longest, seconds)
        self._finished += done
        self.most_run_by_a_task = max(self.most_run_by_a_task, done)
        if done < len(chunk.points):
            # The chunk ran out of time: the rest go next, sized by what was just learnt.
            # (In the end-game too: the last points must not go out in long chunks.)
            rest, where = chunk.points[done:], chunk.positions[done:]
            size = self._sizer.size(self._unhanded() + len(rest))
            pieces = [(rest[i:i + size], where[i:i + size]) for i in range(0, len(rest), size)]
            self._retry.extendleft(
                _Chunk(chunk.key, piece, at, deaths=chunk.deaths, outside=chunk.outside)
                for piece, at in reversed(pieces)
            )
        yield from zip(chunk.positions, rcs)

    def _died(self, chunk: _Chunk, died: WorkerDied, classname: str) -> Iterator[tuple[int, ResultsDict]]:
        """A worker died running ``chunk``: run its points again, one per task, or fail a point that keeps killing."""
        # The transport replaces its dead worker now, in this thread (a forked copy dies with the thread
        # that forked it), or says it cannot go on.
        self._transport.check()
        if chunk.timed_out:
            yield from self._stopped(chunk, classname)
            return
        if died.outside:
            self.outside_deaths += 1
        else:
            self.counted_deaths += 1
        deaths = chunk.deaths + (not died.outside)
        outside = chunk.outside + died.outside
        if len(chunk.points) > 1:
            # Run them one by one: if one of them kills its worker, the others still get done.
            logger.warning("a worker died running %d points (%s); resubmitting them one per task",
                           len(chunk.points), died)
            self.resubmitted += 1
            self._retry.extend(
                _Chunk(chunk.key, [p], [i], deaths=deaths, outside=outside)
                for p, i in zip(chunk.points, chunk.positions)
            )
            return
        verdict = self._policy.after(deaths, outside)
        chunk.deaths, chunk.outside = deaths, outside
        if verdict.again:
            logger.warning("a worker died running point %r (%s); resubmitting it", chunk.points[0], died)
            self.resubmitted += 1
            self._retry.append(chunk)
            return
        logger.error("point %r failed: %s; recording it as failed", chunk.points[0], verdict.reason)
        kind = type(died.error) if died.error is not None else EngineDied
        besides = f"; {outside} more deaths were not counted against it" if outside else ""
        error = kind(f"the engines running this point died {deaths} times (last: {died}){besides}")
        yield chunk.positions[0], worker.failed_result(chunk.points[0], error, "", classname)

    def _watch(self) -> None:
        """Stop the workers of chunks past their time limit; name points that run far longer than any other."""
        now = monotonic()
        hung = (0.0, "")  # the seconds and the points of the chunk running far longest
        for future, chunk in self._pending.items():
            t0 = self._transport.started(future)
            if t0 is None:
                if self._limit is not None and not self._blind and now - chunk.submitted > 3 * self._bound(chunk):
                    # Queued that long, or running where the transport cannot see (engines on another machine).
                    self._blind = True
                    logger.warning("this sweep's workers do not say when they start a chunk (engines on another "
                                   "machine?): a point stuck there past its time limit of %g s, in a C call or a "
                                   "stopped process, cannot be stopped; one that returns to Python still is",
                                   self._limit)
                continue
            ran = now - t0
            if self._limit is not None and not chunk.timed_out:
                # Each point has its limit on the worker (SIGALRM); a worker still busy well past it is
                # stuck where Python cannot interrupt it (a C call, SIGSTOP): stop it.
                if ran > self._bound(chunk) and self._transport.stop(future):
                    chunk.timed_out = True
                    logger.warning("%s still running after %.0f s (limit %g s per point): stopped its worker",
                                   _points_text(chunk.points), ran, self._limit)
            elif self._limit is None and (chunk.warned or ran > max(self.HangSeconds, 10 * self._longest)):
                hung = max(hung, (ran, _points_text(chunk.points)))
                if not chunk.warned:
                    chunk.warned = True
                    # Before any point finished there is nothing to compare with: say so, not "0.0 s at most".
                    others = (f", far longer than any point that finished ({self._longest:.2g} s at most)"
                              if self._finished else " and no point has finished yet")
                    logger.warning("%s has been running for %.0f s%s; if it hangs, interrupt the sweep and run "
                                   "it again with runExperiment(e, resume=True, timeout=...)",
                                   _points_text(chunk.points), ran, others)
        # On the progress bar too, while it runs: the bar is what a user watches.
        if hung[1]:
            progress.note(f"{hung[1]} running for {hung[0]:.0f} s")
            self._noted = True
        elif self._noted:
            progress.note(None)
            self._noted = False

    def _bound(self, chunk: _Chunk) -> float:
        """Seconds after which ``chunk`` is past its time limit for sure (each point has its own on the worker)."""
        assert self._limit is not None
        return self._limit * len(chunk.points) + max(2.0, self._limit)

    def _stopped(self, chunk: _Chunk, classname: str) -> Iterator[tuple[int, ResultsDict]]:
        """A chunk whose worker was stopped past the time limit: a failed point, or its points run alone."""
        if len(chunk.points) > 1:
            # Which of them hung is not known: each runs alone, and no death is counted against them.
            self._retry.extend(
                _Chunk(chunk.key, [p], [i], deaths=chunk.deaths, outside=chunk.outside)
                for p, i in zip(chunk.points, chunk.positions)
            )
            return
        assert self._limit is not None
        error = TimeoutError(worker.time_limit_message(chunk.points[0], self._limit))
        yield chunk.positions[0], worker.failed_result(chunk.points[0], error, "", classname)

    def _missing(self, chunk: _Chunk, classname: str) -> Iterator[tuple[int, ResultsDict]]:
        chunk.missing += 1
        if chunk.missing > 2:
            why = ClusterConnectionError(f"a worker never received experiment {classname}")
            yield from ((i, worker.failed_result(p, why, "", classname)) for i, p in zip(chunk.positions, chunk.points))
            return
        # Again, with the experiment this time.
        chunk.ship = True
        self._retry.append(chunk)

    def remaining(self) -> int:
        """Points not yet returned (queued, in flight or waiting to be resubmitted)."""
        return (
            len(self._items) - self._next
            + sum(len(c.points) for c in self._retry)
            + sum(len(c.points) for c in self._pending.values())
        )

    def close(self) -> None:
        """Forget the chunks in flight (the transport's ``end`` stops them)."""
        self._pending.clear()
        if self._noted:
            progress.note(None)
            self._noted = False


def _points_text(points: list[dict[str, Any]]) -> str:
    """``point [x=3]`` or ``points [x=3], [x=4]`` (the first few), for messages."""
    shown = ", ".join(f"[{', '.join(f'{k}={p[k]!r}' for k in sorted(p))}]" for p in points[:3])
    more = f" and {len(points) - 3} more" if len(points) > 3 else ""
    return f"point{'s' if len(points) > 1 else ''} {shown}{more}"


def _remote_traceback(exc: BaseException) -> str:
    tb = getattr(exc, "traceback", None)
    return tb if isinstance(tb, str) else ""

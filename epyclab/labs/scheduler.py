"""ParallelLab's scheduling: how many points go in a task, and a live sweep on local engines.

:class:`ChunkSizer` decides how many points go in each task (the rule is
documented there); :class:`Sweep` keeps a few chunks per engine in flight,
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
from typing import Any

from ipyparallel import AsyncResult, Client
from ipyparallel.error import EngineError

from epyclab.errors import ClusterConnectionError, ExperimentSerializationError
from epyclab.experiment import ResultsDict, exception_text
from epyclab.labs import worker
from epyclab.labs.wire import (
    MissingExperiment,
    Payload,
    decode_reply,
    forget_experiment,
    is_engine_death,
    ship_experiment,
    submit_chunk,
)
from epyclab.log import logger

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
    """Runs points on a client's engines and yields their results dicts as they arrive.

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
    - an engine that joined after the start gets the experiment when it
      first asks, and the chunk is resubmitted;
    - with no engine left for :attr:`EngineGrace` seconds, or when
      ``health()`` (called every :attr:`PollSeconds`) raises, the sweep stops
      with that error.

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
        client: Client,
        items: list[tuple[str, dict[str, Any]]],
        payloads: dict[str, Payload],
        sizer: ChunkSizer | None = None,
        paths: list[str] | None = None,
        forget: bool = True,
        health: Callable[[], None] | None = None,
    ) -> None:
        self._client = client
        self._items = items
        self._payloads = payloads
        self._sizer = sizer if sizer is not None else ChunkSizer(len(items), max(1, len(client.ids)))
        self._paths = paths
        self._forget = forget
        self._health = health
        self._view = client.load_balanced_view()
        # Engine death is handled here, by resubmitting the chunk: ipyparallel's
        # retries would also re-run tasks that raised, and can hang.
        self._view.retries = 0
        self._next = 0
        self._firsts = dict.fromkeys(payloads, 0)
        self._retry: deque[_Chunk] = deque()
        self._pending: dict[str, tuple[AsyncResult, _Chunk]] = {}
        self._arrived: queue.SimpleQueue[AsyncResult] = queue.SimpleQueue()
        self._no_engines_since: float | None = None
        self._replies = 0
        #: The largest chunk submitted, and the most points one task ran (for reports).
        self.largest_chunk = 0
        self.most_run_by_a_task = 0
        #: How many chunks were resubmitted because their engine died.
        self.resubmitted = 0

    def __enter__(self) -> "Sweep":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # ---- the loop --------------------------------------------------------------------

    def results(self) -> Iterator[tuple[int, ResultsDict]]:
        """Yield ``(position in items, results dict)`` once per point, in the order they finish."""
        checked = monotonic()
        while self._next < len(self._items) or self._retry or self._pending:
            self._fill()
            if monotonic() - checked >= self.PollSeconds:
                self._check_alive()
                checked = monotonic()
            try:
                ar = self._arrived.get(timeout=self.PollSeconds)
            except queue.Empty:
                continue
            ar_and_chunk = self._pending.pop(ar.msg_ids[0], None)
            if ar_and_chunk is None:
                continue
            yield from self._collect(*ar_and_chunk)

    def _fill(self) -> None:
        engines = max(1, len(self._client.ids))
        while len(self._pending) < engines * self.Window:
            if self._retry:
                chunk = self._retry.popleft()
            elif self._next < len(self._items):
                chunk = self._take(self._sizer.size())
                # The first chunk to each engine brings the experiment along: no separate
                # round trip to ship it first. (An engine that gets another chunk first
                # says so, and is sent the experiment then.)
                chunk.blob = self._firsts[chunk.key] < max(engines, self._sizer.engines)
                self._firsts[chunk.key] += 1
            else:
                return
            self._submit(chunk)

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
            logger.warning("could not decode the results of %d points: %s", len(chunk.points), exception_text(exc))
            yield from ((i, worker.failed_result(p, exc, "", classname))
                        for i, p in zip(chunk.positions, chunk.points))
            return
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
        died = EngineError(f"the engines running this point died {chunk.deaths} times (last: {exc})")
        yield chunk.positions[0], worker.failed_result(chunk.points[0], died, "", classname)

    def _missing(self, ar: AsyncResult, chunk: _Chunk, classname: str) -> Iterator[tuple[int, ResultsDict]]:
        chunk.missing += 1
        engine = ar.engine_id
        if chunk.missing > 2 or engine is None:
            why = ClusterConnectionError(f"engine {engine} never received experiment {classname}")
            yield from ((i, worker.failed_result(p, why, "", classname)) for i, p in zip(chunk.positions, chunk.points))
            return
        ship_experiment(self._client, self._payloads[chunk.key], [engine], self._paths)
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
        )

    def close(self) -> None:
        """Abort the chunks not yet started and (if asked) make the engines drop the experiments."""
        pending = [ar for ar, _ in self._pending.values() if not ar.done()]
        self._pending.clear()
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


def _remote_traceback(exc: BaseException) -> str:
    tb = getattr(exc, "traceback", None)
    return tb if isinstance(tb, str) else ""

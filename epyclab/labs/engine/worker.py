"""The functions that run points: the same code inline, on local engines, or on a cluster.

Whatever the lab, a point is run by :func:`run`, so a failure is always data in
the results dict (status False, exception, traceback), never an exception that
stops a sweep.

The rest of this module is what engines run for the parallel labs. An
experiment is serialized once per sweep (with cloudpickle, by the client: see
:mod:`epyclab.labs.engine.packaging`) and loaded
once on each engine under a key unique to the sweep (:func:`load_experiment`);
each task then carries only a chunk of points (:func:`run_points`). Engine-side
functions never raise because of an experiment: ipyparallel's ``retries`` re-run
any task that raises, and a task that always raises can hang the scheduler, so
an experiment's failure must come back as a failed results dict.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import sys
import threading
import time
import traceback
from time import perf_counter
from typing import Any

import cloudpickle

from epyclab.errors import ResultsStructureException
from epyclab.experiment import Experiment, ResultsDict, exception_text, failed_result
from epyclab.labs.engine import capture
from epyclab.labs.engine import packaging as byvalue
from epyclab.log import logger
from epyclab.order import stamp

__all__ = [
    "run",
    "run_safely",
    "failed_result",
    "load_experiment",
    "forget_experiment",
    "run_points",
    "encode_results",
    "decode_results",
    "PICKLE",
    "CLOUDPICKLE",
    "MISSING",
    "UNLOADABLE",
]

#: Codecs of a chunk's results on the wire (see :func:`encode_results`).
PICKLE = "pickle"
CLOUDPICKLE = "cloudpickle"
#: The reply of an engine that has not been given the sweep's experiment.
MISSING = "missing"
#: The reply of an engine that could not unpack the experiment sent with the chunk.
UNLOADABLE = "unloadable"

# Experiments loaded on this engine, by sweep key. Module-level so that it
# lives as long as the engine process, whatever namespace tasks run in.
_experiments: dict[str, Experiment] = {}


class _TimeLimit:
    """Raise TimeoutError in this (the main) thread if a point runs longer than ``seconds`` (SIGALRM).

    Python code (a loop, a sleep) is interrupted where it is; a C call that
    does not return to Python is not (the lab's scheduler stops its worker).
    Outside the main thread, or without ``setitimer``, there is no limit here.
    """

    def __init__(self, seconds: float | None, point: dict[str, Any]) -> None:
        self._seconds = seconds
        self._point = point
        self._old: Any = None
        self._armed = (
            seconds is not None and seconds > 0 and hasattr(signal, "setitimer")
            and threading.current_thread() is threading.main_thread()
        )

    def _alarm(self, signum: int, frame: Any) -> None:
        raise TimeoutError(time_limit_message(self._point, self._seconds or 0.0))

    def __enter__(self) -> None:
        if self._armed:
            self._old = signal.signal(signal.SIGALRM, self._alarm)
            signal.setitimer(signal.ITIMER_REAL, self._seconds)  # type: ignore[arg-type]

    def __exit__(self, *exc_info: Any) -> None:
        if self._armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._old)


def time_limit_message(point: dict[str, Any], seconds: float) -> str:
    """The message of the TimeoutError recorded for ``point`` that ran past its limit of ``seconds``."""
    return f"point {capture.point_prefix(point).strip()} ran longer than its time limit of {seconds:g} s"


def run(
    experiment: Experiment, point: dict[str, Any], capturing: capture.Capturing | None = None,
    limit: float | None = None,
) -> ResultsDict:
    """Configure ``experiment`` for ``point``, run it, and return its results dict (output shown and recorded).

    ``capturing`` is the output capture installed for the whole sweep; without it one is installed for this run.
    ``limit``: seconds the point may run (see :class:`_TimeLimit`); past it the run fails with TimeoutError.
    """
    if limit is not None:
        with _TimeLimit(limit, point):
            return run(experiment, point, capturing)
    if capturing is None:
        return capture.captured(lambda: experiment.set(point).run(), tee=True)
    return capturing.runPoint(experiment, point)


def _classname(experiment: Experiment) -> str:
    cls = type(experiment)
    return f"{cls.__module__}.{cls.__qualname__}"


def run_safely(
    experiment: Experiment, point: dict[str, Any], capturing: capture.Capturing | None = None,
    limit: float | None = None,
) -> ResultsDict:
    """:func:`run`, but a failure outside :meth:`Experiment.run` (in ``configure``) is data too.

    So is ``sys.exit()`` called by an experiment: it ends that run, not the engine's task. The output is
    recorded, not shown (by ``capturing``, installed for a whole chunk, or else by one for this run).
    """
    try:
        with _TimeLimit(limit, point):
            if capturing is None:
                return capture.captured(lambda: experiment.set(point).run())
            return capturing.runPoint(experiment, point)
    except (Exception, SystemExit) as exc:
        return failed_result(point, exc, traceback.format_exc(), _classname(experiment))


# ---- engine side ------------------------------------------------------------------


def load_experiment(key: str, blob: bytes, paths: list[str] | None = None) -> int:
    """Unpack the experiment of sweep ``key`` (see :func:`~epyclab.labs.engine.packaging.loads`) and keep it here.

    ``paths`` are directories the client imports from (a script's own
    directory, say); those that exist here are appended to ``sys.path`` first,
    so an experiment that uses a module beside the script finds it. Returns
    this engine's process id. Raises if the experiment cannot be unpacked:
    this is called before any point is submitted, and the client turns the
    error into an :class:`~epyclab.errors.ExperimentSerializationError`.
    """
    for p in paths or ():
        if p not in sys.path and os.path.isdir(p):
            sys.path.append(p)
    if key not in _experiments:
        _experiments[key] = byvalue.loads(blob)
    return os.getpid()


def keep_experiment(key: str, experiment: Any) -> None:
    """Keep ``experiment`` (an object, not its bytes) as the experiment of sweep ``key`` in this process.

    For a forked copy of the client, which holds the experiment already.
    """
    _experiments.setdefault(key, experiment)


def forget_experiment(key: str) -> bool:
    """Drop the experiment of sweep ``key`` from this engine; True if it was there."""
    return _experiments.pop(key, None) is not None


def run_points(
    key: str,
    points: list[dict[str, Any]],
    blob: bytes | None = None,
    paths: list[str] | None = None,
    budget: float | None = None,
    marks: list[dict[str, Any]] | None = None,
    limit: float | None = None,
    ledger: tuple[str, str] | None = None,
) -> tuple[str, float, bytes]:
    """Run the experiment of sweep ``key`` at the points; return ``(codec, seconds, payload)``.

    ``payload`` holds one results dict per point run, in order, encoded by
    :func:`encode_results`; ``seconds`` is the time this engine spent running
    and encoding them (the lab sizes later chunks with it). With ``budget``
    (seconds), no point is started once that much time has passed (the first
    always runs): the results are then fewer than the points, and the lab
    runs the rest elsewhere, so a chunk never holds expensive points back.
    ``marks`` (one dict per point) are added to each run's metadata, for a lab
    whose results reach the notebook without passing through its own loop.
    ``limit``: seconds each point may run; past it the point is a failed run
    with a TimeoutError naming the point and the limit. ``ledger``: ``(directory,
    tag)`` of the sweep's ledger (see :func:`note_chunk`): this process says there
    that it runs chunk ``tag``, so the lab can stop it past the time limit.

    If this engine has not been given the experiment (it joined after the
    sweep started) and ``blob`` is None, the reply is ``(MISSING, 0.0, b'')``
    so that the client can send it and resubmit; with ``blob`` (the packaged
    bytes) the experiment is loaded here (with ``paths`` as in
    :func:`load_experiment`), and if that fails the reply is
    ``(UNLOADABLE, 0.0, error text)``.
    """
    experiment = _experiments.get(key)
    if experiment is None and blob is None:
        return MISSING, 0.0, b""
    if experiment is None:
        if ledger is not None:
            # Before the experiment is unpacked, marked as unpacking (its time is not the points'): a death from
            # here on may be the chunk's doing, its experiment's modules running as they are imported; one
            # before, with no entry, cannot be (see transports.ipyparallelclient).
            note_chunk(ledger[0], ledger[1] + LOADING)
        try:
            load_experiment(key, blob, paths)
        except Exception as exc:
            if ledger is not None:
                note_chunk(ledger[0], IDLE)
            return UNLOADABLE, 0.0, exception_text(exc).encode()
        experiment = _experiments[key]
    t0 = perf_counter()
    if ledger is not None:
        note_chunk(ledger[0], ledger[1])
    # The output capture is installed once for the chunk, not once per point.
    with capture.Capturing() as capturing:
        if budget is None:
            results = [run_safely(experiment, p, capturing, limit) for p in points]
        else:
            results = []
            for p in points:
                results.append(run_safely(experiment, p, capturing, limit))
                if perf_counter() - t0 >= budget:
                    break
    if ledger is not None:
        note_chunk(ledger[0], IDLE)
    if marks is not None:
        for rc, mark in zip(results, marks):
            stamp(rc, mark)
    codec, payload = encode_results(results)
    return codec, perf_counter() - t0, payload


#: The tag a worker writes in the ledger between chunks.
IDLE = "-"
#: Appended to a chunk's tag while the worker unpacks the chunk's experiment (see transports.ledger.Entry).
LOADING = "+"
_HOST = socket.gethostname()


def note_chunk(directory: str, tag: str) -> None:
    """Say in the sweep's ledger ``directory`` that this process now runs chunk ``tag`` (or :data:`IDLE`).

    The ledger is a directory the lab made on its own machine; each worker
    keeps one file there, named by its PID, holding ``tag start-time host``
    (``time.time()``). With it the lab knows which process runs a chunk and
    since when, so it can stop a worker stuck past the time limit, whatever
    started the worker (loky, a process pool, an ipyparallel engine, Dask).
    A worker on another machine finds no such directory and says nothing.
    """
    if not os.path.isdir(directory):
        return
    path = os.path.join(directory, str(os.getpid()))
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(f"{tag} {time.time()!r} {_HOST}")
        os.replace(tmp, path)  # the lab never reads half a line
    except FileNotFoundError:
        # The sweep ended (and removed its ledger) while this chunk was on its way: nobody is watching.
        logger.debug("the ledger %s of a sweep that ended is gone", directory)
    except OSError as exc:
        # Not this worker's to write (another user's engine on the same machine: the ledger is private to
        # the lab's user), or the disk refused: the chunk runs unwatched, as on another machine.
        logger.debug("cannot write to the ledger %s: %s", directory, exc)


def _portable_exception(rc: ResultsDict) -> None:
    """Replace a failed run's exception by its text if it would not survive the trip back.

    An exception whose ``__init__`` takes other arguments than its message
    pickles but does not unpickle; notebooks store exceptions as text anyway.
    """
    meta = rc[Experiment.METADATA]
    exc = meta.get(Experiment.EXCEPTION)
    if exc is None or isinstance(exc, str):
        return
    try:
        pickle.loads(pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:
        meta[Experiment.EXCEPTION] = exception_text(exc)


def encode_results(results: list[ResultsDict]) -> tuple[str, bytes]:
    """Encode a chunk's results dicts: pickle (fast) if it can, else cloudpickle (the one serializer).

    cloudpickle is needed when a result holds an object of a class defined in the
    client's ``__main__`` or in a function (which pickle cannot name). A result
    that neither can encode becomes a failed result saying so, so the rest of
    the chunk still arrives.
    """
    for rc in results:
        if not rc[Experiment.METADATA].get(Experiment.STATUS, True):
            _portable_exception(rc)
    try:
        return PICKLE, pickle.dumps(results, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # not an error: a value pickle cannot handle; cloudpickle is tried next
        logger.debug("results of %d runs need cloudpickle", len(results))
    try:
        return CLOUDPICKLE, cloudpickle.dumps(results)
    except Exception:  # not an error yet: find the runs at fault, below, and fail only those
        logger.debug("results of %d runs cannot all be serialized; checking each", len(results))
    safe = []
    for rc in results:
        try:
            cloudpickle.dumps(rc)
            safe.append(rc)
        except Exception as exc:
            meta = rc[Experiment.METADATA]
            reason = (
                f"the results dict of this run could not be serialized to send it back from the engine "
                f"({exception_text(exc)}); return plain values (numbers, strings, lists, arrays) from do()"
            )
            failure = ResultsStructureException(reason)
            safe.append(failed_result(rc[Experiment.PARAMETERS], failure, "", meta.get(Experiment.EXPERIMENT, "")))
    return CLOUDPICKLE, cloudpickle.dumps(safe)


def decode_results(codec: str, payload: bytes) -> list[ResultsDict]:
    """The results dicts encoded by :func:`encode_results`."""
    if codec == PICKLE:
        return pickle.loads(payload)
    if codec == CLOUDPICKLE:
        return pickle.loads(payload)  # cloudpickle's bytes are pickle data
    if codec == "dill":
        # Sent by engines running an older epyclab (results of jobs submitted before an upgrade).
        try:
            import dill
        except ImportError as exc:
            raise ValueError("these results were sent by an engine running an older epyclab, in dill's format: "
                             "pip install dill to read them") from exc
        return dill.loads(payload)
    raise ValueError(f"unknown results codec {codec!r} (expected {PICKLE!r} or {CLOUDPICKLE!r})")

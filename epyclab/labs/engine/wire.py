"""The wire between a lab and ipyparallel engines: package, submit, decode (ParallelLab and ClusterLab).

- :func:`package` serializes each distinct experiment of a configuration once
  (:func:`serialize_experiment`, the one place an experiment is turned into
  bytes), after refusing process-bound attributes (:mod:`epyclab.labs.engine.processbound`);
  with cloudpickle, the user's own modules by value (see
  :mod:`epyclab.labs.engine.packaging`: classes from a script's ``__main__``, a notebook,
  a file beside the script or a package under development travel with it). An
  experiment that cannot travel fails with
  :class:`~epyclab.errors.ExperimentSerializationError` naming the class and
  the offending attribute before anything is submitted.
- :func:`ship_experiment` sends those bytes to engines, where
  :func:`epyclab.labs.engine.worker.load_experiment` keeps the experiment under a key
  unique to the sweep; tasks then carry only their points.
- :func:`submit_chunk` submits one chunk of points as one task.
- :func:`decode_reply` turns an engine's reply into results dicts: the one
  decoder, used by ParallelLab's scheduler and ClusterLab's collector.
"""

from __future__ import annotations

import os
import sys
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from epyclab.designs import ExperimentalConfiguration
from epyclab.errors import ClusterConnectionError, ExperimentSerializationError, ResultsStructureException
from epyclab.experiment import Experiment, ResultsDict, exception_text
from epyclab.labs.engine import packaging as byvalue
from epyclab.labs.engine import worker
from epyclab.labs.engine.processbound import refuse_process_bound
from epyclab.labs.engine.usedglobals import describe_globals, unpicklable_globals

if TYPE_CHECKING:
    # Packaging and decoding serve ParallelLab's forked copies too, which never import ipyparallel (0.5 s).
    from ipyparallel import AsyncResult, Client, LoadBalancedView

__all__ = [
    "Payload",
    "package",
    "serialize_experiment",
    "client_paths",
    "ship_experiment",
    "forget_experiment",
    "submit_chunk",
    "decode_reply",
    "MissingExperiment",
    "is_engine_death",
    "unloadable",
]


# ---- serialization ------------------------------------------------------------------


@dataclass(frozen=True)
class Payload:
    """An experiment serialized for engines: the sweep key it is loaded under, its bytes, its class."""

    key: str
    blob: bytes
    classname: str
    #: The experiment object itself, for a forked copy of this process (which needs no bytes);
    #: never sent anywhere.
    experiment: Any = field(default=None, compare=False, repr=False)


def _classname(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _dumps(obj: Any) -> bytes:
    # The user's own modules travel by value, installed ones by reference (see epyclab.labs.engine.packaging).
    return byvalue.dumps(obj)


def _culprits(obj: Any, path: str, depth: int = 3) -> list[tuple[str, str, BaseException]]:
    """The attributes of ``obj`` (recursively, through attributes that fail) that cannot be pickled."""
    try:
        attrs = vars(obj)
    except TypeError:
        return []
    found = []
    for name, value in attrs.items():
        try:
            _dumps(value)
        except Exception as exc:
            deeper = _culprits(value, f"{path}.{name}", depth - 1) if depth > 1 else []
            found.extend(deeper or [(f"{path}.{name}", type(value).__name__, exc)])
    return found


def serialize_experiment(e: Experiment) -> bytes:
    """The bytes of ``e`` for the engines: the one place an experiment is serialized.

    Raises:
        ExperimentSerializationError: ``e`` holds a process-bound object (see
            :mod:`epyclab.labs.engine.processbound`), or something that cannot be packed;
            the message names the attribute.
    """
    refuse_process_bound(e)
    try:
        return _dumps(e)
    except Exception as exc:
        cls = type(e).__qualname__
        culprits = _culprits(e, "self")
        if culprits:
            what = "; ".join(f"attribute {p} ({t}): {exception_text(x)}" for p, t, x in culprits)
            raise ExperimentSerializationError(
                f"experiment {cls} cannot be serialized to send it to the engines: {what}. "
                f"Create such objects on the engine instead (in configure() or setUp()), "
                f"or keep only what is needed to re-create them"
            ) from exc
        used = unpicklable_globals(type(e), _dumps)
        if used:
            what = describe_globals(used)
            raise ExperimentSerializationError(
                f"experiment {cls} cannot be serialized to send it to the engines: {what}. Its code travels "
                f"by value and takes the globals it uses along: create such objects where they are used (in "
                f"setUp() or do(); open a notebook by its path there), or pass what is needed to re-create them"
            ) from exc
        raise ExperimentSerializationError(
            f"experiment {cls} cannot be serialized to send it to the engines: {exception_text(exc)}. "
            f"No single attribute is at fault, so check the class itself (and what its methods use)"
        ) from exc


def package(points: ExperimentalConfiguration) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, Payload]]:
    """Serialize each distinct experiment of ``points`` once; pair every point with its experiment's key."""
    payloads: dict[int, Payload] = {}
    items = []
    for ex, p in points:
        pl = payloads.get(id(ex))
        if pl is None:
            pl = payloads[id(ex)] = Payload(
                f"epyclab-{uuid.uuid4().hex}", serialize_experiment(ex), _classname(ex), ex
            )
        items.append((pl.key, p))
    return items, {pl.key: pl for pl in payloads.values()}


def client_paths() -> list[str]:
    """The directories this process imports from, for engines on the same machine.

    ``''`` (the current directory, for ``python -c`` or an interactive session) is made absolute.
    """
    return [os.path.abspath(p or os.curdir) for p in sys.path if os.path.isdir(p or os.curdir)]


# ---- shipping ---------------------------------------------------------------------


def ship_experiment(
    client: Client, payload: Payload, targets: list[int] | None = None, paths: list[str] | None = None
) -> dict[int, int]:
    """Load ``payload`` on the engines ``targets`` (all by default); return engine id -> pid.

    An engine that cannot unpack the experiment (a module it imports is not
    installed there, say) raises ExperimentSerializationError naming the
    class, the engine and the remote error, before any point is submitted.
    """
    from ipyparallel.error import CompositeError, RemoteError

    targets = list(client.ids) if targets is None else list(targets)
    if not targets:
        return {}
    view = client.direct_view(targets)
    try:
        pids = view.apply_sync(worker.load_experiment, payload.key, payload.blob, paths)
    except (CompositeError, RemoteError) as exc:
        errors = exc.elist if isinstance(exc, CompositeError) else [(exc.ename, exc.evalue, exc.traceback, None)]
        ename, evalue, _, info = errors[0]
        engine = info.get("engine_id", "?") if isinstance(info, dict) else "?"
        raise unloadable(payload.classname, engine, f"{ename}: {evalue}") from exc
    return dict(zip(targets, pids))


def _class_here(classname: str) -> type | None:
    """The class called ``classname`` ("module.Qual.Name") in this process, if its module is loaded."""
    module, _, qualname = classname.rpartition(".")
    obj: Any = sys.modules.get(module)
    while obj is not None and "." in qualname:
        head, _, qualname = qualname.partition(".")
        obj = getattr(obj, head, None)
    found = getattr(obj, qualname, None) if obj is not None else None
    return found if isinstance(found, type) else None


def _round_trip(value: Any) -> None:
    # Some objects pickle but cannot be rebuilt (a ctypes CDLL): the engine failed unpacking, so unpack here too.
    import pickle

    import cloudpickle

    pickle.loads(cloudpickle.dumps(value))


def unloadable(classname: str, engine: Any, error: str) -> ExperimentSerializationError:
    """The error for an experiment that an engine could not unpack.

    Names the module globals used by the class's code that cannot be rebuilt
    from their pickle (a ctypes library loaded in a script, say), where this
    process still has the class.
    """
    cls = _class_here(classname)
    used = unpicklable_globals(cls, _round_trip) if cls is not None else []
    if used:
        what = describe_globals(used)
        return ExperimentSerializationError(
            f"experiment {classname} could not be loaded on engine {engine}: {error}. It travels with "
            f"module globals that cannot be rebuilt from their pickle: {what}. Create such objects in a "
            f"module beside the script and import it (a worker imports that module itself, so its state is "
            f"rebuilt there), or in setUp()"
        )
    return ExperimentSerializationError(
        f"experiment {classname} could not be loaded on engine {engine}: {error}. "
        f"The user's own modules travel with the experiment, but installed packages it imports must be "
        f"installed on the engines too (in their Python environment)"
    )


def forget_experiment(client: Client, key: str, targets: list[int] | None = None) -> None:
    """Ask the engines to drop the experiment of sweep ``key`` (without waiting)."""
    targets = list(client.ids) if targets is None else list(targets)
    if targets:
        client.direct_view(targets).apply_async(worker.forget_experiment, key)


# ---- chunks -----------------------------------------------------------------------


def submit_chunk(
    view: LoadBalancedView,
    key: str,
    points: list[dict[str, Any]],
    blob: bytes | None = None,
    paths: list[str] | None = None,
    budget: float | None = None,
    marks: list[dict[str, Any]] | None = None,
    limit: float | None = None,
    ledger: tuple[str, str] | None = None,
) -> AsyncResult:
    """Submit one chunk of points of sweep ``key`` (see :func:`epyclab.labs.engine.worker.run_points`).

    With ``blob`` (the experiment's pickled bytes) an engine that lacks the
    experiment loads it, adding ``paths`` to its ``sys.path`` first. With
    ``budget`` the engine stops starting points after that many seconds and
    the reply holds fewer results than points. ``marks`` go into each run's metadata. ``limit``:
    seconds each point may run. ``ledger``: where the engine says it runs the chunk (see
    :func:`epyclab.labs.engine.worker.note_chunk`).
    """
    if ledger is None:
        return view.apply_async(worker.run_points, key, points, blob, paths, budget, marks, limit)
    return view.apply_async(worker.run_points, key, points, blob, paths, budget, marks, limit, ledger)


def is_engine_death(exc: BaseException) -> bool:
    """True if a task failed because its engine died (not because of what it ran)."""
    from ipyparallel.error import EngineError, RemoteError

    if isinstance(exc, EngineError):
        return True
    return isinstance(exc, RemoteError) and exc.ename == "EngineError"



class MissingExperiment(ClusterConnectionError):
    """The engine that ran a task had not been given the sweep's experiment (it joined later)."""


def decode_reply(reply: Any, classname: str = "", engine: Any = "?") -> tuple[list[ResultsDict], float]:
    """The results dicts in an engine's reply to :func:`submit_chunk`, and the engine's seconds.

    The results are for the first points of the chunk, in order (all of them
    unless the chunk had a time budget). A bare results dict (a task that
    epyc submitted, one point per task) is accepted as the reply of one point.

    Raises:
        MissingExperiment: the engine did not have the experiment (send it, and submit again).
        ExperimentSerializationError: the engine could not unpack the experiment.
        ResultsStructureException: the reply is not a reply of epyclab's worker or of epyc.
        Exception: whatever unpickling the results raised (a class this process cannot
            import, say); the caller records the chunk's points as failed, saying why.
    """
    if isinstance(reply, tuple) and len(reply) == 3 and isinstance(reply[0], str):
        codec, seconds, payload = reply
        if codec == worker.UNLOADABLE:
            raise unloadable(classname or "of this sweep", engine, bytes(payload).decode(errors="replace"))
        if codec == worker.MISSING:
            raise MissingExperiment("the engine was not given the experiment to run")
        return worker.decode_results(codec, payload), float(seconds)
    if Experiment.isResultsDict(reply):
        return [reply], 0.0
    raise ResultsStructureException(f"the task's reply is not a results dict but a {type(reply).__name__}")

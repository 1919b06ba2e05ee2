"""The transport contract: how a sweep hands chunks of points to workers, and the registry of named transports.

A *transport* is what :class:`~epyclab.labs.transports.scheduler.Sweep` runs on. Its
contract is small, shaped like :class:`concurrent.futures.Executor` (one
``submit``, the rest free) and joblib's ``ParallelBackendBase``:

- :meth:`Transport.begin` and :meth:`Transport.end` bracket one sweep (the
  experiments it runs are given, serialized, to ``begin``);
- :meth:`Transport.submit` hands one chunk of points to a worker and returns a
  :class:`concurrent.futures.Future` of the worker's reply (what
  :func:`epyclab.labs.engine.worker.run_points` returns). The future fails with
  :class:`WorkerDied` when the process running the chunk died, and with any
  other exception when the task could not be run at all; an experiment's own
  failures are never exceptions here (they are failed results in the reply);
- :meth:`Transport.capacity` says how many chunks it wants in flight now,
  :meth:`Transport.engines` how many workers there are and will be;
- :meth:`Transport.started` says when a chunk began on its worker, and
  :meth:`Transport.stop` ends the worker running it (the hard time limit: a
  point stuck where Python cannot interrupt it, in a C call or SIGSTOPped);
- :meth:`Transport.check` raises when the transport cannot go on;
- :meth:`Transport.close` stops whatever it keeps between sweeps.

The sweep's scheduling (chunk sizes, the window, deaths and resubmission, see
:mod:`epyclab.labs.transports.deaths`) is written once over this contract.

Local transports are registered by name (:func:`registerTransport`, shaped as
:mod:`epyclab.notebooks.registry`: a class named ``"module:Class"``, imported
only when a lab asks for it, names checked) and chosen with
``ParallelLab(backend=name)``.
"""

from __future__ import annotations

import re
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any, Protocol

from epyclab.errors import ClusterConnectionError
from epyclab.log import logger

if TYPE_CHECKING:
    from epyclab.labs.engine.wire import Payload

__all__ = [
    "Transport", "Settings", "WorkerDied", "ChunkFuture", "TransportEntry", "registerTransport",
    "transportEntry", "transportNames", "makeTransport", "defaultTransport", "FORK", "IPYPARALLEL", "WORKERS", "AUTO",
]

FORK = "fork"
IPYPARALLEL = "ipyparallel"
WORKERS = "workers"
AUTO = "auto"


class WorkerDied(ClusterConnectionError):
    """The process running a chunk died before replying.

    ``error`` is the exception recorded for a point that keeps killing its
    workers (ipyparallel's ``EngineError`` on engines, :class:`~epyclab.errors.EngineDied`
    elsewhere). ``outside`` is True when something outside the point ended the
    worker (a signal sent to it, its job cancelled, its host gone): that death
    does not count against the points it was running (see :mod:`epyclab.labs.transports.deaths`).
    """

    def __init__(self, message: str, error: BaseException | None = None, outside: bool = False) -> None:
        super().__init__(message)
        self.error = error
        self.outside = outside


class ChunkFuture(Future):  # type: ignore[type-arg]
    """The future of one chunk's reply; ``where`` names the kind of worker that ran it (for reports)."""

    def __init__(self, where: str = "") -> None:
        super().__init__()
        self.where = where


def settle_once(future: Future, result: Any = None, error: BaseException | None = None,  # type: ignore[type-arg]
                late: str = "a chunk ended after its future had an outcome") -> None:
    """Give ``future`` its outcome (``error`` if given, else ``result``), unless it has one already.

    A chunk's future may be ended first by the sweep (stopped past its time
    limit, cancelled when the sweep ends); what its task did after that is moot,
    and only ``late`` is logged (at debug level).
    """
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        logger.debug("%s", late)


@dataclass(frozen=True)
class Settings:
    """What a ParallelLab asks of its local transport: ``n`` workers, its profile directory, timeout, interim copy."""

    n: int
    profile_dir: str | None = None
    timeout: float = 60.0
    use_interim: bool = True


class Transport(Protocol):
    """What a sweep runs on (see the module docstring)."""

    def begin(self, payloads: dict[str, Payload]) -> None:
        """A sweep starts: ``payloads`` maps each sweep key to its serialized experiment."""

    def submit(self, key: str, points: list[dict[str, Any]], budget: float | None,
               ship: bool = False, limit: float | None = None) -> Future:  # type: ignore[type-arg]
        """Run ``points`` of sweep ``key`` on a worker; a future of its reply.

        ``budget``: the worker starts no point after that many seconds. ``ship``:
        send the experiment along even if the transport believes the worker has it
        (the worker replied that it had not).
        """

    def capacity(self) -> int:
        """How many chunks the transport wants in flight now (0 while it has no worker yet)."""

    def engines(self) -> tuple[int, int]:
        """How many workers run points now, and how many the transport expects to have."""

    def started(self, future: Future) -> float | None:  # type: ignore[type-arg]
        """When ``future``'s chunk began on its worker (``time.monotonic()``), or None.

        None while the chunk waits for a worker, once it is over, and where the
        transport cannot see its workers (engines on another machine): such a
        chunk is never stopped by the sweep, and the lab says so once.
        """

    def stop(self, future: Future) -> bool:  # type: ignore[type-arg]
        """End the worker running ``future``'s chunk at once (SIGKILL: it may be stuck in C, or stopped).

        Called by the sweep for a chunk past its time limit. The transport
        replaces the worker as it replaces one that died, and ``future`` fails
        with :class:`WorkerDied` (soon, or at once); the sweep records the
        point as a TimeoutError and does not run it again. False if no worker
        is known to run the chunk (it has just finished, or runs out of reach).
        """

    def check(self) -> None:
        """Raise (ClusterConnectionError) if the transport cannot go on; called often, from the sweep's thread."""

    def end(self, abandon: bool) -> None:
        """The sweep ends; with ``abandon`` (an error, Ctrl-C) chunks still running are stopped at once."""

    def close(self) -> None:
        """Stop whatever the transport keeps between sweeps (a warm cluster, warm workers)."""


# ---- the registry ---------------------------------------------------------------------------

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class TransportEntry:
    """A registered local transport: its name, its class (``"module:Class"``, made with :class:`Settings`)."""

    name: str
    cls: str
    #: The class itself when it was registered as one (a class defined in a function has no importable name).
    given: type | None = None

    def load(self) -> type:
        """The transport class (imported now)."""
        if self.given is not None:
            return self.given
        module, _, name = self.cls.partition(":")
        return getattr(import_module(module), name)  # type: ignore[no-any-return]


_TRANSPORTS: dict[str, TransportEntry] = {}


def registerTransport(name: str, cls: str | type) -> None:
    """Make ``cls`` available as ``ParallelLab(backend=name)``.

    ``cls`` is a ``"module:Class"`` string (imported when first used) or a
    class; it is called with the lab's :class:`Settings` and must have the
    :class:`Transport` methods.

    Raises:
        ValueError: ``name`` is not a name (letters, digits, ``_.-``), or ``cls`` is not a
            ``"module:Class"`` string or a class.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"a transport's name must be a word (letters, digits, '_', '.', '-'), not {name!r}")
    if isinstance(cls, type):
        _TRANSPORTS[name] = TransportEntry(name, f"{cls.__module__}:{cls.__qualname__}", cls)
        return
    if not isinstance(cls, str) or cls.count(":") != 1 or not all(cls.split(":")):
        raise ValueError(f"transport {name!r} must be given as 'module:Class' or a class, not {cls!r}")
    _TRANSPORTS[name] = TransportEntry(name, cls)


def unregisterTransport(name: str) -> None:
    """Forget transport ``name`` (nothing happens if there is none)."""
    _TRANSPORTS.pop(name, None)


def transportNames() -> list[str]:
    """The names of the registered transports."""
    return sorted(_TRANSPORTS)


def transportEntry(name: str) -> TransportEntry:
    """The registered transport ``name``.

    Raises:
        ValueError: no transport has that name (the message lists those that do).
    """
    entry = _TRANSPORTS.get(name) if isinstance(name, str) else None
    if entry is None:
        raise ValueError(f"ParallelLab has no backend {name!r}; choose one of {transportNames()} "
                         f"(or register one with epyclab.labs.transports.contract.registerTransport)")
    return entry


def defaultTransport() -> str:
    """``"auto"``: forked copies for a sweep when forking is known to be safe, else clean workers.

    See :mod:`epyclab.labs.transports.cleanworkers`.
    """
    return AUTO


def makeTransport(name: str | None, settings: Settings) -> Transport:
    """A new transport ``name`` (None: :func:`defaultTransport`) for one lab.

    Raises:
        ValueError: no transport has that name, or it cannot run here.
    """
    entry = transportEntry(defaultTransport() if name is None else name)
    return entry.load()(settings)  # type: ignore[no-any-return]


registerTransport(AUTO, "epyclab.labs.transports.cleanworkers:AutoTransport")
registerTransport(WORKERS, "epyclab.labs.transports.cleanworkers:WorkersTransport")
registerTransport(FORK, "epyclab.labs.transports.copies:ForkTransport")
registerTransport(IPYPARALLEL, "epyclab.labs.transports.coldstart:LocalClusterTransport")

"""Where a ParallelLab without ``cluster=`` or ``client=`` gets its engines: a registry of local backends.

joblib's backend registry is the model: a name maps to a class that, for one
sweep, says what the sweep runs on (the keyword arguments of
:class:`~epyclab.labs.scheduler.Sweep`). Two are registered:

- ``"fork"`` (the default where :func:`~epyclab.labs.interim.fork_allowed`:
  Linux): each sweep forks as many copies of the user's process as the lab
  has cores (:class:`~epyclab.labs.copies.CopyPool`) and runs every point on
  them. A copy holds the experiment and every module already, so the first
  point starts within milliseconds; no cluster is started and ipyparallel is
  not even imported. A copy that dies is replaced by a fresh fork; every copy
  dies with the user's process, even one killed by SIGKILL.
- ``"ipyparallel"`` (the default elsewhere: macOS, Windows): the process's
  own local ipyparallel cluster, started on first use and kept warm across
  sweeps (see :mod:`epyclab.labs.warm`); while its engines register, one
  forked copy runs points where forking is allowed.

:func:`register_backend` adds another (a class whose instances have the
:class:`LocalBackend` methods).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from epyclab.labs.copies import CopyPool
from epyclab.labs.interim import Interim, fork_allowed

if TYPE_CHECKING:
    import ipyparallel as ipp

    from epyclab.labs.parallelcluster import LocalCluster
    from epyclab.labs.wire import Payload

__all__ = ["BACKENDS", "FORK", "IPYPARALLEL", "LocalBackend", "Settings", "default_backend", "make_backend",
           "register_backend"]

FORK = "fork"
IPYPARALLEL = "ipyparallel"


@dataclass(frozen=True)
class Settings:
    """What a ParallelLab asks of its local backend: ``n`` workers, its profile directory, timeout, interim copy."""

    n: int
    profile_dir: str | None = None
    timeout: float = 60.0
    use_interim: bool = True


class LocalBackend(Protocol):
    """A local backend: made once per lab, it gives each sweep its workers."""

    #: The local ipyparallel cluster of the last sweep (None for a backend without one).
    localCluster: "LocalCluster | None"

    def engines(self, payloads: dict[str, Payload], settings: Settings) -> AbstractContextManager[dict[str, Any]]:
        """The keyword arguments of :class:`~epyclab.labs.scheduler.Sweep` for one sweep, and ``engines``.

        ``payloads`` maps each sweep key to its experiment, serialized (see
        :func:`epyclab.labs.wire.package`); ``settings`` are the lab's now.
        """

    def shutdown(self) -> None:
        """Stop whatever the backend keeps between sweeps."""


class ForkBackend:
    """Every point of a sweep on forked copies of this process (see :mod:`epyclab.labs.copies`).

    Raises:
        ValueError: forking is not allowed here (macOS, Windows, or inside a copy itself).
    """

    localCluster = None

    def __init__(self) -> None:
        if not fork_allowed():
            raise ValueError(
                f"ParallelLab(backend={FORK!r}) needs fork, which is safe only on Linux (and not inside a "
                f"forked copy): use backend={IPYPARALLEL!r}, the default here"
            )

    @contextmanager
    def engines(self, payloads: dict[str, Payload], settings: Settings) -> Iterator[dict[str, Any]]:
        n = settings.n
        output = _copies_log(settings.profile_dir)

        def copies(deliver: Callable[[Interim, Any], None]) -> CopyPool:
            # The experiment objects themselves: a forked copy holds them already, as they are (a
            # by-value copy would make the module functions they use different objects, which
            # multiprocessing inside do() cannot pickle by reference).
            return CopyPool({k: pl.experiment for k, pl in payloads.items()}, deliver, n, output=output,
                            replace=True)

        yield {"copies": copies, "engines": n}

    def shutdown(self) -> None:
        """Nothing to stop: a sweep's copies exit with it."""


def _copies_log(profile_dir: str | None) -> str | None:
    """The file the copies' own output goes to: ``<profile_dir>/log/fork.log`` if a profile was given, else nowhere.

    Without a profile the copies need none: finding the default one would import IPython.
    """
    if profile_dir is None:
        return None
    directory = os.path.join(os.path.abspath(profile_dir), "log")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    return os.path.join(directory, f"fork-{os.getpid()}.log")


class IpyparallelBackend:
    """The process's warm local ipyparallel cluster (see :mod:`epyclab.labs.warm`)."""

    def __init__(self) -> None:
        #: The local cluster of the last sweep (tests read its PIDs).
        self.localCluster: "LocalCluster | None" = None

    @contextmanager
    def engines(self, payloads: dict[str, Payload], settings: Settings) -> Iterator[dict[str, Any]]:
        from epyclab.labs import warm

        s = settings
        local = warm.acquire(s.n, s.profile_dir, s.timeout)
        self.localCluster = local
        broken = True
        try:
            copies: Callable[[Callable[[Interim, Any], None]], CopyPool] | None = None
            if s.use_interim and not local.ready() and fork_allowed():
                # The engines are not all there yet: a copy of this process runs points meanwhile,
                # from the start (before the controller is even launched).
                def copies(deliver: Callable[[Interim, Any], None]) -> CopyPool:
                    # Unpacked as the engines unpack them: the copy runs exactly what they run.
                    return CopyPool({k: pl.blob for k, pl in payloads.items()}, deliver, 1,
                                    output=local.log_file("interim"), adopt=local.adopt,
                                    replace=False)

            def connect() -> "ipp.Client | None":
                local.launch()  # once: the controller and the engines start while the copy works
                local.poll()
                return local.client

            yield {"client": local.client if local.ready() else None, "connect": connect,
                   "health": local.check, "copies": copies, "engines": s.n}
            broken = False
        finally:
            # A sweep that ended with an error may leave a point running on an engine: start afresh.
            warm.release(local, broken=broken)

    def shutdown(self) -> None:
        local, self.localCluster = self.localCluster, None
        if local is not None:
            from epyclab.labs import warm

            warm.shutdown(local)


#: The local backends by name.
BACKENDS: dict[str, Callable[[], LocalBackend]] = {}


def register_backend(name: str, backend: Callable[[], LocalBackend]) -> None:
    """Make ``backend`` available as ``ParallelLab(backend=name)``.

    Raises:
        TypeError: ``name`` is not a non-empty string, or ``backend`` is not callable.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"a backend's name must be a non-empty string, not {name!r}")
    if not callable(backend):
        raise TypeError(f"backend {name!r} must be a class (or callable) taking no arguments, not {backend!r}")
    BACKENDS[name] = backend


def default_backend() -> str:
    """``"fork"`` where forking is allowed (Linux), else ``"ipyparallel"``."""
    return FORK if fork_allowed() else IPYPARALLEL


def make_backend(name: str | None) -> LocalBackend:
    """A new backend ``name`` (None: :func:`default_backend`), for one lab.

    Raises:
        ValueError: no backend has that name (the message lists those that do), or it cannot run here.
    """
    name = default_backend() if name is None else name
    factory = BACKENDS.get(name) if isinstance(name, str) else None
    if factory is None:
        raise ValueError(f"ParallelLab has no backend {name!r}; choose one of {sorted(BACKENDS)} "
                         f"(or register one with epyclab.labs.backends.register_backend)")
    return factory()


register_backend(FORK, ForkBackend)
register_backend(IPYPARALLEL, IpyparallelBackend)

"""A Dask client as a ``concurrent.futures`` executor whose every future ends.

distributed's own executor (``client.get_executor()``) passes a task's outcome
to its ``concurrent.futures.Future`` in a coroutine that first gathers the
result from the worker holding it. When that gather raises (a result that
cannot be unpickled in this process does it; so does a task cancelled while
the client waits to gather it), the coroutine ends with the exception and the
future is never set: a sweep waiting on it would wait for ever.
:class:`DaskExecutor` submits through the client and ends its future with
whatever ends the wait: the result, the task's exception (``KilledWorker``
included), a cancellation, or the gather's own error. A sweep on a Dask
cluster (:mod:`epyclab.labs.transports.executors`) runs on it, whichever of
the client or its executor the user gave.

A cluster left with no worker at all (a LocalCluster closes for good a worker
still restarting ``distributed.deploy.lost-worker-timeout`` after it died)
runs no task, and no future ends: the transport watches for that
(:attr:`~epyclab.labs.transports.executors.ExecutorTransport.NoWorkersSeconds`).

A task whose worker is killed (a chunk stopped past its time limit) is run
again by Dask on another worker unless the scheduler has let it go first.
Cancelling a task only queues a message to the scheduler: a worker killed
right after can be seen dead before the cancellation arrives, and the task
then runs again elsewhere, where it sleeps, spins or stops that worker too,
unwatched, with the sweep's next chunks queued behind it (a sweep of a few
seconds took two minutes). :meth:`DaskExecutor.withdraw` cancels a task and
waits until no worker runs it any more, so that its worker can be killed."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from concurrent.futures import Executor, Future
from time import monotonic, sleep
from typing import Any

from epyclab.labs.transports.contract import settle_once
from epyclab.log import logger

__all__ = ["DaskExecutor", "is_dask_client", "dask_client_of"]


def is_dask_client(obj: Any) -> bool:
    """True if ``obj`` is a ``distributed.Client`` (told by what it offers, so distributed need not be imported)."""
    return callable(getattr(obj, "get_executor", None)) and callable(getattr(obj, "scheduler_info", None))


def dask_client_of(executor: Any) -> tuple[Any, dict[str, Any]] | None:
    """The client and submit options of a Dask client or of its ``ClientExecutor``; None for any other executor."""
    if is_dask_client(executor):
        return executor, {}
    if type(executor).__name__ == "ClientExecutor" and type(executor).__module__.startswith("distributed"):
        # distributed keeps the client and the options given to get_executor() in attributes of its own.
        client = getattr(executor, "_client", None)
        options = getattr(executor, "_kwargs", None)
        if is_dask_client(client):
            return client, dict(options) if isinstance(options, dict) else {}
    return None


class DaskExecutor(Executor):
    """Tasks on a Dask cluster as ``concurrent.futures`` futures that always end (see the module docstring).

    ``options`` go to every ``client.submit`` (those of ``get_executor``:
    ``workers``, ``resources``, ``retries``, ...); every task is a new one
    (``pure=False``), even when a resubmitted chunk repeats an earlier one
    (``pure=True`` would hand back the earlier, failed, task).
    """

    def __init__(self, client: Any, **options: Any) -> None:
        self.client = client
        self._options = {**options, "pure": False}
        self._lock = threading.Lock()
        self._tasks: dict[Future, Any] = {}  # type: ignore[type-arg]  # each future's task, until it ends

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future:  # type: ignore[type-arg]
        """Run ``fn(*args, **kwargs)`` on the cluster; a future that ends with its outcome, whatever it is."""
        task = self.client.submit(fn, *args, **{**self._options, **kwargs})
        future: Future = Future()  # type: ignore[type-arg]

        def cancelled(done: Future) -> None:  # type: ignore[type-arg]
            # Cancelling the future (a chunk stopped past its time limit, a sweep abandoned) cancels the task,
            # so that Dask does not run it again elsewhere once its worker is gone.
            # Not when Dask cancelled it: that is seen on the client's event loop, where a (blocking) cancel
            # would wait on that very loop.
            if done.cancelled() and task.status != "cancelled":
                task.cancel()

        def ended(done: Future) -> None:  # type: ignore[type-arg]
            with self._lock:
                self._tasks.pop(done, None)

        with self._lock:
            self._tasks[future] = task
        future.add_done_callback(cancelled)
        future.add_done_callback(ended)
        self.client.loop.add_callback(_relay, self.client, task, future)
        return future

    #: Seconds between two questions to the scheduler while a task is withdrawn.
    WithdrawPoll = 0.02

    def withdraw(self, future: Future, timeout: float) -> bool:  # type: ignore[type-arg]
        """Cancel ``future`` and its task; wait until no worker runs the task (asks the scheduler).

        Then its worker can be killed without Dask running the task again on
        another one (see the module docstring). True once no worker runs it;
        False if one still did after ``timeout`` seconds (or the scheduler could
        not be asked: Dask's errors, such as a closed comm, are ``OSError``).
        """
        with self._lock:
            task = self._tasks.get(future)
        future.cancel()  # and the task, by the done-callback
        if task is None:
            return True  # ended already: nothing left to run
        key = task.key
        deadline = monotonic() + timeout
        while True:
            try:
                running = any(key in keys for keys in self.client.processing().values())
            except OSError as exc:
                logger.debug("could not ask the Dask scheduler whether task %s still runs: %s", key, exc)
                return False
            if not running:
                return True
            if monotonic() >= deadline:
                return False
            sleep(self.WithdrawPoll)

    def workers(self) -> int:
        """How many workers the cluster has now (asks the scheduler).

        Raises:
            OSError: the scheduler cannot be reached (Dask's own errors, such as a closed comm, are ``OSError``).
        """
        return len(self.client.scheduler_info().get("workers", {}))

    def starting(self) -> int | None:
        """How many workers the client's own cluster object still has, running or being started; None if unknown.

        A LocalCluster's nanny starts a new worker when its worker dies, and
        stays in the cluster's ``workers`` meanwhile (a batch-queue cluster's
        pending jobs are there too); a nanny the cluster closed for good (scaled
        down, or retired ``distributed.deploy.lost-worker-timeout`` after its
        worker died) is gone from it. None when the client was given a
        scheduler's address (no cluster object here) or its cluster does not
        list its workers.
        """
        workers = getattr(getattr(self.client, "cluster", None), "workers", None)
        if not isinstance(workers, Mapping):
            return None
        try:
            listed = list(workers.values())
        except RuntimeError:  # changed by the cluster's event loop meanwhile: ask again next time
            return None
        return sum(getattr(getattr(w, "status", None), "name", "") not in _ENDED for w in listed)

    def where(self) -> str:
        """The scheduler's address, for messages."""
        return str(getattr(self.client.scheduler, "address", "") or "?")

    def threads(self) -> int:
        """How many tasks the cluster's workers run at once, in all (asks the scheduler).

        Raises:
            OSError: the scheduler cannot be reached.
        """
        return sum(self.client.nthreads().values())

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Nothing: the client and its cluster are the user's."""


async def _relay(client: Any, task: Any, future: Future) -> None:  # type: ignore[type-arg]
    """Wait for ``task`` on the client's event loop; end ``future`` with its outcome, whatever ends the wait."""
    try:
        result = await client.gather(task, asynchronous=True)
    except BaseException as exc:  # noqa: BLE001 - every outcome ends the future: a cancellation is one too
        if type(exc).__name__.endswith("CancelledError"):
            # Dask's cancellation (by this transport, the user, or a restart): the future is cancelled too.
            future.cancel()
            future.set_running_or_notify_cancel()
        else:
            settle_once(future, error=exc, late=_LATE)
        return
    settle_once(future, result=result, late=_LATE)


# distributed's Status of a nanny (or worker) that will not run a task again.
_ENDED = frozenset({"closing", "closed", "closing_gracefully", "failed"})

# Cancelled meanwhile (stopped past its time limit, or the sweep ended): what the task did is moot.
_LATE = "a Dask task ended after its future was cancelled"

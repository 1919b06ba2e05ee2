"""Talking to an ipyparallel controller's hub: connecting, and the few queries a ClusterLab makes.

Every query here is bounded by a timeout. ipyparallel's own ``Client.db_query``
and friends wait for ever for an answer, so a controller that died (or is
restarting) would hang ``wait()``; here a query that goes unanswered raises
:class:`NoAnswer`, and the lab reconnects or gives up with a clear error.

Results are read with ``db_query`` and ``deserialize_object``, task by task:
``result_status(status_only=False)``, ``get_result(list)`` and
``AsyncHubResult`` raise a CompositeError for a whole batch when any one task
in it failed (measured with ipyparallel 9.2), which would let one failed job
block all the others.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ipyparallel as ipp
from ipyparallel import AsyncResult
from ipyparallel.serialize import unpack_apply_message
from IPython.paths import get_ipython_dir

from epyclab.errors import ClusterConnectionError
from epyclab.labs.remote.hubprobe import controller_absent
from epyclab.log import logger

__all__ = ["Connection", "Hub", "NoAnswer", "SchedulerDown"]


class NoAnswer(ClusterConnectionError):
    """The controller did not answer a query in time."""


class SchedulerDown(ClusterConnectionError):
    """The controller answers, but its task scheduler takes no tasks (it died, or never bound its port)."""


@dataclass
class Connection:
    """How to reach a controller: the arguments of ``ipyparallel.Client`` that ClusterLab accepts."""

    url_file: str | None = None
    profile: str | None = None
    profile_dir: str | None = None
    ipython_dir: str | None = None
    context: Any = None
    debug: bool = False
    sshserver: str | None = None
    sshkey: str | None = None
    password: str | None = None
    paramiko: bool | None = None
    timeout: float = 10
    cluster_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: Whether a controller has answered these arguments (then a reconnection does not probe first).
    _answered: bool = field(default=False, repr=False, compare=False)

    def connection_file(self) -> Path:
        """The controller's client connection file these arguments point to."""
        if self.url_file is not None:
            return Path(self.url_file).expanduser()
        name = f"ipcontroller-{self.cluster_id}-client.json" if self.cluster_id else "ipcontroller-client.json"
        if self.profile_dir is not None:
            directory = Path(self.profile_dir).expanduser()
        else:
            base = Path(self.ipython_dir or get_ipython_dir()).expanduser()
            directory = base / f"profile_{self.profile or 'default'}"
        return directory / "security" / name

    def where(self) -> str:
        """The controller these arguments name, for messages."""
        path = self.connection_file()
        if self.url_file is not None:
            return f"the controller of connection file {path}"
        if self.profile_dir is not None:
            return f"the controller of profile directory {self.profile_dir} (connection file {path})"
        return f"the controller of profile {self.profile or 'default'!r} (connection file {path})"

    def how_to_start(self) -> str:
        """The commands that start a controller for these arguments."""
        cid = f" --cluster-id={self.cluster_id}" if self.cluster_id else ""
        if self.url_file is not None:
            return (
                "start the controller that wrote this file (for an epyclab profile: `epyclab cluster start PROFILE`), "
                "or give ClusterLab the right url_file"
            )
        if self.profile_dir is not None:
            return f"start one with `ipcluster start --profile-dir={self.profile_dir}{cid}`"
        profile = self.profile or "default"
        return (
            f"start one with `epyclab cluster start {profile}` "
            f"(or `ipcluster start --profile={profile}{cid}`)"
        )

    def open(self, attempts: int, delay: float) -> ipp.Client:
        """A client connected to the controller, trying ``attempts`` times ``delay`` seconds apart.

        Raises :class:`ClusterConnectionError` naming the controller and how to
        start one when the connection file is missing, or when no controller
        answers.
        """
        path = self.connection_file()
        if self.url_file is None and not path.parent.parent.is_dir():
            # No profile directory: no controller will ever write a file there, so waiting is pointless.
            name = self.profile or "default"
            raise ClusterConnectionError(
                f"no ipyparallel controller to connect to: {self.where()}: the profile directory "
                f"{path.parent.parent} does not exist. Create the profile with `epyclab cluster init {name}` and "
                f"start it with `epyclab cluster start {name}`, or give ClusterLab the right profile"
            )
        deadline = time.monotonic() + float(self.timeout)
        # An epyclab profile whose record says no controller runs: no file will come, so say so now.
        absent = None if self.url_file is not None or self._answered else _not_started(path)
        if absent is not None:
            raise ClusterConnectionError(
                f"no ipyparallel controller to connect to: {self.where()}: {absent}. {self.how_to_start()}"
            )
        # ipyparallel would print while it waits for the file; wait here, quietly.
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        if not path.exists():
            raise ClusterConnectionError(
                f"no ipyparallel controller to connect to: {self.where()} does not exist "
                f"(waited {self.timeout:g} s). Is a controller running? {self.how_to_start()}"
            )
        # A connection file left behind by a stopped controller: say so now, not after every attempt timed out.
        # Not once connected: a controller being restarted is absent for a moment and gets the full patience.
        absent = None if self._answered else controller_absent(path, self.sshserver)
        if absent is not None:
            raise ClusterConnectionError(
                f"{self.where()} did not answer ({absent}). The controller is probably not running "
                f"(its connection file stays behind when it stops); {self.how_to_start()}"
            )
        last: BaseException | None = None
        attempts = max(1, int(attempts))
        for attempt in range(1, attempts + 1):
            try:
                client = ipp.Client(
                    str(path),
                    context=self.context,
                    debug=self.debug,
                    sshserver=self.sshserver,
                    sshkey=self.sshkey,
                    password=self.password,
                    paramiko=self.paramiko,
                    timeout=self.timeout,
                    **self.extra,
                )
                self._answered = True
                return client
            except (TimeoutError, OSError, ValueError) as exc:
                # ValueError: a connection file read while its controller was still writing it (not JSON yet).
                last = exc
                logger.warning("connecting to %s: attempt %d of %d failed: %s", self.where(), attempt, attempts, exc)
                if attempt < attempts:
                    time.sleep(delay)
        raise ClusterConnectionError(
            f"{self.where()} did not answer ({attempts} attempts, {self.timeout:g} s each): {last}. "
            f"The controller is probably not running (its connection file stays behind when it stops); "
            f"{self.how_to_start()}"
        ) from last


class Hub:
    """A connected client, and the hub queries a ClusterLab needs, each bounded by ``timeout`` seconds."""

    #: Task ids per query: the SQLite task store turns ``$in`` into a chain of ORs, limited in depth.
    Batch = 200
    #: Seconds to leave a restarted controller before submitting to it: its schedulers drop tasks
    #: sent to engines whose connections have not come back yet.
    SettleSeconds = 1.0
    #: At most this many seconds (after the restart was seen) waiting for the engines to answer.
    SettleTimeout = 30.0
    #: Seconds left after every engine answered, for its other connections to come back too.
    SettleMargin = 0.5

    def __init__(self, client: ipp.Client, timeout: float, session: str | None = None,
                 where: str = "the controller") -> None:
        self.client = client
        self.timeout = float(timeout)
        #: The controller, for messages (see :meth:`Connection.where`).
        self.where = where
        #: The hub's session id (a new one on each controller start); given the previous one, a new
        #: connection notices that the controller restarted.
        self.session = session
        self._restarted: float | None = None
        self._settled = False
        self._culls: bool | None = None

    def request(self, msg_type: str, content: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
        """Send a query to the hub; return the reply's content and buffers (NoAnswer if none comes)."""
        client = self.client
        # Client._send is what the public queries use; they then wait without a timeout.
        future = client._send(client._query_stream, msg_type, content=content)
        if not future.wait(self.timeout):
            client._futures.pop(future.msg_id, None)
            raise NoAnswer(f"the controller did not answer a {msg_type} within {self.timeout:g} s")
        reply = future.result()
        session = reply.get("header", {}).get("session")
        if session is not None and session != self.session:
            if self.session is not None:
                logger.warning("the controller was restarted (new hub session %s)", session)
                self._restarted = time.monotonic()
            self.session = session
        answer = reply["content"]
        if answer.get("status") != "ok":
            raise client._unwrap_exception(answer)
        return answer, reply.get("buffers") or []

    def records(self, msg_ids: list[str], keys: list[str], query: dict[str, Any] | None = None) -> dict[str, dict]:
        """The hub's task records of ``msg_ids`` that exist (fields ``keys``), in batches."""
        found: dict[str, dict] = {}
        for start in range(0, len(msg_ids), self.Batch):
            batch = msg_ids[start:start + self.Batch]
            check = {"msg_id": {"$in": batch}}
            if query:
                check.update(query)
            content, buffers = self.request("db_request", {"query": check, "keys": keys})
            lens = content.get("result_buffer_lens")
            blens = content.get("buffer_lens")
            for i, rec in enumerate(content["records"]):
                # Buffers come back concatenated, in record order (request buffers first).
                if blens is not None:
                    rec["buffers"], buffers = buffers[:blens[i]], buffers[blens[i]:]
                if lens is not None:
                    rec["result_buffers"], buffers = buffers[:lens[i]], buffers[lens[i]:]
                found[rec["msg_id"]] = rec
        return found

    def live(self) -> tuple[set[str], dict[int, set[str]]]:
        """The tasks the hub is waiting for: those not yet assigned, and those of each registered engine."""
        content, _ = self.request("queue_request", {"targets": None, "verbose": True})
        unassigned = set(content.get("unassigned") or [])
        engines: dict[int, set[str]] = {}
        for key, value in content.items():
            if isinstance(value, dict) and str(key).isdigit():
                engines[int(key)] = set(value.get("tasks") or []) | set(value.get("queue") or [])
        return unassigned, engines

    def probe(self, engine: int) -> Any:
        """Send engine ``engine`` a trivial task; its future finishes once the engine ran all it had before."""
        return self.client[engine].apply_async(_engine_pid)

    def noteRestart(self) -> None:
        """The controller restarted before this connection was made (a task of the old one is orphaned): settle once.

        A connection made after the restart never sees the hub's session
        change, so :meth:`settle` would not wait for the engines' connections
        to come back before the first resubmission.
        """
        if self._restarted is None and not self._settled:
            self._restarted = time.monotonic()

    def settle(self) -> None:
        """After a controller restart, wait until its engines are back before submitting anything.

        A restarted controller's schedulers silently drop tasks sent to an
        engine whose connection has not come back yet, and then count that
        engine as busy for ever. So: wait :attr:`SettleSeconds`, then until
        every engine answers a trivial task (asked again every second, for at
        most :attr:`SettleTimeout` seconds), then a moment more for its other
        connections.
        """
        if self._restarted is None:
            return
        restarted, self._restarted = self._restarted, None
        self._settled = True
        left = restarted + self.SettleSeconds - time.monotonic()
        if left > 0:
            time.sleep(left)
        deadline = restarted + self.SettleTimeout
        waiting = set(self.client.ids)
        probes = []
        while waiting and time.monotonic() < deadline:
            sent = {e: self.probe(e) for e in waiting}
            probes.extend(sent.values())
            end = min(deadline, time.monotonic() + 1.0)
            while waiting and time.monotonic() < end:
                waiting -= {e for e, ar in sent.items() if ar.done()}
                time.sleep(0.05)
        if waiting:
            logger.warning("engines %s did not answer the restarted controller within %g s; submitting anyway",
                           sorted(waiting), self.SettleTimeout)
        time.sleep(self.SettleMargin)
        done = [ar.msg_ids[0] for ar in probes if ar.done()]
        if done:
            self.purge(done)

    def purge(self, msg_ids: list[str]) -> list[str]:
        """Drop finished tasks' records from the hub; return the ids it still had pending (not dropped)."""
        left = list(msg_ids)
        pending: list[str] = []
        while left:
            try:
                self.request("purge_request", {"msg_ids": left[: self.Batch], "engine_ids": []})
            except NoAnswer:
                raise
            except Exception as exc:
                # The hub refuses a whole batch if one task in it is pending; it names that one.
                culprit = _pending_id(exc, left[: self.Batch])
                if culprit is None:
                    raise
                pending.append(culprit)
                left.remove(culprit)
                continue
            left = left[self.Batch:]
        return pending

    def resubmit(self, msg_ids: list[str]) -> dict[str, str]:
        """Ask the hub to run tasks again from the requests it stored; return old id -> new id.

        The hub sends the requests to its task scheduler on a socket of its own
        and says nothing if none receives them (a scheduler that died, or never
        bound its port): whether a resubmitted task arrived is seen only in
        :meth:`live` (see :meth:`takesTasks`).
        """
        content, _ = self.request("resubmit_request", {"msg_ids": list(msg_ids)})
        return dict(content["resubmitted"])

    def resend(self, msg_id: str) -> AsyncResult:
        """Submit task ``msg_id`` again from this client, from the request the hub stored; return its future.

        What :meth:`resubmit` does, but through this client's own connection to
        the task scheduler rather than the hub's.

        Raises:
            KeyError: the hub has no record of the task.
            ValueError: the task was placed (engines named, or dependencies), which this cannot repeat.
        """
        rec = self.records([msg_id], ["buffers", "metadata"]).get(msg_id)
        if rec is None:
            raise KeyError(f"the hub has no record of task {msg_id}")
        metadata = rec.get("metadata") or {}
        placed = [k for k in ("targets", "after", "follow") if metadata.get(k)]
        if placed:
            raise ValueError(f"task {msg_id} names {', '.join(placed)}: only the hub can submit it again")
        f, args, kwargs = unpack_apply_message(list(rec.get("buffers") or []), copy=True)
        view = self.client.load_balanced_view()
        view.retries = int(metadata.get("retries") or 0)
        return view.apply_async(f, *args, **kwargs)

    def takesTasks(self) -> str | None:
        """Whether the task scheduler takes a trivial task from this client within :attr:`timeout` s.

        Taken means the hub lists it (queued or on an engine) or it finished:
        the scheduler got it. A scheduler that died, or that could not bind its
        port when the controller started, takes nothing, while the hub and the
        engines answer as usual.

        Returns:
            The test task's id if it was taken (the caller purges it once it
            finished, so it is not counted as a result nobody collected), else None.
        """
        ar = self.client.load_balanced_view().apply_async(_engine_pid)
        msg_id = ar.msg_ids[0]
        deadline = time.monotonic() + self.timeout
        while True:
            if ar.done():
                return msg_id
            unassigned, engines = self.live()
            if msg_id in unassigned or any(msg_id in tasks for tasks in engines.values()):
                return msg_id
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)

    def culls(self) -> bool:
        """True if the hub keeps task records in ipyparallel's in-memory ``DictDB``, which culls old ones.

        Asked once per connection. The client cannot read the controller's
        configuration, so the store is told by what it accepts: ``DictDB``
        answers a query with the ``$exists`` operator, while the SQLite store
        (epyclab's durable :class:`~epyclab.clustersetup.taskstore.TaskStore`)
        refuses the operator and ``NoDB`` refuses every query. (MongoDB,
        long deprecated in ipyparallel, would be taken for a culling store.)
        """
        if self._culls is None:
            try:
                self.request("db_request", {"query": {"msg_id": {"$exists": False}}, "keys": ["msg_id"]})
            except NoAnswer:
                raise
            except Exception as exc:
                # The refusal is the answer: this store does not take $exists, so it is not DictDB.
                logger.debug("the hub's task store refused $exists (%s): not the culling in-memory store", exc)
                self._culls = False
            else:
                self._culls = True
        return self._culls

    def recordCount(self) -> int:
        """How many task records the hub holds now (finished or not, of every client)."""
        content, _ = self.request("history_request", {})
        return len(content.get("history") or [])

    def sync(self) -> None:
        """Return once everything sent before has left this process (a round trip to the hub)."""
        self.request("queue_request", {"targets": None, "verbose": False})

    def recorded(self, msg_ids: list[str]) -> set[str]:
        """Wait (at most :attr:`timeout` seconds) until the hub's task store holds every task of ``msg_ids``.

        The hub records a task when its scheduler reports it, on a socket
        other than the one queries use, so a round trip (:meth:`sync`) does
        not prove it: the store is asked, again every 50 ms. Once a durable
        store (:class:`~epyclab.clustersetup.taskstore.TaskStore`) holds a task,
        a killed controller no longer loses it, and a process that submitted
        a sweep can exit.

        Returns:
            The ids the store still lacks at the deadline (empty when all are held).

        Raises:
            NoAnswer: the controller did not answer a query.
        """
        missing = set(msg_ids)
        deadline = time.monotonic() + self.timeout
        while missing:
            try:
                missing -= set(self.records(sorted(missing), ["msg_id"]))
            except NoAnswer:
                raise
            except Exception as exc:
                # ipyparallel's NoDB refuses every query: there is no store to wait for.
                logger.debug("the hub's task store cannot be asked for records (%s)", exc)
                return set()
            if not missing or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        return missing

    def engine_uuids(self) -> set[str]:
        """The identities of the registered engines (as task records name them)."""
        # The client keeps this map current from the hub's registration notifications.
        return set(getattr(self.client, "_engines", {}).values())

    def close(self) -> None:
        """Close the client's sockets, letting messages still queued go first."""
        try:
            self.client.close(linger=int(self.timeout * 1000))
        except Exception as exc:
            logger.warning("closing the connection to the controller: %s", exc)


def _not_started(path: Path) -> str | None:
    """Why no controller will write the missing connection file ``path`` of an epyclab profile, or None."""
    # Imported here: the cluster set-up package is not needed to import a lab.
    from epyclab.clustersetup.controllertree import controllerNotStarted

    return controllerNotStarted(path)


def _engine_pid() -> int:
    import os

    return os.getpid()


def _pending_id(exc: BaseException, batch: list[str]) -> str | None:
    text = str(exc)
    if "msg pending" not in text:
        return None
    for msg_id in batch:
        if msg_id in text:
            return msg_id
    return None

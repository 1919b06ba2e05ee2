"""The local cluster's fork server: one clean process imports the controller's and engines' code once, then forks them.

A local cluster of ``n`` engines is ``n + 1`` Python processes that each import
ipyparallel, ipykernel, IPython and zmq (0.21-0.23 CPU-s each here), and each
engine then imports numpy and epyclab's worker as it unpacks its first
experiment (0.15 CPU-s more). On a machine whose cores are all busy running a
cold sweep's first points, every CPU-second of that is half a second (on 2
cores) the sweep waits. The fork server imports all of it once (0.28 CPU-s)
and forks the controller and each engine from there (milliseconds each), as
multiprocessing's ``forkserver`` and Android's zygote do. Measured here on a
quiet machine, a 2-engine cluster's processes used 0.80-0.89 CPU-s until
each engine had imported what its first point needs, and 0.36-0.40 with the
server; the engines registered in 1.09-1.11 s instead of 1.27-1.34 s. The
saving grows with the number of engines.

The local cluster uses it on Linux only: macOS's system libraries are not
safe to fork once loaded, and Windows cannot fork. The server is a fresh
Python process started by the owner (never a fork of the user's process,
whose threads or OpenMP state could hang a child), with the
engines' environment (their native thread pools sized, see
:mod:`epyclab.labs.transports.cores`), and forks only while it has a single
thread: otherwise it answers with an error and the launcher starts a plain
process instead, as it does when the server cannot start at all.

Protocol: one JSON object per line over the server's standard streams.

- owner to server (its stdin): ``{"role": "engine" | "controller", "argv": [...],
  "env": {...}, "cwd": ..., "output": ...}``: fork a process that runs that role's
  ``main()`` with ``sys.argv[1:] = argv``, in its own session, with that
  environment and working directory, its output appended to ``output``;
- server to owner (its stdout): ``{"pid": N}`` or ``{"error": "..."}``, answering
  each request in order; and ``{"ended": N, "status": S}`` as each child ends
  (``S``: multiprocessing's sign, ``-K`` for signal K), which is how the owner
  learns how an engine that is not its own child ended (see
  :mod:`epyclab.labs.transports.deaths`).

The server exits when its stdin closes (its owner stopped it, or died). Its
children run on: the owner stops them by PID from its records, and the reaper
does if the owner died. Forked children name themselves (``/proc/self/comm``:
:data:`ENGINE_NAME`, :data:`CONTROLLER_NAME`), since their command line is the
server's.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import psutil

from epyclab.labs.transports.ownerpipes import keep_from_children, release

__all__ = ["ForkServer", "ForkedProcess", "ForkServerError", "ENGINE_NAME", "CONTROLLER_NAME", "SERVER_CMD",
           "serve", "register", "server_for", "unregister"]

#: What the server imports before it forks anything: all that a controller and an engine import to start,
#: and what an engine imports to unpack and run its first experiment.
PRELOAD = (
    "ipyparallel.engine.app",
    "ipyparallel.controller.app",
    "epyclab.labs.transports.enginestream",
    "epyclab.labs.engine.worker",
    "numpy",
    "cloudpickle",
)

#: The process names (``/proc/PID/comm``, at most 15 bytes) of the server's children, by role.
ENGINE_NAME = "epyclab-engine"
CONTROLLER_NAME = "epyclab-control"
_NAMES = {"engine": ENGINE_NAME, "controller": CONTROLLER_NAME}
_MAINS = {"engine": "ipyparallel.engine.app", "controller": "ipyparallel.controller.app"}

#: The server's command. Imports run with the cyclic garbage collector off and are then frozen
#: (``gc.freeze``), as the plain engines' and controller's commands do (see localcluster.ENGINE_CMD): the
#: children's collections then never walk the 500+ modules they inherit. ipykernel's debugger is kept out, as
#: there.
SERVER_CMD = [
    sys.executable, "-c",
    "import gc, sys; gc.disable(); sys.modules.setdefault('debugpy', None); "
    "from epyclab.labs.transports.forkserver import serve; serve()",
]


class ForkServerError(OSError):
    """The fork server could not start a process (it is gone, or refused to fork); start a plain one instead."""


# ---- the server ------------------------------------------------------------------------------------------


def serve() -> None:
    """Run the fork server on this process's standard streams until its stdin closes (see the module's docstring)."""
    import gc
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    gc.freeze()
    gc.enable()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    # A child's end wakes the select below through the wakeup descriptor (the handler itself does nothing).
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    pending = b""
    while True:
        ready, _, _ = select.select([0, wake_r], [], [])
        if wake_r in ready:
            while True:
                try:
                    if not os.read(wake_r, 512):
                        break
                except BlockingIOError:
                    break
        _report_ended()
        if 0 not in ready:
            continue
        data = os.read(0, 65536)
        if not data:
            return  # the owner closed the pipe (or died): its children are its to stop
        pending += data
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            _answer(json.loads(line), (wake_r, wake_w))


def _send(message: dict[str, Any]) -> None:
    """Write one line to the owner (raw writes: no Python-level lock a forked child could inherit held)."""
    data = (json.dumps(message) + "\n").encode()
    while data:
        data = data[os.write(1, data):]


def _report_ended() -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send({"ended": pid, "status": os.waitstatus_to_exitcode(status)})


def _single_threaded() -> bool:
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return threading.active_count() == 1


def _answer(request: dict[str, Any], wake: tuple[int, int]) -> None:
    if request.get("role") not in _MAINS:
        _send({"error": f"unknown role {request.get('role')!r}"})
        return
    if not _single_threaded():
        # A thread of the server (an OpenBLAS pool the user sized above one thread per worker) could hold a lock
        # the child would wait on for ever: the owner starts a plain process instead.
        _send({"error": "the fork server has more than one thread"})
        return
    try:
        pid = os.fork()
    except OSError as exc:
        _send({"error": f"fork failed: {exc}"})
        return
    if pid == 0:
        _become(request, wake)  # never returns: its SystemExit unwinds through serve() to the interpreter's exit
    _send({"pid": pid})


def _become(request: dict[str, Any], wake: tuple[int, int]) -> None:
    """In the forked child: become the requested process (as ``Popen`` with ``start_new_session`` would start it).

    Never returns: the child ends as the plain process would, by ``SystemExit`` from its ``main()`` (or
    one raised here with its status) unwinding to the interpreter's own exit, atexit handlers included.
    """
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in wake:
            os.close(fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        # Appended, never through a symlink put in the (private) log directory.
        out = os.open(request["output"], os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
    except OSError as exc:
        # Nowhere to write to but what stderr is now (the server's log, or the output file).
        os.write(2, f"epyclab fork server: could not start a {request['role']} process: {exc}\n".encode())
        raise SystemExit(1) from None
    try:
        with open("/proc/self/comm", "w") as f:
            f.write(_NAMES[request["role"]])
    except OSError:
        pass  # only a name for ps and for the owner's checks, which also go by its records
    sys.argv = [_NAMES[request["role"]], *request["argv"]]
    sys.modules[_MAINS[request["role"]]].main()  # type: ignore[attr-defined]
    raise SystemExit(0)


# ---- the owner's side ------------------------------------------------------------------------------------


class ForkServer:
    """A running fork server, as its owner sees it: :meth:`spawn` a role, learn how each child ended, :meth:`close`.

    ``env``: the server's environment (its children get the one each request
    names); ``stderr``: the file its own messages are appended to (a failed
    import, say). The server starts importing at once (about 0.3 CPU-s);
    :meth:`spawn` waits for it.
    """

    def __init__(self, env: dict[str, str], stderr: str) -> None:
        import epyclab

        env = dict(env)
        # The server imports epyclab from where this process did, installed or not (as the reaper does).
        root = str(Path(epyclab.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
        err = os.open(stderr, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            self._process = subprocess.Popen(
                SERVER_CMD, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env, close_fds=True,
                # Its own session: a Ctrl-C sent to the user's process group does not reach it or its children.
                start_new_session=True,
            )
        finally:
            os.close(err)
        assert self._process.stdin is not None and self._process.stdout is not None
        # A process forked from the owner (a forked copy running points) must not hold the request pipe, or the
        # server would not see its owner die.
        keep_from_children(self._process.stdin)
        self._changed = threading.Condition()
        self._answers: deque[dict[str, Any]] = deque()
        self._ended: dict[int, int] = {}
        self._closed = False
        # One request at a time, so that answers come in the order of the requests.
        self._requesting = threading.Lock()
        self._reader = threading.Thread(target=self._read, name=f"epyclab-forkserver-{self.pid}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        """The server's PID."""
        return self._process.pid

    def _read(self) -> None:
        stdout = self._process.stdout
        assert stdout is not None
        try:
            for line in stdout:
                message = json.loads(line)
                with self._changed:
                    if "ended" in message:
                        self._ended[int(message["ended"])] = int(message["status"])
                    else:
                        self._answers.append(message)
                    self._changed.notify_all()
        finally:
            with self._changed:
                self._closed = True
                self._changed.notify_all()

    def spawn(self, role: str, argv: list[str], env: dict[str, str], cwd: str, output: str,
              timeout: float) -> ForkedProcess:
        """Fork a process of ``role`` (``"engine"`` or ``"controller"``) that runs its ``main()`` with ``argv``.

        ``timeout``: seconds to wait for the server (which may still be importing).

        Raises:
            ForkServerError: the server is gone, did not answer in time, or refused to fork.
        """
        request = json.dumps({"role": role, "argv": argv, "env": env, "cwd": cwd, "output": output}) + "\n"
        stdin = self._process.stdin
        assert stdin is not None
        with self._requesting:
            try:
                stdin.write(request.encode())
                stdin.flush()
            except (OSError, ValueError) as exc:
                raise ForkServerError(f"the fork server {self.pid} is gone ({exc})") from exc
            with self._changed:
                if not self._changed.wait_for(lambda: self._answers or self._closed, timeout=timeout):
                    raise ForkServerError(f"the fork server {self.pid} did not answer within {timeout:.0f} s")
                if not self._answers:
                    raise ForkServerError(f"the fork server {self.pid} has exited")
                answer = self._answers.popleft()
        if "pid" not in answer:
            raise ForkServerError(f"the fork server {self.pid} could not fork a {role} process: {answer.get('error')}")
        return ForkedProcess(int(answer["pid"]), self)

    def exit_status(self, pid: int, timeout: float | None) -> int | None:
        """How child ``pid`` ended (``-K``: signal K), waiting up to ``timeout`` seconds (None: for ever).

        Returns None if the server is gone and cannot tell (the child's end is then seen by its PID only).

        Raises:
            TimeoutError: the child is still running after ``timeout`` seconds.
        """
        with self._changed:
            if not self._changed.wait_for(lambda: pid in self._ended or self._closed, timeout=timeout):
                raise TimeoutError(f"process {pid} is still running")
            return self._ended.get(pid)

    def known_ended(self, pid: int) -> bool:
        """True once the server has reported that child ``pid`` ended (its PID may be another process's now)."""
        with self._changed:
            return pid in self._ended

    def alive(self) -> bool:
        """True while the server runs and answers."""
        with self._changed:
            return not self._closed and self._process.poll() is None

    def close(self, timeout: float = 5.0) -> None:
        """Stop the server (its children run on: stopping them is the owner's) and wait for it."""
        stdin = self._process.stdin
        assert stdin is not None
        release(stdin)
        try:
            stdin.close()
        except OSError:
            pass  # the server is gone already
        try:
            self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._reader.join(timeout=timeout)
        if self._process.stdout is not None:
            self._process.stdout.close()


class ForkedProcess:
    """A process the fork server started, with the part of ``psutil.Process``'s interface ipyparallel's launchers use.

    Its exit status comes from the server (this process is not its parent);
    without the server, its end is seen by its PID, as ipyparallel sees a
    process it did not start.
    """

    def __init__(self, pid: int, server: ForkServer) -> None:
        self.pid = pid
        self._server = server
        # Its start time, so that a reused PID is never taken for it.
        try:
            self._created: float | None = psutil.Process(pid).create_time()
        except psutil.Error:
            self._created = None  # it ended already (the server reports how)

    def _same(self) -> bool:
        if self._server.known_ended(self.pid) or self._created is None:
            return False
        try:
            process = psutil.Process(self.pid)
            return process.create_time() == self._created and process.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def is_running(self) -> bool:
        """True while the process runs."""
        return self._same()

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the process, if it is still the one the server started."""
        if self._same():
            os.kill(self.pid, sig)

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the process to end and return its exit status (``-K``: signal K; None: unknown).

        Raises:
            psutil.TimeoutExpired: it still runs after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            code = self._server.exit_status(self.pid, timeout)
        except TimeoutError:
            raise psutil.TimeoutExpired(timeout, self.pid) from None
        if code is not None or self._server.known_ended(self.pid):
            return code
        # The server is gone: wait on the PID itself, as for any process that is not a child.
        while self._same():
            if deadline is not None and time.monotonic() >= deadline:
                raise psutil.TimeoutExpired(timeout, self.pid)
            time.sleep(0.05)
        return None


# ---- which cluster's launchers use which server ----------------------------------------------------------

_servers: dict[str, ForkServer] = {}
_servers_lock = threading.Lock()


def register(cluster_id: str, server: ForkServer) -> None:
    """Make ``server`` the one the launchers of cluster ``cluster_id`` fork from."""
    with _servers_lock:
        _servers[cluster_id] = server


def unregister(cluster_id: str) -> ForkServer | None:
    """Forget cluster ``cluster_id``'s server; return it (None if it had none)."""
    with _servers_lock:
        return _servers.pop(cluster_id, None)


def server_for(cluster_id: str) -> ForkServer | None:
    """The running server of cluster ``cluster_id``, or None."""
    with _servers_lock:
        server = _servers.get(cluster_id)
    return server if server is not None and server.alive() else None

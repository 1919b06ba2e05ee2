"""Running commands on workers with plain ssh and rsync, the way the user would type them.

Every command goes through :class:`Remote`, which adds the user's
``--ssh-option`` values (so their own ssh config, keys and jump hosts apply),
logs the command at INFO, prints instead of running it in dry-run mode, and
turns a failure into a :class:`RemoteCommandError` that names the host and the
command. :meth:`Remote.forEachHost` runs one step on every host at once and
collects the failures, so one dead worker does not stop the others.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from epyclab.clustersetup.errors import HostFailures, RemoteCommandError
from epyclab.clustersetup.hosts import Host
from epyclab.log import logger

__all__ = ["Remote", "shellPath", "rsyncPath"]

T = TypeVar("T")

# Added after the user's options: for ssh the first value given for an option
# wins, so the user can override these. BatchMode stops a worker that wants a
# password from hanging the whole command; ConnectTimeout bounds an unreachable one.
_DEFAULT_SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "ConnectTimeout=15")


def shellPath(path: str) -> str:
    """Quote a remote path for a POSIX shell, keeping a leading ``~/`` meaning the remote home."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def rsyncPath(path: str) -> str:
    """A remote path as rsync takes it: relative paths are relative to the remote home."""
    if path == "~":
        return "."
    if path.startswith("~/"):
        return path[2:]
    return path


class Remote:
    """Runs ssh, rsync and local steps for the cluster commands.

    :param sshOptions: extra ssh arguments, each string split as a shell
        would (``["-F ~/.ssh/cluster_config", "-o ProxyJump=gw"]``)
    :param dryRun: log and echo every command instead of running it
    :param echo: called with each command line in dry-run mode (the CLI prints them)
    """

    def __init__(
        self,
        sshOptions: Sequence[str] = (),
        dryRun: bool = False,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.sshOptions = [arg for option in sshOptions for arg in shlex.split(option)]
        self.dryRun = dryRun
        self.echo = echo
        #: Every command line run (or, in dry-run mode, that would have run), in order.
        self.commands: list[str] = []

    # -- building command lines ------------------------------------------------------

    def sshArgs(self, host: Host) -> list[str]:
        """``ssh`` and its options for ``host`` (without destination or command)."""
        return ["ssh", *self._options(host)]

    def _options(self, host: Host) -> list[str]:
        port = ["-p", str(host.port)] if host.port is not None else []
        return [*self.sshOptions, *_DEFAULT_SSH_OPTIONS, *port]

    def sshCommand(self, host: Host, script: str) -> list[str]:
        """The argv running ``script`` with ``sh`` on ``host``, stdin closed (``-n``).

        The script goes through ``sh -c`` so it means the same whatever the
        user's login shell; ``-n`` keeps ssh from eating a caller's stdin.
        """
        return ["ssh", "-n", *self._options(host), host.destination, "sh -c " + shlex.quote(script)]

    def rsyncCommand(
        self, host: Host, sources: Sequence[str | Path], dest: str, options: Sequence[str] = ()
    ) -> list[str]:
        """The argv copying local ``sources`` to ``dest`` on ``host``."""
        return [
            "rsync",
            "-e",
            shlex.join(self.sshArgs(host)),
            *options,
            *(str(s) for s in sources),
            f"{host.rsyncDestination}:{rsyncPath(dest)}",
        ]

    def rsyncFromCommand(
        self, host: Host, sources: Sequence[str], dest: str | Path, options: Sequence[str] = ()
    ) -> list[str]:
        """The argv copying ``sources`` on ``host`` into the local directory ``dest``."""
        remote = [f"{host.rsyncDestination}:{rsyncPath(s)}" for s in sources]
        return ["rsync", "-e", shlex.join(self.sshArgs(host)), *options, *remote, str(dest)]

    # -- running ---------------------------------------------------------------------

    def run(
        self,
        label: str,
        argv: Sequence[str],
        timeout: float | None = None,
        cwd: str | Path | None = None,
        readOnly: bool = False,
    ) -> str:
        """Run ``argv`` for ``label`` (a host, or "local"); return its stdout or raise :class:`RemoteCommandError`.

        ``readOnly`` marks a local query that changes nothing: it runs even in dry-run mode.
        """
        line = _display(argv)
        self.commands.append(line)
        if self.dryRun and not readOnly:
            logger.debug("%s: would run: %s", label, line)
            if self.echo is not None:
                self.echo(f"[{label}] {line}")
            return ""
        logger.debug("%s: %s", label, line)  # shown by `epyclab cluster -v`
        try:
            done = subprocess.run(
                list(argv),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=cwd,
            )
        except subprocess.TimeoutExpired as error:
            output = _text(error.stderr) + _text(error.stdout)
            raise RemoteCommandError(label, line, None, output) from error
        except OSError as error:
            raise RemoteCommandError(label, line, 127, f"cannot run {argv[0]}: {error.strerror}") from error
        if done.returncode != 0:
            raise RemoteCommandError(label, line, done.returncode, done.stderr + done.stdout)
        return done.stdout

    def ssh(self, host: Host, script: str, timeout: float | None = None) -> str:
        """Run the shell ``script`` on ``host`` (with ``sh`` here for the local pseudo-host); return its stdout."""
        argv = ["sh", "-c", script] if host.isLocal else self.sshCommand(host, script)
        return self.run(str(host), argv, timeout=timeout)

    def hostname(self, host: Host) -> str:
        """The address ssh connects to for ``host``, after the user's ssh config (``ssh -G``; no connection)."""
        output = self.run(str(host), ["ssh", "-G", *self._options(host), host.destination], timeout=30, readOnly=True)
        for line in output.splitlines():
            key, _, value = line.partition(" ")
            if key == "hostname":
                return value.strip()
        return host.host.strip("[]")

    def rsyncTo(self, host: Host, sources: Sequence[str | Path], dest: str, options: Sequence[str] = ()) -> str:
        """Copy local ``sources`` to ``dest`` on ``host`` with rsync; return rsync's output."""
        return self.run(str(host), self.rsyncCommand(host, sources, dest, options))

    def rsyncFrom(self, host: Host, sources: Sequence[str], dest: str | Path, options: Sequence[str] = ()) -> str:
        """Copy ``sources`` from ``host`` into the local directory ``dest``."""
        return self.run(str(host), self.rsyncFromCommand(host, sources, dest, options))

    def forEachHost(self, action: str, hosts: Iterable[Host], step: Callable[[Host], T]) -> dict[Host, T]:
        """Run ``step`` for every host at once; return each host's result.

        A host whose step fails does not stop the others: once all are done,
        :class:`HostFailures` is raised naming each failed host and its error,
        with the results of the hosts that succeeded.
        """
        hosts = list(hosts)
        outcomes: dict[Host, T] = {}
        failures: dict[Host, BaseException] = {}
        with ThreadPoolExecutor(max_workers=max(1, min(len(hosts), 16))) as pool:
            futures = {host: pool.submit(step, host) for host in hosts}
            for host, future in futures.items():
                try:
                    outcomes[host] = future.result()
                except Exception as error:  # noqa: BLE001 - collected per host and raised below
                    logger.error("%s: %s failed: %s", host, action, error)
                    failures[host] = error
        if failures:
            raise HostFailures(
                action, {str(h): e for h, e in failures.items()}, {str(h): o for h, o in outcomes.items()}
            )
        return outcomes


def _display(argv: Sequence[str]) -> str:
    """A command line as one would type it; ssh's remote command is shown as ssh passes it on, quoted once."""
    if argv and argv[0] == "ssh" and argv[-1].startswith("sh -c "):
        return shlex.join(argv[:-1]) + " " + argv[-1]
    return shlex.join(argv)


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data

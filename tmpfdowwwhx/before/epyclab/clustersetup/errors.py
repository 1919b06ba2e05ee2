"""The errors the cluster helpers raise; all derive from :class:`epyclab.errors.EpyclabError`."""

from __future__ import annotations

from collections.abc import Mapping

from epyclab.errors import EpyclabError

__all__ = ["ClusterSetupError", "HostSpecError", "RemoteCommandError", "HostFailures"]


class ClusterSetupError(EpyclabError):
    """A cluster cannot be set up, started or stopped as asked (the message says why and what to do)."""


class HostSpecError(ClusterSetupError, ValueError):
    """A worker was not given as ``[user@]host[:port]``."""


class RemoteCommandError(ClusterSetupError):
    """A command run for one host (ssh, rsync, or a local step) failed."""

    def __init__(self, host: str, command: str, returncode: int | None, output: str = "") -> None:
        self.host = host
        self.command = command
        self.returncode = returncode
        self.output = output.strip()
        status = "timed out" if returncode is None else f"exited with status {returncode}"
        detail = f": {_tail(self.output)}" if self.output else ""
        super().__init__(f"{host}: `{command}` {status}{detail}")


class HostFailures(ClusterSetupError):
    """Some hosts failed while the others finished; ``failures`` maps each failed host to its error.

    ``outcomes`` holds what happened on the hosts that succeeded, so a caller
    can report both.
    """

    def __init__(self, action: str, failures: Mapping[str, BaseException], outcomes: Mapping[str, object]) -> None:
        self.action = action
        self.failures = dict(failures)
        self.outcomes = dict(outcomes)
        lines = [f"{action} failed on {len(self.failures)} of {len(self.failures) + len(self.outcomes)} host(s):"]
        lines += [f"  {_line(host, error)}" for host, error in self.failures.items()]
        super().__init__("\n".join(lines))


def _line(host: str, error: BaseException) -> str:
    """One failure as a line that starts with its host (and with the error type, if not ours)."""
    text = str(error)
    if text.startswith(f"{host}:"):
        return text
    kind = "" if isinstance(error, EpyclabError) else f"{type(error).__name__}: "
    return f"{host}: {kind}{text}"


def _tail(text: str, lines: int = 5) -> str:
    """The last lines of a command's output: where ssh and pip say what went wrong."""
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(kept)

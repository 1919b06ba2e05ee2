"""Worker names as users write them: ``[user@]host[:port]``, on the command line or in a file."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from epyclab.clustersetup.errors import HostSpecError

__all__ = ["Host", "parseHost", "parseHosts", "readWorkersFile", "LOCAL"]

# user: anything but '@', ':' and white space; host: a name, an IPv4 address,
# or an IPv6 address in brackets; port: digits.
# Neither may start with '-', which ssh would read as an option.
_SPEC = re.compile(
    r"^(?:(?P<user>[^-@:\s/][^@:\s/]*)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^-@:\s/\[\]][^@:\s/\[\]]*)(?::(?P<port>\d+))?$"
)


@dataclass(frozen=True)
class Host:
    """One worker: the ssh destination and port, and the spec it was written as."""

    host: str
    user: str | None = None
    port: int | None = None

    @property
    def destination(self) -> str:
        """What ssh and rsync take as the destination: ``user@host`` or ``host``."""
        host = self.host.strip("[]")
        return f"{self.user}@{host}" if self.user else host

    @property
    def rsyncDestination(self) -> str:
        """What rsync takes before ``:path``: IPv6 addresses keep their brackets there."""
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def isLocal(self) -> bool:
        """True for the pseudo-host of ``--local`` clusters, reached without ssh."""
        return self == LOCAL

    def __str__(self) -> str:
        text = f"{self.user}@{self.host}" if self.user else self.host
        return f"{text}:{self.port}" if self.port is not None else text


#: The machine epyclab runs on, for ``epyclab cluster start --local``.
LOCAL = Host("(local)")


def parseHost(spec: str) -> Host:
    """Parse ``[user@]host[:port]`` (IPv6 addresses in brackets), or raise :class:`HostSpecError`."""
    text = spec.strip()
    match = _SPEC.match(text)
    if not match:
        raise HostSpecError(
            f"cannot read worker {spec!r}: write it as [user@]host[:port], e.g. alice@node1:2222 or node2"
        )
    port = match.group("port")
    if port is not None and not 0 < int(port) < 65536:
        raise HostSpecError(f"worker {spec!r} has port {port}, which is not between 1 and 65535")
    return Host(match.group("host"), match.group("user"), int(port) if port is not None else None)


def parseHosts(specs: Iterable[str]) -> list[Host]:
    """Parse several specs, dropping exact duplicates (a worker listed twice would get twice the engines)."""
    hosts: list[Host] = []
    for spec in specs:
        host = parseHost(spec)
        if host not in hosts:
            hosts.append(host)
    return hosts


def readWorkersFile(path: str | Path) -> list[str]:
    """Read worker specs from a file: one per line; blank lines and ``#`` comments are ignored."""
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as error:
        raise HostSpecError(f"cannot read the workers file {file}: {error.strerror}") from error
    specs = []
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.split("#", 1)[0].strip()
        if not content:
            continue
        if len(content.split()) > 1:
            raise HostSpecError(f"{file}, line {number}: expected one worker per line, got {content!r}")
        specs.append(content)
    return specs

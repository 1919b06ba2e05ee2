"""Starting detached processes on a host and stopping them by PID: the shell scripts, run with sh or ssh.

A process is started as ``setsid nohup COMMAND >> LOG 2>&1 < /dev/null &``:
``setsid`` makes it the leader of its own process group (so its children,
such as the controller's schedulers, can be killed with it), ``nohup`` and the
redirections let the ssh session end while it runs, and the script prints its
PID. Stopping sends SIGTERM to each recorded process group, waits, and sends
SIGKILL to what is left, but only to PIDs that still run an ipyparallel
program, so a PID reused by another program after a reboot is never killed.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

from epyclab.clustersetup.hosts import Host
from epyclab.clustersetup.ssh import Remote

__all__ = ["launch", "stop", "alive"]

# alive PID: true if PID runs (not a zombie) an ipyparallel controller or engine.
# group_alive PGID: true if a process of that group runs (zombies left for init to reap do not count).
# children PID: the PIDs of its children.
_FUNCTIONS = "\n".join(
    [
        # -ww: the whole command line, however long (ps cuts it to the terminal's width otherwise).
        'alive() { ps -ww -o stat=,args= -p "$1" 2>/dev/null | grep -v "^ *Z" | grep -q -e ipengine -e ipcontroller'
        " -e ipyparallel; }",
        "group_alive() { ps -eo pgid=,stat= | awk -v g=\"$1\" '$1 == g && $2 !~ /^Z/ {f = 1} END {exit !f}'; }",
        "children() { ps -eo pid=,ppid= | awk -v p=\"$1\" '$2 == p {print $1}'; }",
    ]
)


def launch(
    remote: Remote,
    host: Host,
    command: str,
    log: str,
    count: str = "1",
    environment: Mapping[str, str] | None = None,
) -> list[int]:
    """Start ``count`` copies of ``command`` (a shell expression) detached on ``host``; return their PIDs.

    ``log`` is a shell expression for the log file; ``$i`` in it is the copy's
    number, from 1. ``count`` is a shell arithmetic expression evaluated there
    (so it can use the host's core count).
    """
    env = " ".join(f"{name}={shlex.quote(value)}" for name, value in (environment or {}).items())
    script = "\n".join(
        [
            "set -e",
            # What the controller and engines write (task store, logs, state) is private to the user.
            "umask 077",
            f'mkdir -p "$(dirname {log.replace("$i", "0")})"',
            f'n=$(( {count} )); [ "$n" -ge 1 ] || n=1',
            "i=0",
            'while [ "$i" -lt "$n" ]; do',
            "  i=$((i + 1))",
            f"  {env} setsid nohup {command} >> {log} 2>&1 < /dev/null &",
            '  echo "pid $!"',
            "done",
        ]
    )
    output = remote.ssh(host, script, timeout=60)
    return [int(line.split()[1]) for line in output.splitlines() if line.startswith("pid ")]


def stop(remote: Remote, host: Host, pids: Sequence[int], grace: float = 10.0) -> list[int]:
    """Stop the process groups of ``pids`` on ``host`` (SIGTERM, then SIGKILL after ``grace`` s).

    The children of each process (an engine's nanny runs in a session of its
    own) are stopped with it. Returns the PIDs that were running and were
    stopped, children included; the others had already exited.
    """
    if not pids:
        return []
    rounds = max(1, int(grace / 0.2))
    script = "\n".join(
        [
            _FUNCTIONS,
            "mine=''; kids=''",
            f"for p in {' '.join(str(int(p)) for p in pids)}; do",
            # An engine's nanny is its child, in a session of its own: stop it too.
            '  if alive "$p"; then mine="$mine $p"; kids="$kids $(children "$p")"; fi',
            "done",
            "for p in $mine $kids; do",
            '  if alive "$p"; then kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true; fi',
            "done",
            'left="$mine $kids"; i=0',
            f'while [ -n "$(echo $left)" ] && [ "$i" -lt {rounds} ]; do',
            "  sleep 0.2; i=$((i + 1)); next=''",
            '  for p in $left; do if group_alive "$p" || alive "$p"; then next="$next $p"; fi; done',
            "  left=$next",
            "done",
            'for p in $left; do kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null || true; done',
            'for p in $mine; do echo "stopped $p"; done',
        ]
    )
    output = remote.ssh(host, script, timeout=grace + 60)
    return [int(line.split()[1]) for line in output.splitlines() if line.startswith("stopped ")]


def alive(remote: Remote, host: Host, pids: Sequence[int]) -> list[int]:
    """The ``pids`` that still run an ipyparallel program on ``host``."""
    if not pids:
        return []
    script = "\n".join(
        [
            _FUNCTIONS,
            f"for p in {' '.join(str(int(p)) for p in pids)}; do",
            '  if alive "$p"; then echo "alive $p"; fi',
            "done",
        ]
    )
    output = remote.ssh(host, script, timeout=60)
    return [int(line.split()[1]) for line in output.splitlines() if line.startswith("alive ")]

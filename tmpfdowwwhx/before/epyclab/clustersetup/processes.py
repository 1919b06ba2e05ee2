"""Starting detached processes on a host and stopping them by PID: the shell scripts, run with sh or ssh.

A process is started as ``setsid nohup COMMAND >> LOG 2>&1 < /dev/null &``:
``setsid`` makes it the leader of its own process group (so its children,
such as the controller's schedulers, can be killed with it), ``nohup`` and the
redirections let the ssh session end while it runs, and the script prints its
PID. Stopping sends SIGTERM to each recorded process group, waits, and sends
SIGKILL to what is left, but only to PIDs that still run an ipyparallel
program, so a PID reused by another program after a reboot is never killed.

A controller forks its schedulers, which outlive it when it is killed alone
(SIGKILL, the OOM killer) and keep its ports open. :func:`identify` lists a
process with its descendants and the members of its process group, each as
an *identity*: its PID and its start time (on Linux the boot and the clock
ticks since it, from ``/proc``; elsewhere ``ps -o lstart``), which together
name one process for ever. :func:`stopIdentified` stops recorded
identities (so a process recorded once is found after its parent died, and a
reused PID is never signalled), and :func:`identified` says which still run.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence

from epyclab.clustersetup.hosts import Host
from epyclab.clustersetup.ssh import Remote

__all__ = ["launch", "stop", "alive", "identify", "identified", "stopIdentified", "Identity"]

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

# started PID: its start time (zombie or not) as one word, empty if there is no such process.
# live PID: its start time if it runs (not a zombie), else nothing.
# descendants PID, members PGID: the PIDs of its descendants, of the live members of the group.
# Where there is /proc (Linux) the start time is the boot's id and the clock ticks from boot to the
# start (/proc/PID/stat, field 22): unlike a wall-clock time, a clock set forward or back (NTP, a
# resumed virtual machine) does not change it. Elsewhere it is `ps -o lstart` in UTC.
_IDENTITY = r"""
stat_of() { awk '{sub(/^.*\) /, ""); print $1, $20}' "/proc/$1/stat" 2>/dev/null; }
boot() { tr -d -- '-' < /proc/sys/kernel/random/boot_id 2>/dev/null; }
started() {
  if [ -r /proc/self/stat ]; then
    t=$(stat_of "$1"); if [ -n "$t" ]; then echo "boot$(boot):${t#* }"; fi
  else
    TZ=UTC LC_ALL=C ps -o lstart= -p "$1" 2>/dev/null | awk '{$1 = $1; gsub(/ /, "_"); print}'
  fi
}
live() {
  if [ -r /proc/self/stat ]; then
    t=$(stat_of "$1"); case "$t" in ""|Z*) ;; *) echo "boot$(boot):${t#* }" ;; esac
  else
    TZ=UTC LC_ALL=C ps -o stat=,lstart= -p "$1" 2>/dev/null \
      | awk '$1 !~ /^Z/ {$1 = ""; $0 = $0; $1 = $1; gsub(/ /, "_"); print}'
  fi
}
descendants() { for c in $(children "$1"); do echo "$c"; descendants "$c"; done; }
members() { ps -eo pid=,pgid=,stat= | awk -v g="$1" '$2 == g && $3 !~ /^Z/ {print $1}'; }
"""

_START = re.compile(r"[A-Za-z0-9:_]*")

#: A process named for ever: ``[pid, start]``, its start time as the shell function ``started`` of
#: ``_IDENTITY`` gives it (one word); ``""`` when it is not known (a record from before it was kept).
Identity = list


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


def identify(remote: Remote, host: Host, pid: int, started: str = "") -> list[Identity]:
    """The identities of process ``pid`` on ``host``, its descendants and its process group's live members.

    ``started`` is its recorded start time (see :data:`Identity`; ``""`` if
    not known). If a process other than that one now has the PID (a start
    time that differs; or, if ``started`` is not known, a live process that
    is not an ipyparallel program), nothing of it is listed. If ``pid`` has
    exited (or is a zombie), the members of its process group are still
    listed: they are its leftovers (a process group's ID is not reused while
    the group has members).
    """
    script = "\n".join(
        [
            _FUNCTIONS,
            _IDENTITY,
            # Any text but a start time (see _IDENTITY) matches no process.
            f"p={int(pid)}; want={shlex.quote(started if _START.fullmatch(started) else '-')}",
            'now=$(started "$p")',
            # Another process has the PID now: nothing of it is ours.
            'if [ -n "$want" ] && [ -n "$now" ] && [ "$now" != "$want" ]; then exit 0; fi',
            # Start not known: a live process that is not an ipyparallel program is not ours either.
            'if [ -z "$want" ] && [ -n "$(live "$p")" ] && ! alive "$p"; then exit 0; fi',
            'for q in $( (echo "$p"; descendants "$p"; members "$p") | sort -un); do',
            '  s=$(live "$q"); if [ -n "$s" ]; then echo "process $q $s"; fi',
            "done",
        ]
    )
    output = remote.ssh(host, script, timeout=60)
    return [[int(line.split()[1]), line.split()[2]] for line in output.splitlines() if line.startswith("process ")]


def identified(remote: Remote, host: Host, identities: Sequence[Identity]) -> list[int]:
    """The PIDs of ``identities`` that still run on ``host`` as the same process (not a zombie).

    An identity without a start time counts if its PID runs an ipyparallel program (see :func:`alive`).
    """
    if not identities:
        return []
    check = 'for x in $ids; do if same "$x"; then echo "alive ${x%%@*}"; fi; done'
    script = "\n".join([_FUNCTIONS, _IDENTITY, _same(identities), check])
    output = remote.ssh(host, script, timeout=60)
    return [int(line.split()[1]) for line in output.splitlines() if line.startswith("alive ")]


def stopIdentified(remote: Remote, host: Host, identities: Sequence[Identity], grace: float = 10.0) -> list[int]:
    """Stop the processes of ``identities`` still running on ``host`` (SIGTERM, SIGKILL after ``grace`` s).

    Each is checked to be the same process (PID and start time) right before
    every signal, so a PID reused by another process is never signalled.
    Returns the PIDs that ran and were stopped.
    """
    if not identities:
        return []
    rounds = max(1, int(grace / 0.2))
    script = "\n".join(
        [
            _FUNCTIONS,
            _IDENTITY,
            _same(identities),
            "mine=''",
            'for x in $ids; do if same "$x"; then mine="$mine $x"; kill -TERM "${x%%@*}" 2>/dev/null || true; fi; done',
            'left="$mine"; i=0',
            f'while [ -n "$(echo $left)" ] && [ "$i" -lt {rounds} ]; do',
            "  sleep 0.2; i=$((i + 1)); next=''",
            '  for x in $left; do if same "$x"; then next="$next $x"; fi; done',
            "  left=$next",
            "done",
            'for x in $left; do if same "$x"; then kill -KILL "${x%%@*}" 2>/dev/null || true; fi; done',
            'for x in $mine; do echo "stopped ${x%%@*}"; done',
        ]
    )
    output = remote.ssh(host, script, timeout=grace + 60)
    return [int(line.split()[1]) for line in output.splitlines() if line.startswith("stopped ")]


def _same(identities: Sequence[Identity]) -> str:
    """Shell: ``ids`` (each ``PID@START``) and ``same X``, true if X still runs as that process."""
    # A start time is letters, digits, ':' and '_' (see _IDENTITY): any other text matches no process ("-").
    ids = " ".join(f"{int(pid)}@{start if _START.fullmatch(str(start)) else '-'}" for pid, start in identities)
    return "\n".join(
        [
            f"ids='{ids}'",
            'same() { p=${1%%@*}; s=${1#*@}; if [ -n "$s" ]; then [ "$(live "$p")" = "$s" ]; else alive "$p"; fi; }',
        ]
    )

"""A tiny process that stops a local cluster when the process that started it dies, however it dies.

:class:`~epyclab.labs.transports.localcluster.LocalCluster` starts one reaper per cluster,
in its own session (a Ctrl-C sent to the user's process group never reaches
it), with its stdin a pipe whose only write end the user's process holds. The
reaper just waits on that pipe. The kernel closes the write end when the user's
process dies for any reason (exit, an exception, SIGTERM from a job scheduler,
SIGKILL, a crashed kernel), so the reaper reads end-of-file and then:

- if the cluster's state file is gone, the cluster was stopped normally: it exits;
- else, once the owner recorded in it is gone, it stops every recorded process
  (and their children) by PID with the same clean-up as
  :func:`~epyclab.labs.transports.localcluster.cleanup_orphans`, removes the cluster's
  files, and exits.

Run as ``python -m epyclab.labs.transports.reaper STATE_FILE``; only the standard library
is imported until the pipe closes, so the reaper costs a few MB while it waits.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from pathlib import Path

#: Seconds to wait, after end-of-file, for the owner to be gone (its files close just before it exits).
OWNER_GRACE = 10.0


def wait_for_eof() -> None:
    """Block until every write end of stdin is closed."""
    while sys.stdin.buffer.read(4096):
        pass


def reap(state_file: Path) -> bool:
    """Stop the cluster recorded in ``state_file`` if its owner is gone; True if there was one to stop."""
    from epyclab.labs.transports import localcluster as parallelcluster

    deadline = time.monotonic() + OWNER_GRACE
    while True:
        try:
            state = parallelcluster.read_state(state_file)
        except FileNotFoundError:
            return False  # stopped normally by its owner
        if state is None:
            return False  # not even its name says which cluster: nothing can be stopped safely
        if not parallelcluster.process_alive(state["owner"]):
            break
        if time.monotonic() > deadline:
            # The pipe was closed by a live owner: its own stop, or the next start, is in charge.
            return False
        time.sleep(0.05)
    parallelcluster.stop_recorded_state(state_file, state)
    return True


def main(argv: list[str]) -> int:
    # In its own session already; a SIGINT or SIGHUP meant for the user's terminal must not stop it either.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    state_file = Path(argv[0])
    wait_for_eof()
    from epyclab.labs.transports.localcluster import read_state

    try:
        state = read_state(state_file)
    except FileNotFoundError:
        return 0
    if state is None:
        return 1
    from epyclab.labs.transports.localclusterlog import cluster_logger, release_logger
    from epyclab.log import logger

    log = cluster_logger(state["profile_dir"], state["cluster_id"])
    # The clean-up reports through the epyclab logger: into the cluster's log file, as the owner's would.
    for handler in log.handlers:
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        if reap(state_file):
            logger.info("reaper: stopped cluster %s, whose owner %s is gone",
                        state["cluster_id"], state["owner"]["pid"])
    except Exception:
        logger.exception("reaper: stopping cluster %s failed", state["cluster_id"])
        return 1
    finally:
        release_logger(log)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

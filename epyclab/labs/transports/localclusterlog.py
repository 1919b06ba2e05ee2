"""Where the local cluster's own messages go: a private log file, never the user's console or cell.

ipyparallel's ``Cluster`` logs to the user's stdout when it runs inside
IPython (and to the root logger elsewhere): its launchers' start and stop
messages, and on stop the whole output of every engine and of the controller
(``Output for 0: ... received signal 15, stopping ... Event loop stopped before
Future completed``, ``engine set stopped ... exit_code 1``). Engines exit with
code 1 when they are told to stop, so these come at WARNING on every sweep
although nothing went wrong (the output of a process that exits with code 0,
the controller's usually, is not kept: ipyparallel logs it at DEBUG and removes
its file). :func:`cluster_logger` gives ``Cluster`` a logger
of its own that writes them to ``<profile_dir>/epyclab/clusters.log`` instead
(rotated at 1 MiB, two old files kept, mode 0600, opened without following a
symlink) and does not propagate to the ``epyclab`` logger.
"""

from __future__ import annotations

import logging
import os
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import IO, Any

from epyclab.private import privateDirectory

__all__ = ["LOG_NAME", "cluster_log_path", "cluster_logger", "keep_outputs", "release_logger"]

#: The file name of the local clusters' log, in ``<profile_dir>/epyclab/``.
LOG_NAME = "clusters.log"
_MAX_BYTES = 1 << 20
_BACKUPS = 2
#: How much of each process's output file is kept (its end: the last words of an engine that died).
_OUTPUT_TAIL = 64 << 10
_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def cluster_log_path(profile_dir: str | os.PathLike[str]) -> Path:
    """The log file of the local clusters of ``profile_dir``."""
    return Path(profile_dir) / "epyclab" / LOG_NAME


class _PrivateRotatingFileHandler(RotatingFileHandler):
    """A rotating file handler whose file is created 0600 and never opened through a symlink."""

    def _open(self) -> IO[Any]:
        fd = os.open(self.baseFilename, _APPEND, 0o600)
        return os.fdopen(fd, "a", encoding=self.encoding or "utf-8", errors=self.errors)


def cluster_logger(profile_dir: str | os.PathLike[str], cluster_id: str) -> logging.Logger:
    """A logger for ipyparallel's ``Cluster(log=...)`` of local cluster ``cluster_id``, writing to its file.

    Release it with :func:`release_logger` once the cluster is stopped.
    Raises OSError if the log file cannot be opened (a symlink in its place, say).
    """
    path = cluster_log_path(profile_dir)
    privateDirectory(path.parent)
    handler = _PrivateRotatingFileHandler(path, maxBytes=_MAX_BYTES, backupCount=_BACKUPS, encoding="utf-8")
    handler.setFormatter(logging.Formatter(f"%(asctime)s {cluster_id} %(levelname)s %(message)s"))
    log = logging.getLogger(f"epyclab.parallelcluster.{cluster_id}")
    log.handlers = [handler]
    # INFO, not DEBUG: at DEBUG ipyparallel's launchers copy the processes' output to stderr as it comes.
    log.setLevel(logging.INFO)
    # Not to the epyclab logger: these are ipyparallel's messages about its processes, every
    # sweep, and Python's last-resort handler would print the WARNINGs among them to stderr.
    log.propagate = False
    return log


def release_logger(log: logging.Logger) -> None:
    """Close the file of a logger made by :func:`cluster_logger`; later messages are dropped."""
    handlers, log.handlers = list(log.handlers), [logging.NullHandler()]
    # A NullHandler, not none: a logger without handlers would reach Python's last-resort
    # handler, which prints WARNINGs (a launcher thread's late "engine set stopped") to stderr.
    for handler in handlers:
        handler.close()


def keep_outputs(profile_dir: str | os.PathLike[str], cluster_id: str, paths: list[Path]) -> None:
    """Append what the cluster's processes wrote (ipyparallel's output file of each) to the clusters' log.

    The local cluster stops its processes by PID, not through ipyparallel, so
    ipyparallel never logs their output, and their files are removed with the
    cluster: what an engine printed before it died (a C library's message, a
    crash) would be lost. The end of each non-empty file (at most 64 KiB) goes
    to ``<profile_dir>/epyclab/clusters.log`` under a line naming the cluster
    and the process's file.

    Raises:
        OSError: the log cannot be written (a symlink in its place, say).
    """
    blocks = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - _OUTPUT_TAIL))
                text = f.read().decode("utf-8", "replace").strip()
        except OSError:
            continue  # gone already (another clean-up), or unreadable: nothing to keep
        if text:
            stamp = logging.Formatter().formatTime(logging.makeLogRecord({}))
            cut = " (its last 64 KiB)" if size > _OUTPUT_TAIL else ""
            blocks.append(f"{stamp} {cluster_id} INFO output of {path.name}{cut}:\n"
                          + "".join(f"    {line}\n" for line in text.splitlines()))
    if not blocks:
        return
    target = cluster_log_path(profile_dir)
    privateDirectory(target.parent)
    with os.fdopen(os.open(target, _APPEND, 0o600), "a", encoding="utf-8") as log:
        log.write("".join(blocks))

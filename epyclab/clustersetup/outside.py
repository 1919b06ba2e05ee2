"""Engines ended from outside: the marker an engine leaves when a signal ends it, read by ClusterLab.

A batch system ends a job's engines with SIGTERM (then SIGKILL) at its
walltime, on preemption and on ``scancel``/``qdel``; ``cluster stop`` does the
same. Such a death is not the doing of the point the engine was running, and
must not count against it (the death policy in :mod:`epyclab.labs`). The
engine is the one that knows, so it says so. The contract, kept small:

- **where**: ``<profile directory>/ended/``, private to the user; the compute
  nodes write it on the file system they share with the login node, where
  the profile lives (as for every batch launcher);
- **what**: an engine that receives SIGTERM writes ``ended/<engine uuid>``
  (the uuid the hub's task records give as ``engine_uuid``) before it stops,
  one line: ``SIGTERM <seconds since the epoch> <batch job id or ->``;
- **who writes**: :func:`install`, run on each engine at start-up by the
  profile's ``ipengine_config.py`` (``c.IPEngine.startup_command``, written
  by ``epyclab cluster init``); it chains to the engine's own SIGTERM handler;
- **who reads**: :func:`endedFromOutside`, which ClusterLab's collector asks
  about an engine that died under a task.

An engine lost with its node gets no signal and leaves no marker: its death
counts against its points, as any death without a witness does.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

__all__ = ["ENDED_DIRECTORY", "STARTUP_COMMAND", "install", "endedFromOutside"]

#: The directory of markers, in the profile directory.
ENDED_DIRECTORY = "ended"
#: What the profile's engine config runs at start-up (an engine without epyclab goes on without markers).
STARTUP_COMMAND = (
    "try:\n    from epyclab.clustersetup.outside import install as _epyclab_install\nexcept ImportError:\n"
    "    pass\nelse:\n    _epyclab_install()\n    del _epyclab_install"
)
# Batch job id variables, of every system a row of batchsystems.SYSTEMS names (kept here: the engine imports no more).
_JOB_VARIABLES = ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "JOB_ID")


def install() -> None:
    """On an engine at start-up: leave a marker when SIGTERM ends it, then stop as the engine would."""
    from ipyparallel.engine.app import IPEngine

    if not IPEngine.initialized():
        return
    app = IPEngine.instance()
    ident = str(app.ident)
    directory = Path(app.profile_dir.location) / ENDED_DIRECTORY
    previous = signal.getsignal(signal.SIGTERM)
    job = next((os.environ[v] for v in _JOB_VARIABLES if os.environ.get(v)), "-")

    def ended(sig: int, frame: Any) -> None:
        try:
            directory.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(directory / ident, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as file:
                file.write(f"SIGTERM {time.time():.3f} {job}\n")
        except OSError as error:  # the engine stops anyway; its log says why there is no marker
            app.log.warning("could not leave the marker of an engine ended from outside: %s", error)
        if callable(previous):
            previous(sig, frame)

    signal.signal(signal.SIGTERM, ended)


def endedFromOutside(profileDirectory: str | os.PathLike[str], engineUuid: str) -> str | None:
    """Why the engine ``engineUuid`` of the profile was ended from outside (``"SIGTERM at ... in job 12"``),
    or None if it left no marker."""
    path = Path(profileDirectory) / ENDED_DIRECTORY / str(engineUuid)
    if not engineUuid or "/" in str(engineUuid):
        return None
    try:
        words = path.read_text().split()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if len(words) != 3:
        return None
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(words[1])))
    return f"{words[0]} at {when}" + ("" if words[2] == "-" else f" in batch job {words[2]}")

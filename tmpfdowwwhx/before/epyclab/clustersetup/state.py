"""What epyclab remembers in a profile between commands: the workers, and the processes it started.

Two JSON files in the profile directory:

- ``epyclab-cluster.json``, the *settings*: the workers, venv, remote profile
  directory and ssh options that ``sync`` and ``start`` were last given, so
  that later commands need only the profile name;
- ``pid/epyclab-processes.json``, the *processes*: the controller's host and
  PID (or its batch job) and every engine's host and PID (or batch job), so that ``stop`` kills exactly those
  (by PID and process group, never by name), and the engine id to host map
  that ``status`` reports from.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from epyclab.private import writePrivate

__all__ = ["ClusterSettings", "Processes", "loadSettings", "saveSettings", "loadProcesses", "saveProcesses"]

_SETTINGS = "epyclab-cluster.json"
_PROCESSES = "pid/epyclab-processes.json"


@dataclass
class ClusterSettings:
    """The workers and how to reach them, as last given to ``sync`` or ``start``."""

    workers: list[str] = field(default_factory=list)
    controllerHost: str | None = None
    venv: str = "~/epyclab-venv"
    python: str = "python3"
    remoteProfile: str | None = None
    sshOptions: list[str] = field(default_factory=list)


@dataclass
class Processes:
    """The controller and engines a ``start`` launched, and where."""

    #: ``{"host": spec or "(local)", "pid": n}``; or, for a controller in a batch job (``start --controller
    #: slurm``), a launcher record like those of :attr:`launchers` with ``"role": "controller"``, its output
    #: file and node; None when no controller was started.
    controller: dict[str, Any] | None = None
    #: host spec (or "(local)") -> PIDs of the engines started there.
    engines: dict[str, list[int]] = field(default_factory=dict)
    #: engine id (as text, JSON keys are text) -> host spec it runs on.
    engineHosts: dict[str, str] = field(default_factory=dict)
    #: engine id (as text) -> the PIDs it answered with (its own and its parent's), so that after a
    #: restart the controller is told to restore only the engines still running.
    enginePids: dict[str, list[int]] = field(default_factory=dict)
    #: Engines started by a batch or MPI launcher: each ``{"kind", "class", "engines", "options",
    #: "launcher"}``, the last being ipyparallel's ``to_dict()`` of the launcher (job id or PID).
    launchers: list[dict[str, Any]] = field(default_factory=list)

    def register(self, registered: Mapping[int, Any]) -> None:
        """Record the engines that answered (engine id -> an object with ``host`` and ``pids``)."""
        self.engineHosts = {str(eid): r.host for eid, r in registered.items()}
        self.enginePids = {str(eid): list(r.pids) for eid, r in registered.items()}

    def empty(self) -> bool:
        """True when nothing is recorded as running."""
        return self.controller is None and not any(self.engines.values()) and not self.launchers


def loadSettings(directory: str | os.PathLike[str]) -> ClusterSettings:
    """The profile's settings (defaults when none were saved); ``directory`` is the profile directory."""
    data = _read(Path(directory) / _SETTINGS)
    return ClusterSettings(**{k: v for k, v in data.items() if k in ClusterSettings.__dataclass_fields__})


def saveSettings(directory: str | os.PathLike[str], settings: ClusterSettings) -> None:
    """Save the profile's settings."""
    _write(Path(directory) / _SETTINGS, asdict(settings))


def loadProcesses(directory: str | os.PathLike[str]) -> Processes:
    """The processes recorded as started from this profile (``directory``: the profile directory)."""
    data = _read(Path(directory) / _PROCESSES)
    return Processes(**{k: v for k, v in data.items() if k in Processes.__dataclass_fields__})


def saveProcesses(directory: str | os.PathLike[str], processes: Processes) -> None:
    """Record the processes started; an empty record removes the file."""
    path = Path(directory) / _PROCESSES
    if processes.empty():
        path.unlink(missing_ok=True)
        return
    _write(path, asdict(processes))


def _read(path: Path) -> dict[str, object]:
    return json.loads(path.read_text()) if path.exists() else {}


def _write(path: Path, data: dict[str, object]) -> None:
    """Write by rename (a crash never leaves half a file), private to the user (0600)."""
    writePrivate(path, json.dumps(data, indent=2) + "\n")

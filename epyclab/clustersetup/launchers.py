"""Engines started by a batch system or MPI, through ipyparallel's own launcher classes.

``epyclab cluster start PROFILE --engines KIND`` starts engines with one of:

- ``local``: processes on this machine (:mod:`epyclab.clustersetup.engines`, no ssh);
- ``ssh``: processes on the workers, over ssh (the same module);
- ``slurm``, ``pbs``: one batch job holding all the engines, submitted with
  ipyparallel's :class:`~ipyparallel.cluster.launcher.SlurmEngineSetLauncher` or
  :class:`~ipyparallel.cluster.launcher.PBSEngineSetLauncher` (``sbatch`` /
  ``qsub``; stopped with ``scancel`` / ``qdel``);
- ``mpi``: ``mpiexec -n N ipengine --mpi``, by
  :class:`~ipyparallel.cluster.launcher.MPIEngineSetLauncher`.

This module configures those classes from :class:`BatchOptions` and records
each launcher as the dict ipyparallel's ``to_dict`` gives (with its job id or
PID) in the profile's state, so that ``status`` and ``stop`` rebuild it with
``from_dict`` in any later shell. The batch commands run on this machine: run
``epyclab cluster start`` on the cluster's login node, where ``sbatch`` works
and the profile directory is on the file system the compute nodes share.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ipyparallel.cluster import launcher as ipp_launchers

from epyclab.clustersetup import processes
from epyclab.clustersetup.engines import WORKER_VARIABLE
from epyclab.clustersetup.errors import ClusterSetupError
from epyclab.clustersetup.hosts import LOCAL
from epyclab.clustersetup.private import privateDirectory, privateTree
from epyclab.clustersetup.profile import ENGINE_FILE
from epyclab.clustersetup.ssh import Remote
from epyclab.log import logger

__all__ = [
    "LAUNCHERS",
    "BATCH_LAUNCHERS",
    "BatchOptions",
    "startBatchEngines",
    "batchStatus",
    "stopBatchEngines",
    "recordName",
    "describeBatch",
]

#: Every kind of engine launcher ``start --engines`` accepts.
LAUNCHERS = ("local", "ssh", "slurm", "pbs", "mpi")
#: The kinds driven by ipyparallel's launcher classes: kind -> class name in ipyparallel.cluster.launcher.
BATCH_LAUNCHERS = {
    "slurm": "SlurmEngineSetLauncher",
    "pbs": "PBSEngineSetLauncher",
    "mpi": "MPIEngineSetLauncher",
}
# The command that must exist for each kind, for a clear error before anything is tried.
_COMMANDS = {"slurm": "sbatch", "pbs": "qsub", "mpi": "mpiexec"}


@dataclass
class BatchOptions:
    """What a user of a batch system sets for the engines' job (all optional but ``engines``).

    :param engines: how many engines in all
    :param enginesPerNode: engines on each node (Slurm ``--ntasks-per-node``, PBS ``ppn``, MPI ``-npernode``)
    :param queue: the queue (PBS) or partition (Slurm)
    :param account: the account charged
    :param walltime: the job's time limit, as the scheduler writes it (``HH:MM:SS``)
    :param directives: extra scheduler lines (``--mem=4G`` or ``#SBATCH --mem=4G``); for MPI, extra
        ``mpiexec`` arguments
    :param template: a job script template file (ipyparallel's ``batch_template_file``: ``{n}``,
        ``{program_and_args}``, ``{queue}``, ``{account}`` ... are filled in); the options above
        are then left to the template
    """

    engines: int = 1
    enginesPerNode: int | None = None
    queue: str = ""
    account: str = ""
    walltime: str = ""
    directives: list[str] = field(default_factory=list)
    template: str | None = None


def _launcher_class(kind: str) -> type:
    try:
        return getattr(ipp_launchers, BATCH_LAUNCHERS[kind])
    except KeyError:
        raise ClusterSetupError(
            f"unknown engine launcher {kind!r}: use one of {', '.join(LAUNCHERS)}"
        ) from None


def _directive_lines(kind: str, options: BatchOptions) -> list[str]:
    """The scheduler lines epyclab adds to ipyparallel's default job script."""
    prefix = {"slurm": "#SBATCH", "pbs": "#PBS"}[kind]
    lines = []
    if kind == "slurm" and options.enginesPerNode:
        # ipyparallel adds --ntasks only when no line matches its pattern, which --ntasks-per-node does.
        lines.append(f"#SBATCH --ntasks={int(options.engines)}")
        lines.append(f"#SBATCH --ntasks-per-node={int(options.enginesPerNode)}")
    if kind == "pbs":
        if options.enginesPerNode:
            nodes = -(-int(options.engines) // int(options.enginesPerNode))
            lines.append(f"#PBS -l nodes={nodes}:ppn={int(options.enginesPerNode)}")
        if options.account:
            lines.append(f"#PBS -A {options.account}")
        if options.walltime:
            lines.append(f"#PBS -l walltime={options.walltime}")
    for directive in options.directives:
        directive = directive.strip()
        lines.append(directive if directive.startswith("#") else f"{prefix} {directive}")
    return lines


def _configure(kind: str, directory: Path, options: BatchOptions) -> Any:
    """An ipyparallel engine-set launcher of ``kind`` for the profile in ``directory``, configured."""
    cls = _launcher_class(kind)
    work = privateDirectory(directory / "batch")
    launcher = cls(work_dir=str(work), profile_dir=str(directory), cluster_id="")
    launcher.engine_cmd = [sys.executable, "-m", "ipyparallel.engine"]
    launcher.engine_args = [f"--profile-dir={directory}", f"--file={directory / ENGINE_FILE}"]
    launcher.environment = {WORKER_VARIABLE: kind}
    if kind == "mpi":
        extra = [*options.directives]
        if options.enginesPerNode:
            extra = ["-npernode", str(int(options.enginesPerNode)), *extra]
        launcher.mpi_args = extra
        launcher.output_file = str(directory / "log" / "epyclab-engines-mpi.log")
        return launcher
    launcher.output_file = str(directory / "log" / f"epyclab-engines-{kind}-%j.log" if kind == "slurm"
                               else directory / "log" / f"epyclab-engines-{kind}.log")
    if options.queue:
        launcher.queue = options.queue
    if kind == "slurm":
        launcher.account = options.account
        launcher.timelimit = options.walltime
    if options.template is not None:
        path = Path(options.template).expanduser()
        if not path.is_file():
            raise ClusterSetupError(f"the job script template {path} does not exist: give an existing file")
        launcher.batch_template = path.read_text()
    else:
        # ipyparallel's default script, with the options it has no setting for inserted after its first
        # line; ipyparallel then adds its own (engine count, queue, account, time, output) as usual.
        lines = _directive_lines(kind, options)
        if lines:
            first, rest = launcher.default_template.split("\n", 1)
            launcher.default_template = "\n".join([first, *lines, rest])
    return launcher


def startBatchEngines(directory: Path, kind: str, options: BatchOptions) -> dict[str, Any]:
    """Start ``options.engines`` engines with the ``kind`` launcher; return its record for the profile's state.

    The record is ``{"kind", "class", "engines", "launcher": to_dict()}``;
    the launcher's dict holds the batch job id (Slurm, PBS) or the PID of
    ``mpiexec`` (MPI). Raises :class:`ClusterSetupError` naming the command
    and its output when submission fails, or when the command is missing.
    """
    if options.engines < 1:
        raise ClusterSetupError(f"the number of engines (-n) must be at least 1, not {options.engines}")
    command = _COMMANDS[kind] if kind in _COMMANDS else None
    if command is None:
        _launcher_class(kind)
    if command is not None and shutil.which(command) is None:
        raise ClusterSetupError(
            f"`{command}` is not on the PATH of this machine: start the cluster on the {kind} login node "
            f"(where `{command}` works), or choose another launcher with --engines"
        )
    privateDirectory(directory / "log")
    launcher = _configure(kind, directory, options)
    work = directory / "batch"
    # The job's files (script, output) are the user's alone; sbatch passes the umask on to the job.
    old = os.umask(0o077)
    try:
        started = launcher.start(int(options.engines))
    except subprocess.CalledProcessError as error:
        # ipyparallel lets the command's stderr through to ours: the scheduler's own words are printed above.
        raise ClusterSetupError(
            f"{kind}: starting {options.engines} engine(s) failed: `{' '.join(map(str, error.cmd))}` exited with "
            f"status {error.returncode} (its error is printed above). The job script: {launcher.batch_file or work}"
        ) from error
    except (ipp_launchers.LauncherError, OSError) as error:
        raise ClusterSetupError(f"{kind}: starting {options.engines} engine(s) failed: {error}") from error
    finally:
        os.umask(old)
    privateTree(directory / "batch")
    record = {"kind": kind, "class": type(launcher).__name__, "engines": int(options.engines),
              "options": asdict(options), "launcher": _plain(launcher.to_dict())}
    logger.info("%s: started %d engine(s): %s", kind, options.engines, _what(record) or started)
    return record


def describeBatch(directory: Path, kind: str, options: BatchOptions) -> str:
    """What :func:`startBatchEngines` would run, for a dry run: the command and the job script it writes."""
    launcher = _configure(kind, directory, options)
    if kind == "mpi":
        launcher.n = int(options.engines)
        return " ".join(map(str, launcher.find_args()))
    old = os.umask(0o077)
    try:
        launcher.write_batch_script(int(options.engines))
    finally:
        os.umask(old)
    script = Path(launcher.batch_file)
    return f"{' '.join(launcher.submit_command)} {script}\n" + script.read_text()


def _plain(data: Mapping[str, Any]) -> dict[str, Any]:
    """The launcher's dict with only what JSON keeps."""
    return {k: v for k, v in data.items() if isinstance(v, (str, int, float, bool, list, dict, type(None)))}


def _what(record: Mapping[str, Any]) -> str:
    state = record.get("launcher", {})
    if state.get("job_id"):
        return f"job {state['job_id']}"
    if state.get("pid", -1) > 0:
        return f"mpiexec PID {state['pid']}"
    return ""


def recordName(record: Mapping[str, Any]) -> str:
    """How a launcher record is named in messages: ``slurm job 12``, ``mpi mpiexec PID 345``."""
    return f"{record.get('kind')} {_what(record)}".strip()


def batchStatus(record: Mapping[str, Any]) -> str:
    """What the scheduler says of the record's job now (``RUNNING``, ``PENDING``, ``gone``...)."""
    kind = record.get("kind")
    state = record.get("launcher", {})
    if kind == "mpi":
        pid = int(state.get("pid", -1))
        return "running" if pid > 0 and _pid_running(pid) else "gone"
    job = str(state.get("job_id", ""))
    if not job:
        return "unknown (no job id recorded)"
    command = ["squeue", "-h", "-j", job, "-o", "%T"] if kind == "slurm" else ["qstat", job]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"cannot be asked ({' '.join(command)}: {error})"
    if done.returncode != 0 or not done.stdout.strip():
        return "gone"
    return done.stdout.strip().splitlines()[-1] if kind == "slurm" else "known to qstat"


def stopBatchEngines(record: Mapping[str, Any]) -> str:
    """Cancel the record's batch job (``scancel`` / ``qdel``) or stop its ``mpiexec``; say what was done."""
    kind = str(record.get("kind"))
    state = dict(record.get("launcher", {}))
    cls = _launcher_class(kind)
    if kind == "mpi":
        pid = int(state.get("pid", -1))
        if pid <= 0 or not _pid_running(pid):
            return "mpiexec had already exited"
        # mpiexec runs in a session of its own (start_new_session): stop it and its engines as a group.
        stopped = processes.stop(Remote([]), LOCAL, [pid])
        return f"stopped mpiexec (PID {pid}) and its engines" if stopped else "mpiexec had already exited"
    if batchStatus(record) == "gone":
        return f"job {state.get('job_id')} had already ended"
    launcher = cls.from_dict(state)
    try:
        launcher.stop()
    except subprocess.CalledProcessError as error:
        raise ClusterSetupError(
            f"{kind}: cancelling job {state.get('job_id')} failed: {error}; cancel it by hand "
            f"(`{' '.join(launcher.delete_command)} {state.get('job_id')}`)"
        ) from error
    return f"cancelled job {state.get('job_id')}"


def _pid_running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False

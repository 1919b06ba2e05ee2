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
``from_dict`` in any later shell.

``start --controller slurm`` (or ``pbs``) runs the controller in a batch job
of its own too, by :class:`~ipyparallel.cluster.launcher.SlurmControllerLauncher`
or :class:`~ipyparallel.cluster.launcher.PBSControllerLauncher`, configured
from the same options (:func:`startBatchController`); its record carries
``"role": "controller"`` and, once it runs, the node it runs on.

The batch commands run on this machine: run
``epyclab cluster start`` on the cluster's login node, where ``sbatch`` works
and the profile directory is on the file system the compute nodes share.
"""

from __future__ import annotations

import os
import re
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
from epyclab.clustersetup.profile import ENGINE_FILE
from epyclab.clustersetup.ssh import Remote
from epyclab.log import logger
from epyclab.private import privateDirectory, privateTree

__all__ = [
    "LAUNCHERS",
    "BATCH_LAUNCHERS",
    "CONTROLLER_LAUNCHERS",
    "BatchOptions",
    "startBatchEngines",
    "startBatchController",
    "batchStatus",
    "batchEnded",
    "batchNode",
    "stopBatchJob",
    "recordName",
    "describeBatch",
    "describeBatchController",
]

#: Every kind of engine launcher ``start --engines`` accepts.
LAUNCHERS = ("local", "ssh", "slurm", "pbs", "mpi")
#: The kinds driven by ipyparallel's launcher classes: kind -> class name in ipyparallel.cluster.launcher.
BATCH_LAUNCHERS = {
    "slurm": "SlurmEngineSetLauncher",
    "pbs": "PBSEngineSetLauncher",
    "mpi": "MPIEngineSetLauncher",
}
#: Where ``start --controller`` runs the controller: here, or in a batch job (kind -> ipyparallel class name).
CONTROLLER_LAUNCHERS = {"local": None, "slurm": "SlurmControllerLauncher", "pbs": "PBSControllerLauncher"}
# Scheduler states of a job that has ended or is ending (Slurm's squeue %T; anything batchStatus calls gone).
_ENDED = {"gone", "COMPLETED", "COMPLETING", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
          "BOOT_FAIL", "PREEMPTED", "DEADLINE", "SPECIAL_EXIT"}
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
    _apply_options(launcher, kind, options, _directive_lines(kind, options))
    return launcher


def _configure_controller(kind: str, directory: Path, options: BatchOptions, node: str | None = None) -> Any:
    """An ipyparallel controller launcher of ``kind`` (slurm, pbs) for the profile in ``directory``, configured.

    ``node``, when given, pins the job to that node (``sbatch --nodelist``,
    ``qsub -l nodes``): a restarted controller must run where the engines
    still running look for it.
    """
    name = CONTROLLER_LAUNCHERS.get(kind)
    if name is None:
        raise ClusterSetupError(
            f"unknown controller launcher {kind!r}: use one of {', '.join(CONTROLLER_LAUNCHERS)}"
        )
    work = privateDirectory(directory / "batch")
    launcher = getattr(ipp_launchers, name)(work_dir=str(work), profile_dir=str(directory), cluster_id="")
    launcher.controller_cmd = [sys.executable, "-m", "ipyparallel.controller"]
    launcher.controller_args = [f"--profile-dir={directory}"]
    launcher.output_file = str(directory / "log" / (f"epyclab-controller-{kind}-%j.log" if kind == "slurm"
                                                     else f"epyclab-controller-{kind}.log"))
    # The controller is one process: engines-per-node means nothing to its job.
    lines = _directive_lines(kind, BatchOptions(engines=1, account=options.account, walltime=options.walltime,
                                                directives=options.directives))
    _apply_options(launcher, kind, options, lines)
    if node:
        # On the submit command, so that it holds for a template of the user's too (and overrides its lines).
        pin = [f"--nodelist={node}"] if kind == "slurm" else ["-l", f"nodes={node}"]
        launcher.submit_command = [*launcher.submit_command, *pin]
    return launcher


def _apply_options(launcher: Any, kind: str, options: BatchOptions, lines: list[str]) -> None:
    """Queue, account, time limit and extra lines (or the user's template) into a batch launcher."""
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
    elif lines:
        # ipyparallel's default script, with the options it has no setting for inserted after its first
        # line; ipyparallel then adds its own (engine count, queue, account, time, output) as usual. The
        # script is a format template: braces the user typed are doubled to come through as typed.
        first, rest = launcher.default_template.split("\n", 1)
        typed = [line.replace("{", "{{").replace("}", "}}") for line in lines]
        launcher.default_template = "\n".join([first, *typed, rest])


def _check_command(kind: str) -> None:
    command = _COMMANDS[kind]
    if shutil.which(command) is None:
        raise ClusterSetupError(
            f"`{command}` is not on the PATH of this machine: start the cluster on the {kind} login node "
            f"(where `{command}` works), or choose another launcher"
        )


def _submit(launcher: Any, kind: str, what: str, n: int, directory: Path) -> None:
    """Write the job script and submit it (or start ``mpiexec``); errors name the command and the script."""
    privateDirectory(directory / "log")
    # The job's files (script, output) are the user's alone; sbatch passes the umask on to the job.
    old = os.umask(0o077)
    try:
        if n:
            launcher.start(n)
        else:  # a controller launcher: one process, start() takes no count
            launcher.start()
    except subprocess.CalledProcessError as error:
        # ipyparallel lets the command's stderr through to ours: the scheduler's own words are printed above.
        raise ClusterSetupError(
            f"{kind}: starting {what} failed: `{' '.join(map(str, error.cmd))}` exited with "
            f"status {error.returncode} (its error is printed above). The job script: "
            f"{launcher.batch_file or directory / 'batch'}"
        ) from error
    except (ipp_launchers.LauncherError, OSError) as error:
        raise ClusterSetupError(f"{kind}: starting {what} failed: {error}") from error
    finally:
        os.umask(old)
    privateTree(directory / "batch")


def startBatchEngines(directory: Path, kind: str, options: BatchOptions) -> dict[str, Any]:
    """Start ``options.engines`` engines with the ``kind`` launcher; return its record for the profile's state.

    The record is ``{"kind", "class", "engines", "options", "launcher": to_dict()}``;
    the launcher's dict holds the batch job id (Slurm, PBS) or the PID of
    ``mpiexec`` (MPI). Raises :class:`ClusterSetupError` naming the command
    and its output when submission fails, or when the command is missing.
    """
    if options.engines < 1:
        raise ClusterSetupError(f"the number of engines (-n) must be at least 1, not {options.engines}")
    if kind not in _COMMANDS:
        _launcher_class(kind)
    _check_command(kind)
    launcher = _configure(kind, directory, options)
    _submit(launcher, kind, f"{options.engines} engine(s)", int(options.engines), directory)
    record = {"kind": kind, "class": type(launcher).__name__, "engines": int(options.engines),
              "options": asdict(options), "launcher": _plain(launcher.to_dict())}
    logger.info("%s: started %d engine(s): %s", kind, options.engines, _what(record))
    return record


def startBatchController(
    directory: Path, kind: str, options: BatchOptions, node: str | None = None
) -> dict[str, Any]:
    """Submit the profile's controller as a batch job of ``kind`` (slurm, pbs); return its record.

    The record is ``{"kind", "role": "controller", "class", "options",
    "launcher": to_dict(), "output", "node"}``: ``output`` is the job's
    output file (the controller's log), ``node`` is filled in once it runs.
    ``node`` given pins the job to that node (see :func:`_configure_controller`).
    Raises :class:`ClusterSetupError` naming the command and the job script
    when submission fails, or when the command is missing.
    """
    _check_command(kind)
    launcher = _configure_controller(kind, directory, options, node)
    _submit(launcher, kind, "the controller", 0, directory)
    job = str(launcher.job_id)
    record = {"kind": kind, "role": "controller", "class": type(launcher).__name__,
              "options": asdict(options), "launcher": _plain(launcher.to_dict()),
              "output": str(launcher.output_file).replace("%j", job), "node": None}
    logger.info("%s: submitted the controller as job %s; its log: %s", kind, job, record["output"])
    return record


def describeBatch(directory: Path, kind: str, options: BatchOptions) -> str:
    """What :func:`startBatchEngines` would run, for a dry run: the command and the job script it writes."""
    launcher = _configure(kind, directory, options)
    if kind == "mpi":
        launcher.n = int(options.engines)
        return " ".join(map(str, launcher.find_args()))
    return _describe(launcher, int(options.engines))


def describeBatchController(directory: Path, kind: str, options: BatchOptions, node: str | None = None) -> str:
    """What :func:`startBatchController` would run, for a dry run: the command and the job script it writes."""
    return _describe(_configure_controller(kind, directory, options, node), 1)


def _describe(launcher: Any, n: int) -> str:
    old = os.umask(0o077)
    try:
        launcher.write_batch_script(n)
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
    """How a launcher record is named in messages: ``slurm job 12``, ``mpi mpiexec PID 345``,
    ``slurm job 11 (controller)``."""
    name = f"{record.get('kind')} {_what(record)}".strip()
    return f"{name} (controller)" if record.get("role") == "controller" else name


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


def batchEnded(status: str) -> bool:
    """True if :func:`batchStatus` said the job has ended (or is ending): it runs nothing any more."""
    return status in _ENDED


def batchNode(record: Mapping[str, Any]) -> str | None:
    """The node the record's running job runs on (its first, for a job on several), or None if not known yet."""
    kind = record.get("kind")
    job = str(record.get("launcher", {}).get("job_id", ""))
    if kind not in ("slurm", "pbs") or not job:
        return None
    command = ["squeue", "-h", "-j", job, "-o", "%N"] if kind == "slurm" else ["qstat", "-f", job]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        logger.debug("%s: %s", " ".join(command), error)
        return None
    if done.returncode != 0:
        return None
    if kind == "slurm":
        nodes = done.stdout.strip()
        # A compressed list (node[1-3]) names its first node by its prefix and first number.
        match = re.match(r"([^,\[]+)(?:\[(\d+))?", nodes)
        return (match.group(1) + (match.group(2) or "")) if match and nodes else None
    match = re.search(r"exec_host\s*=\s*([^/+\s]+)", done.stdout)
    return match.group(1) if match else None


def stopBatchJob(record: Mapping[str, Any]) -> str:
    """Cancel the record's batch job (``scancel`` / ``qdel``) or stop its ``mpiexec``; say what was done."""
    kind = str(record.get("kind"))
    state = dict(record.get("launcher", {}))
    if kind == "mpi":
        pid = int(state.get("pid", -1))
        if pid <= 0 or not _pid_running(pid):
            return "mpiexec had already exited"
        # mpiexec runs in a session of its own (start_new_session): stop it and its engines as a group.
        stopped = processes.stop(Remote([]), LOCAL, [pid])
        return f"stopped mpiexec (PID {pid}) and its engines" if stopped else "mpiexec had already exited"
    if batchStatus(record) == "gone":
        return f"job {state.get('job_id')} had already ended"
    name = str(record.get("class", ""))
    if name not in (*BATCH_LAUNCHERS.values(), *filter(None, CONTROLLER_LAUNCHERS.values())):
        raise ClusterSetupError(f"the profile's state names an unknown launcher class {name!r} for job "
                                f"{state.get('job_id')}: cancel it by hand")
    launcher = getattr(ipp_launchers, name).from_dict(state)
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

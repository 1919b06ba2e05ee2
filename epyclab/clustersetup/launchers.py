"""Engines started by a batch system or MPI, through ipyparallel's own launcher classes.

``epyclab cluster start PROFILE --engines KIND`` starts engines with one of:

- ``local``: processes on this machine (:mod:`epyclab.clustersetup.engines`, no ssh);
- ``ssh``: processes on the workers, over ssh (the same module);
- ``slurm``, ``pbs``: batch jobs holding the engines (one job, or several of
  ``--engines-per-job`` engines each), submitted with ipyparallel's
  :class:`~ipyparallel.cluster.launcher.SlurmEngineSetLauncher` or
  :class:`~ipyparallel.cluster.launcher.PBSEngineSetLauncher`;
- ``mpi``: ``mpiexec -n N ipengine --mpi``, by
  :class:`~ipyparallel.cluster.launcher.MPIEngineSetLauncher`.

What differs between the systems is data: a row of
:data:`epyclab.clustersetup.batchsystems.SYSTEMS` each (commands, classes,
directive lines, how to ask about a job). This module configures the row's
classes from :class:`BatchOptions` and records each launcher as the dict
ipyparallel's ``to_dict`` gives (with its job id or PID) in the profile's
state, so that ``status``, ``stop`` and the keeper rebuild it with
``from_dict`` in any later shell.

``start --controller slurm`` (or ``pbs``) runs the controller in a batch job
of its own too, by the row's controller class, configured from the same
options (:func:`startBatchController`); its record carries ``"role":
"controller"`` and, once it runs, the node it runs on.

The batch commands run on this machine: run
``epyclab cluster start`` on the cluster's login node, where ``sbatch`` works
and the profile directory is on the file system the compute nodes share.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ipyparallel.cluster import launcher as ipp_launchers

from epyclab.clustersetup import processes
from epyclab.clustersetup.batchsystems import ENDED, GONE, SYSTEMS, BatchSystem, JobInfo, jobInfo, system
from epyclab.clustersetup.engines import WORKER_VARIABLE
from epyclab.clustersetup.errors import ClusterSetupError
from epyclab.clustersetup.hosts import LOCAL
from epyclab.clustersetup.outside import DRAIN_VARIABLE
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
    "submitEngineJob",
    "checkBatchCommand",
    "startBatchController",
    "batchStatus",
    "batchEnded",
    "batchNode",
    "batchInfo",
    "stopBatchJob",
    "recordName",
    "outputTail",
    "describeBatch",
    "describeBatchController",
]

#: The kinds driven by ipyparallel's launcher classes (the rows of the table): kind -> class name.
BATCH_LAUNCHERS = {name: row.engineClass for name, row in SYSTEMS.items()}
#: Every kind of engine launcher ``start --engines`` accepts.
LAUNCHERS = ("local", "ssh", *BATCH_LAUNCHERS)
#: Where ``start --controller`` runs the controller: here, or in a batch job (kind -> ipyparallel class name).
CONTROLLER_LAUNCHERS = {"local": None, **{n: r.controllerClass for n, r in SYSTEMS.items() if r.controllerClass}}


@dataclass
class BatchOptions:
    """What a user of a batch system sets for the engines' jobs (all optional but ``engines``).

    :param engines: how many engines in all
    :param enginesPerNode: engines on each node (Slurm ``--ntasks-per-node``, PBS ``ppn``, MPI ``-npernode``)
    :param queue: the queue (PBS) or partition (Slurm)
    :param account: the account charged
    :param walltime: each job's time limit, as the scheduler writes it (``HH:MM:SS``)
    :param directives: extra scheduler lines (``--mem=4G`` or ``#SBATCH --mem=4G``); for MPI, extra
        ``mpiexec`` arguments
    :param template: a job script template file (ipyparallel's ``batch_template_file``: ``{n}``,
        ``{program_and_args}``, ``{queue}``, ``{account}`` ... are filled in); the options above
        are then left to the template
    :param enginesPerJob: engines in each job: the ``engines`` come as several jobs of this many
        (None: one job holding them all), so that work starts on the first that start
    :param keep: keep ``engines`` engines up until the cluster is stopped: a keeper process
        (:mod:`epyclab.clustersetup.keeper`) submits a job for each that ends
    :param drainSeconds: an engine stops taking chunks this many seconds before its job's time
        ends (a sixth of the job's time, for a job shorter than six times this); 0: never
        (see :mod:`epyclab.clustersetup.outside`)
    """

    engines: int = 1
    enginesPerNode: int | None = None
    queue: str = ""
    account: str = ""
    walltime: str = ""
    directives: list[str] = field(default_factory=list)
    template: str | None = None
    enginesPerJob: int | None = None
    keep: bool = False
    drainSeconds: float = 120.0

    def jobSizes(self) -> list[int]:
        """The engines of each job that makes up :attr:`engines`."""
        per = int(self.enginesPerJob or self.engines)
        total = int(self.engines)
        return [min(per, total - done) for done in range(0, total, per)]


def _launcher_class(kind: str) -> type:
    return getattr(ipp_launchers, system(kind).engineClass)


def _directive_lines(row: BatchSystem, options: BatchOptions, n: int) -> list[str]:
    """The scheduler lines epyclab adds to ipyparallel's default job script for a job of ``n`` engines."""
    lines = []
    if options.enginesPerNode:
        per = int(options.enginesPerNode)
        lines += [row.line(t, n=n, perNode=per, nodes=-(-n // per)) for t in row.perNodeLines]
    if options.account and row.accountLine:
        lines.append(row.line(row.accountLine, account=options.account))
    if options.walltime and row.walltimeLine:
        lines.append(row.line(row.walltimeLine, walltime=options.walltime))
    for directive in options.directives:
        directive = directive.strip()
        lines.append(directive if directive.startswith("#") else f"{row.directive} {directive}")
    return lines


def _configure(kind: str, directory: Path, options: BatchOptions, n: int | None = None) -> Any:
    """An ipyparallel engine-set launcher of ``kind`` for the profile in ``directory``, for ``n`` engines."""
    row = system(kind)
    n = int(options.engines if n is None else n)
    cls = _launcher_class(kind)
    work = privateDirectory(directory / "batch")
    launcher = cls(work_dir=str(work), profile_dir=str(directory), cluster_id="")
    launcher.engine_cmd = [sys.executable, "-m", "ipyparallel.engine"]
    launcher.engine_args = [f"--profile-dir={directory}", f"--file={directory / ENGINE_FILE}"]
    launcher.environment = {WORKER_VARIABLE: kind}
    if row.batch and options.drainSeconds > 0:
        launcher.environment[DRAIN_VARIABLE] = str(float(options.drainSeconds))
    if not row.batch:
        extra = [*options.directives]
        if options.enginesPerNode:
            extra = ["-npernode", str(int(options.enginesPerNode)), *extra]
        launcher.mpi_args = extra
        launcher.output_file = str(directory / "log" / f"epyclab-engines-{kind}.log")
        return launcher
    # Each job its own output file: named by its job id where the system allows, else made unique first.
    name = "%j" if row.outputJobId else f"{int(time.time())}-{uuid.uuid4().hex[:8]}"
    launcher.output_file = str(directory / "log" / f"epyclab-engines-{kind}-{name}.log")
    _apply_options(launcher, options, _directive_lines(row, options, n))
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
    row = system(kind)
    work = privateDirectory(directory / "batch")
    launcher = getattr(ipp_launchers, name)(work_dir=str(work), profile_dir=str(directory), cluster_id="")
    launcher.controller_cmd = [sys.executable, "-m", "ipyparallel.controller"]
    launcher.controller_args = [f"--profile-dir={directory}"]
    launcher.output_file = str(directory / "log" / (f"epyclab-controller-{kind}-%j.log" if row.outputJobId
                                                     else f"epyclab-controller-{kind}.log"))
    # The controller is one process: engines-per-node means nothing to its job.
    lines = _directive_lines(row, BatchOptions(engines=1, account=options.account, walltime=options.walltime,
                                               directives=options.directives), 1)
    _apply_options(launcher, options, lines)
    if node:
        # On the submit command, so that it holds for a template of the user's too (and overrides its lines).
        launcher.submit_command = [*launcher.submit_command, *(a.format(node=node) for a in row.pinArgs)]
    return launcher


def _apply_options(launcher: Any, options: BatchOptions, lines: list[str]) -> None:
    """Queue and the extra lines (account, time limit, directives; or the user's template) into a batch launcher."""
    if options.queue:
        launcher.queue = options.queue
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


def checkBatchCommand(kind: str) -> None:
    """A :class:`ClusterSetupError` saying where to run if the row's command (``sbatch``...) is not on the PATH."""
    command = system(kind).command
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


def startBatchEngines(directory: Path, kind: str, options: BatchOptions) -> list[dict[str, Any]]:
    """Start ``options.engines`` engines with the ``kind`` launcher, as jobs of ``options.enginesPerJob``.

    Returns a record per job (or ``mpiexec``) for the profile's state (see
    :func:`submitEngineJob`). Raises :class:`ClusterSetupError` naming the
    command and its output when a submission fails, or when the command is
    missing.
    """
    if options.engines < 1:
        raise ClusterSetupError(f"the number of engines must be at least 1, not {options.engines}")
    if options.enginesPerJob is not None and options.enginesPerJob < 1:
        raise ClusterSetupError(f"--engines-per-job must be at least 1, not {options.enginesPerJob}")
    row = system(kind)
    checkBatchCommand(kind)
    sizes = options.jobSizes() if row.batch else [int(options.engines)]
    return [submitEngineJob(directory, kind, options, n) for n in sizes]


def submitEngineJob(directory: Path, kind: str, options: BatchOptions, n: int) -> dict[str, Any]:
    """Submit one job of ``n`` engines (or start ``mpiexec -n n``); return its record for the profile's state.

    The record is ``{"kind", "class", "engines", "options", "launcher": to_dict(), "output", "submitted"}``:
    the launcher's dict holds the batch job id (or the PID of ``mpiexec``),
    ``output`` the job's output file, ``submitted`` the time (seconds since
    the epoch). Raises :class:`ClusterSetupError` as :func:`startBatchEngines`.
    """
    launcher = _configure(kind, directory, options, n)
    _submit(launcher, kind, f"{n} engine(s)", int(n), directory)
    job = str(getattr(launcher, "job_id", "") or "")
    record = {"kind": kind, "class": type(launcher).__name__, "engines": int(n),
              "options": asdict(options), "launcher": _plain(launcher.to_dict()),
              "output": str(launcher.output_file).replace("%j", job), "submitted": time.time()}
    logger.info("%s: started %d engine(s): %s", kind, n, _what(record))
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
    checkBatchCommand(kind)
    launcher = _configure_controller(kind, directory, options, node)
    _submit(launcher, kind, "the controller", 0, directory)
    job = str(launcher.job_id)
    record = {"kind": kind, "role": "controller", "class": type(launcher).__name__,
              "options": asdict(options), "launcher": _plain(launcher.to_dict()),
              "output": str(launcher.output_file).replace("%j", job), "node": None}
    logger.info("%s: submitted the controller as job %s; its log: %s", kind, job, record["output"])
    return record


def describeBatch(directory: Path, kind: str, options: BatchOptions) -> str:
    """What :func:`startBatchEngines` would run, for a dry run: the command and the job script of each job."""
    if not system(kind).batch:
        launcher = _configure(kind, directory, options)
        launcher.n = int(options.engines)
        return " ".join(map(str, launcher.find_args()))
    sizes = options.jobSizes()
    first = _describe(_configure(kind, directory, options, sizes[0]), sizes[0])
    if len(sizes) == 1:
        return first
    return f"{len(sizes)} jobs of {', '.join(map(str, sizes))} engine(s); the first:\n{first}"


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


def batchInfo(record: Mapping[str, Any]) -> JobInfo:
    """What the scheduler says of the record's job now (state, node, seconds left); for mpiexec, its process."""
    row = system(str(record.get("kind")))
    state = record.get("launcher", {})
    if not row.batch:
        pid = int(state.get("pid", -1))
        return JobInfo("running" if pid > 0 and _pid_running(pid) else GONE)
    job = str(state.get("job_id", ""))
    if not job:
        return JobInfo("unknown (no job id recorded)")
    return jobInfo(row, job)


def batchStatus(record: Mapping[str, Any]) -> str:
    """What the scheduler says of the record's job now (``RUNNING``, ``PENDING``, ``TIMEOUT``, ``gone``...)."""
    return batchInfo(record).state


def batchEnded(status: str) -> bool:
    """True if :func:`batchStatus` said the job has ended (or is ending): it runs nothing any more."""
    return status in ENDED


def batchNode(record: Mapping[str, Any]) -> str | None:
    """The node the record's running job runs on (its batch host), or None if not known yet."""
    return batchInfo(record).node


def outputTail(record: Mapping[str, Any], lines: int = 10) -> str:
    """The last ``lines`` lines of the job's output file (what a job that died says of why), or why there are none."""
    path = record.get("output")
    if not path:
        return "(no output file recorded)"
    try:
        with open(path, "rb") as file:
            file.seek(0, os.SEEK_END)
            file.seek(max(0, file.tell() - 64 * 1024))
            text = file.read().decode(errors="replace")
    except OSError as error:
        return f"(its output file {path} cannot be read: {error.strerror})"
    tail = text.rstrip("\n").splitlines()[-lines:]
    return "\n".join(tail) if tail else f"(its output file {path} is empty)"


def stopBatchJob(record: Mapping[str, Any]) -> str:
    """Cancel the record's batch job (the row's cancel command) or stop its ``mpiexec``; say what was done."""
    kind = str(record.get("kind"))
    row = system(kind)
    state = dict(record.get("launcher", {}))
    if not row.batch:
        pid = int(state.get("pid", -1))
        if pid <= 0 or not _pid_running(pid):
            return "mpiexec had already exited"
        # mpiexec runs in a session of its own (start_new_session): stop it and its engines as a group.
        stopped = processes.stop(Remote([]), LOCAL, [pid])
        return f"stopped mpiexec (PID {pid}) and its engines" if stopped else "mpiexec had already exited"
    if batchEnded(batchStatus(record)):
        return f"job {state.get('job_id')} had already ended"
    name = str(record.get("class", ""))
    if name not in (row.engineClass, row.controllerClass):
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

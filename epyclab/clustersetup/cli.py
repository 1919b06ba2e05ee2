"""``epyclab cluster ...``: init, sync, start, stop and status, over the functions of :mod:`epyclab.clustersetup`.

Every remote command is logged at DEBUG (shown on stderr with ``-v``); each
host's outcome is printed on its own line; a failure on some hosts is printed
after the others finish, and the exit status is then 1.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import click

from epyclab.clustersetup.batchsystems import system
from epyclab.clustersetup.errors import ClusterSetupError, HostFailures
from epyclab.clustersetup.hosts import readWorkersFile
from epyclab.clustersetup.launchers import BATCH_LAUNCHERS, CONTROLLER_LAUNCHERS, LAUNCHERS, BatchOptions
from epyclab.clustersetup.manage import clusterStatus, initCluster, startCluster, stopCluster
from epyclab.clustersetup.profile import CLIENT_FILE, isLoopback, profileDir
from epyclab.clustersetup.sync import syncWorkers
from epyclab.labs.remote.points import describeCounts
from epyclab.log import logger

__all__ = ["cluster"]


def _set_verbosity(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """Callback of -q/-v, wherever they are given: sets the level of this invocation's log handler."""
    if not value:
        return
    # ctx.meta is shared by the group's and the subcommand's contexts.
    ctx.meta[f"epyclab.{param.name}"] = True
    obj = ctx.find_object(dict)
    if obj is not None and "log_handler" in obj:
        _apply_verbosity(obj["log_handler"], ctx.meta)
    # On the group itself the handler does not exist yet: the group's callback applies the flag.


def _apply_verbosity(handler: logging.Handler, meta: dict[str, Any]) -> None:
    """INFO by default; DEBUG (every command run) with -v; WARNING with -q, which wins over -v."""
    if meta.get("epyclab.quiet"):
        handler.setLevel(logging.WARNING)
    elif meta.get("epyclab.verbose"):
        handler.setLevel(logging.DEBUG)
        if not logger.isEnabledFor(logging.DEBUG):
            logger.setLevel(logging.DEBUG)


def _verbosity_options(f: Any) -> Any:
    """-q/--quiet and -v/--verbose, accepted before the subcommand and after it."""
    f = click.option("-v", "--verbose", is_flag=True, expose_value=False, callback=_set_verbosity,
                     help="Also show every command as it runs (the generated scripts).")(f)
    f = click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_set_verbosity,
                     help="Show only warnings and errors.")(f)
    return f


@click.group()
@click.option(
    "--ipython-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="The IPython directory holding the profiles (default: $IPYTHONDIR or ~/.ipython).",
)
@_verbosity_options
@click.pass_context
def cluster(ctx: click.Context, ipython_dir: str | None) -> None:
    """Set up ipyparallel clusters for epyclab: profile, controller and engines (batch jobs, ssh, local).

    \b
    epyclab cluster init PROFILE                          create the profile (this machine only)
    epyclab cluster init PROFILE --ip ADDRESS             ... listening where engines on other
                          nodes reach it (batch jobs, ssh workers): the login node's address
    On a batch system (run on the login node):
    epyclab cluster start PROFILE --engines slurm --total-engines 64 --walltime 12:00:00
                          (or --engines pbs; --engines mpi: under mpiexec)
    epyclab cluster start PROFILE --engines slurm --total-engines 64 --engines-per-job 8 \\
                          --walltime 12:00:00 --keep   kept up across walltimes by a keeper
    On machines you reach by ssh:
    epyclab cluster sync PROFILE --workers a,b            venv + profile on each worker
    epyclab cluster start PROFILE                         controller here, engines on the workers
    On this machine only:
    epyclab cluster start PROFILE --local -n 4
    Then:
    epyclab cluster status PROFILE [NOTEBOOK]             engines, jobs, points per result set
    epyclab cluster stop PROFILE                          engines (or their jobs), then the controller

    Each command says what it did; -v also shows every command it runs, -q
    only warnings and errors (both accepted before or after the subcommand).
    """
    # A handler per invocation, bound to this invocation's stderr, removed when it ends.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(logging.INFO)
    ctx.obj = {"ipython_dir": ipython_dir, "log_handler": handler}
    level = logger.level
    logger.addHandler(handler)
    if not logger.isEnabledFor(logging.INFO):
        logger.setLevel(logging.INFO)
    _apply_verbosity(handler, ctx.meta)

    def restore() -> None:
        logger.removeHandler(handler)
        logger.setLevel(level)

    ctx.call_on_close(restore)


def _workers(workers: tuple[str, ...], workers_file: str | None) -> list[str]:
    """Workers from repeated ``--workers`` (each may hold several, comma or space separated) and the file."""
    specs = [spec for value in workers for spec in re.split(r"[,\s]+", value) if spec]
    if workers_file is not None:
        specs += readWorkersFile(workers_file)
    return specs


@contextmanager
def _reporting() -> Iterator[None]:
    """Turn errors into a clean message and exit status 1; print each host's outcome on failure too."""
    try:
        yield
    except HostFailures as error:
        _print_outcomes(error.outcomes)
        click.echo(str(error), err=True)
        raise SystemExit(1) from error
    except ClusterSetupError as error:
        raise click.ClickException(str(error)) from error


def _print_outcomes(outcomes: Mapping[str, object]) -> None:
    for host, outcome in outcomes.items():
        click.echo(f"{host}: {outcome}")


_workers_option = click.option(
    "--workers",
    "workers",
    multiple=True,
    metavar="HOSTS",
    help="Workers as [user@]host[:port]; repeat, or separate with commas. Default: those of the last sync.",
)
_workers_file_option = click.option(
    "--workers-file", type=click.Path(dir_okay=False, exists=True), help="A file of workers, one per line."
)
_ssh_option = click.option(
    "--ssh-option",
    "ssh_options",
    multiple=True,
    metavar="OPTIONS",
    help="Passed to every ssh (and rsync's ssh), e.g. --ssh-option '-F ~/.ssh/cluster'. Repeatable; remembered.",
)
_dry_run_option = click.option("--dry-run", is_flag=True, help="Print every command instead of running it.")
_controller_host_option = click.option(
    "--controller-host", metavar="HOST", help="Run the controller on this host instead of here."
)
_venv_option = click.option("--venv", metavar="PATH", help="The venv on the workers (default ~/epyclab-venv).")
_remote_profile_option = click.option(
    "--remote-profile", metavar="PATH", help="The profile directory on the workers (default ~/.ipython/profile_NAME)."
)


def _echo(line: str) -> None:
    click.echo(line)


@cluster.command()
@_verbosity_options
@click.argument("profile")
@click.option("--ip", default="127.0.0.1", show_default=True, metavar="ADDRESS",
              help="The address the controller listens on. 127.0.0.1 is reached from this machine only: for "
              "engines on other nodes (slurm, pbs, mpi jobs, ssh workers) give this machine's address on their "
              "network.")
@click.option("--curve", is_flag=True, help="Encrypt and authenticate all cluster traffic with CurveZMQ.")
@click.pass_obj
def init(obj: dict, profile: str, ip: str, curve: bool) -> None:
    """Create or update the IPython parallel profile PROFILE for epyclab."""
    with _reporting():
        directory = initCluster(profile, ip=ip, curve=curve, ipython_dir=obj["ipython_dir"])
    click.echo(f"profile {profile}: {directory}")
    if isLoopback(ip):
        click.echo(f"the controller will listen on {ip}, reached from this machine only; for engines on other "
                   f"nodes (batch jobs, ssh workers) first: epyclab cluster init {profile} --ip ADDRESS "
                   "(this machine's address on their network)")
    click.echo("next, one of:")
    click.echo(f"  epyclab cluster start {profile} --engines slurm --total-engines N --walltime HH:MM:SS [--keep]"
               "   (or --engines pbs / mpi, on the login node)")
    click.echo(f"  epyclab cluster sync {profile} --workers HOST,...   then  epyclab cluster start {profile}"
               "   (machines you reach by ssh)")
    click.echo(f"  epyclab cluster start {profile} --local -n N   (this machine only)")


@cluster.command()
@_verbosity_options
@click.argument("profile")
@_workers_option
@_workers_file_option
@_controller_host_option
@_venv_option
@click.option("--python", metavar="PYTHON", help="The Python that makes the workers' venvs (default python3).")
@click.option(
    "--requirements",
    type=click.Path(dir_okay=False, exists=True),
    help="Requirements to install (default: ./requirements-cluster.txt if present).",
)
@click.option("--freeze", is_flag=True, help="Install what this venv has (pip freeze) instead.")
@click.option(
    "--wheelhouse", type=click.Path(file_okay=False), help="Where to build the wheels (default: in the profile)."
)
@click.option("--no-rebuild", is_flag=True, help="Use the wheels already in the wheelhouse, without building.")
@_remote_profile_option
@_ssh_option
@_dry_run_option
@click.pass_obj
def sync(
    obj: dict,
    profile: str,
    workers: tuple[str, ...],
    workers_file: str | None,
    controller_host: str | None,
    venv: str | None,
    python: str | None,
    requirements: str | None,
    freeze: bool,
    wheelhouse: str | None,
    no_rebuild: bool,
    remote_profile: str | None,
    ssh_options: tuple[str, ...],
    dry_run: bool,
) -> None:
    """Create or update the venv and the profile files on every worker, from a wheelhouse built here."""
    with _reporting():
        outcomes = syncWorkers(
            profile,
            _workers(workers, workers_file),
            controllerHost=controller_host,
            venv=venv,
            python=python,
            requirements=requirements,
            freeze=freeze,
            wheelhouse=wheelhouse,
            rebuild=not no_rebuild,
            remoteProfile=remote_profile,
            sshOptions=ssh_options or None,
            dryRun=dry_run,
            echo=_echo,
            ipython_dir=obj["ipython_dir"],
        )
        _print_outcomes(outcomes)


@cluster.command()
@_verbosity_options
@click.argument("profile")
@_workers_option
@_workers_file_option
@_controller_host_option
@click.option("-n", "count", type=int, metavar="N",
              help="Engines: on each worker (ssh, local), or in all (slurm, pbs, mpi).")
@click.option("--engines-per-worker", type=int, metavar="N",
              help="ssh, local: engines on each worker (default: its cores minus K).")
@click.option("--total-engines", type=int, metavar="N", help="slurm, pbs, mpi: engines in all.")
@click.option("--engines-per-job", type=int, metavar="N",
              help="slurm, pbs: engines in each batch job; the total comes as several jobs (default: one job).")
@click.option("--drain", "drain", type=float, default=120.0, show_default=True, metavar="SECONDS",
              help="slurm, pbs: an engine takes no new chunk this long before its job's time ends (a sixth of "
              "the job's time for short jobs; 0: never).")
@click.option("--keep", is_flag=True,
              help="slurm, pbs: keep the engines up until `stop`: a keeper process replaces jobs that end "
              "(walltime, preemption, failure, scancel).")
@click.option("--leave-free", type=int, default=None, metavar="K",
              help="ssh, local: cores to leave free on each worker (default 1).")
@click.option("--local", is_flag=True, help="A single-machine cluster: controller and engines here, no ssh.")
@click.option("--timeout", type=float, default=60.0, show_default=True, metavar="SECONDS",
              help="How long to wait for the engines to register.")
@click.option(
    "--engines",
    "launcher",
    type=click.Choice(LAUNCHERS),
    default="ssh",
    show_default=True,
    help="How engines start: as slurm or pbs batch jobs, under mpiexec (mpi), on the workers over ssh, or "
    "here (local). -n is engines in all for slurm/pbs/mpi, per worker for ssh/local.",
)
@click.option(
    "--controller",
    "controller_launcher",
    type=click.Choice(list(CONTROLLER_LAUNCHERS)),
    default="local",
    show_default=True,
    help="Where the controller runs: here (local), or in a slurm/pbs job of its own (with --engines slurm, pbs "
    "or mpi; --queue, --account, --walltime and --directive apply to its job too).",
)
@click.option("--engines-per-node", type=int, metavar="N", help="slurm/pbs/mpi: engines on each node.")
@click.option("--queue", default="", metavar="NAME", help="slurm/pbs: the partition (slurm) or queue (pbs).")
@click.option("--account", default="", metavar="NAME", help="slurm/pbs: the account charged for the job.")
@click.option("--walltime", default="", metavar="HH:MM:SS", help="slurm/pbs: the job's time limit.")
@click.option(
    "--directive",
    "directives",
    multiple=True,
    metavar="LINE",
    help="slurm/pbs: an extra scheduler line (e.g. --mem=4G); mpi: an extra mpiexec argument. Repeatable.",
)
@click.option(
    "--job-template",
    type=click.Path(dir_okay=False, exists=True),
    help="slurm/pbs: a job script template ({n}, {program_and_args}, {queue}, ... as in ipyparallel).",
)
@click.option(
    "--controller-template",
    type=click.Path(dir_okay=False, exists=True),
    help="--controller slurm/pbs: a job script template for the controller's job ({program_and_args}, ...).",
)
@_venv_option
@_remote_profile_option
@_ssh_option
@_dry_run_option
@click.pass_obj
def start(
    obj: dict,
    profile: str,
    workers: tuple[str, ...],
    workers_file: str | None,
    controller_host: str | None,
    count: int | None,
    engines_per_worker: int | None,
    total_engines: int | None,
    engines_per_job: int | None,
    drain: float,
    keep: bool,
    leave_free: int | None,
    local: bool,
    timeout: float,
    launcher: str,
    controller_launcher: str,
    engines_per_node: int | None,
    queue: str,
    account: str,
    walltime: str,
    directives: tuple[str, ...],
    job_template: str | None,
    controller_template: str | None,
    venv: str | None,
    remote_profile: str | None,
    ssh_options: tuple[str, ...],
    dry_run: bool,
) -> None:
    """Start the controller and the engines, and wait until they have all registered.

    Say where the engines run: --engines slurm|pbs (batch jobs; --engines mpi: under mpiexec) with
    --total-engines N, the workers of the last `sync` (or --workers) over ssh, or --local.

    If the controller has died since the last start, restart only it: the
    engines still running register again (a controller job that has ended is
    submitted again).
    """
    per_worker, total = _engine_counts(launcher, count, engines_per_worker, total_engines)
    if per_worker is not None and leave_free is not None:
        raise click.UsageError("give -n (--engines-per-worker) or --leave-free, not both")
    if (engines_per_job is not None or keep) and not _batch_system(launcher):
        raise click.UsageError(f"--engines-per-job and --keep apply to batch jobs (--engines slurm or pbs), "
                               f"not to --engines {launcher}")
    batch = None
    if launcher in BATCH_LAUNCHERS:
        if total is None:
            raise click.UsageError(f"--engines {launcher} needs --total-engines N (or -n N), the engines in all")
        batch = BatchOptions(
            engines=total, enginesPerNode=engines_per_node, queue=queue, account=account,
            walltime=walltime, directives=list(directives), template=job_template,
            enginesPerJob=engines_per_job, keep=keep, drainSeconds=drain,
        )
    controller_batch = None
    if controller_launcher != "local":
        controller_batch = BatchOptions(queue=queue, account=account, walltime=walltime,
                                        directives=list(directives), template=controller_template)
    elif controller_template is not None:
        raise click.UsageError("--controller-template needs --controller slurm or pbs")
    with _reporting():
        counts = startCluster(
            profile,
            _workers(workers, workers_file),
            local=local,
            enginesPerWorker=per_worker,
            leaveFree=1 if leave_free is None else leave_free,
            controllerHost=controller_host,
            venv=venv,
            remoteProfile=remote_profile,
            sshOptions=ssh_options or None,
            timeout=timeout,
            dryRun=dry_run,
            echo=_echo,
            ipython_dir=obj["ipython_dir"],
            engines=launcher,
            batch=batch,
            controller=controller_launcher,
            controllerBatch=controller_batch,
        )
    if dry_run:
        return
    click.echo("engines per host:")
    for host, n in counts.items():
        click.echo(f"  {host}: {n}")
    click.echo(f"{sum(counts.values())} engine(s) ready; connect with ClusterLab(notebook, profile={profile!r})")


def _batch_system(launcher: str) -> bool:
    return launcher in BATCH_LAUNCHERS and system(launcher).batch


def _engine_counts(
    launcher: str, count: int | None, per_worker: int | None, total: int | None
) -> tuple[int | None, int | None]:
    """(engines per worker, engines in all) from -n, --engines-per-worker and --total-engines, for ``launcher``.

    -n means per worker for ssh/local and in all for slurm/pbs/mpi. The old
    spelling ``--engines-per-worker`` under a batch launcher is still taken,
    as the total it always meant there, with a note.
    """
    if launcher in BATCH_LAUNCHERS:
        if per_worker is not None:
            logger.warning("--engines-per-worker under --engines %s means engines in all: "
                           "say --total-engines %d", launcher, per_worker)
        given = [v for v in (count, per_worker, total) if v is not None]
        if len(set(given)) > 1:
            raise click.UsageError("give the number of engines once: --total-engines N (or -n N)")
        return None, given[0] if given else None
    if total is not None:
        raise click.UsageError(f"--total-engines applies to slurm, pbs and mpi; with --engines {launcher} "
                               "give -n (--engines-per-worker), engines on each worker")
    if count is not None and per_worker is not None and count != per_worker:
        raise click.UsageError("give the engines per worker once: -n N or --engines-per-worker N")
    return (per_worker if per_worker is not None else count), None


@cluster.command()
@_verbosity_options
@click.argument("profile")
@_ssh_option
@_dry_run_option
@click.pass_obj
def stop(obj: dict, profile: str, ssh_options: tuple[str, ...], dry_run: bool) -> None:
    """Stop the keeper, the engines (on the workers, here, or their batch jobs and mpiexec), then the controller.

    Everything is found from what `start` recorded in the profile (PIDs, job ids), so any shell on the
    machine that ran `start` (the login node) can stop it.
    """
    with _reporting():
        outcomes = stopCluster(
            profile, sshOptions=ssh_options or None, dryRun=dry_run, echo=_echo, ipython_dir=obj["ipython_dir"]
        )
        if not outcomes and not dry_run:
            click.echo(f"profile {profile}: nothing was running")
        _print_outcomes(outcomes)


@cluster.command()
@_verbosity_options
@click.argument("profile")
@click.argument("notebooks", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--timeout", type=float, default=5.0, show_default=True, metavar="SECONDS",
              help="How long to wait for the controller to answer.")
@click.pass_obj
def status(obj: dict, profile: str, notebooks: tuple[str, ...], timeout: float) -> None:
    """Show the controller, the engines, the batch jobs, and the points of each NOTEBOOK per result set.

    Points are counted from the notebooks a sweep was submitted into (read
    only, while a collector may write them): queued, running (in a chunk an
    engine runs now), finished not collected (results waiting at the
    controller for wait(), updateResults() or a collector), done and failed.
    """
    with _reporting():
        state = clusterStatus(profile, timeout=timeout, ipython_dir=obj["ipython_dir"], notebooks=notebooks)
    click.echo(f"controller: {state.controller}")
    hosts = sorted(set(state.engines) | set(state.started))
    if hosts:
        click.echo("engines per host (registered / started):")
        for host in hosts:
            click.echo(f"  {host}: {state.engines.get(host, 0)} / {state.started.get(host, 0)}")
    if state.keeper:
        click.echo(f"keeper: {state.keeper}")
    for job, what in state.jobs.items():
        click.echo(f"{job}: {what}")
    for path, counts in state.points.items():
        click.echo(f"points of {path}:")
        for line in describeCounts(counts) or ["  (no points)"]:
            click.echo(line)
    if state.answering:
        if not notebooks:
            click.echo(f"tasks at the controller: {state.queued} queued, {state.running} running, "
                       f"{state.finished} finished and not collected (give the notebook to count its points: "
                       f"`epyclab cluster status {profile} NOTEBOOK`)")
        click.echo(f"client connection file: {profileDir(profile, obj['ipython_dir']) / CLIENT_FILE}")
    else:
        raise SystemExit(1)

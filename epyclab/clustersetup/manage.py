"""Start, stop and inspect an epyclab cluster: the controller and the engines on every worker.

``startCluster`` starts the controller (here or on the controller host), then
the engines on every worker, records every PID in the profile, and waits until
all engines answer. Started again after the controller died, it restarts only
the controller: the engines, still running, register again and the durable
task store still holds the results. With ``controller="slurm"`` (or ``pbs``)
the controller runs in a batch job of its own, recorded like the engines'
jobs; started again after that job ended, ``start`` submits a new one.
``stopCluster`` stops the engines on every worker (or cancels their jobs),
then the controller, by PID or job id. ``clusterStatus`` asks the controller.
"""

from __future__ import annotations

import json
import shlex
import socket
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from time import monotonic, sleep
from typing import Any

from epyclab.clustersetup import processes
from epyclab.clustersetup.batchsystems import JobInfo, system
from epyclab.clustersetup.controller import (
    connect,
    controllerLog,
    startController,
    waitForController,
    waitForControllerJob,
)
from epyclab.clustersetup.controllertree import (
    controllerLeftovers,
    controllerRecord,
    controllerRunning,
    recordControllerTree,
    stopControllerTree,
)
from epyclab.clustersetup.engines import engineCount, pushEngineFile, startEngines, waitForEngines
from epyclab.clustersetup.errors import ClusterSetupError, HostFailures
from epyclab.clustersetup.hosts import LOCAL, Host, parseHost, parseHosts
from epyclab.clustersetup.keeper import keeperRecord, keeperRunning, startKeeper, stopKeeper
from epyclab.clustersetup.launchers import (
    BATCH_LAUNCHERS,
    CONTROLLER_LAUNCHERS,
    LAUNCHERS,
    BatchOptions,
    batchEnded,
    batchInfo,
    batchStatus,
    checkBatchCommand,
    describeBatch,
    describeBatchController,
    outputTail,
    recordName,
    startBatchController,
    stopBatchJob,
    submitEngineJob,
)
from epyclab.clustersetup.outside import engineJob
from epyclab.clustersetup.ports import describeTaken, takenPorts
from epyclab.clustersetup.profile import CLIENT_FILE, ENGINE_FILE, initProfile, profileSettings, requireProfile
from epyclab.clustersetup.ssh import Remote, shellPath
from epyclab.clustersetup.state import (
    ClusterSettings,
    Processes,
    loadProcesses,
    loadSettings,
    saveProcesses,
    saveSettings,
)
from epyclab.clustersetup.sync import remoteProfileDir
from epyclab.labs.remote.points import PointCounts, hubTasks, pointCounts
from epyclab.log import logger
from epyclab.private import privateTree, writePrivate

__all__ = ["initCluster", "startCluster", "stopCluster", "clusterStatus", "ClusterStatus", "notebookPoints"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def initCluster(
    profile: str, ip: str = "127.0.0.1", curve: bool = False, ipython_dir: str | Path | None = None
) -> Path:
    """Create or update the profile (see :func:`epyclab.clustersetup.profile.initProfile`); refuse while it runs."""
    try:
        directory = requireProfile(profile, ipython_dir)
    except ClusterSetupError:
        return initProfile(profile, ip=ip, curve=curve, ipython_dir=ipython_dir)
    current = profileSettings(directory)
    changed = current.get("ip") != ip or current.get("curve") != curve
    if changed and loadProcesses(directory).controller is not None:
        raise ClusterSetupError(
            f"the cluster of profile {profile!r} is running: stop it (`epyclab cluster stop {profile}`) "
            "before changing its address or encryption"
        )
    return initProfile(profile, ip=ip, curve=curve, ipython_dir=ipython_dir)


def startCluster(
    profile: str,
    workers: Sequence[str] = (),
    *,
    local: bool = False,
    enginesPerWorker: int | None = None,
    leaveFree: int = 1,
    controllerHost: str | None = None,
    venv: str | None = None,
    remoteProfile: str | None = None,
    sshOptions: Sequence[str] | None = None,
    timeout: float = 60.0,
    dryRun: bool = False,
    echo: Callable[[str], None] | None = None,
    ipython_dir: str | Path | None = None,
    engines: str = "ssh",
    batch: BatchOptions | None = None,
    controller: str = "local",
    controllerBatch: BatchOptions | None = None,
) -> dict[str, int]:
    """Start the controller and the engines; return the number of engines answering per worker.

    ``engines`` names the launcher (see :mod:`epyclab.clustersetup.launchers`):
    ``ssh`` (the workers), ``local`` (this machine, as ``local=True``), or
    ``slurm``, ``pbs``, ``mpi``, which start ``batch.engines`` engines in one
    job through ipyparallel's launchers. ``controller`` says where the
    controller runs: ``local`` (here, or on ``controllerHost``), or ``slurm``
    / ``pbs``, in a batch job of its own configured by ``controllerBatch``
    (queue, account, walltime, directives, template; engine counts do not
    apply); the engines must then be a batch or MPI launcher too.

    Engines start on ``workers`` (default: those of the last ``sync``), or
    only here with ``local=True`` (no ssh at all): ``enginesPerWorker`` each,
    or the machine's cores minus ``leaveFree`` (at least 1). If the cluster was started before and its
    controller has died since, only the controller is restarted, and the
    engines still running register with it again. If it ran in a batch job
    that has ended, a new job is submitted (see :func:`_restart_batch`).

    With ``batch.keep`` a keeper process keeps ``batch.engines`` engines up
    until :func:`stopCluster` (see :mod:`epyclab.clustersetup.keeper`); a
    keeper recorded but not running (the login node rebooted) is started again.

    Raises :class:`ClusterSetupError` naming the host or job that failed,
    with its log or output file; :class:`HostFailures` for some workers.
    """
    directory = requireProfile(profile, ipython_dir)
    recorded = loadProcesses(directory)
    keeper = recorded.keeper
    if keeper is not None and not dryRun:
        if keeperRunning(keeper):
            raise ClusterSetupError(
                f"the cluster of profile {profile!r} is running, kept up by its keeper (PID {keeper['pid']}): "
                f"see `epyclab cluster status {profile}`, or stop it with `epyclab cluster stop {profile}`"
            )
        if _controller_answers(directory, recorded):
            logger.warning("profile %s: the keeper is not running (the login node rebooted?); starting it again",
                           profile)
            startKeeper(directory)
            return dict(sorted(Counter(loadProcesses(directory).engineHosts.values()).items()))
    counts = _start(profile, directory, workers, local, enginesPerWorker, leaveFree, controllerHost, venv,
                    remoteProfile, sshOptions, timeout, dryRun, echo, engines, batch, controller, controllerBatch)
    recorded = loadProcesses(directory)
    if dryRun:
        return counts
    if keeper is None and batch is not None and batch.keep and engines in BATCH_LAUNCHERS:
        recorded.keeper = keeperRecord(engines, batch)
        saveProcesses(directory, recorded)
    if recorded.keeper is not None:
        if keeper is not None:
            logger.warning("profile %s: starting its keeper again", profile)
        startKeeper(directory)
    return counts


def _controller_answers(directory: Path, recorded: Processes) -> bool:
    """True if the recorded controller runs and answers (a client can connect)."""
    if recorded.controller is None:
        return False
    try:
        connect(directory, timeout=5.0).close()
    except ClusterSetupError:
        return False
    return True


def _start(
    profile: str, directory: Path, workers: Sequence[str], local: bool, enginesPerWorker: int | None,
    leaveFree: int, controllerHost: str | None, venv: str | None, remoteProfile: str | None,
    sshOptions: Sequence[str] | None, timeout: float, dryRun: bool, echo: Callable[[str], None] | None,
    engines: str, batch: BatchOptions | None, controller: str, controllerBatch: BatchOptions | None,
) -> dict[str, int]:
    """:func:`startCluster` without its keeper."""
    if batch is not None and batch.keep and (engines not in BATCH_LAUNCHERS or not system(engines).batch):
        raise ClusterSetupError(f"--keep keeps batch jobs up: it applies to slurm and pbs, not to {engines}")
    settings = _settings(directory, workers, controllerHost, venv, remoteProfile, sshOptions)
    remote = Remote(settings.sshOptions, dryRun=dryRun, echo=echo)
    where = remoteProfileDir(profile, settings.remoteProfile)
    recorded = loadProcesses(directory)
    if recorded.controller is not None and _is_job(recorded.controller):
        if dryRun:
            job = recorded.controller
            if echo is not None:
                echo(describeBatchController(directory, str(job["kind"]), BatchOptions(**job.get("options", {})),
                                             job.get("node")))
            return {}
        return _restart_batch(remote, directory, where, settings, recorded, LOCAL, timeout)
    if recorded.controller is not None:
        hosts = [LOCAL] if local else parseHosts(settings.workers) if settings.workers else []
        return _restart_controller(remote, directory, where, settings, recorded, timeout, enginesPerWorker, hosts)
    if any(recorded.engines.values()) or recorded.launchers:
        hosts = ", ".join([*(h for h, pids in recorded.engines.items() if pids), *map(recordName, recorded.launchers)])
        raise ClusterSetupError(
            f"engines of an earlier start may still run on {hosts}, with no controller recorded (a stop or a "
            f"restart of the controller failed): run `epyclab cluster stop {profile}` first"
        )
    if controller not in CONTROLLER_LAUNCHERS:
        raise ClusterSetupError(
            f"unknown controller launcher {controller!r}: use one of {', '.join(CONTROLLER_LAUNCHERS)}"
        )
    if controller != "local" and engines not in BATCH_LAUNCHERS:
        raise ClusterSetupError(
            f"--controller {controller} runs the controller in a batch job, where engines started by "
            f"{engines!r} cannot follow it: start the engines with --engines {controller} (or another of "
            f"{', '.join(BATCH_LAUNCHERS)}), or keep the controller here (--controller local)"
        )
    if engines in BATCH_LAUNCHERS:
        _warn_loopback(profile, directory, engines, controller)
        return _start_batch(remote, directory, where, settings, engines, batch or BatchOptions(), timeout,
                            controller, controllerBatch or BatchOptions())
    if engines not in LAUNCHERS:
        raise ClusterSetupError(f"unknown engine launcher {engines!r}: use one of {', '.join(LAUNCHERS)}")
    local = local or engines == "local"
    count = engineCount(enginesPerWorker, leaveFree)
    hosts = [LOCAL] if local else parseHosts(settings.workers)
    if not hosts:
        raise ClusterSetupError(
            f"no engines to start for profile {profile!r}: say where they run: on a batch system "
            f"--engines slurm|pbs --total-engines N (or --engines mpi, under mpiexec); on machines you reach by "
            f"ssh --workers HOST,... (or --workers-file FILE, or `epyclab cluster sync {profile} --workers ...` "
            f"first); on this machine only --local -n N"
        )
    controller_host = parseHost(settings.controllerHost) if settings.controllerHost and not local else LOCAL
    # A controller on 127.0.0.1 is reachable only from its own machine (a host alias for this one will do).
    if (
        not controller_host.isLocal
        and profileSettings(directory).get("ip") in _LOOPBACK
        and remote.hostname(controller_host) not in _LOOPBACK
    ):
        raise ClusterSetupError(
            f"profile {profile!r} listens on 127.0.0.1, which engines and clients cannot reach on "
            f"{controller_host}: run `epyclab cluster init {profile} --ip ADDRESS` and `sync` again"
        )
    if not dryRun:
        saveSettings(directory, settings)
    # Engine state from an earlier run would make the controller wait for engines that are gone.
    if controller_host.isLocal:
        for stale in [] if dryRun else (directory / "log").glob("engines*.json"):
            stale.unlink()
        if not dryRun:
            # It reuses the last run's ports (maybe days ago): none of its engines runs now to need them.
            _claim_ports(directory, profile)
    else:
        remote.ssh(controller_host, f"rm -f {shellPath(where)}/log/engines*.json", timeout=60)

    started = Processes()
    pid = startController(remote, controller_host, directory, where, settings.venv)
    if dryRun:
        for host in hosts:
            pushEngineFile(remote, host, directory, where)
            startEngines(remote, host, count, directory, where, settings.venv)
        return {}
    client = _wait_recorded(remote, controller_host, pid, directory, where, started, timeout)
    try:
        hint = (
            f"Their logs: {where}/log/epyclab-engine-*.log on each worker; `epyclab cluster stop {profile}` stops all"
        )
        counts = _launch_and_wait(remote, client, {h: count for h in hosts}, {}, directory, where, settings,
                                  started, timeout, hint)
        _check_task_scheduler(client, profile, controllerLog(controller_host, directory, where), timeout)
        return counts
    finally:
        client.close()


def _warn_loopback(profile: str, directory: Path, engines: str, controller: str) -> None:
    """Warn (not refuse) when batch engines are to reach a controller listening on loopback only.

    Engines in jobs on other nodes cannot reach 127.0.0.1 of the login node, and the user would only
    see them fail to register. Not an error: a one-node batch system (or mpiexec here) works on loopback.
    """
    ip = str(profileSettings(directory).get("ip", "127.0.0.1"))
    if ip not in _LOOPBACK:
        return
    where = "in its job" if controller != "local" else "here"
    logger.warning(
        "profile %s: the controller listens on %s (loopback), %s: engines of --engines %s on other nodes "
        "cannot reach it and will not register. Unless every engine runs on the controller's node, run "
        "`epyclab cluster init %s --ip ADDRESS-the-nodes-can-reach` (the login node's address on the "
        "cluster network) first", profile, ip, where, engines, profile)


def _start_batch(
    remote: Remote,
    directory: Path,
    where: str,
    settings: ClusterSettings,
    kind: str,
    options: BatchOptions,
    timeout: float,
    controller: str = "local",
    controller_options: BatchOptions | None = None,
) -> dict[str, int]:
    """The controller here (or in a batch job), the engines in a batch (or MPI) job; wait until all registered."""
    profile = directory.name.removeprefix("profile_")
    controller_options = controller_options or BatchOptions()
    if remote.dryRun:
        if controller == "local":
            startController(remote, LOCAL, directory, where, settings.venv)
        elif remote.echo is not None:
            remote.echo(describeBatchController(directory, controller, controller_options))
        if remote.echo is not None:
            remote.echo(describeBatch(directory, kind, options))
        return {}
    saveSettings(directory, settings)
    for stale in (directory / "log").glob("engines*.json"):
        stale.unlink()
    started = Processes()
    if controller == "local":
        _claim_ports(directory, profile)  # the last run's ports; its engines are gone
        pid = startController(remote, LOCAL, directory, where, settings.venv)
        client = _wait_recorded(remote, LOCAL, pid, directory, where, started, timeout)
    else:
        # Files of an earlier controller name its node: the new one, wherever it lands, writes its own.
        _drop_connection_files(directory)
        client = _submit_controller(directory, started, controller, controller_options, timeout)
    try:
        return _submit_and_wait(client, directory, started, kind, options, timeout, profile)
    finally:
        client.close()


def _submit_and_wait(
    client: Any, directory: Path, started: Processes, kind: str, options: BatchOptions, timeout: float, profile: str,
    sizes: list[int] | None = None,
) -> dict[str, int]:
    """Submit the engines' jobs (``sizes``: engines per job; default the options' own), each recorded at once;
    wait until every engine registered, failing as soon as one of the jobs ends without its engines."""
    if sizes is None:
        sizes = options.jobSizes() if system(kind).batch else [int(options.engines)]
    checkBatchCommand(kind)
    new = []
    for n in sizes:
        record = submitEngineJob(directory, kind, options, n)
        started.launchers.append(record)
        new.append(record)
        saveProcesses(directory, started)
    running = {r["kind"]: 0 for r in started.launchers}
    for r in started.launchers:
        running[r["kind"]] += int(r["engines"])
    if options.keep and new:
        # Kept up: the sweep can begin on the first job's engines; the keeper watches the jobs still queued.
        running[kind] -= sum(int(r["engines"]) for r in new[1:])
    hint = (
        f"Jobs: {', '.join(f'{recordName(r)} ({batchStatus(r)})' for r in new)}; their output is in "
        f"{directory / 'log'}. `epyclab cluster stop {profile}` cancels them"
    )
    ip = str(profileSettings(directory).get("ip", "127.0.0.1"))
    if ip in _LOOPBACK:
        hint += (f". The controller listens on {ip}: engines on other nodes cannot reach it; "
                 f"`epyclab cluster init {profile} --ip ADDRESS-the-nodes-can-reach` fixes that")
    try:
        started.register(waitForEngines(client, running, timeout, hint, check=lambda: _check_jobs(new)))
    finally:
        saveProcesses(directory, started)
        privateTree(directory)
    return dict(sorted(Counter(started.engineHosts.values()).items()))


def _check_jobs(records: list[dict[str, Any]]) -> None:
    """Raise :class:`ClusterSetupError` if one of the jobs has ended: naming it, its final state and its output."""
    for record in records:
        info = batchInfo(record)
        if info.ended:
            raise ClusterSetupError(
                f"the {recordName(record)} ended ({info.state}) before its engines registered. The last lines of "
                f"its output ({record.get('output')}):\n{outputTail(record)}"
            )


def _wait_recorded(
    remote: Remote, host: Host, pid: int, directory: Path, where: str, started: Processes, timeout: float
) -> Any:
    """Record the controller just started as ``pid`` (at once, so that ``stop`` finds it whatever happens),
    wait until it answers, then record its process tree; return a client of it."""
    started.controller = controllerRecord(remote, host, pid)
    saveProcesses(directory, started)
    client = waitForController(remote, host, pid, directory, where, timeout)
    try:
        recordControllerTree(remote, host, started.controller, directory)
        saveProcesses(directory, started)
    except BaseException:
        client.close()
        raise
    return client


def _is_job(controller: dict[str, Any]) -> bool:
    """True if the recorded controller runs in a batch job (a launcher record), not as a PID."""
    return controller.get("role") == "controller"


def _drop_connection_files(directory: Path) -> None:
    for name in (CLIENT_FILE, ENGINE_FILE):
        (directory / name).unlink(missing_ok=True)


def _submit_controller(
    directory: Path, started: Processes, kind: str, options: BatchOptions, timeout: float, node: str | None = None
) -> Any:
    """Submit the controller's batch job, record it, and wait until it answers; return a client of it.

    If it does not answer (its job ended, it waited too long in the queue, or
    it runs where clients here cannot reach it) the job is cancelled and
    forgotten, and :class:`ClusterSetupError` says which job, why, and its output file.
    """
    profile = directory.name.removeprefix("profile_")
    record = startBatchController(directory, kind, options, node)
    started.controller = record
    saveProcesses(directory, started)
    ip = str(profileSettings(directory).get("ip", "127.0.0.1"))

    def reachable(where: str) -> None:
        if ip in _LOOPBACK and not _this_machine(where):
            raise ClusterSetupError(
                f"the controller's {recordName(record)} runs on node {where}, but profile {profile!r} listens on "
                f"{ip}, which only that node can reach: run `epyclab cluster init {profile} --ip 0.0.0.0` "
                "(every interface of the node it lands on) and start again"
            )

    try:
        client = waitForControllerJob(directory, record, timeout, reachable)
    except ClusterSetupError as error:
        try:
            outcome = stopBatchJob(record)
        except ClusterSetupError as cancelling:
            # Still recorded, so that `stop` can cancel it later.
            raise ClusterSetupError(f"{error}\nand then {cancelling}") from error
        started.controller = None
        saveProcesses(directory, started)
        raise ClusterSetupError(f"{error} ({recordName(record)}: {outcome})") from error
    saveProcesses(directory, started)  # with the node it runs on
    logger.info("%s: the controller answers, on node %s", recordName(record), record.get("node") or "(unknown)")
    return client


def _this_machine(node: str) -> bool:
    here = socket.gethostname()
    return node in ("localhost", here, here.split(".")[0])


def _launch_and_wait(
    remote: Remote,
    client: Any,
    launch: dict[Host, str],
    running: dict[str, int],
    directory: Path,
    where: str,
    settings: ClusterSettings,
    started: Processes,
    timeout: float,
    hint: str,
) -> dict[str, int]:
    """Start ``launch[host]`` engines on each host (besides ``running[host]`` still there); wait for all of them.

    Engines are recorded in ``started`` as soon as their PIDs are known, so
    that ``stop`` finds them whatever happens next. Raises
    :class:`ClusterSetupError` naming the hosts whose engines did not register,
    :class:`HostFailures` naming those where starting failed.
    """
    lock = threading.Lock()

    def start(host: Host) -> int:
        pushEngineFile(remote, host, directory, where)
        pids = startEngines(remote, host, launch[host], directory, where, settings.venv)
        with lock:
            started.engines[str(host)] = [*started.engines.get(str(host), []), *pids]
            saveProcesses(directory, started)
        return len(pids)

    failures: HostFailures | None = None
    try:
        expected = {str(h): n for h, n in remote.forEachHost("start engines", list(launch), start).items()}
    except HostFailures as error:
        failures, expected = error, {h: int(n) for h, n in error.outcomes.items()}
    for spec, n in running.items():
        expected[spec] = expected.get(spec, 0) + n
    if not any(expected.values()) and failures is None:
        raise ClusterSetupError("no engines were started or are still running; " + hint)
    try:
        started.register(waitForEngines(client, expected, timeout, hint))
    finally:
        saveProcesses(directory, started)
        privateTree(directory)
    if failures is not None:
        raise failures
    return dict(sorted(Counter(started.engineHosts.values()).items()))


def _restart_controller(
    remote: Remote,
    directory: Path,
    where: str,
    settings: ClusterSettings,
    recorded: Processes,
    timeout: float,
    enginesPerWorker: int | None,
    hosts: Sequence[Host],
) -> dict[str, int]:
    """Start the recorded controller again if it died; engines still running register again, dead ones are replaced.

    After a reboot (controller and engines gone) the controller is told to
    restore only the engines that still run (its engine state file is pruned
    of the others, which would otherwise be listed as engines for ever), and
    new engines are started where old ones died: ``enginesPerWorker`` per
    worker, or as many as were started there before.
    """
    assert recorded.controller is not None
    host = _host(str(recorded.controller["host"]))
    pid = int(str(recorded.controller["pid"]))
    profile = directory.name.removeprefix("profile_")
    if remote.dryRun:
        startController(remote, host, directory, where, settings.venv)
        return {}
    if controllerRunning(remote, host, recorded.controller):
        raise ClusterSetupError(
            f"the cluster of profile {profile!r} is running (controller PID {pid} on {host}): "
            f"see `epyclab cluster status {profile}`, or stop it with `epyclab cluster stop {profile}`"
        )
    logger.warning("%s: the controller (PID %d) is gone; restarting it; running engines will register again", host, pid)
    # Its schedulers may have outlived it (killed alone: SIGKILL, the OOM killer), holding its ports.
    _, leftovers = stopControllerTree(remote, host, recorded.controller)
    if leftovers:
        logger.warning("%s: stopped %d process(es) that the dead controller (PID %d) left running, holding its ports",
                       host, leftovers, pid)
    if recorded.launchers:
        return _restart_batch(remote, directory, where, settings, recorded, host, timeout)
    workers = _engine_hosts(recorded) or list(hosts)
    wanted = {
        str(w): enginesPerWorker if enginesPerWorker is not None else len(recorded.engines.get(str(w), [])) or 1
        for w in workers
    }
    lock = threading.Lock()

    def survivors(worker: Host) -> int:
        pids = processes.alive(remote, worker, recorded.engines.get(str(worker), []))
        with lock:
            recorded.engines[str(worker)] = pids
        return len(pids)

    failures: HostFailures | None = None
    try:
        found = remote.forEachHost("check engines", workers, survivors)
        alive = {str(h): n for h, n in found.items()}
    except HostFailures as error:
        failures, alive = error, {h: int(n) for h, n in error.outcomes.items()}
    if host.isLocal and _ports_taken(directory):
        # New ports then: the engines still running know only the old ones. Their tasks are orphans of the
        # restart anyway (collectors resubmit them), so they are stopped and replaced.
        running = {w: recorded.engines.get(str(w), []) for w in workers if recorded.engines.get(str(w))}
        if running:
            logger.warning("stopping the %d engine(s) still running, which know only the old ports; new ones "
                           "replace them", sum(len(p) for p in running.values()))
        for worker, pids in running.items():
            processes.stop(remote, worker, pids)
            recorded.engines[str(worker)] = []
            alive[str(worker)] = 0
    keep = {
        eid for eid, pids in recorded.enginePids.items()
        if set(pids) & set(recorded.engines.get(recorded.engineHosts.get(eid, ""), []))
    }
    _prune_engine_state(remote, host, directory, where, settings.venv, keep)
    dead = len(recorded.enginePids) - len(keep)
    if dead:
        logger.warning("%d engine(s) of the last start are gone; the controller will not wait for them", dead)
    recorded.engineHosts = {e: h for e, h in recorded.engineHosts.items() if e in keep}
    recorded.enginePids = {e: p for e, p in recorded.enginePids.items() if e in keep}
    if host.isLocal:
        _claim_ports(directory, profile)
    pid = startController(remote, host, directory, where, settings.venv)
    client = _wait_recorded(remote, host, pid, directory, where, recorded, timeout)
    try:
        launch = {
            w: engineCount(wanted[str(w)] - alive.get(str(w), 0))
            for w in workers
            if str(w) in alive and wanted[str(w)] > alive[str(w)]
        }
        if launch:
            logger.warning("starting engines to replace those that died: %s",
                           ", ".join(f"{w} ({launch[w]})" for w in launch))
        hint = (
            f"Engines wait about two minutes for a silent controller; new ones log to {where}/log/; "
            f"`epyclab cluster stop {profile}` stops all"
        )
        counts = _launch_and_wait(remote, client, launch, alive, directory, where, settings, recorded, timeout, hint)
        _check_task_scheduler(client, profile, controllerLog(host, directory, where), timeout)
    finally:
        client.close()
    if failures is not None:
        raise failures
    return counts


def _ports_taken(directory: Path) -> dict[int, str]:
    """The ports of the profile's connection files that another process holds now -> their channels."""
    return takenPorts(directory, str(profileSettings(directory).get("ip", "127.0.0.1")))


def _claim_ports(directory: Path, profile: str) -> None:
    """Before a local controller starts on its last run's ports: new ports if another process took one meanwhile.

    The controller reuses its connection files, so that engines still running
    find it again; the caller has stopped any engine that would need the old
    ports. A port taken would leave the controller running without the
    scheduler that serves it, so the files are dropped and it picks new ports.
    """
    taken = _ports_taken(directory)
    if taken:
        logger.warning("port(s) %s of profile %s's controller are taken by other processes now; it starts on new "
                       "ports", describeTaken(taken), profile)
        _drop_connection_files(directory)


def _check_task_scheduler(client: Any, profile: str, log: str, timeout: float) -> None:
    """Raise ClusterSetupError if the (re)started controller's task scheduler takes no task.

    ipyparallel carries on without a scheduler that could not bind its port:
    the hub and the engines answer, and not one task would run.
    """
    # Imported here: the lab's hub queries are not needed for the other commands.
    from epyclab.labs.remote.hub import Hub

    hub = Hub(client, min(float(timeout), 30.0))
    probe = hub.takesTasks()
    if probe is not None:
        # Purged once finished (engines are idle now: at once), so that status counts no result nobody collects.
        deadline = monotonic() + hub.timeout
        while hub.purge([probe]) and monotonic() < deadline:
            sleep(0.1)
        return
    raise ClusterSetupError(
        f"the controller of profile {profile!r} started, but its task scheduler takes no tasks (a test task "
        f"never reached it): it probably could not bind its port, which its log {log} then names "
        f"('Address already in use'). Run `epyclab cluster stop {profile}`, then `epyclab cluster start {profile}`"
    )


def _restart_batch(
    remote: Remote, directory: Path, where: str, settings: ClusterSettings, recorded: Processes, host: Host,
    timeout: float,
) -> dict[str, int]:
    """Restart the controller of a cluster whose engines a batch job holds; resubmit jobs that ended.

    A controller that ran in a batch job is submitted again, as a new job
    with the same options. If engine jobs still run, it keeps the connection
    files (same key and ports, see ``reuse_files``) and is pinned to the node
    the last one ran on, the address those engines know, so they register
    again as they do with a local controller; if none run, it starts afresh
    (new connection files, any node) and the engines' jobs are submitted again.
    """
    profile = directory.name.removeprefix("profile_")
    job = recorded.controller if recorded.controller is not None and _is_job(recorded.controller) else None
    if job is not None:
        state = batchStatus(job)
        if not batchEnded(state):
            raise ClusterSetupError(
                f"the cluster of profile {profile!r} is running (the controller's {recordName(job)} is {state}): "
                f"see `epyclab cluster status {profile}`, or stop it with `epyclab cluster stop {profile}`"
            )
        logger.warning("the controller's %s has ended (%s); submitting it again", recordName(job), state)
    live = [r for r in recorded.launchers if not batchEnded(batchStatus(r))]
    ended = [r for r in recorded.launchers if r not in live]
    kinds = {r["kind"] for r in live}
    keep = {eid for eid, spec in recorded.engineHosts.items() if spec in kinds}
    if host.isLocal:
        keep = _engines_of_jobs(directory, live, keep)
    _prune_engine_state(remote, host, directory, where, settings.venv, keep)
    recorded.engineHosts = {e: h for e, h in recorded.engineHosts.items() if e in keep}
    recorded.enginePids = {e: p for e, p in recorded.enginePids.items() if e in keep}
    recorded.launchers = live
    if job is None:
        pid = startController(remote, host, directory, where, settings.venv)
        client = _wait_recorded(remote, host, pid, directory, where, recorded, timeout)
    else:
        if not live:
            _drop_connection_files(directory)
        options = BatchOptions(**job.get("options", {}))
        client = _submit_controller(directory, recorded, str(job["kind"]), options, timeout,
                                    node=job.get("node") if live else None)
    try:
        counts: dict[str, int] = {}
        for record in ended:
            logger.warning("%s has ended; submitting its engines again", recordName(record))
            options = BatchOptions(**record.get("options", {"engines": record["engines"]}))
            counts = _submit_and_wait(client, directory, recorded, str(record["kind"]), options, timeout, profile,
                                      [int(record["engines"])])
        if not ended:
            expected = {k: sum(int(r["engines"]) for r in live if r["kind"] == k) for k in kinds}
            hint = f"Jobs: {', '.join(recordName(r) for r in live)}; `epyclab cluster stop {profile}` cancels them"
            recorded.register(waitForEngines(client, expected, timeout, hint))
            saveProcesses(directory, recorded)
            counts = dict(sorted(Counter(recorded.engineHosts.values()).items()))
    finally:
        client.close()
    return counts


def _engines_of_jobs(directory: Path, live: list[dict[str, Any]], fallback: set[str]) -> set[str]:
    """The engine ids of the controller's state whose engines run in one of the ``live`` jobs.

    Each engine of a batch job said which job it runs in (see
    :func:`epyclab.clustersetup.outside.engineJob`), the keeper's replacements
    too; an engine that said nothing is kept if it is in ``fallback``.
    """
    jobs = {str(r.get("launcher", {}).get("job_id", "")).split(".")[0] for r in live}
    keep = set()
    for path in (directory / "log").glob("engines*.json"):
        for eid, uuid in json.loads(path.read_text()).get("engines", {}).items():
            job = engineJob(directory, str(uuid))
            if (job is None and eid in fallback) or (job is not None and job.split(".")[0] in jobs):
                keep.add(str(eid))
    return keep


def _prune_engine_state(
    remote: Remote, host: Host, directory: Path, where: str, venv: str, keep: set[str]
) -> None:
    """Leave in the controller's engine state file (``log/engines.json``) only the engines in ``keep``.

    A controller started with ``restore_engines`` lists every engine of that
    file as registered, whether or not it still runs: a dead one would be an
    engine for ever, to which tasks are sent and never run.
    """
    if host.isLocal:
        for path in (directory / "log").glob("engines*.json"):
            state = json.loads(path.read_text())
            state["engines"] = {e: u for e, u in state.get("engines", {}).items() if e in keep}
            writePrivate(path, json.dumps(state))
        return
    program = (
        "import glob, json, os, sys\n"
        "keep = set(sys.argv[1:])\n"
        "for path in glob.glob(os.path.expanduser(os.environ['P']) + '/log/engines*.json'):\n"
        "    state = json.load(open(path))\n"
        "    state['engines'] = {e: u for e, u in state.get('engines', {}).items() if e in keep}\n"
        "    json.dump(state, open(path, 'w'))\n"
    )
    command = f"umask 077; P={shellPath(where)} {shellPath(venv)}/bin/python -c {shlex.quote(program)}"
    remote.ssh(host, " ".join([command, *sorted(keep)]), timeout=60)


def stopCluster(
    profile: str,
    *,
    sshOptions: Sequence[str] | None = None,
    dryRun: bool = False,
    echo: Callable[[str], None] | None = None,
    ipython_dir: str | Path | None = None,
) -> dict[str, str]:
    """Stop the engines on every worker, then the controller, by their recorded PIDs or job ids; say what was done.

    A worker that cannot be reached keeps its record (so ``stop`` can be run
    again); the others are stopped anyway, and :class:`HostFailures` names it.
    """
    directory = requireProfile(profile, ipython_dir)
    settings = loadSettings(directory)
    remote = Remote(settings.sshOptions if sshOptions is None else sshOptions, dryRun=dryRun, echo=echo)
    report: dict[str, str] = {}
    if loadProcesses(directory).keeper is not None:
        # First, so that it submits nothing more while its jobs are cancelled.
        report["keeper"] = "would stop it" if dryRun else stopKeeper(directory)
    recorded = loadProcesses(directory)
    if recorded.empty():
        logger.info("profile %s: no controller or engines recorded as started", profile)
        return report
    lock = threading.Lock()

    def stop_engines(host: Host) -> str:
        pids = recorded.engines[str(host)]
        stopped = processes.stop(remote, host, pids)
        if dryRun:
            return f"would stop {len(pids)} engine(s)"
        with lock:
            del recorded.engines[str(host)]
        return f"stopped {len(stopped)} engine(s)"

    failures: HostFailures | None = None
    try:
        report.update(
            {str(h): o for h, o in remote.forEachHost("stop engines", _engine_hosts(recorded), stop_engines).items()}
        )
    except HostFailures as error:
        failures = error
        report.update({h: str(o) for h, o in error.outcomes.items()})
    for record in list(recorded.launchers):
        name = recordName(record)
        if dryRun:
            report[name] = "would stop it"
            continue
        try:
            report[name] = stopBatchJob(record)
        except ClusterSetupError as error:
            report[name] = f"failed: {error}"
            failures = HostFailures("stop", {**(failures.failures if failures else {}), name: error}, {})
            continue
        recorded.launchers.remove(record)
        saveProcesses(directory, recorded)
    if recorded.controller is not None and _is_job(recorded.controller):
        name = recordName(recorded.controller)
        if dryRun:
            report[name] = "would stop it"
        else:
            try:
                report[name] = stopBatchJob(recorded.controller)
                recorded.controller = None
            except ClusterSetupError as error:
                report[name] = f"failed: {error}"
                failures = HostFailures("stop", {**(failures.failures if failures else {}), name: error}, {})
    if recorded.controller is not None and not _is_job(recorded.controller):
        host = _host(str(recorded.controller["host"]))
        pid = int(str(recorded.controller["pid"]))
        if dryRun:
            processes.stop(remote, host, [pid])
            what = f"would stop the controller (PID {pid})"
        else:
            # Its whole tree: schedulers outlive a controller killed alone, and hold its ports.
            leader, leftovers = stopControllerTree(remote, host, recorded.controller)
            what = "stopped the controller" if leader else "the controller had already exited"
            if leftovers and not leader:
                what += f"; stopped the {leftovers} process(es) it left running"
        report[str(host)] = f"{report[str(host)]}, {what}" if str(host) in report else what
        recorded.controller = None
    if not dryRun:
        if not recorded.engines and not recorded.launchers:
            recorded.engineHosts, recorded.enginePids = {}, {}
        saveProcesses(directory, recorded)
    if failures is not None:
        raise HostFailures("stop", failures.failures, report)
    return report


@dataclass
class ClusterStatus:
    """What ``epyclab cluster status`` reports."""

    controller: str
    answering: bool
    #: worker -> engines registered with the controller now
    engines: dict[str, int] = field(default_factory=dict)
    #: worker -> engines started there by epyclab
    started: dict[str, int] = field(default_factory=dict)
    #: Tasks (chunks of points) the controller holds: queued, running, finished and not yet collected.
    queued: int = 0
    running: int = 0
    finished: int = 0
    #: batch job or mpiexec (e.g. "slurm job 12") -> what the scheduler says of it now
    jobs: dict[str, str] = field(default_factory=dict)
    #: What the keeper (``start --keep``) is doing ('' if there is none).
    keeper: str = ""
    #: ids of the tasks engines run now (what makes a notebook's pending point "running")
    runningTasks: set[str] = field(default_factory=set)
    #: ids of the tasks finished at the controller, results not yet purged by a collector
    #: (what makes a notebook's pending point "finished not collected")
    finishedTasks: set[str] = field(default_factory=set)
    #: notebook path -> result set tag -> its points (see :func:`notebookPoints`)
    points: dict[str, dict[str, PointCounts]] = field(default_factory=dict)


def clusterStatus(
    profile: str, timeout: float = 5.0, ipython_dir: str | Path | None = None, notebooks: Sequence[str] = ()
) -> ClusterStatus:
    """Ask the controller for its engines (per worker) and tasks; count the points of ``notebooks``.

    Each notebook is opened read-only (while a collector writes it too) and
    its points counted per result set: queued, running (in a chunk an engine
    runs now), done, failed (:func:`epyclab.labs.remote.points.pointCounts`).

    Raises:
        ClusterSetupError: the profile does not exist, or a notebook cannot be read (naming it).
    """
    state = _status(profile, timeout, ipython_dir)
    state.keeper = _keeper_line(loadProcesses(requireProfile(profile, ipython_dir)).keeper)
    for path in notebooks:
        state.points[str(path)] = notebookPoints(path, state.runningTasks, state.finishedTasks)
    return state


def _keeper_line(keeper: dict[str, Any] | None) -> str:
    if keeper is None:
        return ""
    alive = f"PID {keeper.get('pid')}" if keeperRunning(keeper) else (
        f"NOT RUNNING (PID {keeper.get('pid')}): start it again with `epyclab cluster start`")
    # Short lines: status is read from phone-sized terminals too.
    line = f"{alive}, {keeper.get('status')}\n  {keeper.get('replaced', 0)} job(s) submitted since start"
    if keeper.get("ended"):
        line += f"\n  last ended: {keeper['ended'][-1]}"
    if keeper.get("failures"):
        line += f"\n  last failure: {keeper.get('lastFailure')}"
    return line


def notebookPoints(path: str | Path, running: set[str], finished: set[str] = frozenset()) -> dict[str, PointCounts]:
    """The points of the notebook at ``path`` per result set, read-only.

    ``running``: ids of the tasks engines run now; ``finished``: of those finished, not yet collected.
    """
    from epyclab.errors import EpyclabError
    from epyclab.notebooks.registry import openNotebook

    if not Path(path).is_file():
        raise ClusterSetupError(f"no notebook {path}: give the file a ClusterLab sweep was submitted into")
    try:
        nb = openNotebook(path, readonly=True)
    except (EpyclabError, OSError) as error:
        raise ClusterSetupError(f"cannot read the notebook {path}: {error}") from error
    try:
        return pointCounts(nb, running, finished)
    finally:
        nb.close()


def _status(profile: str, timeout: float, ipython_dir: str | Path | None) -> ClusterStatus:
    directory = requireProfile(profile, ipython_dir)
    recorded = loadProcesses(directory)
    started = {host: len(pids) for host, pids in recorded.engines.items()}
    for record in recorded.launchers:
        started[str(record["kind"])] = started.get(str(record["kind"]), 0) + int(record["engines"])
    jobs = {recordName(r): _job_line(r, batchInfo(r)) for r in recorded.launchers}
    if recorded.controller is None:
        return ClusterStatus("not started", False, started=started, jobs=jobs)
    if _is_job(recorded.controller):
        return _job_status(profile, directory, recorded, recorded.controller, timeout, started, jobs)
    host = _host(str(recorded.controller["host"]))
    pid = int(str(recorded.controller["pid"]))
    where = f"PID {pid} on {host}"
    remote = Remote(loadSettings(directory).sshOptions)
    try:
        running = controllerRunning(remote, host, recorded.controller)
    except ClusterSetupError as error:
        return ClusterStatus(f"{where}, cannot be checked: {error}", False, started=started, jobs=jobs)
    if not running:
        try:
            left = controllerLeftovers(remote, host, recorded.controller)
        except ClusterSetupError as error:
            logger.info("%s: cannot list what the controller left running: %s", host, error)
            left = []
        held = (f" ({len(left)} process(es) it started still run, holding its ports: `start` or `stop` stops them)"
                if left else "")
        return ClusterStatus(
            f"{where}, exited{held}: restart it with `epyclab cluster start {profile}`", False, started=started,
            jobs=jobs,
        )
    try:
        client = connect(directory, timeout=timeout)
    except ClusterSetupError as error:
        logger.info("%s", error)
        return ClusterStatus(f"{where}, not answering", False, started=started, jobs=jobs)
    return _ask(client, where, recorded, started, jobs)


def _ask(client: Any, where: str, recorded: Processes, started: dict[str, int], jobs: dict[str, str]) -> ClusterStatus:
    """The status the controller gives through ``client`` (closed afterwards)."""
    try:
        ids = client.ids
        job_of = _engine_jobs(client, ids) if recorded.launchers else {}
        kinds = {str(r.get("launcher", {}).get("job_id", "")).split(".")[0]: str(r["kind"])
                 for r in recorded.launchers}
        # An engine of a job the keeper submitted later is not in engineHosts: its job's kind names it.
        engines = Counter(recorded.engineHosts.get(str(eid)) or kinds.get(job_of.get(eid, "").split(".")[0])
                          or "(unknown)" for eid in ids)
        in_jobs = Counter(job_of.values())
        records = client.db_query({"queue": "task"}, keys=["msg_id", "completed"])
        # The hub fills a task record's "started" only when its result arrives, so the records cannot
        # tell running from queued; the schedulers' queues can: the tasks assigned to an engine run there.
        queues = client.queue_status(verbose=True)
    finally:
        client.close()
    # One bulk query (above) for every task; read as ClusterLab.pointCounts reads it (points.hubTasks).
    assigned, done = hubTasks(queues, records)
    finished = len(done)
    running = min(len(assigned - done), len(records) - finished)
    return ClusterStatus(
        f"{where}, answering",
        True,
        engines=dict(sorted(engines.items())),
        started=started,
        queued=len(records) - finished - running,
        running=running,
        finished=finished,
        jobs={name: _with_engines(name, line, recorded, in_jobs) for name, line in jobs.items()},
        runningTasks=assigned,
        finishedTasks=done,
    )


def _job_line(record: dict[str, Any], info: JobInfo) -> str:
    """``RUNNING on node3, 0:41:12 left`` (what status shows of a job)."""
    line = info.state
    if info.node:
        line += f" on {info.node}"
    if info.left is not None:
        left = int(info.left)
        line += f", {left // 3600}:{left // 60 % 60:02d}:{left % 60:02d} left"
    return line


def _job_of(variables: list[str]) -> str:
    """Run on an engine: the batch job it runs in ('' if none), from the first of ``variables`` set."""
    import os

    return next((os.environ[v] for v in variables if os.environ.get(v)), "")


def _engine_jobs(client: Any, ids: list[int]) -> dict[int, str]:
    """Engine id -> the batch job it runs in (asked of the engines; empty if they do not all answer)."""
    from epyclab.clustersetup.batchsystems import SYSTEMS

    if not ids:
        return {}
    variables = [row.jobVariable for row in SYSTEMS.values() if row.jobVariable]
    try:
        return dict(zip(ids, client[ids].apply_async(_job_of, variables).get(timeout=10)))
    except Exception as error:  # an engine that died but is still registered: say nothing rather than hang
        logger.info("the engines did not say which jobs they run in: %s", error)
        return {}


def _with_engines(name: str, line: str, recorded: Processes, in_jobs: Counter[str]) -> str:
    record = next((r for r in recorded.launchers if recordName(r) == name), None)
    job = str((record or {}).get("launcher", {}).get("job_id", ""))
    if not job or not in_jobs:
        return line
    # A PBS job id may carry the server's name in one place and not the other.
    up = in_jobs.get(job, 0) or sum(n for j, n in in_jobs.items() if j.split(".")[0] == job.split(".")[0])
    return f"{line}, {up} of {record['engines']} engine(s) up"  # type: ignore[index]


def _job_status(
    profile: str, directory: Path, recorded: Processes, job: dict[str, Any], timeout: float,
    started: dict[str, int], jobs: dict[str, str],
) -> ClusterStatus:
    """The status of a cluster whose controller runs in a batch job."""
    state = batchStatus(job)
    jobs = {recordName(job): state, **jobs}
    where = f"{recordName(job)} on node {job.get('node') or '(not known)'}"
    if batchEnded(state):
        return ClusterStatus(f"{where}, ended: submit it again with `epyclab cluster start {profile}`", False,
                             started=started, jobs=jobs)
    try:
        client = connect(directory, timeout=timeout)
    except ClusterSetupError as error:
        logger.info("%s", error)
        return ClusterStatus(f"{where}, not answering ({state}); its output: {job.get('output')}", False,
                             started=started, jobs=jobs)
    return _ask(client, where, recorded, started, jobs)


def _settings(
    directory: Path,
    workers: Sequence[str],
    controllerHost: str | None,
    venv: str | None,
    remoteProfile: str | None,
    sshOptions: Sequence[str] | None,
) -> ClusterSettings:
    """The profile's remembered settings, overridden by what was given now."""
    settings = loadSettings(directory)
    settings.workers = list(workers) or settings.workers
    settings.controllerHost = controllerHost or settings.controllerHost
    settings.venv = venv or settings.venv
    settings.remoteProfile = remoteProfile or settings.remoteProfile
    settings.sshOptions = list(sshOptions) if sshOptions is not None else settings.sshOptions
    return settings


def _host(spec: str) -> Host:
    return LOCAL if spec == str(LOCAL) else parseHost(spec)


def _engine_hosts(recorded: Processes) -> list[Host]:
    return [_host(spec) for spec, pids in recorded.engines.items() if pids]

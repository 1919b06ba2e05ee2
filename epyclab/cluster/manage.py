"""Start, stop and inspect an epyclab cluster: the controller and the engines on every worker.

``startCluster`` starts the controller (here or on the controller host), then
the engines on every worker, records every PID in the profile, and waits until
all engines answer. Started again after the controller died, it restarts only
the controller: the engines, still running, register again and the durable
task store still holds the results. ``stopCluster`` stops the engines on every
worker, then the controller, by PID. ``clusterStatus`` asks the controller.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from epyclab.cluster import processes
from epyclab.cluster.controller import connect, startController, waitForController
from epyclab.cluster.engines import engineCount, pushEngineFile, startEngines, waitForEngines
from epyclab.cluster.errors import ClusterSetupError, HostFailures
from epyclab.cluster.hosts import LOCAL, Host, parseHost, parseHosts
from epyclab.cluster.profile import initProfile, profileSettings, requireProfile
from epyclab.cluster.ssh import Remote, shellPath
from epyclab.cluster.state import ClusterSettings, Processes, loadProcesses, loadSettings, saveProcesses, saveSettings
from epyclab.cluster.sync import checkHosts, remoteProfileDir
from epyclab.log import logger

__all__ = ["initCluster", "startCluster", "stopCluster", "clusterStatus", "ClusterStatus"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def initCluster(
    profile: str, ip: str = "127.0.0.1", curve: bool = False, ipython_dir: str | Path | None = None
) -> Path:
    """Create or update the profile (see :func:`epyclab.cluster.profile.initProfile`); refuse while it runs."""
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
) -> dict[str, int]:
    """Start the controller and the engines; return the number of engines answering per worker.

    Engines start on ``workers`` (default: those of the last ``sync``), or
    only here with ``local=True`` (no ssh at all): ``enginesPerWorker`` each,
    or the machine's cores minus ``leaveFree`` (at least 1). If the cluster was started before and its
    controller has died since, only the controller is restarted, and the
    engines still running register with it again.
    """
    directory = requireProfile(profile, ipython_dir)
    settings = _settings(directory, workers, controllerHost, venv, remoteProfile, sshOptions)
    remote = Remote(settings.sshOptions, dryRun=dryRun, echo=echo)
    where = remoteProfileDir(profile, settings.remoteProfile)
    recorded = loadProcesses(directory)
    if recorded.controller is not None:
        return _restart_controller(remote, directory, where, settings, recorded, timeout)
    if any(recorded.engines.values()):
        hosts = ", ".join(h for h, pids in recorded.engines.items() if pids)
        raise ClusterSetupError(
            f"engines of an earlier start may still run on {hosts} (stopping them failed): "
            f"run `epyclab cluster stop {profile}` again first"
        )
    count = engineCount(enginesPerWorker, leaveFree)
    hosts = [LOCAL] if local else parseHosts(settings.workers)
    checkHosts(hosts)
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
    else:
        remote.ssh(controller_host, f"rm -f {shellPath(where)}/log/engines*.json", timeout=60)

    started = Processes()
    pid = startController(remote, controller_host, directory, where, settings.venv)
    if dryRun:
        for host in hosts:
            pushEngineFile(remote, host, directory, where)
            startEngines(remote, host, count, directory, where, settings.venv)
        return {}
    started.controller = {"host": str(controller_host), "pid": pid}
    saveProcesses(directory, started)
    client = waitForController(remote, controller_host, pid, directory, where, timeout)
    try:
        lock = threading.Lock()

        def launch(host: Host) -> int:
            pushEngineFile(remote, host, directory, where)
            pids = startEngines(remote, host, count, directory, where, settings.venv)
            with lock:
                # Recorded as soon as known, so that `stop` finds them whatever happens next.
                started.engines[str(host)] = pids
                saveProcesses(directory, started)
            return len(pids)

        failures: HostFailures | None = None
        try:
            expected = {str(h): n for h, n in remote.forEachHost("start engines", hosts, launch).items()}
        except HostFailures as error:
            failures, expected = error, {h: int(n) for h, n in error.outcomes.items()}
        hint = (
            f"Their logs: {where}/log/epyclab-engine-*.log on each worker; `epyclab cluster stop {profile}` stops all"
        )
        started.engineHosts = {str(k): v for k, v in waitForEngines(client, expected, timeout, hint).items()}
        saveProcesses(directory, started)
        if failures is not None:
            raise failures
        return dict(sorted(Counter(started.engineHosts.values()).items()))
    finally:
        client.close()


def _restart_controller(
    remote: Remote, directory: Path, where: str, settings: ClusterSettings, recorded: Processes, timeout: float
) -> dict[str, int]:
    """Start the recorded controller again if it died; the engines still running register again."""
    assert recorded.controller is not None
    host = _host(str(recorded.controller["host"]))
    pid = int(str(recorded.controller["pid"]))
    profile = directory.name.removeprefix("profile_")
    if remote.dryRun:
        startController(remote, host, directory, where, settings.venv)
        return {}
    if processes.alive(remote, host, [pid]):
        raise ClusterSetupError(
            f"the cluster of profile {profile!r} is running (controller PID {pid} on {host}): "
            f"see `epyclab cluster status {profile}`, or stop it with `epyclab cluster stop {profile}`"
        )
    logger.warning("%s: the controller (PID %d) is gone; restarting it; running engines will register again", host, pid)
    lock = threading.Lock()

    def survivors(worker: Host) -> int:
        pids = processes.alive(remote, worker, recorded.engines[str(worker)])
        with lock:
            recorded.engines[str(worker)] = pids
        return len(pids)

    failures: HostFailures | None = None
    try:
        found = remote.forEachHost("check engines", _engine_hosts(recorded), survivors)
        expected = {str(h): n for h, n in found.items()}
    except HostFailures as error:
        failures, expected = error, {h: int(n) for h, n in error.outcomes.items()}
    pid = startController(remote, host, directory, where, settings.venv)
    recorded.controller = {"host": str(host), "pid": pid}
    saveProcesses(directory, recorded)
    client = waitForController(remote, host, pid, directory, where, timeout)
    try:
        hint = "Engines wait about two minutes for a silent controller; after that, stop and start the cluster"
        recorded.engineHosts = {str(k): v for k, v in waitForEngines(client, expected, timeout, hint).items()}
        saveProcesses(directory, recorded)
    finally:
        client.close()
    if failures is not None:
        raise failures
    return dict(sorted(Counter(recorded.engineHosts.values()).items()))


def stopCluster(
    profile: str,
    *,
    sshOptions: Sequence[str] | None = None,
    dryRun: bool = False,
    echo: Callable[[str], None] | None = None,
    ipython_dir: str | Path | None = None,
) -> dict[str, str]:
    """Stop the engines on every worker, then the controller, by their recorded PIDs; say what was done per host.

    A worker that cannot be reached keeps its record (so ``stop`` can be run
    again); the others are stopped anyway, and :class:`HostFailures` names it.
    """
    directory = requireProfile(profile, ipython_dir)
    settings = loadSettings(directory)
    remote = Remote(settings.sshOptions if sshOptions is None else sshOptions, dryRun=dryRun, echo=echo)
    recorded = loadProcesses(directory)
    report: dict[str, str] = {}
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
    if recorded.controller is not None:
        host = _host(str(recorded.controller["host"]))
        pid = int(str(recorded.controller["pid"]))
        stopped = processes.stop(remote, host, [pid])
        if dryRun:
            what = f"would stop the controller (PID {pid})"
        else:
            what = "stopped the controller" if stopped else "the controller had already exited"
        report[str(host)] = f"{report[str(host)]}, {what}" if str(host) in report else what
        recorded.controller = None
    if not dryRun:
        recorded.engineHosts = {} if not recorded.engines else recorded.engineHosts
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
    queued: int = 0
    running: int = 0
    finished: int = 0


def clusterStatus(profile: str, timeout: float = 5.0, ipython_dir: str | Path | None = None) -> ClusterStatus:
    """Ask the controller for its engines (per worker) and its load-balanced tasks (queued, running, finished)."""
    directory = requireProfile(profile, ipython_dir)
    recorded = loadProcesses(directory)
    started = {host: len(pids) for host, pids in recorded.engines.items()}
    if recorded.controller is None:
        return ClusterStatus("not started", False, started=started)
    host = _host(str(recorded.controller["host"]))
    pid = int(str(recorded.controller["pid"]))
    where = f"PID {pid} on {host}"
    remote = Remote(loadSettings(directory).sshOptions)
    try:
        running = processes.alive(remote, host, [pid])
    except ClusterSetupError as error:
        return ClusterStatus(f"{where}, cannot be checked: {error}", False, started=started)
    if not running:
        return ClusterStatus(
            f"{where}, exited: restart it with `epyclab cluster start {profile}`", False, started=started
        )
    try:
        client = connect(directory, timeout=timeout)
    except ClusterSetupError as error:
        logger.info("%s", error)
        return ClusterStatus(f"{where}, not answering", False, started=started)
    try:
        ids = client.ids
        engines = Counter(recorded.engineHosts.get(str(eid), "(unknown)") for eid in ids)
        records = client.db_query({"queue": "task"}, keys=["msg_id", "started", "completed"])
    finally:
        client.close()
    finished = sum(1 for r in records if r["completed"] is not None)
    running = sum(1 for r in records if r["completed"] is None and r["started"] is not None)
    return ClusterStatus(
        f"{where}, answering",
        True,
        engines=dict(sorted(engines.items())),
        started=started,
        queued=len(records) - finished - running,
        running=running,
        finished=finished,
    )


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

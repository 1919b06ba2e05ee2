"""``sync``: give every worker a venv with the wheelhouse installed, and the profile's files.

Per worker, over ssh and rsync:

1. probe: the Python the venv has (or would be made from) and the
   fingerprint of the wheelhouse last installed there;
2. if the fingerprint differs: create the venv if missing, copy the
   wheelhouse (rsync, so unchanged wheels are not sent again), install it with
   ``pip install --no-index --find-links`` (no package index needed), and
   store the new fingerprint;
3. copy the profile's engine config and engine connection file (and, for the
   controller host, the controller config and both connection files) with
   rsync, private (mode 0600 in a 0700 directory).

Each worker reports what changed, or "unchanged".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from epyclab.clustersetup.errors import ClusterSetupError
from epyclab.clustersetup.hosts import Host, parseHost, parseHosts
from epyclab.clustersetup.profile import CLIENT_FILE, CONTROLLER_CONFIG, ENGINE_CONFIG, ENGINE_FILE, requireProfile
from epyclab.clustersetup.ssh import Remote, shellPath
from epyclab.clustersetup.state import loadSettings, saveSettings
from epyclab.clustersetup.wheelhouse import Wheelhouse, buildWheelhouse, loadWheelhouse, requirementsText

__all__ = ["syncWorkers", "syncHost", "syncProfileFiles", "remoteProfileDir", "FINGERPRINT_FILE"]

#: In the worker's venv: the fingerprint of the wheelhouse installed there.
FINGERPRINT_FILE = ".epyclab-sync"
# rsync's --chmod: private files in a private directory, like the local security dir.
_PRIVATE = "--chmod=Du=rwx,Dgo=,Fu=rw,Fgo="


def syncWorkers(
    profile: str,
    workers: Sequence[str] = (),
    *,
    controllerHost: str | None = None,
    venv: str | None = None,
    python: str | None = None,
    requirements: str | Path | None = None,
    freeze: bool = False,
    wheelhouse: str | Path | None = None,
    rebuild: bool = True,
    remoteProfile: str | None = None,
    sshOptions: Sequence[str] | None = None,
    dryRun: bool = False,
    echo: Callable[[str], None] | None = None,
    ipython_dir: str | Path | None = None,
) -> dict[str, str]:
    """Bring every worker (and the controller host, if any) up to date; return what changed per host.

    Arguments left as None take the values the profile remembers from the
    last ``sync`` or ``start`` (workers, venv, ssh options...), and what is
    given is remembered for next time. ``wheelhouse`` is where the wheels are
    built (default: ``wheelhouse`` in the profile directory); with
    ``rebuild=False`` the wheels already there are used as they are.
    Raises :class:`~epyclab.clustersetup.errors.HostFailures` once every host is
    done if any failed.
    """
    directory = requireProfile(profile, ipython_dir)
    settings = loadSettings(directory)
    settings.workers = list(workers) or settings.workers
    settings.controllerHost = controllerHost or settings.controllerHost
    settings.venv = venv or settings.venv
    settings.python = python or settings.python
    settings.remoteProfile = remoteProfile or settings.remoteProfile
    settings.sshOptions = list(sshOptions) if sshOptions is not None else settings.sshOptions
    hosts = parseHosts(settings.workers)
    controller = parseHost(settings.controllerHost) if settings.controllerHost else None
    if controller is not None and controller not in hosts:
        hosts.append(controller)
    checkHosts(hosts)
    remote = Remote(settings.sshOptions, dryRun=dryRun, echo=echo)
    place = Path(wheelhouse) if wheelhouse is not None else directory / "wheelhouse"
    if rebuild:
        house = buildWheelhouse(place, requirementsText(requirements, freeze), remote)
    else:
        house = loadWheelhouse(place)
    where = remoteProfileDir(profile, settings.remoteProfile)
    if not dryRun:
        saveSettings(directory, settings)

    def step(host: Host) -> str:
        return syncHost(remote, host, house, directory, where, settings.venv, settings.python, host == controller)

    return {str(host): outcome for host, outcome in remote.forEachHost("sync", hosts, step).items()}


def remoteProfileDir(profile: str, remoteProfile: str | None = None) -> str:
    """The profile directory on workers: the one given, else ``~/.ipython/profile_<profile>``."""
    return remoteProfile or f"~/.ipython/profile_{profile}"


def syncHost(
    remote: Remote,
    host: Host,
    wheelhouse: Wheelhouse,
    profileDirectory: Path,
    remoteProfile: str,
    venv: str = "~/epyclab-venv",
    python: str = "python3",
    controller: bool = False,
) -> str:
    """Bring one worker up to date; return what changed there ("unchanged" if nothing).

    :param controller: the host runs the controller, so it gets the controller's files too
    """
    changes = []
    version, fingerprint, has_venv = _probe(remote, host, venv, python, remoteProfile)
    if not remote.dryRun and version != wheelhouse.python:
        which = f"its venv {venv}" if has_venv else f"`{python}`"
        fix = f"remove {venv} there, or pass --venv" if has_venv else f"pass --python with a Python {wheelhouse.python}"
        raise ClusterSetupError(
            f"{host}: {which} is Python {version}, but the wheelhouse was built for Python {wheelhouse.python} "
            f"(the Python running epyclab here): {fix}"
        )
    if remote.dryRun or fingerprint != wheelhouse.fingerprint:
        changes += _install(remote, host, wheelhouse, venv, python, has_venv)
    if syncProfileFiles(remote, host, profileDirectory, remoteProfile, controller):
        changes.append("profile files updated")
    return ", ".join(changes) if changes else "unchanged"


def syncProfileFiles(remote: Remote, host: Host, profileDirectory: Path, remoteProfile: str, controller: bool) -> bool:
    """Copy the profile files a worker (or the controller host) needs; True if any changed there."""
    names = [ENGINE_CONFIG, ENGINE_FILE]
    if controller:
        names += [CONTROLLER_CONFIG, CLIENT_FILE]
    # "dir/./name" with --relative keeps "name"'s directories (security/) on the remote side.
    sources = [f"{profileDirectory}/./{name}" for name in names if (profileDirectory / name).exists()]
    if not sources:
        return False
    output = remote.rsyncTo(
        host, sources, remoteProfile + "/", ["--relative", "--times", "--itemize-changes", _PRIVATE]
    )
    # --itemize-changes prints a line per file it sent; unchanged files print nothing.
    return any(line.startswith("<f") for line in output.splitlines())


def _probe(remote: Remote, host: Host, venv: str, python: str, remoteProfile: str) -> tuple[str, str, bool]:
    """Return (Python major.minor, installed fingerprint or '', venv exists) for ``host``."""
    v, p = shellPath(venv), shellPath(remoteProfile)
    script = "\n".join(
        [
            "set -e",
            "umask 077",
            f"mkdir -p {p}/security {p}/log && chmod 700 {p} {p}/security {p}/log",
            f"if [ -x {v}/bin/python ]; then PY={v}/bin/python; echo venv; else PY={_command(python)}; fi",
            '"$PY" -c \'import sys; print("python %d.%d" % sys.version_info[:2])\'',
            f"if [ -f {v}/{FINGERPRINT_FILE} ]; then echo fingerprint $(cat {v}/{FINGERPRINT_FILE}); fi",
        ]
    )
    version, fingerprint, has_venv = "", "", False
    for line in remote.ssh(host, script, timeout=60).splitlines():
        word, _, rest = line.partition(" ")
        if word == "python":
            version = rest.strip()
        elif word == "fingerprint":
            fingerprint = rest.strip()
        elif word == "venv":
            has_venv = True
    return version, fingerprint, has_venv


def _install(remote: Remote, host: Host, wheelhouse: Wheelhouse, venv: str, python: str, has_venv: bool) -> list[str]:
    """Create the venv if needed, copy the wheelhouse and install it; return what was done."""
    v = shellPath(venv)
    changes = []
    if not has_venv:
        remote.ssh(host, f'set -e; mkdir -p "$(dirname {v})"; {_command(python)} -m venv {v}', timeout=300)
        changes.append(f"created venv {venv}")
    # --delete: wheels of versions no longer wanted must not be picked by pip.
    remote.rsyncTo(host, [f"{wheelhouse.directory}/"], f"{venv}/wheelhouse/", ["--recursive", "--times", "--delete"])
    pip = f"{v}/bin/python -m pip --disable-pip-version-check --no-input install --no-index --find-links {v}/wheelhouse"
    script = "\n".join(
        [
            "set -e",
            # --upgrade: the worker gets the versions in the wheelhouse, not whatever satisfied an older pin.
            f"{pip} --upgrade -r {v}/wheelhouse/requirements.txt epyclab",
            # epyclab's version may be unchanged while its code changed: reinstall it alone.
            f"{pip} --no-deps --force-reinstall {v}/wheelhouse/epyclab-*.whl",
            f"echo {wheelhouse.fingerprint} > {v}/{FINGERPRINT_FILE}",
        ]
    )
    remote.ssh(host, script)
    changes.append(f"installed {len(wheelhouse.wheels)} wheels")
    return changes


def _command(python: str) -> str:
    """A Python command for the remote shell: a bare name is looked up on PATH; ``~/`` is the remote home."""
    return shellPath(python)


def checkHosts(hosts: Sequence[Host]) -> None:
    """Refuse an empty list of workers with the fix."""
    if not hosts:
        raise ClusterSetupError("no workers given: pass --workers HOST (repeatable) or --workers-file FILE")

"""The IPython parallel profile epyclab's clusters run from: create it, find it, and its files.

``initProfile`` writes epyclab's settings into the profile's
``ipcontroller_config.py`` and ``ipengine_config.py`` inside a marked block,
so running it again updates the block and keeps whatever the user wrote
outside it. The settings:

- the controller keeps its connection files (``reuse_files``) and reloads its
  engines' state (``restore_engines``), so after a restart the same files work
  and running engines register again;
- task results go to :class:`epyclab.clustersetup.taskstore.TaskStore` (SQLite in
  the profile directory), which survives restarts;
- heartbeats every 500 ms, so a lost host is noticed in seconds; engines wait
  for a silent controller for ``heartbeatMisses`` checks (about two minutes)
  before giving up, long enough for a restart;
- the controller listens on 127.0.0.1 unless another address is given.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

from IPython.core.profiledir import ProfileDir
from IPython.paths import get_ipython_dir

from epyclab.clustersetup.errors import ClusterSetupError
from epyclab.clustersetup.outside import STARTUP_COMMAND
from epyclab.log import logger
from epyclab.private import privateDirectory, privateTree, writePrivate

__all__ = [
    "CONTROLLER_CONFIG",
    "ENGINE_CONFIG",
    "ENGINE_FILE",
    "CLIENT_FILE",
    "CURVE_FILE",
    "ipythonDir",
    "profileDir",
    "requireProfile",
    "initProfile",
    "profileSettings",
]

CONTROLLER_CONFIG = "ipcontroller_config.py"
ENGINE_CONFIG = "ipengine_config.py"
#: Connection files, relative to the profile directory.
ENGINE_FILE = "security/ipcontroller-engine.json"
CLIENT_FILE = "security/ipcontroller-client.json"
#: The CurveZMQ key pair of a profile made with ``curve=True``.
CURVE_FILE = "security/epyclab-curve.json"

_BEGIN = "# >>> epyclab cluster init: this block is rewritten by `epyclab cluster init`; edit outside it >>>"
_END = "# <<< epyclab cluster init <<<"
_BLOCK = re.compile(re.escape(_BEGIN) + r".*?" + re.escape(_END) + r"\n?", re.S)
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def isLoopback(ip: str) -> bool:
    """True if a controller listening on ``ip`` is reached from its own machine only."""
    return ip in _LOOPBACK


def ipythonDir(ipython_dir: str | Path | None = None) -> Path:
    """The IPython directory: the argument, else ``$IPYTHONDIR``, else ``~/.ipython``."""
    return Path(ipython_dir) if ipython_dir is not None else Path(get_ipython_dir())


def profileDir(profile: str, ipython_dir: str | Path | None = None) -> Path:
    """Where the profile ``profile`` lives (it may not exist yet)."""
    if not _NAME.match(profile):
        raise ClusterSetupError(
            f"profile name {profile!r} is not usable as a directory name: use letters, digits, '.', '_' and '-'"
        )
    return ipythonDir(ipython_dir) / f"profile_{profile}"


def requireProfile(profile: str, ipython_dir: str | Path | None = None) -> Path:
    """The directory of an existing epyclab profile, or a :class:`ClusterSetupError` saying how to make it."""
    directory = profileDir(profile, ipython_dir)
    config = directory / CONTROLLER_CONFIG
    if not config.exists() or _BEGIN not in config.read_text():
        raise ClusterSetupError(
            f"no epyclab cluster profile {profile!r} in {directory.parent}: "
            f"create it with `epyclab cluster init {profile}`"
        )
    return directory


def profileSettings(directory: Path) -> dict[str, object]:
    """The settings ``initProfile`` last wrote into the profile (ip, ping, curve, ...)."""
    path = directory / "epyclab-profile.json"
    return json.loads(path.read_text()) if path.exists() else {}


def initProfile(
    profile: str,
    ip: str = "127.0.0.1",
    ipython_dir: str | Path | None = None,
    ping: int = 500,
    heartbeatMisses: int = 120,
    curve: bool = False,
) -> Path:
    """Create or update the IPython parallel profile ``profile`` for epyclab; return its directory.

    :param ip: the address the controller listens on; anything but loopback
        lets every machine that reaches it try to connect (see docs/cluster.md)
    :param ping: the heartbeat period in milliseconds
    :param heartbeatMisses: how many heartbeat checks an engine waits for a
        silent controller before it exits
    :param curve: encrypt and authenticate every connection with CurveZMQ
    """
    directory = profileDir(profile, ipython_dir)
    directory.parent.mkdir(parents=True, exist_ok=True)
    # Created private: between here and privateTree() below nothing in it may be readable by others.
    privateDirectory(directory)
    ProfileDir.create_profile_dir(str(directory))
    security = directory / "security"
    security.chmod(stat.S_IRWXU)
    if ip not in _LOOPBACK:
        logger.warning(
            "profile %s: the controller will listen on %s; engines and clients on that network can reach it. "
            "Only holders of the connection files (their HMAC key) can use it; add --curve to encrypt traffic too",
            profile,
            ip,
        )
    keys = _curve_keys(directory) if curve else None
    _drop_stale_connection_files(directory, ip, curve)

    controller = [
        "c.IPController.ip = " + repr(ip),
        "# keep the connection files and the engines' state over restarts",
        "c.IPController.reuse_files = True",
        "c.IPController.restore_engines = True",
        "# task results in SQLite (tasks.db here), kept over restarts",
        "c.IPController.db_class = 'epyclab.clustersetup.taskstore.TaskStore'",
        f"c.HeartMonitor.period = {int(ping)}",
    ]
    if keys is not None:
        controller += [
            "c.IPController.enable_curve = True",
            f"c.IPController.curve_publickey = {keys['public'].encode('ascii')!r}",
            f"c.IPController.curve_secretkey = {keys['secret'].encode('ascii')!r}",
        ]
    engine = [
        "# wait this many missed heartbeats (about a second each) for a restarting controller",
        f"c.IPEngine.max_heartbeat_misses = {int(heartbeatMisses)}",
        "# an engine ended by a signal (walltime, preemption, scancel) says so: see epyclab.clustersetup.outside",
        f"c.IPEngine.startup_command = {STARTUP_COMMAND!r}",
    ]
    _write_block(directory / CONTROLLER_CONFIG, controller)
    _write_block(directory / ENGINE_CONFIG, engine)
    settings = {"profile": profile, "ip": ip, "ping": int(ping), "curve": bool(curve)}
    writePrivate(directory / "epyclab-profile.json", json.dumps(settings, indent=2) + "\n")
    # Everything under the profile is the user's alone (IPython creates it world-readable).
    privateTree(directory)
    # Said once, by the caller (`epyclab cluster init` prints the path on stdout).
    logger.debug("profile %s ready in %s", profile, directory)
    return directory


def _write_block(path: Path, lines: list[str]) -> None:
    """Put ``lines`` in epyclab's block of the config file ``path``, keeping the rest of the file."""
    block = "\n".join([_BEGIN, *lines, _END]) + "\n"
    old = path.read_text() if path.exists() else "c = get_config()\n"
    new = _BLOCK.sub(lambda _: block, old) if _BEGIN in old else old.rstrip("\n") + "\n\n" + block
    # Private (0600) like everything in the profile; a config holding the CurveZMQ secret key must be.
    writePrivate(path, new)


def _curve_keys(directory: Path) -> dict[str, str]:
    """The profile's CurveZMQ key pair, made once so that connection files stay valid."""
    import zmq

    path = directory / CURVE_FILE
    if path.exists():
        return json.loads(path.read_text())
    if not zmq.has("curve"):
        raise ClusterSetupError(
            "this pyzmq/libzmq has no CurveZMQ support: install a pyzmq wheel, or init without --curve"
        )
    public, secret = zmq.curve_keypair()
    keys = {"public": public.decode("ascii"), "secret": secret.decode("ascii")}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(keys, file)
    return keys


def _drop_stale_connection_files(directory: Path, ip: str, curve: bool) -> None:
    """Remove connection files written for another address or security setting.

    The controller reuses its connection files, and their address and keys
    override the config; after a change, they must be written afresh.
    """
    engine_file = directory / ENGINE_FILE
    if not engine_file.exists():
        return
    info = json.loads(engine_file.read_text())
    if info.get("interface", "").split("://")[-1] == ip and bool(info.get("curve_serverkey")) == curve:
        return
    logger.warning(
        "profile %s: the controller's address or CurveZMQ setting changed; removing the old connection files. "
        "The next `epyclab cluster start` writes new ones and copies them to the workers",
        directory.name.removeprefix("profile_"),
    )
    for name in (ENGINE_FILE, CLIENT_FILE):
        (directory / name).unlink(missing_ok=True)

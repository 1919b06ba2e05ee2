"""The wheelhouse: every package a worker needs, built here so that workers need no package index.

``buildWheelhouse`` runs ``pip wheel`` for the requirements and for epyclab
itself (from its source tree when it is installed from one), and writes a
*fingerprint* of the result: a hash of the requirements and of the content of
every wheel. A worker whose venv carries the same fingerprint has nothing to
install, which is what makes ``sync`` idempotent.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import epyclab
from epyclab.clustersetup.errors import ClusterSetupError
from epyclab.clustersetup.ssh import Remote
from epyclab.log import logger

__all__ = ["Wheelhouse", "buildWheelhouse", "loadWheelhouse", "requirementsText", "epyclabSource"]

#: The requirements file ``sync`` installs when no other is given, if present in the current directory.
DEFAULT_REQUIREMENTS = "requirements-cluster.txt"
_MANIFEST = "epyclab-wheelhouse.json"
_REQUIREMENTS = "requirements.txt"


@dataclass(frozen=True)
class Wheelhouse:
    """A built wheelhouse: its directory, the Python it is for, and its fingerprint."""

    directory: Path
    python: str
    fingerprint: str
    wheels: tuple[str, ...]

    @property
    def requirements(self) -> Path:
        """The requirements file inside the wheelhouse (copied to workers with the wheels)."""
        return self.directory / _REQUIREMENTS


def epyclabSource() -> Path | None:
    """The source tree epyclab is installed from (editable installs), or None."""
    root = Path(epyclab.__file__).resolve().parent.parent
    setup = root / "setup.cfg"
    if setup.exists() and "name = epyclab" in setup.read_text():
        return root
    return None


def requirementsText(requirements: str | Path | None = None, freeze: bool = False) -> str:
    """The requirements to install on workers.

    ``freeze`` takes the packages of the running Python (``pip freeze``, without
    editable installs and epyclab itself, which is added separately); otherwise
    the file given, else ``requirements-cluster.txt`` if the current directory
    has one, else nothing beyond epyclab and its dependencies.
    """
    if freeze and requirements is not None:
        raise ClusterSetupError("give either --requirements FILE or --freeze, not both")
    if freeze:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise ClusterSetupError(f"`pip freeze` failed: {done.stderr.strip()}")
        lines = [line for line in done.stdout.splitlines() if not _is_epyclab(line)]
        return "\n".join(["# pip freeze of " + sys.executable, *lines]) + "\n"
    path = Path(requirements) if requirements is not None else Path(DEFAULT_REQUIREMENTS)
    if requirements is None and not path.exists():
        logger.info("no %s here: installing epyclab and its dependencies only", DEFAULT_REQUIREMENTS)
        return ""
    try:
        return path.read_text()
    except OSError as error:
        raise ClusterSetupError(f"cannot read the requirements file {path}: {error.strerror}") from error


def buildWheelhouse(directory: str | Path, requirements: str, remote: Remote | None = None) -> Wheelhouse:
    """Build wheels for ``requirements`` and epyclab into ``directory`` (emptied first); return it.

    The wheels are for this machine's Python and platform; workers need the
    same Python minor version (``sync`` checks).
    """
    remote = remote or Remote()
    directory = Path(directory)
    if not remote.dryRun:
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        (directory / _REQUIREMENTS).write_text(requirements)
    source = epyclabSource()
    argv = [sys.executable, "-m", "pip", "wheel", "--wheel-dir", str(directory), "-r", str(directory / _REQUIREMENTS)]
    if remote.dryRun:
        remote.run("local", [*argv, str(source) if source is not None else f"epyclab=={epyclab.__version__}"])
        return Wheelhouse(directory, _python_version(), "dry-run", ())
    with tempfile.TemporaryDirectory(prefix="epyclab-build-") as scratch:
        # Build from a copy: setuptools leaves a build/ directory in the tree it builds.
        target = _copy_source(source, Path(scratch)) if source is not None else f"epyclab=={epyclab.__version__}"
        remote.run("local", [*argv, target], cwd=scratch)
    return _finish(directory)


def loadWheelhouse(directory: str | Path) -> Wheelhouse:
    """A wheelhouse built before (by :func:`buildWheelhouse`), to sync again without rebuilding."""
    directory = Path(directory)
    manifest = directory / _MANIFEST
    if not manifest.exists():
        raise ClusterSetupError(
            f"{directory} is not a wheelhouse built by epyclab: build it with `epyclab cluster sync`"
        )
    data = json.loads(manifest.read_text())
    return Wheelhouse(directory, data["python"], data["fingerprint"], tuple(data["wheels"]))


def _copy_source(source: Path, scratch: Path) -> str:
    """Copy what building epyclab needs (metadata files and the package) into ``scratch``; return the copy."""
    copy = scratch / "epyclab-source"
    copy.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "setup.py", "README.md", "LICENSE"):
        if (source / name).exists():
            shutil.copy2(source / name, copy / name)
    shutil.copytree(source / "epyclab", copy / "epyclab", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return str(copy)


def _finish(directory: Path) -> Wheelhouse:
    wheels = sorted(p.name for p in directory.glob("*.whl"))
    if not any(name.startswith("epyclab-") for name in wheels):
        raise ClusterSetupError(f"pip built no epyclab wheel in {directory}")
    digest = hashlib.sha256()
    digest.update((directory / _REQUIREMENTS).read_bytes())
    for name in wheels:
        digest.update(name.encode())
        digest.update(_content_hash(directory / name))
    house = Wheelhouse(directory, _python_version(), digest.hexdigest()[:32], tuple(wheels))
    manifest = {"python": house.python, "fingerprint": house.fingerprint, "wheels": list(wheels)}
    (directory / _MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    logger.info("wheelhouse %s: %d wheels for Python %s", directory, len(wheels), house.python)
    return house


def _content_hash(wheel: Path) -> bytes:
    """A hash of what a wheel installs, not of the zip: a rebuilt, unchanged epyclab gives the same.

    The wheel's RECORD lists every file with its hash; zip timestamps differ
    between builds, RECORD does not.
    """
    with zipfile.ZipFile(wheel) as archive:
        records = sorted(n for n in archive.namelist() if n.endswith(".dist-info/RECORD"))
        if records:
            return hashlib.sha256(archive.read(records[0])).digest()
    return hashlib.sha256(wheel.read_bytes()).digest()


def _python_version() -> str:
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def _is_epyclab(line: str) -> bool:
    name = line.split("==")[0].split(" @ ")[0].strip().lower()
    return name == "epyclab"

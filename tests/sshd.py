"""A private sshd on 127.0.0.1 and local users to log into: real workers for the cluster tests.

:func:`start_sshd` (run as root) makes a host key and a client key in a
temporary directory, adds users with unique names (``useradd -m``; their
password set to ``*`` so that sshd, without PAM, does not see them as locked),
puts the client key in their ``authorized_keys``, starts ``sshd -D`` on a
free high port with its own config (key authentication only), and writes an
ssh config with one ``Host`` alias per user. :meth:`SshWorkers.close` stops
sshd by its PID, and removes the users (``userdel -r``) after checking that
none of their processes is left.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SshWorkers", "start_sshd", "why_not", "free_port", "user_processes"]

SSHD = "/usr/sbin/sshd"


def why_not() -> str | None:
    """Why real-ssh tests cannot run here (None if they can)."""
    if os.geteuid() != 0:
        return "needs root to add users and run sshd (CI runs as root)"
    for tool in (SSHD, "ssh", "ssh-keygen", "rsync", "useradd", "userdel", "usermod", "setsid"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (.ci/run installs openssh-server, openssh-client and rsync)"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def user_processes(user: str) -> list[str]:
    """The processes (PID and command line) that ``user`` runs."""
    done = subprocess.run(["ps", "-u", user, "-o", "pid=,args="], capture_output=True, text=True, check=False)
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


@dataclass
class SshWorkers:
    """The running sshd and its users: ``aliases[i]`` logs in as ``users[i]`` with ``ssh -F config``."""

    directory: Path
    port: int
    config: Path
    users: list[str]
    aliases: list[str]
    process: subprocess.Popen[bytes] | None = None
    removed: list[str] = field(default_factory=list)

    @property
    def ssh_option(self) -> str:
        """The value to pass to ``--ssh-option`` so ssh uses this config."""
        return f"-F {self.config}"

    def home(self, user: str) -> Path:
        """The home directory of one of the users."""
        return Path(os.path.expanduser(f"~{user}"))

    def close(self) -> list[str]:
        """Stop sshd and remove the users; return the processes of theirs that were left (then killed)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        leftovers: list[str] = []
        for user in self.users:
            if user in self.removed:
                continue
            # sshd's per-session processes may take a moment to go after sshd itself.
            found = _wait_no_processes(user, 5.0)
            if found:
                leftovers += [f"{user}: {line}" for line in found]
                for line in found:
                    try:
                        os.kill(int(line.split()[0]), 9)
                    except ProcessLookupError:
                        pass
                # userdel refuses a user who still runs something.
                still = _wait_no_processes(user, 10.0)
                leftovers += [f"{user}: {line} (survived SIGKILL)" for line in still]
            done = subprocess.run(["userdel", "-r", user], capture_output=True, text=True, check=False)
            # userdel -r warns (status 12) when the user has no mail spool; the user is gone anyway.
            if done.returncode not in (0, 12):
                leftovers.append(f"{user}: userdel -r failed: {done.stderr.strip()}")
            self.removed.append(user)
        return leftovers


def start_sshd(directory: Path, count: int = 2) -> SshWorkers:
    """Start an sshd on 127.0.0.1 with ``count`` fresh users (see the module docstring)."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    host_key, client_key = directory / "host_key", directory / "id_test"
    for key in (host_key, client_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    tag = f"{os.getpid() % 100000}{int(time.time()) % 1000}"
    users = [f"ecl{tag}{chr(ord('a') + i)}" for i in range(count)]
    aliases = [f"worker{i + 1}" for i in range(count)]
    port = free_port()
    workers = SshWorkers(directory, port, directory / "ssh_config", users, aliases)
    try:
        public = (client_key.with_suffix(".pub")).read_text()
        for user in users:
            subprocess.run(["useradd", "-m", "-s", "/bin/sh", user], check=True, capture_output=True)
            # Without PAM, sshd refuses accounts whose password is locked ('!'); '*' is "no password" and not locked.
            subprocess.run(["usermod", "-p", "*", user], check=True, capture_output=True)
            ssh_dir = workers.home(user) / ".ssh"
            ssh_dir.mkdir(mode=0o700, exist_ok=True)
            (ssh_dir / "authorized_keys").write_text(public)
            (ssh_dir / "authorized_keys").chmod(0o600)
            shutil.chown(ssh_dir, user, user)
            shutil.chown(ssh_dir / "authorized_keys", user, user)
        sshd_config = directory / "sshd_config"
        sshd_config.write_text(
            "\n".join(
                [
                    f"Port {port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {host_key}",
                    f"PidFile {directory / 'sshd.pid'}",
                    "AuthorizedKeysFile .ssh/authorized_keys",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "PermitRootLogin no",
                    f"AllowUsers {' '.join(users)}",
                    # sync and start open several connections per worker at once.
                    "MaxStartups 100:30:200",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )
        workers.config.write_text(
            "".join(
                f"Host {alias}\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n"
                f"  IdentityFile {client_key}\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n"
                "  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
                for alias, user in zip(aliases, users)
            )
        )
        # Debian's sshd insists on its privilege separation directory. It is
        # left in place afterwards: another test run's sshd may be using it.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        workers.process = subprocess.Popen([SSHD, "-D", "-f", str(sshd_config), "-E", str(directory / "sshd.log")])
        _wait_listening(port, workers.process, directory / "sshd.log")
    except BaseException:
        workers.close()
        raise
    return workers


def _wait_no_processes(user: str, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        found = user_processes(user)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"sshd exited with status {process.returncode}: {log.read_text() if log.exists() else ''}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd did not listen on 127.0.0.1:{port} within 10 s")

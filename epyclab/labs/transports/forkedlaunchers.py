"""ipyparallel launchers that start the local cluster's controller and engines from its fork server.

The local cluster (:class:`~epyclab.labs.transports.localcluster.LocalCluster`)
names these classes as its ``controller_launcher_class`` and
``engine_launcher_class``: ipyparallel's own local launchers, whose ``start``
asks the cluster's fork server (:mod:`epyclab.labs.transports.forkserver`) for
the process instead of running the command. Everything else (the engines'
arguments and environment, the output file, stopping by signal, waiting for
the end) is ipyparallel's. Without a running server for the cluster, or when
it cannot fork, ``start`` starts the plain command, as ipyparallel does.

Imported where a cluster is started (it imports ipyparallel).
"""

from __future__ import annotations

import os

from ipyparallel.cluster.launcher import (
    LocalControllerLauncher,
    LocalEngineLauncher,
    LocalEngineSetLauncher,
    ProcessStateError,
)

from epyclab.labs.transports.forkserver import ForkServerError, server_for
from epyclab.log import logger

__all__ = ["ForkedControllerLauncher", "ForkedEngineLauncher", "ForkedEngineSetLauncher"]

#: Seconds a launcher waits for the fork server's answer (it may still be importing, on a busy machine).
AnswerSeconds = 30.0


class _Forked:
    """The ``start`` of a launcher whose process is forked by its cluster's fork server."""

    #: The role the fork server runs (see forkserver._MAINS).
    role = ""

    def _command(self) -> list[str]:
        """The plain command the process would be run with (its arguments are what the fork server passes on)."""
        raise NotImplementedError

    def start(self) -> None:
        server = server_for(self.cluster_id)  # type: ignore[attr-defined]
        if server is None:
            super().start()  # type: ignore[misc]
            return
        if self.state != "before":  # type: ignore[attr-defined]
            raise ProcessStateError(f"The process was already started and has state: {self.state}")  # type: ignore[attr-defined]
        args = list(self.args)  # type: ignore[attr-defined]
        command = self._command()
        argv = args[len(command):] if args[:len(command)] == command else args
        env = os.environ.copy()
        env.update(self.get_env())  # type: ignore[attr-defined]
        try:
            process = server.spawn(self.role, argv, env, cwd=os.path.abspath(self.work_dir),  # type: ignore[attr-defined]
                                   output=self.output_file, timeout=AnswerSeconds)  # type: ignore[attr-defined]
        except ForkServerError as exc:
            logger.warning("starting a plain %s process: %s", self.role, exc)
            super().start()  # type: ignore[misc]
            return
        self.pid = process.pid
        self.process = process
        self.notify_start(process.pid)  # type: ignore[attr-defined]
        self._start_waiting()  # type: ignore[attr-defined]


class ForkedControllerLauncher(_Forked, LocalControllerLauncher):
    """ipyparallel's local controller launcher, forking the controller from the cluster's fork server."""

    # The name ipyparallel writes in its cluster file, which a later start imports to stop an orphaned cluster:
    # a dotted path (its default for a class of no entry point, "module:Class", cannot be imported back).
    entrypoint_name = f"{__name__}.ForkedControllerLauncher"
    role = "controller"

    def _command(self) -> list[str]:
        return list(self.controller_cmd)


class ForkedEngineLauncher(_Forked, LocalEngineLauncher):
    """ipyparallel's local engine launcher, forking the engine from the cluster's fork server."""

    role = "engine"

    def _command(self) -> list[str]:
        return list(self.engine_cmd)


class ForkedEngineSetLauncher(LocalEngineSetLauncher):
    """ipyparallel's local engine-set launcher, whose engines are forked from the cluster's fork server."""

    entrypoint_name = f"{__name__}.ForkedEngineSetLauncher"  # (see ForkedControllerLauncher's)

    launcher_class = ForkedEngineLauncher

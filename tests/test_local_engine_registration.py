"""A local engine whose registration the controller answers late (a loaded machine) waits, and is not 'dead'.

ipyparallel's engine gives up when the controller has not answered its
registration within ``IPEngine.timeout`` (5 s by default) and exits. On a
machine loaded far beyond its cores the hub can take that long, and the warm
cluster's health check then (rightly) saw a dead engine and started another
(``1 engine(s) of local cluster ... died``) in an ordinary sweep. The local
cluster's engines now wait as long as the cluster's own start timeout. The
late answer is made real here: the controller's hub process is stopped with
SIGSTOP for longer than ipyparallel's default while an engine registers.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from epyclab.labs.transports.localcluster import LocalCluster, process_alive

# Longer than ipyparallel's default registration timeout (5 s) plus the second it sleeps before exiting.
LATE_SECONDS = 8.0


def _wait_until(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.timeout(240)
def test_an_engine_answered_late_by_the_controller_registers_and_is_not_counted_dead(tmp_path: Path) -> None:
    local = LocalCluster(1, str(tmp_path / "profile"), timeout=60)
    client = local.start()
    try:
        assert local.cluster is not None and local.cluster.controller is not None
        hub = psutil.Process(local.cluster.controller.pid)
        (first_id,) = client.ids
        first = psutil.Process(client[first_id].apply_sync(os.getpid))
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        hub.send_signal(signal.SIGSTOP)
        try:
            # The replacement starts while nobody answers its registration.
            assert local.replace_dead_engines() == 1
            time.sleep(LATE_SECONDS)
            assert local.replace_dead_engines() == 0, "the engine gave up waiting for the controller"
        finally:
            hub.send_signal(signal.SIGCONT)
        _wait_until(lambda: any(i != first_id for i in client.ids), 60, "the new engine to register")
        (new_id,) = [i for i in client.ids if i != first_id]
        new = psutil.Process(client[new_id].apply_sync(os.getpid))
        assert new.is_running() and new.status() != psutil.STATUS_ZOMBIE
        assert local.replace_dead_engines() == 0
        assert local.replaced == 1
    finally:
        local.stop()
    assert not [p for p in local.processes() if process_alive(p)]

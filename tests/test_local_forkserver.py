"""The local cluster's fork server: engines and controller forked from one clean process, known and stopped as before.

What a user relies on: the cluster runs points, a dead engine's end is told
right (how it ended decides what the death costs the point, see
``epyclab.labs.transports.deaths``), nothing is left running after a stop,
nothing is written through a symlink, and without a usable fork server the
cluster starts plain processes and works the same.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import ipyparallel as ipp
import psutil
import pytest
from conftest_parallel import still_running
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from waiting import wait_until

from epyclab.labs.transports.cores import worker_thread_env
from epyclab.labs.transports.forkserver import CONTROLLER_NAME, ENGINE_NAME, ForkServer, ForkServerError
from epyclab.labs.transports.localcluster import LocalCluster


@ipp.interactive  # sent by value: the engines cannot import this test module
def _about_me() -> tuple[int, int, bool]:
    import os
    import sys

    return os.getpid(), os.getppid(), "numpy" in sys.modules


@ipp.interactive
def _exit_with(code: int) -> None:
    import os

    if code < 0:
        os.kill(os.getpid(), -code)  # a crash (SIGSEGV, SIGABRT) or a signal the point sends itself
    os._exit(code)  # (never reached after a signal)


def _server_of(local: LocalCluster) -> psutil.Process:
    (parent,) = {psutil.Process(pid).ppid() for pid in local.engine_pids()}
    return psutil.Process(parent)


def test_the_controller_and_the_engines_are_forked_from_one_clean_process_stopped_with_the_cluster(
    tmp_path: Path,
) -> None:
    local = LocalCluster(2, str(tmp_path / "profile"))
    client = local.start()
    procs = local.processes()
    try:
        wait_until(lambda: len(client.ids) == 2, timeout=60, what="both engines to register")
        server = _server_of(local)
        assert server.pid != os.getpid() and "epyclab.labs.transports.forkserver" in " ".join(server.cmdline())
        assert server.pid in local.pids()  # recorded: stopped by the cluster, or by the reaper if we die
        children = {p.pid: p.name() for p in server.children()}
        assert sorted(children.values()) == sorted([CONTROLLER_NAME, ENGINE_NAME, ENGINE_NAME])
        about = client[:].apply_sync(_about_me)
        assert {pid for pid, _, _ in about} == set(local.engine_pids())
        assert {ppid for _, ppid, _ in about} == {server.pid}
        # What an engine needs to run its first point was imported once, by the server, before the fork.
        assert all(numpy for _, _, numpy in about)
    finally:
        local.stop()
    assert still_running(procs) == []
    assert not server.is_running()


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(end=st.one_of(
    st.integers(1, 255),  # an exit code (os._exit, sys.exit from C)
    # a crash, or a signal the point sends itself (the engine handles SIGTERM and SIGINT: they do not end it)
    st.sampled_from([-int(signal.SIGSEGV), -int(signal.SIGABRT), -int(signal.SIGKILL), -int(signal.SIGBUS)]),
))
def test_how_a_forked_engine_ended_is_what_the_cluster_tells(tmp_path_factory: pytest.TempPathFactory,
                                                              end: int) -> None:
    local = LocalCluster(1, str(tmp_path_factory.mktemp("profile")))
    client = local.start()
    procs = local.processes()
    try:
        wait_until(lambda: client.ids, timeout=60, what="the engine to register")
        (engine,) = local.engine_pids()
        assert psutil.Process(engine).name() == ENGINE_NAME
        client[:].apply_async(_exit_with, end)
        wait_until(lambda: local.engine_exit_code(engine) is not None, timeout=30, what="the engine's end")
        assert local.engine_exit_code(engine) == end
    finally:
        local.stop()
    assert still_running(procs) == []


def test_without_its_fork_server_the_cluster_replaces_a_dead_engine_by_a_plain_process(tmp_path: Path) -> None:
    local = LocalCluster(1, str(tmp_path / "profile"))
    client = local.start()
    procs = local.processes()
    try:
        wait_until(lambda: client.ids, timeout=60, what="the engine to register")
        (engine,) = local.engine_pids()
        server = _server_of(local)
        server.kill()
        server.wait(10)
        os.kill(engine, signal.SIGKILL)
        wait_until(lambda: not client.ids, timeout=60, what="the hub to notice the engine's death")
        assert local.replace_dead_engines() == 1
        wait_until(lambda: client.ids, timeout=60, what="the new engine to register")
        (new,) = set(local.engine_pids()) - {engine}
        process = psutil.Process(new)
        assert process.ppid() == os.getpid() and "ipyparallel.engine" in " ".join(process.cmdline())
        assert client[:].apply_sync(_about_me)[0][0] == new
        procs = procs + local.processes()
    finally:
        local.stop()
    assert still_running(procs) == []


def test_a_fork_server_with_threads_forks_nothing_and_the_cluster_starts_plain_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The user asked for two BLAS threads per worker: numpy's OpenBLAS starts a thread in the server as it
    # imports, and a process with threads is not forked (a thread could hold a lock the child waits on).
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    local = LocalCluster(1, str(tmp_path / "profile"))
    client = local.start()
    procs = local.processes()
    try:
        wait_until(lambda: client.ids, timeout=60, what="the engine to register")
        (engine,) = local.engine_pids()
        assert psutil.Process(engine).ppid() == os.getpid()
        assert client[:].apply_sync(_about_me)[0][0] == engine
    finally:
        local.stop()
    assert still_running(procs) == []


def _server(tmp_path: Path) -> ForkServer:
    # One thread per native pool, as the local cluster starts it (else numpy's OpenBLAS starts a thread in
    # the server, which then forks nothing).
    return ForkServer({**os.environ, **worker_thread_env(1, 1)}, stderr=str(tmp_path / "server.log"))


def test_a_forked_process_gets_its_arguments_and_output_file_and_its_end_is_told(tmp_path: Path) -> None:
    server = _server(tmp_path)
    try:
        out = tmp_path / "engine.log"
        process = server.spawn("engine", ["--help"], dict(os.environ), cwd=str(tmp_path), output=str(out),
                               timeout=60)
        assert process.wait(60) == 0
        assert "IPEngine" in out.read_text()
        process = server.spawn("engine", ["--no-such-option=1", "--IPEngine.url_file=/nonexistent"],
                               dict(os.environ), cwd=str(tmp_path), output=str(out), timeout=60)
        assert process.wait(60) not in (None, 0)
        with pytest.raises(ForkServerError, match="unknown role"):
            server.spawn("shell", [], dict(os.environ), cwd=str(tmp_path), output=str(out), timeout=60)
    finally:
        server.close()
    assert not psutil.pid_exists(server.pid) or psutil.Process(server.pid).status() == psutil.STATUS_ZOMBIE


def test_a_forked_process_never_writes_its_output_through_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("the user's file\n")
    link = tmp_path / "engine.log"
    link.symlink_to(victim)
    server = _server(tmp_path)
    try:
        process = server.spawn("engine", ["--help"], dict(os.environ), cwd=str(tmp_path), output=str(link),
                               timeout=60)
        assert process.wait(60) == 1
    finally:
        server.close()
    assert victim.read_text() == "the user's file\n"


def test_the_server_exits_when_its_owner_closes_its_pipe_and_its_children_run_on(tmp_path: Path) -> None:
    server = _server(tmp_path)
    child = server.spawn("engine", ["--IPEngine.wait_for_url_file=60", f"--IPEngine.url_file={tmp_path}/none.json"],
                         dict(os.environ), cwd=str(tmp_path), output=str(tmp_path / "engine.log"), timeout=60)
    try:
        assert child.is_running()
        server.close()
        assert child.is_running()  # the owner stops its children by PID (LocalCluster's records)
        child.send_signal(signal.SIGTERM)
        assert child.wait(30) is None  # the server is gone: the end is seen by the PID alone
    finally:
        if psutil.pid_exists(child.pid) and child.is_running():
            os.kill(child.pid, signal.SIGKILL)
    assert not child.is_running()

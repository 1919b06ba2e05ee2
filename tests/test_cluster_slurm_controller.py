"""The controller in a batch job of its own (``start --controller slurm``), on the real one-node Slurm of
tests/slurm.py: controller and engines in two jobs, status showing both, a ClusterLab sweep submitted in one
process and collected in another, the controller's job ending and ``start`` submitting a new one that the
running engines register with (after a cancel, after a SIGKILL, and with both jobs gone), ``stop`` cancelling
both, and then no job and no process left; a failing job, a job held in the queue and a node clients cannot
reach, each refused with the job named. The PBS controller's job script is checked as rendered (PBS cannot run
here), and the scripts' options for any values (hypothesis)."""

from __future__ import annotations

import re
import stat
import time
from pathlib import Path

import psutil
import pytest
import slurm as slurm_fixture
from hypothesis import given
from hypothesis import strategies as st
from slurm import slurm_daemons
from test_cluster_local import cluster
from test_cluster_slurm import collect_here, engine_pids, submit_in_another_process

from epyclab.clustersetup.launchers import BatchOptions, _configure_controller
from epyclab.clustersetup.profile import CLIENT_FILE, ENGINE_FILE
from epyclab.clustersetup.state import loadProcesses

__all__ = ["slurm_daemons"]  # the fixture (slurm), shared with test_cluster_slurm.py; ipdir comes from conftest


def profile_processes(profile: Path) -> list[psutil.Process]:
    """Every process whose command line names the profile (controller, engines, srun)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(str(profile) in part for part in proc.info["cmdline"] or ()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def wait_for(condition, timeout: float = 60.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.3)  # polling squeue / the process table: neither offers a wait
    return True


def test_controller_and_engines_in_two_slurm_jobs(ipdir: Path, tmp_path: Path, slurm: slurm_fixture.Slurm,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in slurm.env.items():
        monkeypatch.setenv(name, value)
    assert cluster(ipdir, "-q", "init", "slc").exit_code == 0
    profile = ipdir / "profile_slc"
    started = cluster(ipdir, "-q", "start", "slc", "--controller", "slurm", "--engines", "slurm", "-n", "2",
                      "--walltime", "00:30:00", "--directive", "--job-name=epyclab-ctl", "--timeout", "120")
    assert started.exit_code == 0, started.output + slurm.log("slurmctld")[-2000:]
    assert "  slurm: 2" in started.stdout
    recorded = loadProcesses(profile)
    controller = recorded.controller
    assert controller is not None and controller["class"] == "SlurmControllerLauncher"
    (engines_job,) = recorded.launchers
    first, engines = controller["launcher"]["job_id"], engines_job["launcher"]["job_id"]
    assert sorted(slurm.jobs()) == sorted([first, engines])
    assert controller["node"] == slurm.node
    script = (profile / "batch" / "slurm_controller.sbatch").read_text()
    assert "#SBATCH --time=00:30:00" in script and "#SBATCH --job-name=epyclab-ctl" in script
    assert f"ipyparallel.controller --profile-dir={profile}" in script
    # The controller, in its job, wrote the connection files into the profile, private; its log is the job's output.
    for name in (CLIENT_FILE, ENGINE_FILE):
        assert stat.S_IMODE((profile / name).stat().st_mode) == 0o600
    output = Path(controller["output"])
    assert output == profile / "log" / f"epyclab-controller-slurm-{first}.log" and output.exists()
    assert stat.S_IMODE(output.stat().st_mode) & 0o077 == 0
    pids = engine_pids(profile)
    assert len(pids) == 2

    # Status from a later shell: both jobs, and the engines registered.
    status = cluster(ipdir, "status", "slc")
    assert status.exit_code == 0, status.output
    assert f"controller: slurm job {first} (controller) on node {slurm.node}, answering" in status.stdout
    assert f"slurm job {first} (controller): RUNNING" in status.stdout
    assert f"slurm job {engines}: RUNNING" in status.stdout
    assert "  slurm: 2 / 2" in status.stdout

    notebook = tmp_path / "sweep.h5"
    submit_in_another_process(ipdir, "slc", notebook)

    # The controller's job ends (as at its time limit); status says so, and `start` submits a new job, pinned
    # to the node the engines know, which the engines of the other job, still running, register with.
    slurm.run("scancel", first)
    assert wait_for(lambda: first not in slurm.jobs())
    ended = cluster(ipdir, "status", "slc")
    assert ended.exit_code == 1 and f"slurm job {first} (controller) on node {slurm.node}, ended" in ended.stdout
    dry = cluster(ipdir, "start", "slc", "--dry-run")  # what start would submit, and nothing submitted
    assert dry.exit_code == 0 and f"sbatch --nodelist={slurm.node} " in dry.stdout, dry.output
    assert slurm.jobs() == [engines]
    again = cluster(ipdir, "-q", "start", "slc", "--timeout", "120")
    assert again.exit_code == 0, again.output
    assert "  slurm: 2" in again.stdout
    second = loadProcesses(profile).controller["launcher"]["job_id"]
    assert second != first and sorted(slurm.jobs()) == sorted([second, engines])
    assert slurm.run("squeue", "-h", "-j", second, "-o", "%n").strip() == slurm.node  # the node it asked for
    assert engine_pids(profile) == pids

    assert set(collect_here(ipdir, "slc", notebook)) <= set(pids)

    stopped = cluster(ipdir, "-q", "stop", "slc")
    assert stopped.exit_code == 0, stopped.output
    assert f"slurm job {engines}: cancelled job {engines}" in stopped.stdout
    assert f"slurm job {second} (controller): cancelled job {second}" in stopped.stdout
    assert wait_for(lambda: slurm.jobs() == [])
    assert wait_for(lambda: profile_processes(profile) == []), profile_processes(profile)
    assert loadProcesses(profile).empty()


def test_a_controller_job_that_fails_names_the_job_and_its_output(
    ipdir: Path, tmp_path: Path, slurm: slurm_fixture.Slurm, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in slurm.env.items():
        monkeypatch.setenv(name, value)
    assert cluster(ipdir, "-q", "init", "broken").exit_code == 0
    # A job script whose node lacks the user's Python, as when a module is not loaded.
    template = tmp_path / "controller.sbatch"
    template.write_text("#!/bin/sh\n#SBATCH --ntasks=1\n#SBATCH --output={output_file}\n"
                        "echo 'python3: module not loaded on this node' >&2\nexit 3\n")
    result = cluster(ipdir, "-q", "start", "broken", "--controller", "slurm", "--engines", "slurm", "-n", "2",
                     "--controller-template", str(template), "--timeout", "60")
    assert result.exit_code == 1
    found = re.search(r"the controller's slurm job (\d+) \(controller\) ended", result.output)
    assert found, result.output
    output = ipdir / "profile_broken" / "log" / f"epyclab-controller-slurm-{found.group(1)}.log"
    assert str(output) in result.output
    assert "python3: module not loaded on this node" in result.output  # the end of its output, shown
    assert "run `epyclab cluster start broken` again" in result.output
    # Nothing was left queued or recorded, and no engine job was submitted for a controller that never ran.
    assert slurm.jobs() == []
    assert loadProcesses(ipdir / "profile_broken").empty()
    assert not list((ipdir / "profile_broken" / "batch").glob("slurm_engine*"))


def test_the_pbs_controller_job_carries_the_options_set(ipdir: Path) -> None:
    """The job scripts ipyparallel's PBS launchers write for `start --controller pbs` (a dry run, no PBS here)."""
    assert cluster(ipdir, "-q", "init", "pbsc").exit_code == 0
    profile = ipdir / "profile_pbsc"
    result = cluster(ipdir, "start", "pbsc", "--controller", "pbs", "--engines", "pbs", "-n", "8",
                     "--engines-per-node", "4", "--queue", "short", "--account", "proj7", "--walltime", "02:00:00",
                     "--directive", "-l mem=4gb", "--directive", "#PBS -m abe", "--dry-run")
    assert result.exit_code == 0, result.output
    controller, engines = result.stdout.split("qsub ")[1:]
    assert controller.startswith(str(profile / "batch" / "pbs_controller"))
    for line in ("#PBS -q short", "#PBS -A proj7", "#PBS -l walltime=02:00:00", "#PBS -l mem=4gb", "#PBS -m abe",
                 f"#PBS -o {profile / 'log' / 'epyclab-controller-pbs.log'}",
                 f"ipyparallel.controller --profile-dir={profile}"):
        assert line in controller, controller
    assert "ppn" not in controller  # engines per node are the engines' job's, not the controller's
    assert engines.startswith(str(profile / "batch" / "pbs_engines"))
    assert "#PBS -l nodes=2:ppn=4" in engines and "#PBS -q short" in engines
    assert loadProcesses(profile).empty()  # a dry run starts nothing

    # A restarted controller is pinned to the node the running engines know; a template of the user's is used.
    template = profile / "mine.pbs"
    template.write_text("#!/bin/sh\n#PBS -l select=1:ncpus=1\n#PBS -q {queue}\n{program_and_args}\n")
    own = _configure_controller("pbs", profile, BatchOptions(queue="long", template=str(template)), node="n17")
    own.write_batch_script(1)
    script = Path(own.batch_file).read_text()
    assert "#PBS -l select=1:ncpus=1" in script and "#PBS -q long" in script
    assert f"ipyparallel.controller --profile-dir={profile}" in script
    assert own.args == ["qsub", "-l", "nodes=n17", own.batch_file]


def test_a_controller_in_a_job_needs_engines_in_jobs(ipdir: Path) -> None:
    assert cluster(ipdir, "-q", "init", "mix").exit_code == 0
    result = cluster(ipdir, "-q", "start", "mix", "--controller", "slurm", "--engines", "local", "-n", "2")
    assert result.exit_code == 1
    assert "--controller slurm runs the controller in a batch job" in result.output
    assert "--engines slurm" in result.output
    lone = cluster(ipdir, "-q", "start", "mix", "--local", "--controller-template", __file__)
    assert lone.exit_code == 2 and "--controller-template needs --controller slurm or pbs" in lone.output
    assert loadProcesses(ipdir / "profile_mix").empty()


def test_both_jobs_ended_start_submits_both_afresh(ipdir: Path, tmp_path: Path, slurm: slurm_fixture.Slurm,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Controller and engines at their time limit, the user back later: `start` submits both jobs again, with
    new connection files, and the sweep submitted before is collected."""
    for name, value in slurm.env.items():
        monkeypatch.setenv(name, value)
    assert cluster(ipdir, "-q", "init", "both").exit_code == 0
    profile = ipdir / "profile_both"
    started = cluster(ipdir, "-q", "start", "both", "--controller", "slurm", "--engines", "slurm", "-n", "2",
                      "--timeout", "120")
    assert started.exit_code == 0, started.output
    recorded = loadProcesses(profile)
    old = {recorded.controller["launcher"]["job_id"], recorded.launchers[0]["launcher"]["job_id"]}
    key = (profile / CLIENT_FILE).read_text()
    notebook = tmp_path / "sweep.h5"
    submit_in_another_process(ipdir, "both", notebook)

    slurm.run("scancel", *old)
    assert wait_for(lambda: slurm.jobs() == [])
    again = cluster(ipdir, "-q", "start", "both", "--timeout", "120")
    assert again.exit_code == 0, again.output
    assert "  slurm: 2" in again.stdout
    recorded = loadProcesses(profile)
    new = {recorded.controller["launcher"]["job_id"], recorded.launchers[0]["launcher"]["job_id"]}
    assert sorted(slurm.jobs()) == sorted(new) and not new & old
    assert (profile / CLIENT_FILE).read_text() != key  # a fresh controller, not pinned to the old node
    assert slurm.run("squeue", "-h", "-j", recorded.controller["launcher"]["job_id"], "-o", "%n").strip() == ""
    collect_here(ipdir, "both", notebook)

    assert cluster(ipdir, "-q", "stop", "both").exit_code == 0
    assert wait_for(lambda: slurm.jobs() == [])
    assert wait_for(lambda: profile_processes(profile) == []), profile_processes(profile)


def test_a_controller_job_that_waits_too_long_is_cancelled(ipdir: Path, slurm: slurm_fixture.Slurm,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in slurm.env.items():
        monkeypatch.setenv(name, value)
    assert cluster(ipdir, "-q", "init", "late").exit_code == 0
    # A job the scheduler holds back (as in a busy queue).
    result = cluster(ipdir, "-q", "start", "late", "--controller", "slurm", "--engines", "slurm", "-n", "1",
                     "--directive", "--begin=now+1hour", "--timeout", "5")
    assert result.exit_code == 1
    found = re.search(r"the controller's slurm job (\d+) \(controller\) is PENDING and did not answer within 5 s",
                      result.output)
    assert found, result.output
    assert "did not appear" in result.output and "needs a longer --timeout" in result.output
    assert f"(slurm job {found.group(1)} (controller): cancelled job {found.group(1)})" in result.output
    assert wait_for(lambda: slurm.jobs() == [])
    assert loadProcesses(ipdir / "profile_late").empty()


def test_a_loopback_controller_on_another_node_is_refused(ipdir: Path, slurm: slurm_fixture.Slurm,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A profile listening on 127.0.0.1 whose controller job lands on another node: refused, the job cancelled.
    The one node here is this machine, so "another node" is the one thing pretended (the job itself is real)."""
    from epyclab.clustersetup import manage

    for name, value in slurm.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(manage, "_this_machine", lambda node: False)
    assert cluster(ipdir, "-q", "init", "far").exit_code == 0
    result = cluster(ipdir, "-q", "start", "far", "--controller", "slurm", "--engines", "slurm", "-n", "1",
                     "--timeout", "60")
    assert result.exit_code == 1
    assert f"runs on node {slurm.node}, but profile 'far' listens on 127.0.0.1" in result.output
    assert "epyclab cluster init far --ip 0.0.0.0" in result.output and "cancelled job" in result.output
    assert wait_for(lambda: slurm.jobs() == [])
    assert wait_for(lambda: profile_processes(ipdir / "profile_far") == [])
    assert loadProcesses(ipdir / "profile_far").empty()


_NAME = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
# Any printable value, braces included (the job script is a format template: they must come through as typed).
_VALUE = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1,
                 max_size=20).filter(lambda v: v == v.strip())


@given(kind=st.sampled_from(["slurm", "pbs"]), queue=_NAME, account=_NAME,
       walltime=st.from_regex(r"[0-9]{2}:[0-5][0-9]:[0-5][0-9]", fullmatch=True),
       directives=st.lists(st.tuples(_NAME, _VALUE), max_size=4), node=st.none() | _NAME)
def test_every_option_set_is_in_the_controller_job(tmp_path_factory: pytest.TempPathFactory, kind: str,
                                                   queue: str, account: str, walltime: str,
                                                   directives: list[tuple[str, str]], node: str | None) -> None:
    """Whatever the user sets for the controller's job is in the script ipyparallel writes, exactly as typed."""
    profile = tmp_path_factory.mktemp("profile")
    # Names that cannot be taken for the queue, account or time lines ipyparallel looks for.
    lines = [f"--x-{name}={value}" if kind == "slurm" else f"-l x-{name}={value}" for name, value in directives]
    options = BatchOptions(queue=queue, account=account, walltime=walltime, directives=lines)
    launcher = _configure_controller(kind, profile, options, node)
    launcher.write_batch_script(1)
    script = Path(launcher.batch_file).read_text().splitlines()
    prefix = "#SBATCH" if kind == "slurm" else "#PBS"
    for line in lines:
        assert f"{prefix} {line}" in script
    if kind == "slurm":
        expected = [f"#SBATCH --partition={queue}", f"#SBATCH --account={account}", f"#SBATCH --time={walltime}"]
    else:
        expected = [f"#PBS -q {queue}", f"#PBS -A {account}", f"#PBS -l walltime={walltime}"]
    assert set(expected) <= set(script), script
    assert script[-1].endswith(f"ipyparallel.controller --profile-dir={profile}")
    pin = ([f"--nodelist={node}"] if kind == "slurm" else ["-l", f"nodes={node}"]) if node else []
    assert launcher.args == [("sbatch" if kind == "slurm" else "qsub"), *pin, launcher.batch_file]


def test_a_controller_killed_in_its_job_is_submitted_again(ipdir: Path, tmp_path: Path,
                                                           slurm: slurm_fixture.Slurm,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The controller's processes SIGKILLed inside their job (a crash, not a cancel): the job ends, `start`
    submits a new one, the engines register again, and the sweep submitted before is collected in full."""
    for name, value in slurm.env.items():
        monkeypatch.setenv(name, value)
    assert cluster(ipdir, "-q", "init", "crash").exit_code == 0
    profile = ipdir / "profile_crash"
    started = cluster(ipdir, "-q", "start", "crash", "--controller", "slurm", "--engines", "slurm", "-n", "2",
                      "--timeout", "120")
    assert started.exit_code == 0, started.output
    first = loadProcesses(profile).controller["launcher"]["job_id"]
    pids = engine_pids(profile)
    notebook = tmp_path / "sweep.h5"
    submit_in_another_process(ipdir, "crash", notebook)

    hub = [p for p in profile_processes(profile) if "ipyparallel.controller" in " ".join(p.cmdline())]
    assert hub
    for proc in hub:
        proc.kill()  # SIGKILL, by PID
    psutil.wait_procs(hub, timeout=30)
    assert wait_for(lambda: first not in slurm.jobs())
    again = cluster(ipdir, "-q", "start", "crash", "--timeout", "120")
    assert again.exit_code == 0, again.output
    assert "  slurm: 2" in again.stdout and engine_pids(profile) == pids
    assert set(collect_here(ipdir, "crash", notebook)) <= set(pids)

    assert cluster(ipdir, "-q", "stop", "crash").exit_code == 0
    assert wait_for(lambda: slurm.jobs() == [])
    assert wait_for(lambda: profile_processes(profile) == []), profile_processes(profile)

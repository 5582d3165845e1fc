"""The Slurm adapter answers from the real cluster; its parsing agrees with Slurm's own."""

from __future__ import annotations

import subprocess
import time

import pytest

from conftest import run_as
from shifter_wlm import slurm


@pytest.mark.parametrize("expr", ["n1", "n[1-3]", "n[1,3]", "node[01-03,07],login1", "a[08-11]", "a[8-11]", "x[1-2],y[3]"])
def test_hostlist_expansion_matches_scontrol(expr, cluster):
    ours = slurm.expand_hostlist(expr)
    theirs = subprocess.run(["scontrol", "show", "hostnames", expr], capture_output=True, text=True,
                            check=True).stdout.split()
    assert ours == theirs


@pytest.mark.parametrize("cpus,nodes,tasks,cpt,expected", [
    ({"n1": 2, "n2": 2, "n3": 1}, ["n1", "n2", "n3"], 5, 1, {"n1": 2, "n2": 2, "n3": 1}),
    ({"n1": 2, "n2": 2, "n3": 2}, ["n1", "n2", "n3"], 3, 1, {"n1": 1, "n2": 1, "n3": 1}),
    ({"n1": 2, "n2": 2}, ["n1", "n2"], 2, 2, {"n1": 1, "n2": 1}),
    ({"n1": 1, "n2": 1}, ["n1", "n2"], 5, 1, {"n1": 3, "n2": 2}),
])
def test_task_layout(cpus, nodes, tasks, cpt, expected):
    assert slurm.layout_tasks(cpus, nodes, tasks, cpt) == expected


def test_cpu_ids():
    assert slurm.parse_cpu_ids("0-1") == 2
    assert slurm.parse_cpu_ids("0,2-3") == 3
    assert slurm.parse_cpu_ids("5") == 1


def test_job_info_of_a_running_job_on_the_real_cluster(cluster):
    submitted = run_as("testuser", ["sbatch", "--parsable", "-N3", "-n5", "-o", "/dev/null", "--wrap", "sleep 30"],
                       cwd="/tmp")
    assert submitted.returncode == 0, submitted.stderr
    job_id = int(submitted.stdout.strip().split(";")[0])
    try:
        deadline = time.monotonic() + 30
        while "RUNNING" not in cluster.slurm("squeue", "-h", "-j", str(job_id), "-o", "%T").stdout:
            assert time.monotonic() < deadline, "job did not start"
            time.sleep(0.2)
        info = slurm.job_info(job_id)
        assert slurm.backend() == "scontrol"  # PyPI's pyslurm is built for another Slurm
        assert info.job_id == job_id
        assert info.nodes == ("n1", "n2", "n3")
        assert sum(info.tasks_per_node.values()) == 5
        assert all(count >= 1 for count in info.tasks_per_node.values())
        import pwd
        assert info.uid == pwd.getpwnam("testuser").pw_uid
        assert info.batch_host == "n1"
    finally:
        cluster.slurm("scancel", str(job_id), check=False)


def test_unknown_job_is_a_clear_error(cluster):
    with pytest.raises(slurm.SlurmQueryError, match="squeue .* 999999 .* failed: .*Invalid job id"):
        slurm.job_info(999999)


def test_job_states_on_the_real_cluster(cluster):
    """Running and ended jobs with their state; a job Slurm never had is missing, asked
    about alone (squeue then fails for it) or with others."""
    running = run_as("testuser", ["sbatch", "--parsable", "-N1", "-o", "/dev/null", "--wrap", "sleep 30"], cwd="/tmp")
    ended = run_as("testuser", ["sbatch", "--parsable", "--wait", "-N1", "-o", "/dev/null", "--wrap", "true"], cwd="/tmp")
    assert running.returncode == 0 and ended.returncode == 0, (running.stderr, ended.stderr)
    running_id, ended_id = (int(r.stdout.strip().split(";")[0]) for r in (running, ended))
    try:
        deadline = time.monotonic() + 30
        while slurm.job_states([running_id]).get(running_id) != "RUNNING":
            assert time.monotonic() < deadline, "job did not start"
            time.sleep(0.2)
        states = slurm.job_states([running_id, ended_id, 999999])
        assert states == {running_id: "RUNNING", ended_id: "COMPLETED"}
        assert slurm.job_states([999999]) == {}
    finally:
        cluster.slurm("scancel", str(running_id), check=False)

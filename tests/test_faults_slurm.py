"""Faults on the nodes while image jobs run, on the real local cluster: a task killed with
SIGKILL (the job's next step still runs in the container), a step's or the batch step's
slurmstepd killed with SIGKILL (its task is orphaned and keeps running, outside Slurm's
reach; once the job is cancelled, the epilog's teardown kills it), slurmd restarted mid-job
(the container keeps working). Each time the epilog tears the container down (no mount,
loop device, run-dir state or process of the test users is left) and the node stays in
service.

The faults are injected from outside, as an admin or the kernel would (signals, a daemon
restart): nothing in the production code knows about them.
"""

from __future__ import annotations

import os
import pwd
import signal
import time
from pathlib import Path

import pytest

import jobtools as jt
from conftest import localcluster, run_as
from test_slurm_jobs import _push_and_pull

pytestmark = pytest.mark.cluster
USER = "testuser"


@pytest.fixture(scope="module")
def image(cluster):
    return _push_and_pull("slurm/app", "1", ["PATH=/usr/bin:/bin", "APP_FLAVOUR=from-the-image"],
                          {"etc/app-release": b"slurm-app-1\n"})


def processes(comm: str | None = None, cmdline: str | None = None, uid: int | None = None) -> list[int]:
    """Pids whose comm is `comm` / whose command line contains `cmdline` / owned by `uid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if comm is not None and (entry / "comm").read_text().strip() != comm:
                continue
            if cmdline is not None and cmdline not in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                    errors="replace"):
                continue
            if uid is not None and entry.stat().st_uid != uid:
                continue
        except OSError:
            continue
        found.append(int(entry.name))
    return found


def wait_until(what: str, check, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def submit(name: str, body: str) -> tuple[str, Path]:
    job = jt.write_job(USER, name, body)
    token = os.urandom(4).hex()  # job ids start again after a wipe: never an earlier run's output
    result = run_as(USER, ["sbatch", "--parsable", "-o", f"{job.stem}-%j-{token}.out", str(job)], cwd=str(job.parent))
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    return job_id, job.parent / f"{job.stem}-{job_id}-{token}.out"


def node_states() -> dict[str, str]:
    out = localcluster.slurm("sinfo", "-h", "-N", "-o", "%N %t", check=False).stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


def in_service() -> None:
    """Every node idle/mixed/allocated (not drained or down); returned to service after the
    assertion, so one failure does not spoil the next test."""
    states = node_states()
    try:
        assert all(s in ("idle", "alloc", "mix") for s in states.values()), states
    finally:
        localcluster.slurm("scontrol", "update", "nodename=n[1-3]", "state=resume", check=False)


def sleeper(marker: str) -> int:
    """The pid of the test user's `sleep <marker>` task."""
    uid = pwd.getpwnam(USER).pw_uid
    pids = wait_until(f"the task sleep {marker}", lambda: processes(comm="sleep", cmdline=f"sleep {marker}", uid=uid))
    return pids[0]


TWO_STEPS = """#!/bin/bash
#SBATCH -N 1 -w n2 -t 5
#SBATCH --image=docker:slurm/app:1
srun -N1 -n1 shifter sleep {marker}; echo "first=$?"
srun -N1 -n1 shifter cat /etc/app-release; echo "second=$?"
"""


def test_a_task_killed_fails_its_step_and_the_next_step_runs_in_the_container(image):
    job_id, out = submit("killtask.sl", TWO_STEPS.format(marker=301))
    os.kill(sleeper("301"), signal.SIGKILL)
    jt.wait_gone(job_id, timeout=120)
    text = out.read_text()
    assert "first=0" not in text and "first=" in text, text
    assert "slurm-app-1" in text and "second=0" in text, text
    jt.assert_clean()
    in_service()


def test_a_steps_slurmstepd_killed_then_the_job_cancelled_leaves_nothing(image):
    """A step's slurmstepd killed leaves its task running, orphaned, outside Slurm's reach
    (srun waits for it): cancelling the job, the epilog's teardown kills what runs in the
    container and removes it."""
    job_id, _ = submit("killstepd.sl", TWO_STEPS.format(marker=302))
    task = sleeper("302")
    [stepd] = wait_until("the step's slurmstepd", lambda: processes(comm="slurmstepd", cmdline=f"[{job_id}.0]"))
    os.kill(stepd, signal.SIGKILL)
    time.sleep(2)
    assert Path(f"/proc/{task}").exists()    # orphaned, still running
    run_as(USER, ["scancel", job_id])
    jt.wait_gone(job_id, timeout=120)
    jt.assert_clean(timeout=60)
    in_service()


def test_the_batch_slurmstepd_killed_then_the_job_cancelled_leaves_nothing(image):
    job_id, _ = submit("killbatch.sl", TWO_STEPS.format(marker=303))
    sleeper("303")
    [stepd] = wait_until("the batch slurmstepd", lambda: processes(comm="slurmstepd", cmdline=f"[{job_id}.batch]"))
    os.kill(stepd, signal.SIGKILL)
    time.sleep(2)
    run_as(USER, ["scancel", job_id])
    jt.wait_gone(job_id, timeout=120)
    jt.assert_clean(timeout=60)
    in_service()


def test_slurmd_restarted_mid_job_the_container_keeps_working_and_is_torn_down(image):
    job_id, out = submit("restart.sl", """#!/bin/bash
#SBATCH -N 1 -w n2 -t 5
#SBATCH --image=docker:slurm/app:1
srun -N1 -n1 shifter sleep 304; echo "first=$?"
srun -N1 -n1 shifter cat /etc/app-release; echo "second=$?"
""")
    task = sleeper("304")
    [slurmd] = [d for d in localcluster.daemons() if d.name == "slurmd-n2"]
    localcluster.stop(slurmd)
    localcluster.start(slurmd)
    localcluster.wait_for("slurmd n2 back", localcluster.nodes_ready, timeout=60)
    os.kill(task, signal.SIGTERM)          # the first step ends; the second needs the container
    jt.wait_gone(job_id, timeout=120)
    text = out.read_text()
    assert "slurm-app-1" in text and "second=0" in text, text
    jt.assert_clean()
    in_service()

"""A node slow to run a job's prolog (its slurmd stopped for a moment, as a loaded node is):
the batch script starts only once the prolog has built the container on every node of the
job (slurm.conf PrologFlags=DeferBatch), so no step reaches a node still building it; the
steps complete and the node stays in service.

Found by the 200-job stress run on 32 nodes: with PrologFlags=Alloc alone the script started
as soon as its first node was ready; the other nodes' slurmstepd sent their step-completion
messages to a node whose slurmstepd did not exist yet (its prolog still running), that step
never completed there, and Slurm drained the node ("Kill task failed").

The fault is injected from outside (SIGSTOP/SIGCONT of one slurmd); nothing in the
production code knows about it.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime

import pytest

import jobtools as jt
from conftest import localcluster
from test_faults_slurm import image, in_service, submit  # noqa: F401 (image: a fixture)

pytestmark = pytest.mark.cluster


def built_on(node: str, job_id: str, since: float) -> bool:
    """The prolog logged the job's build on this node (after `since`: job ids start again
    after the cluster's state is wiped, the log keeps earlier runs)."""
    for event in jt.node_events(node):
        if event.get("event") == "build" and str(event.get("job")) == job_id and \
                datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp() >= since:
            return True
    return False


def test_the_batch_script_waits_for_every_nodes_prolog(image):  # noqa: F811
    [slurmd] = [d for d in localcluster.daemons() if d.name == "slurmd-n2"]
    pid = slurmd.pid()
    assert pid, "slurmd-n2 is not running"
    submitted = time.time()
    os.kill(pid, signal.SIGSTOP)
    try:
        job_id, out = submit("slow-prolog.sl", """#!/bin/bash
#SBATCH -N 2 -n 2 -w n[1-2] -t 5
#SBATCH --image=docker:slurm/app:1
echo start=$(date +%s.%N)
srun shifter cat /etc/app-release
echo done
""")
        deadline = time.monotonic() + 60
        while not built_on("n1", job_id, submitted):
            assert time.monotonic() < deadline, f"job {job_id}: n1's prolog did not build in 60 s"
            time.sleep(0.2)
        time.sleep(1)             # time enough for the script to start, were it let
        resumed = time.time()
    finally:
        os.kill(pid, signal.SIGCONT)
    jt.wait_gone(job_id, timeout=120)
    text = out.read_text()
    assert float(jt.field("start", text)) > resumed, f"the script started before n2's prolog ran: {text!r}"
    assert sorted(line for line in text.splitlines() if not line.startswith("start=")) == \
        ["done", "slurm-app-1", "slurm-app-1"], text
    assert built_on("n2", job_id, submitted)
    jt.assert_clean(timeout=60)
    in_service()

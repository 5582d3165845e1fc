"""kill -9 of the prolog and of the epilog at each of their steps, on the real local cluster.

The fault point is the test's own (tests/hookfault.py): for these tests only, a .pth file in
the installed venv makes the hook process (`slurmstepd spank prolog|epilog`) SIGKILL itself
just before or after one of the structured steps it logs. Nothing in the production code
knows about it.

What Slurm does then is Slurm's policy for any prolog or epilog that fails: it drains the
node ("Prolog error" / "Epilog error"); a job whose prolog failed is requeued and held
("launch failed requeued held"). What we show, for every step: nothing of ours leaks (mounts,
loop devices, run-dir state, processes, the gateway's use record of the job), the node comes
back with `scontrol update nodename=... state=resume` (docs/operations.md), a held job
released then runs with the right output, and a killed epilog's teardown is completed by the
next prolog on the node (shifter_wlm/leftovers.py).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import jobtools as jt
from conftest import localcluster, run_as
from test_faults_slurm import image, submit, wait_until  # noqa: F401 - the image fixture

pytestmark = pytest.mark.cluster
USER = "testuser"
HERE = Path(__file__).resolve().parent
SHIFTERIMG = "/opt/shifter/bin/shifterimg"

JOB = """#!/bin/bash
#SBATCH -N 1 -w {node} -t 5
#SBATCH --image=docker:slurm/app:1
srun -N1 -n1 shifter cat /etc/app-release; echo "step=$?"
"""

# the prolog's own steps, in order (shifter_wlm/prolog.py; node_addresses: the local
# cluster's sshd is on), and build steps where the container is half made (every build step
# is killed in-process by tests/test_runtime_root.py::test_teardown_after_kill_9)
PROLOG = [("before", "load_config"), ("after", "load_config"), ("after", "job_info"), ("after", "node_addresses"),
          ("after", "spec"), ("after", "use_record"), ("after", "build.namespace"), ("after", "build.image"),
          ("after", "build.pin"), ("after", "build")]
# the epilog's steps (shifter_wlm/epilog.py forget): before anything; the sshd stopped; the
# container torn down (the runtime's inner `teardown` step ends first); the gateway told
EPILOG = [("before", "sshd_stop"), ("after", "sshd_stop"), ("after", "teardown"), ("after", "use_end")]


@pytest.fixture(scope="module")
def fault(cluster):
    """Installs the fault point into the installed venv for this module; yields a function
    that arms it for one hook step and returns the file that says it fired."""
    purelib = subprocess.run(["/opt/shifter/bin/python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    control = localcluster.STATE / "test-hook-fault"
    fired = Path(f"{control}.fired")
    module, pth = Path(purelib) / "_shifter_test_hookfault.py", Path(purelib) / "_shifter_test_hookfault.pth"
    shutil.copyfile(HERE / "hookfault.py", module)
    pth.write_text(f"import _shifter_test_hookfault; _shifter_test_hookfault.install({str(control)!r})\n")
    # The plugin's default Python starts without `site`, so .pth files are not read
    # there; for these tests only, plugstack.conf names the same venv's interpreter by another
    # path, which starts with `site` (test_spank_build checks both starts).
    plugstack = localcluster.STATE / "etc" / "plugstack.conf"
    original = plugstack.read_text()
    with_site = Path(sys.prefix) / "bin" / "python"
    assert f"python={with_site}" not in original
    plugstack.write_text(re.sub(r"^(required .*shifter_spank\.so.*)$", rf"\1 python={with_site}", original,
                                count=1, flags=re.M))
    assert plugstack.read_text() != original, "plugstack.conf has no shifter_spank.so line"

    def arm(hook: str, when: str, event: str) -> Path:
        fired.unlink(missing_ok=True)
        control.write_text(f"{hook} {when} {event}\n")
        return fired

    try:
        yield arm
    finally:
        plugstack.write_text(original)
        for path in (pth, module, control, fired):
            path.unlink(missing_ok=True)
        localcluster.slurm("scontrol", "update", "nodename=n[1-3]", "state=resume", check=False)


@pytest.fixture
def jobs():
    """Submits like test_faults_slurm.submit; whatever a failed test leaves queued is cancelled."""
    ids = []

    def submit_job(name: str, body: str):
        job_id, out = submit(name, body)
        ids.append(job_id)
        return job_id, out

    yield submit_job
    for job_id in ids:
        localcluster.slurm("scancel", job_id, check=False)


def drain_reason(node: str) -> str:
    """The node's drain reason ("" when it is not drained)."""
    out = localcluster.slurm("sinfo", "-h", "-R", "-n", node, "-o", "%E", check=False).stdout.strip()
    return out


def resume(node: str) -> None:
    """What an admin does for a drained node (docs/operations.md), then it must be idle."""
    localcluster.slurm("scontrol", "update", f"nodename={node}", "state=resume")
    wait_until(f"{node} back in service", lambda: localcluster.slurm(
        "sinfo", "-h", "-n", node, "-o", "%t").stdout.strip() in ("idle", "mix", "alloc"), timeout=30)


def open_uses(job_id: str) -> list[dict]:
    """The gateway's use records of the job (its owner's view)."""
    out = run_as(USER, [SHIFTERIMG, "jobs", "--json", job_id])
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def job_record(node: str, job_id: str) -> Path:
    return jt.run_dir() / node / "jobs" / f"{job_id}.json"


@pytest.mark.parametrize("when,event", PROLOG, ids=[f"{w}-{e}" for w, e in PROLOG])
def test_prolog_killed(image, fault, jobs, when, event):
    before = jt.leftovers()
    fired = fault("prolog", when, event)
    job_id, out = jobs("killprolog.sl", JOB.format(node="n2"))
    wait_until("the fault to fire", fired.exists, timeout=60)
    # Slurm's answer to a failed prolog: the job requeued and held (the user's one line in
    # squeue), the node drained with a reason
    wait_until("the job held", lambda: localcluster.slurm(
        "squeue", "-h", "-j", job_id, "-o", "%T|%r").stdout.strip() == "PENDING|launch failed requeued held", timeout=60)
    assert drain_reason("n2") == "Prolog error"
    resume("n2")
    # the prolog runs again, untouched (a requeued job may start 120 s later: now instead)
    localcluster.slurm("scontrol", "release", job_id)
    localcluster.slurm("scontrol", "update", f"jobid={job_id}", "starttime=now")
    jt.wait_gone(job_id, timeout=120)
    text = out.read_text()
    assert "slurm-app-1" in text and "step=0" in text, text
    jt.assert_clean(ignore=before)  # the run directory is shared with other sessions' clusters
    assert open_uses(job_id) == []
    assert drain_reason("n2") == ""


@pytest.mark.parametrize("when,event", EPILOG, ids=[f"{w}-{e}" for w, e in EPILOG])
def test_epilog_killed_the_next_prolog_completes_the_teardown(image, fault, jobs, when, event):
    before = jt.leftovers()
    fired = fault("epilog", when, event)
    job_id, out = jobs("killepilog.sl", JOB.format(node="n3"))
    wait_until("the fault to fire", fired.exists, timeout=60)
    wait_until("the epilog error", lambda: drain_reason("n3") == "Epilog error", timeout=60)
    jt.wait_gone(job_id, timeout=60)
    text = out.read_text()
    assert "slurm-app-1" in text and "step=0" in text, text   # the job itself ran fine
    assert job_record("n3", job_id).exists()   # kept: the record goes last, whatever was done
    resume("n3")
    # the next image job on the node: its prolog collects the dead job's leftovers
    next_id, next_out = jobs("afterkill.sl", JOB.format(node="n3"))
    jt.wait_gone(next_id, timeout=120)
    assert "step=0" in next_out.read_text()
    collected = [e for e in jt.node_events("n3") if e.get("event") == "leftovers" and e.get("job") == int(next_id)]
    assert collected and int(job_id) in collected[-1]["jobs"], collected
    jt.assert_clean(ignore=before)  # the run directory is shared with other sessions' clusters
    assert open_uses(job_id) == []
    assert drain_reason("n3") == ""

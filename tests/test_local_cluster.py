"""The local cluster is real: munge, slurmctld, three slurmd on their own loopback addresses,
a registry, two non-root users; multi-node jobs run; down leaves nothing; up twice is harmless."""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import run_as

pytestmark = pytest.mark.cluster


def _write_job(user: str, name: str, body: str) -> Path:
    home = Path(pwd.getpwnam(user).pw_dir)
    job = home / name
    job.write_text(body)
    os.chown(job, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
    return job


def _sbatch_wait(user: str, job: Path, *args: str) -> tuple[str, str]:
    result = run_as(user, ["sbatch", "--parsable", "--wait", *args, str(job)], cwd=job.parent)
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip().split(";")[0]
    out = job.parent / f"slurm-{job_id}.out"
    return job_id, out.read_text()


def test_three_node_job_as_test_user_runs_on_every_node(cluster):
    job = _write_job("testuser", "three.sl", "#!/bin/bash\n#SBATCH -N3 -n3 -t 2\n"
                     "srun bash -c 'echo task=$SLURM_PROCID node=$SLURMD_NODENAME uid=$(id -u) "
                     "addr=$SLURM_TOPOLOGY_ADDR tmp=$TMPDIR'\n")
    job_id, output = _sbatch_wait("testuser", job)
    lines = sorted(line for line in output.splitlines() if line.startswith("task="))
    uid = pwd.getpwnam("testuser").pw_uid
    assert len(lines) == 3, output
    assert {re.search(r"node=(\S+)", line).group(1) for line in lines} == {"n1", "n2", "n3"}
    assert all(f"uid={uid}" in line for line in lines)
    assert uid != 0


def test_nodes_have_their_own_loopback_addresses_and_ports(cluster):
    out = cluster.slurm("scontrol", "show", "node", "-o").stdout
    addrs = dict(re.findall(r"NodeName=(\S+).*?NodeAddr=(\S+)", out))
    assert addrs == {"n1": "127.0.0.1", "n2": "127.0.0.2", "n3": "127.0.0.3"}


def test_two_distinct_non_root_test_users(cluster):
    uids = {pwd.getpwnam(u).pw_uid for u in cluster.TEST_USERS}
    assert len(uids) == 2 and 0 not in uids


def test_registry_accepts_a_blob_push_and_serves_it_back(cluster):
    blob = os.urandom(4096)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    base = f"http://{cluster.REGISTRY}/v2/foundation/probe"
    with urllib.request.urlopen(urllib.request.Request(f"{base}/blobs/uploads/", method="POST")) as resp:
        assert resp.status == 202
        location = resp.headers["Location"]
    if location.startswith("/"):
        location = f"http://{cluster.REGISTRY}{location}"
    sep = "&" if "?" in location else "?"
    put = urllib.request.Request(f"{location}{sep}digest={digest}", data=blob, method="PUT",
                                 headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(put) as resp:
        assert resp.status == 201
    with urllib.request.urlopen(f"{base}/blobs/{digest}") as resp:
        assert resp.read() == blob
    # everything the registry stores is under the cluster's state directory
    assert list((cluster.STATE / "registry/data").rglob("data"))


def test_everything_lives_under_the_state_directory(cluster):
    state = str(cluster.STATE)
    conf = (cluster.STATE / "etc/slurm.conf").read_text()
    for key in ("StateSaveLocation", "SlurmctldPidFile", "SlurmdPidFile",
                "SlurmctldLogFile", "SlurmdLogFile", "PlugStackConfig"):
        value = re.search(rf"^{key}=(\S+)", conf, re.M).group(1)
        assert value.startswith(state), (key, value)
    # but the tasks' two directories, where sites keep them, so containers show them (pmix)
    assert re.search(r"^SlurmdSpoolDir=(\S+)", conf, re.M).group(1) == f"{cluster.SPOOL}/%n"
    assert re.search(r"^TmpFS=(\S+)", conf, re.M).group(1) == f"{cluster.TMPFS}/%n"
    assert f"socket={state}/munge/munge.socket.2" in conf
    assert (cluster.STATE / "munge/munge.socket.2").is_socket()


def test_plugin_from_make_install_is_required_by_the_cluster(cluster):
    plugstack = (cluster.STATE / "etc/plugstack.conf").read_text()
    line = next(l for l in plugstack.splitlines() if l.startswith("required"))
    assert line.split()[1] == str(cluster.PREFIX / "lib/shifter_spank.so")
    assert (cluster.PREFIX / "lib/shifter_spank.so").exists()


def test_misconfigured_plugin_fails_closed(cluster):
    """An unknown plugin argument stops the job instead of running it without the plugin."""
    tmp_path = Path(tempfile.mkdtemp(dir=cluster.STATE))  # readable by the test user
    os.chmod(tmp_path, 0o755)
    plugstack = tmp_path / "plugstack.conf"
    plugstack.write_text(f"required {cluster.PREFIX}/lib/shifter_spank.so no_such_argument=1\n")
    conf = tmp_path / "slurm.conf"
    conf.write_text(re.sub(r"^PlugStackConfig=.*$", f"PlugStackConfig={plugstack}",
                           (cluster.STATE / "etc/slurm.conf").read_text(), flags=re.M))
    result = run_as("testuser", ["env", f"SLURM_CONF={conf}", "srun", "-N1", "true"])
    assert result.returncode != 0
    assert "unknown plugin argument 'no_such_argument=1'" in result.stderr
    shutil.rmtree(tmp_path)


def test_up_twice_is_harmless(cluster):
    pids = {d.name: d.pid() for d in cluster.daemons()}
    started = time.monotonic()
    cluster.up()
    assert {d.name: d.pid() for d in cluster.daemons()} == pids
    assert time.monotonic() - started < 10


def test_down_leaves_nothing_and_up_restores(cluster):
    cluster.down()
    assert cluster.leftover_processes() == []
    assert not list((cluster.STATE / "munge").glob("munge.socket*"))
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(cluster.STATE) not in mounts
    status = subprocess.run([str(cluster.REPO / "tools/localcluster.py"), "status"], capture_output=True, text=True)
    assert status.returncode == 3 and "stopped" in status.stdout
    cluster.up()
    assert all(d.pid() for d in cluster.daemons())
    job = _write_job("testuser2", "again.sl", "#!/bin/bash\n#SBATCH -N3 -t 1\nsrun hostname >/dev/null; echo done\n")
    _, output = _sbatch_wait("testuser2", job)
    assert output.strip() == "done"


def test_a_job_and_a_drained_node_of_an_earlier_run_do_not_survive_down_and_up(cluster):
    """down ends the test users' jobs before slurmctld saves its state (a 32-node stress run
    interrupted left 30 jobs that came back on the next 3-node cluster), and up returns a node
    an earlier run left drained to service (it waited for every node to be usable first, so a
    drained one failed every later up)."""
    user = cluster.TEST_USERS[1]
    job = _write_job(user, "pending.sl", "#!/bin/bash\n#SBATCH -N1 -w n2 -t 1 --begin=now+1hour\necho never\n")
    submitted = run_as(user, ["sbatch", "--parsable", str(job)], cwd=str(job.parent))
    assert submitted.returncode == 0, submitted.stderr
    cluster.slurm("scontrol", "update", "nodename=n2", "state=drain", "reason=earlier run")
    cluster.down()
    cluster.up()
    assert cluster.slurm("squeue", "-h", "-o", "%i", f"--user={user}").stdout.split() == []
    assert cluster.node_states()["n2"] == "idle"

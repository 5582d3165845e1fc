"""Users' own ssh-based tools inside the job's container, on the local 3-node cluster as a
plain user: an image's own OpenSSH client, pdsh, GNU parallel `--sshloginfile /var/hostsfile`,
MPICH's `mpirun -launcher ssh`, Spark standalone's launcher loop and a small Python tool reach
every node's container through the container's /etc/ssh/ssh_config (the job's port, key and
host keys) with nothing changed; Dask's SSHCluster (asyncssh, which reads only ~/.ssh/config)
does with that file named in its connect_options, or unchanged with ~/.ssh/config ending in
`Include /etc/ssh/ssh_config`. The sshd and
what its sessions leave running belong to the job's extern step. Two jobs sharing a node
each get their own sshd, and one user's key does not open the other's.

The image is built here: a debootstrap Debian with openssh-client, pdsh, parallel, python3,
MPICH and Dask's distributed with asyncssh (tests/imagebuilder.py debian_tree), plus the
three scripts below.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import time
from pathlib import Path

import pytest

import imagebuilder as ib
import jobtools as jt
from conftest import localcluster, run_as

pytestmark = pytest.mark.cluster
USER, OTHER = "testuser", "testuser2"
ADDRS = {"n1": "127.0.0.1", "n2": "127.0.0.2", "n3": "127.0.0.3"}
DBCLIENT = str(localcluster.PREFIX / "udiImage/bin/dbclient")
# python3-cffi-backend: named because debootstrap does not resolve the virtual package
# python3-cryptography (asyncssh's) needs
PACKAGES = ("mpich", "openssh-client", "pdsh", "parallel", "python3", "python3-asyncssh", "python3-cffi-backend",
            "python3-distributed")
SKIP = ("usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info", "var/cache/apt",
        "var/lib/apt/lists")

# run inside the container on the first node; /cache is each node's own perNodeCache, where
# a first step wrote the node's name: it tells which container a session landed in
CHECK_SH = r"""#!/bin/bash
echo "which=$(command -v ssh)"
echo "config-port=$(ssh -G n2 | awk '/^port /{print $2}')"
for h in $(sort -u /var/hostsfile); do
  ssh "$h" 'echo "ossh-to='"$h"' container=$(cat /cache/marker) uid=$(id -u) server=$(echo $SSH_CONNECTION | cut -d" " -f3)"' \
    || echo "ossh-failed=$h"
done
pdsh -R ssh -w ^/var/hostsfile 'echo "pdsh container=$(cat /cache/marker)"' | sort
parallel --will-cite --sshloginfile /var/hostsfile --nonall 'echo "parallel container=$(cat /cache/marker)"' | sort
python3 /opt/tools/fanout.py
mpirun -launcher ssh -f /var/hostsfile -n 3 sh -c 'echo "mpi rank=$PMI_RANK container=$(cat /cache/marker)"' | sort
# Spark standalone's launcher (sbin/workers.sh): the `ssh` binary with $SPARK_SSH_OPTS (by
# default -o StrictHostKeyChecking=no) to each host of the workers file, in the background
SPARK_SSH_OPTS="-o StrictHostKeyChecking=no"
for h in $(sed 's/#.*$//;/^$/d' /var/hostsfile | sort -u); do
  ssh $SPARK_SSH_OPTS "$h" 'echo "spark-worker container=$(cat /cache/marker)"' 2>&1 | sed "s/^/$h: /" &
done
wait
python3 /opt/tools/dask_ssh.py named 2>/tmp/dask-ssh.$$.err || { echo "dask-failed"; tail -20 /tmp/dask-ssh.$$.err; }
# the same script with no connect_options: a ~/.ssh/config that ends with the README's
# one line (a scratch HOME here, so the test user's real one is left alone)
home=$(mktemp -d) && mkdir "$home/.ssh" && echo "Include /etc/ssh/ssh_config" > "$home/.ssh/config"
HOME=$home python3 /opt/tools/dask_ssh.py unchanged 2>/tmp/dask-ssh.$$.err || { echo "dask-unchanged-failed"; tail -20 /tmp/dask-ssh.$$.err; }
rm -rf /tmp/dask-ssh.$$.err "$home"
# a session that leaves a process running: it stays with the job (the extern step)
ssh n2 'sleep 600 >/dev/null 2>&1 </dev/null & echo "left-behind=$!"'
"""

FANOUT_PY = r'''"""A small Python tool: the same command on every node of the job, over ssh, at once."""
import concurrent.futures
import shlex
import subprocess

CODE = "import os; print(open('/cache/marker').read().strip(), os.getuid(), os.environ['SSH_CONNECTION'].split()[2])"
hosts = sorted(set(open("/var/hostsfile").read().split()))


def run(host):
    done = subprocess.run(["ssh", host, "python3 -c " + shlex.quote(CODE)], capture_output=True, text=True, timeout=60)
    return host, done.returncode, done.stdout.split(), done.stderr.strip()


with concurrent.futures.ThreadPoolExecutor(len(hosts)) as pool:
    for host, rc, got, err in pool.map(run, hosts):
        print(f"py-to={host} rc={rc} container={got[0] if got else ''} uid={got[1] if got else ''} "
              f"server={got[2] if got else ''} err={err!r}")
'''

DASK_SSH_PY = r'''"""Dask's SSHCluster over the job's nodes: the scheduler on the first node, a worker on each.
asyncssh (what SSHCluster connects with) reads only ~/.ssh/config, so the container's
/etc/ssh/ssh_config is named in connect_options, as the README says."""
import sys

from dask.distributed import Client, SSHCluster

how = sys.argv[1]  # "named": the file in connect_options; "unchanged": none (~/.ssh/config includes it)
hosts = sorted(set(open("/var/hostsfile").read().split()))
options = {"config": ["/etc/ssh/ssh_config"]} if how == "named" else {}
cluster = SSHCluster([hosts[0]] + hosts, connect_options=options,
                     worker_options={"nthreads": 1}, scheduler_options={"port": 0, "dashboard_address": ":0"},
                     remote_python=sys.executable)
try:
    with Client(cluster) as client:
        client.wait_for_workers(len(hosts), timeout=120)
        for where in sorted(client.run(lambda: open("/cache/marker").read().strip()).values()):
            print(f"dask-{how} worker container={where}")
finally:
    cluster.close()
'''

TOOLS_JOB = """#!/bin/bash
#SBATCH -N 3 -n 3 -t 5
#SBATCH --image={image}
#SBATCH --volume=/ignored:/cache:perNodeCache=size=512m
srun shifter sh -c 'echo "$SLURMD_NODENAME" > /cache/marker'
srun -N1 -n1 -w "$SLURMD_NODENAME" shifter bash /opt/tools/check.sh
echo ready > {ready}
for i in $(seq 600); do [ -e {done} ] && break; sleep 0.1; done
"""


@pytest.fixture(scope="module")
def image(cluster):
    tree = ib.debian_tree(PACKAGES)
    tools = ib.layer_from_entries([
        ib.Dir("opt"), ib.Dir("opt/tools"),
        ib.File("opt/tools/check.sh", CHECK_SH.encode(), mode=0o755),
        ib.File("opt/tools/fanout.py", FANOUT_PY.encode(), mode=0o644),
        ib.File("opt/tools/dask_ssh.py", DASK_SSH_PY.encode(), mode=0o644),
    ])
    ib.push("127.0.0.1:5000", "sshtools/app", "3", ib.Image(
        [ib.layer_from_dir(tree, SKIP), tools], compression=["none", "none"],
        config={"Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"], "Cmd": ["/bin/bash"]}))
    pulled = run_as(USER, [str(localcluster.PREFIX / "bin/shifterimg"), "pull", "docker:sshtools/app:3"],
                    timeout=600)
    assert pulled.returncode == 0, pulled.stderr
    return "docker:sshtools/app:3"


def _record(node: str, job_id: str) -> dict:
    return json.loads((jt.run_dir() / node / "jobs" / f"{job_id}.json").read_text())


def _listpids(job_id: str, node: str) -> dict[int, str]:
    """pid -> step, as Slurm's own slurmstepds on `node` report them."""
    out = localcluster.slurm("scontrol", "listpids", job_id, node).stdout
    pids = {}
    for line in out.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3 and fields[0].isdigit():
            pids[int(fields[0])] = fields[2]
    return pids


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture(scope="module")
def tools_job(image):
    ready, done = jt.home(USER) / "tools-ready", jt.home(USER) / "tools-done"
    for p in (ready, done):
        p.unlink(missing_ok=True)
    job = jt.write_job(USER, "tools.sl", TOOLS_JOB.format(image=image, ready=ready, done=done))
    proc = subprocess.Popen(["runuser", "-u", USER, "--", "sbatch", "--parsable", "--wait", "-o", "tools-%j.out",
                             str(job)], cwd=job.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state: dict = {"done": done, "proc": proc, "job": job}
    try:
        jt.wait_for_file(ready, proc, timeout=180)
        job_id = jt.job_id_by_name(USER, job.name)
        state["job_id"] = job_id
        state["output"] = (job.parent / f"tools-{job_id}.out").read_text()
        yield state
    finally:
        jt.release_held_job(proc, done)


def test_the_images_own_openssh_reaches_each_nodes_container(tools_job):
    output, job_id = tools_job["output"], tools_job["job_id"]
    uid = str(pwd.getpwnam(USER).pw_uid)
    port = jt.sshd_port(job_id)
    assert "which=/usr/bin/ssh" in output, output             # the image's client, not ours
    assert f"config-port={port}" in output, output            # from the container's ssh_config
    assert "ossh-failed" not in output, output
    lines = jt.lines_with("ossh-to=", output)
    assert [jt.field("ossh-to", line) for line in lines] == ["n1", "n2", "n3"], output
    for line in lines:
        node = jt.field("ossh-to", line)
        assert jt.field("container", line) == node, line      # that node's job container
        assert jt.field("server", line) == ADDRS[node], line  # that node's own sshd
        assert jt.field("uid", line) == uid, line


def test_pdsh_and_gnu_parallel_over_the_hostsfile(tools_job):
    output = tools_job["output"]
    pdsh = sorted(line for line in output.splitlines() if "pdsh container=" in line)
    assert pdsh == [f"{n}: pdsh container={n}" for n in ADDRS], output
    parallel = sorted(line for line in output.splitlines() if line.startswith("parallel container="))
    assert parallel == [f"parallel container={n}" for n in ADDRS], output


def test_a_python_tool_over_ssh_across_the_nodes(tools_job):
    uid = str(pwd.getpwnam(USER).pw_uid)
    lines = jt.lines_with("py-to=", tools_job["output"])
    assert [jt.field("py-to", line) for line in lines] == ["n1", "n2", "n3"], tools_job["output"]
    for line in lines:
        node = jt.field("py-to", line)
        assert jt.field("rc", line) == "0", line
        assert (jt.field("container", line), jt.field("uid", line), jt.field("server", line)) == (node, uid, ADDRS[node])


def test_mpirun_with_the_ssh_launcher(tools_job):
    """MPICH's hydra starts its proxies over ssh (the image's client), one rank per node."""
    lines = sorted(line for line in tools_job["output"].splitlines() if line.startswith("mpi rank="))
    assert lines == [f"mpi rank={i} container={n}" for i, n in enumerate(ADDRS)], tools_job["output"]


def test_spark_standalones_launcher_reaches_each_nodes_container(tools_job):
    """Spark's sbin/workers.sh starts each worker with `ssh $SPARK_SSH_OPTS host command`
    over the workers file: the image's OpenSSH, the container's ssh_config, one per node."""
    lines = sorted(line for line in tools_job["output"].splitlines() if "spark-worker container=" in line)
    assert lines == [f"{n}: spark-worker container={n}" for n in ADDRS], tools_job["output"]


def test_dasks_ssh_cluster_across_the_nodes(tools_job):
    """Dask's SSHCluster (asyncssh) with the container's ssh_config named: a worker in each
    node's container."""
    output = tools_job["output"]
    assert "dask-failed" not in output, output
    lines = jt.lines_with("dask-named worker container=", output)
    assert [jt.field("container", line) for line in lines] == list(ADDRS), output


def test_dasks_ssh_cluster_unchanged_with_the_readmes_line_in_ssh_config(tools_job):
    """The same SSHCluster call with no connect_options, where ~/.ssh/config ends with
    `Include /etc/ssh/ssh_config` (asyncssh follows it to the container's file)."""
    output = tools_job["output"]
    assert "dask-unchanged-failed" not in output, output
    lines = jt.lines_with("dask-unchanged worker container=", output)
    assert [jt.field("container", line) for line in lines] == list(ADDRS), output


def test_the_sshd_and_what_sessions_leave_belong_to_the_extern_step(tools_job):
    """Slurm itself lists the sshd, and a process a session left running, as the job's
    extern step's (what pam_slurm_adopt does for ssh logins); the sshd is a child of that
    step's slurmstepd; scancel takes them away."""
    job_id = tools_job["job_id"]
    [left] = [int(jt.field("left-behind", line)) for line in jt.lines_with("left-behind=", tools_job["output"])]
    sshd = _record("n2", job_id)["sshd_pid"]
    parent = _ppid(sshd)
    assert Path(f"/proc/{parent}/cmdline").read_bytes().rstrip(b"\0") == f"slurmstepd: [{job_id}.extern]".encode()
    assert _ppid(left) == sshd        # the session has ended: its orphan came back to the sshd
    pids = _listpids(job_id, "n2")
    assert pids.get(sshd) == "extern" and pids.get(left) == "extern", pids
    # and it is one of the step's tasks, as pam_slurm_adopt makes an ssh login (what
    # jobacct_gather counts for sstat/sacct; this cluster has no accounting, so the step's
    # own log line is the evidence)
    log = (localcluster.STATE / "log/slurmd-n2.log").read_text()
    assert f"_handle_add_extern_pid_internal: for StepId={job_id}.extern, pid {sshd}" in log
    run_as(USER, ["scancel", job_id])
    tools_job["proc"].communicate(timeout=180)
    jt.wait_gone(job_id)
    assert not _alive(sshd) and not _alive(left)
    jt.assert_clean()


# ---------------------------------------------------------------- two jobs on one node

SHARED_JOB = """#!/bin/bash
#SBATCH -N 1 -n 1 -w n2 -t 5
#SBATCH --image={image}
echo up > {up}
for i in $(seq 900); do [ -e {go} ] && break; sleep 0.1; done
srun shifter bash -c 'echo "port=$(ssh -G n2 | awk "/^port /{{print \\$2}}")"; ssh n2 "echo ssh-ok uid=\\$(id -u) port=\\$(echo \\$SSH_CONNECTION | cut -d\\" \\" -f4)" || echo ssh-failed'
for i in $(seq 900); do [ -e {end} ] && break; sleep 0.1; done
"""


def _client(user: str, key: Path, addr: str, port: int) -> subprocess.CompletedProcess:
    """dropbear's client from the host, as `user`, with `key` (no host key check: the
    refusal by the server is the point)."""
    return run_as(user, [DBCLIENT, "-y", "-y", "-p", str(port), "-i", str(key), addr, "echo", "got-in"],
                  timeout=30, stdin=subprocess.DEVNULL)


def test_two_users_jobs_on_one_node_each_get_their_own_sshd(image):
    files = {u: {k: jt.home(u) / f"shared-{k}" for k in ("up", "go", "end")} for u in (USER, OTHER)}
    procs, jobs = {}, {}
    for user in (USER, OTHER):
        for path in files[user].values():
            path.unlink(missing_ok=True)
        job = jt.write_job(user, "shared.sl", SHARED_JOB.format(image=image, **files[user]))
        jobs[user] = job
        procs[user] = subprocess.Popen(["runuser", "-u", user, "--", "sbatch", "--parsable", "--wait", "-o",
                                        "shared-%j.out", str(job)], cwd=job.parent, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)
    try:
        for user in (USER, OTHER):
            jt.wait_for_file(files[user]["up"], procs[user], timeout=180)
        records = {user: _record("n2", jt.job_id_by_name(user, jobs[user].name)) for user in (USER, OTHER)}
        mine, theirs = records[USER], records[OTHER]
        assert mine["sshd_port"] != theirs["sshd_port"] and mine["sshd_pid"] and theirs["sshd_pid"], records
        assert not mine["sshd_error"] and not theirs["sshd_error"], records
        key = {u: jt.home(u) / ".udiRoot/id_dropbear" for u in (USER, OTHER)}
        # each user's key opens their own job's sshd (the positive control) ...
        for user, record in ((USER, mine), (OTHER, theirs)):
            result = _client(user, key[user], ADDRS["n2"], record["sshd_port"])
            assert result.returncode == 0 and "got-in" in result.stdout, (user, result.stderr)
        # ... and not the other user's
        result = _client(USER, key[USER], ADDRS["n2"], theirs["sshd_port"])
        assert result.returncode != 0 and "got-in" not in result.stdout, result
        assert "No auth methods could be used" in result.stderr, result.stderr
        for user in (USER, OTHER):
            files[user]["go"].touch()
        outputs = {}
        for user in (USER, OTHER):
            deadline = time.monotonic() + 120
            out = jobs[user].parent / f"shared-{records[user]['job_id']}.out"
            while "ssh-" not in (out.read_text() if out.exists() else ""):
                assert time.monotonic() < deadline, f"{user}'s job never ran its ssh step"
                time.sleep(0.2)
            files[user]["end"].touch()
            procs[user].communicate(timeout=120)
            outputs[user] = out.read_text()
    finally:
        for user in (USER, OTHER):
            for path in files[user].values():
                path.touch()
            if procs[user].poll() is None:
                procs[user].communicate(timeout=180)
    for user, record in ((USER, mine), (OTHER, theirs)):
        uid, port = str(pwd.getpwnam(user).pw_uid), str(record["sshd_port"])
        out = outputs[user]
        assert "shifter: warning" not in out and "ssh-failed" not in out, out
        assert f"port={port}" in out and f"ssh-ok uid={uid} port={port}" in out, out
    jt.assert_clean()


# ---------------------------------------------------------------- pure parts (no cluster)


def test_the_job_port_is_the_same_on_every_node_and_differs_between_neighbours():
    from shifter_wlm import sshplan

    assert sshplan.job_port(1204, 1000, 42) == 1246
    assert sshplan.job_port(1204, 1000, 1042) == 1246   # ids a multiple of port_count apart collide
    assert len({sshplan.job_port(1204, 1000, j) for j in range(500, 520)}) == 20
    assert sshplan.job_port(1204, 1, 99) == 1204         # port_count 1: the original's one port


def test_ssh_config_sends_only_the_jobs_nodes_to_the_jobs_sshd():
    from shifter_wlm import sshd, sshplan

    text = sshplan.ssh_config(7, {"n1": "127.0.0.1", "c2": "c2", "bad name": "a*b"}, 1211)
    lines = [line.strip() for line in text.splitlines()]
    assert "Host n1 127.0.0.1 c2" in lines               # names and addresses, nothing else
    assert lines.index("Host *") > lines.index("Port 1211")
    for want in ("Port 1211", f"IdentityFile {sshd.OPENSSH_KEY}", f"UserKnownHostsFile {sshd.KNOWN_HOSTS}",
                 "StrictHostKeyChecking yes", "PasswordAuthentication no", "BatchMode yes"):
        assert want in lines, text


def test_the_openssh_key_is_the_users_job_key(tmp_path):
    """ssh-keygen reads the OpenSSH-format copy and finds the same public key."""
    from shifter_wlm import sshkeys

    seed = os.urandom(32)
    key = tmp_path / "id_ed25519"
    key.write_text(sshkeys.openssh_private(seed, "c"))
    key.chmod(0o600)
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], capture_output=True, text=True, check=True)
    assert derived.stdout.split()[:2] == sshkeys.public_line(seed).split()[:2]

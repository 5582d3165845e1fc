"""The job's sshd inside the container (non-MPI parallel jobs), on the local 3-node cluster
as a plain user: `ssh <node>` and `scp` from inside the container land in the job's
container on that node; other users' keys, root and passwords are refused; the sshd is the
user with no capabilities; nothing is left after the job.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import imagebuilder as ib
import images
import jobtools as jt
from conftest import localcluster, run_as

pytestmark = pytest.mark.cluster
USER, OTHER = "testuser", "testuser2"
ADDRS = {"n1": "127.0.0.1", "n2": "127.0.0.2", "n3": "127.0.0.3"}
DBCLIENT = str(localcluster.PREFIX / "udiImage/bin/dbclient")
EXTRA_APPLETS = ("sort", "uniq", "tr", "cut", "sed", "cmp")


@pytest.fixture(scope="module")
def image(cluster):
    """busybox (no bash: the users' login shell is /bin/bash, the sshd falls back to /bin/sh)."""
    root = Path(tempfile.mkdtemp())
    try:
        images.make_root(root)
        for applet in EXTRA_APPLETS:
            (root / "bin" / applet).symlink_to("busybox")
        layer = ib.layer_from_dir(root)
    finally:
        shutil.rmtree(root)
    ib.push("127.0.0.1:5000", "sshd/app", "1", ib.Image([layer], config={"Env": ["PATH=/usr/bin:/bin"]}))
    pulled = run_as(USER, [str(localcluster.PREFIX / "bin/shifterimg"), "pull", "docker:sshd/app:1"])
    assert pulled.returncode == 0, pulled.stderr
    return "docker:sshd/app:1"


def _key(user: str) -> Path:
    return jt.home(user) / ".udiRoot/id_dropbear"


def _dropbear_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "exe").endswith("/dropbearmulti"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.strip()
    return fields


# the ssh part runs inside the container on the first node; the perNodeCache /cache is
# private to each node's container, so a marker written there by a step on each node tells
# which container an ssh session landed in
SSH_JOB = """#!/bin/bash
#SBATCH -N 3 -n 3 -t 5
#SBATCH --image={image}
#SBATCH --volume=/ignored:/cache:perNodeCache=size=512m
srun shifter sh -c 'echo "$SLURMD_NODENAME" > /cache/marker'
srun -N1 -n1 -w "$SLURMD_NODENAME" shifter sh -c '
  echo "which=$(command -v ssh)"
  for h in $(sort -u /var/hostsfile); do
    ssh "$h" "echo ssh-to=$h container=\\$(cat /cache/marker) uid=\\$(id -u) server=\\$(echo \\$SSH_CONNECTION | cut -d\\" \\" -f3) \\
      hosts=\\$(sort -u /var/hostsfile | tr \\"\\\\n\\" ,) \\$(grep -E \\"^(CapEff|CapBnd|NoNewPrivs)\\" /proc/self/status | tr -d \\"\\\\t\\" | tr \\":\\\\n\\" \\"= \\")" \\
      || echo "ssh-failed=$h"
  done
  echo "payload from $SLURMD_NODENAME" > /tmp/sshd-test-payload.$SLURM_JOB_ID
  for h in $(sort -u /var/hostsfile); do
    scp -q /tmp/sshd-test-payload.$SLURM_JOB_ID "$h":/cache/copied && ssh "$h" "echo scp-to=$h got=\\$(cat /cache/copied | tr \\" \\" _)"
  done
  rm -f /tmp/sshd-test-payload.$SLURM_JOB_ID
'
echo ready > {ready}
for i in $(seq 600); do [ -e {done} ] && break; sleep 0.1; done
"""


def _client(user: str, key: Path, login: str, addr: str, port: int, *extra: str) -> subprocess.CompletedProcess:
    """dropbear's client from the host, with no host key check (the refusals are the point)."""
    argv = [DBCLIENT, "-y", "-y", "-p", str(port), "-i", str(key), "-l", login, *extra, addr, "echo", "got-in"]
    env = {"HOME": "/nonexistent", "PATH": "/usr/bin:/bin"}
    if user == "root":
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env, stdin=subprocess.DEVNULL)
    return run_as(user, argv, timeout=30, stdin=subprocess.DEVNULL)


def _finish(state: dict) -> str:
    """Let the job end (once) and return its output."""
    if "output" not in state:
        state["done"].touch()
        out, err = state["proc"].communicate(timeout=180)
        assert state["proc"].returncode == 0, err
        job_id = out.strip().split(";")[0]
        state["job_id"] = job_id
        state["output"] = (state["job"].parent / f"sshd-{job_id}.out").read_text()
    return state["output"]


@pytest.fixture(scope="module")
def ssh_job(image):
    """The ssh job, submitted by a user who had no key yet. While it waits at its end, the
    host-side checks below run; the tests run in file order, the last ones end the job."""
    shutil.rmtree(jt.home(USER) / ".udiRoot", ignore_errors=True)
    ready, done = jt.home(USER) / "sshd-ready", jt.home(USER) / "sshd-done"
    for p in (ready, done):
        p.unlink(missing_ok=True)
    job = jt.write_job(USER, "sshd.sl", SSH_JOB.format(image=image, ready=ready, done=done))
    proc = subprocess.Popen(["runuser", "-u", USER, "--", "sbatch", "--parsable", "--wait", "-o", "sshd-%j.out",
                             str(job)], cwd=job.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state: dict = {"done": done, "proc": proc, "job": job}
    try:
        jt.wait_for_file(ready, proc, timeout=120)
        state["job_id"] = jt.job_id_by_name(USER, job.name)
        record = json.loads((jt.run_dir() / "n1" / "jobs" / f"{state['job_id']}.json").read_text())
        state["port"] = record["sshd_port"]
        assert state["port"] == jt.sshd_port(record["job_id"]), record
        yield state
    finally:
        jt.release_held_job(proc, done)


def test_submit_made_the_users_key_pair(ssh_job):
    key = _key(USER)
    st, dst = key.stat(), key.parent.stat()
    uid = pwd.getpwnam(USER).pw_uid
    assert (st.st_uid, st.st_mode & 0o777) == (uid, 0o600)
    assert (dst.st_uid, dst.st_mode & 0o777) == (uid, 0o700)
    assert Path(f"{key}.pub").read_text().startswith("ssh-ed25519 ")


def test_sshd_runs_as_the_user_without_capabilities_on_each_node_address(ssh_job):
    uid = str(pwd.getpwnam(USER).pw_uid)
    seen = {}
    for node in ADDRS:
        record = json.loads((jt.run_dir() / node / "jobs" / f"{ssh_job['job_id']}.json").read_text())
        pid = record["sshd_pid"]
        assert record["state"] == "ready" and pid > 0, record
        status = _status(pid)
        assert status["Uid"].split() == [uid] * 4 and status["Gid"].split()[0] != "0"
        assert status["CapEff"] == status["CapPrm"] == status["CapBnd"] == "0000000000000000"
        assert status["NoNewPrivs"] == "1"
        # inside the job's container on that node (its pinned mount namespace)
        ns = jt.run_dir() / node / record["key"] / "ns"
        assert os.readlink(f"/proc/{pid}/ns/mnt") == f"mnt:[{ns.stat().st_ino}]"
        seen[node] = pid
    assert len(set(seen.values())) == 3
    port = ssh_job["port"]
    listening = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True).stdout
    for node, addr in ADDRS.items():
        assert f"{addr}:{port}" in listening and f"pid={seen[node]}," in listening, listening


def test_the_users_key_gets_in_from_the_host(ssh_job):
    """The positive control for the refusals below: same client, the user's own key."""
    result = _client(USER, _key(USER), USER, ADDRS["n2"], ssh_job["port"])
    assert result.returncode == 0 and "got-in" in result.stdout, result.stderr


def test_another_users_key_is_refused(ssh_job):
    other_key = jt.home(OTHER) / "other-key"
    made = run_as(OTHER, [str(localcluster.PREFIX / "udiImage/bin/dropbearkey"), "-t", "ed25519", "-f",
                          str(other_key)])
    assert made.returncode == 0, made.stderr
    try:
        for login in (USER, OTHER):
            result = _client(OTHER, other_key, login, ADDRS["n2"], ssh_job["port"])
            assert result.returncode != 0 and "got-in" not in result.stdout, result
            assert "No auth methods could be used" in result.stderr, result.stderr
    finally:
        other_key.unlink(missing_ok=True)


def test_root_is_refused_even_with_the_users_key(ssh_job):
    result = _client("root", _key(USER), "root", ADDRS["n3"], ssh_job["port"])
    assert result.returncode != 0 and "got-in" not in result.stdout, result
    assert "No auth methods could be used" in result.stderr, result.stderr


def test_no_password_authentication_is_offered(ssh_job):
    """OpenSSH's client, asking for passwords only: the server offers nothing but publickey."""
    result = run_as(USER, ["ssh", "-p", str(ssh_job["port"]), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                           "-o", "UserKnownHostsFile=/dev/null", "-o", "PubkeyAuthentication=no",
                           "-o", "PreferredAuthentications=password,keyboard-interactive",
                           f"{USER}@{ADDRS['n1']}", "echo", "got-in"], timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode == 255 and "got-in" not in result.stdout, result
    assert "Permission denied (publickey)" in result.stderr, result.stderr


def test_ssh_and_scp_between_nodes_land_in_the_same_container(ssh_job):
    output = _finish(ssh_job)
    uid = str(pwd.getpwnam(USER).pw_uid)
    assert "which=/opt/udiImage/bin/ssh" in output, output
    assert "ssh-failed" not in output, output
    lines = jt.lines_with("ssh-to=", output)
    assert len(lines) == 3, output
    for line in lines:
        node = jt.field("ssh-to", line)
        assert jt.field("container", line) == node, line        # that node's job container
        assert jt.field("server", line) == ADDRS[node], line     # that node's own sshd
        assert jt.field("uid", line) == uid, line
        assert jt.field("hosts", line) == "n1,n2,n3,", line
        assert jt.field("CapEff", line) == "0000000000000000" and jt.field("NoNewPrivs", line) == "1", line
    copies = jt.lines_with("scp-to=", output)
    assert [jt.field("scp-to", c) for c in copies] == ["n1", "n2", "n3"], output
    assert all(jt.field("got", c) == "payload_from_n1" for c in copies), output


def test_after_the_job_no_sshd_remains_on_any_node(ssh_job):
    _finish(ssh_job)
    jt.wait_gone(ssh_job["job_id"])
    deadline = time.monotonic() + 20
    while _dropbear_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _dropbear_pids() == []
    jt.assert_clean()


# ---------------------------------------------------------------- pure parts (no cluster)


def test_ed25519_public_key_matches_dropbearkey(tmp_path):
    from shifter_wlm import sshd

    made = subprocess.run([str(localcluster.PREFIX / "udiImage/bin/dropbearkey"), "-t", "ed25519", "-f",
                           str(tmp_path / "k")], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    data = (tmp_path / "k").read_bytes()
    seed = sshd.seed_of(data, "k")
    assert sshd.dropbear_private(seed) == data
    printed = next(line for line in made.stdout.splitlines() if line.startswith("ssh-ed25519 "))
    assert sshd.public_line(seed).split()[1] == printed.split()[1]
    with pytest.raises(sshd.SshdError, match="not an ed25519 key"):
        sshd.seed_of(data[:-1], "k")
    with pytest.raises(sshd.SshdError, match="damaged"):
        sshd.seed_of(data[:-1] + bytes([data[-1] ^ 1]), "k")


def test_user_key_is_made_once_private(tmp_path):
    from shifter_wlm import sshd

    made = sshd.ensure_user_key(str(tmp_path))
    assert made == str(tmp_path / ".udiRoot/id_dropbear")
    assert (tmp_path / ".udiRoot/id_dropbear").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / ".udiRoot").stat().st_mode & 0o777 == 0o700
    before = (tmp_path / ".udiRoot/id_dropbear").read_bytes()
    assert sshd.ensure_user_key(str(tmp_path)) is None
    assert (tmp_path / ".udiRoot/id_dropbear").read_bytes() == before
    seed = sshd.seed_of(before, "k")
    assert (tmp_path / ".udiRoot/id_dropbear.pub").read_text().split()[:2] == sshd.public_line(seed).split()


def test_host_key_is_per_job_and_needs_a_private_secret(tmp_path):
    from shifter_wlm import sshd

    secret = tmp_path / "secret"
    secret.write_bytes(b"s" * 32)
    secret.chmod(0o600)
    a, b = sshd.host_seed(str(secret), 1, 1001), sshd.host_seed(str(secret), 2, 1001)
    assert a == sshd.host_seed(str(secret), 1, 1001) and a != b and len(a) == 32
    secret.chmod(0o644)
    with pytest.raises(sshd.SshdError, match="readable by its owner only"):
        sshd.host_seed(str(secret), 1, 1001)
    with pytest.raises(sshd.SshdError, match="must provide it"):
        sshd.host_seed(str(tmp_path / "missing"), 1, 1001)


def test_addresses_here_and_on_a_usual_cluster():
    from shifter_wlm import slurm, sshd, sshplan

    text = ("NodeName=n1 Arch=x86_64 CoresPerSocket=1 NodeAddr=127.0.0.1 NodeHostName=vm Version=22.05\n"
            "NodeName=n2 Arch=x86_64 NodeAddr=127.0.0.2 NodeHostName=vm\n")
    assert slurm.parse_show_nodes(text) == {"n1": "127.0.0.1", "n2": "127.0.0.2"}
    # several slurmd on one host: listen on the node's address, map names in /etc/hosts
    assert sshplan.listen_address("n2", "127.0.0.2") == "127.0.0.2"
    assert sshplan.host_addrs({"n1": "127.0.0.1", "n2": "127.0.0.2"}) == (("n1", "127.0.0.1"), ("n2", "127.0.0.2"))
    # a usual cluster (NodeAddr = the name, or a host name): every address, nothing added
    assert sshplan.listen_address("nid001", "nid001") == ""
    assert sshplan.host_addrs({"nid001": "nid001", "nid002": "nid002-hsn"}) == ()
    seed = b"\1" * 32
    hosts = sshplan.known_hosts({"n1": "127.0.0.1", "c2": "c2"}, 1301, seed).splitlines()
    # as dbclient looks a host up (the name as typed) and as OpenSSH does for a port not 22
    assert [h.split()[0] for h in hosts] == ["n1", "[n1]:1301", "127.0.0.1", "[127.0.0.1]:1301", "c2", "[c2]:1301"]
    assert all(h.split(None, 1)[1] == sshd.public_line(seed) for h in hosts)


def test_sshd_config_needs_the_udiimage_content(tmp_path):
    from shifter_site import config

    text = "system: s\nimage_dir: /i\nrun_dir: /r\ngateway: {urls: [http://g]}\nregistries: {default: http://r}\nsshd: {enabled: true}\n"
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(Exception, match="opt_udi_image"):
        config.load(str(path), privileged=False)
    path.write_text(text + "opt_udi_image: /opt/shifter/udiImage\n")
    assert config.load(str(path), privileged=False).sshd.port == 1204


CCM_JOB = """#!/bin/sh
#SBATCH -N 3 -n 3 -t 5
#SBATCH --image={image}
#SBATCH --volume=/ignored:/cache:perNodeCache=size=512m
#SBATCH --ccm
echo "batch release=$(cat /etc/os-release | tr ' ' _) uid=$(id -u) script=$0 caps=$(grep CapEff /proc/self/status | tr -d '\\t')"
touch /cache/batch-was-here
for h in $(sort -u /var/hostsfile); do
  ssh "$h" "echo ccm-ssh-to=$h server=\\$(echo \\$SSH_CONNECTION | cut -d' ' -f3) batchcache=\\$(ls /cache | tr '\\n' ,)"
done
"""


def test_ccm_runs_the_batch_script_in_the_container_with_ssh_to_every_node(image):
    """--ccm: the batch script itself runs inside the job's container on the first node (as
    the user, no capabilities) and reaches every node's container over ssh."""
    job = jt.write_job(USER, "ccm.sl", CCM_JOB.format(image=image))
    job_id, output, _ = jt.sbatch_wait(USER, job)
    uid = pwd.getpwnam(USER).pw_uid
    assert f"batch release=NAME=shifter-test uid={uid} script=/var/run/udiImage/ccm/job-script " \
           "caps=CapEff:0000000000000000" in output, output
    hops = jt.lines_with("ccm-ssh-to=", output)
    assert [jt.field("ccm-ssh-to", h) for h in hops] == ["n1", "n2", "n3"], output
    for hop in hops:
        assert jt.field("server", hop) == ADDRS[jt.field("ccm-ssh-to", hop)]
    # the batch script ran on the first node, in its container: only n1's cache has its mark
    assert [jt.field("batchcache", h) for h in hops] == ["batch-was-here,", "", ""]
    assert not _dropbear_pids()
    jt.assert_clean()


def test_ccm_needs_an_image(cluster):
    result = run_as(USER, ["sbatch", "--ccm", "--wrap", "true"], cwd="/tmp")
    assert result.returncode != 0
    assert "sbatch: error: shifter: --ccm needs --image" in result.stderr

"""Attack: the job's sshd. Another user listening on the sshd's port first made the job's
sshd fail to bind while the prolog logged it as started (its probe connected to the
squatter), and the user was never told; the sshd ran as the user holding a root-opened log
file of the node (jobs/<job>.sshd.log), writable without limit. Now readiness is a
listening socket the sshd's own pid holds, the failure reaches the job's user, and the
sshd holds nothing root opened. A job's port is predictable (sshd.port + job id mod
sshd.port_count): the squatter here binds it between submission and start. On the local
cluster: testuser runs the job, testuser2 squats; uids from pwd."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import jobtools as jt
from conftest import run_as

pytestmark = pytest.mark.cluster
USER, SQUATTER = "testuser", "testuser2"
IMAGE = "docker:attack/sshd:1"


@pytest.fixture(scope="module")
def image(cluster):
    from test_slurm_jobs import _push_and_pull
    _push_and_pull("attack/sshd", "1", ["PATH=/usr/bin:/bin"])
    return IMAGE


def _dropbears(uid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "exe").endswith("/dropbearmulti") and entry.stat().st_uid == uid:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_a_squatted_port_fails_the_sshd_and_the_user_is_told(image):
    job = jt.write_job(USER, "squatted.sl", f"""#!/bin/bash
#SBATCH -N 2 -n 2 -w n2,n3 -t 5
#SBATCH --image={IMAGE}
srun -N2 -n2 shifter true; echo "steps=$?"
""")
    submitted = run_as(USER, ["sbatch", "--parsable", "-H", "-o", "squatted-%j.out", str(job)], cwd=job.parent)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip().split(";")[0]
    port = jt.sshd_port(job_id)  # what the squatter works out too
    entry = pwd.getpwnam(SQUATTER)
    squat = subprocess.Popen(  # the squatter itself (no runuser in between: kill() must reach it)
        [sys.executable, "-c",
         "import socket,sys,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
         f"s.bind(('127.0.0.3', {port})); s.listen(); print('listening', flush=True); time.sleep(300)"],
        stdout=subprocess.PIPE, text=True, user=entry.pw_uid, group=entry.pw_gid, extra_groups=[],
        env={"PATH": "/usr/bin:/bin"})
    try:
        assert squat.stdout.readline().strip() == "listening"
        released = run_as(USER, ["scontrol", "release", job_id])
        assert released.returncode == 0, released.stderr
        jt.wait_gone(job_id, timeout=120)
    finally:
        squat.kill()
        squat.wait()
    output = (job.parent / f"squatted-{job_id}.out").read_text()
    assert "steps=0" in output, output
    warnings = [line for line in output.splitlines() if "shifter: warning:" in line]
    # once, from n3 (whose address the squatter held); n2's sshd started
    assert len(warnings) == 1, output
    assert f"could not start on 127.0.0.3:{port}" in warnings[0], warnings
    assert "ssh to this node will not reach the job" in warnings[0]
    jt.assert_clean()


def test_the_sshd_holds_no_root_opened_file_and_logs_to_its_own(image):
    uid = pwd.getpwnam(USER).pw_uid
    submitted = run_as(USER, ["sbatch", "--parsable", "-N1", "-w", "n3", f"--image={IMAGE}", "-o", "/dev/null",
                              "--wrap", "sleep 60"], cwd="/tmp")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip().split(";")[0]
    try:
        deadline = time.monotonic() + 60
        while not _dropbears(uid):
            assert time.monotonic() < deadline, "the job's sshd never started"
            time.sleep(0.2)
        [pid] = _dropbears(uid)
        held = {}
        for fd in os.listdir(f"/proc/{pid}/fd"):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            st = os.stat(f"/proc/{pid}/fd/{fd}")
            flags = int(Path(f"/proc/{pid}/fdinfo/{fd}").read_text().split("flags:")[1].split()[0], 8)
            held[int(fd)] = (target, st.st_uid, st.st_mode, flags & os.O_ACCMODE)
        for fd, (target, owner, mode, access) in held.items():
            assert str(jt.run_dir()) not in target, held
            if target.startswith("/") and stat.S_ISREG(mode) and owner != uid:
                # only what the user could open themselves: world-readable, read-only
                assert access == os.O_RDONLY and mode & 0o004, (fd, target, owner, oct(mode))
        assert held[2][0] == "/var/run/udiImage/ssh/run/sshd.log", held
        log = Path(f"/proc/{pid}/root/var/run/udiImage/ssh/run/sshd.log")
        assert log.stat().st_uid == uid
        assert not list((jt.run_dir() / "n3" / "jobs").glob("*.sshd.log"))
    finally:
        run_as(USER, ["scancel", job_id])
        jt.wait_gone(job_id)
    jt.assert_clean()


def test_readiness_counts_only_a_socket_the_sshd_itself_holds():
    """The probe behind the prolog's readiness: a listener held by another process (the
    squatter) on the same address and port is not the sshd listening."""
    import socket

    from shifter_wlm import sshd

    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    port = squatter.getsockname()[1]
    try:
        assert sshd.listening(os.getpid(), "127.0.0.1", port)          # the holder itself
        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], pass_fds=())
        try:
            assert not sshd.listening(other.pid, "127.0.0.1", port)   # someone else: not ready
        finally:
            other.kill()
            other.wait()
        assert not sshd.listening(os.getpid(), "127.0.0.2", port)     # another address
        assert not sshd.listening(os.getpid(), "", port)               # not the wildcard
    finally:
        squatter.close()

"""Shared fixtures: the real local cluster, running things as the test users, CI strictness."""

from __future__ import annotations

import importlib.util
import grp
import os
import pwd
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
IN_CI = bool(os.environ.get("CI"))

# A run started in the background of a non-interactive shell (`make test &`) has SIGINT
# ignored, and every process the tests start would inherit that: the tests that press Ctrl-C
# (on a pull's wait, on a hung benchmark) would then wait in vain. With a handler here, the
# processes the tests start get SIGINT's default back at exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _load_localcluster():
    spec = importlib.util.spec_from_file_location("localcluster", REPO / "tools/localcluster.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["localcluster"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


localcluster = _load_localcluster()


def need(condition: bool, reason: str) -> None:
    """Skip when a requirement (root, a tool) is missing, except in CI, where it is a failure."""
    if not condition:
        if IN_CI:
            pytest.fail(f"CI must run this test: {reason}")
        pytest.skip(reason)


def account(name: str) -> pwd.struct_passwd:
    """A test account as this system has it (made as the local cluster makes it, if missing):
    tests take uids, gids, homes and shells from here, never from literals."""
    localcluster.make_users()
    return pwd.getpwnam(name)


def group_id(name: str) -> int:
    localcluster.make_users()
    return grp.getgrnam(name).gr_gid


def run_as(user: str, argv: list[str], **kw) -> subprocess.CompletedProcess:
    """Run argv as a test user with a login-like environment (no root environment leaks in)."""
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 120)
    return subprocess.run(["runuser", "-u", user, "--", "env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin",
                           f"HOME={Path('~' + user).expanduser()}", f"USER={user}", *argv], **kw)


@pytest.fixture(scope="session")
def cluster():
    """The local cluster, up for the session. If this session started it, it is taken down at
    the end and must leave no process behind."""
    need(os.geteuid() == 0, "the local cluster needs root")
    already = all(d.pid() for d in localcluster.daemons())
    localcluster.up()
    yield localcluster
    if not already:
        localcluster.down()
        assert localcluster.leftover_processes() == []


# what the suite may not leave behind: mounts, loop devices, and processes of ours
OUR_PROCESSES = ("squashfuse", "squashfuse_ll", "dropbear", "slurmd", "slurmctld", "slurmstepd", "munged",
                 "docker-registry", "shifter-gateway", "mkfs.xfs", "mkfs.ext4", "tar2sqfs", "postgres")


def _our_state() -> dict[str, list[str]]:
    with open("/proc/self/mountinfo") as f:
        mounts = [" ".join(line.split(" ")[3:5]) for line in f]
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout.splitlines()
    procs = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        names = {os.path.basename(a.decode(errors="replace")) for a in argv[:2] if a}
        if names & set(OUR_PROCESSES):
            procs.append(f"{pid} {b' '.join(argv).decode(errors='replace').strip()}")
    return {"mounts": mounts, "loop devices": loops, "processes": procs}


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind():
    """The whole suite, whatever failed on the way, ends with no mount, loop device or
    process of ours that it did not find at the start (torn down after the cluster)."""
    if os.geteuid() != 0:
        yield
        return
    before = _our_state()
    cluster_was_up = all(d.pid() for d in localcluster.daemons())
    yield
    import time
    deadline = time.monotonic() + 10  # AUTOCLEAR loops and killed FUSE daemons go a moment later
    while True:
        after = _our_state()
        if cluster_was_up:  # it stays up, as found; tests may have restarted its daemons
            running = {str(d.pid()) for d in localcluster.daemons()}
            after["processes"] = [p for p in after["processes"] if p.split(" ")[0] not in running]
        left = {k: sorted(set(after[k]) - set(before[k])) for k in after}
        if not any(left.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not any(left.values()), f"the test suite left these behind: {left}"



@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL cluster of the tests' own (initdb/pg_ctl as the system's PostgreSQL
    account, loopback only), stopped and removed at the end of the session."""
    import pgcluster

    need(os.geteuid() == 0, "starting a PostgreSQL cluster as its account needs root")
    need(pgcluster.server_bin() is not None, "Debian's postgresql server is not installed (make apt)")
    server = pgcluster.Cluster()
    try:
        yield server
    finally:
        server.stop()

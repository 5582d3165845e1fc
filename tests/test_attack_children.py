"""Attack: root's helper children that run as the user (runtime.asuser), and the locks
builds take. An attacker process of the same uid tries what worked before the fix: take the
child's fds with pidfd_getfd (slurmd's log, the node-wide lock), ptrace it, read its memory,
stop it to stall other users' builds. Each must fail. No cluster, no mounts: root forks the
child and the attacker (testuser, uid from pwd)."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import pwd
import signal
import tempfile
import time

import pytest

from conftest import need
from runtime import asuser, teardown
from runtime import syscalls as sc

ATTACKER = "testuser"
SYS_PIDFD_GETFD = 438
PTRACE_ATTACH = 16


def _user(name: str):
    from types import SimpleNamespace

    entry = pwd.getpwnam(name)
    gids = sorted({g for g in os.getgrouplist(name, entry.pw_gid)})
    return SimpleNamespace(uid=entry.pw_uid, gid=entry.pw_gid, gids=gids, name=name)


@pytest.fixture
def victim_state():
    """What root holds while it builds: a log file (as slurmd's) and a container lock."""
    need(os.geteuid() == 0, "forking a child as another user needs root")
    base = tempfile.mkdtemp(prefix="shifter-attack-")
    log = os.open(os.path.join(base, "slurmd.log"), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    lock = teardown.lock(os.path.join(base, "run"), "a" * 32)
    yield {"base": base, "log": log, "lock": lock}
    os.close(log)
    teardown.unlock(os.path.join(base, "run"), "a" * 32, lock)
    import shutil
    shutil.rmtree(base)


def _report(info: dict) -> list[int]:
    """For work(): the child's findings travel back as a pipe it hands over."""
    r, w = os.pipe()
    os.write(w, json.dumps(info).encode())
    os.close(w)
    return [r]


def _read(fd: int) -> dict:
    with os.fdopen(fd) as handle:
        return json.load(handle)


def test_child_is_the_user_not_dumpable_and_holds_no_root_fd(victim_state):
    user = _user(ATTACKER)

    def work():
        fds = {}
        for name in os.listdir("/proc/self/fd"):
            try:
                fds[name] = os.readlink(f"/proc/self/fd/{name}")
            except OSError:
                pass
        return _report({"dumpable": sc.dumpable(), "uids": os.getresuid(), "gids": os.getresgid(),
                        "groups": sorted(os.getgroups()), "fds": fds})

    [fd] = asuser.run(user, work)
    info = _read(fd)
    assert info["dumpable"] == 0
    assert info["uids"] == [user.uid] * 3 and info["gids"] == [user.gid] * 3
    assert 0 not in info["groups"]
    # only its reply socket, the report pipe and listdir's own handle: nothing root opened
    assert all(t.startswith(("socket:", "pipe:", "/proc/")) for t in info["fds"].values()), info["fds"]
    assert victim_state["base"] not in json.dumps(info["fds"])


def _attacker(uid: int, gid: int, parent: int, out: int) -> None:
    """As the attacker: find root's child running as us, try to take its fds, ptrace it,
    read its memory and fd table; report what worked."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    libc = ctypes.CDLL(None, use_errno=True)
    found, deadline = None, time.monotonic() + 10
    while found is None and time.monotonic() < deadline:
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == os.getpid():
                continue
            try:
                status = open(f"/proc/{name}/status").read()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            if int(fields["PPid"]) == parent and int(fields["Uid"].split()[0]) == uid:
                found = int(name)
                break
        time.sleep(0.005)
    result = {"found": found, "got_fds": [], "ptrace": None, "mem": None, "fd_dir": None}
    if found:
        pidfd = os.pidfd_open(found)
        for target in range(0, 64):
            fd = libc.syscall(SYS_PIDFD_GETFD, pidfd, target, 0)
            if fd >= 0:
                result["got_fds"].append([target, os.readlink(f"/proc/self/fd/{fd}")])
        result["ptrace"] = libc.ptrace(PTRACE_ATTACH, found, None, None) == 0 or ctypes.get_errno()
        try:
            open(f"/proc/{found}/mem", "rb").close()
            result["mem"] = "opened"
        except OSError as err:
            result["mem"] = err.errno
        try:
            result["fd_dir"] = os.listdir(f"/proc/{found}/fd")
        except OSError as err:
            result["fd_dir"] = err.errno
        os.kill(found, signal.SIGCONT)
    os.write(out, json.dumps(result).encode())


def test_attacker_cannot_take_fds_ptrace_or_read_the_child(victim_state):
    user = _user(ATTACKER)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            _attacker(user.uid, user.gid, os.getppid(), w)
        finally:
            os._exit(0)
    os.close(w)
    fds = asuser.run(user, lambda: (time.sleep(1.5), [])[1])
    assert fds == []
    with os.fdopen(r) as handle:
        result = json.load(handle)
    os.waitpid(pid, 0)
    assert result["found"], "the attacker never saw the child: the test proves nothing"
    assert result["got_fds"] == []
    assert result["ptrace"] == errno.EPERM
    assert result["mem"] == errno.EACCES
    assert result["fd_dir"] == errno.EACCES


def test_a_child_the_user_stops_costs_a_bounded_wait_and_is_killed():
    need(os.geteuid() == 0, "forking a child as another user needs root")
    user = _user(ATTACKER)

    def work():
        os.kill(os.getpid(), signal.SIGSTOP)  # what the attacker did to it from outside
        return []

    start = time.monotonic()
    with pytest.raises(asuser.AsUserError, match="did not finish within 1 s"):
        asuser.run(user, work, what="resolving", timeout=1)
    assert time.monotonic() - start < 5
    # no child of ours running as the user is left (stopped or zombie)
    assert _children_as(user.uid) == []


def _children_as(uid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        try:
            fields = dict(line.split(":", 1) for line in open(f"/proc/{name}/status").read().splitlines()
                          if ":" in line)
        except (OSError, ValueError):
            continue
        if int(fields["PPid"]) == os.getpid() and int(fields["Uid"].split()[0]) == uid:
            found.append(int(name))
    return found


def test_locks_are_per_container_bounded_and_leave_no_file():
    need(os.geteuid() == 0, "the run dir is root's")
    run = tempfile.mkdtemp(prefix="shifter-locks-")
    try:
        held = teardown.lock(run, "a" * 32)
        start = time.monotonic()
        other = teardown.lock(run, "b" * 32, timeout=1)  # another user's container: no wait
        assert time.monotonic() - start < 0.5
        teardown.unlock(run, "b" * 32, other)
        with pytest.raises(teardown.LockTimeout, match="stayed locked"):
            teardown.lock(run, "a" * 32, timeout=0.3)
        teardown.unlock(run, "a" * 32, held)
        again = teardown.lock(run, "a" * 32, timeout=1)
        teardown.unlock(run, "a" * 32, again)
        assert os.listdir(run) == []
    finally:
        os.rmdir(run)

"""Tear down a pinned container: idempotent, and correct after a build stopped anywhere
(including `kill -9` of the builder).

What a build can leave on the host, and how each goes:
- processes in the container's namespace: killed (found by namespace inode);
- the pin (`<state>/ns`): unmounted; the kernel then drops every mount in the namespace,
  and the AUTOCLEAR loop devices (image, perNodeCache) detach with their last mount;
- perNodeCache backing files not yet unlinked (named in `intent.json`): removed;
- the state dir's private self-bind and the state dir itself: unmounted and removed.
A killed builder's own namespace dies with it, so nothing mounted there survives.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import shutil
import signal
import stat
import time

from runtime import syscalls as sc
from runtime.mountinfo import mounted_at
from shifter_site import logs
from shifter_site.errors import ShifterError


LOCK_TIMEOUT = 120.0


class LockTimeout(ShifterError):
    """Another build or teardown of the same container held it too long."""


def _lock_path(run_dir: str, key: str) -> str:
    return os.path.join(run_dir, f".{key}.lock")


def lock(run_dir: str, key: str, timeout: float = LOCK_TIMEOUT) -> int:
    """An exclusive lock for one container key, waited for at most `timeout` seconds.

    Per key, never per node: a build that its own user stalls (their helper child stopped,
    runtime.asuser) holds up only builds of that very container, not other users' jobs.
    The lock file `<run_dir>/.<key>.lock` exists only while held: unlock() removes it, and
    a waiter that locked a file already removed tries again."""
    os.makedirs(run_dir, 0o755, exist_ok=True)
    path = _lock_path(run_dir, key)
    deadline = time.monotonic() + timeout
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise LockTimeout(f"container {key} on this node stayed locked for {timeout:.0f} s "
                                          "by another build or teardown of it; try again") from None
                    time.sleep(0.05)
            held = os.fstat(fd)
            try:
                now = os.lstat(path)
            except FileNotFoundError:
                now = None
            if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # released and removed meanwhile: take the new one


def unlock(run_dir: str, key: str, fd: int) -> None:
    """Release lock(): remove its file while still holding it, then close."""
    try:
        os.unlink(_lock_path(run_dir, key))
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)


def processes_in(ns_path: str) -> list[int]:
    """Pids whose mount namespace is the one pinned at ns_path."""
    st = os.stat(ns_path)
    want = f"mnt:[{st.st_ino}]"
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.readlink(f"/proc/{name}/ns/mnt") == want:
                    pids.append(int(name))
            except OSError:
                continue
    return pids


def _kill_all(ns_path: str, timeout: float = 10.0) -> int:
    killed = 0
    deadline = time.monotonic() + timeout
    while True:
        pids = processes_in(ns_path)
        if not pids:
            return killed
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            raise OSError(f"processes {pids} in the container did not exit")
        time.sleep(0.01)


def teardown(run_dir: str, key: str, *, locked: bool = False) -> bool:
    """Remove everything of container `key`; True when there was something to remove."""
    log = logs.get("runtime")
    state = os.path.join(run_dir, key)
    lock_fd = -1 if locked else lock(run_dir, key)
    try:
        if not os.path.lexists(state):
            return False
        if os.path.islink(state) or not os.path.isdir(state):
            raise OSError(f"{state} is not a directory; refusing to touch it")
        with logs.step(log, "teardown", key=key) as info:
            ns = os.path.join(state, "ns")
            if os.path.exists(ns) and os.stat(ns).st_dev != os.stat(state).st_dev:
                info["killed"] = _kill_all(ns)
                sc.umount2(ns, sc.MNT_DETACH)
            try:
                with open(os.path.join(state, "intent.json")) as f:
                    prefix = json.load(f).get("cache_prefix")
            except (OSError, ValueError):
                prefix = None
            if prefix:
                for path in glob.glob(glob.escape(prefix) + "*"):
                    st = os.lstat(path)
                    if stat.S_ISREG(st.st_mode) and st.st_uid == 0:
                        os.unlink(path)
            while mounted_at(state):
                sc.umount2(state, sc.MNT_DETACH)
            shutil.rmtree(state)
        return True
    finally:
        if lock_fd >= 0:
            unlock(run_dir, key, lock_fd)


def teardown_all(run_dir: str) -> list[str]:
    """Tear down every container under run_dir (node cleanup); returns the keys removed."""
    removed = []
    if not os.path.isdir(run_dir):
        return removed
    for key in sorted(os.listdir(run_dir)):
        if len(key) == 32 and all(c in "0123456789abcdef" for c in key):
            if teardown(run_dir, key):
                removed.append(key)
    return removed

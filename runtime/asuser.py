"""Do a small piece of path work with a user's rights, from root: open the user's volume
sources, walk and create volume targets on host directories. The kernel then checks every
component with the user's uid, groups and mount view, so root never creates, opens or
reports on a host path with more rights than the user has.

The work runs in a child forked from root that becomes the user, so the user can signal it
and, were it dumpable, ptrace it or take its fds (pidfd_getfd). Hence, before the uid change
and again after it (the kernel resets dumpability from fs.suid_dumpable on every uid change,
and clears the parent-death signal), the child:

- is not dumpable (checked: PR_GET_DUMPABLE must read 0 after setresuid, else it gives up):
  no ptrace, no pidfd_getfd, no /proc/<pid>/mem of its copy of root's memory;
- holds no fd but its reply socket and the fds its work needs (slurmd's log, locks, other
  jobs' files stay out of reach);
- dies with its parent.

The parent waits at most TIMEOUT seconds, then kills it: a child the user stops costs only
the build that waits for it (builds lock per container, runtime.teardown.lock), never
another user's job.
"""

from __future__ import annotations

import os
import resource  # here, not in the child: no import (and its lock) after fork
import signal
import socket
from collections.abc import Callable, Sequence

from runtime import syscalls as sc
from shifter_site.errors import ShifterError

TIMEOUT = 30.0
MAX_FDS = 64


class AsUserError(ShifterError):
    """The work done as the user failed; the message is the work's own (user-ready)."""


def _close_all_but(keep: Sequence[int]) -> None:
    low = 0
    for fd in sorted(set(keep)):
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    # close_range(2) underneath: the hard limit bounds every fd this process can hold
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard < 0 or hard > 1 << 24:
        hard = 1 << 24
    os.closerange(low, max(hard, os.sysconf("SC_OPEN_MAX"), low + 1))


def _become(user) -> None:
    """Drop to the user, staying non-dumpable across the uid change (verified)."""
    sc.set_dumpable(0)
    os.setgroups([user.gid, *user.gids] if user.uid else [])
    os.setresgid(user.gid, user.gid, user.gid)
    os.setresuid(user.uid, user.uid, user.uid)
    sc.set_dumpable(0)  # fs.suid_dumpable=1 would have made it dumpable again
    if sc.dumpable() != 0:
        raise OSError("still dumpable after the uid change")


def run(user, work: Callable[[], list[int]], keep: Sequence[int] = (), what: str = "work as the user",
        timeout: float = TIMEOUT) -> list[int]:
    """Run work() in a child as `user`; it returns fds (sent back to this process) or raises
    a ShifterError, whose message is raised here as AsUserError. `keep`: the fds work needs."""
    parent_pid = os.getpid()
    here, there = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            sc.set_dumpable(0)  # first thing: before anything of the user's can reach it
            _close_all_but([there.fileno(), *keep])
            _become(user)
            sc.parent_death_signal(signal.SIGKILL)  # the uid change cleared it
            if os.getppid() != parent_pid:
                os._exit(1)
            try:
                fds = work()
                socket.send_fds(there, [b"ok"], fds)
            except ShifterError as err:
                there.sendall(b"err" + str(err).encode(errors="replace")[:4000])
            code = 0
        except BaseException:  # noqa: BLE001 - nothing may escape a forked child
            code = 1
        finally:
            os._exit(code)
    there.close()
    fds: list[int] = []
    try:
        here.settimeout(timeout)
        try:
            msg, fds, _, _ = socket.recv_fds(here, 8192, MAX_FDS)
        except (socket.timeout, TimeoutError):
            os.kill(pid, signal.SIGKILL)
            raise AsUserError(f"{what} did not finish within {timeout:.0f} s") from None
    finally:
        here.close()
        os.waitpid(pid, 0)
    if msg.startswith(b"err"):
        for fd in fds:
            os.close(fd)
        raise AsUserError(msg[3:].decode(errors="replace"))
    if msg != b"ok":
        for fd in fds:
            os.close(fd)
        raise AsUserError(f"{what} failed")
    return fds

"""The socket inodes a process holds, from /proc/<pid>/fd: how the step finds its own spool
socket (shifter_wlm.task) and how a port's listeners are matched to processes
(shifter_wlm.ports). Only `os`: the step path imports it."""

from __future__ import annotations

import os


def socket_inodes(pid: int | str = "self") -> set[str]:
    """Inode numbers (as /proc/net/* writes them) of the sockets among `pid`'s open files.
    OSError when the process's fd directory cannot be read (gone, or not ours to see)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes

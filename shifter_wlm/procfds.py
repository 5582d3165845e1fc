"""The socket inodes a process holds, from /proc/<pid>/fd: how a slurmstepd finds its own
spool socket (shifter_wlm.task, shifter_wlm.extern) and how a port's listeners are matched to processes
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


def own_step_socket(job_id: int, step_id: int) -> str | None:
    """This slurmstepd's socket in its slurmd's spool directory (`<spool>/<node>_<job>.<step>`,
    created by slurmstepd as root, so not the user's say), or None."""
    inodes = socket_inodes()
    suffix = f"_{job_id}.{step_id}"
    with open("/proc/net/unix") as handle:
        for line in handle:
            fields = line.split()
            if len(fields) >= 8 and fields[6] in inodes and fields[7].endswith(suffix):
                return fields[7]
    return None

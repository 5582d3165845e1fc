"""Reading this mount namespace's mount table (/proc/self/mountinfo)."""

from __future__ import annotations

import os

from runtime import syscalls as sc


def _unescape(text: str) -> str:
    return text.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def mount_points() -> list[str]:
    """Every mount point of this namespace, in mount order."""
    with open("/proc/thread-self/mountinfo") as f:  # this thread's namespace (see build.py)
        return [_unescape(line.split(" ", 5)[4]) for line in f]


def mounted_at(path: str) -> bool:
    """Whether something is mounted exactly at `path` (in this mount namespace)."""
    return os.path.realpath(path) in mount_points()


def detach_under(prefix: str) -> None:
    """In a fresh namespace copy: drop the copies of mounts under the run dir (other
    containers' pins), or this namespace would keep their namespaces alive."""
    points = [p for p in mount_points() if p.startswith(prefix + "/")]
    for point in sorted(points, key=len, reverse=True):
        try:
            sc.umount2(point, sc.MNT_DETACH)
        except OSError:
            pass

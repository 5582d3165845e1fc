"""Per-node job state: the job's container lives in a mount namespace pinned to a file.

    <run_dir>/<node>/                    bind-mounted onto itself, private (pins need that)
    <run_dir>/<node>/job-<id>/mnt        the pinned mount namespace (a bind of nsfs)
    <run_dir>/<node>/job-<id>/job.json   JobRecord: what was built, for steps and the epilog

The prolog builds the container inside a fresh namespace and pins it; steps `setns` into it;
the epilog tears it down and unpins it, and the kernel drops every mount that was in it, so
nothing leaks into the host's mount table even when a step crashed (DESIGN.md decision 5).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from shifter_site.errors import ShifterError

RECORD = "job.json"
PIN = "mnt"


class JobStateError(ShifterError):
    """The job's state on this node is missing or not trustworthy."""


@dataclass
class JobRecord:
    """What the prolog built for a job on one node (written by root, read by root)."""

    job_id: int
    uid: int
    gid: int
    node: str
    image_id: str
    volume: str = ""
    module: str = ""
    root: str = ""                 # container root, as seen inside the pinned namespace
    image_env: list[str] = field(default_factory=list)
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    workdir: str = ""
    sshd_pid: int = 0
    ready: bool = False


def node_dir(run_dir: str, node: str) -> Path:
    if not node or "/" in node or node in (".", ".."):
        raise JobStateError(f"node name {node!r} cannot name a directory")
    return Path(run_dir) / node


def job_dir(run_dir: str, node: str, job_id: int) -> Path:
    return node_dir(run_dir, node) / f"job-{int(job_id)}"


def _is_mountpoint(path: Path) -> bool:
    target = os.fsencode(str(path))
    with open("/proc/self/mountinfo", "rb") as handle:
        for line in handle:
            point = line.split(b" ")[4].replace(b"\\040", b" ")
            if point == target:
                return True
    return False


def prepare_node_dir(run_dir: str, node: str) -> Path:
    """The node's run directory: root-only, and a private mount of its own (a namespace can
    only be pinned on a private mount)."""
    from runtime import syscalls

    path = node_dir(run_dir, node)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0:
        raise JobStateError(f"{path} is not a root-owned directory; remove it and retry")
    if not _is_mountpoint(path):
        syscalls.mount(str(path), str(path), None, syscalls.MS_BIND)
    syscalls.mount(None, str(path), None, syscalls.MS_PRIVATE)
    return path


@contextlib.contextmanager
def pinned_namespace(pin: Path) -> Iterator[None]:
    """Run the body in a new private mount namespace and, if it succeeds, pin that namespace
    at `pin`. Either way the caller is back in its own namespace afterwards; if the body
    fails, the new namespace (and every mount made in it) is simply dropped."""
    from runtime import syscalls

    cwd = os.getcwd()
    host = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    new = -1
    try:
        syscalls.unshare(syscalls.CLONE_NEWNS)
        try:
            syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
            yield
            new = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            syscalls.setns(host, syscalls.CLONE_NEWNS)
            os.chdir(cwd)
        fd = os.open(pin, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        os.close(fd)
        syscalls.mount(f"/proc/self/fd/{new}", str(pin), None, syscalls.MS_BIND)
    finally:
        os.close(host)
        if new >= 0:
            os.close(new)


@contextlib.contextmanager
def inside(pin: Path) -> Iterator[None]:
    """Run the body inside a pinned namespace, then return to ours."""
    from runtime import syscalls

    cwd = os.getcwd()
    host = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    target = os.open(pin, os.O_RDONLY | os.O_CLOEXEC)
    try:
        syscalls.setns(target, syscalls.CLONE_NEWNS)
        try:
            yield
        finally:
            syscalls.setns(host, syscalls.CLONE_NEWNS)
            os.chdir(cwd)
    finally:
        os.close(host)
        os.close(target)


def join(pin: Path) -> None:
    """Move this process into a pinned namespace for good (a task about to exec)."""
    from runtime import syscalls

    fd = os.open(pin, os.O_RDONLY | os.O_CLOEXEC)
    try:
        syscalls.setns(fd, syscalls.CLONE_NEWNS)
    finally:
        os.close(fd)


def unpin(pin: Path) -> None:
    """Release a pinned namespace; the kernel drops its mounts once nothing uses it."""
    from runtime import syscalls

    if _is_mountpoint(pin):
        syscalls.umount2(str(pin), syscalls.MNT_DETACH)
    pin.unlink(missing_ok=True)


def write_record(directory: Path, record: JobRecord) -> None:
    tmp = directory / f".{RECORD}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(asdict(record), handle)
    os.replace(tmp, directory / RECORD)


def read_record(directory: Path) -> JobRecord | None:
    """The job's record, or None when the prolog built nothing here. A record that root did
    not write is refused."""
    path = directory / RECORD
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    with os.fdopen(fd) as handle:
        st = os.fstat(handle.fileno())
        if st.st_uid != 0 or st.st_mode & 0o022:
            raise JobStateError(f"{path} was not written by root; refusing it")
        return JobRecord(**json.load(handle))


def remove_job_dir(directory: Path) -> None:
    """Unpin and delete a job's directory; harmless when already gone."""
    pin = directory / PIN
    if pin.exists():
        unpin(pin)
    shutil.rmtree(directory, ignore_errors=True)

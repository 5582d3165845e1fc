"""Pinned containers: the state a pinned container keeps on the node (docs/architecture.md,
"Per-node job state lives in a pinned mount namespace").

A pinned container (the Slurm prolog's) lives in its own mount namespace, whose root *is*
the container root, pinned by a bind mount of its nsfs file:

    <run_dir>/<key>/          the container's state dir (a private bind mount of itself)
        intent.json           written first: what a teardown must clean (cache dir, key)
        ns                    the pin (bind of /proc/<pid>/ns/mnt) once built
        record.json           written last: the container is ready; what entering it needs
                              (runtime.spec.Entering.to_data(), the one serialisation the
                              Slurm job record embeds too, under the same field names)

`key` is ContainerSpec.build_key(): an identical later request finds the record and joins
the namespace (runtime.enter.join) instead of building again. runtime.build builds it;
runtime.teardown removes it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from runtime import binds
from runtime import syscalls as sc
from runtime.cache import cache_file_prefix
from runtime.errors import BuildError
from runtime.frozen import Frozen
from runtime.paths import fdpath

if TYPE_CHECKING:
    from runtime.spec import ContainerSpec


class Container(Frozen):
    """A built, pinned container on this node."""

    key: str
    state_dir: str

    @property
    def ns_path(self) -> str:
        return os.path.join(self.state_dir, "ns")

    @property
    def record_path(self) -> str:
        return os.path.join(self.state_dir, "record.json")


def find(run_dir: str, key: str) -> Container | None:
    """The ready, pinned container with this key, or None."""
    import json

    state = os.path.join(run_dir, key)
    container = Container(key, state)
    try:
        with open(container.record_path) as f:
            record = json.load(f)
        pinned = os.stat(container.ns_path).st_dev != os.stat(state).st_dev
    except (OSError, ValueError):
        return None
    return container if pinned and record.get("state") == "ready" else None


def _write_json(path: str, data: dict) -> None:
    import json

    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def make_state_dir(spec: ContainerSpec, state: str, key: str) -> None:
    """The state dir, its intent (first: what a teardown must clean), the pin's file and
    the root's empty directory."""
    os.mkdir(state, 0o700)
    _write_json(os.path.join(state, "intent.json"),
                {"key": key, "cache_prefix": cache_file_prefix(spec, key), "pid": os.getpid()})
    binds.bind(state, state)
    sc.mount(None, state, None, sc.MS_PRIVATE)
    open(os.path.join(state, "ns"), "w").close()
    os.mkdir(os.path.join(state, "root"), 0o700)


# ioctl(2) on a mount namespace's nsfs file: its id (Linux 6.8+), _IOR(0xb7, 5, __u64)
NS_GET_MNTNS_ID = 0x8008B705


def mnt_ns_id(fd: int) -> int | None:
    """The kernel's id of the mount namespace that `fd` (its nsfs file) names; None on a
    kernel without the ioctl (before 6.8, when ids were one global, ordered sequence)."""
    import fcntl
    import struct

    buf = bytearray(8)
    try:
        fcntl.ioctl(fd, NS_GET_MNTNS_ID, buf, True)
    except OSError:
        return None
    return struct.unpack("=Q", buf)[0]


def _own_id() -> int | None:
    fd = os.open("/proc/thread-self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return mnt_ns_id(fd)
    finally:
        os.close(fd)


def new_namespace(host_ns: int) -> dict:
    """unshare(CLONE_NEWNS) into a namespace that the kernel will let `pin` bind into the
    namespace `host_ns` (this thread's own); returns the ids, for the build's log.

    The kernel binds a mount namespace's file only into a namespace with a smaller id
    (fs/namespace.c, mnt_ns_loop; else EINVAL). Recent kernels (6.18 here) take ids from
    per-CPU batches, so a namespace made now on one CPU may get a smaller id than one made
    earlier on another: when slurmd lives in a namespace made after boot (a container, a
    systemd unit with its own mounts, make fresh-check's root) about half the prologs failed
    to pin. The CPU that made `host_ns`, and any whose batch is newer, hands out larger ids,
    so this makes at most one more namespace on each CPU it may use, and says so when none does
    (snapd works around the same: canonical/snapd#17376).
    """
    want = mnt_ns_id(host_ns)
    sc.unshare(sc.CLONE_NEWNS)
    got = _own_id()
    if want is None or got is None or got > want:
        return {"ns_id": got, "host_ns_id": want}
    allowed = os.sched_getaffinity(0)
    cwd = os.open(".", os.O_PATH | os.O_CLOEXEC)
    tried = [got]
    try:
        for cpu in range(os.cpu_count() or 1):
            try:
                os.sched_setaffinity(0, {cpu})
            except OSError:  # offline, or outside this process's cpuset
                continue
            sc.setns(host_ns, sc.CLONE_NEWNS)  # leave the namespace the kernel would refuse
            os.fchdir(cwd)
            sc.unshare(sc.CLONE_NEWNS)
            got = _own_id() or 0
            if got > want:
                return {"ns_id": got, "host_ns_id": want, "refused_ids": tried}
            tried.append(got)
    finally:
        os.sched_setaffinity(0, allowed)
        os.close(cwd)
    raise BuildError(
        f"cannot pin the container: the kernel pins only a mount namespace whose id is above "
        f"this process's ({want}), and no CPU it may use gave one (got {tried}); let it use "
        f"the CPU its namespace was made on, or run it in the host's mount namespace")


def pin(state: str, ns_fd: int) -> None:
    """Keep the namespace `ns_fd` alive with no process in it."""
    sc.mount(fdpath(ns_fd), os.path.join(state, "ns"), None, sc.MS_BIND)


def write_record(spec: ContainerSpec, state: str, key: str) -> None:
    """Last: the container is ready (find() looks for this). One record style: the fields
    `state`, `key` and `entering` as in the Slurm job record (shifter_wlm/jobs.py)."""
    _write_json(os.path.join(state, "record.json"),
                {"state": "ready", "key": key, "entering": spec.entering().to_data()})

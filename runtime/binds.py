"""Binds into a container root: the host's parts every container sees (a table, below), the
site's mounts, the user's volumes (sources resolved as the user, mounted by fd), and the
image's and site's directory entries."""

from __future__ import annotations

import os
import stat

from runtime import syscalls as sc
from runtime.errors import BuildError
from runtime.paths import Walk, fdpath, open_in_root

TYPE_CHECKING = False  # a hot path: no `typing` import (docs/architecture.md, decision 13)
if TYPE_CHECKING:  # annotations only (a rootless launch must not import the volume parser)
    from runtime.volumes import Volume

# The host's parts every container sees: (host path, path in the root, recursive).
# /proc comes first and is a new proc mount in a privileged build (see mount_host_parts);
# /dev is bound last, by the seal phase, so it keeps its devices (runtime.phases).
HOST_BINDS: tuple[tuple[str, str, bool], ...] = (
    ("/proc", "proc", True),
    ("/sys", "sys", True),
    ("/tmp", "tmp", False),
    ("/var/tmp", "var/tmp", False),
)


def bind(source: str, target: str, rec: bool = False) -> None:
    sc.mount(source, target, None, sc.MS_BIND | (sc.MS_REC if rec else 0))


def mount_host_parts(root: str, privileged: bool) -> None:
    """HOST_BINDS into `root`; as root, /proc is the container's own proc mount (noexec)."""
    for source, target, rec in HOST_BINDS:
        if source == "/proc" and privileged:
            sc.mount("proc", os.path.join(root, target), "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
        else:
            bind(source, os.path.join(root, target), rec=rec)


def mount_site(root_fd: int, volume: Volume, prop: int) -> None:
    """A site mount (the admins' config: trusted, so root walks and creates its target)."""
    fd = os.open(volume.source, os.O_PATH | os.O_CLOEXEC)
    try:
        mount_volume(Walk(root_fd), volume, fd, prop)
    except FileNotFoundError as err:
        raise BuildError(f"site mount {volume.text()}: {err}") from None
    finally:
        os.close(fd)


def merge_dir(src_dir: str, dst_dir: str, skip: set[str]) -> int:
    """Make each entry of src_dir appear in dst_dir: directories and files bound (they keep
    the source mount's ro,nosuid,nodev), symlinks copied. Returns the number of mounts."""
    count = 0
    with os.scandir(src_dir) as entries:
        for entry in entries:
            if entry.name in skip:
                continue
            dst = os.path.join(dst_dir, entry.name)
            if entry.is_symlink():
                os.symlink(os.readlink(entry.path), dst)
            elif entry.is_dir(follow_symlinks=False):
                os.mkdir(dst, 0o755)
                bind(entry.path, dst)
                count += 1
            elif entry.is_file(follow_symlinks=False):
                os.close(os.open(dst, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o644))
                bind(entry.path, dst)
                count += 1
    return count


def copy_file(src: str, dst: str) -> None:
    """A small host file's content into a new file (shutil costs a launch ~2 ms of imports)."""
    with open(src, "rb") as f:
        data = f.read()
    with open(dst, "wb") as f:
        f.write(data)


def resolve_sources(volumes: list[Volume]) -> list[int]:
    """O_PATH fds of the volumes' sources, opened with the *current* credentials (the
    kernel checks every component with the user's rights and resolves symlinks the way the
    user would), refused unless the user may read (and, for directories, search) the target.
    The fds, not the paths, are mounted: nothing can be swapped in between. Nothing under
    /proc: its magic links would name the opener's own fds and files."""
    fds = []
    try:
        for volume in volumes:
            try:
                fd = os.open(volume.source, os.O_PATH | os.O_CLOEXEC)
            except OSError as err:
                raise BuildError(f"volume {volume.text()!r}: source {volume.source}: {err.strerror}") from None
            fds.append(fd)
            mode = os.fstat(fd).st_mode
            need = os.R_OK | (os.X_OK if stat.S_ISDIR(mode) else 0)
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise BuildError(f"volume {volume.text()!r}: source {volume.source} is not a directory or file")
            resolved = os.readlink(fdpath(fd))
            if resolved == "/proc" or resolved.startswith("/proc/"):
                raise BuildError(f"volume {volume.text()!r}: source {volume.source} is under /proc, which cannot "
                                 "be a volume source; give a directory or file of yours")
            if not os.access(fdpath(fd), need):
                where = f" (resolved to {resolved})" if resolved != volume.source else ""
                raise BuildError(f"volume {volume.text()!r}: source {volume.source}{where} is not readable by you")
        return fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def resolve_sources_as(user, volumes: list[Volume]) -> list[int]:
    """resolve_sources in a hardened child running as the user (runtime.asuser); the fds
    come back over a socket."""
    from runtime import asuser

    if not volumes:
        return []
    try:
        fds = asuser.run(user, lambda: resolve_sources(volumes), what="resolving the volume sources as you")
    except asuser.AsUserError as err:
        raise BuildError(str(err)) from None
    if len(fds) != len(volumes):
        for fd in fds:
            os.close(fd)
        raise BuildError("could not resolve the volume sources as the user")
    return fds


def mount_volume(walk: Walk, volume: Volume, source_fd: int, default_prop: int) -> None:
    """Bind the source onto the target: a detached copy of the source gets its attributes
    first, then is attached on the target's fd (no path is walked a second time)."""
    is_dir = stat.S_ISDIR(os.fstat(source_fd).st_mode)
    attrs = sc.MOUNT_ATTR_NOSUID | sc.MOUNT_ATTR_NODEV | (sc.MOUNT_ATTR_RDONLY if volume.ro else 0)
    prop = {"slave": sc.MS_SLAVE, "private": sc.MS_PRIVATE}.get(volume.propagation or "", default_prop)
    tree = sc.clone_tree(source_fd, recursive=volume.rec)
    try:
        sc.mount_setattr("", attrs, propagation=prop, recursive=volume.rec, dirfd=tree)
        target_fd = open_in_root(walk, volume.target, "dir" if is_dir else "file")
        try:
            sc.attach_tree(tree, target_fd)
        finally:
            os.close(target_fd)
    finally:
        os.close(tree)

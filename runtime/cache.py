"""perNodeCache: a per-node xfs/ext4 filesystem on a sparse file, made for the user and
mounted on their target (root only; runtime.teardown removes a killed build's files)."""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

from runtime import loop
from runtime import syscalls as sc
from runtime.cleanenv import run_helper
from runtime.errors import BuildError
from runtime.mountinfo import mounted_at
from runtime.paths import STAGE, Walk, fdpath, open_in_root

if TYPE_CHECKING:
    from runtime.spec import ContainerSpec
    from runtime.volumes import Volume


def cache_file_prefix(spec: ContainerSpec, key: str) -> str:
    u = spec.user
    return os.path.join(spec.cache_dir, f"shifter-cache.{u.uid}.{u.gid}.{spec.hostname}.{key}.")


def _full(cache_dir: str, size: int) -> str:
    """The likely cause when formatting fails with an I/O error: the backing files are sparse,
    so a node whose cache directory is (nearly) full fails them only as they are written."""
    try:
        st = os.statvfs(cache_dir)
    except OSError:
        return ""
    free = st.f_bavail * st.f_frsize
    if free >= size:
        return ""
    return (f"; this node's perNodeCache directory {cache_dir} has only {free} bytes free for "
            f"{size} asked: tell the site admins")


def mount_cache(walk: Walk, spec: ContainerSpec, key: str, index: int, volume: Volume) -> None:
    """A perNodeCache: a sparse file in cache_dir, loop-mounted as xfs/ext4 on a staging
    directory of the container's own (made the user's there: the user's target path is
    never walked by root again), then moved onto the target; the file is unlinked as soon
    as the loop device holds it (its space goes with the mount)."""
    assert volume.cache
    cache = volume.cache
    root_fd = walk.root_fd
    path = cache_file_prefix(spec, key) + str(index)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != 0:
            raise BuildError(f"perNodeCache backing file {path} exists and is not ours; ask the admins") from None
        os.unlink(path)  # a leftover of a crashed build with this very key
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    loop_fd = -1
    stage = f"{STAGE}-cache-{index}"
    stage_path = f"{fdpath(root_fd)}/{stage}"
    staged = False
    try:
        os.ftruncate(fd, cache.size)
        device, loop_fd = loop.attach(fd, read_only=False)
        os.unlink(path)
        if cache.fs == "xfs":
            argv = ["mkfs.xfs", "-q", "-f", *(["-b", f"size={cache.bs}"] if cache.bs else []), device]
        else:
            argv = ["mkfs.ext4", "-q", "-F", "-m", "0", *(["-b", str(cache.bs)] if cache.bs else []),
                    "-E", f"root_owner={spec.user.uid}:{spec.user.gid}", device]
        try:
            run_helper(argv, f"formatting the perNodeCache for {volume.target}")
        except BuildError as err:
            raise BuildError(f"{err}{_full(spec.cache_dir, cache.size)}") from None
        os.mkdir(stage, 0o700, dir_fd=root_fd)
        staged = True
        sc.mount(device, stage_path, cache.fs, sc.MS_NOSUID | sc.MS_NODEV)
        os.chown(stage_path, spec.user.uid, spec.user.gid)
        os.chmod(stage_path, 0o700)
        target_fd = open_in_root(walk, volume.target, "dir")
        try:
            sc.move_to(stage_path, target_fd)
        finally:
            os.close(target_fd)
    finally:
        os.close(fd)
        if loop_fd >= 0:
            os.close(loop_fd)
        if os.path.lexists(path):
            os.unlink(path)
        if staged:
            if mounted_at(stage_path):
                sc.umount2(stage_path, sc.MNT_DETACH)
            os.rmdir(stage, dir_fd=root_fd)

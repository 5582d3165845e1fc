"""The Linux calls Python 3.11 lacks (mount, umount2, unshare, setns, pivot_root, prctl,
capset, mount_setattr), through one compiled cffi module.

Each wrapper raises OSError with the errno and the path it was about, so a failed mount says
which mount; callers turn it into a user- or admin-facing message.
"""

from __future__ import annotations

import os

try:
    from runtime._syscalls import ffi, lib
except ImportError as err:  # a source checkout without the in-place build
    raise ImportError(
        "runtime._syscalls is not built: run `pip install .` or "
        "`python -m runtime.syscalls_build --inplace`"
    ) from err

# mount(2) flags
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
# umount2
MNT_DETACH = 0x2
# namespaces
CLONE_NEWNS = 0x20000
CLONE_NEWUSER = 0x10000000
# mount_setattr
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
AT_RECURSIVE = 0x8000
AT_EMPTY_PATH = 0x1000
AT_FDCWD = -100
# open_tree / move_mount
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = 0o2000000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40
# prctl
PR_SET_PDEATHSIG = 1
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4


def _check(result: int, what: str, path: str | None = None) -> None:
    if result != 0:
        errno = ffi.errno
        raise OSError(errno, f"{what}: {os.strerror(errno)}", path)


def _c(path: str | None):
    return ffi.NULL if path is None else os.fsencode(path)


def mount(source: str | None, target: str, fstype: str | None = None, flags: int = 0,
          data: str | None = None) -> None:
    _check(lib.mount(_c(source), _c(target), _c(fstype), flags, _c(data)), f"mount {source} on", target)


def umount2(target: str, flags: int = 0) -> None:
    _check(lib.umount2(_c(target), flags), "umount", target)


def unshare(flags: int) -> None:
    _check(lib.unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(lib.setns(fd, nstype), "setns")


def chroot(path: str) -> None:
    _check(lib.chroot(_c(path)), "chroot", path)


def pivot_root(new_root: str, put_old: str) -> None:
    _check(lib.shf_pivot_root(_c(new_root), _c(put_old)), "pivot_root", new_root)


def mount_setattr(path: str, attr_set: int, attr_clr: int = 0, propagation: int = 0,
                  recursive: bool = False, dirfd: int = AT_FDCWD) -> None:
    """Add mount attributes (nosuid, nodev, ro...) without restating the locked ones, which a
    classic remount must do and cannot know for mounts inherited into a user namespace.
    An empty path with a dirfd: the mount that fd is (a detached tree from open_tree)."""
    flags = (AT_RECURSIVE if recursive else 0) | (AT_EMPTY_PATH if path == "" else 0)
    _check(lib.shf_mount_setattr(dirfd, _c(path), flags, attr_set, attr_clr, propagation),
           "mount_setattr", path)


def clone_tree(fd: int, recursive: bool = False) -> int:
    """A detached copy of the mount at fd (an O_PATH fd): set its attributes, then
    attach_tree() it; nothing is visible, and no path is walked again, in between."""
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    result = lib.shf_open_tree(fd, b"", flags)
    if result < 0:
        errno = ffi.errno
        raise OSError(errno, f"open_tree: {os.strerror(errno)}")
    return result


def attach_tree(tree_fd: int, target_fd: int) -> None:
    """Attach a detached tree (clone_tree) on the directory or file an O_PATH fd names."""
    _check(lib.shf_move_mount(tree_fd, b"", target_fd, b"", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH),
           "move_mount")


def move_to(path: str, target_fd: int) -> None:
    """Move the mount at `path` onto what an O_PATH fd names."""
    _check(lib.shf_move_mount(AT_FDCWD, _c(path), target_fd, b"", MOVE_MOUNT_T_EMPTY_PATH), "move_mount", path)


def set_dumpable(value: int) -> None:
    _check(lib.shf_prctl(PR_SET_DUMPABLE, value), "prctl(SET_DUMPABLE)")


def dumpable() -> int:
    return lib.shf_prctl(PR_GET_DUMPABLE, 0)


def drop_bounding_set() -> None:
    _check(lib.shf_drop_bounding(), "dropping the capability bounding set")


def clear_capabilities() -> None:
    """Empty permitted/effective/inheritable and ambient sets."""
    _check(lib.shf_prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL), "clearing ambient capabilities")
    _check(lib.shf_clear_caps(), "capset")


def no_new_privs() -> None:
    _check(lib.shf_prctl(PR_SET_NO_NEW_PRIVS, 1), "prctl(NO_NEW_PRIVS)")


def child_subreaper() -> None:
    """Orphans below this process (kept across exec) come back to it, not to init."""
    _check(lib.shf_prctl(PR_SET_CHILD_SUBREAPER, 1), "prctl(CHILD_SUBREAPER)")


def parent_death_signal(sig: int) -> None:
    _check(lib.shf_prctl(PR_SET_PDEATHSIG, sig), "prctl(PDEATHSIG)")

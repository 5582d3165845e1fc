"""Loop devices without forking losetup: find one already attached to a file, or attach one.

Devices are attached with AUTOCLEAR: the kernel detaches them when the last mount (or open)
goes, so a crashed builder or a dropped namespace never leaves a device behind. A device
that is still attached for the same file (another container of the same image on this node)
is reused: a warm superblock saves ~15 ms per launch (docs/architecture.md, decision 12).
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A
LOOP_GET_STATUS64 = 0x4C05
LO_FLAGS_READ_ONLY = 1
LO_FLAGS_AUTOCLEAR = 4
# struct loop_info64: 5 u64, 4 u32, file_name[64], crypt_name[64], key[32], 2 u64 = 232 bytes
_INFO = struct.Struct("=5Q4I64s64s32s2Q")
_CONFIG_SIZE = 8 + _INFO.size + 64


def find_attached(path: str) -> str | None:
    """/dev/loopN already backed by exactly this file (same device and inode), or None.

    The backing file's name in sysfs is only a cheap first filter (its basename): the path
    the kernel prints depends on the reader's mount namespace and root (a file on a tmpfs
    /tmp reads as "/x" from another namespace), so identity is the device and inode the
    loop device itself reports (LOOP_GET_STATUS64)."""
    st = os.stat(path)
    base = os.path.basename(path)
    try:
        names = os.listdir("/sys/block")
    except OSError:
        return None
    for name in names:
        if not name.startswith("loop"):
            continue
        try:
            with open(f"/sys/block/{name}/loop/backing_file") as f:
                backing = f.read().rstrip("\n")
            if not backing or backing.endswith(" (deleted)") or os.path.basename(backing) != base:
                continue
            with open(f"/sys/block/{name}/ro") as f:
                if f.read().strip() != "1":
                    continue
            fd = os.open(f"/dev/{name}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                info = fcntl.ioctl(fd, LOOP_GET_STATUS64, bytes(_INFO.size))
            finally:
                os.close(fd)
        except OSError:
            continue
        device, inode = _INFO.unpack(info)[:2]
        if inode == st.st_ino and device == st.st_dev:
            return f"/dev/{name}"
    return None


def attach(path_or_fd: str | int, read_only: bool, block_size: int = 0) -> tuple[str, int]:
    """Attach a free loop device (AUTOCLEAR) to a file; returns (device, open fd).

    The caller keeps the fd open until the device is mounted: closing it earlier would
    let AUTOCLEAR detach the device again.
    """
    own = isinstance(path_or_fd, str)
    backing = os.open(path_or_fd, (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC) if own else path_or_fd
    try:
        name = os.readlink(f"/proc/self/fd/{backing}").encode()[:63]
        flags = LO_FLAGS_AUTOCLEAR | (LO_FLAGS_READ_ONLY if read_only else 0)
        info = _INFO.pack(0, 0, 0, 0, 0, 0, 0, 0, flags, name, b"", b"", 0, 0)
        config = struct.pack("=II", backing, block_size) + info + b"\0" * 64
        assert len(config) == _CONFIG_SIZE
        ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
        try:
            for _ in range(20):
                number = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
                device = f"/dev/loop{number}"
                if not os.path.exists(device):
                    os.mknod(device, 0o600 | 0o060000, os.makedev(7, number))
                fd = os.open(device, (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC)
                try:
                    fcntl.ioctl(fd, LOOP_CONFIGURE, config)
                except OSError as err:
                    os.close(fd)
                    if err.errno == errno.EBUSY:  # another process took it first
                        continue
                    raise
                return device, fd
        finally:
            os.close(ctl)
        raise OSError(errno.EBUSY, "no free loop device after 20 tries")
    finally:
        if own:
            os.close(backing)

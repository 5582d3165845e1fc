#!/usr/bin/env python3
"""A simulated shared filesystem for bench/bench_sharedfs.py: a read-only FUSE passthrough of
a directory that waits a fixed delay on every metadata operation (getattr, which is how FUSE's
high-level API answers a lookup too; open, opendir, readdir, readlink, access, statfs) and
counts every operation (reads too, with their bytes), as a parallel filesystem's metadata
server would see them. The kernel caches nothing (entry, attribute and negative timeouts 0),
as on nodes that start a job with cold caches.

    python bench/slowfs.py ROOT MOUNTPOINT --delay-ms 1      (foreground; needs mfusepy, fuse3)

The counts are read through the mount itself: `stat MOUNTPOINT/.ops-<name>` has st_size =
that count (name: meta, getattr, open, opendir, readdir, readlink, access, statfs, read,
read_bytes), and `stat MOUNTPOINT/.ops-reset` sets them all to 0. These names are not counted.
"""

from __future__ import annotations

import argparse
import errno
import os
import stat
import threading
import time

import mfusepy as fuse

META = ("getattr", "open", "opendir", "readdir", "readlink", "access", "statfs")


class SlowFS(fuse.Operations):
    use_ns = True  # times in nanoseconds
    def __init__(self, root: str, delay_s: float) -> None:
        self.root, self.delay = os.path.realpath(root), delay_s
        self.mutex = threading.Lock()
        self.counts = dict.fromkeys((*META, "read", "read_bytes"), 0)

    # ------------------------------------------------------------ accounting
    def _meta(self, op: str) -> None:
        with self.mutex:
            self.counts[op] += 1
        if self.delay:
            time.sleep(self.delay)

    def _control(self, path: str) -> dict | None:
        name = path[len("/.ops-"):]
        if name == "reset":
            with self.mutex:
                for key in self.counts:
                    self.counts[key] = 0
            value = 0
        elif name == "meta":
            value = sum(self.counts[k] for k in META)
        elif name in self.counts:
            value = self.counts[name]
        else:
            raise fuse.FuseOSError(errno.ENOENT)
        now = time.time_ns()
        return {"st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": value, "st_uid": 0, "st_gid": 0,
                "st_atime": now, "st_mtime": now, "st_ctime": now}

    def _real(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    # ------------------------------------------------------------ operations
    def getattr(self, path, fh=None):
        if path.startswith("/.ops-"):
            return self._control(path)
        self._meta("getattr")
        try:
            st = os.lstat(self._real(path))
        except OSError as err:
            raise fuse.FuseOSError(err.errno) from None
        return {"st_mode": st.st_mode, "st_nlink": st.st_nlink, "st_size": st.st_size, "st_uid": st.st_uid,
                "st_gid": st.st_gid, "st_atime": st.st_atime_ns, "st_mtime": st.st_mtime_ns, "st_ctime": st.st_ctime_ns}

    def readlink(self, path):
        self._meta("readlink")
        return os.readlink(self._real(path))

    def access(self, path, amode):
        self._meta("access")
        if not os.access(self._real(path), amode):
            raise fuse.FuseOSError(errno.EACCES)
        return 0

    def opendir(self, path):
        self._meta("opendir")
        return 0

    def readdir(self, path, fh):
        self._meta("readdir")
        return [".", "..", *os.listdir(self._real(path))]

    def statfs(self, path):
        self._meta("statfs")
        st = os.statvfs(self._real(path))
        return {key: getattr(st, key) for key in ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail",
                                                  "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax")}

    def open(self, path, flags):
        self._meta("open")
        if flags & (os.O_WRONLY | os.O_RDWR):
            raise fuse.FuseOSError(errno.EROFS)
        return os.open(self._real(path), os.O_RDONLY)

    def read(self, path, size, offset, fh):
        data = os.pread(fh, size, offset)
        with self.mutex:
            self.counts["read"] += 1
            self.counts["read_bytes"] += len(data)
        return data

    def release(self, path, fh):
        os.close(fh)
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root")
    parser.add_argument("mountpoint")
    parser.add_argument("--delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    fuse.FUSE(SlowFS(args.root, args.delay_ms / 1000), args.mountpoint, foreground=True, ro=True,
              allow_other=True, default_permissions=True, entry_timeout=0, attr_timeout=0, negative_timeout=0)


if __name__ == "__main__":
    main()

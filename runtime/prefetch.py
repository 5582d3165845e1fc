"""Read the command's file (and its ELF or `#!` interpreter) once, sequentially, just before
a rootless exec, so that exec finds it in the page cache of the fresh squashfuse mount.

Why: without it, exec page-faults the binary in through FUSE one 128 KiB read-around window
at a time, and each window, not aligned to the image's compressed blocks, makes squashfuse
decompress two of them: `/bin/true` from a busybox image cost ~20 ms that way and ~2 ms
after one sequential read of ~10 ms (bench/bench_launch.py; docs/architecture.md, decision 13). squashfuse keeps the
cache across opens (images are read-only), and the mount is new at every launch, so the cache
is always cold without this.

Best effort, as the user, after pivot_root: any error leaves exec to report (or not) the real
problem. Only regular files are opened (O_NONBLOCK: a FIFO named as the command never
blocks), and at most LIMIT bytes of each file are read.
"""

from __future__ import annotations

import os

LIMIT = 4 << 20  # per file: a large binary's head (its headers and first text) only
_CHUNK = 1 << 20  # squashfuse answers up to FUSE's max_read per request; the kernel splits


def _interpreter(head: bytes) -> str | None:
    """The path a file's exec loads first: `#!` line or ELF PT_INTERP (64-bit little-endian,
    what this runtime's hosts run); None for anything else."""
    if head[:2] == b"#!":
        line = head[2:].split(b"\n", 1)[0].strip()
        path = line.split(None, 1)[0] if line else b""
        return path.decode(errors="replace") if path.startswith(b"/") else None
    if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1 or len(head) < 64:
        return None
    phoff = int.from_bytes(head[32:40], "little")
    phentsize = int.from_bytes(head[54:56], "little")
    phnum = int.from_bytes(head[56:58], "little")
    for i in range(min(phnum, 64)):
        entry = head[phoff + i * phentsize: phoff + i * phentsize + 56]
        if len(entry) < 56:
            return None
        if int.from_bytes(entry[0:4], "little") == 3:  # PT_INTERP
            offset = int.from_bytes(entry[8:16], "little")
            size = int.from_bytes(entry[32:40], "little")
            path = head[offset:offset + size].split(b"\0", 1)[0]
            return path.decode(errors="replace") if path.startswith(b"/") and len(path) < 4096 else None
    return None


def read_file(path: str) -> bytes:
    """Read up to LIMIT bytes of a regular file (its first 4 KiB returned, for
    `_interpreter`); b"" when it is not a readable regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return b""
    try:
        if (os.fstat(fd).st_mode & 0o170000) != 0o100000:  # S_ISREG, without importing stat
            return b""
        head = os.read(fd, 4096)
        done, buf = len(head), bytearray(_CHUNK)
        while len(head) == 4096 and done < LIMIT:
            n = os.readv(fd, [buf])
            if n <= 0:
                break
            done += n
        return head
    except OSError:
        return b""
    finally:
        os.close(fd)


def warm(path: str) -> None:
    """Read `path` and the interpreter it names (one level: a `#!` script's interpreter, or
    an ELF binary's loader) into the page cache."""
    interpreter = _interpreter(read_file(path))
    if interpreter and interpreter != path:
        read_file(interpreter)

"""A validated snapshot of the site configuration, for a hot path run by root (a job step
joining its container), which then skips YAML parsing and validation (~25 ms of imports).

Root's full loads (`config.load(privileged=True)`) write the snapshot; it is trusted only if
it is root's own file and the config file is the same file, unchanged (device, inode, size,
mtime and ctime, which also moves on chmod/chown), and still passes the ownership check.
Anything else, and the caller does the full load. Standard library only, on purpose.
"""

from __future__ import annotations

import os
import stat

from shifter_site import jsonread  # not json: its decoder imports re, ~4 ms a step (docs/architecture.md, decision 13)
from shifter_site.errors import ConfigError

CACHE_DIR = "/run/shifter-config"


def check_owner(path: str) -> None:
    """Refuse a file that anyone but root could have changed: the file, and every directory
    above it (a world-writable directory is accepted only with the sticky bit)."""
    real = os.path.realpath(path)
    current = real
    while True:
        st = os.stat(current)
        loose = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        sticky_dir = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX
        if st.st_uid != 0 or (loose and not sticky_dir):
            what = "config file" if current == real else f"directory {current} holding config file"
            raise ConfigError(
                f"{path}: {what} can be written by non-root (owner uid {st.st_uid}, mode "
                f"{stat.S_IMODE(st.st_mode):04o}); run: chown root {current} && chmod go-w {current}"
            )
        if current == "/":
            return
        current = os.path.dirname(current)


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _snapshot_path(real: str) -> str:
    # the config's path, escaped into one file name (the snapshot also records it)
    return os.path.join(CACHE_DIR, real.replace("%", "%25").replace("/", "%2F") + ".json")


def save(path: str, data: dict, size_limit_bytes: int) -> None:
    """Record root's validated config of `path`: `msgspec.to_builtins(Config)` and its
    perNodeCache limit in bytes (best effort: a hot path without a snapshot just loads the
    file)."""
    if os.geteuid() != 0:
        return
    real = os.path.realpath(path)
    try:
        os.makedirs(CACHE_DIR, mode=0o700, exist_ok=True)
        st = os.lstat(CACHE_DIR)
        if st.st_uid != 0 or stat.S_IMODE(st.st_mode) & 0o077:
            return
        target = _snapshot_path(real)
        tmp = f"{target}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as handle:
            import json

            json.dump({"source": real, "stamp": _stamp(os.stat(real)), "data": data,
                       "size_limit_bytes": size_limit_bytes}, handle)
        os.replace(tmp, target)
    except OSError:
        return


def load(path: str):
    """The validated configuration of `path` as the one Config-like view
    (shifter_site.configview), or None when there is no trustworthy, current snapshot."""
    try:
        real = os.path.realpath(path)
        check_owner(real)
        current = _stamp(os.stat(real))
        fd = os.open(_snapshot_path(real), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (OSError, ConfigError):
        return None
    with os.fdopen(fd) as handle:
        st = os.fstat(handle.fileno())
        if st.st_uid != 0 or stat.S_IMODE(st.st_mode) & 0o077:
            return None
        try:
            snapshot = jsonread.load(handle)
        except ValueError:
            return None
    if snapshot.get("source") != real or snapshot.get("stamp") != current:
        return None
    from shifter_site.configview import view

    try:
        return view(snapshot["data"], snapshot["size_limit_bytes"])
    except (KeyError, TypeError):
        return None  # a snapshot of another shape (an older version): load in full

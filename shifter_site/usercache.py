"""A plain user's own cache of the site config and image records, for `shifter`'s launch path.

Why: parsing and validating the YAML config and a JSON image record imports yaml, msgspec,
typing, re... (~20 ms), more than the whole rest of a rootless launch (docs/architecture.md, decision 13: no slower
than ch-run). The first launch does the full, validated load and stores the validated result
here; later launches reuse it while the source file is unchanged.

Trust: this is for a plain user's rootless path only (never when the effective uid is 0; root
code keeps its own full loads and root-only snapshot, configcache). It holds only what the
user just read with their own rights, in a directory only they can write
(`$XDG_RUNTIME_DIR/shifter` or `/tmp/shifter-<uid>`, which must be theirs, mode 0700, not a
link: else it is not used). Whatever a user puts there affects only their own rootless
containers, where they hold no more rights than outside. An entry counts only while the
source file is the same file, unchanged (realpath, device, inode, size, mtime, ctime) and the
code that validated it is the same (the stamp of the validating module); anything else, and
the caller does the full load. Standard library only, and only cheap modules (no re, json).
"""

from __future__ import annotations

import marshal
import os

_FORMAT = 1


def cache_dir() -> str | None:
    """This user's cache directory, created if missing; None when it cannot be trusted."""
    uid = os.getuid()
    if os.geteuid() == 0 or uid == 0 or os.geteuid() != uid:
        return None
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = os.path.join(runtime, "shifter") if runtime and runtime.startswith("/") else f"/tmp/shifter-{uid}"
    try:
        try:
            os.mkdir(base, 0o700)
        except FileExistsError:
            pass
        st = os.lstat(base)
    except OSError:
        return None
    if (st.st_mode & 0o170000) != 0o040000 or st.st_uid != uid or st.st_mode & 0o077:
        return None  # not ours alone (another user made it first, or a link): do without
    return base


def _stamp(path: str, validator: str | tuple) -> tuple | None:
    """`validator`: the validating module's path, or a tuple of paths (several modules)."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
        codes = [os.stat(v) for v in ((validator,) if isinstance(validator, str) else validator)]
    except OSError:
        return None
    return (_FORMAT, real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
            *[n for code in codes for n in (code.st_size, code.st_mtime_ns)])


def _entry(directory: str, kind: str, real: str) -> str:
    return os.path.join(directory, kind + real.replace("%", "%25").replace("/", "%2F"))


def get(kind: str, path: str, validator: str | tuple) -> object | None:
    """The data stored for `path` by `put`, if the file and the validating module
    `validator` are unchanged since; else None."""
    directory = cache_dir()
    stamp = _stamp(path, validator)
    if directory is None or stamp is None:
        return None
    try:
        fd = os.open(_entry(directory, kind, stamp[1]), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if os.fstat(fd).st_uid != os.getuid():
            return None
        with os.fdopen(fd, "rb", closefd=False) as handle:
            entry = marshal.loads(handle.read())
    except Exception:  # noqa: BLE001 - a damaged entry is a cache miss
        return None
    finally:
        os.close(fd)
    if not isinstance(entry, tuple) or len(entry) != 2 or entry[0] != stamp:
        return None
    return entry[1]


def put(kind: str, path: str, validator: str | tuple, data: object, stamp: tuple | None = None) -> None:
    """Remember `data` (plain dicts, lists, strings, numbers) for `path`; best effort.
    `stamp`: the file's stamp taken *before* it was read, so a change during the read
    leaves an entry that never matches."""
    directory = cache_dir()
    stamp = stamp or _stamp(path, validator)
    if directory is None or stamp is None:
        return
    target = _entry(directory, kind, stamp[1])
    tmp = f"{target}.{os.getpid()}.tmp"
    try:
        blob = marshal.dumps((stamp, data))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, blob)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except (OSError, ValueError):
        try:
            os.unlink(tmp)
        except OSError:
            pass


def stamp(path: str, validator: str | tuple) -> tuple | None:
    """The stamp `put` compares, for taking it before a read."""
    return _stamp(path, validator)

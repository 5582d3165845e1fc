"""Volume specs (`--volume`, `-V`, site mounts): parse and validate, never rewrite.

Syntax (as the original Shifter): `from:to[:flag[:flag...]]`, several mappings joined by `;`,
a flag with arguments written `name=k=v,k=v`. Users may use the flags `ro` and
`perNodeCache=size=N[,fs=xfs|ext4][,bs=N][,method=loop]`; site mounts also `rec`, `slave`,
`private`. Every mistake is one line naming the mapping and the part that is wrong; a spec
is never "fixed" (the original silently dropped characters it did not like).

Pure functions only: no filesystem access (sources are resolved at build time, with the
user's rights).
"""

from __future__ import annotations

from runtime.frozen import Frozen
from shifter_site.errors import ShifterError

USER_FLAGS = ("ro", "perNodeCache")
SITE_FLAGS = ("ro", "rec", "slave", "private")
CACHE_KEYS = ("size", "fs", "bs", "method")
CACHE_FS = ("xfs", "ext4")
# the smallest filesystem each mkfs makes (xfsprogs 6: "must be larger than 300MB"; ext4:
# 64 blocks, at least 1 MiB), and the smallest xfs block size (v5 xfs: 1k)
XFS_MIN_SIZE = 300 << 20
EXT4_MIN_SIZE = 1 << 20
XFS_MIN_BS = 1024
# a user volume may not cover these (nor anything below them)
FORBIDDEN_TARGETS = ("/etc", "/var", "/opt/udiImage", "/proc", "/sys", "/dev")
ALLOWED_EXCEPTIONS = ("/var/tmp",)


class VolumeError(ShifterError):
    """A volume spec is wrong; the message names the mapping and the part."""

    exit_code = 64  # EX_USAGE


class CacheOptions(Frozen):
    """perNodeCache: a per-node scratch filesystem of `size` bytes, formatted `fs`."""

    size: int
    fs: str = "xfs"
    bs: int | None = None   # filesystem block size in bytes (None: mkfs default)
    method: str = "loop"


class Volume(Frozen):
    """One mapping. `source` is a host path (ignored for perNodeCache); `target` a path in
    the container. `propagation` is None (the site default), 'slave' or 'private'."""

    source: str
    target: str
    ro: bool = False
    rec: bool = False
    propagation: str | None = None
    cache: CacheOptions | None = None

    def text(self) -> str:
        """The spec back in the reference syntax (for SHIFTER_VOLUME and records)."""
        flags = []
        if self.ro:
            flags.append("ro")
        if self.rec:
            flags.append("rec")
        if self.propagation:
            flags.append(self.propagation)
        if self.cache:
            args = [f"size={self.cache.size}", f"fs={self.cache.fs}"]
            if self.cache.bs:
                args.append(f"bs={self.cache.bs}")
            flags.append("perNodeCache=" + ",".join(args))
        return ":".join([self.source, self.target, *flags])


def _fail(mapping: str, message: str) -> VolumeError:
    return VolumeError(f"volume {mapping!r}: {message}")


def _check_path(mapping: str, which: str, path: str) -> None:
    if not path:
        raise _fail(mapping, f"the {which} path is empty; write an absolute path")
    if not path.startswith("/"):
        raise _fail(mapping, f"{which} {path!r} is a relative path; write an absolute path (starting with /)")
    for ch in path:
        if ch < " " or ch == "\x7f":
            raise _fail(mapping, f"{which} {path!r} contains a control character ({ch!r}); remove it")
    parts = path.split("/")[1:]
    if path != "/" and path.endswith("/"):
        parts = parts[:-1]
    for part in parts:
        if part in ("..", "."):
            raise _fail(mapping, f"{which} {path!r} contains {part!r}; write the path without '.' or '..'")
        if part == "":
            raise _fail(mapping, f"{which} {path!r} contains an empty component ('//'); write single slashes")


def normalise(path: str) -> str:
    """`/a/b/` -> `/a/b` for comparisons (the spec itself is kept as written)."""
    return path.rstrip("/") or "/"


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def check_user_target(mapping: str, target: str) -> None:
    """Refuse targets that would shadow what the site controls in the container."""
    norm = normalise(target)
    if norm == "/":
        raise _fail(mapping, "target '/' would cover the whole container; choose a directory")
    if norm == "/opt":
        raise _fail(mapping, "target '/opt' would cover /opt/udiImage; choose a directory below /opt or elsewhere")
    if norm in ALLOWED_EXCEPTIONS:
        return
    for prefix in FORBIDDEN_TARGETS:
        if _under(norm, prefix):
            extra = " (only /var/tmp itself is allowed under /var)" if prefix == "/var" else ""
            raise _fail(mapping, f"target {target!r} is under {prefix}, which the site controls{extra}; choose another target")


def _parse_cache(mapping: str, args: str) -> CacheOptions:
    if not args:
        raise _fail(mapping, "perNodeCache needs arguments: perNodeCache=size=N[,fs=xfs][,bs=N]")
    from shifter_site.sizes import parse_size  # here: `re` is not needed by a launch without a cache

    seen: dict[str, str] = {}
    for item in args.split(","):
        if "=" not in item:
            raise _fail(mapping, f"perNodeCache argument {item!r} is not key=value (keys: {', '.join(CACHE_KEYS)})")
        key, value = item.split("=", 1)
        if key not in CACHE_KEYS:
            raise _fail(mapping, f"perNodeCache key {key!r} is unknown; use {', '.join(CACHE_KEYS)}")
        if key in seen:
            raise _fail(mapping, f"perNodeCache key {key!r} is given twice; give it once")
        if not value:
            raise _fail(mapping, f"perNodeCache key {key!r} has an empty value")
        seen[key] = value
    if "size" not in seen:
        raise _fail(mapping, "perNodeCache needs size=N (e.g. size=10G)")
    try:
        size = parse_size(seen["size"])
    except ValueError as err:
        raise _fail(mapping, f"perNodeCache size: {err}") from None
    if size == 0:
        raise _fail(mapping, "perNodeCache size is 0; give a positive size")
    fs = seen.get("fs", "xfs")
    if fs not in CACHE_FS:
        raise _fail(mapping, f"perNodeCache fs {fs!r} is not supported; use {' or '.join(CACHE_FS)}")
    bs = None
    if "bs" in seen:
        try:
            bs = parse_size(seen["bs"])
        except ValueError as err:
            raise _fail(mapping, f"perNodeCache bs: {err}") from None
        if bs < 512 or bs > 65536 or bs & (bs - 1):
            raise _fail(mapping, f"perNodeCache bs {seen['bs']!r} must be a power of two from 512 to 64k")
        if fs == "ext4" and bs < 1024:
            raise _fail(mapping, f"perNodeCache bs {seen['bs']!r} is below ext4's minimum block size 1k")
        if fs == "xfs" and bs < XFS_MIN_BS:
            raise _fail(mapping, f"perNodeCache bs {seen['bs']!r} is below xfs's minimum block size 1k")
    _check_cache_size(mapping, seen["size"], size, fs, bs)
    method = seen.get("method", "loop")
    if method != "loop":
        raise _fail(mapping, f"perNodeCache method {method!r} is not supported; use method=loop")
    return CacheOptions(size=size, fs=fs, bs=bs, method=method)


def _check_cache_size(mapping: str, text: str, size: int, fs: str, bs: int | None) -> None:
    """A size mkfs cannot format is refused here, at submit, with the fix (not per node, per
    step, as mkfs's usage text)."""
    if fs == "xfs" and size < XFS_MIN_SIZE:
        raise _fail(mapping, f"perNodeCache size={text} is too small for xfs (at least 300M); "
                             "ask for size=300M or more, or add fs=ext4 for a smaller cache")
    least = max(EXT4_MIN_SIZE, 64 * (bs or 0))
    if fs == "ext4" and size < least:
        why = f"at least {least >> 20}M" + (f" with bs={bs}" if bs else "")
        raise _fail(mapping, f"perNodeCache size={text} is too small for ext4 ({why}); "
                             f"ask for size={least >> 20}M or more")


def parse_mapping(mapping: str, site: bool = False) -> Volume:
    """One `from:to[:flags]` mapping as a Volume, or VolumeError naming the wrong part."""
    parts = mapping.split(":")
    if len(parts) < 2:
        raise _fail(mapping, "expected from:to[:flags] (two absolute paths separated by ':')")
    source, target, flags = parts[0], parts[1], parts[2:]
    _check_path(mapping, "source", source)
    _check_path(mapping, "target", target)
    allowed = SITE_FLAGS if site else USER_FLAGS
    seen: set[str] = set()
    ro = rec = False
    propagation = None
    cache = None
    for flag in flags:
        name, _, args = flag.partition("=")
        if not name:
            raise _fail(mapping, "empty flag (two ':' in a row or a trailing ':'); remove it")
        if name not in allowed:
            who = "site mounts" if site else "user volumes"
            raise _fail(mapping, f"flag {name!r} is not allowed for {who}; allowed: {', '.join(allowed)}")
        if name in seen:
            raise _fail(mapping, f"flag {name!r} is given twice; give it once")
        seen.add(name)
        if name != "perNodeCache" and "=" in flag:
            raise _fail(mapping, f"flag {name!r} takes no arguments; write just {name}")
        if name == "ro":
            ro = True
        elif name == "rec":
            rec = True
        elif name in ("slave", "private"):
            if propagation:
                raise _fail(mapping, "flags 'slave' and 'private' exclude each other; keep one")
            propagation = name
        elif name == "perNodeCache":
            cache = _parse_cache(mapping, args)
    if cache and ro:
        raise _fail(mapping, "a perNodeCache is writable; remove 'ro'")
    if not site:
        if _under(normalise(source), "/proc"):
            raise _fail(mapping, f"source {source!r} is under /proc, which cannot be a volume source "
                                 "(its links name the resolving process's own files); give a directory or file of yours")
        check_user_target(mapping, target)
    elif normalise(target) == "/":
        raise _fail(mapping, "target '/' would cover the whole container; choose a directory")
    return Volume(source=source, target=target, ro=ro, rec=rec, propagation=propagation, cache=cache)


def parse(text: str, site: bool = False) -> list[Volume]:
    """Every mapping of a spec (`;`-separated), checked together (no target twice)."""
    if text == "":
        raise VolumeError("volume spec is empty; write from:to[:flags]")
    volumes = []
    for mapping in text.split(";"):
        if mapping == "":
            raise VolumeError(f"volume spec {text!r} has an empty mapping (';' at an end or ';;'); remove it")
        volumes.append(parse_mapping(mapping, site=site))
    return check_all(volumes)


def combine(*texts: str) -> str:
    """One rule for volumes given in several places (several `#SBATCH --volume` lines, the
    job's and a step's `srun --volume`, `shifter -V`): they accumulate, in order; a mapping
    given again exactly as before counts once (Slurm hands a step the job's last --volume
    again). Texts not given ("") add nothing; the result is checked by `parse`."""
    pieces: list[str] = []
    for text in texts:
        if text:
            for piece in text.split(";"):
                if piece not in pieces:
                    pieces.append(piece)
    return ";".join(pieces)


def check_all(volumes: list[Volume]) -> list[Volume]:
    """Refuse two volumes on the same target (the second would silently hide the first)."""
    seen: dict[str, str] = {}
    for volume in volumes:
        key = normalise(volume.target)
        if key in seen:
            raise VolumeError(f"volume target {volume.target!r} is given twice "
                              f"({seen[key]!r} and {volume.text()!r}); give each target once")
        seen[key] = volume.text()
    return volumes


def check_cache_limits(volumes: list[Volume], size_limit: int, allowed_fs: list[str]) -> None:
    """The site's perNodeCache limits (the original parsed them and never enforced them)."""
    total = 0
    for volume in volumes:
        if not volume.cache:
            continue
        if volume.cache.fs not in allowed_fs:
            raise VolumeError(f"volume {volume.text()!r}: perNodeCache fs {volume.cache.fs!r} is not allowed "
                              f"on this system; allowed: {', '.join(allowed_fs)}")
        total += volume.cache.size
        if total > size_limit:
            raise VolumeError(f"volume {volume.text()!r}: perNodeCache size {volume.cache.size} bytes "
                              f"(total {total}) exceeds this system's limit of {size_limit} bytes; ask for less")

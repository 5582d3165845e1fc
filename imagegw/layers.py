"""Flatten an image's layers into one tar stream, in one pass, without touching the disk.

Layers are read newest first: an entry is written when no newer layer has provided,
deleted (`.wh.<name>`) or hidden (opaque `.wh..wh..opq`, or a non-directory over a directory)
its path, so every path appears exactly once and the result is what applying the layers in
order would give. A name implies its directories (`a/x` makes `a` a directory in its layer, as
Docker's unpacking does): a file or link at `a`, in that layer or an older one, is then hidden,
so no entry ever lies under a non-directory. A directory only implied is not written itself
(tar2sqfs makes it). Because nothing is extracted, hostile entries cannot touch the host; they
are still neutralised so the image is safe wherever it is unpacked or mounted:

- names that are absolute or contain `..`: dropped (`absolute_path`, `path_traversal`)
- entries beneath a symlink or other non-directory of the same layer: dropped (`through_link`)
- symlinks whose target climbs above the image root: dropped (`symlink_escape`); absolute
  symlinks that stay inside are kept (they resolve inside the container at run time)
- hard links to a path outside, or to no regular file of the same layer (a name that never
  existed there, a symlink, a directory...): dropped (`hardlink_escape`, `hardlink_unresolved`)
- character and block devices: dropped (`device`)
- setuid/setgid bits on non-directories: cleared (`setuid_setgid`)
- whiteouts naming `.`, `..` or nothing: dropped (`bad_whiteout`)
- extended attributes: `user.*` kept; `security.capability` dropped (`file_capability`: the
  container never gains capabilities, and the image stays as inert as without setuid bits);
  every other namespace (`security.selinux`, `trusted.*`, ACLs in `system.*`...) dropped
  (`xattr`: host-specific labels, root-only or not storable in squashfs)
Owners (uid/gid) are kept as the layers give them, as Docker shows them.
Counts end up in the image record (`neutralised`).

Hard links: a layer's tar names a file once with its content and every other name of it as a
link to that first name. When a newer layer deletes, rewrites or hides the first name, the
other names still exist in the image with the content they had: they are collected while the
layer is read and, after it, the layer is read once more to write that content under the first
surviving name, the others linking to it (`relinked` counts those names; no disk is used).
"""

from __future__ import annotations

import io
import posixpath
import tarfile
import zlib
from collections import Counter
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

import zstandard

from shifter_site.errors import ShifterError

from imagegw.tarheaders import FastTarInfo, gnu_header

try:  # ISA-L decompresses gzip several times faster than zlib (docs/architecture.md, decision 11)
    from isal import igzip as _gzip
    from isal.isal_zlib import error as _isal_error
except ImportError:  # pragma: no cover - isal is a dependency; zlib keeps working without it
    import gzip as _gzip
    _isal_error = zlib.error

# what reading a corrupt or truncated layer raises, whichever its compression
UNREADABLE = (tarfile.TarError, OSError, EOFError, zlib.error, _isal_error, zstandard.ZstdError)

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
BUF = 1 << 20
XATTR_PREFIXES = ("SCHILY.xattr.", "LIBARCHIVE.xattr.")
KEPT_XATTRS = ("user.",)
CAPABILITY_XATTR = "security.capability"


class LayerError(ShifterError):
    """A layer cannot be read (corrupt, unknown compression); the message names it."""


def open_layer(path: str | Path, following=None) -> BinaryIO:
    """A layer blob as an uncompressed byte stream, chosen by magic bytes (gzip, zstd, tar).
    `following`: the blob read while it downloads (registry.Following) instead of `path`."""
    if following is not None:
        f, magic = following, following.head(4)
    else:
        f = open(path, "rb")
        magic = f.read(4)
        f.seek(0)
    if magic[:2] == b"\x1f\x8b":
        return _gzip.GzipFile(fileobj=f, mode="rb")
    if magic == b"\x28\xb5\x2f\xfd":
        return _Forward(zstandard.ZstdDecompressor().stream_reader(f, read_size=BUF, read_across_frames=True,
                                                                   closefd=True))
    # a buffered reader reads until it has what was asked for: tarfile takes a header block
    # read short (a download not there yet) for the archive's end, and drops the files after it
    return io.BufferedReader(f, BUF) if following is not None else f


class _Forward(io.RawIOBase):
    """A zstd stream that says it can seek: tarfile's faster "r:" mode only seeks forward
    (the reader does that by reading), except on a second read of a layer, which reopens it."""

    def __init__(self, reader):
        self._reader = reader

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._reader.read(size)

    def readinto(self, buf) -> int:
        return self._reader.readinto(buf)

    def tell(self) -> int:
        return self._reader.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._reader.seek(offset, whence)

    def close(self) -> None:
        self._reader.close()
        super().close()


def _open_tar(stream: BinaryIO) -> tarfile.TarFile:
    # "r:" (forward seeks only, done by reading) is about twice as fast as stream mode "r|"
    if getattr(stream, "seekable", lambda: False)():
        return tarfile.open(fileobj=stream, mode="r:", tarinfo=FastTarInfo)
    return tarfile.open(fileobj=stream, mode="r|", bufsize=BUF, tarinfo=FastTarInfo)


def _normalise(name: str) -> tuple[str | None, str | None]:
    """(path without leading ./, None) or (None, reason it is refused)."""
    if name.startswith("/"):
        return None, "absolute_path"
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None, "path_traversal"
    return "/".join(parts), None


def _ancestors(path: str) -> Iterable[str]:
    i = path.find("/")
    while i != -1:
        yield path[:i]
        i = path.find("/", i + 1)


def _link_escapes(path: str, target: str) -> bool:
    """True when a symlink at `path` to `target` climbs above the image root (lexically)."""
    base = [] if target.startswith("/") else path.split("/")[:-1]
    depth = len(base)
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        else:
            depth += 1
    return False


class _Counting:
    """A write-only buffered file that knows its position, for tarfile's "w" mode on a pipe."""

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self._buf = io.BufferedWriter(raw, BUF) if not isinstance(raw, (io.BufferedIOBase, io.BytesIO)) else raw
        self._pos = 0

    def write(self, data) -> int:
        try:
            n = self._buf.write(data)
        except OSError as err:
            raise _OutputFailed() from err
        self._pos += len(data)
        return n

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        try:
            self._buf.flush()
        except OSError as err:
            raise _OutputFailed() from err


class _OutputFailed(Exception):
    """Writing the merged tar failed (tar2sqfs exited, a disk filled): not the layer's fault,
    so not reported as an unreadable layer; flatten() raises the OSError itself again."""


class Flattener:
    """Writes the merged tar of layers (given oldest first, as in a manifest) to `out`."""

    def __init__(self, out: BinaryIO, all_root: bool = False,
                 progress: Callable[[int, int], None] | None = None):
        # "w" on a buffered writer that counts (a pipe cannot tell()) is much faster than "w|"
        self._out = _Counting(out)
        # GNU format: long names without a pax record per entry (cheaper to write; tar2sqfs reads
        # it); entries with kept extended attributes are written as pax (see _write)
        self.tar = tarfile.open(fileobj=self._out, mode="w", format=tarfile.GNU_FORMAT, encoding="utf-8",
                                errors="surrogateescape")
        self.tar.copybufsize = BUF
        self.all_root = all_root
        self.progress = progress
        self.neutralised: Counter[str] = Counter()
        self.entries = 0
        self.bytes = 0
        self.relinked = 0   # hard-link names whose first name a newer layer hid (content kept)
        self._upper: dict[str, bool] = {}   # path -> is a directory, from newer layers
        self._deleted: set[str] = set()
        self._opaque: set[str] = set()
        # directories implied by the names written (`a` for `a/x`), from newer layers and from
        # this one so far: a non-directory there would put `a/x` under a file or link
        self._implied: set[str] = set()
        self._implied_here: set[str] = set()

    def add_layers(self, layers: list) -> None:
        """Layers oldest first, as paths, futures of paths (waited for when their turn comes) or
        fetches still downloading (registry.Fetch: read as they arrive, then their download's
        result is waited for, so a corrupt or broken download fails the merge)."""
        for index, item in enumerate(reversed(layers)):
            following = item.follow() if hasattr(item, "follow") else None
            path = None if following is not None else (item.result() if hasattr(item, "result") else item)
            try:
                with open_layer(path, following) as stream:
                    self.add_layer(stream, reopen=lambda i=item: open_layer(i.result() if hasattr(i, "result") else i))
                if following is not None:
                    following.close()  # (a gzip reader leaves its file open)
                    path = item.result()
            except UNREADABLE as err:
                if following is not None:
                    path = item.result()  # a failed download (its own error) explains a cut layer
                raise LayerError(f"layer {Path(path).name} (number {len(layers) - index}) cannot be read: {err}") from None

    def close(self) -> None:
        self.tar.close()
        self._out.flush()

    def add_layer(self, stream: BinaryIO, reopen: Callable[[], BinaryIO] | None = None) -> None:
        """Merge one layer under everything added before it. `reopen` gives the layer again from
        its start; it is called only when a hard link's first name is hidden (see the module doc)."""
        here: dict[str, bool] = {}
        first: dict[str, str] = {}      # name of a regular file (or a link to one) -> its first name
        written: dict[str, str] = {}    # first name -> the name its content was written under
        orphans: dict[str, list[tuple[str, tarfile.TarInfo]]] = {}  # hidden first name -> visible links
        deleted: set[str] = set()
        opaque: set[str] = set()
        with _open_tar(stream) as layer:
            for member in layer:
                path, why = _normalise(member.name)
                if why:
                    self.neutralised[why] += 1
                    continue
                if not path:
                    continue  # the root itself: the image root's attributes are fixed
                parent, base = posixpath.split(path)
                if base.startswith(WHITEOUT):
                    if not self._hidden(path, here):  # its directory exists in this layer
                        self._imply(path)
                    if base == OPAQUE:
                        opaque.add(parent)
                        continue
                    name = base[len(WHITEOUT):]
                    if name in ("", ".", "..") or "/" in name:
                        self.neutralised["bad_whiteout"] += 1
                        continue
                    deleted.add(posixpath.join(parent, name))
                    continue
                hidden = self._hidden(path, here)
                if hidden or (not member.isdir() and path in self._implied):
                    # hidden itself, a non-directory still hides what older layers have below it
                    # (the first entry of a name in a layer counts, as for written entries)
                    here.setdefault(path, member.isdir() or path in self._implied_here)
                    if not any(here.get(a) is False for a in _ancestors(path)):  # in this layer, it exists
                        self._imply(path)
                    if member.isreg():
                        first.setdefault(path, path)
                    elif member.islnk():
                        target, why = _normalise(member.linkname)
                        if not why and target in first:
                            first.setdefault(path, first[target])
                    continue
                if path in here or (not member.isdir() and path in self._implied_here):
                    self.neutralised["duplicate"] += 1
                    continue
                info = self._check(member, path)
                if info is None:
                    continue
                if member.islnk():
                    key = first.get(info.linkname)
                    if key is None:  # never a regular file of this layer: nothing to share
                        self.neutralised["hardlink_unresolved"] += 1
                        continue
                    first[path] = key
                    here[path] = False
                    if key not in written:  # its first name is hidden: content written after the layer
                        orphans.setdefault(key, []).append((path, info))
                        continue
                    info.linkname = written[key]
                here[path] = member.isdir()
                if member.isreg():
                    first.setdefault(path, path)
                    written.setdefault(path, path)
                    self._write(info, layer, member)
                else:
                    self._write(info)
        if orphans:
            self._adopt(orphans, reopen)
        for path, is_dir in here.items():  # a non-directory in any newer layer hides what is below it
            self._upper[path] = self._upper.get(path, True) and is_dir
        self._implied |= self._implied_here
        self._implied_here = set()
        self._deleted |= deleted
        self._opaque |= opaque

    def _adopt(self, orphans: dict[str, list[tuple[str, tarfile.TarInfo]]],
               reopen: Callable[[], BinaryIO] | None) -> None:
        """Write each hidden first name's content under its first visible link; the other
        visible links point to that one. Reads the layer again up to the last one needed."""
        if reopen is None:
            raise LayerError("a hard link's first name is hidden by a newer layer and this layer "
                             "cannot be read a second time")
        with reopen() as stream, _open_tar(stream) as layer:
            for member in layer:
                if not member.isreg():
                    continue
                path, why = _normalise(member.name)
                if why or path not in orphans:
                    continue
                links = orphans.pop(path)
                name = links[0][0]
                info = self._check(member, name)
                self._write(info, layer, member)
                for other, link in links[1:]:
                    link.linkname = name
                    self._write(link)
                self.relinked += len(links)
                if not orphans:
                    break
        if orphans:  # the first pass saw these files: a second read that differs is a broken layer
            raise LayerError(f"hard-link targets {sorted(orphans)[:3]} vanished when the layer was read again")

    def _write(self, info: tarfile.TarInfo, layer: tarfile.TarFile | None = None,
               member: tarfile.TarInfo | None = None) -> None:
        """Write `info`, with the content of `member` of `layer` when given. The header is the
        one tarfile.addfile writes; the content is copied straight from the layer's stream:
        no file object per entry, no copy of the TarInfo, no list of every entry written
        (about a third of the merge's time and memory per entry went there; bench/bench_pull.py)."""
        self._imply(info.name)
        if info.pax_headers:  # kept extended attributes need a pax header: tarfile's own path
            self.tar.format = tarfile.PAX_FORMAT
            try:
                self.tar.addfile(info, layer.extractfile(member) if member is not None else None)
            finally:
                self.tar.format = tarfile.GNU_FORMAT
        else:
            header = gnu_header(info)
            self._out.write(header)
            self.tar.offset += len(header)
            if member is not None:
                if member.sparse is None:
                    _copy(layer.fileobj, member, self._out)
                else:  # a GNU sparse file: tarfile expands its map
                    tarfile.copyfileobj(layer.extractfile(member), self._out, info.size, bufsize=BUF)
                blocks, remainder = divmod(info.size, tarfile.BLOCKSIZE)
                if remainder:
                    self._out.write(tarfile.NUL * (tarfile.BLOCKSIZE - remainder))
                    blocks += 1
                self.tar.offset += blocks * tarfile.BLOCKSIZE
        if member is not None:
            self.bytes += info.size
        self.entries += 1
        if self.progress and self.entries % 512 == 0:
            self.progress(self.entries, self.bytes)

    def _imply(self, path: str) -> None:
        """`path`'s directories are implied in this layer. The set holds whole chains (each
        ancestor of a member is a member), so a parent already in it leaves nothing to add."""
        parent = path.rpartition("/")[0]
        if parent and parent not in self._implied_here:
            self._implied_here.update(_ancestors(path))

    def _hidden(self, path: str, here: dict[str, bool]) -> bool:
        if path in self._upper or path in self._deleted:
            return True
        for a in _ancestors(path):
            if a in self._deleted or a in self._opaque or self._upper.get(a) is False:
                return True
            if here.get(a) is False:
                self.neutralised["through_link"] += 1
                return True
        return False

    def _xattrs(self, member: tarfile.TarInfo) -> dict[str, str]:
        """The pax records of the extended attributes kept (user.*); the others are counted."""
        kept: dict[str, str] = {}
        for key, value in member.pax_headers.items():
            prefix = next((p for p in XATTR_PREFIXES if key.startswith(p)), None)
            if prefix is None:
                continue
            name = key[len(prefix):]
            if name.startswith(KEPT_XATTRS):
                kept["SCHILY.xattr." + name] = value
            elif name == CAPABILITY_XATTR:
                self.neutralised["file_capability"] += 1
            else:
                self.neutralised["xattr"] += 1
        return kept  # binary values stay surrogate-escaped: tarfile writes them back as bytes

    def _check(self, member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        """A clean copy of the entry to write, or None when it is dropped (and counted)."""
        if member.ischr() or member.isblk():
            self.neutralised["device"] += 1
            return None
        info = tarfile.TarInfo(path)
        if member.pax_headers and not member.islnk():  # a link shares its file's attributes
            info.pax_headers = self._xattrs(member)
        info.mode = member.mode & 0o7777
        if not member.isdir() and info.mode & 0o6000:
            info.mode &= ~0o6000
            self.neutralised["setuid_setgid"] += 1
        info.mtime = _number(path, "time", member.mtime, -2**63, 2**63)
        if self.all_root:
            info.uid = info.gid = 0
        else:
            info.uid = _number(path, "owner uid", member.uid, 0, 2**32)
            info.gid = _number(path, "owner gid", member.gid, 0, 2**32)
        if member.isreg():
            info.type = tarfile.REGTYPE
            info.size = member.size
        elif member.isdir():
            info.type = tarfile.DIRTYPE
        elif member.issym():
            if _link_escapes(path, member.linkname):
                self.neutralised["symlink_escape"] += 1
                return None
            info.type = tarfile.SYMTYPE
            info.linkname = member.linkname
        elif member.islnk():
            target, why = _normalise(member.linkname)
            if why or not target:
                self.neutralised["hardlink_escape"] += 1
                return None
            info.type = tarfile.LNKTYPE
            info.linkname = target
        elif member.isfifo():
            info.type = tarfile.FIFOTYPE
        else:
            self.neutralised["unknown_type"] += 1
            return None
        return info


def _copy(src: BinaryIO, member: tarfile.TarInfo, out: "_Counting") -> None:
    """The content of `member`, from the stream of the layer that tarfile has just read its
    header(s) from (forward seeks only: every layer stream does them by reading)."""
    if src.tell() != member.offset_data:
        src.seek(member.offset_data)
    left = member.size
    while left:
        chunk = src.read(min(left, BUF))
        if not chunk:
            raise tarfile.ReadError("unexpected end of data")
        out.write(chunk)
        left -= len(chunk)


def _number(path: str, what: str, value, low: int, high: int) -> int:
    """A pax record's number (any text the reader took as a float or int) within the range a
    tar header and Linux hold, else LayerError (Go's archive/tar, which Docker uses, fails the
    layer too; tarfile would raise an overflow while writing the merged tar)."""
    if not isinstance(value, (int, float)) or value != value or not low <= value < high:
        raise LayerError(f"entry {path!r} has {what} {value!r}, out of range: the layer is corrupt")
    return int(value)


def flatten(layers: list[str | Path], out: BinaryIO, all_root: bool = False,
            progress: Callable[[int, int], None] | None = None) -> Flattener:
    """Write the merged tar of `layers` (oldest first) to `out`; returns the counts."""
    flat = Flattener(out, all_root=all_root, progress=progress)
    try:
        flat.add_layers(layers)
        flat.close()
    except _OutputFailed as failed:
        raise failed.__cause__ from None
    return flat


def flatten_bytes(layers: list[bytes], all_root: bool = False) -> tuple[bytes, Flattener]:
    """Merge in-memory layer tars (for tests and tools)."""
    out = io.BytesIO()
    flat = Flattener(out, all_root=all_root)
    for data in reversed(layers):
        flat.add_layer(io.BytesIO(data), reopen=lambda d=data: io.BytesIO(d))
    flat.close()
    return out.getvalue(), flat


class Capped(io.RawIOBase):
    """The merged tar's output with the site's caps (gateway.max_image_size/_files): counts
    what passes and fails the conversion, once, when the image grows past a cap. Wraps the
    stream given to flatten() and its progress callback; the flattening itself is unchanged."""

    def __init__(self, out: BinaryIO, max_bytes: int, max_files: int,
                 progress: Callable[[int, int], None] | None = None):
        super().__init__()
        self._out = out
        self.max_bytes, self.max_files = max_bytes, max_files
        self.written = 0
        self._progress = progress

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.written += len(data)
        if self.written > self.max_bytes:
            raise LayerError(f"the image is larger than this site's limit of {self.max_bytes} bytes unpacked "
                             "(gateway.max_image_size); make the image smaller or ask the admins")
        self._out.write(data)
        return len(data)

    def flush(self) -> None:
        self._out.flush()

    def progress(self, entries: int, size: int) -> None:
        """flatten()'s progress callback (every 512 entries): the file-count cap."""
        if entries > self.max_files:
            raise LayerError(f"the image has more than this site's limit of {self.max_files} files "
                             "(gateway.max_image_files); make the image smaller or ask the admins")
        if self._progress:
            self._progress(entries, size)

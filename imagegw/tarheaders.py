"""Tar header blocks, read and written faster than tarfile does it, with tarfile's results
but for one rule: a header block cut short is an error (tarfile ends the archive there).

The layer merge (imagegw.layers) spends most of its own time in tarfile's per-entry header
code (bench/bench_pull.py). The common header (octal numbers, names that fit, an unsigned checksum) is
decoded and encoded here with one struct call; anything else (base-256 numbers, GNU sparse
entries, signed checksums, invalid or end-of-archive blocks, names too long for a block) is
left to tarfile itself, so errors, long names, pax records and every hostile case behave
exactly as before: tarfile still drives the reading (pax, GNU long names, end of archive).
tests/unit/test_tarheaders.py compares both ways on generated headers.
"""

from __future__ import annotations

import struct
import tarfile

_FIELDS = struct.Struct("100s8s8s8s12s12s8sc100s8s32s32s8s8s155s12x")  # one 512-byte header block
_ENCODING, _ERRORS = "utf-8", "surrogateescape"
_OCTAL7, _OCTAL11 = 8 ** 7, 8 ** 11


def _text(field: bytes, encoding: str, errors: str) -> str:
    return field.partition(b"\0")[0].decode(encoding, errors)


def _octal(field: bytes) -> int:
    """tarfile.nti of an octal field, or ValueError (also for base-256 fields and blanks
    that nti reads as 0: the caller then leaves the block to tarfile)."""
    return int(field.partition(b"\0")[0] or b"0", 8)


class FastTarInfo(tarfile.TarInfo):
    """A TarInfo whose header block decoding has a fast path (pass as tarfile.open's tarinfo)."""

    @classmethod
    def _frombuf(cls, buf, encoding, errors, *, dircheck=True):
        if 0 < len(buf) < tarfile.BLOCKSIZE:
            # tarfile takes a header cut short past the archive's start for its end, and the
            # files after it would go missing in silence (Go's archive/tar, Docker's reader,
            # fails such a layer): ReadError is not a HeaderError, so tarfile passes it on
            raise tarfile.ReadError(f"a header block is cut short ({len(buf)} of {tarfile.BLOCKSIZE} bytes): "
                                    "the layer is truncated")
        if len(buf) != tarfile.BLOCKSIZE or not buf[0] or buf[156:157] == tarfile.GNUTYPE_SPARSE:
            return super()._frombuf(buf, encoding, errors, dircheck=dircheck)
        (name, mode, uid, gid, size, mtime, chksum, type_, linkname, _magic, uname, gname, devmajor,
         devminor, prefix) = _FIELDS.unpack(buf)
        try:
            chksum = _octal(chksum)
            values = (_octal(mode), _octal(uid), _octal(gid), _octal(size), _octal(mtime),
                      _octal(devmajor), _octal(devminor))
        except ValueError:  # base-256, blank or invalid: tarfile's own reading of it
            return super()._frombuf(buf, encoding, errors, dircheck=dircheck)
        if chksum != 256 + sum(buf) - sum(buf[148:156]):  # a signed checksum or a bad one
            return super()._frombuf(buf, encoding, errors, dircheck=dircheck)
        obj = cls()
        obj.name = _text(name, encoding, errors)
        obj.mode, obj.uid, obj.gid, obj.size, obj.mtime, obj.devmajor, obj.devminor = values
        obj.chksum = chksum
        obj.type = type_
        obj.linkname = _text(linkname, encoding, errors)
        obj.uname = _text(uname, encoding, errors)
        obj.gname = _text(gname, encoding, errors)
        prefix = _text(prefix, encoding, errors)
        if dircheck and type_ == tarfile.AREGTYPE and obj.name.endswith("/"):
            obj.type = tarfile.DIRTYPE  # old V7 tar: a directory is a file whose name ends with /
        if obj.type == tarfile.DIRTYPE:
            obj.name = obj.name.rstrip("/")
        if prefix and obj.type not in tarfile.GNU_TYPES:
            obj.name = prefix + "/" + obj.name
        return obj


def gnu_header(info: tarfile.TarInfo) -> bytes:
    """info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape"), byte for byte."""
    name = info.name
    if info.type == tarfile.DIRTYPE and not name.endswith("/"):
        name += "/"
    raw_name = name.encode(_ENCODING, _ERRORS)
    raw_link = info.linkname.encode(_ENCODING, _ERRORS)
    uid, gid, size, mtime = info.uid, info.gid, info.size, info.mtime
    if len(raw_name) > 100 or len(raw_link) > 100 or info.type in (tarfile.CHRTYPE, tarfile.BLKTYPE) \
            or type(uid) is not int or type(gid) is not int or type(size) is not int or type(mtime) is not int \
            or not (0 <= uid < _OCTAL7 and 0 <= gid < _OCTAL7 and 0 <= size < _OCTAL11 and 0 <= mtime < _OCTAL11):
        return info.tobuf(tarfile.GNU_FORMAT, _ENCODING, _ERRORS)
    buf = _FIELDS.pack(raw_name, b"%07o\0" % (info.mode & 0o7777), b"%07o\0" % uid, b"%07o\0" % gid,
                       b"%011o\0" % size, b"%011o\0" % mtime, b"        ", info.type, raw_link,
                       tarfile.GNU_MAGIC, info.uname.encode(_ENCODING, _ERRORS),
                       info.gname.encode(_ENCODING, _ERRORS), b"", b"", b"")
    return b"%s%06o\0%s" % (buf[:148], sum(buf), buf[155:])

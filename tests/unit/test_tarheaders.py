"""imagegw/tarheaders.py, the layer merge's fast tar header code, against tarfile's own:
a header block (well-formed, with odd number fields, signed or wrong checksums, base-256
numbers, GNU sparse...) decodes to the same fields or fails the same way (one difference
on purpose: a block cut short is an error, see Reference); whole archives
(GNU, pax, ustar; long names, pax records) read the same; a written header is the same bytes.

Pure (no root, no cluster): runs in `make unit`, derandomized.
"""

from __future__ import annotations

import io
import tarfile

from hypothesis import example, given, settings, strategies as st

from imagegw import layers as merge
from imagegw.tarheaders import FastTarInfo, gnu_header

from . import test_hostile_layers as hostile


class Reference(tarfile.TarInfo):
    """tarfile's own header code with the one rule the fast code adds: a header block cut
    short (0 < bytes < 512) raises ReadError, where tarfile would end the archive there."""

    @classmethod
    def _frombuf(cls, buf, encoding, errors, *, dircheck=True):
        if 0 < len(buf) < tarfile.BLOCKSIZE:
            raise tarfile.ReadError(f"a header block is cut short ({len(buf)} of {tarfile.BLOCKSIZE} bytes): "
                                    "the layer is truncated")
        return super()._frombuf(buf, encoding, errors, dircheck=dircheck)

EXACT = settings(derandomize=True, max_examples=400)
FIELDS = ("name", "mode", "uid", "gid", "size", "mtime", "chksum", "type", "linkname", "uname", "gname",
          "devmajor", "devminor", "sparse", "offset", "offset_data", "pax_headers")
TYPES = [tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE,
         tarfile.BLKTYPE, tarfile.FIFOTYPE, tarfile.CONTTYPE, tarfile.GNUTYPE_SPARSE, b"V", b"Z"]
NAMES = st.text(st.sampled_from("ab/.é\udcff\x00x"), max_size=12) | st.sampled_from(["a/", "d//", "x" * 100, "y" * 101, ""])
# what a number field (8 or 12 bytes) may hold: octal as writers spell it, and what they should not
NUMBERS = st.sampled_from([b"0000644\0", b"644 \0", b" 644\0", b"\0" * 8, b" " * 8, b"\x1c7\0", b"7\x1c\0", b"-7\0",
                           b"0_7\0", b"8\0", b"7\xc3\xa9\0", b"\x80" + b"\0" * 6 + b"\x05", b"\xff" * 8, b"777777777777",
                           b"+3\0", b"\t3\n\0", b"3\0" + b"9" * 6]) | st.binary(min_size=1, max_size=12)
OFFSETS = {"mode": 100, "uid": 108, "gid": 116, "size": 124, "mtime": 136, "devmajor": 329, "devminor": 337}


def fields(info: tarfile.TarInfo) -> dict:
    return {k: getattr(info, k, None) for k in FIELDS}


def decoded(cls, block: bytes, dircheck: bool):
    try:
        return fields(cls._frombuf(block, "utf-8", "surrogateescape", dircheck=dircheck))
    except Exception as err:  # the same exception, whichever it is
        return (type(err), str(err))


def checksum(block: bytearray, how: str) -> None:
    block[148:156] = b" " * 8
    total = sum(block) if how == "unsigned" else sum(b - 256 if b > 127 else b for b in block)
    block[148:156] = b"%06o\0 " % (total & 0o777777) if how != "wrong" else b"0000001\0"


@st.composite
def blocks(draw) -> bytes:
    info = tarfile.TarInfo(draw(NAMES))
    info.type = draw(st.sampled_from(TYPES))
    info.linkname = draw(NAMES)
    info.uname, info.gname = draw(st.sampled_from(["", "root", "ü"])), draw(st.sampled_from(["", "g"]))
    info.size = draw(st.sampled_from([0, 1, 511, 2**33]))
    fmt = draw(st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT]))
    try:
        raw = info.tobuf(fmt, "utf-8", "surrogateescape")
    except ValueError:
        raw = tarfile.TarInfo("n").tobuf(fmt)
    block = bytearray(raw[-512:])
    for field in draw(st.lists(st.sampled_from(sorted(OFFSETS)), max_size=3)):
        value = draw(NUMBERS)[: 12 if field in ("size", "mtime") else 8]
        width = 12 if field in ("size", "mtime") else 8
        block[OFFSETS[field]:OFFSETS[field] + width] = value.ljust(width, b"\0")
    if draw(st.booleans()):
        block[345:355] = draw(st.sampled_from([b"pre", b"p/q", b"\xff", b""])).ljust(10, b"\0")
    checksum(block, draw(st.sampled_from(["unsigned", "unsigned", "signed", "wrong"])))
    if draw(st.integers(0, 20)) == 0:
        block = bytearray(512) if draw(st.booleans()) else block[:draw(st.integers(0, 511))]
    return bytes(block)


@EXACT
@given(blocks(), st.booleans())
@example(b"\0" * 512, True)
@example(b"", True)
def test_a_header_block_decodes_as_tarfile_decodes_it(block, dircheck):
    assert decoded(FastTarInfo, block, dircheck) == decoded(Reference, block, dircheck)


def test_the_fast_path_is_taken_for_an_ordinary_header():
    """(else the comparison above would only compare tarfile with itself)"""
    block = tarfile.TarInfo("usr/bin/env").tobuf(tarfile.GNU_FORMAT)
    original = tarfile.TarInfo.__dict__["_frombuf"]  # the classmethod itself, not a method bound to TarInfo
    try:
        tarfile.TarInfo._frombuf = classmethod(lambda *a, **k: (_ for _ in ()).throw(AssertionError("slow path")))
        assert FastTarInfo._frombuf(block, "utf-8", "surrogateescape").name == "usr/bin/env"
    finally:
        tarfile.TarInfo._frombuf = original


def test_tarfile_reading_an_archive_goes_through_the_fast_path():
    """The override is of tarfile's private _frombuf: if a later Python stopped calling it,
    the merge would silently fall back to the slow path (the test above calls it directly)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in ("etc", "etc/hosts", "usr/bin/env"):
            tar.addfile(tarfile.TarInfo(name))
    decoded = []

    class Counting(FastTarInfo):
        @classmethod
        def _frombuf(cls, buf, encoding, errors, *, dircheck=True):
            decoded.append(buf[:1])
            return super()._frombuf(buf, encoding, errors, dircheck=dircheck)

    with tarfile.open(fileobj=io.BytesIO(out.getvalue()), tarinfo=Counting) as tar:
        assert tar.getnames() == ["etc", "etc/hosts", "usr/bin/env"]
    assert len([b for b in decoded if b != b"\0"]) == 3


@st.composite
def archives(draw) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=draw(st.sampled_from(
            [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT]))) as tar:
        for _ in range(draw(st.integers(0, 5))):
            info = tarfile.TarInfo(draw(st.text(st.sampled_from("ab/é."), min_size=1, max_size=8))
                                   + draw(st.sampled_from(["", "/" + "l" * 150])))
            info.type = draw(st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE]))
            info.linkname = draw(st.sampled_from(["", "t", "L" * 120]))
            info.uid = draw(st.sampled_from([0, 1000, 8**7]))
            info.mtime = draw(st.sampled_from([0, 1.5, 2**40]))
            if draw(st.booleans()):
                info.pax_headers = {"SCHILY.xattr.user.k": "v"}
            data = draw(st.binary(max_size=600)) if info.type == tarfile.REGTYPE else b""
            info.size = len(data)
            try:
                tar.addfile(info, io.BytesIO(data))
            except ValueError:  # a name this format cannot hold
                pass
    data = out.getvalue()
    return data[:draw(st.integers(0, len(data)))] if draw(st.integers(0, 5)) == 0 else data


def members(data: bytes, tarinfo) -> list | tuple:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:", tarinfo=tarinfo) as tar:
            return [fields(m) for m in tar]
    except Exception as err:
        return (type(err), str(err))


@EXACT
@given(archives())
def test_an_archive_reads_the_same_members(data):
    assert members(data, FastTarInfo) == members(data, Reference)


@EXACT
@given(name=NAMES, type_=st.sampled_from(TYPES), linkname=NAMES,
       uid=st.sampled_from([0, 1, 8**7 - 1, 8**7, 2**40]), size=st.sampled_from([0, 5, 8**11 - 1, 8**11]),
       mtime=st.sampled_from([0, 1, 8**11 - 1, 8**11, -1]), mode=st.integers(0, 0o177777),
       uname=st.sampled_from(["", "root", "u" * 40, "é"]))
def test_a_written_header_is_the_bytes_tarfile_writes(name, type_, linkname, uid, size, mtime, mode, uname):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.uid, info.gid, info.size, info.mtime, info.mode, info.uname = \
        type_, linkname, uid, uid, size, mtime, mode, uname
    try:
        expected = info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
    except ValueError as err:
        expected = err
    try:
        got = gnu_header(info)
    except ValueError as err:
        got = err
    assert got == expected if isinstance(expected, bytes) else (type(got), str(got)) == (type(expected), str(expected))



@settings(derandomize=True, max_examples=300)
@given(layers=hostile.layers_st)
def test_the_merge_gives_what_it_gave_with_tarfiles_header_code(layers):
    """The hostile layers of test_hostile_layers, merged with the fast header code and with
    tarfile's own (the merge before it): the same bytes, counts and errors."""
    def summary(result):
        data, error, flat = result
        return data, error, flat and (dict(flat.neutralised), flat.entries, flat.bytes, flat.relinked)

    fast = summary(hostile.run_flatten(layers))
    saved = merge.FastTarInfo, merge.gnu_header
    merge.FastTarInfo = Reference
    merge.gnu_header = lambda info: info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
    try:
        slow = summary(hostile.run_flatten(layers))
    finally:
        merge.FastTarInfo, merge.gnu_header = saved
    assert fast == slow

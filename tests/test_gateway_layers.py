"""Layer flattening into a real squashfs (tar2sqfs), read back with sqfs2tar: whiteout rules,
and a corpus of hostile layers, each neutralised and counted."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil

import pytest
import zstandard

import gatewaytools as gt
import imagebuilder as ib
from conftest import need
from imagegw import squash
from imagegw.layers import LayerError


@pytest.fixture(autouse=True)
def _tools():
    need(shutil.which("tar2sqfs") and shutil.which("sqfs2tar"), "squashfs-tools-ng is not installed")


def write_layers(tmp_path, layers: list[list], how: list[str]) -> list:
    paths = []
    for i, (entries, kind) in enumerate(zip(layers, how)):
        data = ib.layer_from_entries(entries)
        path = tmp_path / f"layer{i}"
        path.write_bytes({"gzip": lambda d: gzip.compress(d), "zstd": zstandard.ZstdCompressor().compress,
                          "none": lambda d: d}[kind](data))
        paths.append(path)
    return paths


def convert(tmp_path, *layers: list, gz: bool = True, how: list[str] | None = None, **kw):
    paths = write_layers(tmp_path, list(layers), how or ["gzip" if gz else "none"] * len(layers))
    out = tmp_path / "image.squashfs"
    flat = squash.convert(paths, out, **kw)
    convert.flat = flat
    return gt.squashfs_entries(out), dict(flat.neutralised)


def groups(tmp_path) -> set[frozenset]:
    return gt.squashfs_links_and_xattrs(tmp_path / "image.squashfs")[0]


def test_whiteouts_opaque_and_recreation(tmp_path):
    entries, counts = convert(tmp_path, [
        ib.Dir("a"), ib.File("a/keep"), ib.File("a/gone"), ib.Dir("d"), ib.File("d/x"), ib.Dir("d/sub"),
        ib.File("d/sub/y"), ib.Dir("o"), ib.File("o/old"), ib.File("f", b"file"),
    ], [
        ib.Whiteout("a/gone"), ib.Whiteout("d"), ib.Opaque("o"), ib.File("o/new"),
        ib.Dir("f"), ib.File("f/inside", b"now a dir"),   # a directory over a file
    ], [
        ib.Dir("d"), ib.File("d/again", b"2"),            # re-created under a whiteout
    ], gz=False)
    assert sorted(entries) == ["a", "a/keep", "d", "d/again", "f", "f/inside", "o", "o/new"]
    assert entries["f"][0] == "d" and counts == {}


def test_upper_file_hides_lower_directory(tmp_path):
    entries, _ = convert(tmp_path, [ib.Dir("x"), ib.File("x/y")], [ib.Symlink("x", "elsewhere")])
    assert sorted(entries) == ["x"] and entries["x"][0] == "l"


def test_owners_kept_by_default_and_forced_to_root_on_request(tmp_path):
    # image owners are data of the image (ids of its own /etc/passwd), not host accounts
    layer = [ib.Dir("etc"), ib.File("etc/shadow", b"root:*:", mode=0o640, uid=0, gid=42),
             ib.Dir("home"), ib.Dir("home/app", mode=0o750, uid=1234, gid=1234)]
    entries, counts = convert(tmp_path, layer)
    assert entries["etc/shadow"][1:4] == (0o640, 0, 42) and entries["home/app"][1:4] == (0o750, 1234, 1234)
    assert counts == {}
    entries, _ = convert(tmp_path, layer, all_root=True)
    assert {e[2:4] for e in entries.values()} == {(0, 0)}


def test_user_xattrs_kept_capabilities_and_others_dropped_and_counted(tmp_path):
    cap = bytes.fromhex("0100000200200000000000000000000000000000")  # vfs_cap_data v2, cap_net_raw
    binary = bytes(range(256))
    _, counts = convert(tmp_path, [
        ib.File("plain", b"p", xattrs={"user.mime_type": b"text/plain", "user.raw": binary}),
        ib.File("ping", b"\x7fELF", mode=0o755, xattrs={"security.capability": cap, "user.keep": b"1"}),
        ib.File("labelled", b"l", xattrs={"security.selinux": b"system_u:object_r:bin_t:s0",
                                           "trusted.overlay.opaque": b"y", "system.posix_acl_access": b"\x02"}),
    ])
    _, xattrs = gt.squashfs_links_and_xattrs(tmp_path / "image.squashfs")
    assert xattrs == {"plain": {"user.mime_type": b"text/plain", "user.raw": binary}, "ping": {"user.keep": b"1"}}
    assert counts == {"file_capability": 1, "xattr": 3}


HARDLINKS = [
    # (case, layers oldest first, names expected to share one inode, content each name has)
    ("first name removed", [
        [ib.File("a", b"one"), ib.Hardlink("b", "a"), ib.Hardlink("c", "a")],
        [ib.Whiteout("a")],
    ], [{"b", "c"}], {"b": b"one", "c": b"one"}),
    ("first name rewritten", [
        [ib.File("a", b"one", mode=0o750, uid=7, gid=8), ib.Hardlink("b", "a")],
        [ib.File("a", b"two")],
    ], [], {"a": b"two", "b": b"one"}),
    ("directory of the first name removed", [
        [ib.Dir("d"), ib.File("d/a", b"one"), ib.Dir("e"), ib.Hardlink("e/b", "d/a"), ib.Hardlink("e/c", "d/a")],
        [ib.Whiteout("d")],
    ], [{"e/b", "e/c"}], {"e/b": b"one", "e/c": b"one"}),
    ("directory of the first name made opaque", [
        [ib.Dir("d"), ib.File("d/a", b"one"), ib.Hardlink("b", "d/a")],
        [ib.Dir("d"), ib.Opaque("d"), ib.File("d/new", b"n")],
    ], [], {"b": b"one", "d/new": b"n"}),
    ("first name replaced by a directory", [
        [ib.File("a", b"one"), ib.Hardlink("b", "a")],
        [ib.Dir("a"), ib.File("a/x", b"x")],
    ], [], {"b": b"one", "a/x": b"x"}),
    ("three layers, a chain of links", [
        [ib.File("a", b"one"), ib.Hardlink("b", "a"), ib.Hardlink("c", "b"), ib.Hardlink("d", "a")],
        [ib.Whiteout("a"), ib.File("x", b"x"), ib.Hardlink("y", "x")],
        [ib.File("b", b"new b"), ib.Whiteout("x")],
    ], [{"c", "d"}], {"b": b"new b", "c": b"one", "d": b"one", "y": b"x"}),
    ("links intact", [
        [ib.File("a", b"one"), ib.Hardlink("b", "a")],
        [ib.File("z", b"z")],
    ], [{"a", "b"}], {"a": b"one", "b": b"one"}),
]


@pytest.mark.parametrize("how", ["gzip", "zstd", "none"])
@pytest.mark.parametrize("case,layers,linked,content", HARDLINKS, ids=[h[0] for h in HARDLINKS])
def test_hard_link_keeps_its_content_when_its_first_name_is_hidden(tmp_path, case, layers, linked, content, how):
    entries, counts = convert(tmp_path, *layers, how=[how] * len(layers))
    assert counts == {}
    for name, data in content.items():
        assert entries[name][0] == "f" and entries[name][6] == hashlib.sha256(data).hexdigest(), name
    assert groups(tmp_path) == {frozenset(g) for g in linked}
    if case == "first name rewritten":  # the surviving name keeps the file's own attributes too
        assert entries["b"][1:4] == (0o750, 7, 8) and entries["a"][1:4] == (0o644, 0, 0)
    hidden_first = {"first name removed": 2, "first name rewritten": 1, "directory of the first name removed": 2,
                    "directory of the first name made opaque": 1, "first name replaced by a directory": 1,
                    "three layers, a chain of links": 3, "links intact": 0}
    assert convert.flat.relinked == hidden_first[case]


def test_mixed_layer_compressions_convert_to_the_same_image(tmp_path):
    layers = [[ib.Dir("etc"), ib.File("etc/a", os.urandom(300000)), ib.Hardlink("etc/b", "etc/a")],
              [ib.File("etc/c", b"c" * 100000), ib.Whiteout("etc/a")],
              [ib.Dir("opt"), ib.File("opt/d", b"d")]]
    images = set()
    for i, how in enumerate((["gzip"] * 3, ["zstd"] * 3, ["none"] * 3, ["zstd", "gzip", "none"])):
        work = tmp_path / str(i)
        work.mkdir()
        out = work / "image.squashfs"
        squash.convert(write_layers(work, layers, how), out)
        images.add(out.read_bytes())
    assert len(images) == 1


HOSTILE = [
    ("traversal", [ib.File("../../etc/evil", b"x"), ib.File("ok/../../evil", b"x")], {"path_traversal": 2}, []),
    ("absolute name", [ib.File("/etc/evil", b"x")], {"absolute_path": 1}, []),
    ("absolute symlink escape", [ib.Symlink("esc", "/"), ib.File("esc/etc/shadow", b"x")],
     {"through_link": 1}, ["esc"]),
    ("relative symlink escape", [ib.Dir("d"), ib.Symlink("d/up", "../../../../etc/shadow")],
     {"symlink_escape": 1}, ["d"]),
    ("hardlink escape", [ib.Hardlink("h", "../../etc/shadow"), ib.Hardlink("h2", "/etc/shadow")],
     {"hardlink_escape": 2}, []),
    ("hardlink to nowhere", [ib.Hardlink("h", "no/such/file")], {"hardlink_unresolved": 1}, []),
    ("hardlink to a symlink or directory", [ib.Symlink("s", "a/b"), ib.Hardlink("h", "s"), ib.Dir("d"),
                                            ib.Hardlink("h2", "d")], {"hardlink_unresolved": 2}, ["s", "d"]),
    ("hardlink to a lower layer's file", [ib.Hardlink("h", "etc/shadow")], {"hardlink_unresolved": 1}, []),
    ("device node", [ib.Device("dev/sda", "blk", 8, 0), ib.Device("dev/mem", "chr", 1, 1)], {"device": 2}, []),
    ("setuid file", [ib.File("bin/su", b"\x7fELF", mode=0o4755), ib.File("bin/wall", b"x", mode=0o2755)],
     {"setuid_setgid": 2}, ["bin", "bin/su", "bin/wall"]),
    ("whiteout of ..", [ib.File("a/.wh.."), ib.File("a/.wh..")], {"bad_whiteout": 2}, []),
]


@pytest.mark.parametrize("name,entries,counts,kept", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_layer_is_neutralised(tmp_path, name, entries, counts, kept):
    base = [ib.Dir("etc"), ib.File("etc/shadow", b"root:secret"), ib.Dir("a"), ib.File("a/b", b"keep")]
    result, got = convert(tmp_path, base, entries)
    assert got == counts
    assert result["etc/shadow"][6] and result["a/b"][0] == "f"  # nothing of the base was harmed
    for path in result:
        assert not path.startswith(("/", "..")) and "/../" not in path
        assert result[path][0] not in "cb"
        assert result[path][0] == "d" or not result[path][1] & 0o6000
    assert sorted(set(result) - {"etc", "etc/shadow", "a", "a/b"}) == sorted(kept)
    if name == "setuid file":
        assert result["bin/su"][1] == 0o755 and result["bin/wall"][1] == 0o755


def test_corrupt_layer_fails_and_leaves_no_output(tmp_path):
    good = tmp_path / "good"
    good.write_bytes(gzip.compress(ib.layer_from_entries([ib.File("x", os.urandom(100000))])))
    bad = tmp_path / "bad"
    bad.write_bytes(good.read_bytes()[:200])
    out = tmp_path / "out.squashfs"
    with pytest.raises(LayerError, match="cannot be read"):
        squash.convert([good, bad], out)
    assert not out.exists()

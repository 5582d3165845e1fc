"""Layer flattening into a real squashfs (tar2sqfs), read back with sqfs2tar: whiteout rules,
and a corpus of hostile layers, each neutralised and counted."""

from __future__ import annotations

import gzip
import os
import shutil

import pytest

import gatewaytools as gt
import imagebuilder as ib
from conftest import need
from imagegw import squash
from imagegw.layers import LayerError


@pytest.fixture(autouse=True)
def _tools():
    need(shutil.which("tar2sqfs") and shutil.which("sqfs2tar"), "squashfs-tools-ng is not installed")


def convert(tmp_path, *layers: list, gz: bool = True, **kw):
    paths = []
    for i, entries in enumerate(layers):
        data = ib.layer_from_entries(entries)
        path = tmp_path / f"layer{i}"
        path.write_bytes(gzip.compress(data) if gz else data)
        paths.append(path)
    out = tmp_path / "image.squashfs"
    flat = squash.convert(paths, out, **kw)
    return gt.squashfs_entries(out), dict(flat.neutralised)


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


def test_owners_forced_to_root_by_default_and_kept_on_request(tmp_path):
    layer = [ib.File("u", b"1", uid=1234, gid=99)]
    entries, _ = convert(tmp_path, layer)
    assert entries["u"][2:4] == (0, 0)
    entries, _ = convert(tmp_path, layer, all_root=False)
    assert entries["u"][2:4] == (1234, 99)


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

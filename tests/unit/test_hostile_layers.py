"""Random and hostile layer tars through the gateway's flattening (imagegw/layers.py
`flatten`, the path a pull takes, with gzip, zstd and plain layers): names with `..`, absolute
names, long names, links pointing out, hard links to anything, whiteouts (opaque ones too),
devices, odd types, huge or non-numeric sizes, owners and times in pax records, truncated
and corrupt streams.

Whatever the layers hold: the result is a LayerError line or a merged tar whose every entry
stays inside the image root (no absolute or `..` name, no symbolic link climbing out, every
hard link naming a regular file written before it), names each path once, never puts an
entry under a non-directory, has no device and no setuid bit; and the same layers give the
same bytes again. Also the tree the merged tar describes is the one applying the layers in
order would give (a small model of Docker's rules, for layers without hard links).

Pure (no root, no cluster): runs in `make unit`, derandomized.
"""

from __future__ import annotations

import gzip
import io
import posixpath
import tarfile
import tempfile
from pathlib import Path

import zstandard
from hypothesis import HealthCheck, example, given, settings, strategies as st

from imagegw.layers import LayerError, flatten

# the profile's count (tests/unit/conftest.py: fewer in `make unit`), at most 80; FUZZ_EXAMPLES=N for more
EXAMPLES = int(__import__("os").environ.get("FUZZ_EXAMPLES") or min(80, settings.default.max_examples))
FUZZ = settings(derandomize=True, max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------- generated layers

NAME_PARTS = ["a", "b", "c", "..", ".", "", ".wh.a", ".wh.b", ".wh..wh..opq", ".wh.", ".wh..", ".wh...",
              "x" * 120, "é", "\udcff"]
names = st.lists(st.sampled_from(NAME_PARTS), min_size=1, max_size=4).map("/".join) | \
    st.sampled_from(["/etc/passwd", "./a", "a/", "../a", "a/../../b", "/", ".", "./", "a//b", "//a"])
link_targets = names | st.sampled_from(["/", "/etc", "..", "../../..", "a/../..", "/a/../../x", "b", "a/b"])
TYPES = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE,
         tarfile.FIFOTYPE, tarfile.CONTTYPE, b"V", b"Z"]
PAX = {"mtime": ["inf", "-inf", "nan", "1e30", "-1e30", "1.5", "x", "99999999999999999999999"],
       "uid": ["1e30", "-1", "99999999999999999999999", "x", "0"],
       "gid": ["99999999999999999999999", "-5", "1"],
       "size": ["-1", "x", "1e30"],
       "path": ["../../escape", "/abs/olute", "ok/name"],
       "linkpath": ["../../../etc/shadow", "/etc", "a"],
       "SCHILY.xattr.user.x": ["v"], "SCHILY.xattr.security.capability": ["\x01"],
       "SCHILY.xattr.trusted.t": ["t"], "LIBARCHIVE.xattr.user.y": ["dg=="]}


@st.composite
def entries(draw):
    kind = draw(st.sampled_from(TYPES))
    info = {"name": draw(names), "type": kind, "mode": draw(st.sampled_from([0o644, 0o755, 0o4755, 0o2755, 0o7777, 0])),
            "uid": draw(st.sampled_from([0, 1000, 65534, 2**21 - 1])), "mtime": draw(st.sampled_from([0, 1, 2**33 - 1])),
            "linkname": draw(link_targets) if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else "",
            "data": draw(st.binary(max_size=40)) if kind in (tarfile.REGTYPE, tarfile.CONTTYPE) else b"",
            "pax": draw(st.dictionaries(st.sampled_from(sorted(PAX)), st.just(None), max_size=2))}
    info["pax"] = {k: draw(st.sampled_from(PAX[k])) for k in info["pax"]}
    return info


def tar_bytes(layer: list[dict]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as tar:
        for e in layer:
            info = tarfile.TarInfo(e["name"])
            info.type, info.mode, info.uid, info.mtime = e["type"], e["mode"], e["uid"], e["mtime"]
            info.linkname, info.size = e["linkname"], len(e["data"])
            info.pax_headers = dict(e["pax"])
            tar.addfile(info, io.BytesIO(e["data"]) if e["data"] else None)
    return out.getvalue()


def damage(data: bytes, how: tuple[str, int]) -> bytes:
    kind, at = how
    if kind == "truncate":
        return data[:at % (len(data) + 1)]
    if kind == "flip" and data:
        i = at % len(data)
        return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
    if kind == "huge_size" and len(data) >= 512:   # the first header's size field: 11 octal digits of 7s
        return data[:124] + b"77777777777\0" + data[136:148] + _checksum(data[:124] + b"77777777777\0" + data[136:512]) + data[156:]
    return data


def _checksum(header: bytes) -> bytes:
    blank = header[:148] + b" " * 8 + header[156:]
    return b"%06o\0 " % sum(blank)


COMPRESS = {"none": lambda d: d, "gzip": lambda d: gzip.compress(d, mtime=0),
            "zstd": lambda d: zstandard.ZstdCompressor().compress(d)}
layers_st = st.lists(st.tuples(st.lists(entries(), max_size=8), st.sampled_from(sorted(COMPRESS)),
                               st.sampled_from([("none", 0)]) | st.tuples(
                                   st.sampled_from(["truncate", "flip", "huge_size"]), st.integers(0, 5000))),
                     min_size=1, max_size=3)


def run_flatten(layers) -> tuple[bytes | None, str | None, object]:
    """(merged tar, None, counts) or (None, the LayerError line, None)."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, (layer, compression, how) in enumerate(layers):
            path = Path(tmp) / f"layer{i}"
            raw = tar_bytes(layer)
            # damage the tar itself, or (for compressed layers) the compressed stream
            blob = COMPRESS[compression](damage(raw, how) if compression == "none" else raw)
            if compression != "none":
                blob = damage(blob, how) if how[0] != "huge_size" else COMPRESS[compression](damage(raw, how))
            path.write_bytes(blob)
            paths.append(path)
        out = io.BytesIO()
        try:
            flat = flatten(paths, out)
        except LayerError as err:
            assert str(err) and "\n" not in str(err)
            return None, str(err), None
        return out.getvalue(), None, flat


def _escapes(path: str, target: str) -> bool:
    base = "/" if target.startswith("/") else "/" + posixpath.dirname(path)
    return not posixpath.normpath(posixpath.join("/root", base.lstrip("/"), target)).startswith("/root") \
        if not target.startswith("/") else False


def check_merged(data: bytes) -> list[tarfile.TarInfo]:
    members = list(tarfile.open(fileobj=io.BytesIO(data), mode="r:", encoding="utf-8", errors="surrogateescape"))
    seen: dict[str, tarfile.TarInfo] = {}
    for m in members:
        name = m.name
        assert name and not name.startswith("/") and ".." not in name.split("/"), name
        assert "" not in name.split("/") and "." not in name.split("/"), name
        assert name not in seen, f"{name} twice"
        assert not (m.ischr() or m.isblk()), name
        assert m.isdir() or not m.mode & 0o6000, name
        assert m.isreg() or m.isdir() or m.issym() or m.islnk() or m.isfifo(), (name, m.type)
        if m.issym():
            assert not _escapes(name, m.linkname), (name, m.linkname)
        if m.islnk():
            target = seen.get(m.linkname)
            assert target is not None and target.isreg(), (name, m.linkname)
        seen[name] = m
    for name in seen:   # nothing under a non-directory: whatever order an unpacker uses
        parts = name.split("/")
        for i in range(1, len(parts)):
            above = seen.get("/".join(parts[:i]))
            assert above is None or above.isdir(), f"{name} lies under {above.name}, a {above.type!r}"
    return members


@FUZZ
@given(layers=layers_st)
@example(layers=[([{"name": "a", "type": tarfile.REGTYPE, "mode": 0o644, "uid": 0, "mtime": 0, "linkname": "",
                    "data": b"x", "pax": {"mtime": "inf"}}], "none", ("none", 0))])
@example(layers=[([{"name": "a", "type": tarfile.REGTYPE, "mode": 0o644, "uid": 0, "mtime": 0, "linkname": "",
                    "data": b"x", "pax": {"uid": "99999999999999999999999"}}], "none", ("none", 0))])
@example(layers=[([{"name": "a", "type": tarfile.REGTYPE, "mode": 0o644, "uid": 0, "mtime": 0, "linkname": "",
                    "data": b"x" * 600, "pax": {}}], "zstd", ("truncate", 30))])
def test_any_layers_merge_inside_the_root_deterministically_or_fail_with_one_line(layers):
    data, error, _ = run_flatten(layers)
    again, error_again, _ = run_flatten(layers)
    assert (data, error) == (again, error_again), "the same layers must give the same result"
    if data is not None:
        check_merged(data)


# ---------------------------------------------------------------- the model: Docker's rules

def D(name):  # noqa: N802 - short entry makers for the examples
    return {"name": name, "type": tarfile.DIRTYPE}


def F(name, data=b"f"):  # noqa: N802
    return {"name": name, "type": tarfile.REGTYPE, "data": data}


def S(name, target):  # noqa: N802
    return {"name": name, "type": tarfile.SYMTYPE, "linkname": target}


def W(name):  # noqa: N802
    parent, base = posixpath.split(name)
    return {"name": posixpath.join(parent, ".wh." + base), "type": tarfile.REGTYPE}


def O(parent):  # noqa: N802, E743
    return {"name": posixpath.join(parent, ".wh..wh..opq"), "type": tarfile.REGTYPE}


def simple_tar(layer: list[dict]) -> bytes:
    return tar_bytes([{"mode": 0o755, "uid": 0, "mtime": 0, "linkname": "", "data": b"", "pax": {}, **e}
                      for e in layer])


def model(layers: list[list[dict]]) -> dict[str, tuple]:
    """The tree applying the layers in order gives (Docker's rules; a layer's own entries are
    read in order and the first of a name wins, as the flattener does; a directory implied by
    a deeper name is a directory, and exists in the image while something below it does: the
    flattener writes no entry of its own). Path -> ("d",) | ("f", data) | ("l", target)."""
    tree: dict[str, tuple] = {}

    def drop(path):
        for p in [p for p in tree if p == path or p.startswith(path + "/")]:
            del tree[p]

    def imply(ancestors, here):
        for a in ancestors:
            if a not in here:
                if tree.get(a, ("d",))[0] not in "di":
                    drop(a)
                tree.setdefault(a, ("i",))
                here.add(a)

    for layer in layers:
        here: set[str] = set()
        named: set[str] = set()
        deleted, opaque = [], []
        for e in layer:
            name = e["name"].strip("/")
            parent, base = posixpath.split(name)
            ancestors = [name[:i] for i in range(len(name)) if name[i] == "/"]
            if base.startswith(".wh."):   # its directory exists in this layer (Docker makes it)
                if any(a in here and tree.get(a, ("d",))[0] not in "di" for a in ancestors):
                    continue
                imply(ancestors, here)
                if base == ".wh..wh..opq":
                    opaque.append(parent)
                else:
                    deleted.append(posixpath.join(parent, base[4:]))
                continue
            if e["type"] == tarfile.DIRTYPE and name in here and name not in named and tree.get(name, ("x",))[0] in "di":
                tree[name] = ("d",)   # named after a deeper name implied it: now it exists itself
                named.add(name)
            if name in here or any(a in here and tree.get(a, ("d",))[0] not in "di" for a in ancestors):
                continue   # a later duplicate, or an entry under a non-directory of this layer
            here.add(name)
            named.add(name)
            imply(ancestors, here)
            kind = {tarfile.DIRTYPE: ("d",), tarfile.REGTYPE: ("f", e.get("data", b"")),
                    tarfile.SYMTYPE: ("l", e.get("linkname", ""))}[e["type"]]
            if kind[0] != "d" or tree.get(name, ("x",))[0] not in "di":
                drop(name)
            tree[name] = kind
        # whiteouts and opaque directories apply to the layers below only: applied first
        # would be wrong, so they were collected and remove what older layers left
        # (a directory this layer only implies stays implied: it is not made unless named)
        def remove(p):
            if p in here and p not in named:
                tree[p] = ("i",)
            elif p not in here:
                del tree[p]

        for path in deleted:
            for p in [p for p in tree if p == path or p.startswith(path + "/")]:
                remove(p)
        for parent in opaque:
            for p in [p for p in tree if p.startswith(parent + "/")]:
                remove(p)
    tree = {p: kind for p, kind in tree.items() if kind[0] != "i"}
    for name in list(tree):
        for i, ch in enumerate(name):
            if ch == "/":
                tree.setdefault(name[:i], ("d",))
    return tree


def merged_tree(layers: list[list[dict]]) -> dict[str, tuple]:
    data, error, _ = run_flatten([(layer, "none", ("none", 0)) for layer in layers])
    assert error is None, error
    tree: dict[str, tuple] = {}
    tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
    for m in check_merged(data):
        tree[m.name] = ("d",) if m.isdir() else ("l", m.linkname) if m.issym() else ("f", tar.extractfile(m).read())
    for name in list(tree):   # directories the tar implies without naming them
        for i, ch in enumerate(name):
            if ch == "/":
                tree.setdefault(name[:i], ("d",))
    return tree


simple_names = st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3).map("/".join)
simple_entry = st.one_of(simple_names.map(D), st.builds(F, simple_names, st.sampled_from([b"1", b"2"])),
                         st.builds(S, simple_names, st.sampled_from(["b", "/c", "a/b"])),
                         simple_names.map(W), simple_names.map(O))


def normalise_layer(layer: list[dict]) -> list[dict]:
    return [{"mode": 0o755, "uid": 0, "mtime": 0, "linkname": "", "data": b"", "pax": {}, **e} for e in layer]


@FUZZ
@given(layers=st.lists(st.lists(simple_entry, max_size=6), min_size=1, max_size=3))
@example(layers=[[S("a", "/c")], [F("a/x")]])             # a newer layer's file under an older link
@example(layers=[[F("a/x"), S("a", "b")]])                # a link after an entry below it, one layer
@example(layers=[[D("a"), F("a/x")], [F("a")], [F("a/y")]])
def test_the_merged_tree_is_what_applying_the_layers_in_order_gives(layers):
    layers = [normalise_layer(layer) for layer in layers]
    assert merged_tree(layers) == model(layers)


class _ReaderGone(io.RawIOBase):
    """The merged tar's reader (tar2sqfs) has exited: every write is a broken pipe."""

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_failing_output_is_not_blamed_on_the_layer(tmp_path):
    """When tar2sqfs dies (its disk is full), the error is the write's, so the conversion
    reports tar2sqfs's own reason, not 'layer cannot be read: Broken pipe'."""
    layer = tmp_path / "layer0"
    layer.write_bytes(simple_tar([F("a", b"x" * (4 << 20))]))
    try:
        flatten([layer], _ReaderGone())
    except BrokenPipeError:
        pass
    else:
        raise AssertionError("a write that fails must fail the flattening")

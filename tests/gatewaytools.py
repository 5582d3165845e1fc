"""Helpers shared by the gateway tests: read a squashfs or a directory as comparable entries,
build the three-layer Debian test image, unpack an image the independent way (skopeo+umoci),
play a registry host that accepts, hangs or answers 404 (Listener)."""

from __future__ import annotations

import hashlib
import os
import stat
import socket
import subprocess
import tarfile
import threading
from pathlib import Path

import imagebuilder as ib

REGISTRY = "127.0.0.1:5000"
STATE = Path(os.environ.get("SHIFTER_CLUSTER_STATE", "/var/lib/shifter-cluster"))
REGISTRY_DATA = STATE / "registry/data"


def squashfs_entries(path: str | Path) -> dict[str, tuple]:
    """path -> (type, mode, uid, gid, size, link target, sha256) read back with sqfs2tar."""
    proc = subprocess.Popen(["sqfs2tar", str(path)], stdout=subprocess.PIPE)
    out: dict[str, tuple] = {}
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        for m in tar:
            name = m.name.strip("/").removeprefix("./")
            if not name or name == ".":
                continue
            if m.islnk():  # a hard link: same content as its target
                t = out[m.linkname.strip("/").removeprefix("./")]
                out[name] = ("f", m.mode & 0o7777, m.uid, m.gid, t[4], "", t[6])
                continue
            digest = hashlib.sha256(tar.extractfile(m).read()).hexdigest() if m.isreg() else ""
            kind = {tarfile.REGTYPE: "f", tarfile.DIRTYPE: "d", tarfile.SYMTYPE: "l", tarfile.FIFOTYPE: "p",
                    tarfile.CHRTYPE: "c", tarfile.BLKTYPE: "b"}[m.type]
            out[name] = (kind, m.mode & 0o7777, m.uid, m.gid, m.size if m.isreg() else 0,
                         m.linkname if m.issym() else "", digest)
    assert proc.wait() == 0
    return out


def squashfs_links_and_xattrs(path: str | Path) -> tuple[set[frozenset], dict[str, dict[str, bytes]]]:
    """The hard-link groups (names sharing one inode, 2 or more) and the extended attributes
    (path -> {name: value}) of a squashfs, read back with sqfs2tar."""
    proc = subprocess.Popen(["sqfs2tar", str(path)], stdout=subprocess.PIPE)
    groups: dict[str, set[str]] = {}
    xattrs: dict[str, dict[str, bytes]] = {}
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        for m in tar:
            name = m.name.strip("/").removeprefix("./")
            if m.islnk():
                groups.setdefault(m.linkname.strip("/").removeprefix("./"), set()).add(name)
            found = {k.removeprefix("SCHILY.xattr."): v.encode("utf-8", "surrogateescape")
                     for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")}
            if found:
                xattrs[name] = found
    assert proc.wait() == 0
    return {frozenset({first, *others}) for first, others in groups.items()}, xattrs


def tree_links_and_xattrs(root: str | Path) -> tuple[set[frozenset], dict[str, dict[str, bytes]]]:
    """The same view of an unpacked directory tree (inode numbers; xattrs of every namespace)."""
    root = Path(root)
    inodes: dict[tuple[int, int], set[str]] = {}
    xattrs: dict[str, dict[str, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            rel = str(full.relative_to(root))
            st = full.lstat()
            if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
                inodes.setdefault((st.st_dev, st.st_ino), set()).add(rel)
            if not stat.S_ISLNK(st.st_mode):
                found = {k: os.getxattr(full, k) for k in os.listxattr(full)}
                if found:
                    xattrs[rel] = found
    return {frozenset(names) for names in inodes.values() if len(names) > 1}, xattrs


def tree_entries(root: str | Path) -> dict[str, tuple]:
    """The same view of an unpacked directory tree."""
    root = Path(root)
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            st = full.lstat()
            rel = str(full.relative_to(root))
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISREG(st.st_mode):
                out[rel] = ("f", mode, st.st_uid, st.st_gid, st.st_size, "",
                            hashlib.sha256(full.read_bytes()).hexdigest())
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", mode, st.st_uid, st.st_gid, 0, "", "")
            elif stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", 0o777, st.st_uid, st.st_gid, 0, os.readlink(full), "")
            elif stat.S_ISFIFO(st.st_mode):
                out[rel] = ("p", mode, st.st_uid, st.st_gid, 0, "", "")
            elif stat.S_ISCHR(st.st_mode):
                out[rel] = ("c", mode, st.st_uid, st.st_gid, 0, "", "")
            elif stat.S_ISBLK(st.st_mode):
                out[rel] = ("b", mode, st.st_uid, st.st_gid, 0, "", "")
    return out


def umoci_unpack(repo: str, tag: str, workdir: str | Path) -> Path:
    """The independent unpacker: skopeo copy from the registry, then umoci unpack (as root)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    layout = workdir / "oci"
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                    f"docker://{REGISTRY}/{repo}:{tag}", f"oci:{layout}:{tag}"], check=True, timeout=600)
    bundle = workdir / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle)], check=True,
                   capture_output=True, timeout=600)
    return bundle / "rootfs"


def debian_image(label: str = "") -> ib.Image:
    """Three layers: debootstrap minbase; then a file whiteout, a directory whiteout, an opaque
    directory; then a path re-created under the whited-out directory and a whiteout of a file
    the second layer added. A `label` gives a new image (manifest) with the same layers."""
    base = ib.layer_from_dir(ib.debian_tree())
    second = ib.layer_from_entries([
        ib.Whiteout("etc/issue.net"),                 # file whiteout
        ib.Whiteout("usr/share/doc"),                 # directory whiteout
        ib.Dir("etc/apt"),
        ib.Opaque("etc/apt"),                         # opaque: lower etc/apt content hidden
        ib.File("etc/apt/sources.list", b"deb http://example.invalid/debian bookworm main\n"),
        ib.Dir("opt"), ib.Dir("opt/app"),
        ib.File("opt/app/hello.txt", b"hello from layer 2\n"),
        ib.File("opt/app/tool", b"#!/bin/sh\necho tool\n", mode=0o755),
        ib.Hardlink("opt/app/tool-link", "opt/app/tool"),
        ib.Symlink("opt/app/current", "/opt/app/tool"),
    ])
    third = ib.layer_from_entries([
        ib.Dir("usr/share/doc"),
        ib.Dir("usr/share/doc/recreated"),            # re-created under a whited-out directory
        ib.File("usr/share/doc/recreated/README", b"back again\n"),
        ib.Whiteout("opt/app/hello.txt"),
        ib.File("opt/app/world.txt", b"layer 3\n", mode=0o600, uid=1000, gid=1000),
        ib.File("etc/motd", b"three layers\n"),
    ])
    return ib.Image([base, second, third], config={
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"],
        "Cmd": ["/bin/bash"], "Entrypoint": ["/usr/bin/env"], "WorkingDir": "/opt/app", "User": "1000",
        "Labels": {"org.example.test": "debian-3-layers", **({"run": label} if label else {})}})


class Listener:
    """A TCP listener on loopback that counts connections and treats them per `mode`:
    'close' (accept, close at once), 'hang' (accept, never answer), 'answer' (HTTP 404)."""

    def __init__(self, addr: str, port: int, mode: str = "close"):
        self.sock = socket.create_server((addr, port), reuse_port=False)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.mode = mode
        self.accepted = 0
        self.hung: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            if self.mode == "hang":
                self.hung.append(conn)
            elif self.mode == "answer":
                conn.settimeout(2)
                try:
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
                except OSError:
                    pass
                conn.close()
            else:
                conn.close()

    def answer_all(self) -> None:
        """From now on answer 404 (pulls fail at once); drop the connections held so far."""
        self.mode = "answer"
        for conn in self.hung:
            conn.close()
        self.hung.clear()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.answer_all()
        self.sock.close()


def age_rows(key_like: str, seconds: float = 3600) -> None:
    """Make the gateway's rows whose key is LIKE `key_like` look as if their last pull finished
    `seconds` earlier: the next pull asks the registry again (gateway.repull_after)."""
    import sqlite3

    with sqlite3.connect(STATE / "gateway/images.db", timeout=30) as db:
        db.execute("UPDATE images SET updated = updated - ? WHERE key LIKE ?", (seconds, key_like))

"""Build OCI/Docker images in memory and push them to a real registry (standard library only).

Tests build every image they use (docs/architecture.md, decision 9): layers are tars made here, from a
directory (busybox-static, a debootstrap tree) or from a list of entries (whiteouts, hostile
names...). Reusable by any test file:

    image = Image([layer_from_entries([File("hello", b"hi")])], config={"Cmd": ["/hello"]})
    digest = push("127.0.0.1:5000", "test/hello", "1", image)
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DEBIAN_MIRROR = "http://deb.debian.org/debian"  # the mirror apt uses on this machine
CACHE = Path(os.environ.get("SHIFTER_TEST_CACHE", "/var/cache/shifter-test"))


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- layer entries


@dataclass
class File:
    name: str
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    xattrs: dict = field(default_factory=dict)  # name -> bytes, written as SCHILY.xattr pax records


@dataclass
class Dir:
    name: str
    mode: int = 0o755
    uid: int = 0
    gid: int = 0


@dataclass
class Symlink:
    name: str
    target: str


@dataclass
class Hardlink:
    name: str
    target: str


@dataclass
class Device:
    name: str
    kind: str = "chr"  # or "blk"
    major: int = 1
    minor: int = 3


@dataclass
class Fifo:
    name: str


def Whiteout(path: str) -> File:  # noqa: N802 - reads as an entry kind
    """Delete `path` of lower layers."""
    parent, base = os.path.split(path)
    return File(os.path.join(parent, ".wh." + base))


def Opaque(directory: str) -> File:  # noqa: N802
    """Hide everything lower layers have under `directory`."""
    return File(os.path.join(directory, ".wh..wh..opq"))


def layer_from_entries(entries: list, mtime: int = 1_700_000_000) -> bytes:
    """An uncompressed layer tar, entries written as given (no checks: hostile ones too)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.mtime = mtime
            data = None
            if isinstance(e, File):
                info.size, info.mode, info.uid, info.gid = len(e.data), e.mode, e.uid, e.gid
                info.pax_headers = {"SCHILY.xattr." + k: v.decode("utf-8", "surrogateescape")
                                    for k, v in e.xattrs.items()}
                data = io.BytesIO(e.data)
            elif isinstance(e, Dir):
                info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, e.mode, e.uid, e.gid
            elif isinstance(e, Symlink):
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, e.target, 0o777
            elif isinstance(e, Hardlink):
                info.type, info.linkname = tarfile.LNKTYPE, e.target
            elif isinstance(e, Device):
                info.type = tarfile.CHRTYPE if e.kind == "chr" else tarfile.BLKTYPE
                info.devmajor, info.devminor, info.mode = e.major, e.minor, 0o666
            elif isinstance(e, Fifo):
                info.type, info.mode = tarfile.FIFOTYPE, 0o644
            else:
                raise TypeError(e)
            tar.addfile(info, data)
    return buf.getvalue()


def layer_from_dir(root: str | Path, skip: tuple[str, ...] = ()) -> bytes:
    """An uncompressed layer tar of a directory tree (sorted, owners and modes kept),
    without the paths in `skip` (relative, e.g. "usr/share/doc") and what is below them."""
    buf = io.BytesIO()

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if any(info.name == p or info.name.startswith(f"{p}/") for p in skip) else info

    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(os.listdir(root)):
            tar.add(os.path.join(root, name), arcname=name, filter=keep if skip else None)
    return buf.getvalue()


# ---------------------------------------------------------------- images


@dataclass
class Image:
    layers: list[bytes]                     # uncompressed tars, oldest first
    config: dict = field(default_factory=dict)  # the "config" part: Env, Cmd, Entrypoint...
    architecture: str = "amd64"
    os: str = "linux"
    docker: bool = False                    # Docker v2 media types instead of OCI
    compresslevel: int = 6
    compression: list[str] | None = None    # per layer: "gzip" (default), "zstd" or "none" (OCI only)

    def _compress(self, i: int, layer: bytes) -> tuple[str, bytes]:
        how = (self.compression or ["gzip"] * len(self.layers))[i]
        if how == "gzip":
            return (DOCKER_LAYER if self.docker else OCI_LAYER), gzip.compress(layer, compresslevel=self.compresslevel, mtime=0)
        if how == "zstd":
            import zstandard  # a dependency of the gateway
            return OCI_LAYER_ZSTD, zstandard.ZstdCompressor(level=3).compress(layer)
        if how == "none":
            return OCI_LAYER_TAR, layer
        raise ValueError(how)

    def blobs(self) -> tuple[bytes, bytes, list[bytes]]:
        """(manifest, config, compressed layers): deterministic for the same input."""
        typed = [self._compress(i, layer) for i, layer in enumerate(self.layers)]
        compressed = [blob for _, blob in typed]
        config = json.dumps({
            "architecture": self.architecture, "os": self.os, "config": self.config,
            "rootfs": {"type": "layers", "diff_ids": [sha256(l) for l in self.layers]},
            "history": [{"created_by": "tests/imagebuilder.py"} for _ in self.layers],
        }, sort_keys=True).encode()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": DOCKER_MANIFEST if self.docker else OCI_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG if self.docker else OCI_CONFIG,
                       "digest": sha256(config), "size": len(config)},
            "layers": [{"mediaType": media, "digest": sha256(c), "size": len(c)} for media, c in typed],
        }, sort_keys=True).encode()
        return manifest, config, compressed

    @property
    def media_type(self) -> str:
        return DOCKER_MANIFEST if self.docker else OCI_MANIFEST


def _req(method: str, url: str, data: bytes | None = None, headers: dict | None = None):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    return urllib.request.urlopen(req, timeout=120)


def push_blob(registry: str, repo: str, data: bytes) -> str:
    """Upload one blob (POST then PUT, as the registry wants); skipped when already there."""
    digest = sha256(data)
    base = f"http://{registry}/v2/{repo}"
    try:
        _req("HEAD", f"{base}/blobs/{digest}").close()
        return digest
    except urllib.error.HTTPError as err:
        if err.code != 404:
            raise
    with _req("POST", f"{base}/blobs/uploads/", data=b"") as resp:
        location = urllib.parse.urljoin(f"http://{registry}/", resp.headers["Location"])
    sep = "&" if "?" in location else "?"
    _req("PUT", f"{location}{sep}digest={digest}", data=data,
         headers={"Content-Type": "application/octet-stream"}).close()
    return digest


def push_manifest(registry: str, repo: str, ref: str, manifest: bytes, media_type: str) -> str:
    _req("PUT", f"http://{registry}/v2/{repo}/manifests/{ref}", data=manifest,
         headers={"Content-Type": media_type}).close()
    return sha256(manifest)


def push(registry: str, repo: str, tag: str, image: Image) -> str:
    """Push an image; returns its manifest digest (= the gateway's image id, with sha256:)."""
    manifest, config, layers = image.blobs()
    for blob in (config, *layers):
        push_blob(registry, repo, blob)
    return push_manifest(registry, repo, tag, manifest, image.media_type)


def push_index(registry: str, repo: str, tag: str, images: list[Image], docker: bool = False,
               extra: list[dict] | None = None) -> tuple[str, list[str]]:
    """Push a multi-platform OCI index (or Docker manifest list); (index digest, image digests)."""
    entries, digests = [], []
    for image in images:
        manifest, _, _ = image.blobs()
        digest = push_blob_manifest(registry, repo, image)
        digests.append(digest)
        entries.append({"mediaType": image.media_type, "digest": digest, "size": len(manifest),
                        "platform": {"architecture": image.architecture, "os": image.os}})
    entries += extra or []
    media = DOCKER_LIST if docker else OCI_INDEX
    index = json.dumps({"schemaVersion": 2, "mediaType": media, "manifests": entries}, sort_keys=True).encode()
    return push_manifest(registry, repo, tag, index, media), digests


def push_blob_manifest(registry: str, repo: str, image: Image) -> str:
    """Push an image by digest only (as the members of an index are)."""
    manifest, config, layers = image.blobs()
    for blob in (config, *layers):
        push_blob(registry, repo, blob)
    return push_manifest(registry, repo, sha256(manifest), manifest, image.media_type)


def blob_file(storage: str | Path, digest: str) -> Path:
    """Where the filesystem-backed registry keeps a blob (for tampering tests)."""
    hexd = digest.split(":", 1)[1]
    return Path(storage) / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"


# ---------------------------------------------------------------- ready-made trees


def busybox_tree(root: str | Path) -> Path:
    """A minimal root: busybox-static and its applet links under /bin."""
    root = Path(root)
    (root / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2("/bin/busybox", root / "bin/busybox")
    for applet in ("sh", "ls", "cat", "echo", "true", "id", "env"):
        (root / "bin" / applet).symlink_to("busybox")
    for d in ("etc", "tmp", "proc", "sys", "dev"):
        (root / d).mkdir(exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    (root / "etc/os-release").write_text("NAME=busybox-test\n")
    return root


def debian_tree(include: tuple[str, ...] = ()) -> Path:
    """A debootstrap --variant=minbase bookworm tree (with the `include`d packages and their
    dependencies), made once per package set and cached on disk."""
    name = "debian-minbase" + "".join(f"+{p}" for p in sorted(include))
    target = CACHE / name
    done = CACHE / f"{name}.complete"  # outside the tree: not part of the image
    if done.exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    work = CACHE / f"{name}.work"
    shutil.rmtree(work, ignore_errors=True)
    extra = [f"--include={','.join(sorted(include))}"] if include else []
    subprocess.run(["debootstrap", "--variant=minbase", *extra, "bookworm", str(work), DEBIAN_MIRROR],
                   check=True, capture_output=True, timeout=1200)
    shutil.rmtree(target, ignore_errors=True)
    work.rename(target)
    done.touch()
    return target

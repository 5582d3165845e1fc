"""Images built by buildah (Debian's package) from Dockerfiles, with no network: every build
starts FROM scratch and ADDs a root made here (busybox-static, or the cached debootstrap tree).

Storage lives in a temporary directory owned by one `Buildah` (overlay driver: a rewritten
file is copied up, so hard links break exactly as on a Docker or podman build host; chroot
isolation); `close()` removes containers and images, checks no mount is left under it and
deletes it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import imagebuilder as ib

POLICY = {"default": [{"type": "insecureAcceptAnything"}]}
COMPRESSIONS = ("none", "gzip", "zstd")


def busybox_rootfs_tar(extra: dict[str, bytes] | None = None) -> bytes:
    """A root holding /bin/busybox only (a RUN installs the applets), as an uncompressed tar."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("bin", "etc", "tmp"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add("/bin/busybox", arcname="bin/busybox")
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def tree_tar(root: str | Path) -> bytes:
    """A directory tree (owners, modes, hard links kept) as an uncompressed tar."""
    return ib.layer_from_dir(root)


class Buildah:
    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="buildah-", dir="/var/tmp"))
        self.policy = self.base / "policy.json"
        self.policy.write_text(json.dumps(POLICY))
        self._argv = ["buildah", "--root", str(self.base / "storage"), "--runroot", str(self.base / "run"),
                      "--storage-driver", "overlay"]

    def __call__(self, *args: str, timeout: int = 600) -> str:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(self.base), "BUILDAH_ISOLATION": "chroot",
               "TMPDIR": str(self.base)}
        proc = subprocess.run([*self._argv, *args], capture_output=True, text=True, env=env, timeout=timeout)
        assert proc.returncode == 0, f"buildah {' '.join(args)}: {proc.stderr.strip()[-2000:]}"
        return proc.stdout

    def build(self, tag: str, dockerfile: str, context: dict[str, bytes], build_args: dict[str, str] | None = None) -> None:
        """Build with one layer per instruction that changes files (`--layers`)."""
        ctx = Path(tempfile.mkdtemp(prefix="ctx-", dir=self.base))
        (ctx / "Dockerfile").write_text(dockerfile)
        for name, data in context.items():
            (ctx / name).write_bytes(data)
        args = [f"--build-arg={k}={v}" for k, v in (build_args or {}).items()]
        self("bud", "--layers", "--isolation", "chroot", "--format", "oci", *args, "-t", tag, str(ctx))
        shutil.rmtree(ctx)

    def push_registry(self, tag: str, registry: str, repo: str, ref: str, compression: str = "gzip") -> str:
        """`buildah push` to a plain-http registry; returns the manifest digest it wrote."""
        digest_file = self.base / "digest"
        self("push", "--signature-policy", str(self.policy), "--tls-verify=false", "--digestfile",
             str(digest_file), *self._compression(compression), tag, f"docker://{registry}/{repo}:{ref}")
        return digest_file.read_text().strip()

    def push_dir(self, tag: str, compression: str) -> Path:
        """`buildah push` into a `dir:` layout with one compression (none, gzip or zstd)."""
        dest = self.base / f"dir-{tag.replace('/', '_').replace(':', '_')}-{compression}"
        shutil.rmtree(dest, ignore_errors=True)
        self("push", "--signature-policy", str(self.policy), *self._compression(compression), tag, f"dir:{dest}")
        return dest

    @staticmethod
    def _compression(compression: str) -> list[str]:
        return {"none": ["--disable-compression"], "gzip": ["--compression-format", "gzip"],
                "zstd": ["--compression-format", "zstd"]}[compression]

    def rootfs(self, tag: str) -> tuple[str, Path]:
        """(container, its root) for `tag`: buildah's own view of the image, through `buildah mount`."""
        container = self("from", "--pull-never", tag).strip()
        return container, Path(self("mount", container).strip())

    def release(self, container: str) -> None:
        self("umount", container)
        self("rm", container)

    def close(self) -> None:
        try:
            self("rm", "--all")
            self("rmi", "--all", "--force")
        finally:
            mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
                      if line.split()[4].startswith(str(self.base))]
            for mount in sorted(mounts, reverse=True):  # ours only: everything under our own directory
                subprocess.run(["umount", mount], capture_output=True)
            shutil.rmtree(self.base, ignore_errors=True)
        assert mounts == [], f"buildah left mounts behind: {mounts}"


def mixed_image(layout_dirs: dict[str, Path], order: list[str]) -> tuple[bytes, bytes, list[tuple[bytes, str]]]:
    """One image from several `dir:` pushes of the same build: layer i taken from the push
    with compression order[i] (buildah compresses all layers of one push alike). Returns
    (manifest, config, [(layer blob, media type)]), buildah's own bytes."""
    manifests = {c: json.loads((d / "manifest.json").read_text()) for c, d in layout_dirs.items()}
    first = manifests[order[0]]
    layers = []
    for i, compression in enumerate(order):
        entry = manifests[compression]["layers"][i]
        blob = (layout_dirs[compression] / entry["digest"].split(":", 1)[1]).read_bytes()
        layers.append((entry, blob))
    manifest = dict(first)
    manifest["layers"] = [entry for entry, _ in layers]
    body = json.dumps(manifest).encode()
    config = (layout_dirs[order[0]] / first["config"]["digest"].split(":", 1)[1]).read_bytes()
    return body, config, [(blob, entry["mediaType"]) for entry, blob in layers]

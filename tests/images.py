"""Test images made by the tests: a busybox-static root (+ a setuid-root probe binary)
turned into a squashfs and published into an image dir, as the gateway would."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from shifter_site.imagefiles import ImageRecord, publish

APPLETS = ("sh", "true", "false", "id", "cat", "ls", "echo", "env", "pwd", "touch", "mkdir", "stat",
           "grep", "df", "sleep", "rm", "dd", "readlink", "test", "wc", "head", "mount")
PROBE_C = r"""
#include <stdio.h>
#include <unistd.h>
int main(void) { printf("%d %d\n", (int)getuid(), (int)geteuid()); return 0; }
"""


def _probe(dest: Path) -> None:
    """A static binary printing its real and effective uid (setuid root in the image)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "probe.c"
        src.write_text(PROBE_C)
        subprocess.run(["gcc", "-static", "-O1", "-o", str(dest), str(src)], check=True)


def make_root(root: Path) -> None:
    for d in ("bin", "usr/bin", "etc", "home", "tmp", "root", "mnt", "run", "dev", "proc", "sys",
              "opt/app", "var/lib/app", "srv/data"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2("/bin/busybox", root / "bin/busybox")
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    _probe(root / "usr/bin/suidprobe")
    os.chmod(root / "usr/bin/suidprobe", 0o4755)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nimageuser:x:4242:4242::/:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    (root / "etc/os-release").write_text("NAME=shifter-test\n")
    (root / "etc/motd").write_text("image motd\n")
    (root / "opt/app/hello").write_text("hello from the image\n")
    (root / "srv/data/file").write_text("data\n")
    (root / "lnk").symlink_to("/srv/data")
    os.chmod(root / "tmp", 0o1777)


def make_image(image_dir: Path, *, env=("PATH=/usr/bin:/bin", "IMAGEVAR=image"), entrypoint=None,
               cmd=None, workdir="", root_hook=None) -> ImageRecord:
    """Build, squash and publish a test image; returns its record."""
    image_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(image_dir, 0o755)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        make_root(root)
        if root_hook:
            root_hook(root)
        sqfs = Path(tmp) / "image.squashfs"
        subprocess.run(["mksquashfs", str(root), str(sqfs), "-quiet", "-noappend", "-all-root",
                        "-no-progress", "-comp", "gzip"], check=True, capture_output=True)
        digest = hashlib.sha256(sqfs.read_bytes() + repr((env, entrypoint, cmd, workdir)).encode()).hexdigest()
        tmp_in_dir = image_dir / f".{digest}.squashfs.tmp"
        shutil.copyfile(sqfs, tmp_in_dir)
        record = ImageRecord(id=digest, system="test", tag="test:latest", digest=f"sha256:{digest}",
                             env=list(env), entrypoint=list(entrypoint) if entrypoint else None,
                             cmd=list(cmd) if cmd else None, workdir=workdir, size=sqfs.stat().st_size)
        publish(str(image_dir), record, tmp_in_dir)
    return record


def write_config(path: Path, image_dir: Path, run_dir: Path, **extra) -> Path:
    """A site config for tests (root-owned, mode 0644)."""
    import yaml

    data = {"system": "test", "image_dir": str(image_dir), "run_dir": str(run_dir),
            "gateway": {"urls": ["http://127.0.0.1:1"]}, "registries": {"default": "http://127.0.0.1:5000"}}
    data.update(extra)
    path.write_text(yaml.safe_dump(data))
    os.chmod(path, 0o644)
    return path

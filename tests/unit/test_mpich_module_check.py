"""The local cluster's `mpich` module check (config/local-cluster/modules/mpich/check.sh), run
on a container root made here: the image's MPICH version against the host's by the site's
rule (major | full | strict), and glibc. No root needed: the script only reads files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import mpiimages  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
HOST_LIB = Path(mpiimages.LIBDIR) / "libmpich.so.12"
pytestmark = pytest.mark.skipif(not HOST_LIB.exists() or not (shutil.which("readelf") and shutil.which("objdump")),
                                reason="Debian's MPICH (make install) and binutils are needed")


def check(tmp_path: Path, image_version: str | None, rule: str) -> subprocess.CompletedProcess:
    module, root = tmp_path / "module", tmp_path / "root"
    (module / "lib").mkdir(parents=True)
    shutil.copy(REPO / "config/local-cluster/modules/mpich/check.sh", module)
    (module / "compat").write_text(rule + "\n")
    (module / "lib/libmpich.so.12").symlink_to(HOST_LIB)  # only read (stat -L, readelf, objdump)
    (root / mpiimages.LIBDIR.lstrip("/")).mkdir(parents=True)
    shutil.copy("/lib/x86_64-linux-gnu/libc.so.6", root / mpiimages.LIBDIR.lstrip("/"))
    if image_version is not None:
        shutil.copy(HOST_LIB, root / mpiimages.LIBDIR.lstrip("/") / "libmpich.so.12")
        if image_version != mpiimages.HOST_VERSION:
            mpiimages.claim_version(root, image_version.encode())
    return subprocess.run(["/bin/sh", str(module / "check.sh")], cwd=root, capture_output=True, text=True)


@pytest.mark.parametrize("version, rule, ok", [
    ("4.0.2", "strict", True), ("4.0.2", "full", True), ("4.0.2", "major", True),
    ("4.0.1", "strict", False), ("4.0.1", "full", True), ("4.0.1", "major", True),
    ("4.0.3", "major", False), ("4.0.3", "full", False),
    ("9.0.2", "major", False), ("3.9.9", "major", False),
    (None, "strict", True),  # an image without MPICH: nothing to compare
])
def test_version_rule(tmp_path, version, rule, ok):
    proc = check(tmp_path, version, rule)
    assert (proc.returncode == 0) is ok, proc.stderr
    if not ok:
        [line] = proc.stderr.strip().splitlines()
        assert f"MPICH {version}" in line and f"rule: {rule}" in line and "--module=mpich" in line


def test_unknown_rule_is_refused(tmp_path):
    proc = check(tmp_path, "4.0.2", "loose")
    assert proc.returncode == 1 and "major, full or strict" in proc.stderr


def test_glibc_older_than_the_host_library_needs_is_refused(tmp_path):
    root = tmp_path / "root"
    proc = check(tmp_path, "4.0.2", "major")
    assert proc.returncode == 0
    libc = root / mpiimages.LIBDIR.lstrip("/") / "libc.so.6"
    libc.write_bytes(b"GLIBC_2.2.5\x00GLIBC_2.3\x00")  # an image glibc that provides only old symbols
    proc = subprocess.run(["/bin/sh", str(tmp_path / "module/check.sh")], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 1 and "glibc (GLIBC_2.3) is older" in proc.stderr, proc.stderr


def test_a_passed_check_is_remembered_per_image_rule_and_host_library(tmp_path):
    """The prolog of every node runs the check for each job with --module=mpich: a verdict for
    the same image (its id: its content's digest), rule and host library is kept, anything
    else is checked again, and a refusal is never kept."""
    cache, image_id = tmp_path / "verdicts", "ab" * 32
    env = {"PATH": "/usr/bin:/bin", "MPICH_CHECK_CACHE": str(cache), "SHIFTER_IMAGE": image_id}
    root, script = tmp_path / "root", tmp_path / "module/check.sh"

    def again(**extra):
        return subprocess.run(["/bin/sh", str(script)], cwd=root, capture_output=True, text=True, env={**env, **extra})

    assert check(tmp_path, "4.0.2", "major").returncode == 0  # no SHIFTER_IMAGE: nothing kept
    assert not cache.exists()
    assert again().returncode == 0
    assert (cache / image_id).read_text().startswith("major ")
    mpiimages.claim_version(root, b"9.0.2")  # the image changed under the same id: cannot happen,
    assert again().returncode == 0           # so the kept verdict stands (it was read, not rechecked)
    refused = again(SHIFTER_IMAGE="cd" * 32)  # another image: checked
    assert refused.returncode == 1 and "MPICH 9.0.2" in refused.stderr
    assert not (cache / ("cd" * 32)).exists()
    (tmp_path / "module/compat").write_text("strict\n")  # another rule: checked again
    assert again().returncode == 1
    (tmp_path / "module/compat").write_text("major\n")
    host = tmp_path / "module/lib/libmpich.so.12"
    new = host.with_name("new")  # the host library replaced (a new file, a later time): checked again
    new.write_bytes(host.read_bytes())
    os.utime(new, (host.stat().st_mtime + 60, host.stat().st_mtime + 60))
    new.replace(host)
    assert again().returncode == 1
    assert again(SHIFTER_IMAGE="../" + "ab" * 31).returncode == 1  # not an id: never a path

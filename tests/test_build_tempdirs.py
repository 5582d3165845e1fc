"""The build steps of `make package plugin` with the temporary directory on another filesystem
than the checkout and the install prefix (a /tmp on tmpfs, as on Debian 13 and many HPC
nodes): nothing is renamed across filesystems (that failed with EXDEV, "Invalid cross-device
link"). Each step builds in a temporary directory and renames within its target's own
directory. The tmpfs is mounted in a mount namespace of the test's own, gone with it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_build_steps_work_with_the_temporary_directory_on_another_filesystem(tmp_path):
    out, tmpfs = tmp_path / "out", tmp_path / "tmpfs"
    out.mkdir()
    tmpfs.mkdir()
    py = sys.executable
    script = f"""
mount -t tmpfs -o size=1g,mode=1777 shifter-test-tmp "{tmpfs}"
[ "$(stat -c %d "{tmpfs}")" != "$(stat -c %d "{REPO}/runtime")" ] || {{ echo "tmpfs not another filesystem" >&2; exit 3; }}
[ "$(stat -c %d "{tmpfs}")" != "$(stat -c %d "{out}")" ] || {{ echo "tmpfs not another filesystem" >&2; exit 3; }}
{py} -m runtime.syscalls_build --inplace
{py} -m spank.build "{out}"
{py} -m runtime.launcher "{out}/shifter"
"""
    env = {**os.environ, "TMPDIR": str(tmpfs)}
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-ec", script],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "cross-device" not in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["shifter", "shifter_spank.so", "shifter_spank_py.so"]
    assert os.access(out / "shifter", os.X_OK)
    assert list(tmpfs.iterdir()) == []  # the tmpfs lived in the namespace only

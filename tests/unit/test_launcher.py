"""The `shifter` launcher (runtime/launcher.py): pip's entry-point script, run with
`python -S` so a launch does not pay for `site`, with the install's packages put
on sys.path by hand."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from runtime import launcher

REPO = str(Path(__file__).resolve().parent.parent.parent)


def test_the_launcher_runs_without_site_and_finds_the_packages(tmp_path):
    target = tmp_path / "shifter"
    target.write_text(launcher.script(sys.executable, REPO, REPO))
    os.chmod(target, 0o755)
    assert target.read_text().splitlines()[0] == f"#!{sys.executable} -S"
    proc = subprocess.run([str(target), "--help"], capture_output=True, text=True, timeout=60, cwd="/",
                          env={"PATH": "/usr/bin:/bin", "PYTHONPROFILEIMPORTTIME": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: shifter")
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "shifter_wlm.batch" in imported and "runtime.cli" in imported
    assert {"site", "_distutils_hack"} & imported == set()


def test_write_replaces_the_file_in_one_step(tmp_path):
    target = tmp_path / "shifter"
    target.write_text("old")
    launcher.write(str(target))
    assert target.read_text().startswith("#!") and "-S" in target.read_text().splitlines()[0]
    assert os.stat(target).st_mode & 0o777 == 0o755
    assert os.listdir(tmp_path) == ["shifter"]

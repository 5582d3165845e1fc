"""The SPANK plugin build: `make install` produces a plugin Slurm can load, with no libpython
dependency (jobs without our options must not pay for Python)."""

from __future__ import annotations

import shutil
import subprocess

from conftest import need
from spank import build


def test_plugin_builds_and_exports_the_spank_symbols(tmp_path):
    need(build.SLURM_HEADER.exists() and shutil.which("cc") is not None, "needs libslurm-dev and a C compiler")
    so = build.build(str(tmp_path / "shifter_spank.so"))
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(so)], capture_output=True, text=True).stdout
    for name in ("slurm_spank_init", "plugin_name", "plugin_type", "plugin_version"):
        assert f" {name}" in symbols, symbols
    needed = subprocess.run(["readelf", "-d", str(so)], capture_output=True, text=True).stdout
    assert "libpython" not in needed
    assert list(tmp_path.iterdir()) == [so]  # the temporary file was renamed into place


def test_compile_error_reports_and_leaves_nothing(tmp_path, monkeypatch):
    need(shutil.which("cc") is not None, "needs a C compiler")
    broken = tmp_path / "broken.c"
    broken.write_text("#include <slurm/spank.h>\nint x = ;\n")
    monkeypatch.setattr(build, "SOURCE", broken)
    out = tmp_path / "out"
    out.mkdir()
    try:
        build.build(str(out / "p.so"))
    except build.BuildError as err:
        assert "compiling broken.c failed" in str(err)
    else:
        raise AssertionError("a broken source must not build")
    assert list(out.iterdir()) == []

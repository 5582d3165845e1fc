"""The SPANK plugin build: a tiny shim Slurm loads everywhere (no libpython: jobs without our
options pay nothing) and the cffi embedding library it loads only when a job uses us."""

from __future__ import annotations

import shutil
import subprocess

from conftest import need
from spank import build


def _dynamic(path) -> str:
    return subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True).stdout


def _symbols(path) -> str:
    return subprocess.run(["nm", "-D", "--defined-only", str(path)], capture_output=True, text=True).stdout


def test_both_parts_build_with_the_right_symbols_and_dependencies(tmp_path):
    need(build.SLURM_HEADER.exists() and shutil.which("cc") is not None, "needs libslurm-dev and a C compiler")
    shim, py = build.build(str(tmp_path))
    assert shim.name == "shifter_spank.so" and py.name == "shifter_spank_py.so"
    shim_symbols = _symbols(shim)
    for name in ("slurm_spank_init", "slurm_spank_init_post_opt", "slurm_spank_task_init_privileged",
                 "slurm_spank_job_prolog", "slurm_spank_job_epilog", "spank_options", "plugin_name"):
        assert f" {name}" in shim_symbols, name
    assert "libpython" not in _dynamic(shim)
    assert "shifter_py_entry" in _symbols(py)
    assert "libpython3.11" in _dynamic(py)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shifter_spank.so", "shifter_spank_py.so"]


def test_compile_error_reports_and_leaves_nothing(tmp_path, monkeypatch):
    need(shutil.which("cc") is not None, "needs a C compiler")
    broken = tmp_path / "broken.c"
    broken.write_text("#include <slurm/spank.h>\nint x = ;\n")
    monkeypatch.setattr(build, "SOURCE", broken)
    out = tmp_path / "out"
    out.mkdir()
    try:
        build.build_shim(str(out / "p.so"))
    except build.BuildError as err:
        assert "compiling broken.c failed" in str(err)
    else:
        raise AssertionError("a broken source must not build")
    assert list(out.iterdir()) == []

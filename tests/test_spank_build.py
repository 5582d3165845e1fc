"""The SPANK plugin build: a tiny shim Slurm loads everywhere (no libpython: jobs without our
options pay nothing) and the cffi embedding library it loads only when a job uses us. The
shim's tables come from the Python ones: the built shim registers exactly the option table
and defines exactly the routed hooks, and its "already resolved" rule (which keeps Python
out of a nested srun) decides as srun's Python did."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import need
from runtime.volumes import combine
from shifter_wlm.dispatch import ROUTES
from shifter_wlm.options import OPTIONS, OptionError, Options, check
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


# ---------------------------------------------------------------- C and Python agree

CDEF = """
    struct spank_option { char *name; char *arginfo; char *usage; int has_arg; int val; void *cb; };
    extern struct spank_option spank_options[];
    extern struct spank_option shifter_enabled_options[];
    int shifter_shim_adds_nothing(const char *job, const char *more);
    int shifter_shim_already_resolved(char **values);
"""


@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    """The built shim, opened RTLD_LAZY (Slurm's functions stay unresolved: not called)."""
    import cffi

    need(build.SLURM_HEADER.exists() and shutil.which("cc") is not None, "needs libslurm-dev and a C compiler")
    path = build.build_shim(str(tmp_path_factory.mktemp("shim") / "shifter_spank.so"))
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    return ffi, ffi.dlopen(str(path), ffi.RTLD_LAZY | ffi.RTLD_LOCAL)


def _table(ffi, rows) -> list[tuple]:
    out, i = [], 0
    while rows[i].name != ffi.NULL:
        row = rows[i]
        text = (lambda p: None if p == ffi.NULL else ffi.string(p).decode())
        out.append((text(row.name), text(row.arginfo), text(row.usage), row.has_arg))
        i += 1
    return out


def test_the_shim_registers_exactly_the_python_option_table(shim):
    ffi, lib = shim
    expect = [(o.name, o.arg, o.help, int(o.arg is not None)) for o in OPTIONS]
    static = _table(ffi, lib.spank_options)
    enabled = _table(ffi, lib.shifter_enabled_options)
    assert static == [e for e, o in zip(expect, OPTIONS) if o.enabled_by is None]
    assert enabled == [e for e, o in zip(expect, OPTIONS) if o.enabled_by is not None]
    assert sorted(static + enabled) == sorted(expect)


def test_the_shim_defines_exactly_the_routed_hooks(tmp_path):
    need(build.SLURM_HEADER.exists() and shutil.which("cc") is not None, "needs libslurm-dev and a C compiler")
    path = build.build_shim(str(tmp_path / "shifter_spank.so"))
    defined = {line.split()[-1] for line in _symbols(path).splitlines() if " slurm_spank_" in line}
    routed = {f"slurm_spank_{hook}" for _, hook in ROUTES}
    # init (registers the options) and exit (frees their values) are the shim's own
    assert defined == routed | {"slurm_spank_init", "slurm_spank_exit"}
    assert "slurm_spank_user_init" not in defined and "slurm_spank_task_exit" not in defined


def test_a_route_to_a_hook_the_shim_does_not_know_fails_the_build(tmp_path, monkeypatch):
    need(shutil.which("cc") is not None, "needs a C compiler")
    monkeypatch.setitem(ROUTES, ("remote", "task_exitt"), ("shifter_wlm.task", "step_exit"))
    with pytest.raises(build.BuildError, match="task_exitt"):
        build.build_shim(str(tmp_path / "p.so"))
    assert list(tmp_path.iterdir()) == []


MAPPING = st.sampled_from(["/a:/a", "/b:/b", "/c:/c:ro", "", "/d:/e"])
VOLUME_TEXT = st.lists(MAPPING, max_size=4).map(";".join)


@given(job=VOLUME_TEXT, more=VOLUME_TEXT)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_shims_volume_rule_is_runtime_volumes_combine(shim, job, more):
    _, lib = shim
    assert bool(lib.shifter_shim_adds_nothing(job.encode(), more.encode())) == (combine(job, more) == job)


def _resolved_before(options, env) -> bool:
    """What shifter_wlm.submit.local decided before the rule moved into the C shim (it
    returned without resolving when this held)."""
    in_job = "SLURM_JOB_ID" in env
    try:
        check(options, in_job)
    except OptionError:
        return False
    job_volume = env.get("SHIFTER_VOLUME", "")
    volume = combine(job_volume, options.volume or "")
    module = options.module if options.module is not None else env.get("SHIFTER_MODULE", "")
    request = options.image if options.image is not None else env.get("SHIFTER_IMAGEREQUEST")
    return bool(request == env.get("SHIFTER_IMAGEREQUEST") and env.get("SHIFTER_IMAGE")
                and volume == job_volume and module == env.get("SHIFTER_MODULE", ""))


ENV_NAMES = ("SHIFTER_IMAGE", "SHIFTER_IMAGEREQUEST", "SHIFTER_VOLUME", "SHIFTER_MODULE", "SLURM_JOB_ID")
MAYBE = st.none() | st.sampled_from(["", "docker:app:1", "gpu"])


@given(image=st.none() | st.sampled_from(["", "docker:app:1", "docker:other:2"]),
       volume=st.none() | VOLUME_TEXT, module=MAYBE, ccm=st.booleans(),
       env=st.fixed_dictionaries({}, optional={
           "SHIFTER_IMAGE": st.sampled_from(["", "a" * 64]),
           "SHIFTER_IMAGEREQUEST": st.sampled_from(["", "docker:app:1"]),
           "SHIFTER_VOLUME": VOLUME_TEXT, "SHIFTER_MODULE": MAYBE.filter(lambda v: v is not None),
           "SLURM_JOB_ID": st.just("7")}))
@example(image="docker:app:1", volume="/b:/b", module=None, ccm=False,
         env={"SHIFTER_IMAGE": "a" * 64, "SHIFTER_IMAGEREQUEST": "docker:app:1", "SHIFTER_VOLUME": "/a:/a;/b:/b",
              "SLURM_JOB_ID": "7"})  # the usual nested srun: resolved
@example(image="docker:other:2", volume=None, module=None, ccm=False,
         env={"SHIFTER_IMAGE": "a" * 64, "SHIFTER_IMAGEREQUEST": "docker:app:1", "SLURM_JOB_ID": "7"})
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_shims_already_resolved_rule_decides_as_srun_did(shim, monkeypatch, image, volume, module, ccm, env):
    ffi, lib = shim
    options = Options(image=image, volume=volume, module=module, ccm=ccm)
    given_ = [f"{o.name}={'1' if o.kind == 'flag' else getattr(options, o.name)}"
              if getattr(options, o.name) not in (None, False) else None for o in OPTIONS]
    if options.image is None and options.volume is None and options.module is None:
        return  # nothing asked: submit.local returns at once either way (a lone --ccm in a job)
    with monkeypatch.context() as m:
        for name in ENV_NAMES:
            m.delenv(name, raising=False)
        for name, value in env.items():
            m.setenv(name, value)
        keep = [ffi.new("char[]", v.encode()) if v is not None else ffi.NULL for v in given_]
        decided = lib.shifter_shim_already_resolved(ffi.new("char *[]", keep))
    assert bool(decided) == _resolved_before(options, env)


def test_a_new_row_in_the_option_table_is_a_new_option_of_the_built_shim(tmp_path, monkeypatch):
    """docs/architecture.md's worked example: a row in OPTIONS, and the plugin registers,
    stores and forwards the option; nothing in spank/ changes."""
    import cffi

    from shifter_wlm import options

    need(build.SLURM_HEADER.exists() and shutil.which("cc") is not None, "needs libslurm-dev and a C compiler")
    row = options.Option("wdir", "DIR", "Working directory in the container (needs --image)",
                         needs_image=True, step_env="SHIFTER_WDIR")
    monkeypatch.setattr(options, "OPTIONS", (*options.OPTIONS, row))
    path = build.build_shim(str(tmp_path / "shifter_spank.so"))
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    lib = ffi.dlopen(str(path), ffi.RTLD_LAZY | ffi.RTLD_LOCAL)
    assert _table(ffi, lib.spank_options)[-1] == ("wdir", "DIR", "Working directory in the container (needs --image)", 1)


# ---------------------------------------------------------------- the embedded Python's start

# A stand-in for slurmstepd: Slurm's API as stubs (spank/hoststubs.c, exported with
# -rdynamic, as slurmstepd exports them), the plugin's Python part loaded as the shim loads it, one hook called (in
# the slurmd context, which routes nothing), then what the started interpreter has imported.
HOST_C = r"""
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <slurm/spank.h>
int main(int argc, char **argv)
{
    char *none[] = {NULL};
    void *py = dlopen(argv[1], RTLD_NOW | RTLD_GLOBAL);
    if (!py) { fprintf(stderr, "%s\n", dlerror()); return 2; }
    int (*entry)(const char *, void *, int, char **, char **) = dlsym(py, "shifter_py_entry");
    int rc = entry("slurm_spank_job_prolog", NULL, argc - 2, argv + 2, none);
    int (*ensure)(void) = dlsym(RTLD_DEFAULT, "PyGILState_Ensure");
    int (*run)(const char *) = dlsym(RTLD_DEFAULT, "PyRun_SimpleString");
    ensure();
    run(getenv("HOST_CODE") ? getenv("HOST_CODE") : "import sys; print(' '.join(sorted(sys.modules)), flush=True)");
    return rc;
}
"""


def _embedded(tmp_path, plugin_args=(), code: str | None = None) -> str:
    """What `code` prints in the plugin's started Python (default: its modules)."""
    py = build.build_python_part(str(tmp_path / "shifter_spank_py.so"))
    host = tmp_path / "host"
    (tmp_path / "host.c").write_text(HOST_C)
    subprocess.run(["cc", "-rdynamic", "-o", str(host), str(tmp_path / "host.c"), str(build.HOST_STUBS), "-ldl"],
                   check=True)
    env = {k: v for k, v in os.environ.items() if k != "HOST_CODE"} | ({"HOST_CODE": code} if code else {})
    proc = subprocess.run([str(host), str(py), *plugin_args], capture_output=True, text=True, timeout=60, cwd="/",
                          env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _embedded_modules(tmp_path, plugin_args=()) -> set[str]:
    return set(_embedded(tmp_path, plugin_args).split())


def test_the_plugins_python_starts_without_site_and_finds_the_hooks(tmp_path):
    """`site` (the venv's .pth files, sitecustomize) cost each `srun shifter` step
    ~2 ms; the default Python starts without it and still imports the hooks."""
    need(build.SLURM_HEADER.exists() and shutil.which("cc") is not None, "needs libslurm-dev and a C compiler")
    modules = _embedded_modules(tmp_path)
    assert "shifter_wlm.dispatch" in modules and "_cffi_backend" in modules
    assert {"site", "_distutils_hack", "sitecustomize", "importlib"} & modules == set()  # importlib: dispatch


def test_the_plugins_python_starts_with_a_fixed_search_path_in_utf8_mode(tmp_path):
    """Issue 19: the default Python's search path is baked in at build (no search for its
    prefix or a missing zip at each step), it runs in UTF-8 mode (file names as `shifter`
    decodes them; no encodings.ascii) and never writes bytecode (root's slurmstepd)."""
    need(build.SLURM_HEADER.exists() and shutil.which("cc") is not None, "needs libslurm-dev and a C compiler")
    import json
    import sys
    import sysconfig

    code = ("import sys, json; print(json.dumps([sys.path, sys.flags.utf8_mode, sys.getfilesystemencoding(), "
            "sys.dont_write_bytecode, 'encodings.ascii' in sys.modules]), flush=True)")
    path, utf8, fs_encoding, no_bytecode, ascii_codec = json.loads(_embedded(tmp_path, code=code))
    stdlib = subprocess.run([sys.executable, "-I", "-S", "-c", "import sys; print('\\n'.join(sys.path))"],
                            capture_output=True, text=True, check=True, cwd="/").stdout.split("\n")
    packages = sysconfig.get_paths()
    assert path == list(dict.fromkeys([*[d for d in stdlib if os.path.isdir(d)], packages["purelib"], packages["platlib"]]))
    assert all(os.path.isdir(entry) for entry in path)
    assert (utf8, fs_encoding, no_bytecode, ascii_codec) == (1, "utf-8", True, False)


def test_another_python_in_plugstack_starts_with_site(tmp_path):
    """python= naming another interpreter: its package directories are not known at build,
    so it starts with `site`, as before."""
    need(build.SLURM_HEADER.exists() and shutil.which("cc") is not None, "needs libslurm-dev and a C compiler")
    import sys
    from pathlib import Path

    other = Path(sys.prefix) / "bin" / "python"  # the same venv under another name than the default
    assert str(other) != str(Path(sys.prefix) / "bin" / "python3") and other.exists()
    modules = _embedded_modules(tmp_path, [f"python={other}"])
    assert "site" in modules and "shifter_wlm.dispatch" in modules


def test_the_installed_step_path_has_current_bytecode():
    """The plugin's Python writes no bytecode (root's slurmstepd), so a step would compile any
    step-path module whose .pyc is missing or stale, at every step: `make install` (pip)
    writes them, current."""
    import importlib.util
    import struct
    import sysconfig
    from pathlib import Path

    # the modules a step joining its container imports (tests/unit/test_step_imports.py)
    step_path = ["shifter_wlm", "shifter_site", "runtime", "shifter_wlm.dispatch", "shifter_wlm.options",
                 "shifter_wlm.spank_api", "shifter_wlm.task", "shifter_wlm.procfds", "shifter_wlm.jobs",
                 "shifter_site.errors", "shifter_site.logs", "shifter_site.configcache", "shifter_site.jsonread",
                 "runtime.spec", "runtime.frozen", "runtime.cli", "runtime.enter", "runtime.syscalls"]
    site = Path(sysconfig.get_paths()["purelib"])
    need((site / "shifter_wlm" / "task.py").exists(), f"needs the installed package in {site} (make install)")
    for module in step_path:
        source = site.joinpath(*module.split("."))
        source = source / "__init__.py" if source.is_dir() else source.with_suffix(".py")
        pyc = Path(importlib.util.cache_from_source(str(source)))
        assert pyc.exists(), f"{pyc} is missing"
        header = pyc.read_bytes()[:16]
        (flags,) = struct.unpack("<I", header[4:8])
        if flags & 1:  # hash-based (pip under SOURCE_DATE_EPOCH)
            assert header[8:16] == importlib.util.source_hash(source.read_bytes()), f"{pyc} is stale"
        else:
            stat = source.stat()
            assert struct.unpack("<II", header[8:16]) == (int(stat.st_mtime) & 0xFFFFFFFF,
                                                          stat.st_size & 0xFFFFFFFF), f"{pyc} is stale"

"""Build the SPANK plugin (run by `make install`).

usage: python -m spank.build OUTDIR

Writes two files into OUTDIR (plugstack.conf names the first):
  shifter_spank.so     the tiny shim Slurm loads everywhere; no libpython dependency
  shifter_spank_py.so  the cffi embedding-mode library it loads only when a job uses us;
                       its Python is the interpreter running this build (the venv)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "shim.c"
PY_SOURCE = HERE / "pyentry.c"
INIT_CODE = HERE / "init_code.py"
HOST_STUBS = HERE / "hoststubs.c"  # Slurm's API as stubs, for hosts outside Slurm (tests, bench)
SLURM_HEADER = Path("/usr/include/slurm/spank.h")

# What the Python hooks may call: the typed helpers in pyentry.c and Slurm's own API,
# resolved from the process that loaded us (srun, sbatch, slurmstepd).
CDEF = """
    typedef struct spank_handle *spank_t;
    typedef int... spank_err_t;
    typedef int... spank_context_t;
    typedef unsigned int gid_t;
    #define S_CTX_LOCAL ...
    #define S_CTX_REMOTE ...
    #define S_CTX_ALLOCATOR ...
    #define S_CTX_SLURMD ...
    #define S_CTX_JOB_SCRIPT ...
    #define S_JOB_ID ...
    #define S_JOB_STEPID ...
    #define S_JOB_NNODES ...
    #define S_JOB_NODEID ...
    #define S_JOB_LOCAL_TASK_COUNT ...
    #define S_JOB_TOTAL_TASK_COUNT ...
    #define S_TASK_ID ...
    #define S_TASK_GLOBAL_ID ...
    #define S_TASK_PID ...
    #define ESPANK_SUCCESS ...

    extern int shifter_py_ready;
    extern double shifter_py_t0;
    int shifter_get_argv(spank_t sp, int *argc, char ***argv);
    int shifter_get_env(spank_t sp, char ***env);
    int shifter_get_u32(spank_t sp, int item, uint32_t *v);
    int shifter_get_int(spank_t sp, int item, int *v);
    int shifter_get_pid(spank_t sp, int item, int *v);
    int shifter_get_uid(spank_t sp, uint32_t *v);
    int shifter_get_gid(spank_t sp, uint32_t *v);
    int shifter_get_gids(spank_t sp, gid_t **gids, int *n);
    void shifter_log_error(const char *msg);
    void shifter_log_info(const char *msg);
    void shifter_log_debug(const char *msg);

    spank_context_t spank_context(void);
    int spank_remote(spank_t sp);
    spank_err_t spank_getenv(spank_t sp, const char *var, char *buf, int len);
    spank_err_t spank_setenv(spank_t sp, const char *var, const char *val, int overwrite);
    spank_err_t spank_unsetenv(spank_t sp, const char *var);
    spank_err_t spank_job_control_setenv(spank_t sp, const char *name, const char *value, int overwrite);
    const char *spank_strerror(spank_err_t err);
"""

EMBEDDING_API = """
    int shifter_py_hook(const char *hook, void *sp, int ac, char **av, char **options);
"""


class BuildError(Exception):
    """The plugin could not be built; the message says what is missing."""


def _compiler() -> str:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise BuildError("no C compiler found: install build-essential")
    return compiler


def _place(tmp: Path, out: Path) -> Path:
    """Rename into place: Slurm may be loading the old file right now and must never see
    a half-written one."""
    tmp.chmod(0o755)
    tmp.replace(out)
    return out


def build_shim(output: str) -> Path:
    """Compile the tiny shim into `output`."""
    if not SLURM_HEADER.exists():
        raise BuildError(f"{SLURM_HEADER} is missing: install libslurm-dev")
    from spank import tables

    out = Path(output).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        header = tables.header()
    except tables.TableError as err:
        raise BuildError(f"the option or route tables cannot go into the C shim: {err}") from None
    with tempfile.TemporaryDirectory(prefix="shifter-spank-tables-") as gen:
        (Path(gen) / tables.HEADER_NAME).write_text(header)
        cmd = [_compiler(), "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-I", gen, "-o", str(tmp),
               str(SOURCE), "-ldl"]
        result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise BuildError(f"compiling {SOURCE.name} failed:\n{result.stderr}")
    return _place(tmp, out)


def _c_string(text: str) -> str:
    """A C string literal (a path may hold a quote or a backslash)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _stdlib_path(python: str) -> tuple[list[str], str]:
    """The standard library directories `python -I -S` searches (those that exist: a missing
    python3X.zip would be probed by every step) and its home (sys.base_prefix), baked into the
    plugin so that its Python starts without searching for them (bench/bench_step_floor.py)."""
    code = "import json, sys; print(json.dumps([sys.path, sys.base_prefix]))"
    result = subprocess.run([python, "-I", "-S", "-c", code], capture_output=True, text=True, cwd="/")
    if result.returncode != 0:
        raise BuildError(f"{python} -I -S did not run: {result.stderr.strip()}")
    import json

    path, home = json.loads(result.stdout)
    return [entry for entry in path if os.path.isdir(entry)], home


def build_python_part(output: str, python: str | None = None) -> Path:
    """Build the cffi embedding library; `python` is the interpreter it will start."""
    import cffi  # build-time only

    if not SLURM_HEADER.exists():
        raise BuildError(f"{SLURM_HEADER} is missing: install libslurm-dev")
    macros = []
    if python is None:  # this venv's Python: it starts without `site`, with a fixed search path
        python = str(Path(sys.prefix) / "bin" / "python3")
        stdlib, home = _stdlib_path(python)
        import sysconfig

        paths = sysconfig.get_paths()
        dirs = dict.fromkeys([*stdlib, paths["purelib"], paths["platlib"]])
        macros += [("SHIFTER_SEARCH_PATH", ", ".join(map(_c_string, dirs))), ("SHIFTER_PYTHON_HOME", _c_string(home))]
    out = Path(output).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    ffi = cffi.FFI()
    ffi.embedding_api(EMBEDDING_API)
    ffi.cdef(CDEF)
    ffi.set_source("_shifter_spank", PY_SOURCE.read_text(),
                   define_macros=[("SHIFTER_DEFAULT_PYTHON", _c_string(python)), *macros],
                   extra_compile_args=["-O2", "-Wall"], libraries=["dl"])
    ffi.embedding_init_code(INIT_CODE.read_text())
    with tempfile.TemporaryDirectory(prefix="shifter-spank-build-") as tmpdir:
        try:
            built = ffi.compile(tmpdir=tmpdir, target="shifter_spank_py.so", verbose=False)
        except Exception as err:  # cffi raises distutils/setuptools errors of several types
            raise BuildError(f"building the Python part failed: {err}") from None
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        shutil.copyfile(built, tmp)
    return _place(tmp, out)


def build(outdir: str) -> list[Path]:
    return [build_shim(os.path.join(outdir, "shifter_spank.so")),
            build_python_part(os.path.join(outdir, "shifter_spank_py.so"))]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m spank.build OUTDIR", file=sys.stderr)
        return 2
    try:
        for path in build(argv[0]):
            print(f"built {path}")
    except BuildError as err:
        print(f"spank.build: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

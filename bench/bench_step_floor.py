#!/usr/bin/env python3
"""The floor under a `srun shifter` step's overhead: what an embedded Python costs
before any of our work, measured on this machine, outside Slurm, side by side.

Each variant is a tiny C host process (built here with cc; Slurm's SPANK API as stubs, as
tests/test_spank_build.py does), run n times, interleaved, medians of its wall time:

  nothing       the host process alone
  libpython     + dlopen libpython (RTLD_NOW|RTLD_GLOBAL, as the shim loads the Python part)
  interpreter   + a bare Py_InitializeFromConfig as the plugin configures it (isolated, no
                site, UTF-8 mode, the same search path), no import of ours
  cffi          + import _cffi_backend (cffi's embedding needs it)
  plugin        the plugin's Python part itself (DIR/shifter_spank_py.so), one hook in a
                context that routes nothing: interpreter, cffi, init code, hook router
  step imports  + importing what a step joining its container imports (STEP_MODULES)

The difference between consecutive rows is what each layer costs. Needs the installed
package (`make package plugin`); no cluster.
usage: bench_step_floor.py [-n 40] [--plugin /opt/shifter/lib]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import Results, json_arg  # noqa: E402

# what shifter_wlm/task.py imports for a step that joins the job's container (besides the router)
STEP_MODULES = ["shifter_wlm.task", "runtime.enter", "shifter_site.configcache", "shifter_wlm.jobs", "runtime.cli",
                "runtime.spec", "runtime.frozen", "runtime.syscalls"]

HOST_STUBS = Path(__file__).resolve().parent.parent / "spank" / "hoststubs.c"  # Slurm's API, stubbed
HOST_C = r"""
#include <Python.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <slurm/spank.h>

/* argv: variant, libpython, plugin .so, search path (':'), home, modules to import (',') */
int main(int argc, char **argv)
{
    const char *variant = argv[1];
    char *none[] = {NULL};
    if (argc < 7) return 2;
    if (!strcmp(variant, "nothing")) return 0;
    if (strcmp(variant, "plugin") && strcmp(variant, "step_imports")) {
        PyStatus (*preinit)(const PyPreConfig *);
        void (*preconfig_init)(PyPreConfig *);
        void (*config_init)(PyConfig *);
        PyStatus (*init)(const PyConfig *);
        PyStatus (*set)(PyConfig *, wchar_t **, const char *);
        PyStatus (*append)(PyWideStringList *, const wchar_t *);
        wchar_t *(*decode)(const char *, size_t *);
        int (*run)(const char *);
        PyPreConfig pre;
        PyConfig c;
        void *lib = dlopen(argv[2], RTLD_NOW | RTLD_GLOBAL);
        if (!lib) { fprintf(stderr, "%s\n", dlerror()); return 2; }
        if (!strcmp(variant, "libpython")) return 0;
        preconfig_init = dlsym(lib, "PyPreConfig_InitIsolatedConfig");
        preinit = dlsym(lib, "Py_PreInitialize");
        config_init = dlsym(lib, "PyConfig_InitIsolatedConfig");
        init = dlsym(lib, "Py_InitializeFromConfig");
        set = dlsym(lib, "PyConfig_SetBytesString");
        append = dlsym(lib, "PyWideStringList_Append");
        decode = dlsym(lib, "Py_DecodeLocale");
        run = dlsym(lib, "PyRun_SimpleString");
        preconfig_init(&pre);
        pre.utf8_mode = 1;
        preinit(&pre);
        config_init(&c);
        c.install_signal_handlers = 0;
        c.site_import = 0;
        c.write_bytecode = 0;
        c.module_search_paths_set = 1;
        for (char *dir = strtok(argv[4], ":"); dir; dir = strtok(NULL, ":"))
            append(&c.module_search_paths, decode(dir, NULL));
        set(&c, &c.home, argv[5]);
        if (init(&c)._type != 0) return 3;  /* PyStatus_Exception, without linking libpython */
        if (!strcmp(variant, "cffi") && run("import _cffi_backend") != 0) return 4;
        return 0;
    }
    {
        void *py = dlopen(argv[3], RTLD_NOW | RTLD_GLOBAL);
        int (*entry)(const char *, void *, int, char **, char **);
        int (*ensure)(void);
        int (*run)(const char *);
        char code[4096];
        if (!py) { fprintf(stderr, "%s\n", dlerror()); return 2; }
        entry = dlsym(py, "shifter_py_entry");
        if (entry("slurm_spank_job_prolog", NULL, 0, none, none) != 0) return 5;
        if (strcmp(variant, "step_imports")) return 0;
        ensure = dlsym(RTLD_DEFAULT, "PyGILState_Ensure");
        run = dlsym(RTLD_DEFAULT, "PyRun_SimpleString");
        ensure();
        snprintf(code, sizeof code, "import %s", argv[6]);
        return run(code) != 0 ? 6 : 0;
    }
}
"""

VARIANTS = ["nothing", "libpython", "interpreter", "cffi", "plugin", "step_imports"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=40)
    parser.add_argument("--plugin", default="/opt/shifter/lib", help="the directory of shifter_spank_py.so")
    parser.add_argument("--versus-plugin", metavar="DIR",
                        help="another build of the plugin (e.g. an older commit's): its `plugin` row, interleaved")
    json_arg(parser)
    args = parser.parse_args()
    plugin = Path(args.plugin) / "shifter_spank_py.so"
    libpython = str(Path(sysconfig.get_config_var("LIBDIR")) / sysconfig.get_config_var("INSTSONAME"))
    probe = "import sys, json; print(json.dumps([sys.path, sys.base_prefix]))"
    import json

    path, home = json.loads(subprocess.run([sys.executable, "-I", "-S", "-c", probe], capture_output=True,
                                           text=True, check=True, cwd="/").stdout)
    paths = sysconfig.get_paths()
    search = ":".join(dict.fromkeys([*[p for p in path if Path(p).is_dir()], paths["purelib"], paths["platlib"]]))
    with tempfile.TemporaryDirectory(prefix="bench-step-floor-") as tmp:
        host = Path(tmp) / "host"
        (Path(tmp) / "host.c").write_text(HOST_C)
        subprocess.run(["cc", "-O2", "-rdynamic", f"-I{sysconfig.get_path('include')}", "-o", str(host),
                        str(Path(tmp) / "host.c"), str(HOST_STUBS), "-ldl"], check=True)
        runs = [(v, v, plugin) for v in VARIANTS]
        if args.versus_plugin:
            runs.append(("plugin (other)", "plugin", Path(args.versus_plugin) / "shifter_spank_py.so"))
        times: dict[str, list[float]] = {name: [] for name, _, _ in runs}
        for _ in range(args.n):
            for name, variant, so in runs:
                argv = [str(host), variant, libpython, str(so), search, home, ", ".join(STEP_MODULES)]
                start = time.perf_counter()
                proc = subprocess.run(argv, capture_output=True, text=True, cwd="/")
                times[name].append((time.perf_counter() - start) * 1000)
                if proc.returncode != 0:
                    raise SystemExit(f"{variant}: exit {proc.returncode}: {proc.stderr.strip()}")
    med = {v: statistics.median(t) for v, t in times.items()}
    results = Results("bench_step_floor", "python bench/bench_step_floor.py -n N (installed package; no cluster)",
                      "tiny C hosts outside Slurm, interleaved; what an embedded Python costs before our work")
    print(f"the floor under a srun shifter step (medians of {args.n} interleaved runs, ms):")
    before = None
    for variant in VARIANTS:
        delta = "" if before is None else f"  (+{med[variant] - med[before]:5.2f} over {before})"
        print(f"  {variant:13} {med[variant]:6.2f}{delta}")
        before = variant
    if args.versus_plugin:
        other = med["plugin (other)"]
        print(f"  plugin in {args.versus_plugin}: {other:6.2f}  (this one {med['plugin'] - other:+.2f}, "
              f"{med['plugin'] / other:.3f}x)")
        results.ratio("plugin's Python part, this build vs another", med["plugin"], other, args.versus_plugin)
    results.ratio("embedded interpreter (plugin's config) vs nothing", med["interpreter"], med["nothing"],
                  "host process, nothing loaded")
    results.ratio("plugin's Python part, one unrouted hook vs bare interpreter", med["plugin"], med["interpreter"],
                  "bare embedded interpreter")
    results.series("step_floor", variant=VARIANTS, ms=[med[v] for v in VARIANTS],
                   over_previous=[0.0, *[med[b] - med[a] for a, b in zip(VARIANTS, VARIANTS[1:])]])
    results.write(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

/*
 * C part of shifter_spank_py.so, the cffi embedding-mode library the SPANK shim loads on
 * first need. It starts Python itself (docs/architecture.md, decision 2): re-open libpython
 * RTLD_GLOBAL so C extension modules link, an isolated PyConfig (no PYTHON* from the
 * environment, no signal handlers: srun's and slurmstepd's stay theirs) in UTF-8 mode,
 * executable = the venv's python, and for that default python the search path written in at
 * build (below). Then the cffi-generated shifter_py_hook runs
 * the Python hooks. If Python or the init code did not come up, every hook returns -1.
 */
#include <slurm/spank.h>
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#ifndef SHIFTER_DEFAULT_PYTHON
#define SHIFTER_DEFAULT_PYTHON "/opt/shifter/bin/python3"
#endif

/* The default Python's module search path, written by spank/build.py (from that Python's own
   `-I -S` sys.path, existing directories only, then its package directories from sysconfig,
   as runtime/launcher.py does for `shifter`), and its home: with them, the default Python
   starts without `site` (its .pth files and sitecustomize cost each `srun shifter` step
   ~2 ms, bench/bench_srun.py) and without getpath's search for its prefix and landmarks (~0.2 ms): the
   standard library first, then the package directories, where `site` puts them. Another
   python= in plugstack.conf starts with `site` and its own search, as before. */
#ifndef SHIFTER_SEARCH_PATH
#define SHIFTER_SEARCH_PATH NULL
#endif
#ifndef SHIFTER_PYTHON_HOME
#define SHIFTER_PYTHON_HOME NULL
#endif
static const char *const search_path[] = {SHIFTER_SEARCH_PATH, NULL};
static const char *const python_home = SHIFTER_PYTHON_HOME;

int shifter_py_ready = 0;      /* set to 1 by the init code once shifter_wlm imported */
double shifter_py_t0 = 0;      /* CLOCK_MONOTONIC (Python's perf_counter) before Python started:
                                  the step path's first phase (shifter -v) starts here */
static int python_failed = 0;

int shifter_py_hook(const char *hook, void *sp, int ac, char **av, char **options);

/* spank_get_item is variadic: small typed wrappers Python can call */
int shifter_get_argv(spank_t sp, int *argc, char ***argv) { return spank_get_item(sp, S_JOB_ARGV, argc, argv); }
int shifter_get_env(spank_t sp, char ***env) { return spank_get_item(sp, S_JOB_ENV, env); }
int shifter_get_u32(spank_t sp, int item, uint32_t *v) { return spank_get_item(sp, (spank_item_t)item, v); }
int shifter_get_int(spank_t sp, int item, int *v) { return spank_get_item(sp, (spank_item_t)item, v); }
int shifter_get_pid(spank_t sp, int item, int *v) { pid_t p = 0; int rc = spank_get_item(sp, (spank_item_t)item, &p); *v = (int)p; return rc; }
int shifter_get_uid(spank_t sp, uint32_t *v) { uid_t u = (uid_t)-1; int rc = spank_get_item(sp, S_JOB_UID, &u); *v = u; return rc; }
int shifter_get_gid(spank_t sp, uint32_t *v) { gid_t g = (gid_t)-1; int rc = spank_get_item(sp, S_JOB_GID, &g); *v = g; return rc; }
int shifter_get_gids(spank_t sp, gid_t **gids, int *n) { return spank_get_item(sp, S_JOB_SUPPLEMENTARY_GIDS, gids, n); }
int shifter_get_task_id(spank_t sp, int item, uint32_t *v) { return spank_get_item(sp, (spank_item_t)item, v); }
void shifter_log_error(const char *msg) { slurm_error("%s", msg); }
void shifter_log_info(const char *msg) { slurm_info("%s", msg); }
void shifter_log_debug(const char *msg) { slurm_debug("%s", msg); }

static const char *arg_value(int ac, char **av, const char *name)
{
    size_t n = strlen(name);
    for (int i = 0; i < ac; i++)
        if (strncmp(av[i], name, n) == 0 && av[i][n] == '=')
            return av[i] + n + 1;
    return NULL;
}

/* Import `name` now, so that a Python lacking it (cffi's backend, our packages) is reported
   as one line instead of cffi's own traceback on stderr. Called with the GIL held. */
static int importable(const char *python, const char *name)
{
    PyObject *type = NULL, *value = NULL, *tb = NULL, *text = NULL;
    PyObject *module = PyImport_ImportModule(name);
    const char *what = NULL;

    if (module) {
        Py_DECREF(module);
        return 1;
    }
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value)
        text = PyObject_Str(value);
    if (text)
        what = PyUnicode_AsUTF8(text);
    slurm_error("shifter: cannot load the Python hooks (%s: %s) with %s; "
                "check the installation (make install) or python= in plugstack.conf",
                type ? ((PyTypeObject *)type)->tp_name : "error", what ? what : "unknown error", python);
    Py_XDECREF(text);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    PyErr_Clear();
    return 0;
}

static int start_python(int ac, char **av)
{
    PyPreConfig preconfig;
    PyConfig config;
    PyStatus st;
    Dl_info info;
    const char *python = arg_value(ac, av, "python");
    int no_site;

    if (python_failed)
        return -1;
    if (Py_IsInitialized())
        return 0;
    python_failed = 1;  /* until proven otherwise: never try twice */
    if (!python || !*python)
        python = SHIFTER_DEFAULT_PYTHON;
    if (access(python, X_OK) != 0) {
        /* Python would start anyway, from the wrong prefix, and miss our packages */
        slurm_error("shifter: cannot start Python (%s): %m; fix python= in plugstack.conf "
                    "or reinstall (make install)", python);
        return -1;
    }
    /* Slurm dlopens plugins RTLD_LOCAL: make libpython's symbols global so that C
       extension modules (_cffi_backend, _json, ...) can link against it. */
    if (dladdr((void *)&Py_IsInitialized, &info) && info.dli_fname)
        if (!dlopen(info.dli_fname, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD))
            slurm_error("shifter: re-opening %s RTLD_GLOBAL failed: %s", info.dli_fname, dlerror());
    /* UTF-8 mode, as `shifter` itself runs (an isolated start would otherwise keep the C
       locale's ASCII for file names and skip nothing): paths and values decoded as UTF-8
       with surrogateescape go back to the kernel unchanged; it also spares encodings.ascii */
    PyPreConfig_InitIsolatedConfig(&preconfig);
    preconfig.utf8_mode = 1;
    st = Py_PreInitialize(&preconfig);
    if (PyStatus_Exception(st))
        goto fail_early;
    PyConfig_InitIsolatedConfig(&config);
    config.install_signal_handlers = 0;
    config.safe_path = 1;
    config.write_bytecode = 0;  /* root's slurmstepd never writes into the installation */
    no_site = search_path[0] != NULL && strcmp(python, SHIFTER_DEFAULT_PYTHON) == 0;
    if (no_site) {
        config.site_import = 0;
        config.module_search_paths_set = 1;
        for (int i = 0; search_path[i]; i++) {
            wchar_t *dir = Py_DecodeLocale(search_path[i], NULL);

            st = dir ? PyWideStringList_Append(&config.module_search_paths, dir)
                     : PyStatus_Error("cannot decode a directory of the module search path");
            PyMem_RawFree(dir);
            if (PyStatus_Exception(st))
                goto fail;
        }
        if (python_home) {
            st = PyConfig_SetBytesString(&config, &config.home, python_home);
            if (PyStatus_Exception(st))
                goto fail;
        }
    }
    st = PyConfig_SetBytesString(&config, &config.program_name, python);
    if (PyStatus_Exception(st))
        goto fail;
    st = PyConfig_SetBytesString(&config, &config.executable, python);
    if (PyStatus_Exception(st))
        goto fail;
    st = Py_InitializeFromConfig(&config);
    if (PyStatus_Exception(st))
        goto fail;
    PyConfig_Clear(&config);
    if (!importable(python, "_cffi_backend") || !importable(python, "shifter_wlm")) {
        PyEval_SaveThread();
        return -1;  /* python_failed stays set: no hook enters Python in this process */
    }
    PyEval_SaveThread();  /* release the GIL: cffi takes it with PyGILState_Ensure */
    python_failed = 0;
    return 0;
fail:
    PyConfig_Clear(&config);
fail_early:
    slurm_error("shifter: cannot start Python (%s) for the container hooks: %s", python,
                st.err_msg ? st.err_msg : "unknown error");
    return -1;
}

/* `options`: the option values, "name=value", NULL-terminated (shifter_wlm/options.py) */
int shifter_py_entry(const char *hook, void *sp, int ac, char **av, char **options)
{
    int rc;

    if (!Py_IsInitialized() && shifter_py_t0 == 0) {
        struct timespec now;

        if (clock_gettime(CLOCK_MONOTONIC, &now) == 0)
            shifter_py_t0 = now.tv_sec + now.tv_nsec / 1e9;
    }
    if (start_python(ac, av) < 0)
        return -1;
    rc = shifter_py_hook(hook, sp, ac, av, options);
    if (!shifter_py_ready) {
        /* cffi reports a failed init code and returns 0: refuse instead (fail closed) */
        slurm_error("shifter: the Python hooks did not load; refusing %s", hook);
        return -1;
    }
    return rc;
}

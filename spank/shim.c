/*
 * The SPANK plugin Slurm loads (plugstack.conf). Deliberately tiny, with no libpython
 * dependency: a job that uses none of our options never starts Python and pays nothing.
 *
 * It declares the options statically, stores their values, and only where a value is set
 * (or in the prolog/epilog of a job that has one) loads the Python part,
 * shifter_spank_py.so (beside this file), RTLD_NOW|RTLD_GLOBAL, and forwards the hook to
 * it. Everything it cannot do (load the library, start Python) fails the hook: a job
 * that asked for a container never runs without one.
 *
 * Plugin arguments (plugstack.conf): shifter_config=PATH python=VENV/bin/python3
 * enable_ccm=BOOL enable_sshd=BOOL (1/0/yes/no/true/false); checked here, passed on.
 */
#define _GNU_SOURCE
#include <slurm/spank.h>
#include <dlfcn.h>
#include <libgen.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

SPANK_PLUGIN(shifter, 1);

typedef int (*py_entry_f)(const char *hook, spank_t sp, int ac, char **av,
                          const char *image, const char *volume, const char *module, int ccm);

static char *opt_image;
static char *opt_volume;
static char *opt_module;
static int opt_ccm;
static py_entry_f py_entry;
static int remote_wanted = -1;  /* remote context: does this step use us? (-1: not known yet) */

static int store(char **slot, const char *arg)
{
    /* --image, --module: each use replaces the previous value (as in the original Shifter) */
    free(*slot);
    *slot = strdup(arg ? arg : "");
    return *slot ? 0 : -1;
}

/* --volume accumulates, as shifter -V does: several #SBATCH --volume lines (and srun's own
 * --volume after the one Slurm hands on from sbatch) are joined with ';'. Python merges a
 * mapping given twice (runtime.volumes.combine). Slurm itself keeps only the last value for
 * the remote side; the step hook gets the others from the job record and the environment. */
static int append(char **slot, const char *arg)
{
    char *joined;

    if (!*slot)
        return store(slot, arg);
    if (asprintf(&joined, "%s;%s", *slot, arg ? arg : "") < 0)
        return -1;
    free(*slot);
    *slot = joined;
    return 0;
}

static int cb_image(int val, const char *arg, int remote) { (void)val; (void)remote; return store(&opt_image, arg); }
static int cb_volume(int val, const char *arg, int remote) { (void)val; (void)remote; return append(&opt_volume, arg); }
static int cb_module(int val, const char *arg, int remote) { (void)val; (void)remote; return store(&opt_module, arg); }
static int cb_ccm(int val, const char *arg, int remote) { (void)val; (void)arg; (void)remote; opt_ccm = 1; return 0; }

struct spank_option spank_options[] = {
    {"image", "type:tag", "Container image to run this job's `shifter` steps in, e.g. docker:ubuntu:22.04",
     1, 0, cb_image},
    {"volume", "from:to[:flags][;...]", "Host paths to mount into the container (needs --image)",
     1, 0, cb_volume},
    {"module", "name[,name...]|none", "Site modules for the container (GPU, MPI...)", 1, 0, cb_module},
    SPANK_OPTIONS_TABLE_END
};

static struct spank_option ccm_option = {
    "ccm", NULL, "Run the batch script inside the container, with an sshd on every node",
    0, 0, cb_ccm,
};

/* The plugin's arguments: each one works, or fails every job with one line naming it. The
   Python part (shifter_wlm/dispatch.py PluginArgs) reads the same, already checked, list. */
enum arg_kind { ARG_PATH, ARG_BOOL };
static const struct { const char *name; enum arg_kind kind; } known_args[] = {
    { "shifter_config", ARG_PATH }, { "python", ARG_PATH },
    { "enable_ccm", ARG_BOOL }, { "enable_sshd", ARG_BOOL },
    { NULL, ARG_PATH },
};
/* the original Shifter's plugin had these; they do nothing here, so they are refused */
static const char *unsupported_args[] = { "extern_setup", "extern_cgroup", NULL };

/* 1 true, 0 false, -1 not a boolean: 1/0/yes/no/true/false and nothing else */
static int parse_bool(const char *v)
{
    if (!strcmp(v, "1") || !strcmp(v, "yes") || !strcmp(v, "true"))
        return 1;
    if (!strcmp(v, "0") || !strcmp(v, "no") || !strcmp(v, "false"))
        return 0;
    return -1;
}

static int check_args(int ac, char **av)
{
    for (int i = 0; i < ac; i++) {
        const char *eq = strchr(av[i], '=');
        size_t n = eq ? (size_t)(eq - av[i]) : strlen(av[i]);
        int k;

        for (k = 0; unsupported_args[k]; k++)
            if (strlen(unsupported_args[k]) == n && !strncmp(av[i], unsupported_args[k], n)) {
                slurm_error("shifter: plugin argument '%s' in plugstack.conf is not supported by "
                            "this version; remove it", av[i]);
                return -1;
            }
        for (k = 0; known_args[k].name; k++)
            if (strlen(known_args[k].name) == n && !strncmp(av[i], known_args[k].name, n))
                break;
        if (!known_args[k].name || !eq) {
            slurm_error("shifter: unknown plugin argument '%s' in plugstack.conf; known: "
                        "shifter_config=PATH python=PATH enable_ccm=BOOL enable_sshd=BOOL", av[i]);
            return -1;
        }
        if (known_args[k].kind == ARG_BOOL && parse_bool(eq + 1) < 0) {
            slurm_error("shifter: plugin argument '%s' in plugstack.conf: the value must be one of "
                        "1/0/yes/no/true/false", av[i]);
            return -1;
        }
        if (known_args[k].kind == ARG_PATH && eq[1] != '/') {
            slurm_error("shifter: plugin argument '%s' in plugstack.conf: the value must be an "
                        "absolute path", av[i]);
            return -1;
        }
        for (int j = 0; j < i; j++)  /* arg_true reads the first: a second would be ignored */
            if (!strncmp(av[j], av[i], n) && av[j][n] == '=') {
                slurm_error("shifter: plugin argument '%.*s' is given twice in plugstack.conf; keep one",
                            (int)n, av[i]);
                return -1;
            }
    }
    return 0;
}

static int arg_true(int ac, char **av, const char *name)
{
    size_t n = strlen(name);
    for (int i = 0; i < ac; i++)
        if (strncmp(av[i], name, n) == 0 && av[i][n] == '=')
            return parse_bool(av[i] + n + 1) == 1;
    return 0;
}

/* Load the Python part on first need; -1 (with the reason in Slurm's log) if impossible. */
static int load_python_part(void)
{
    Dl_info self;
    char path[PATH_MAX], dir[PATH_MAX];
    void *handle;

    if (py_entry)
        return 0;
    if (!dladdr((void *)&load_python_part, &self) || !self.dli_fname) {
        slurm_error("shifter: cannot find where the plugin was loaded from");
        return -1;
    }
    snprintf(dir, sizeof dir, "%s", self.dli_fname);
    snprintf(path, sizeof path, "%s/shifter_spank_py.so", dirname(dir));
    handle = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
    if (!handle) {
        slurm_error("shifter: cannot load %s: %s", path, dlerror());
        return -1;
    }
    py_entry = (py_entry_f)dlsym(handle, "shifter_py_entry");
    if (!py_entry) {
        slurm_error("shifter: %s has no shifter_py_entry: %s", path, dlerror());
        return -1;
    }
    return 0;
}

static int forward(const char *hook, spank_t sp, int ac, char **av)
{
    if (load_python_part() < 0)
        return -1;
    return py_entry(hook, sp, ac, av, opt_image, opt_volume, opt_module, opt_ccm);
}

static int same(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

/* A step's command is `shifter ...` (argv[0] or its basename). */
static int step_runs_shifter(spank_t sp)
{
    int argc = 0;
    char **argv = NULL;
    const char *base;

    if (spank_get_item(sp, S_JOB_ARGV, &argc, &argv) != ESPANK_SUCCESS || argc < 1 || !argv[0])
        return 0;
    base = strrchr(argv[0], '/');
    return strcmp(base ? base + 1 : argv[0], "shifter") == 0;
}

/* The batch step (Slurm's SLURM_BATCH_SCRIPT step id): with --ccm its script runs in the
 * job's container. */
static int is_batch_step(spank_t sp)
{
    uint32_t step = 0;

    return spank_get_item(sp, S_JOB_STEPID, &step) == ESPANK_SUCCESS && step == 0xfffffffbU;
}

/* Is every ';'-separated mapping of `part` one of `whole`'s? (volumes accumulate) */
static int mappings_within(const char *part, const char *whole)
{
    const char *p = part ? part : "";
    const char *w = whole ? whole : "";
    size_t wl = strlen(w);

    while (*p) {
        size_t n = strcspn(p, ";");
        int found = 0;
        for (const char *q = w; q <= w + wl; ) {
            size_t m = strcspn(q, ";");
            if (m == n && strncmp(p, q, n) == 0)
                found = 1;
            q += m + 1;
        }
        if (!found)
            return 0;
        p += n;
        if (*p == ';')
            p++;
    }
    return 1;
}

/* srun inside an allocation whose image the allocator already resolved, with the same
 * options (its volumes already among the job's): nothing to check or resolve again
 * (DESIGN.md: nested sruns reuse the id). This mirrors shifter_wlm.submit.local, which
 * makes the same decision when it does run. */
static int already_resolved(void)
{
    return getenv("SHIFTER_IMAGE") && same(getenv("SHIFTER_IMAGEREQUEST"), opt_image)
        && mappings_within(opt_volume, getenv("SHIFTER_VOLUME")) && same(getenv("SHIFTER_MODULE"), opt_module);
}

/* Does this hook need Python? Only where a job or step uses us; never in slurmd. */
static int wanted(spank_t sp)
{
    spank_context_t ctx = spank_context();
    int any;

    if (ctx == S_CTX_SLURMD)
        return 0;
    if (ctx == S_CTX_JOB_SCRIPT)
        /* prolog/epilog: Slurm does not hand static options to this context (getopt
         * answers from a cache that is never filled), so the submit side also exports
         * the job's request as job-control variables, seen here as SPANK_SHIFTER_* */
        return getenv("SPANK_SHIFTER_IMAGE") != NULL || getenv("SPANK_SHIFTER_IMAGEREQUEST") != NULL;
    any = opt_image != NULL || opt_volume != NULL || opt_module != NULL || opt_ccm;
    if (ctx == S_CTX_REMOTE) {
        /* a step enters a container only when its command is `shifter` (and, with --ccm,
         * the batch script). Decided once, before the tasks fork: the task hook rewrites
         * argv, and later hooks must still know. */
        if (remote_wanted < 0)
            remote_wanted = step_runs_shifter(sp) || (opt_ccm && is_batch_step(sp));
        return remote_wanted;
    }
    if (ctx == S_CTX_LOCAL && any && opt_image && already_resolved())
        return 0;
    return any;
}

int slurm_spank_init(spank_t sp, int ac, char **av)
{
    spank_context_t ctx = spank_context();

    if (check_args(ac, av) < 0)
        return -1;
    /* Slurm reads the static table everywhere except in sbatch/salloc: register there */
    if (ctx == S_CTX_ALLOCATOR)
        for (int i = 0; spank_options[i].name; i++)
            if (spank_option_register(sp, &spank_options[i]) != ESPANK_SUCCESS) {
                slurm_error("shifter: cannot register --%s", spank_options[i].name);
                return -1;
            }
    if (arg_true(ac, av, "enable_ccm")) {
        if (ctx == S_CTX_ALLOCATOR || ctx == S_CTX_LOCAL || ctx == S_CTX_REMOTE)
            if (spank_option_register(sp, &ccm_option) != ESPANK_SUCCESS) {
                slurm_error("shifter: cannot register --ccm");
                return -1;
            }
    }
    return 0;
}

#define FORWARD_IF_WANTED(fn)                                   \
    int fn(spank_t sp, int ac, char **av)                       \
    {                                                           \
        if (!wanted(sp))                                        \
            return 0;                                           \
        return forward(#fn, sp, ac, av);                        \
    }

FORWARD_IF_WANTED(slurm_spank_init_post_opt)
FORWARD_IF_WANTED(slurm_spank_user_init)
FORWARD_IF_WANTED(slurm_spank_task_init_privileged)
FORWARD_IF_WANTED(slurm_spank_task_init)
FORWARD_IF_WANTED(slurm_spank_task_post_fork)
FORWARD_IF_WANTED(slurm_spank_task_exit)
FORWARD_IF_WANTED(slurm_spank_job_prolog)
FORWARD_IF_WANTED(slurm_spank_job_epilog)

int slurm_spank_exit(spank_t sp, int ac, char **av)
{
    int rc = 0;
    /* only a process that already runs Python has anything to finish */
    if (py_entry && wanted(sp))
        rc = forward("slurm_spank_exit", sp, ac, av);
    free(opt_image);
    free(opt_volume);
    free(opt_module);
    opt_image = opt_volume = opt_module = NULL;
    return rc;
}

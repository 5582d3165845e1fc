/*
 * The SPANK plugin Slurm loads (plugstack.conf). Deliberately tiny, with no libpython
 * dependency: a job that uses none of our options never starts Python and pays nothing.
 *
 * It only forwards. It registers the options of the Python option table, stores their values,
 * and only where a value is set (or in the prolog/epilog of a job that has one) loads the
 * Python part, shifter_spank_py.so (beside this file), RTLD_NOW|RTLD_GLOBAL, and forwards to
 * it the hooks that have a Python route, with the option values as one "name=value" list.
 * Everything it cannot do (load the library, start Python) fails the hook: a job that asked
 * for a container never runs without one.
 *
 * Plugin arguments (plugstack.conf, the Python table PLUGIN_ARGS): checked here in every
 * context, before Python, and passed on. The tables are in shifter_tables.h, generated from
 * the Python ones by spank/build.py (docs/architecture.md, "Adding a SPANK option").
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
#include <unistd.h>

SPANK_PLUGIN(shifter, 1);

typedef int (*py_entry_f)(const char *hook, spank_t sp, int ac, char **av, char **options);

/* The tables (options, plugin arguments, routed hooks) come from the Python ones
 * (shifter_wlm/options.py, shifter_wlm/dispatch.py ROUTES), written into shifter_tables.h by
 * spank/build.py. */
enum opt_kind { KIND_STORE, KIND_APPEND, KIND_FLAG };
enum opt_compare { CMP_NONE, CMP_SAME, CMP_MAPPINGS };
struct opt_row {
    const char *name;
    enum opt_kind kind;
    const char *enabled_by;  /* the boolean plugin argument that enables it, or NULL */
    int nonempty;            /* an empty value is refused (by Python) */
    const char *step_env;    /* the SHIFTER_* variable the submit side exported it as */
    enum opt_compare compare;
};
enum arg_kind { ARG_PATH, ARG_BOOL };
#define CTX(c) (1u << (c))
static int cb_option(int val, const char *arg, int remote);
#include "shifter_tables.h"

/* each option's value as "name=value" (what Python gets), NULL when not given */
static char *opt_values[N_OPTIONS];
static py_entry_f py_entry;
static int remote_wanted = -1;  /* remote context: does this step use us? (-1: not known yet) */

static const char *value_of(int i)
{
    return opt_values[i] ? opt_values[i] + strlen(opt_rows[i].name) + 1 : NULL;
}

/* store: each use replaces the previous value (--image, --module, as in the original
 * Shifter). append: uses accumulate, joined with ';', as shifter -V does (several
 * #SBATCH --volume lines, and srun's own --volume after the one Slurm hands on from sbatch);
 * Python merges a mapping given twice (runtime.volumes.combine). Slurm itself keeps only the
 * last value for the remote side; the step hook gets the others from the job record and the
 * environment. */
static int cb_option(int val, const char *arg, int remote)
{
    char *joined;
    const char *old;

    (void)remote;
    if (val < 0 || val >= N_OPTIONS)
        return -1;
    old = value_of(val);
    if (opt_rows[val].kind == KIND_FLAG)
        arg = "1";
    if (opt_rows[val].kind == KIND_APPEND && old) {
        if (asprintf(&joined, "%s=%s;%s", opt_rows[val].name, old, arg ? arg : "") < 0)
            return -1;
    } else if (asprintf(&joined, "%s=%s", opt_rows[val].name, arg ? arg : "") < 0) {
        return -1;
    }
    free(opt_values[val]);
    opt_values[val] = joined;
    return 0;
}

/* 1 true, 0 false, -1 not a boolean (the words of the Python table and nothing else) */
static int parse_bool(const char *v)
{
    for (int i = 0; true_words[i]; i++)
        if (!strcmp(v, true_words[i]))
            return 1;
    for (int i = 0; false_words[i]; i++)
        if (!strcmp(v, false_words[i]))
            return 0;
    return -1;
}

/* The plugin's arguments: each one works, or fails every job with one line naming it. The
   Python part (shifter_wlm/options.py PluginArgs) reads the same, already checked, list. */
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
                        KNOWN_ARGS_TEXT, av[i]);
            return -1;
        }
        if (known_args[k].kind == ARG_BOOL && parse_bool(eq + 1) < 0) {
            slurm_error("shifter: plugin argument '%s' in plugstack.conf: the value must be one of "
                        BOOL_WORDS_TEXT, av[i]);
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

/* Python gets the options as one NULL-terminated list of "name=value" (the ones given). */
static int forward(const char *hook, spank_t sp, int ac, char **av)
{
    char *options[N_OPTIONS + 1];
    int n = 0;

    if (load_python_part() < 0)
        return -1;
    for (int i = 0; i < N_OPTIONS; i++)
        if (opt_values[i])
            options[n++] = opt_values[i];
    options[n] = NULL;
    return py_entry(hook, sp, ac, av, options);
}

static int same(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

/* The job's extern step (PrologFlags=Contain) on a node where the prolog planned the job's
 * sshd: the prolog leaves SSHD_MARKERS/<job> (shifter_wlm/extern.py MARKER_DIR), so a job
 * without one never starts Python in its extern step. */
#define SSHD_MARKERS "/run/shifter-hpc/sshd"
static int is_extern_step_with_sshd(spank_t sp)
{
    uint32_t step = 0, job = 0;
    char path[PATH_MAX];

    if (spank_get_item(sp, S_JOB_STEPID, &step) != ESPANK_SUCCESS || step != 0xfffffffcU
        || spank_get_item(sp, S_JOB_ID, &job) != ESPANK_SUCCESS)
        return 0;
    snprintf(path, sizeof path, SSHD_MARKERS "/%u", job);
    return access(path, F_OK) == 0;
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

/* Is the ';'-mapping (p, n) one of the mappings of `list` that start before `stop`? */
static int among(const char *list, const char *stop, const char *p, size_t n)
{
    for (const char *q = list; q < stop; ) {
        size_t m = strcspn(q, ";");
        if (m == n && strncmp(p, q, n) == 0)
            return 1;
        if (!q[m])
            break;
        q += m + 1;
    }
    return 0;
}

/* Does runtime.volumes.combine(job, more) give `job` back, i.e. does `more` add no mapping
 * to the job's? (Mappings accumulate; one given again counts once; an empty text adds
 * nothing.) Exported for the test that compares it with combine. */
int shifter_shim_adds_nothing(const char *job, const char *more)
{
    size_t jl = strlen(job);
    const char *end = jl ? job + jl + 1 : job;  /* a last, empty mapping starts at job + jl */
    const char *p;

    for (p = job; jl; ) {  /* combine(job) is job only if no mapping is in it twice */
        size_t n = strcspn(p, ";");
        if (among(job, p, p, n))
            return 0;
        if (!p[n])
            break;
        p += n + 1;
    }
    for (p = more; *more; ) {
        size_t n = strcspn(p, ";");
        if (!among(job, end, p, n) && !(jl == 0 && n == 0))  /* combine("", ";") is "" */
            return 0;
        if (!p[n])
            break;
        p += n + 1;
    }
    return 1;
}

/* srun inside an allocation whose image the allocator already resolved, asking for nothing
 * new (each option as the submit side exported the job's, its volumes already among the
 * job's): nothing to check or resolve again (nested sruns reuse the id), so Python does not
 * start. The one copy of this rule: shifter_wlm.submit.local runs only when it does not
 * hold. Outside a job an option without --image goes to Python, which refuses it.
 * Exported (values: "name=value" by row, as opt_values) for the test that checks it. */
int shifter_shim_already_resolved(char *const *values)
{
    const char *id = getenv("SHIFTER_IMAGE");

    if (!id || !*id || (!values[OPT_IMAGE] && !getenv("SLURM_JOB_ID")))
        return 0;
    for (int i = 0; i < N_OPTIONS; i++) {
        const char *value = values[i] ? values[i] + strlen(opt_rows[i].name) + 1 : NULL;
        const char *job = opt_rows[i].step_env ? getenv(opt_rows[i].step_env) : NULL;

        if (value && opt_rows[i].nonempty && !*value)
            return 0;
        if (opt_rows[i].compare == CMP_SAME && value && !same(value, job))
            return 0;
        /* even when not given: a job text with a mapping twice is not combine's own */
        if (opt_rows[i].compare == CMP_MAPPINGS && !shifter_shim_adds_nothing(job ? job : "", value ? value : ""))
            return 0;
    }
    return 1;
}

/* Does this hook need Python? Only where a job or step uses us; never in slurmd. */
static int wanted(spank_t sp)
{
    spank_context_t ctx = spank_context();
    int any = 0;

    if (ctx == S_CTX_SLURMD)
        return 0;
    if (ctx == S_CTX_JOB_SCRIPT)
        /* prolog/epilog: Slurm does not hand static options to this context (getopt
         * answers from a cache that is never filled), so the submit side also exports
         * the job's request as job-control variables, seen here as SPANK_SHIFTER_* */
        return getenv("SPANK_SHIFTER_IMAGE") != NULL || getenv("SPANK_SHIFTER_IMAGEREQUEST") != NULL;
    for (int i = 0; i < N_OPTIONS; i++)
        any |= opt_values[i] != NULL;
    if (ctx == S_CTX_REMOTE) {
        /* a step enters a container only when its command is `shifter` (and, with --ccm,
         * the batch script); the extern step starts the job's sshd. Decided once, before
         * the tasks fork: the task hook rewrites argv, and later hooks must still know. */
        if (remote_wanted < 0)
            remote_wanted = step_runs_shifter(sp) || (opt_values[OPT_CCM] && is_batch_step(sp))
                || is_extern_step_with_sshd(sp);
        return remote_wanted;
    }
    if (ctx == S_CTX_LOCAL && any && shifter_shim_already_resolved(opt_values))
        return 0;
    return any;
}

static int arg_true(int ac, char **av, const char *name)
{
    size_t n = strlen(name);
    for (int i = 0; i < ac; i++)
        if (strncmp(av[i], name, n) == 0 && av[i][n] == '=')
            return parse_bool(av[i] + n + 1) == 1;
    return 0;
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
    /* options a plugin argument enables: registered where they are read */
    if (ctx == S_CTX_ALLOCATOR || ctx == S_CTX_LOCAL || ctx == S_CTX_REMOTE)
        for (int i = 0; shifter_enabled_options[i].name; i++)
            if (arg_true(ac, av, opt_rows[shifter_enabled_options[i].val].enabled_by)
                && spank_option_register(sp, &shifter_enabled_options[i]) != ESPANK_SUCCESS) {
                slurm_error("shifter: cannot register --%s", shifter_enabled_options[i].name);
                return -1;
            }
    return 0;
}

/* Forward a hook to Python only in the contexts that route it (the generated ROUTED_HOOKS),
 * and only where the job or step uses us; Slurm never calls a hook this file does not
 * define. */
static int forward_routed(const char *hook, unsigned contexts, spank_t sp, int ac, char **av)
{
    if (!(contexts & CTX(spank_context())) || !wanted(sp))
        return 0;
    return forward(hook, sp, ac, av);
}

#define DEFINE_ROUTED_HOOK(name, contexts)                                   \
    int slurm_spank_##name(spank_t sp, int ac, char **av)                     \
    {                                                                         \
        return forward_routed("slurm_spank_" #name, contexts, sp, ac, av);    \
    }
ROUTED_HOOKS(DEFINE_ROUTED_HOOK)

int slurm_spank_exit(spank_t sp, int ac, char **av)
{
    int rc = 0;
    /* only a process that already runs Python has anything to finish */
    if (py_entry && (EXIT_CONTEXTS & CTX(spank_context())) && wanted(sp))
        rc = forward("slurm_spank_exit", sp, ac, av);
    for (int i = 0; i < N_OPTIONS; i++) {
        free(opt_values[i]);
        opt_values[i] = NULL;
    }
    return rc;
}

/*
 * The SPANK plugin Slurm loads (plugstack.conf). It is deliberately tiny and has no
 * libpython dependency: a job that uses none of our options must cost nothing.
 *
 * Foundation stage: the plugin loads in every Slurm context and checks its arguments;
 * the options and the forwarding to the Python hooks (shifter_wlm) come with the Slurm
 * integration. It declares no options yet, so no job can ask for a container and
 * silently run without one.
 */
#include <slurm/spank.h>
#include <string.h>

SPANK_PLUGIN(shifter, 1);

static const char *known_args[] = {
    "shifter_config=", "extern_setup=", "extern_cgroup=", "enable_ccm=", "enable_sshd=",
    "python=", NULL,
};

static int known(const char *arg)
{
    for (int i = 0; known_args[i]; i++)
        if (strncmp(arg, known_args[i], strlen(known_args[i])) == 0)
            return 1;
    return 0;
}

int slurm_spank_init(spank_t sp, int ac, char **av)
{
    (void)sp;
    for (int i = 0; i < ac; i++) {
        if (!known(av[i])) {
            slurm_error("shifter: unknown plugin argument '%s' in plugstack.conf; "
                        "known: shifter_config= extern_setup= extern_cgroup= enable_ccm= "
                        "enable_sshd= python=", av[i]);
            return -1; /* fail closed: a misconfigured plugin stops the job */
        }
    }
    return 0;
}

/*
 * Slurm's SPANK API as stubs, exported by a host program (linked -rdynamic, as slurmstepd
 * exports the real ones) that loads the plugin's Python part outside Slurm: the tests of the
 * embedded Python's start (tests/test_spank_build.py) and the step's floor
 * (bench/bench_step_floor.py). Not part of the plugin.
 */
#include <stdio.h>
#include <slurm/spank.h>
spank_err_t spank_get_item(spank_t sp, spank_item_t item, ...) { (void)sp; (void)item; return ESPANK_ERROR; }
spank_context_t spank_context(void) { return S_CTX_SLURMD; }
int spank_remote(spank_t sp) { (void)sp; return 0; }
spank_err_t spank_getenv(spank_t sp, const char *v, char *b, int l) { (void)sp; (void)v; (void)b; (void)l; return ESPANK_ENV_NOEXIST; }
spank_err_t spank_setenv(spank_t sp, const char *v, const char *x, int o) { (void)sp; (void)v; (void)x; (void)o; return ESPANK_ERROR; }
spank_err_t spank_unsetenv(spank_t sp, const char *v) { (void)sp; (void)v; return ESPANK_ERROR; }
spank_err_t spank_job_control_setenv(spank_t sp, const char *n, const char *v, int o) { (void)sp; (void)n; (void)v; (void)o; return ESPANK_ERROR; }
const char *spank_strerror(spank_err_t e) { (void)e; return "error"; }
void slurm_error(const char *fmt, ...) { fprintf(stderr, "slurm_error: %s\n", fmt); }
void slurm_info(const char *fmt, ...) { (void)fmt; }
void slurm_debug(const char *fmt, ...) { (void)fmt; }

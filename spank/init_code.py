# Embedding init code of shifter_spank_py.so: runs once per process, at the first hook.
# Everything is imported here, before any hook may chroot into a container: nothing may be
# imported later (a hook may then run as root inside the user's image). Not `traceback`
# either (~8 ms of every `srun shifter` step, bench/bench_srun.py): a failed hook is described by
# _describe, which imports nothing; only a failed start, before any hook ran, imports it.
from _shifter_spank import ffi, lib


def _describe(err: BaseException) -> str:
    """The exception and where it came from (file:line in function, innermost first)."""
    frames = []
    tb = err.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        frames.append(f"{code.co_filename}:{tb.tb_lineno} in {code.co_name}")
        tb = tb.tb_next
    return f"{type(err).__name__}: {err} (at {' <- '.join(reversed(frames))})"


try:
    from shifter_wlm import dispatch

    dispatch.bind(ffi, lib)
except BaseException as err:  # noqa: BLE001 - reported to Slurm's log, hooks then fail closed
    import traceback  # no hook has run yet: nothing is chrooted

    lib.shifter_log_error(f"shifter: cannot load the Python hooks ({type(err).__name__}: {err}); "
                          "check the installation (make install)".encode())
    lib.shifter_log_debug(traceback.format_exc().encode())  # for admins: srun -v, slurmd debug log
else:
    lib.shifter_py_ready = 1


@ffi.def_extern(error=-1)
def shifter_py_hook(hook, sp, ac, av, options):
    if not lib.shifter_py_ready:
        return -1
    try:
        return dispatch.run(hook, sp, ac, av, options)
    except BaseException as err:  # noqa: BLE001 - never let an exception cross into Slurm
        lib.shifter_log_error(("shifter: hook failed: " + _describe(err)).encode())
        return -1

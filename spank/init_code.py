# Embedding init code of shifter_spank_py.so: runs once per process, at the first hook.
# Everything is imported here, before any hook may chroot into a container.
import traceback

from _shifter_spank import ffi, lib

try:
    from shifter_wlm import dispatch

    dispatch.bind(ffi, lib)
except BaseException as err:  # noqa: BLE001 - reported to Slurm's log, hooks then fail closed
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
    except BaseException:  # noqa: BLE001 - never let an exception cross into Slurm
        lib.shifter_log_error(("shifter: hook failed: " + traceback.format_exc()).encode())
        return -1

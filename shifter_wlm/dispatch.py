"""Every SPANK hook arrives here and goes to the module for its Slurm context:

    allocator (sbatch/salloc, user)   init_post_opt        -> submit.allocator
    local (srun, user)                init_post_opt        -> submit.local
    job_script (prolog/epilog, root)  job_prolog           -> prolog.run
                                      job_epilog           -> epilog.run
    remote (slurmstepd, root)         init_post_opt        -> task.step_setup
                                      task_init_privileged -> task.enter
                                      task_init (the user) -> task.user_hooks
                                      exit                 -> task.step_exit
    extern (remote context, the job's extern step; slurmstepd, root)
                                      task_post_fork       -> extern.start_sshd

A ShifterError becomes one line in Slurm's output/log and the hook's -1 (the job or step
fails with that reason). Anything else is a bug: in root's hooks it is one line too (and
the traceback in slurmd's debug log); a prolog or epilog then still returns 0, because a
failed one drains the node, and no job's input may do that. On the user's side the init
code logs the traceback.
"""

from __future__ import annotations

from shifter_site import logs
from shifter_site.errors import ShifterError
from shifter_wlm.options import Options, PluginArgs
from shifter_wlm.spank_api import SlurmLogStream, Spank

_ffi = None
_lib = None


# the option and plugin-argument tables (one module owns them); the old names stay for callers
RawOptions = Options

# (module, function): imported on first use, so each process loads only its own context's
# code (a step joining its container must stay cheap). The C shim defines and forwards only
# the hooks routed here, in these contexts (spank/tables.py writes this table into it).
ROUTES = {
    ("allocator", "init_post_opt"): ("shifter_wlm.submit", "allocator"),
    ("local", "init_post_opt"): ("shifter_wlm.submit", "local"),
    ("job_script", "job_prolog"): ("shifter_wlm.prolog", "run"),
    ("job_script", "job_epilog"): ("shifter_wlm.epilog", "run"),
    ("remote", "init_post_opt"): ("shifter_wlm.task", "step_setup"),
    ("remote", "task_init_privileged"): ("shifter_wlm.task", "enter"),
    ("remote", "task_init"): ("shifter_wlm.task", "user_hooks"),
    ("remote", "exit"): ("shifter_wlm.task", "step_exit"),
    ("extern", "task_post_fork"): ("shifter_wlm.extern", "start_sshd"),
}
EXTERN_STEP = 0xFFFFFFFC  # Slurm's SLURM_EXTERN_CONT: the extern step's hooks have routes of their own


def bind(ffi, lib) -> None:
    """Called once by the embedding init code, with the process's cffi library."""
    global _ffi, _lib, _python_t0
    _ffi, _lib = ffi, lib
    _python_t0 = lib.shifter_py_t0 or None


def python_started() -> float | None:
    """When this process began starting Python (perf_counter's clock), once: the first
    caller gets it (the step path's first phase, shifter -v), later ones None."""
    global _python_t0
    t0, _python_t0 = _python_t0, None
    return t0


_python_t0: float | None = None


def _text(ptr) -> str | None:
    return None if ptr == _ffi.NULL else _ffi.string(ptr).decode(errors="surrogateescape")


def _texts(array) -> list[str]:
    """A NULL-terminated `char **` as strings."""
    out, i = [], 0
    while array[i] != _ffi.NULL:
        out.append(_text(array[i]))
        i += 1
    return out


def run(hook, sp, ac, av, options) -> int:
    """Route one hook call; 0 on success, -1 (with the reason logged) on failure.
    `options`: the option values as the C shim stores them, "name=value", NULL-terminated."""
    name = _text(hook).removeprefix("slurm_spank_")
    spank = Spank(_ffi, _lib, sp)
    context = spank.context
    if context == "remote" and spank.step_id() == EXTERN_STEP:
        context = "extern"
    route = ROUTES.get((context, name))
    if route is None:
        return 0
    # __import__, not importlib.import_module: importing importlib costs each step ~0.3 ms
    handler = getattr(__import__(route[0], fromlist=(route[1],)), route[1])
    user_side = spank.context in ("allocator", "local")
    logs.configure(json=True, stream=SlurmLogStream(_lib, debug=user_side))
    try:
        args = PluginArgs.parse([_text(av[i]) for i in range(ac)])
        handler(spank, args, Options.from_list(_texts(options)))
    except ShifterError as err:
        spank.error(f"shifter: {err}")
        return -1
    except Exception as err:  # noqa: BLE001 - privileged hooks: never a traceback for the user
        if user_side:
            raise
        import traceback

        spank.error(f"shifter: internal error in {name} ({type(err).__name__}: {err}); please report it")
        _lib.shifter_log_debug(traceback.format_exc().encode())
        return 0 if spank.context == "job_script" else -1
    return 0

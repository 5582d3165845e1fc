"""Every SPANK hook arrives here and goes to the module for its Slurm context:

    allocator (sbatch/salloc, user)   init_post_opt        -> submit.allocator
    local (srun, user)                init_post_opt        -> submit.local
    job_script (prolog/epilog, root)  job_prolog           -> prolog.run
                                      job_epilog           -> epilog.run
    remote (slurmstepd, root)         init_post_opt        -> task.step_setup
                                      task_init_privileged -> task.enter
                                      task_init (the user) -> task.user_hooks
                                      exit                 -> task.step_exit

A ShifterError becomes one line in Slurm's output/log and the hook's -1 (the job or step
fails with that reason). Anything else is a bug: in root's hooks it is one line too (and
the traceback in slurmd's debug log); a prolog or epilog then still returns 0, because a
failed one drains the node, and no job's input may do that. On the user's side the init
code logs the traceback.
"""

from __future__ import annotations

import importlib

from shifter_site import logs
from shifter_site.errors import ConfigError, ShifterError
from shifter_wlm.spank_api import SlurmLogStream, Spank

_ffi = None
_lib = None


class PluginArgs:
    """The plugin's arguments from plugstack.conf (trusted: written by root, and already
    checked by the C shim, which refuses unknown names and values; see spank/shim.c
    check_args). Plain classes here and below: importing dataclasses would cost every
    shifter step ~8 ms."""

    __slots__ = ("shifter_config", "enable_ccm", "enable_sshd")
    BOOLS = {"1": True, "yes": True, "true": True, "0": False, "no": False, "false": False}

    def __init__(self, shifter_config: str = "/etc/shifter/shifter.yaml", enable_ccm: bool = False,
                 enable_sshd: bool | None = None):
        self.shifter_config = shifter_config
        self.enable_ccm = enable_ccm
        self.enable_sshd = enable_sshd  # None: as the site config's sshd.enabled says

    @classmethod
    def parse(cls, args: list[str]) -> "PluginArgs":
        """The checked values; ConfigError (one line) for what the C shim's check refuses,
        should a caller skip it, and for an argument given twice (C reads the first, so a
        later one would be ignored silently)."""
        values: dict = {}
        seen: set[str] = set()
        for arg in args:
            key, eq, value = arg.partition("=")
            if key not in ("shifter_config", "python", "enable_ccm", "enable_sshd") or not eq:
                raise ConfigError(f"unknown plugin argument {arg!r} in plugstack.conf; known: "
                                  "shifter_config=PATH python=PATH enable_ccm=BOOL enable_sshd=BOOL")
            if key in ("enable_ccm", "enable_sshd"):
                if value not in cls.BOOLS:
                    raise ConfigError(f"plugin argument {arg!r} in plugstack.conf: the value must be one of "
                                      "1/0/yes/no/true/false")
                values[key] = cls.BOOLS[value]
            elif not value.startswith("/"):
                raise ConfigError(f"plugin argument {arg!r} in plugstack.conf: the value must be an absolute path")
            elif key == "shifter_config":
                values[key] = value
            if key in seen:
                raise ConfigError(f"plugin argument {key} is given twice in plugstack.conf; keep one")
            seen.add(key)
        return cls(**values)


class RawOptions:
    """Option values exactly as the user typed them (None = not given)."""

    __slots__ = ("image", "volume", "module", "ccm")

    def __init__(self, image: str | None = None, volume: str | None = None, module: str | None = None,
                 ccm: bool = False):
        self.image = image
        self.volume = volume
        self.module = module
        self.ccm = ccm


# (module, function): imported on first use, so each process loads only its own context's
# code (a step joining its container must stay cheap)
ROUTES = {
    ("allocator", "init_post_opt"): ("shifter_wlm.submit", "allocator"),
    ("local", "init_post_opt"): ("shifter_wlm.submit", "local"),
    ("job_script", "job_prolog"): ("shifter_wlm.prolog", "run"),
    ("job_script", "job_epilog"): ("shifter_wlm.epilog", "run"),
    ("remote", "init_post_opt"): ("shifter_wlm.task", "step_setup"),
    ("remote", "task_init_privileged"): ("shifter_wlm.task", "enter"),
    ("remote", "task_init"): ("shifter_wlm.task", "user_hooks"),
    ("remote", "exit"): ("shifter_wlm.task", "step_exit"),
}


def bind(ffi, lib) -> None:
    """Called once by the embedding init code, with the process's cffi library."""
    global _ffi, _lib
    _ffi, _lib = ffi, lib


def _text(ptr) -> str | None:
    return None if ptr == _ffi.NULL else _ffi.string(ptr).decode(errors="surrogateescape")


def run(hook, sp, ac, av, image, volume, module, ccm) -> int:
    """Route one hook call; 0 on success, -1 (with the reason logged) on failure."""
    name = _text(hook).removeprefix("slurm_spank_")
    spank = Spank(_ffi, _lib, sp)
    route = ROUTES.get((spank.context, name))
    if route is None:
        return 0
    handler = getattr(importlib.import_module(route[0]), route[1])
    options = RawOptions(image=_text(image), volume=_text(volume), module=_text(module), ccm=bool(ccm))
    user_side = spank.context in ("allocator", "local")
    logs.configure(json=True, stream=SlurmLogStream(_lib, debug=user_side))
    try:
        args = PluginArgs.parse([_text(av[i]) for i in range(ac)])
        handler(spank, args, options)
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

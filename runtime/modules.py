"""Which site modules a container gets: one rule for `shifter -m`, `srun/sbatch --module`
and the prolog's check with the user's rights (docs/architecture.md, "Spec"). Standard
library only: `shifter` imports this on every launch."""

from __future__ import annotations

from shifter_site.errors import ShifterError


class ModuleError(ShifterError):
    """A --module value is wrong; the message says how to fix it."""

    exit_code = 2


def select(text: str | None, cfg, gpus: tuple[int, ...] | None = None) -> list[str]:
    """Module names for a --module value: None = the site's `default_modules`; `none` = no
    module; else `a,b`: each defined and enabled, none listed twice, none conflicting.

    The GPU module (the one with a `gpu:` section), when `gpus` is known (the node's GPUs of
    this job or step): added by itself when there are GPUs (its `auto`), unless `none`;
    without GPUs it adds nothing, and asking for it by name is refused."""
    if text is None:
        names = list(cfg.default_modules)
    elif text == "none":
        return []
    else:
        names = text.split(",")
        if "" in names:
            raise ModuleError(f"--module={text!r} has an empty name; write names separated by commas, or none")
        if len(set(names)) != len(names):
            raise ModuleError(f"--module={text!r} names a module twice; list each once")
    gpu_module = cfg.gpu_module if gpus is not None else None
    if gpu_module is not None:
        names = _gpu_rule(names, text, cfg, gpu_module, gpus)
    for name in names:
        module = cfg.modules.get(name)
        if module is None:
            known = ", ".join(n for n, m in cfg.modules.items() if m.enabled) or "none on this system"
            raise ModuleError(f"--module: {name!r} is not a module here (available: {known})")
        if not module.enabled:
            raise ModuleError(f"--module: {name!r} is disabled on this system; remove it")
        for other in module.conflict:
            if other in names:
                raise ModuleError(f"--module: {name!r} and {other!r} cannot be used together; keep one")
    return names


def _gpu_rule(names: list[str], text: str | None, cfg, gpu_module: str, gpus: tuple[int, ...]) -> list[str]:
    module = cfg.modules[gpu_module]
    if gpus:
        if gpu_module not in names and module.enabled and module.gpu.auto:
            return [*names, gpu_module]
        return names
    if gpu_module in names and text is not None and gpu_module in text.split(","):
        raise ModuleError(f"--module: {gpu_module!r} needs GPUs and this job has none on this node; "
                          f"ask for them (--gres=gpu:N) or drop {gpu_module!r}")
    return [name for name in names if name != gpu_module]  # a site default, without GPUs: nothing


def check_host_files(names: list[str] | tuple[str, ...], cfg) -> None:
    """On the node that builds the container (as root): every file the chosen modules take
    from the host is there (copy_path, root_hook, site mount sources); else one line naming
    the module and the path. The job's steps report it; the node stays in service."""
    import os

    for name in names:
        module = cfg.modules[name]
        paths = [module.copy_path, module.root_hook, *(m.from_ for m in module.site_mounts)]
        for path in paths:
            if path and not os.path.exists(path):
                raise ModuleError(f"module {name!r}: {path} is missing on this node; ask the admins to install "
                                  f"the module's files here, or run without it (--module=...)")

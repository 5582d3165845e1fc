"""Submit side, as the user: sbatch/salloc (allocator) and srun (local).

Check the options, resolve the image once through the gateway, and hand the result on:
`SHIFTER_*` in the job's environment (steps, nested sruns) and the job-control environment
(the prolog and epilog see it as SPANK_SHIFTER_*). A wrong value refuses the submission
with one line, before anything is queued. Nothing here is trusted by root code later: the
prolog and the step hooks check everything again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from shifter_wlm.options import OptionError
from shifter_wlm.options import check as check_combination  # the option table's own rules


@dataclass(frozen=True)
class Resolved:
    """What the options mean, ready to export."""

    image_id: str
    request: str          # --image as the user typed it
    volume: str           # --volume as typed ("" = none)
    module: str           # --module as typed ("" = site default)


def check_modules(text: str, cfg) -> list[str]:
    """Module names from `a,b` or `none` (runtime.modules.select: one rule everywhere)."""
    from runtime.modules import select

    return select(text, cfg)


def check_volumes(text: str, cfg) -> None:
    """The syntax and user rules of --volume, the site's perNodeCache limits, and each
    source as the user sees it (a shared filesystem: a missing or unreadable source is
    refused now, not after the job waited in the queue; the node checks again)."""
    from runtime import binds, volumes

    parsed = volumes.parse(text)  # parse checks them together (check_all)
    volumes.check_cache_limits(parsed, cfg.per_node_cache.size_limit_bytes, list(cfg.per_node_cache.allowed_fs))
    for fd in binds.resolve_sources([v for v in parsed if not v.cache]):
        os.close(fd)


def resolve(options, cfg, volume: str) -> Resolved:
    """Look the image up in the gateway and check the other options against the site;
    `volume`: every --volume of this job or step (runtime.volumes.combine)."""
    from runtime.cli import resolve_image

    image_id = resolve_image(cfg, options.image)
    if volume:
        check_volumes(volume, cfg)
    if options.module is not None:
        check_modules(options.module, cfg)
    return Resolved(image_id=image_id, request=options.image, volume=volume, module=options.module or "")


def export(spank, resolved: Resolved, job_level: bool) -> None:
    """Environment for the job's steps (and, at job level, for the prolog/epilog)."""
    values = {
        "SHIFTER_IMAGE": resolved.image_id,
        "SHIFTER_IMAGETYPE": "id",
        "SHIFTER_IMAGEREQUEST": resolved.request,
        "SHIFTER_VOLUME": resolved.volume,
        "SHIFTER_MODULE": resolved.module,
    }
    for name, value in values.items():
        # sbatch and srun pass their own environment on to the job (spank_setenv is for
        # remote context only), so set it in this process
        os.environ[name] = value
        if job_level:
            spank.job_control_setenv(name, value)


def _config(args):
    from shifter_site import config

    return config.load(args.shifter_config, privileged=False)


def user_key(args, cfg) -> None:
    """When the site runs the job's sshd: the user's key pair in ~/.udiRoot, made if missing
    (the prolog gives it to the job's sshd and ssh client)."""
    import pwd

    from shifter_wlm import sshd

    if sshd.enabled(args, cfg):
        sshd.ensure_user_key(pwd.getpwuid(os.getuid()).pw_dir)


def ccm_image(options, cfg):
    """`--ccm` without --image: the site's CCM tree (ccm.root) as a local: image, as the
    original acted in place of Cray's CCM; refused where the site has none."""
    if not (options.ccm and options.image is None):
        return options
    if not cfg.ccm.root:
        raise OptionError("--ccm needs --image on this site (it sets no ccm.root): add --image=TYPE:TAG "
                          "(e.g. --image=docker:ubuntu:22.04)")
    from shifter_wlm.dispatch import RawOptions

    return RawOptions(image=f"local:{cfg.ccm.root}", volume=options.volume, module=options.module, ccm=True)


def allocator(spank, args, options) -> None:
    """sbatch/salloc: the job's image, resolved once for every node and step."""
    cfg = _config(args) if options.ccm and options.image is None else None
    if cfg is not None:
        options = ccm_image(options, cfg)
    check_combination(options)
    if options.image is None:
        return
    cfg = cfg or _config(args)
    if options.ccm:
        from shifter_wlm import sshd

        if not sshd.enabled(args, cfg):
            raise OptionError("--ccm needs the in-container sshd, which this site has not enabled "
                              "(sshd.enabled in the site config); submit without --ccm")
    from runtime.volumes import combine

    # several --volume options (#SBATCH lines) accumulate: the plugin joined them
    resolved = resolve(options, cfg, combine(options.volume or ""))
    user_key(args, cfg)
    export(spank, resolved, job_level=True)


def local(spank, args, options) -> None:
    """srun: a different --image (or an srun outside any allocation) is resolved here, for
    this step only. Inside an allocation, options that ask for nothing new never get here:
    the C shim does not start Python for them (its already_resolved, the one copy of that
    rule), so the job's resolved image is reused as is. The step's --volume adds to the
    job's (SHIFTER_VOLUME); the node does the same when this environment does not reach the
    step (--export=NONE)."""
    from runtime.volumes import combine

    env = os.environ  # srun's own environment (spank_getenv answers in remote context only)
    in_job = "SLURM_JOB_ID" in env
    check_combination(options, in_job)
    if options.image is None and options.volume is None and options.module is None:
        return
    job_volume = env.get("SHIFTER_VOLUME", "")
    volume = combine(job_volume, options.volume or "")
    module = options.module if options.module is not None else env.get("SHIFTER_MODULE", "")
    cfg = _config(args)
    if options.image is None:
        # the job's image (chosen on the node); the step's own volumes and modules checked here
        if volume:
            check_volumes(volume, cfg)
        if options.module is not None:
            check_modules(options.module, cfg)
        os.environ["SHIFTER_VOLUME"] = volume
        os.environ["SHIFTER_MODULE"] = module
        return
    job_level = not in_job  # an srun that makes its own allocation
    resolved = resolve(options, cfg, volume)
    if job_level:
        user_key(args, cfg)
    export(spank, resolved, job_level=job_level)

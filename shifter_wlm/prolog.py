"""Prolog (root, once per node of a job with --image): build the job's container on this
node in a pinned namespace, with the site mounts, the user's volumes, perNodeCache and
/var/hostsfile, so every step on the node can enter it; and, when the site enables the
job's sshd (shifter_wlm/sshd.py), plan it (port, addresses, the container's ssh_config) for
the job's extern step, which starts it (shifter_wlm/extern.py).

A prolog that fails would make Slurm drain the node; so a problem with the job's request
(an image gone since submission, a volume the user cannot read) is recorded instead and
reported by each `shifter` step of the job, and the prolog itself succeeds.
"""

from __future__ import annotations

import os

from shifter_site.errors import ShifterError


class PrologError(ShifterError):
    """The job's container cannot be built; the message goes to the job's shifter steps."""


def image_id(request: str, cfg) -> str:
    """The id the submit side resolved (SPANK_SHIFTER_IMAGE), checked; or resolve again."""
    from shifter_site import imagefiles

    resolved = os.environ.get("SPANK_SHIFTER_IMAGE", "")
    if resolved:
        return imagefiles.check_id(resolved)
    if request.startswith("local:"):
        from runtime import localimage
        return localimage.local_id(localimage.check(cfg, request))
    from imagegw import client

    if not request:
        raise PrologError("the job has no image request (SPANK_SHIFTER_IMAGE/IMAGEREQUEST unset)")
    return client.lookup(cfg, request).id


def job_gpus(cfg) -> tuple[int, ...] | None:
    """The job's GPUs on this node, from what slurmd sets for the prolog (SLURM_JOB_GPUS; the
    user's environment does not reach the prolog); None when the site has no GPU module."""
    if cfg.gpu_module is None:
        return None
    from runtime import gpu

    return gpu.allocated({"SLURM_JOB_GPUS": os.environ.get("SLURM_JOB_GPUS", "")})


def run(spank, args, options) -> None:
    from runtime import build
    from shifter_site import config, logs
    from shifter_wlm import extern, jobs, leftovers, slurm, sshd, sshplan
    from shifter_wlm.containers import hostsfile_entries, job_record, make_spec

    log = logs.get("prolog")
    job_id = spank.job_id()
    uid = spank.uid()
    node = jobs.node_name()
    with logs.step(log, "load_config", job=job_id, node=node):
        cfg = config.load(args.shifter_config, privileged=True)
    run_dir = jobs.node_dir(cfg.run_dir, node)
    # the submit side's job-control variables (user-controlled: checked again below)
    request = os.environ.get("SPANK_SHIFTER_IMAGEREQUEST", "")
    volume = os.environ.get("SPANK_SHIFTER_VOLUME", "")
    module = os.environ.get("SPANK_SHIFTER_MODULE", "")
    with_sshd = sshd.enabled(args, cfg)
    port = sshplan.job_port(cfg.sshd.port, cfg.sshd.port_count, job_id) if with_sshd else 0
    spec = None
    key = ""
    image = ""
    try:
        with logs.step(log, "job_info", job=job_id, node=node) as info:
            job = slurm.job_info(job_id)
            info["nodes"] = len(job.nodes)
        # before anything of this job is made: a dead job's records would read as live
        leftovers.collect(run_dir, node, job_id, log, cfg)
        addrs = None
        if with_sshd:
            with logs.step(log, "node_addresses", job=job_id, node=node) as info:
                addrs = slurm.node_addresses(job.nodes)
                info["addresses"] = addrs
        with logs.step(log, "spec", job=job_id, node=node) as info:
            image = image_id(request, cfg)
            spec = make_spec(cfg, request or f"id:{image}", volume, module, image, uid,
                             hostsfile_entries(job), node, scope=f"job-{job_id}", sshd_addrs=addrs,
                             sshd_port=port, job_id=job_id, gpus=job_gpus(cfg))
            key = spec.build_key()
            info.update(image=image, key=key, gpus=list(spec.gpus))
        jobs.write(run_dir, str(job_id), job_record(job_id, uid, spec, key, "building", volume=volume, module=module))
        from shifter_wlm import imageuse
        imageuse.started(cfg, job_id, node, image, uid, request)  # the gateway keeps the image while it is used
        with logs.step(log, "build", job=job_id, node=node, key=key):
            build.build(spec, run_dir)
        # the sshd is an extra, started by the job's extern step (shifter_wlm/extern.py),
        # which clears this note; a job whose sshd cannot start still runs, and its shifter
        # steps on this node tell the user why
        sshd_note = ""
        if with_sshd:
            try:
                extern.mark(job_id)
                sshd_note = extern.NOT_STARTED
            except OSError as err:
                log.error("sshd_mark_failed", job=job_id, node=node, error=str(err))
                sshd_note = f"the job's sshd cannot be started on this node ({err})"
        jobs.write(run_dir, str(job_id), job_record(job_id, uid, spec, key, "ready", volume=volume, module=module,
                                                    sshd_port=port, sshd_addrs=addrs, sshd_error=sshd_note))
    except Exception as err:  # noqa: BLE001 - a prolog that fails drains the node: never for a job's input
        # recorded for the job's shifter steps; the node stays in service
        message = str(err) if isinstance(err, (ShifterError, OSError)) else f"internal error ({type(err).__name__}: {err})"
        log.error("prolog_failed", job=job_id, node=node, error=message)
        jobs.write(run_dir, str(job_id), job_record(job_id, uid, spec, key, "failed", message=message,
                                                    volume=volume, module=module, image_id=image))

"""Prolog (root, once per node of a job with --image): build the job's container on this
node in a pinned namespace, with the site mounts, the user's volumes, perNodeCache and
/var/hostsfile, so every step on the node can enter it; and, when the site enables it, start
the job's sshd inside it (shifter_wlm/sshd.py).

A prolog that fails would make Slurm drain the node; so a problem with the job's request
(an image gone since submission, a volume the user cannot read) is recorded instead and
reported by each `shifter` step of the job, and the prolog itself succeeds.
"""

from __future__ import annotations

import os

from shifter_site.errors import ShifterError


class PrologError(ShifterError):
    """The job's container cannot be built; the message goes to the job's shifter steps."""


def node_name() -> str:
    """This node, as slurmd names it in the prolog's environment (spank_getenv answers only
    in remote context, so the environment is the one source here)."""
    name = os.environ.get("SLURMD_NODENAME")
    if not name:
        raise PrologError("SLURMD_NODENAME is not set in the prolog environment")
    return name


def image_id(request: str, cfg) -> str:
    """The id the submit side resolved (SPANK_SHIFTER_IMAGE), checked; or resolve again."""
    from shifter_site import imagefiles

    resolved = os.environ.get("SPANK_SHIFTER_IMAGE", "")
    if resolved:
        return imagefiles.check_id(resolved)
    from imagegw import client

    if not request:
        raise PrologError("the job has no image request (SPANK_SHIFTER_IMAGE/IMAGEREQUEST unset)")
    return client.lookup(cfg, request).id


def start_sshd(cfg, spec, key: str, run_dir: str, job_id: int, node: str, addrs: dict[str, str]) -> tuple[int, str]:
    """The job's sshd in its container on this node, as the user; (pid, listen address)."""
    from runtime.enter import environment
    from shifter_wlm import sshd

    user_seed = sshd.read_user_key(spec.user)
    host = sshd.host_seed(cfg.sshd.host_key_secret, job_id, spec.user.uid)
    listen = sshd.listen_address(node, addrs.get(node, node))
    pid = sshd.start(os.path.join(run_dir, key, "ns"), spec.user, port=cfg.sshd.port, listen=listen,
                     host=host, user_seed=user_seed, hosts_text=sshd.known_hosts(addrs, cfg.sshd.port, host),
                     env=environment(spec, {}))
    return pid, listen


def other_jobs_sshds(run_dir: str, pids: set[int], wait: float = 2.0) -> bool:
    """Whether the pids holding the sshd's port are sshds other jobs' prologs recorded on this
    node (their records are written just after their sshd listens: allow them `wait` s)."""
    import time

    from shifter_wlm import jobs

    deadline = time.monotonic() + wait
    while True:
        if pids and pids <= jobs.sshd_pids(run_dir):
            return True
        if not pids or time.monotonic() > deadline:
            return False
        time.sleep(0.1)


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
    from shifter_wlm import jobs, slurm, sshd
    from shifter_wlm.containers import hostsfile_entries, job_record, make_spec

    log = logs.get("prolog")
    job_id = spank.job_id()
    uid = spank.uid()
    node = node_name()
    with logs.step(log, "load_config", job=job_id, node=node):
        cfg = config.load(args.shifter_config, privileged=True)
    run_dir = jobs.node_dir(cfg.run_dir, node)
    # the submit side's job-control variables (user-controlled: checked again below)
    request = os.environ.get("SPANK_SHIFTER_IMAGEREQUEST", "")
    volume = os.environ.get("SPANK_SHIFTER_VOLUME", "")
    module = os.environ.get("SPANK_SHIFTER_MODULE", "")
    with_sshd = sshd.enabled(args, cfg)
    spec = None
    key = ""
    image = ""
    try:
        with logs.step(log, "job_info", job=job_id, node=node) as info:
            job = slurm.job_info(job_id)
            info["nodes"] = len(job.nodes)
        addrs = None
        if with_sshd:
            with logs.step(log, "node_addresses", job=job_id, node=node) as info:
                addrs = slurm.node_addresses(job.nodes)
                info["addresses"] = addrs
        with logs.step(log, "spec", job=job_id, node=node) as info:
            image = image_id(request, cfg)
            spec = make_spec(cfg, request or f"id:{image}", volume, module, image, uid,
                             hostsfile_entries(job), node, scope=f"job-{job_id}", sshd_addrs=addrs,
                             gpus=job_gpus(cfg))
            key = spec.build_key()
            info.update(image=image, key=key, gpus=list(spec.gpus))
        jobs.write(run_dir, str(job_id), job_record(job_id, uid, spec, key, "building", volume=volume, module=module))
        with logs.step(log, "build", job=job_id, node=node, key=key):
            build.build(spec, run_dir)
        sshd_pid, sshd_error = 0, ""
        if with_sshd:
            # the sshd is an extra: a job whose sshd cannot start (its key removed, the port
            # held by someone else) still runs, and `ssh` to this node then fails; the reason
            # is in slurmd's log and, unless another job's sshd holds the port, in the job
            # record, whose shifter steps on this node tell the user
            for attempt in (1, 2):
                try:
                    with logs.step(log, "sshd", job=job_id, node=node, port=cfg.sshd.port) as info:
                        sshd_pid, listen = start_sshd(cfg, spec, key, run_dir, job_id, node, addrs)
                        info.update(pid=sshd_pid, listen=listen or "*")
                    break
                except sshd.SshdError as err:  # logged by the step
                    if attempt == 1 and err.exited and not err.held_by:
                        continue  # whoever held the port has gone (another job's sshd stopping)
                    # another job's sshd on the port: the known one-sshd-per-port limit, in
                    # the log only; anything else (a process squatting the port...) the user
                    # is told
                    if not other_jobs_sshds(run_dir, err.held_by):
                        sshd_error = str(err)
        jobs.write(run_dir, str(job_id), job_record(job_id, uid, spec, key, "ready", volume=volume, module=module,
                                                    sshd_pid=sshd_pid, sshd_error=sshd_error))
    except Exception as err:  # noqa: BLE001 - a prolog that fails drains the node: never for a job's input
        # recorded for the job's shifter steps; the node stays in service
        message = str(err) if isinstance(err, (ShifterError, OSError)) else f"internal error ({type(err).__name__}: {err})"
        log.error("prolog_failed", job=job_id, node=node, error=message)
        jobs.write(run_dir, str(job_id), job_record(job_id, uid, spec, key, "failed", message=message,
                                                    volume=volume, module=module, image_id=image))

"""The container of a job or step on this node, as the prolog and a step-level build both
make it: its spec (every value checked again with the user's rights), its /var/hostsfile
lines and its job record."""

from __future__ import annotations


def hostsfile_entries(job) -> list[str]:
    """One line per task on each node of the job (the original's /var/hostsfile)."""
    return [node for node in job.nodes for _ in range(job.tasks_per_node.get(node, 1))]


def make_spec(cfg, args_image_request: str, volume: str, module: str, image: str, uid: int,
              hosts: list[str] | None, node: str, scope: str, sshd_addrs: dict[str, str] | None = None,
              sshd_port: int = 0, job_id: int = 0, gpus: tuple[int, ...] | None = None):
    """The ContainerSpec for this job or step on this node; everything checked again here
    with the user's rights (nothing from the submit side is trusted). `sshd_addrs` (node ->
    Slurm NodeAddr) and `sshd_port` when the job gets the sshd: /etc/hosts then maps the
    job's nodes to their addresses, /etc/ssh/ssh_config sends ssh to them to the job's sshd,
    and PATH ends with /opt/udiImage/bin (ssh, scp). `gpus`: the job's or step's GPUs on
    this node, from Slurm (runtime.gpu.allocated), for the GPU module."""
    from runtime import spec as rspec
    from runtime import volumes as rvolumes
    from shifter_site import imagefiles
    from shifter_site.access import check_access

    user = rspec.user_from_host(uid, cfg.max_group_count)
    if args_image_request.startswith("local:"):  # checked again here, as root, and must give `image`
        from runtime import localimage
        record = localimage.record(cfg, args_image_request, image)
    else:
        record = imagefiles.read_record(cfg.image_dir, image)
    check_access(record, user.uid, [user.gid, *user.gids])
    vols = tuple(rvolumes.parse(volume)) if volume else ()
    extra = {}
    if sshd_addrs is not None:
        from shifter_wlm import sshplan
        extra["host_addrs"] = sshplan.host_addrs(sshd_addrs)
        extra["etc_files"] = ((sshplan.SSH_CONFIG, sshplan.ssh_config(job_id, sshd_addrs, sshd_port)),)
    spec = rspec.from_config(cfg, record, user, volumes=vols, module=module or None, hosts=hosts,
                             image_request=args_image_request, hostname=node, scope=scope, gpus=gpus, **extra)
    from runtime.modules import check_host_files
    check_host_files(spec.modules, cfg)
    if sshd_addrs is not None:
        from runtime.frozen import replace
        from shifter_wlm.sshd import UDI_BIN
        spec = replace(spec, site_env=(*spec.site_env, rspec.SiteEnv(append=(("PATH", UDI_BIN),))))
    return spec


def job_record(job_id: int, uid: int, spec, key: str, state: str, message: str = "", volume: str = "",
               module: str = "", image_id: str = "", sshd_port: int = 0, sshd_addrs: dict[str, str] | None = None,
               sshd_error: str = ""):
    """The job (or step-level) record of a container on this node; it embeds the entering
    spec (runtime.spec.Entering) so that steps enter without the site config."""
    from shifter_wlm.jobs import JobRecord

    return JobRecord(
        job_id=job_id, uid=uid, key=key, image_id=spec.image_id if spec else image_id,
        state=state, message=message, image_request=spec.image_request if spec else "",
        volume=volume, module=module, entering=spec.entering().to_data() if spec else None,
        gpus=list(spec.gpus) if spec else [], sshd_port=sshd_port, sshd_addrs=sshd_addrs, sshd_error=sshd_error,
    )

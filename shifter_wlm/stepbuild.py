"""A step-level container: built by a step's slurmstepd (init_post_opt) when the step asks for
another image, volumes or modules than its job's container on the node (`srun --image=OTHER
shifter`, `srun shifter -i OTHER`, `shifter -V ...`), and torn down with the step
(`shifter_wlm.task.step_exit`). Imported only then: a step joining its job's container never
loads this module or the builder."""

from __future__ import annotations

from shifter_site.errors import StepError


def build(cfg, run_dir: str, job_id: int, step_id: int, uid: int, image: str, request: str, volume: str,
          module: str, node: str, gpus: tuple[int, ...] | None = None):
    """Build this step's container and record it as `<job>.<step>` on the node; returns
    (key, job record, record name)."""
    from runtime import build as builder
    from shifter_site import logs
    from shifter_wlm import containers, jobs, slurm

    log = logs.get("step")
    name = f"{job_id}.{step_id}"
    with logs.step(log, "step_container", job=job_id, step=step_id, node=node, image=image) as info:
        hosts = containers.hostsfile_entries(slurm.job_info(job_id))
        full = containers.make_spec(cfg, request, volume, module, image, uid, hosts, node, scope=f"step-{name}",
                                    gpus=gpus)
        check_cache_per_job(cfg, run_dir, job_id, full)
        key = full.build_key()
        info["key"] = key
        jobs.write(run_dir, name, containers.job_record(job_id, uid, full, key, "building", volume=volume, module=module))
        try:
            builder.build(full, run_dir)  # tears down after itself when it fails
        except BaseException:
            jobs.remove(run_dir, name)  # no epilog may come (a job without --image)
            raise
        record = containers.job_record(job_id, uid, full, key, "ready", volume=volume, module=module)
        jobs.write(run_dir, name, record)
    return key, record, name


def check_cache_per_job(cfg, run_dir: str, job_id: int, spec) -> None:
    """The perNodeCache limit holds per job and node: this step's caches plus those the
    job's other containers on this node still hold."""
    from shifter_wlm import jobs

    asked = sum(v.cache.size for v in spec.volumes if v.cache)
    if not asked:
        return
    held, limit = jobs.cache_in_use(run_dir, job_id), cfg.per_node_cache.size_limit_bytes
    if held + asked > limit:
        raise StepError(f"perNodeCache: this step asks for {asked} bytes and job {job_id} already holds {held} "
                        f"bytes on this node; the limit per job and node is {limit} bytes: ask for less")

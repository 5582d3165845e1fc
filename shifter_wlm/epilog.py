"""Epilog (root, once per node of a job with --image): stop the job's sshd (normally gone
already with the job's extern step) and what still runs in the job's container, tear it
down, forget the job. Idempotent, and correct after a prolog that failed or was killed
half-way. It never fails the hook: a failed epilog drains
the node, so problems are logged for the admin instead.

`forget` is the one way a job leaves a node: the epilog runs it for its own job, and the
next prolog on the node for a job whose epilog never ran (shifter_wlm/leftovers.py).
"""

from __future__ import annotations

import os


def forget(run_dir: str, job_id: int, node: str, log=None, cfg=None) -> dict:
    """Remove job `job_id` from this node: stop its sshd, tear down each of its containers
    that no other job's record uses, end its image use at the gateway (`cfg` given), and
    only then remove its job and step records. Records go last so that a hook killed at any
    step (kill -9, the OOM killer) leaves them on disk: the next prolog on the node finds the
    job dead and runs this again (shifter_wlm/leftovers.py); every step is idempotent. `log`
    None logs no event per step (the caller logs one for all). Returns what was done."""
    import contextlib

    from runtime import teardown
    from shifter_site import logs
    from shifter_wlm import jobs

    def step(event: str, **fields):
        return logs.step(log, event, job=job_id, node=node, **fields) if log else contextlib.nullcontext({})

    done: dict = {"records": [], "containers": [], "sshd_stopped": []}
    mine = [n for n in jobs.names(run_dir) if n == str(job_id) or n.startswith(f"{job_id}.")]
    records = {name: jobs.read(run_dir, name) for name in mine}
    for record in records.values():
        if record is not None and record.sshd_pid and record.key:
            from shifter_wlm import sshd
            with step("sshd_stop", pid=record.sshd_pid) as info:
                info["stopped"] = sshd.stop(record.sshd_pid, os.path.join(run_dir, record.key, "ns"))
            if info["stopped"]:
                done["sshd_stopped"].append(record.sshd_pid)
    others = jobs.keys_in_use(run_dir, excluding=set(mine))  # another job shares the container
    for name, record in records.items():
        if record is not None and record.key and record.key not in others and record.key not in done["containers"]:
            with step("teardown", key=record.key, record=name):
                if teardown.teardown(run_dir, record.key):
                    done["containers"].append(record.key)
    if cfg is not None and records:
        from shifter_wlm import imageuse
        imageuse.ended(cfg, job_id, node)
    try:
        os.unlink(os.path.join(run_dir, "jobs", f"{job_id}.sshd.log"))
    except FileNotFoundError:
        pass
    from shifter_wlm import extern
    extern.unmark(job_id)
    for name in mine:
        jobs.remove(run_dir, name)
        done["records"].append(name)
    return done


def run(spank, args, options) -> None:
    from shifter_site import config, logs
    from shifter_wlm import jobs

    log = logs.get("epilog")
    job_id = spank.job_id()
    try:
        node = jobs.node_name()
        cfg = config.load(args.shifter_config, privileged=True)
        forget(jobs.node_dir(cfg.run_dir, node), job_id, node, log, cfg)
    except Exception as err:  # noqa: BLE001 - logged, never drains the node
        log.error("epilog_failed", job=job_id, error=f"{type(err).__name__}: {err}")

"""Epilog (root, once per node of a job with --image): stop the job's sshd and what still
runs in the job's container, tear it down, forget the job. Idempotent, and correct after a
prolog that failed or was killed half-way. It never fails the hook: a failed epilog drains
the node, so problems are logged for the admin instead.
"""

from __future__ import annotations

import os


def run(spank, args, options) -> None:
    from runtime import teardown
    from shifter_site import config, logs
    from shifter_wlm import jobs
    from shifter_wlm.prolog import node_name

    log = logs.get("epilog")
    job_id = spank.job_id()
    try:
        node = node_name()
        cfg = config.load(args.shifter_config, privileged=True)
        run_dir = jobs.node_dir(cfg.run_dir, node)
        mine = [n for n in jobs.names(run_dir) if n == str(job_id) or n.startswith(f"{job_id}.")]
        for name in mine:
            record = jobs.read(run_dir, name)
            if record is None:
                continue
            if record.sshd_pid and record.key:
                from shifter_wlm import sshd
                with logs.step(log, "sshd_stop", job=job_id, node=node, pid=record.sshd_pid) as info:
                    info["stopped"] = sshd.stop(record.sshd_pid, os.path.join(run_dir, record.key, "ns"))
            jobs.remove(run_dir, name)
            if record.key and record.key not in jobs.keys_in_use(run_dir):
                with logs.step(log, "teardown", job=job_id, node=node, key=record.key, record=name):
                    teardown.teardown(run_dir, record.key)
        try:
            os.unlink(os.path.join(run_dir, "jobs", f"{job_id}.sshd.log"))
        except FileNotFoundError:
            pass
        if mine:
            from shifter_wlm import imageuse
            imageuse.ended(cfg, job_id, node)
    except Exception as err:  # noqa: BLE001 - logged, never drains the node
        log.error("epilog_failed", job=job_id, error=f"{type(err).__name__}: {err}")

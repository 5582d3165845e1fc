"""The leftovers of jobs whose epilog never ran on this node (slurmd killed during the job,
an epilog killed, a node rebooted with its run directory on disk): the next prolog on the
node collects them, so that nothing of a dead job stays mounted or attached, and no later
prolog or step takes its record for a live job's (its sshd on the node's port).

Only jobs Slurm no longer runs are collected: those it reports ended (slurm.ENDED_STATES)
or has forgotten. A job it still runs, one completing (its epilog may be running now), a
pending or requeued one, and every job when Slurm cannot answer, are left alone. A job is
removed as its own epilog would remove it (epilog.forget): a recorded sshd pid is signalled
only while it is still a process inside the job's pinned container.
"""

from __future__ import annotations


def dead_jobs(run_dir: str, job_id: int) -> list[int]:
    """Jobs other than `job_id` with records on this node that Slurm no longer runs."""
    from shifter_wlm import jobs, slurm

    others = {int(n.split(".")[0]) for n in jobs.names(run_dir) if n.split(".")[0].isdigit()} - {job_id}
    if not others:
        return []
    states = slurm.job_states(others)
    return sorted(j for j in others if j not in states or states[j] in slurm.ENDED_STATES)


def collect(run_dir: str, node: str, job_id: int, log, cfg=None) -> None:
    """Collect what dead jobs left on this node, logged as one `leftovers` event (none when
    the node holds no other job's record; `cfg` given: their image uses at the gateway end
    too). Never raises: a failure is logged, and the job
    that is starting runs anyway."""
    from shifter_site import logs
    from shifter_site.errors import ShifterError
    from shifter_wlm import epilog, jobs

    if not any(n.split(".")[0] != str(job_id) for n in jobs.names(run_dir)):
        return
    try:
        with logs.step(log, "leftovers", job=job_id, node=node) as info:
            dead = dead_jobs(run_dir, job_id)
            info.update(jobs=dead, records=[], containers=[], sshd_stopped=[])
            failed = []
            for dead_job in dead:
                try:
                    done = epilog.forget(run_dir, dead_job, node, cfg=cfg)
                except (ShifterError, OSError, ValueError) as err:
                    failed.append(f"job {dead_job}: {err}")
                    continue
                for what, items in done.items():
                    info[what] += items
            if failed:
                raise ShifterError("; ".join(failed))
    except (ShifterError, OSError, ValueError):
        pass  # logged by the step

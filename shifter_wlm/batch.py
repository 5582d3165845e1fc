"""`shifter` typed in a job's batch script (or an salloc shell), outside any step.

The job's container on this node (with its perNodeCache and /var/hostsfile) lives in a
namespace only root can join, and the batch script itself must stay on the host (it runs
srun, reads host files). So `shifter ARGS` there becomes a one-task step on this node,
`srun -N1 -n1 -w <this node> --overlap shifter ARGS`: the step hook puts it into the job's
container exactly as for `srun shifter`. stdin, stdout, stderr and the exit code pass
through srun. Standard library only: the `shifter` command calls this first.
"""

from __future__ import annotations

import os

STEP_OPTIONS = ("--nodes=1", "--ntasks=1", "--overlap", "--quiet", "--mpi=none", "--cpu-bind=none")


def step_argv(argv: list[str], env: dict[str, str]) -> list[str] | None:
    """The srun command that runs `shifter argv` as a step on this node, or None when this
    is not a job's batch script (or salloc shell) or srun is not there."""
    if os.geteuid() == 0 or not env.get("SLURM_JOB_ID") or env.get("SLURM_STEP_ID"):
        return None
    node = env.get("SLURMD_NODENAME")
    import shutil  # only inside a job: a plain launch does not pay for it

    srun = shutil.which("srun", path=env.get("PATH"))
    if not node or not srun:
        return None
    return [srun, *STEP_OPTIONS, f"--nodelist={node}", "shifter", *argv]


def main(argv: list[str] | None = None) -> int:
    """The `shifter` command: a job's batch script goes through srun (above); anything else
    is the runtime's own command line (rootless as a user, privileged as root)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    srun = step_argv(args, dict(os.environ))
    if srun is not None:
        os.execv(srun[0], srun)
    from runtime.cli import main as runtime_main

    return runtime_main(args)

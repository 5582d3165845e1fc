"""`shifter` typed in a job's batch script, outside any step.

The job's container on this node (with its perNodeCache and /var/hostsfile) lives in a
namespace only root can join, and the batch script itself must stay on the host (it runs
srun, reads host files). So `shifter ARGS` there becomes a one-task step on this node,
`srun -N1 -n1 -w <this node> --overlap shifter ARGS`: the step hook puts it into the job's
container exactly as for `srun shifter`. stdin, stdout, stderr and the exit code pass
through srun; srun's own line about a task's non-zero exit is left out (the user typed
`shifter`, and gets the exit code). Standard library only: the `shifter` command calls this first.

In an salloc shell (on the login node, no SLURMD_NODENAME) `shifter` runs right there,
rootless, as outside any job: it says so in one line on stderr.
"""

from __future__ import annotations

import os

STEP_OPTIONS = ("--nodes=1", "--ntasks=1", "--overlap", "--quiet", "--mpi=none")
# --cpu-bind=none keeps the one task from being bound to one CPU; on a cluster without
# task binding (TaskPlugin=task/none, Slurm's default) srun would only say, for every
# `shifter` line, "cluster configuration lacks support for cpu binding"
NO_BINDING = "--cpu-bind=none"


def cluster_binds_tasks(env: dict[str, str]) -> bool:
    """Whether Slurm's configuration has a task plugin that binds (srun's own test: a
    TaskPlugin other than task/none). Read from slurm.conf; unreadable: assume it binds."""
    path = env.get("SLURM_CONF") or "/etc/slurm/slurm.conf"
    plugin = "task/none"
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, sep, value = line.split("#", 1)[0].partition("=")
                if sep and key.strip().lower() == "taskplugin":
                    plugin = value.strip()
    except OSError:
        return True
    return plugin != "task/none"


def step_argv(argv: list[str], env: dict[str, str]) -> list[str] | None:
    """The srun command that runs `shifter argv` as a step on this node, or None when this
    is not a job's batch script or srun is not there."""
    if os.geteuid() == 0 or not env.get("SLURM_JOB_ID") or env.get("SLURM_STEP_ID"):
        return None
    node = env.get("SLURMD_NODENAME")
    if not node:
        return None
    import shutil  # only inside a job: a plain launch does not pay for it

    srun = shutil.which("srun", path=env.get("PATH"))
    if not srun:
        return None
    binding = (NO_BINDING,) if cluster_binds_tasks(env) else ()
    return [srun, *STEP_OPTIONS, *binding, f"--nodelist={node}", "shifter", *argv]


EXIT_NOTE = "srun: error: "  # srun's "srun: error: NODE: task 0: Exited with exit code N"
FORWARDED = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")


def is_exit_note(line: bytes) -> bool:
    """srun's own line for a task that exited non-zero ("srun: error: n1: task 0: Exited with
    exit code 1"): the user typed `shifter CMD`, not srun, and gets CMD's exit code anyway."""
    text = line.rstrip(b"\n").decode(errors="replace")
    if not text.startswith(EXIT_NOTE):
        return False
    _node, sep, rest = text[len(EXIT_NOTE):].partition(": task ")
    task, sep2, code = rest.partition(": Exited with exit code ")
    return bool(sep and sep2) and task.isdigit() and code.isdigit()


def run_step(srun: list[str]) -> int:
    """Run the step, with stdin and stdout its own and its stderr relayed as it comes, less
    srun's line about the task's exit code (which becomes ours). Signals the batch script's
    `shifter` gets go to srun, as if it were srun."""
    import signal

    # the signals to pass on: not those the script ignores (`shifter CMD &`): srun inherits
    # those ignored, as it did when `shifter` exec'd it. Blocked from before the fork until
    # the handlers are in place, so that none arriving in between is lost or kills us alone
    forwarded = [getattr(signal, name) for name in FORWARDED
                 if signal.getsignal(getattr(signal, name)) is not signal.SIG_IGN]
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, forwarded)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(read_end)
        os.dup2(write_end, 2)
        os.close(write_end)
        try:
            os.execv(srun[0], srun)
        except OSError as err:
            os.write(2, f"shifter: cannot run {srun[0]}: {err.strerror}\n".encode(errors="replace"))
        os._exit(127)
    os.close(write_end)
    for signum in forwarded:
        signal.signal(signum, lambda signum, _frame: os.kill(pid, signum))
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    held = b""
    while True:
        chunk = os.read(read_end, 65536)
        if not chunk:
            break
        *lines, held = (held + chunk).split(b"\n")
        out = b"".join(line + b"\n" for line in lines if not is_exit_note(line + b"\n"))
        if held and not (held.startswith(EXIT_NOTE.encode()) or EXIT_NOTE.encode().startswith(held)):
            out, held = out + held, b""  # a partial line that is not srun's: shown now
        if out:
            os.write(2, out)
    if held and not is_exit_note(held):
        os.write(2, held)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def outside_the_nodes(env: dict[str, str], euid: int | None = None) -> str | None:
    """One line for `shifter` typed in an salloc shell: it runs here, rootless, not on the
    allocated nodes in the job's container (None: not such a shell)."""
    if (os.geteuid() if euid is None else euid) == 0 or not env.get("SLURM_JOB_ID") or env.get("SLURM_STEP_ID") or env.get("SLURMD_NODENAME"):
        return None
    return (f"shifter: note: this shell of job {env['SLURM_JOB_ID']} is not on its nodes: running here, rootless, "
            "without the job's container (no /var/hostsfile, no perNodeCache); use srun shifter ... to run on them")


def main(argv: list[str] | None = None) -> int:
    """The `shifter` command: a job's batch script goes through srun (above); anything else
    is the runtime's own command line (rootless as a user, privileged as root)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    env = dict(os.environ)
    srun = step_argv(args, env)
    if srun is not None:
        return run_step(srun)
    note = outside_the_nodes(env)
    if note and "-h" not in args[:1] and "--help" not in args[:1]:
        sys.stderr.write(note + "\n")
    from runtime.cli import main as runtime_main

    return runtime_main(args)

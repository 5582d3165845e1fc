"""A test-only fault point for the Slurm prolog and epilog, never part of the package.

tests/test_faults_hooks.py installs this file into the installed venv's site-packages with a
.pth line that imports it, for those tests only (removed after them). In a process started as
`slurmstepd spank prolog|epilog` (the hooks' own process), when the control file exists and
names that hook and a step (`prolog after spec`, `epilog before teardown`), it SIGKILLs the
process there, once (the control file is renamed first, so a retry runs untouched). Steps
are the structured events the hooks log (shifter_site.logs.step), so a kill lands exactly
between two steps, as an admin's `kill -9` or the OOM killer could, and nothing in the
production code knows about it. Every other process returns at once.
"""

import os


def install(control: str) -> None:
    if not os.path.exists(control):
        return
    try:
        argv = open("/proc/self/cmdline", "rb").read().split(b"\0")
    except OSError:
        return
    if len(argv) < 3 or os.path.basename(argv[0]) != b"slurmstepd" or argv[1] != b"spank":
        return
    hook = argv[2].decode()
    from shifter_site import logs

    def fire(when: str, event: str) -> None:
        try:
            with open(control) as f:
                wanted = f.read().strip()
        except OSError:
            return
        if wanted != f"{hook} {when} {event}":
            return
        try:
            os.rename(control, control + ".fired")  # once: a requeued job's prolog runs untouched
        except OSError:
            return
        os.kill(os.getpid(), 9)

    enter, leave = logs._Step.__enter__, logs._Step.__exit__

    def step_enter(self):
        fire("before", self.event)
        return enter(self)

    def step_exit(self, *exc):
        result = leave(self, *exc)
        fire("after", self.event)
        return result

    logs._Step.__enter__, logs._Step.__exit__ = step_enter, step_exit

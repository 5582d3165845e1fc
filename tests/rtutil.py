"""Helpers for runtime tests: host state snapshots and running a command in a container."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

from runtime import enter


def mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split(" ")[4] for line in f]


@contextlib.contextmanager
def released(base: Path, run_dir: str | os.PathLike | None = None):
    """Scope of a fixture's scratch tree: on the way out (after its tests, or when its own
    setup raised) every container under `run_dir` is torn down and any mount left under
    `base` is detached before the tree is removed, so rmtree never walks into a mount."""
    try:
        yield
    finally:
        try:
            if run_dir is not None and os.path.isdir(run_dir):
                from runtime import teardown
                teardown.teardown_all(str(run_dir))
        finally:
            inside = [m for m in mount_points() if m == str(base) or m.startswith(f"{base}/")]
            for point in sorted(set(inside), key=len, reverse=True):
                subprocess.run(["umount", "-l", point], capture_output=True)
            shutil.rmtree(base, ignore_errors=True)


def host_state(run_dir: str, cache_dir: str | None = None) -> dict:
    """What a container may leave behind: mounts, loop devices, run dir, cache files, helpers."""
    with open("/proc/self/mountinfo") as f:
        mounts = sorted(line.split(" ")[4] for line in f)
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout.splitlines()
    procs = subprocess.run(["pgrep", "-a", "-f", "squashfuse|mkfs"], capture_output=True, text=True).stdout
    return {
        "mounts": mounts,
        "loops": sorted(loops),
        "run_dir": sorted(os.listdir(run_dir)) if os.path.isdir(run_dir) else None,
        "cache": sorted(n for n in os.listdir(cache_dir) if n.startswith("shifter-cache")) if cache_dir else [],
        "procs": sorted(line for line in procs.splitlines() if "pgrep" not in line and "<defunct>" not in line),
    }


def processes_with(argument: str) -> list[str]:
    """Pids of the processes one of whose arguments is exactly `argument` (e.g. a hook's
    `sleep 3217`, to prove that nothing it started is left)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argument.encode() in cmdline:
                found.append(entry.name)
    return found


def settled(run_dir: str, before: dict, timeout: float = 5.0) -> dict:
    """host_state once it equals `before`, or after `timeout` (a killed squashfuse is reaped
    a moment later by this VM's init), for tests that compare before and after."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        now = host_state(run_dir)
        if now == before or time.monotonic() > deadline:
            return now
        time.sleep(0.05)


def run_in(container, spec, argv: list[str], env: dict | None = None, cwd: str = "/") -> tuple[int, str, str]:
    """Join a pinned container in a child, drop to the spec's user, exec argv; (rc, out, err)."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.chdir(cwd)
            enter.join(container.ns_path)
            enter.exec_command(spec, argv, env if env is not None else {"PATH": "/bin"}, cwd)
        except BaseException as err:  # noqa: BLE001 - report to the parent
            os.write(2, f"child error: {err}\n".encode())
        os._exit(127)
    os.close(out_w)
    os.close(err_w)
    with os.fdopen(out_r) as o, os.fdopen(err_r) as e:
        out, err = o.read(), e.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out, err

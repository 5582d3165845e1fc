"""Scripts a `shifter` step places in its container (its own tmpfs, gone with the job): the
batch script for --ccm, and a one-line script for a command longer than the step's command
line. Used inside the container, where nothing of the host's Python can be imported any more:
shifter_wlm.task imports this module before it enters (only for such a step)."""

from __future__ import annotations

import os

from shifter_site.errors import ShifterError

CCM_SCRIPT = "/var/run/udiImage/ccm/job-script"  # the batch script's copy, in the container
EXEC_DIR = "/var/run/udiImage/exec"  # in the container: scripts for commands longer than Slurm's argv


class ScriptError(ShifterError):
    """The step's command cannot be placed in the container; the message says why."""


def place_exec_script(command: list[str], uid: int, gid: int) -> str:
    """A script, in the container's own tmpfs, that execs `command` (for the user: 0500).
    Called inside the container: nothing may be imported here (the host's modules are gone)."""
    if not os.path.exists("/bin/sh"):
        raise ScriptError(f"the command ({len(command)} words) is longer than the step's command line, and the "
                        "image has no /bin/sh to start it; give the command explicitly after shifter's options")
    os.makedirs(EXEC_DIR, mode=0o755, exist_ok=True)
    path = f"{EXEC_DIR}/{os.getpid()}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o500)
    try:
        quoted = " ".join("'" + word.replace("'", "'\\''") + "'" for word in command)
        os.write(fd, f"exec {quoted}\n".encode(errors="surrogateescape"))
        os.fchown(fd, uid, gid)
    finally:
        os.close(fd)
    return path


def read_script(path: str) -> bytes:
    """The batch script, from slurmd's spool directory (outside the image)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def place_script(script: bytes, uid: int, gid: int) -> str:
    """Write the batch script into the container (its own tmpfs, gone with the job), for the
    user to execute; returns its path there."""
    directory = os.path.dirname(CCM_SCRIPT)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    tmp = f"{CCM_SCRIPT}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o500)
    try:
        os.write(fd, script)
        os.fchown(fd, uid, gid)
    finally:
        os.close(fd)
    os.replace(tmp, CCM_SCRIPT)
    return CCM_SCRIPT

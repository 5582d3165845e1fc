"""Root scripts the site runs while a container is built, outside it, as root: the site's
mount hooks (`site_pre_mount_hook`, `site_post_mount_hook`: the original's sitePreMountHook
and sitePostMountHook, around the site mounts) and modules' root hooks (after them).
(Module user hooks run inside, as the user: shifter_wlm.task.)

Each runs as the original ran them, `/bin/sh SCRIPT` with cwd = the container root, but
with a clean environment (nothing of the user's or the caller's), stdin closed, in a
process group of its own killed whole after `hook_timeout` seconds, and only if the script
and every directory above it are root's alone (runtime.trusted). A failure or a hang stops
the build with one line; the builder then tears down what was made (runtime.build).
"""

from __future__ import annotations

import os
import signal
import stat
from typing import TYPE_CHECKING

from runtime import syscalls as sc
from runtime.cleanenv import SAFE_PATH
from runtime.errors import BuildError

if TYPE_CHECKING:
    from runtime.spec import ContainerSpec


def run_root_hook(module: str, hook: str, root: str, spec: ContainerSpec) -> None:
    """A module's root hook (reference: runs outside the container as root), after the
    site and module mounts and before the user's volumes."""
    run_root_script(f"module {module!r}: root hook {hook}", hook, root, spec, {"SHIFTER_MODULE": module})


def run_site_hook(which: str, hook: str, root: str, spec: ContainerSpec) -> None:
    """The site's pre- or post-mount hook (`which`: its config key)."""
    run_root_script(f"{which} {hook}", hook, root, spec, {})


def _check_script(what: str, hook: str) -> None:
    from runtime.trusted import UntrustedPath, open_trusted

    try:
        fd = open_trusted(hook)
    except UntrustedPath as err:
        raise BuildError(f"{what}: {err}: root runs only scripts that root alone can change; ask the admins") from None
    except OSError as err:
        raise BuildError(f"{what}: {err.strerror}; ask the admins") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BuildError(f"{what} is not a regular file; ask the admins")
    finally:
        os.close(fd)


def _tail(handle) -> str:
    """The script's last line of output (of its last 64 KiB), for the one-line error."""
    handle.seek(max(0, handle.seek(0, os.SEEK_END) - 65536))
    said = handle.read().decode("utf-8", "replace").strip().splitlines()
    return f": {said[-1][:200]}" if said else ""


def run_root_script(what: str, hook: str, root: str, spec: ContainerSpec, extra: dict[str, str]) -> None:
    """`/bin/sh HOOK` as root, cwd `root`, a clean environment plus `extra`; BuildError
    (one line: `what`, the exit status or the timeout, the script's last line of output)."""
    import subprocess
    import tempfile

    _check_script(what, hook)
    env = {"PATH": SAFE_PATH, "SHIFTER_ROOT": root, "SHIFTER_IMAGE": spec.image_id,
           "SHIFTER_UID": str(spec.user.uid), "SHIFTER_GID": str(spec.user.gid), "SHIFTER_USER": spec.user.name,
           **extra}

    def child() -> None:
        os.setsid()  # its own process group: a timeout kills what it started too
        sc.parent_death_signal(9)

    # output to a file, not a pipe: a background process left holding a pipe cannot hang us
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(["/bin/sh", hook], cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=out, preexec_fn=child, close_fds=True)
        try:
            status = proc.wait(timeout=spec.hook_timeout)
        except subprocess.TimeoutExpired:
            status = None
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # whatever it left running
            except ProcessLookupError:
                pass
            proc.wait()
        if status is None:
            raise BuildError(f"{what} did not finish within {spec.hook_timeout:g} s (hook_timeout) and was "
                             f"killed{_tail(out)}; ask the admins")
        if status != 0:
            raise BuildError(f"{what} failed (exit status {status}){_tail(out)}")

"""Module root hooks: a site script run as root, outside the container, while it is built.
(Module user hooks run inside, as the user: shifter_wlm.task.)"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

from runtime import syscalls as sc
from runtime.cleanenv import SAFE_PATH
from runtime.errors import BuildError

if TYPE_CHECKING:
    from runtime.spec import ContainerSpec


def run_root_hook(module: str, hook: str, root: str, spec: ContainerSpec) -> None:
    """A module's root hook (reference: runs outside the container as root), as the
    original ran site hooks: `/bin/sh HOOK` with cwd = the container root, here after the
    site and module mounts and before the user's volumes, with a clean environment. The
    script must be root's alone: root must not run what a user could have edited."""
    import subprocess

    try:
        st = os.stat(hook)
    except OSError as err:
        raise BuildError(f"module {module!r}: root hook {hook}: {err.strerror}; ask the admins") from None
    if st.st_uid != 0 or st.st_mode & 0o022 or not stat.S_ISREG(st.st_mode):
        raise BuildError(f"module {module!r}: root hook {hook} is not a root-owned file writable only by "
                         "root; ask the admins")
    env = {"PATH": SAFE_PATH, "SHIFTER_MODULE": module, "SHIFTER_ROOT": root, "SHIFTER_IMAGE": spec.image_id,
           "SHIFTER_UID": str(spec.user.uid), "SHIFTER_GID": str(spec.user.gid), "SHIFTER_USER": spec.user.name}
    proc = subprocess.run(["/bin/sh", hook], cwd=root, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, errors="replace", preexec_fn=lambda: sc.parent_death_signal(9))
    if proc.returncode != 0:
        said = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        detail = f": {said[-1][:200]}" if said else ""
        raise BuildError(f"module {module!r}: root hook {hook} failed (exit status {proc.returncode}){detail}")

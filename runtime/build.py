"""Build a container: run the setup phases (runtime.phases) in a new mount namespace,
pinned under the node's run dir (runtime.pinned; root, the Slurm prolog) or private to the
caller (the `shifter` CLI as root with no matching pinned container).

Lean imports: the CLI imports this module as root; nothing here is on a rootless launch
(runtime.rootless runs the phases itself).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable

from runtime import binds, mountinfo, phases, pinned
from runtime import syscalls as sc
from runtime.cleanenv import SAFE_PATH, scrub_environment  # noqa: F401  (callers' names)
from runtime.errors import BuildError
from runtime.pinned import Container, find  # noqa: F401  (callers' names)
from runtime.steps import Steps, runtime_log

if TYPE_CHECKING:
    from runtime.spec import ContainerSpec

_DEFAULT: Any = object()  # log: the runtime's logger unless given (None: no log)


def build(spec: ContainerSpec, run_dir: str, *, log: Any = _DEFAULT,
          fault: Callable[[str], None] | None = None) -> Container:
    """Build (or find) the pinned container for `spec` under `run_dir`. Root only.

    A build that fails, or is killed anywhere, is cleaned by runtime.teardown.teardown
    (called here on failure; after a kill, by the epilog or the next build of the key).
    `fault(step)` runs after each step (runtime.steps).
    """
    from runtime import teardown as td

    if os.geteuid() != 0:
        raise BuildError("building a pinned container needs root (the Slurm prolog runs it)")
    scrub_environment()
    key = spec.build_key()
    existing = find(run_dir, key)
    if existing:
        return existing
    user_fds: list[int] = []
    os.makedirs(run_dir, 0o755, exist_ok=True)
    state = os.path.join(run_dir, key)
    lock = td.lock(run_dir, key)
    try:
        existing = find(run_dir, key)
        if existing:
            return existing
        if os.path.lexists(state):
            td.teardown(run_dir, key, locked=True)  # a leftover of a crashed build
        steps = Steps(spec, runtime_log() if log is _DEFAULT else log, fault, key=key)
        with steps("state_dir"):
            pinned.make_state_dir(spec, state, key)
        # thread-self, not self: in slurmstepd the hook may run in a thread other than the
        # main one, and /proc/self names the main thread's namespace, not this thread's (its
        # pin then binds the host's own namespace: EINVAL)
        host_ns = os.open("/proc/thread-self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        cwd = os.open(".", os.O_PATH | os.O_CLOEXEC)
        new_ns = -1
        try:
            with steps("namespace") as info:
                info.update(pinned.new_namespace(host_ns))  # one the kernel lets us pin
                sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
                mountinfo.detach_under(os.path.realpath(run_dir))
            with steps("resolve_volumes"):
                # after unshare: a bind source must be a mount of the namespace it goes into
                user_fds = binds.resolve_sources_as(spec.user, [v for v in spec.volumes if not v.cache])
            phases.populate(spec, os.path.join(state, "root"), steps, key=key, privileged=True,
                            source_fds=user_fds)
            with steps("pivot"):
                phases.pivot_into(os.path.join(state, "root"))
                new_ns = os.open("/proc/thread-self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
            sc.setns(host_ns, sc.CLONE_NEWNS)
            os.fchdir(cwd)
            with steps("pin"):
                pinned.pin(state, new_ns)
            with steps("record"):
                pinned.write_record(spec, state, key)
        except BaseException:
            _back_home(host_ns, cwd)
            td.teardown(run_dir, key, locked=True)
            raise
        finally:
            for fd in (host_ns, cwd, new_ns, *user_fds):
                if fd >= 0:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
        return Container(key, state)
    finally:
        td.unlock(run_dir, key, lock)


def _back_home(host_ns: int, cwd: int) -> None:
    try:
        sc.setns(host_ns, sc.CLONE_NEWNS)
        os.fchdir(cwd)
    except OSError:
        pass


def build_private(spec: ContainerSpec, run_dir: str, *, log: Any = None) -> None:
    """Build the container in a new mount namespace of this process and pivot into it (the
    `shifter` CLI as root with no matching pinned container). Gone when the process ends."""
    scrub_environment()
    key = spec.build_key()
    user_fds: list[int] = []
    try:
        sc.unshare(sc.CLONE_NEWNS)
        sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
        user_fds = binds.resolve_sources_as(spec.user, [v for v in spec.volumes if not v.cache])
        mountpoint = run_dir if os.path.isdir(run_dir) else "/mnt"
        mountinfo.detach_under(os.path.realpath(mountpoint))
        phases.populate(spec, mountpoint, Steps(spec, log), key=key, privileged=True, source_fds=user_fds)
        phases.pivot_into(mountpoint)
    finally:
        for fd in user_fds:
            os.close(fd)

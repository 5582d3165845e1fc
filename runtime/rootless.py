"""`shifter` as a plain user outside Slurm: a user namespace that maps only the user's own
uid and gid, the image through squashfuse, the same root layout, pivot_root, exec.

squashfuse serves the image from a child that gets SIGKILL when the container's command
ends (parent-death signal), so nothing is left running. Where the host does not allow this
(user namespaces off, /dev/fuse not usable, squashfuse missing), the error names the cause.
"""

from __future__ import annotations

import os

from runtime import binds, phases
from runtime import syscalls as sc
from runtime.cleanenv import SAFE_PATH
from runtime.errors import BuildError
from runtime.steps import Steps
from shifter_site.errors import ShifterError

TYPE_CHECKING = False  # a hot path: no `typing` import (docs/architecture.md, decision 13)
if TYPE_CHECKING:
    from typing import Any

    from runtime.spec import ContainerSpec


class RootlessError(ShifterError):
    """Rootless containers are impossible on this host; the message says why."""

    exit_code = 69  # EX_UNAVAILABLE


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def check_host() -> str:
    """The squashfuse path, or RootlessError naming what this host lacks."""
    if _read("/proc/sys/kernel/unprivileged_userns_clone") == "0":
        raise RootlessError("cannot run rootless: unprivileged user namespaces are disabled "
                            "(kernel.unprivileged_userns_clone=0); ask the admins, or run inside a Slurm job")
    if _read("/proc/sys/user/max_user_namespaces") == "0":
        raise RootlessError("cannot run rootless: user.max_user_namespaces is 0; ask the admins, "
                            "or run inside a Slurm job")
    # squashfuse_ll (same package, FUSE's low-level API: fewer round trips per file) when there
    squashfuse = _which("squashfuse_ll", SAFE_PATH) or _which("squashfuse", SAFE_PATH)
    if not squashfuse:
        raise RootlessError("cannot run rootless: squashfuse is not installed on this host")
    return squashfuse


def _which(name: str, path: str) -> str | None:
    """shutil.which without importing shutil (a launch pays ~2 ms for it)."""
    for directory in path.split(":"):
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


_daemons: list[int] = []


def _stop_daemons() -> None:
    """On a failure before exec: stop and reap squashfuse ourselves."""
    for pid in _daemons:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except OSError:
            pass
    _daemons.clear()


def _spawn_daemon(argv: list[str], keep_fd: int) -> int:
    """Start argv with only stdio (on /dev/null) and `keep_fd` open, a clean environment,
    and SIGKILL on our death. A bare fork+exec: subprocess (imports and a preexec_fn fork
    through its machinery) cost a launch several ms; posix_spawn cannot set the
    parent-death signal, which is what guarantees no squashfuse outlives the container."""
    null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    parent = os.getpid()
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # child: no Python exceptions may escape from here
        try:
            sc.parent_death_signal(9)
            if os.getppid() != parent:  # the parent died before the signal was armed
                os._exit(1)
            os.dup2(null, 0)
            os.dup2(null, 1)
            os.set_inheritable(keep_fd, True)
            low, high = sorted((keep_fd, ready_w))  # never leak the user's or our other fds
            os.closerange(3, low)
            os.closerange(low + 1, high)
            os.closerange(high + 1, 1 << 20)
            os.execve(argv[0], argv, {"PATH": SAFE_PATH})
        except BaseException as err:  # noqa: BLE001 - report the reason to the parent
            try:
                os.write(ready_w, f"{getattr(err, 'strerror', None) or err}".encode()[:200])
            finally:
                os._exit(127)
    os.close(null)
    os.close(ready_w)
    try:
        failed = os.read(ready_r, 256)  # EOF on a successful exec (the pipe is close-on-exec)
    finally:
        os.close(ready_r)
    if failed:
        os.waitpid(pid, 0)
        raise RootlessError(f"cannot start {argv[0]}: {failed.decode(errors='replace')}")
    return pid


def _squashfuse_mounter(squashfuse: str, fuse_fd_holder: list[int]):
    def mount(squashfs: str, target: str) -> str:
        with open(squashfs, "rb") as f:
            if f.read(4) != b"hsqs":
                raise BuildError(f"{squashfs} is not a squashfs image; re-pull the image")
        fd = fuse_fd_holder[0]
        sc.mount("squashfuse", target, "fuse.squashfuse", sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV,
                 f"fd={fd},rootmode=40000,user_id={os.getuid()},group_id={os.getgid()}")
        _daemons.append(_spawn_daemon([squashfuse, "-f", squashfs, f"/dev/fd/{fd}"], fd))
        os.close(fd)  # only the daemon holds it: if it dies, the mount fails instead of hanging
        fuse_fd_holder[0] = -1
        return os.path.basename(squashfuse)
    return mount


def enter_namespace() -> None:
    """A user + mount namespace mapping only our own uid and gid to themselves."""
    uid, gid = os.getuid(), os.getgid()
    try:
        sc.unshare(sc.CLONE_NEWUSER | sc.CLONE_NEWNS)
    except OSError as err:
        raise RootlessError(f"cannot run rootless: creating a user namespace failed ({err.strerror}); "
                            "user namespaces may be restricted here: ask the admins, or run inside a Slurm job") from None
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"{uid} {uid} 1\n")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"{gid} {gid} 1\n")
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)


def run(spec: ContainerSpec, run_dir: str, argv: list[str], host_env: dict[str, str], cwd: str | None,
        log: Any = None) -> None:
    """Build the container rootless and exec the command in it; never returns."""
    refusal = phases.needs_privilege(spec)
    if refusal:
        raise RootlessError(refusal)
    if spec.local_root is not None:  # a local: tree is bound, no FUSE needed
        squashfuse = ""
    else:
        squashfuse = check_host()
    if squashfuse and not os.access("/dev/fuse", os.R_OK | os.W_OK):
        raise RootlessError("cannot run rootless: /dev/fuse is not readable and writable by you (users "
                            "need mode 0666 on it); ask the admins, or run inside a Slurm job")
    holder = [-1]
    try:
        _run(spec, run_dir, squashfuse, holder, argv, host_env, cwd, log)
    except BaseException:
        _stop_daemons()
        raise


def _run(spec, run_dir, squashfuse, holder, argv, host_env, cwd, log) -> None:
    from runtime.enter import exec_command

    warm = None
    if squashfuse:  # exec would page the command in through FUSE in small, costly reads
        from runtime.prefetch import warm  # imported here: after pivot_root it cannot be found

    try:
        enter_namespace()
        # opened inside the namespace: FUSE refuses a device fd from another user namespace
        if squashfuse:
            holder[0] = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
        user_fds = binds.resolve_sources([v for v in spec.volumes if not v.cache])
        mountpoint = run_dir if os.path.isdir(run_dir) else "/mnt"
        # key: only names perNodeCache files, which rootless refuses (hashing costs ~6 ms of imports)
        phases.populate(spec, mountpoint, Steps(spec, log), key="", privileged=False,
                        image_mounter=_squashfuse_mounter(squashfuse, holder), source_fds=user_fds)
        for fd in user_fds:
            os.close(fd)
        phases.pivot_into(mountpoint)
    finally:
        if holder[0] >= 0:
            os.close(holder[0])
    exec_command(spec, argv, host_env, cwd, set_groups=False, warm=warm)

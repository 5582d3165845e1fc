"""Safe path walking inside a container root being built: one component at a time, never
following a symbolic link, and as the user wherever the user's rights apply (below a host
directory bound into the container). See docs/security.md, "volume targets"."""

from __future__ import annotations

import os
import stat

from runtime.errors import BuildError

STAGE = ".shifter-stage"  # a temporary dir in the new root, removed before anyone enters


def fdpath(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


class Walk:
    """How volume targets are walked: root may look up and create only on the container's
    own mounts (its tmpfs root, the read-only image); on anything else (a host directory
    bound in: /tmp, /var/tmp, a site mount of /home, an earlier volume) the rest of the
    path is walked, and missing parts created, by a child running as `user` (runtime.asuser).
    `user` None: the caller already has only the user's rights (rootless) or is trusted
    (site mounts)."""

    def __init__(self, root_fd: int, own_devs: set[int] | None = None, user=None):
        self.root_fd = root_fd
        self.own_devs = own_devs or set()
        self.user = user


def _host_target_error(parts: list[str]) -> BuildError:
    # one text whatever went wrong where: the user learns nothing they could not see
    return BuildError(f"target /{'/'.join(parts)} lies on a host directory and cannot be opened or created "
                      "there with your rights (each part must be a directory you may search, none a symbolic "
                      "link; missing parts are created as you); choose another target")


def _step_into(fd: int, parts: list[str], i: int, make: str | None, host: bool) -> int:
    """Open parts[i] below fd (O_PATH, never following a symlink), creating it when `make`."""
    part, last = parts[i], i == len(parts) - 1
    try:
        try:
            nxt = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        except FileNotFoundError:
            if not make:
                raise
            try:
                if last and make == "file":
                    os.close(os.open(part, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                     0o644, dir_fd=fd))
                else:
                    os.mkdir(part, 0o755, dir_fd=fd)
            except OSError as err:
                if host:
                    raise
                raise BuildError(f"cannot create /{'/'.join(parts[:i + 1])} in the container "
                                 f"({err.strerror}); the image is read-only there: choose a target "
                                 "that exists in the image or a new top-level directory") from None
            nxt = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    except OSError:
        if host:
            raise _host_target_error(parts) from None
        raise
    st = os.fstat(nxt)
    if stat.S_ISLNK(st.st_mode) or (not last and not stat.S_ISDIR(st.st_mode)):
        os.close(nxt)
        if host:
            raise _host_target_error(parts)
        if stat.S_ISLNK(st.st_mode):
            raise BuildError(f"/{'/'.join(parts[:i + 1])} is a symbolic link in the image; "
                             "give the path it points to as the target")
        raise BuildError(f"/{'/'.join(parts[:i + 1])} is not a directory in the image")
    return nxt


def _walk_as_user(walk: Walk, fd: int, parts: list[str], start: int, make: str | None) -> int:
    from runtime import asuser

    def work() -> list[int]:
        cur = os.dup(fd)
        for i in range(start, len(parts)):
            nxt = _step_into(cur, parts, i, make, host=True)
            os.close(cur)
            cur = nxt
        return [cur]

    try:
        [out] = asuser.run(walk.user, work, keep=[fd], what=f"opening the target /{'/'.join(parts)} as you")
    except asuser.AsUserError as err:
        raise BuildError(str(err)) from None
    return out


def open_in_root(walk: Walk | int, rel: str, make: str | None) -> int:
    """An O_PATH fd for `rel` inside the root, walking one component at a time without
    following symlinks (a link in the image must not send a mount outside the root).
    `make` = 'dir' or 'file' creates missing components (dirs) and the last one. Below a
    host directory, with walk.user set, the rest is walked as the user (see Walk)."""
    if isinstance(walk, int):
        walk = Walk(walk)
    parts = [p for p in rel.split("/") if p]
    fd = os.dup(walk.root_fd)
    try:
        for i in range(len(parts)):
            if walk.user is not None and os.fstat(fd).st_dev not in walk.own_devs:
                out = _walk_as_user(walk, fd, parts, i, make)
                os.close(fd)
                return out
            nxt = _step_into(fd, parts, i, make, host=False)
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise

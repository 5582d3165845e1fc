"""Host paths root code may trust: the site's hook scripts and `local:` image trees.

A path is trusted when no one but root could have put, replaced or changed anything on the
way to it: every component is owned by root and writable by no one else. It is walked from
`/` one component at a time with O_NOFOLLOW, so a symlink is followed only when root owns
it (and its directory is trusted); its target is then walked with the same rules. A
world-writable sticky directory (e.g. /tmp) may be passed through, never ended in: only
root can replace a root-owned entry in it. The caller gets an O_PATH fd of what was
checked, so nothing can be swapped in between the check and its use.
"""

from __future__ import annotations

import os
import stat

from shifter_site.errors import ShifterError

MAX_LINKS = 40  # as the kernel's own limit on symlinks in one lookup


class UntrustedPath(ShifterError):
    """A path root code must not use; the message names the component and why."""


def _why_not(st: os.stat_result, last: bool) -> str | None:
    if st.st_uid != 0:
        return f"is owned by uid {st.st_uid}, not root"
    if stat.S_ISLNK(st.st_mode):
        return None
    sticky_dir = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX
    if st.st_mode & 0o022 and (last or not sticky_dir):
        return f"is writable by {'others' if st.st_mode & 0o002 else 'its group'} (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def open_trusted(path: str) -> int:
    """An O_PATH fd of `path` after checking every component (see the module's docstring);
    UntrustedPath naming the first component that fails, or OSError from the walk."""
    if not path.startswith("/"):
        raise UntrustedPath(f"{path!r} is not an absolute path")
    if "\0" in path:
        raise UntrustedPath("the path contains a NUL character")
    todo = [p for p in path.split("/") if p not in ("", ".")]
    stack = [os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)]
    names: list[str] = []
    links = 0
    try:
        why = _why_not(os.fstat(stack[0]), not todo)
        if why:
            raise UntrustedPath(f"/ {why}")
        while todo:
            name = todo.pop(0)
            if name == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                    names.pop()
                continue
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=stack[-1])
            st = os.fstat(fd)
            here = "/" + "/".join([*names, name])
            why = _why_not(st, not todo)
            if why:
                os.close(fd)
                raise UntrustedPath(f"{here} {why}")
            if stat.S_ISLNK(st.st_mode):
                os.close(fd)
                links += 1
                if links > MAX_LINKS:
                    raise UntrustedPath(f"{here}: too many levels of symbolic links")
                target = os.readlink(name, dir_fd=stack[-1])
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                    names.clear()
                todo = [p for p in target.split("/") if p not in ("", ".")] + todo
                continue
            if todo and not stat.S_ISDIR(st.st_mode):
                os.close(fd)
                raise UntrustedPath(f"{here} is not a directory")
            stack.append(fd)
            names.append(name)
        fd = stack.pop()
        return fd
    finally:
        for fd in stack:
            os.close(fd)

"""Enter a built container as the user: environment, command, working directory, and the
privilege drop (bounding set, groups, gid, uid, capabilities, no_new_privs) before exec.

The pure parts (`environment`, `command`) are what the Slurm task hook reuses: it joins the
namespace with `join`, sets the environment and argv, and lets slurmstepd drop to the user
and exec. The CLI calls `exec_command`, which does the drop itself.
"""

from __future__ import annotations

import errno
import os
import warnings  # noqa: F401 - os.get_exec_path imports it lazily: after pivot_root it could not be found

from runtime import syscalls as sc
from shifter_site.errors import ShifterError

TYPE_CHECKING = False  # a hot path: no `typing` import (docs/architecture.md, decision 13)
if TYPE_CHECKING:  # annotations only: a Slurm step joining its container skips these imports
    from runtime.spec import ContainerSpec, User

# NAME: [A-Za-z_][A-Za-z0-9_]* (checked without `re`: importing it costs a launch ~3 ms)
_NAME_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_NAME_REST = _NAME_FIRST | frozenset("0123456789")


def _is_env_name(name: str) -> bool:
    return bool(name) and name[0] in _NAME_FIRST and all(ch in _NAME_REST for ch in name)


class EnterError(ShifterError):
    """The container cannot be entered as asked (bad env entry, missing workdir, command)."""

    exit_code = 64


class CommandNotFound(EnterError):
    """The command is not in the container: 127, as shells, Docker and podman say."""

    exit_code = 127


class CommandNotExecutable(EnterError):
    """The command is there but cannot be executed: 126, as shells, Docker and podman say."""

    exit_code = 126


class HookError(EnterError):
    """A module's user hook failed: the command is not run."""

    exit_code = 1


def check_env_entry(entry: str, where: str) -> tuple[str, str]:
    """`K=V` split, or EnterError naming where the entry came from."""
    name, sep, value = entry.partition("=")
    if not sep or not _is_env_name(name):
        raise EnterError(f"{where}: {entry!r} is not NAME=value (NAME: letters, digits, _; not starting with a digit)")
    if "\0" in value:
        raise EnterError(f"{where}: {name} contains a NUL character")
    return name, value


def parse_env_file(text: str, path: str) -> tuple[str, ...]:
    """--env-file content: NAME=value lines; blank lines and lines starting with # skipped.
    Only a newline (and a \r before it) ends a line, as Docker reads the file: a form feed or
    a Unicode line separator in a value stays in that value (`str.splitlines` split there)."""
    out = []
    for number, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        check_env_entry(line, f"{path} line {number}")
        out.append(line)
    return tuple(out)


def environment(spec: ContainerSpec, host_env: dict[str, str]) -> dict[str, str]:
    """The container's environment, in the reference order: host env (none with clearenv)
    + SHIFTER_IMAGEREQUEST/SHIFTER_IMAGE; image ENV; --env-file; --env; each module's site
    env then the global site env (set, append, prepend with ':', unset)."""
    env = {} if spec.clearenv else dict(host_env)
    env["SHIFTER_IMAGEREQUEST"] = spec.image_request or f"id:{spec.image_id}"
    env["SHIFTER_IMAGE"] = spec.image_id
    for source, entries in (("image ENV", spec.image_env), ("--env-file", spec.env_file), ("--env", spec.env)):
        for entry in entries:
            name, value = check_env_entry(entry, source)
            env[name] = value
    for site in spec.site_env:
        for name, value in site.set:
            env[name] = value
        for name, value in site.append:
            env[name] = f"{env[name]}:{value}" if env.get(name) else value
        for name, value in site.prepend:
            env[name] = f"{value}:{env[name]}" if env.get(name) else value
        for name in site.unset:
            env.pop(name, None)
    return env


def command(spec: ContainerSpec, argv: list[str], env: dict[str, str]) -> list[str]:
    """Docker's rules: the command line wins; --entrypoint prefixes it (bare --entrypoint:
    the image's ENTRYPOINT, then the image's CMD if no command); no command: $SHELL or /bin/sh."""
    if spec.entrypoint is not None:
        if spec.entrypoint == "":
            entry = list(spec.image_entrypoint or ())
            rest = list(argv) if argv else list(spec.image_cmd or ())
        else:
            entry, rest = [spec.entrypoint], list(argv)
        full = entry + rest
        if not full:
            raise EnterError("--entrypoint: the image has no ENTRYPOINT or CMD and no command was given")
        return full
    if argv:
        return list(argv)
    return [env.get("SHELL") or "/bin/sh"]


def find_command(name: str, env: dict[str, str]) -> str:
    """Where exec will find `name` in the container (searched in the container's PATH, as
    execvp does, with the caller's rights), or the shell's error: CommandNotFound (127)
    naming the PATH searched, CommandNotExecutable (126)."""
    import stat

    if "/" in name:
        candidates = [name]
    else:
        candidates = [os.path.join(d or ".", name) for d in os.get_exec_path(env)]
    denied = None
    for candidate in candidates:
        try:
            mode = os.stat(candidate).st_mode
        except OSError:
            continue
        if stat.S_ISREG(mode) and os.access(candidate, os.X_OK):
            return candidate
        denied = denied or (candidate, "is a directory" if stat.S_ISDIR(mode) else "is not executable by you")
    if denied:
        raise CommandNotExecutable(f"{name}: cannot run it in the container: {denied[0]} {denied[1]}")
    if "/" in name:
        raise CommandNotFound(f"{name}: no such file in the container")
    raise CommandNotFound(f"{name}: command not found in the container (PATH={':'.join(os.get_exec_path(env))})")


def join(ns_path: str) -> None:
    """Join a pinned container's mount namespace (root); its root is the container root."""
    fd = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        sc.setns(fd, sc.CLONE_NEWNS)
    finally:
        os.close(fd)


def drop_privileges(user: User, set_groups: bool = True) -> None:
    """Become the user for good: empty bounding set, groups, gid, uid, no capabilities,
    no_new_privs (a setuid binary in the image cannot elevate)."""
    sc.drop_bounding_set()
    if set_groups:
        os.setgroups(user.gids)
    os.setresgid(user.gid, user.gid, user.gid)
    os.setresuid(user.uid, user.uid, user.uid)
    sc.clear_capabilities()
    sc.no_new_privs()


def _chdir(spec: ContainerSpec, cwd: str | None) -> None:
    if spec.workdir is None:
        try:
            os.chdir(cwd or "/")
        except OSError:
            os.chdir("/")
        return
    enter_workdir(spec)


def enter_workdir(spec: ContainerSpec) -> None:
    """--workdir DIR, or -w alone (workdir ""): the image's WORKDIR, else /. One rule for
    `shifter` and the Slurm task (shifter_wlm.task.user_hooks)."""
    target = spec.workdir or spec.image_workdir or "/"
    try:
        os.chdir(target)
    except OSError as err:
        where = "the image's WORKDIR" if not spec.workdir else "--workdir"
        raise EnterError(f"{where} {target}: {err.strerror} in the container") from None


def run_user_hook(module: str, hook: str, env: dict[str, str], user: User | None = None) -> None:
    """A module's user hook: `/bin/sh HOOK` inside the container, as the user, with the
    container's environment and working directory, before the command. Its output goes where
    the command's goes; a failure stops the launch. `user`: drop to that user in the hook's
    process first (a Slurm task is still root here: slurmstepd drops it later); None: the
    caller already did. A bare fork+exec: subprocess would cost every launch its imports."""
    pid = os.fork()
    if pid == 0:
        try:
            if user is not None:
                drop_privileges(user)
            os.execve("/bin/sh", ["/bin/sh", hook], env)
        except BaseException:  # noqa: BLE001 - no Python exception may leave the child
            os._exit(127)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        how = f"exit status {code}" if code > 0 else f"killed by signal {-code}"
        raise HookError(f"module {module!r}: user hook {hook} failed in the container ({how}); "
                         "the command was not run")


def exec_command(spec: ContainerSpec, argv: list[str], host_env: dict[str, str], cwd: str | None,
                 set_groups: bool = True, warm=None) -> None:
    """Drop to the user inside the (already entered) container and exec; never returns.
    `warm(path)`: called with the file about to be exec'd, as the user (a rootless launch
    reads it through its fresh squashfuse mount first, runtime/prefetch.py)."""
    env = environment(spec, host_env)
    full = command(spec, argv, env)
    drop_privileges(spec.user, set_groups=set_groups)
    _chdir(spec, cwd)
    for module, hook in spec.user_hooks:
        run_user_hook(module, hook, env)
    path = find_command(full[0], env)  # with the container's PATH, as the user
    if warm is not None:
        warm(path)
    try:
        os.execve(path, full, env)
    except OSError as err:
        # ENOENT for a file that is there: its #! interpreter or its loader is missing
        error = CommandNotFound if err.errno == errno.ENOENT else CommandNotExecutable
        raise error(f"{full[0]}: cannot run it in the container ({path}: {err.strerror}"
                    f"{'; its #! interpreter or loader is missing' if error is CommandNotFound else ''})") from None

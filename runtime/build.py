"""Build a container root from a ContainerSpec (as root, or inside a user namespace).

Layout of a built root (a tmpfs, `nosuid,nodev`): the image's top-level entries bound
read-only from the squashfs; `/etc` a read-only overlay (generated files > site files >
image files); `/opt/udiImage`; `/var/hostsfile`; `/proc`, `/sys`, `/dev`, `/tmp`,
`/var/tmp`; site mounts; user volumes; perNodeCache filesystems.

Pinned containers (the Slurm prolog, DESIGN decision 5) live in their own mount namespace,
whose root *is* the container root, pinned by a bind mount of its nsfs file:

    <run_dir>/<key>/          the container's state dir (a private bind mount of itself)
        intent.json           written first: what a teardown must clean (cache dir, key)
        ns                    the pin (bind of /proc/<pid>/ns/mnt) once built
        record.json           written last: the container is ready (spec summary)

`key` is ContainerSpec.build_key(): an identical later request finds the record and joins
the namespace (runtime.enter.join) instead of building again. Private builds (the `shifter`
CLI with no matching pinned container) build in the caller's own new namespace and vanish
with it.
"""

from __future__ import annotations

import os
import stat

from runtime import etcfiles, loop
from runtime import syscalls as sc
from runtime.frozen import Frozen
from shifter_site.errors import ShifterError

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: json/shutil/subprocess/time are imported where used,
    from runtime.spec import ContainerSpec  # so a rootless launch does not pay for them
    from runtime.volumes import Volume

SAFE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
SKELETON_DIRS = ("etc", "opt/udiImage", "var/spool", "var/run", "var/tmp", "proc", "sys", "dev", "tmp")
SPECIAL_TOP = {"etc", "proc", "sys", "dev", "tmp", "opt", "var"}
SPECIAL_VAR = {"tmp", "spool", "run", "empty", "hostsfile"}
STAGE = ".shifter-stage"  # temporary dir in the new root, removed before anyone enters

# The CLI turns step logging off unless -v: importing structlog alone costs ~35 ms a launch.
LOG_STEPS = True

# Tests set this (in a child process) to a step name: the builder SIGKILLs itself right
# after that step, to prove teardown copes with a build stopped anywhere.
_KILL_AFTER: str | None = None


class BuildError(ShifterError):
    """The container could not be built; the message says which part and why."""


class Container(Frozen):
    """A built, pinned container on this node."""

    key: str
    state_dir: str

    @property
    def ns_path(self) -> str:
        return os.path.join(self.state_dir, "ns")

    @property
    def record_path(self) -> str:
        return os.path.join(self.state_dir, "record.json")


def scrub_environment() -> None:
    """Privileged code must not run helpers with the caller's loader or Python settings."""
    for name in list(os.environ):
        if name.startswith(("LD_", "PYTHON")) or name in ("IFS", "ENV", "BASH_ENV", "GCONV_PATH"):
            del os.environ[name]
    os.environ["PATH"] = SAFE_PATH


def _killpoint(step: str) -> None:
    if _KILL_AFTER == step:
        os.kill(os.getpid(), 9)


class _Steps:
    """One structured log event per build step, with its duration."""

    def __init__(self, spec: ContainerSpec):
        self.log = None
        if LOG_STEPS:
            from shifter_site import logs
            self.log = logs.get("runtime")
        self.fields = {"image": spec.image_id[:12], "uid": spec.user.uid}

    def __call__(self, name: str, **extra):
        return _Step(self, name, extra)


class _Step:
    def __init__(self, steps: _Steps, name: str, extra: dict):
        self.steps, self.name, self.extra = steps, name, extra

    def __enter__(self):
        if self.steps.log is None:
            self.cm = None
            return {}
        from shifter_site import logs
        self.cm = logs.step(self.steps.log, f"build.{self.name}", **self.steps.fields, **self.extra)
        return self.cm.__enter__()

    def __exit__(self, *exc):
        result = self.cm.__exit__(*exc) if self.cm else None
        if exc[0] is None:
            _killpoint(self.name)
        return result


# ---------------------------------------------------------------- mount helpers


def mounted_at(path: str) -> bool:
    """Whether something is mounted exactly at `path` (in this mount namespace)."""
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split(" ", 5)[4]
            if _unescape(point) == path:
                return True
    return False


def _unescape(text: str) -> str:
    return text.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def _fdpath(fd: int) -> str:
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


def _open_in_root(walk: Walk | int, rel: str, make: str | None) -> int:
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


def _bind(source: str, target: str, rec: bool = False) -> None:
    sc.mount(source, target, None, sc.MS_BIND | (sc.MS_REC if rec else 0))


def _merge_dir(src_dir: str, dst_dir: str, skip: set[str]) -> int:
    """Make each entry of src_dir appear in dst_dir: directories and files bound (they keep
    the source mount's ro,nosuid,nodev), symlinks copied. Returns the number of mounts."""
    count = 0
    with os.scandir(src_dir) as entries:
        for entry in entries:
            if entry.name in skip:
                continue
            dst = os.path.join(dst_dir, entry.name)
            if entry.is_symlink():
                os.symlink(os.readlink(entry.path), dst)
            elif entry.is_dir(follow_symlinks=False):
                os.mkdir(dst, 0o755)
                _bind(entry.path, dst)
                count += 1
            elif entry.is_file(follow_symlinks=False):
                os.close(os.open(dst, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o644))
                _bind(entry.path, dst)
                count += 1
    return count


def _copy_file(src: str, dst: str) -> None:
    """A small host file's content into a new file (shutil costs a launch ~2 ms of imports)."""
    with open(src, "rb") as f:
        data = f.read()
    with open(dst, "wb") as f:
        f.write(data)


def _run(argv: list[str], what: str) -> None:
    """A helper program with a clean environment, killed if we die (no orphan after -9)."""
    import subprocess

    proc = subprocess.run(argv, env={"PATH": SAFE_PATH}, capture_output=True, text=True,
                          preexec_fn=lambda: sc.parent_death_signal(9))
    if proc.returncode != 0:
        raise BuildError(f"{what} failed ({' '.join(argv)}): {(proc.stderr or proc.stdout).strip()[:300]}")


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


# ---------------------------------------------------------------- image


def mount_image_loop(squashfs: str, target: str) -> str:
    """Mount the squashfs ro,nosuid,nodev at target, reusing an attached loop device."""
    for _ in range(3):
        device = loop.find_attached(squashfs)
        if device:
            try:
                sc.mount(device, target, "squashfs", sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV)
                return device
            except OSError:
                continue  # it was auto-cleared between the check and the mount: attach anew
        device, fd = loop.attach(squashfs, read_only=True)
        try:
            sc.mount(device, target, "squashfs", sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV)
            return device
        finally:
            os.close(fd)
    raise BuildError(f"cannot mount {squashfs}: its loop device kept disappearing")


# ---------------------------------------------------------------- volumes


def resolve_sources(volumes: list[Volume]) -> list[int]:
    """O_PATH fds of the volumes' sources, opened with the *current* credentials (the
    kernel checks every component with the user's rights and resolves symlinks the way the
    user would), refused unless the user may read (and, for directories, search) the target.
    The fds, not the paths, are mounted: nothing can be swapped in between. Nothing under
    /proc: its magic links would name the opener's own fds and files."""
    fds = []
    try:
        for volume in volumes:
            try:
                fd = os.open(volume.source, os.O_PATH | os.O_CLOEXEC)
            except OSError as err:
                raise BuildError(f"volume {volume.text()!r}: source {volume.source}: {err.strerror}") from None
            fds.append(fd)
            mode = os.fstat(fd).st_mode
            need = os.R_OK | (os.X_OK if stat.S_ISDIR(mode) else 0)
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise BuildError(f"volume {volume.text()!r}: source {volume.source} is not a directory or file")
            resolved = os.readlink(_fdpath(fd))
            if resolved == "/proc" or resolved.startswith("/proc/"):
                raise BuildError(f"volume {volume.text()!r}: source {volume.source} is under /proc, which cannot "
                                 "be a volume source; give a directory or file of yours")
            if not os.access(_fdpath(fd), need):
                raise BuildError(f"volume {volume.text()!r}: source {volume.source} (resolved to "
                                 f"{resolved}) is not readable by you")
        return fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def resolve_sources_as(user, volumes: list[Volume]) -> list[int]:
    """resolve_sources in a hardened child running as the user (runtime.asuser); the fds
    come back over a socket."""
    from runtime import asuser

    if not volumes:
        return []
    try:
        fds = asuser.run(user, lambda: resolve_sources(volumes), what="resolving the volume sources as you")
    except asuser.AsUserError as err:
        raise BuildError(str(err)) from None
    if len(fds) != len(volumes):
        for fd in fds:
            os.close(fd)
        raise BuildError("could not resolve the volume sources as the user")
    return fds


def _mount_volume(walk: Walk, volume: Volume, source_fd: int, default_prop: int) -> None:
    """Bind the source onto the target: a detached copy of the source gets its attributes
    first, then is attached on the target's fd (no path is walked a second time)."""
    is_dir = stat.S_ISDIR(os.fstat(source_fd).st_mode)
    attrs = sc.MOUNT_ATTR_NOSUID | sc.MOUNT_ATTR_NODEV | (sc.MOUNT_ATTR_RDONLY if volume.ro else 0)
    prop = {"slave": sc.MS_SLAVE, "private": sc.MS_PRIVATE}.get(volume.propagation or "", default_prop)
    tree = sc.clone_tree(source_fd, recursive=volume.rec)
    try:
        sc.mount_setattr("", attrs, propagation=prop, recursive=volume.rec, dirfd=tree)
        target_fd = _open_in_root(walk, volume.target, "dir" if is_dir else "file")
        try:
            sc.attach_tree(tree, target_fd)
        finally:
            os.close(target_fd)
    finally:
        os.close(tree)


def cache_file_prefix(spec: ContainerSpec, key: str) -> str:
    u = spec.user
    return os.path.join(spec.cache_dir, f"shifter-cache.{u.uid}.{u.gid}.{spec.hostname}.{key}.")


def _mount_cache(walk: Walk, spec: ContainerSpec, key: str, index: int, volume: Volume) -> None:
    """A perNodeCache: a sparse file in cache_dir, loop-mounted as xfs/ext4 on a staging
    directory of the container's own (made the user's there: the user's target path is
    never walked by root again), then moved onto the target; the file is unlinked as soon
    as the loop device holds it (its space goes with the mount)."""
    assert volume.cache
    cache = volume.cache
    root_fd = walk.root_fd
    path = cache_file_prefix(spec, key) + str(index)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != 0:
            raise BuildError(f"perNodeCache backing file {path} exists and is not ours; ask the admins") from None
        os.unlink(path)  # a leftover of a crashed build with this very key
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    loop_fd = -1
    stage = f"{STAGE}-cache-{index}"
    stage_path = f"{_fdpath(root_fd)}/{stage}"
    staged = False
    try:
        os.ftruncate(fd, cache.size)
        device, loop_fd = loop.attach(fd, read_only=False)
        os.unlink(path)
        if cache.fs == "xfs":
            argv = ["mkfs.xfs", "-q", "-f", *(["-b", f"size={cache.bs}"] if cache.bs else []), device]
        else:
            argv = ["mkfs.ext4", "-q", "-F", "-m", "0", *(["-b", str(cache.bs)] if cache.bs else []),
                    "-E", f"root_owner={spec.user.uid}:{spec.user.gid}", device]
        _run(argv, f"formatting the perNodeCache for {volume.target}")
        os.mkdir(stage, 0o700, dir_fd=root_fd)
        staged = True
        sc.mount(device, stage_path, cache.fs, sc.MS_NOSUID | sc.MS_NODEV)
        os.chown(stage_path, spec.user.uid, spec.user.gid)
        os.chmod(stage_path, 0o700)
        target_fd = _open_in_root(walk, volume.target, "dir")
        try:
            sc.move_to(stage_path, target_fd)
        finally:
            os.close(target_fd)
    finally:
        os.close(fd)
        if loop_fd >= 0:
            os.close(loop_fd)
        if os.path.lexists(path):
            os.unlink(path)
        if staged:
            if mounted_at(stage_path):
                sc.umount2(stage_path, sc.MNT_DETACH)
            os.rmdir(stage, dir_fd=root_fd)


# ---------------------------------------------------------------- the root


def populate(spec: ContainerSpec, root: str, *, key: str, privileged: bool,
             image_mounter=None, source_fds: list[int] | None = None) -> None:
    """Build the container root at `root` (already an empty directory) in the current,
    private mount namespace. `image_mounter(squashfs, target)` mounts the image (loop as
    root, squashfuse rootless); `source_fds` are the user volumes' resolved sources."""
    steps = _Steps(spec)
    prop = sc.MS_SLAVE if spec.mount_propagation == "slave" else sc.MS_PRIVATE
    with steps("root"):
        sc.mount("tmpfs", root, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "mode=0755")
        for d in SKELETON_DIRS:
            os.makedirs(os.path.join(root, d), 0o755, exist_ok=True)
        os.mkdir(os.path.join(root, "var/empty"), 0o700)
        os.chmod(os.path.join(root, "tmp"), 0o1777)
        os.chmod(os.path.join(root, "var/tmp"), 0o1777)
        stage = os.path.join(root, STAGE)
        os.mkdir(stage, 0o700)
        image, gen = os.path.join(stage, "image"), os.path.join(stage, "etc")
        os.mkdir(image)
        os.mkdir(gen)
    with steps("image") as info:
        info["device"] = (image_mounter or mount_image_loop)(spec.squashfs, image)
        image_dev = os.stat(image).st_dev
    with steps("image_entries") as info:
        count = _merge_dir(image, root, SPECIAL_TOP | {STAGE})
        for sub, skip in (("opt", {"udiImage"}), ("var", SPECIAL_VAR)):
            src = os.path.join(image, sub)
            if os.path.isdir(src) and not os.path.islink(src):
                count += _merge_dir(src, os.path.join(root, sub), skip)
        info["mounts"] = count
    with steps("etc"):
        sc.mount("tmpfs", gen, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "mode=0755")
        files = {"passwd": etcfiles.passwd(spec), "group": etcfiles.group(spec),
                 "nsswitch.conf": etcfiles.NSSWITCH, "shadow": ""}
        for name, text in files.items():
            with open(os.path.join(gen, name), "w") as f:
                f.write(text)
        os.chmod(os.path.join(gen, "shadow"), 0o600 if privileged else 0o644)
        for name in ("hosts", "resolv.conf"):
            if os.path.isfile(f"/etc/{name}"):
                _copy_file(f"/etc/{name}", os.path.join(gen, name))
        if spec.host_addrs:  # first: a lookup takes the first match, Slurm's address wins
            hosts = os.path.join(gen, "hosts")
            rest = open(hosts).read() if os.path.exists(hosts) else ""
            with open(hosts, "w") as f:
                f.write(etcfiles.host_lines(spec.host_addrs) + rest)
        os.symlink("/proc/self/mounts", os.path.join(gen, "mtab"))
        lowers = [gen]
        if spec.etc_dir and os.path.isdir(spec.etc_dir):
            lowers.append(spec.etc_dir)
        if os.path.isdir(os.path.join(image, "etc")) and not os.path.islink(os.path.join(image, "etc")):
            lowers.append(os.path.join(image, "etc"))
        if len(lowers) == 1:
            _bind(gen, os.path.join(root, "etc"))  # overlay needs two lower layers
        else:
            sc.mount("overlay", os.path.join(root, "etc"), "overlay", sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV,
                     "lowerdir=" + ":".join(lowers))
    with steps("udiImage"):
        udi = os.path.join(root, "opt/udiImage")
        if spec.opt_udi_image or spec.module_copy:
            sc.mount("tmpfs", udi, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "mode=0755")
            if spec.opt_udi_image and os.path.isdir(spec.opt_udi_image):
                _merge_dir(spec.opt_udi_image, udi, {"modules"} if spec.module_copy else set())
            for name, path in spec.module_copy:
                dst = os.path.join(udi, "modules", name)
                os.makedirs(dst, 0o755)
                _bind(path, dst, rec=True)
            sc.mount_setattr(udi, sc.MOUNT_ATTR_RDONLY | sc.MOUNT_ATTR_NOSUID | sc.MOUNT_ATTR_NODEV, recursive=True)
    with steps("hostsfile"):
        if spec.hosts is not None:
            with open(os.path.join(root, "var/hostsfile"), "w") as f:
                f.write(etcfiles.hostsfile(spec.hosts))
            os.chmod(os.path.join(root, "var/hostsfile"), 0o644)
    with steps("unstage"):
        sc.umount2(image, sc.MNT_DETACH)  # the binds and the overlay keep the image alive
        sc.umount2(gen, sc.MNT_DETACH)
        os.rmdir(image)
        os.rmdir(gen)
        os.rmdir(stage)
    with steps("system"):
        if privileged:
            sc.mount("proc", os.path.join(root, "proc"), "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
        else:
            _bind("/proc", os.path.join(root, "proc"), rec=True)
        _bind("/sys", os.path.join(root, "sys"), rec=True)
        _bind("/tmp", os.path.join(root, "tmp"))
        _bind("/var/tmp", os.path.join(root, "var/tmp"))
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        # user targets: root walks only the container's own tmpfs and the image (see Walk)
        user_walk = Walk(root_fd, {os.fstat(root_fd).st_dev, image_dev}, spec.user if privileged else None)
        with steps("site_mounts", count=len(spec.site_mounts)):
            for volume in spec.site_mounts:
                fd = os.open(volume.source, os.O_PATH | os.O_CLOEXEC)
                try:
                    _mount_volume(Walk(root_fd), volume, fd, prop)
                except FileNotFoundError as err:
                    raise BuildError(f"site mount {volume.text()}: {err}") from None
                finally:
                    os.close(fd)
        if spec.root_hooks:
            with steps("root_hooks", count=len(spec.root_hooks)):
                if not privileged:
                    raise BuildError(f"module {spec.root_hooks[0][0]!r} has a root hook, which needs a "
                                     "privileged build (a Slurm job, or shifter as root)")
                for module, hook in spec.root_hooks:
                    run_root_hook(module, hook, root, spec)
        binds = [v for v in spec.volumes if not v.cache]
        with steps("volumes", count=len(binds)):
            for volume, fd in zip(binds, source_fds or []):
                try:
                    _mount_volume(user_walk, volume, fd, prop)
                except BuildError as err:
                    raise BuildError(f"volume {volume.text()!r}: {err}") from None
        caches = [v for v in spec.volumes if v.cache]
        if caches:
            with steps("cache", count=len(caches)):
                if not privileged:
                    raise BuildError("perNodeCache needs a privileged build (inside a Slurm job with "
                                     "--volume=...:perNodeCache=...); it cannot be made rootless")
                for index, volume in enumerate(caches):
                    try:
                        _mount_cache(user_walk, spec, key, index, volume)
                    except BuildError as err:
                        raise BuildError(f"volume {volume.text()!r}: {err}") from None
        with steps("attributes"):
            # every mount nosuid,nodev (/dev comes after: it keeps its devices, not suid)
            sc.mount_setattr(root, sc.MOUNT_ATTR_NOSUID | sc.MOUNT_ATTR_NODEV, propagation=prop, recursive=True)
            _bind("/dev", os.path.join(root, "dev"), rec=True)
            sc.mount_setattr(os.path.join(root, "dev"), sc.MOUNT_ATTR_NOSUID, propagation=prop, recursive=True)
            os.chmod(root, 0o755)
            sc.mount_setattr(root, sc.MOUNT_ATTR_NOSUID | sc.MOUNT_ATTR_NODEV)
    finally:
        os.close(root_fd)


def pivot_into(root: str) -> None:
    """Make `root` the root of the current mount namespace; the old root is detached, so
    nothing of the host (nor other containers' pins) stays reachable or referenced."""
    os.chdir(root)
    sc.pivot_root(".", ".")
    sc.umount2(".", sc.MNT_DETACH)
    os.chdir("/")


def _detach_under(prefix: str) -> None:
    """In a fresh namespace copy: drop the copies of mounts under the run dir (other
    containers' pins), or this namespace would keep their namespaces alive."""
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = _unescape(line.split(" ", 5)[4])
            if point.startswith(prefix + "/"):
                points.append(point)
    for point in sorted(points, key=len, reverse=True):
        try:
            sc.umount2(point, sc.MNT_DETACH)
        except OSError:
            pass


# ---------------------------------------------------------------- pinned builds (root)


def find(run_dir: str, key: str) -> Container | None:
    """The ready, pinned container with this key, or None."""
    import json

    state = os.path.join(run_dir, key)
    container = Container(key, state)
    try:
        with open(container.record_path) as f:
            record = json.load(f)
        pinned = os.stat(container.ns_path).st_dev != os.stat(state).st_dev
    except (OSError, ValueError):
        return None
    return container if pinned and record.get("state") == "ready" else None


def _write_json(path: str, data: dict) -> None:
    import json

    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def build(spec: ContainerSpec, run_dir: str) -> Container:
    """Build (or find) the pinned container for `spec` under `run_dir`. Root only.

    A build that fails, or is killed anywhere, is cleaned by runtime.teardown.teardown
    (called here on failure; after a kill, by the epilog or the next build of the key).
    """
    import time

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
        steps = _Steps(spec)
        with steps("state_dir"):
            os.mkdir(state, 0o700)
            _write_json(os.path.join(state, "intent.json"),
                        {"key": key, "cache_prefix": cache_file_prefix(spec, key), "pid": os.getpid()})
            _bind(state, state)
            sc.mount(None, state, None, sc.MS_PRIVATE)
            open(os.path.join(state, "ns"), "w").close()
            os.mkdir(os.path.join(state, "root"), 0o700)
        host_ns = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        cwd = os.open(".", os.O_PATH | os.O_CLOEXEC)
        new_ns = -1
        try:
            with steps("namespace"):
                sc.unshare(sc.CLONE_NEWNS)
                sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
                _detach_under(os.path.realpath(run_dir))
            with steps("resolve_volumes"):
                # after unshare: a bind source must be a mount of the namespace it goes into
                user_fds = resolve_sources_as(spec.user, [v for v in spec.volumes if not v.cache])
            populate(spec, os.path.join(state, "root"), key=key, privileged=True, source_fds=user_fds)
            with steps("pivot"):
                pivot_into(os.path.join(state, "root"))
                new_ns = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
            sc.setns(host_ns, sc.CLONE_NEWNS)
            os.fchdir(cwd)
            with steps("pin"):
                sc.mount(_fdpath(new_ns), os.path.join(state, "ns"), None, sc.MS_BIND)
            with steps("record"):
                _write_json(os.path.join(state, "record.json"), {
                    "state": "ready", "key": key, "image": spec.image_id, "uid": spec.user.uid,
                    "gid": spec.user.gid, "volumes": [v.text() for v in spec.volumes],
                    "modules": list(spec.modules), "created": time.time(), "builder": os.getpid()})
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


def build_private(spec: ContainerSpec, run_dir: str) -> None:
    """Build the container in a new mount namespace of this process and pivot into it (the
    `shifter` CLI as root with no matching pinned container). Gone when the process ends."""
    scrub_environment()
    key = spec.build_key()
    user_fds: list[int] = []
    try:
        sc.unshare(sc.CLONE_NEWNS)
        sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
        user_fds = resolve_sources_as(spec.user, [v for v in spec.volumes if not v.cache])
        mountpoint = run_dir if os.path.isdir(run_dir) else "/mnt"
        _detach_under(os.path.realpath(mountpoint))
        populate(spec, mountpoint, key=key, privileged=True, source_fds=user_fds)
        pivot_into(mountpoint)
    finally:
        for fd in user_fds:
            os.close(fd)

"""Container setup as an ordered table of named phases (docs/architecture.md, "Build").

Layout of a built root (a tmpfs, `nosuid,nodev`): the image's top-level entries bound
read-only from the squashfs; `/etc` a read-only overlay (generated files > site files >
image files); `/opt/udiImage`; `/var/hostsfile`; `/proc`, `/sys`, `/dev`, `/tmp`,
`/var/tmp`; site mounts; root hooks; user volumes; perNodeCache filesystems.

Each phase is logged as one `build.<name>` event with its duration (runtime.steps). The
order is the design: site mounts (the modules' too, under `/opt/udiImage/modules/<name>`)
and root hooks come before the user's volumes, and `seal` is last: only then is
`/opt/udiImage` made read-only and every mount nosuid,nodev.
"""

from __future__ import annotations

import os
import stat

from runtime import binds, etcfiles
from runtime.gpuphases import gpu_dev, gpu_files
from runtime import syscalls as sc
from runtime.errors import BuildError
from runtime.paths import STAGE
from runtime.setupstate import Setup

TYPE_CHECKING = False  # a hot path: no `typing` import (docs/architecture.md, decision 13)
if TYPE_CHECKING:  # annotations only: a rootless launch imports no more than it runs (typing ~7 ms)
    from typing import Callable

    from runtime.spec import ContainerSpec
    from runtime.steps import Steps

SKELETON_DIRS = ("etc", "opt/udiImage", "var/spool", "var/run", "var/tmp", "proc", "sys", "dev", "tmp")
SPECIAL_TOP = {"etc", "proc", "sys", "dev", "tmp", "opt", "var"}
SPECIAL_VAR = {"tmp", "spool", "run", "empty", "hostsfile", "shifterConfig.json"}
SHIFTER_CONFIG_JSON = "var/shifterConfig.json"  # the original's record of what was built, for scripts
UDI = "opt/udiImage"


def needs_privilege(spec: ContainerSpec) -> str | None:
    """Why this container cannot be built without root (rootless), or None. One rule for
    runtime.rootless (which refuses before starting anything) and populate."""
    if any(v.cache for v in spec.volumes):
        return ("perNodeCache needs the privileged path (a Slurm job with --volume=...:perNodeCache=...); "
                "it cannot be made rootless")
    if spec.root_hooks:
        return (f"module {spec.root_hooks[0][0]!r} has a root hook, which needs root: it cannot run rootless; "
                "choose other modules (-m) or run inside a Slurm job")
    if spec.site_hooks:
        return (f"this site runs a root script while building containers ({spec.site_hooks[0][0]}), which needs "
                "root: shifter cannot run rootless here; run it inside a Slurm job (srun shifter ...)")
    return None


def _always(s: Setup) -> bool:
    return True


class Phase:
    """A named step of setup: `run(setup, info)` fills `info` with fields for its log
    event; it runs only when `when(setup)`."""

    __slots__ = ("name", "run", "when")

    def __init__(self, name: str, run: Callable[[Setup, dict], None], when: Callable[[Setup], bool] = _always):
        self.name, self.run, self.when = name, run, when


# ---------------------------------------------------------------- the phases


def make_root(s: Setup, info: dict) -> None:
    sc.mount("tmpfs", s.root, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "mode=0755")
    s.root_fd = os.open(s.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    for d in SKELETON_DIRS:
        os.makedirs(os.path.join(s.root, d), 0o755, exist_ok=True)
    os.mkdir(os.path.join(s.root, "var/empty"), 0o700)
    os.chmod(os.path.join(s.root, "tmp"), 0o1777)
    os.chmod(os.path.join(s.root, "var/tmp"), 0o1777)
    os.mkdir(s.stage, 0o700)
    os.mkdir(s.image)
    os.mkdir(s.gen)


def mount_image_loop(squashfs: str, target: str) -> str:
    """Mount the squashfs ro,nosuid,nodev at target, reusing an attached loop device."""
    from runtime import loop  # root only: a rootless launch does not pay for it (and struct, fcntl)

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


def mount_image(s: Setup, info: dict) -> None:
    if s.spec.local_root is not None:
        info["device"] = "local"
        from runtime.localimage import mount_tree
        mount_tree(s.spec.local_root, s.image, s.privileged)
        return  # image_dev stays -1: the tree's filesystem may be the host's /tmp's, walked as the user
    info["device"] = s.image_mounter(s.spec.squashfs, s.image)
    s.image_dev = os.stat(s.image).st_dev


def image_entries(s: Setup, info: dict) -> None:
    count = binds.merge_dir(s.image, s.root, SPECIAL_TOP | {STAGE})
    for sub, skip in (("opt", {"udiImage"}), ("var", SPECIAL_VAR)):
        src = os.path.join(s.image, sub)
        if os.path.isdir(src) and not os.path.islink(src):
            count += binds.merge_dir(src, os.path.join(s.root, sub), skip)
    info["mounts"] = count


def _site_etc_files(spec: ContainerSpec, privileged: bool) -> None:
    """etc_mode: site: the site's passwd and group (in etc_dir, the overlay's layer below the
    generated files) must be there and, for a root build, root's alone: every process in the
    container reads them. (Rootless, inside the user namespace root's files show as nobody's;
    the user gains nothing from them there.)"""
    from runtime.trusted import UntrustedPath, open_trusted

    for name in ("passwd", "group"):
        path = os.path.join(spec.etc_dir or "", name)
        try:
            fd = open_trusted(path) if privileged else os.open(path, os.O_PATH | os.O_CLOEXEC)
        except FileNotFoundError:
            raise BuildError(f"etc_mode: site: {path} does not exist; add the site's {name} file to etc_dir "
                             "or set etc_mode: generated (ask the admins)") from None
        except (UntrustedPath, OSError) as err:
            raise BuildError(f"etc_mode: site: {path}: {getattr(err, 'strerror', None) or err}; it must be root's "
                             "alone (ask the admins)") from None
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
        os.close(fd)
        if not regular:
            raise BuildError(f"etc_mode: site: {path} is not a regular file; ask the admins")


def _etc_mount_points(s: Setup) -> None:
    """Site mounts below /etc (e.g. /etc/opt/cray): their mount points are made in the
    generated layer, so they exist in the read-only /etc overlay for the site_mounts phase."""
    for volume in s.spec.site_mounts:
        rel = volume.target.strip("/")
        if not rel.startswith("etc/"):
            continue
        path = os.path.join(s.gen, rel[len("etc/"):])
        if os.path.lexists(path):
            continue
        os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
        if os.path.isdir(volume.source):
            os.mkdir(path, 0o755)
        else:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o644))


def etc(s: Setup, info: dict) -> None:
    spec, gen = s.spec, s.gen
    sc.mount("tmpfs", gen, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "mode=0755")
    files = {"passwd": etcfiles.passwd(spec), "group": etcfiles.group(spec),
             "nsswitch.conf": etcfiles.NSSWITCH, "shadow": ""}
    if spec.etc_mode == "site":  # the site's own passwd, group (and nsswitch.conf, if it has one)
        _site_etc_files(spec, s.privileged)
        del files["passwd"], files["group"]
        if os.path.isfile(os.path.join(spec.etc_dir or "", "nsswitch.conf")):
            del files["nsswitch.conf"]
    info["passwd"] = spec.etc_mode
    _etc_mount_points(s)
    for name, text in files.items():
        with open(os.path.join(gen, name), "w") as f:
            f.write(text)
    os.chmod(os.path.join(gen, "shadow"), 0o600 if s.privileged else 0o644)
    for name in ("hosts", "resolv.conf"):
        if os.path.isfile(f"/etc/{name}"):
            binds.copy_file(f"/etc/{name}", os.path.join(gen, name))
    if spec.host_addrs:  # first: a lookup takes the first match, Slurm's address wins
        hosts = os.path.join(gen, "hosts")
        rest = open(hosts).read() if os.path.exists(hosts) else ""
        with open(hosts, "w") as f:
            f.write(etcfiles.host_lines(spec.host_addrs) + rest)
    for rel, text in spec.etc_files:  # e.g. the job's ssh/ssh_config, over the image's
        path = os.path.join(gen, rel)
        os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o644)
    os.symlink("/proc/self/mounts", os.path.join(gen, "mtab"))
    lowers = [gen]
    if spec.etc_dir and os.path.isdir(spec.etc_dir):
        lowers.append(spec.etc_dir)
    image_etc = os.path.join(s.image, "etc")
    if os.path.isdir(image_etc) and not os.path.islink(image_etc):
        lowers.append(image_etc)
    if len(lowers) == 1:
        binds.bind(gen, os.path.join(s.root, "etc"))  # overlay needs two lower layers
    else:
        sc.mount("overlay", os.path.join(s.root, "etc"), "overlay", sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV,
                 "lowerdir=" + ":".join(lowers))


def _under_udi(target: str) -> bool:
    return (target.rstrip("/") + "/").startswith(f"/{UDI}/")


def udi_image(s: Setup, info: dict) -> None:
    """A tmpfs of the container's own at /opt/udiImage (site content, module copies), left
    writable until `seal`: site mounts of modules go below it first."""
    spec = s.spec
    if not (spec.opt_udi_image or spec.module_copy or spec.gpus
            or any(_under_udi(v.target) for v in spec.site_mounts)):
        return
    udi = os.path.join(s.root, UDI)
    sc.mount("tmpfs", udi, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "mode=0755")
    s.udi_mounted = True
    if spec.opt_udi_image and os.path.isdir(spec.opt_udi_image):
        binds.merge_dir(spec.opt_udi_image, udi, {"modules"} if spec.module_copy else set())
    for name, path in spec.module_copy:
        dst = os.path.join(udi, "modules", name)
        os.makedirs(dst, 0o755)
        binds.bind(path, dst, rec=True)


def hostsfile(s: Setup, info: dict) -> None:
    if s.spec.hosts is not None:
        path = os.path.join(s.root, "var/hostsfile")
        with open(path, "w") as f:
            f.write(etcfiles.hostsfile(s.spec.hosts))
        os.chmod(path, 0o644)


def shifter_config(s: Setup, info: dict) -> None:
    """/var/shifterConfig.json, as the original writes it for scripts that read it: the
    image's identifier, the user's name, the user's volume mappings (sorted, joined by ';')
    and the modules (each followed by ',')."""
    path = os.path.join(s.root, SHIFTER_CONFIG_JSON)
    with open(path, "w") as f:
        f.write(etcfiles.shifter_config(s.spec) + "\n")
    os.chmod(path, 0o644)


def unstage(s: Setup, info: dict) -> None:
    sc.umount2(s.image, sc.MNT_DETACH)  # the binds and the overlay keep the image alive
    sc.umount2(s.gen, sc.MNT_DETACH)
    os.rmdir(s.image)
    os.rmdir(s.gen)
    os.rmdir(s.stage)


def system(s: Setup, info: dict) -> None:
    binds.mount_host_parts(s.root, s.privileged)


def site_mounts(s: Setup, info: dict) -> None:
    info["count"] = len(s.spec.site_mounts)
    for volume in s.spec.site_mounts:
        binds.mount_site(s.root_fd, volume, s.prop)


def site_hook(which: str) -> Callable[[Setup, dict], None]:
    def run(s: Setup, info: dict) -> None:
        from runtime import hooks

        for key, script in s.spec.site_hooks:
            if key == which:
                info["script"] = script
                hooks.run_site_hook(key, script, s.root, s.spec)
    return run


def _has_site_hook(which: str) -> Callable[[Setup], bool]:
    return lambda s: any(key == which for key, _ in s.spec.site_hooks)


def root_hooks(s: Setup, info: dict) -> None:
    from runtime import hooks

    info["count"] = len(s.spec.root_hooks)
    for module, hook in s.spec.root_hooks:
        hooks.run_root_hook(module, hook, s.root, s.spec)


def volumes(s: Setup, info: dict) -> None:
    user_binds = [v for v in s.spec.volumes if not v.cache]
    info["count"] = len(user_binds)
    walk = s.user_walk()
    for volume, fd in zip(user_binds, s.source_fds):
        try:
            binds.mount_volume(walk, volume, fd, s.prop)
        except BuildError as err:
            raise BuildError(f"volume {volume.text()!r}: {err}") from None


def caches(s: Setup, info: dict) -> None:
    from runtime import cache

    wanted = [v for v in s.spec.volumes if v.cache]
    info["count"] = len(wanted)
    walk = s.user_walk()
    for index, volume in enumerate(wanted):
        try:
            cache.mount_cache(walk, s.spec, s.key, index, volume)
        except BuildError as err:
            raise BuildError(f"volume {volume.text()!r}: {err}") from None


def seal(s: Setup, info: dict) -> None:
    """Last: /opt/udiImage read-only (with everything mounted below it), every mount
    nosuid,nodev; /dev bound after that (it keeps its devices, not suid)."""
    if s.udi_mounted:
        sc.mount_setattr(os.path.join(s.root, UDI), sc.MOUNT_ATTR_RDONLY | sc.MOUNT_ATTR_NOSUID | sc.MOUNT_ATTR_NODEV,
                         recursive=True)
    sc.mount_setattr(s.root, sc.MOUNT_ATTR_NOSUID | sc.MOUNT_ATTR_NODEV, propagation=s.prop, recursive=True)
    if not s.own_dev:  # else gpu_dev makes it
        binds.bind("/dev", os.path.join(s.root, "dev"), rec=True)
        sc.mount_setattr(os.path.join(s.root, "dev"), sc.MOUNT_ATTR_NOSUID, propagation=s.prop, recursive=True)
    os.chmod(s.root, 0o755)
    sc.mount_setattr(s.root, sc.MOUNT_ATTR_NOSUID | sc.MOUNT_ATTR_NODEV)


PHASES: tuple[Phase, ...] = (
    Phase("root", make_root),
    Phase("image", mount_image),
    Phase("image_entries", image_entries),
    Phase("etc", etc),
    Phase("udiImage", udi_image),
    Phase("hostsfile", hostsfile),
    Phase("shifter_config", shifter_config),
    Phase("unstage", unstage),
    Phase("system", system),
    Phase("site_pre_mount_hook", site_hook("site_pre_mount_hook"), when=_has_site_hook("site_pre_mount_hook")),
    Phase("site_mounts", site_mounts),
    Phase("site_post_mount_hook", site_hook("site_post_mount_hook"), when=_has_site_hook("site_post_mount_hook")),
    Phase("gpu", gpu_files, when=lambda s: bool(s.spec.gpus)),
    Phase("root_hooks", root_hooks, when=lambda s: bool(s.spec.root_hooks)),
    Phase("volumes", volumes),
    Phase("cache", caches, when=lambda s: any(v.cache for v in s.spec.volumes)),
    Phase("seal", seal),
    Phase("gpu_dev", gpu_dev, when=lambda s: s.own_dev),
)


def populate(spec: ContainerSpec, root: str, steps: Steps, *, key: str, privileged: bool,
             image_mounter: Callable[[str, str], str] | None = None, source_fds: list[int] | None = None) -> None:
    """Build the container root at `root` (already an empty directory) in the current,
    private mount namespace, running PHASES in order. `image_mounter(squashfs, target)`
    mounts the image (loop as root, squashfuse rootless); `source_fds` are the user
    volumes' resolved sources (binds.resolve_sources)."""
    refusal = None if privileged else needs_privilege(spec)
    if refusal:
        raise BuildError(refusal)
    s = Setup(spec, root, key, privileged, image_mounter or mount_image_loop, source_fds or [])
    try:
        for phase in PHASES:
            if phase.when(s):
                with steps(phase.name) as info:
                    phase.run(s, info)
    finally:
        if s.root_fd >= 0:
            os.close(s.root_fd)


def pivot_into(root: str) -> None:
    """Make `root` the root of the current mount namespace; the old root is detached, so
    nothing of the host (nor other containers' pins) stays reachable or referenced."""
    os.chdir(root)
    sc.pivot_root(".", ".")
    sc.umount2(".", sc.MNT_DETACH)
    os.chdir("/")

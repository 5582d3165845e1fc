"""The GPU module's two build phases (runtime/gpu.py decides what; these make it): the
node's driver files under /opt/udiImage/gpu, and, after seal, a /dev of the container's own
without the GPUs not allocated. Rows of runtime.phases.PHASES (which imports this module)."""

from __future__ import annotations

import os

from runtime import binds
from runtime import syscalls as sc
from runtime.setupstate import Setup


def _bind_file(source: str, target: str) -> None:
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644))
    binds.bind(source, target)


def gpu_files(s: Setup, info: dict) -> None:
    """The node's driver libraries (its loader cache, the site's patterns) and tools under
    /opt/udiImage/gpu (read-only with it at seal), each under its loader-cache name: a link
    into the node's directory holding it, bound once (runtime.gpu.layout)."""
    from runtime import gpu

    plan = gpu.host_plan(s.spec.gpus, s.spec.gpu)
    s.gpu_plan = plan
    dirs, links = gpu.layout(plan.libraries, plan.tools)
    for index, directory in enumerate(dirs):
        target = os.path.join(s.root, gpu.CONTAINER_HOST_DIR.lstrip("/"), str(index))
        os.makedirs(target, 0o755)
        binds.bind(directory, target)
    for directory in (gpu.CONTAINER_LIB_DIR, gpu.CONTAINER_BIN_DIR):
        os.makedirs(os.path.join(s.root, directory.lstrip("/")), 0o755, exist_ok=True)
    for link, target in links:
        os.symlink(target, os.path.join(s.root, link.lstrip("/")))
    info.update(gpus=list(plan.gpus), libraries=len(plan.libraries), tools=len(plan.tools), mounts=len(dirs))


def gpu_dev(s: Setup, info: dict) -> None:
    """After seal, as root: a /dev of the container's own (a nosuid tmpfs) holding the host's
    /dev except the GPUs not allocated, which are absent inside. Device nodes are copied
    (mknod, same numbers, mode and owner: no mount each), directories and mount points
    (pts, shm, mqueue...) bound, links copied, other files (the /dev/log socket) bound."""
    import stat

    plan = s.gpu_plan
    wanted = {os.path.basename(d) for d in plan.devices}
    dev = os.path.join(s.root, "dev")
    sc.mount("tmpfs", dev, "tmpfs", sc.MS_NOSUID, "mode=0755,size=64k")
    hidden, binds_made = [], 0
    umask = os.umask(0o022)
    os.umask(umask)
    for entry in os.scandir("/dev"):
        name = entry.name
        if name.startswith("nvidia") and name[6:].isdigit() and name not in wanted:
            hidden.append(name)
            continue
        target = os.path.join(dev, name)
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            os.mknod(target, st.st_mode, st.st_rdev)
            if st.st_uid or st.st_gid:  # most are root's: skip the syscalls
                os.chown(target, st.st_uid, st.st_gid)
            if st.st_mode & umask:
                os.chmod(target, stat.S_IMODE(st.st_mode))
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(entry.path), target)
        elif stat.S_ISDIR(st.st_mode):
            os.mkdir(target, stat.S_IMODE(st.st_mode))
            binds.bind(entry.path, target, rec=True)
            binds_made += 1
        else:
            _bind_file(entry.path, target)
            binds_made += 1
    sc.mount_setattr(dev, sc.MOUNT_ATTR_NOSUID, propagation=s.prop, recursive=True)
    info.update(devices=sorted(wanted), hidden=sorted(hidden), binds=binds_made)

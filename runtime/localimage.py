"""`local:/path` images: a directory tree on the node (e.g. the site's /dsl) used in place as
the image, bound read-only, nosuid, nodev: the original's local image type (allowLocalChroot).

Allowed where the site says so (`allow_local_images`), and always for the site's own CCM
tree (`ccm.root`, what `sbatch --ccm` without --image uses). The tree and every directory
above it must be root's alone (runtime.trusted): root builds on it, so nothing a user could
change may be on the way. Its id is derived from the path (64 hex digits, as every image id),
so jobs, steps and records carry it like any other; the request `local:/path` travels with
it and each privileged step checks the path again and that it still gives that id.
"""

from __future__ import annotations

import os
import stat
from types import SimpleNamespace

from shifter_site.errors import ImageError

PREFIX = "local:"


def is_local(ref: str | None) -> bool:
    return bool(ref) and ref.startswith(PREFIX)


def local_id(path: str) -> str:
    """The image id of a local tree: a digest of its path (not of its content, which is the
    site's and may change under a running job, as in the original)."""
    import hashlib

    return hashlib.sha256((PREFIX + path).encode()).hexdigest()


def _path(ref: str) -> str:
    path = ref[len(PREFIX):]
    if not path:
        raise ImageError(f"image {ref!r}: give the image's directory after 'local:', e.g. --image=local:/dsl")
    parts = path.split("/")
    if not path.startswith("/") or ".." in parts or "\0" in path:
        raise ImageError(f"image {ref!r}: {path!r} is not an absolute path without '..'; write local:/path/to/tree")
    return "/" + "/".join(p for p in parts if p and p != ".")


def allowed(cfg, path: str) -> bool:
    ccm = getattr(cfg, "ccm", None)
    return bool(cfg.allow_local_images) or (ccm is not None and ccm.root is not None and path == _path(PREFIX + ccm.root))


def check(cfg, ref: str) -> str:
    """The tree's path if `ref` (local:/path) may be used here, else ImageError (one line)."""
    from runtime.trusted import UntrustedPath, open_trusted

    path = _path(ref)
    if not allowed(cfg, path):
        raise ImageError(f"image {ref!r}: local images are not allowed on this site (allow_local_images is "
                         "off); use a docker: image, or ask the admins")
    try:
        fd = open_trusted(path)
    except UntrustedPath as err:
        raise ImageError(f"image {ref!r}: {err}; a local image must be a tree only root can change "
                         "(ask the admins)") from None
    except OSError as err:
        raise ImageError(f"image {ref!r}: {path}: {err.strerror}; give an existing directory tree") from None
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            raise ImageError(f"image {ref!r}: {path} is not a directory; give the root directory of an image tree")
    finally:
        os.close(fd)
    return path


def record(cfg, ref: str, image_id: str | None = None):
    """An image record (the attributes runtime.spec reads from imagefiles.ImageRecord) for
    a local tree: no ENV, ENTRYPOINT or CMD, as in the original. `image_id`: the id the
    request came with, refused unless it is this tree's."""
    path = check(cfg, ref)
    found = local_id(path)
    if image_id is not None and image_id != found:
        raise ImageError(f"image {ref!r} does not have the id {image_id}; resubmit with --image={ref}")
    return SimpleNamespace(id=found, system=cfg.system, itype="local", tag=path, digest="", env=[],
                           entrypoint=None, cmd=None, workdir="", user="", labels={}, user_acl=[],
                           group_acl=[], size=0, neutralised={}, last_pull=0.0)


def mount_tree(path: str, target: str, privileged: bool) -> None:
    """A local: image (runtime.localimage): the tree bound read-only, nosuid, nodev from the
    fd its trust check opened (as root: nothing swapped in between). Rootless, the check
    ran before the user namespace (where root's files show as nobody's) and binds nothing
    the user could not bind anyway."""
    from runtime import syscalls as sc
    from runtime.errors import BuildError
    from runtime.trusted import UntrustedPath, open_trusted

    try:
        fd = open_trusted(path) if privileged else os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except (UntrustedPath, OSError) as err:
        raise BuildError(f"local image {path}: {getattr(err, 'strerror', None) or err}") from None
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            raise BuildError(f"local image {path} is not a directory")
        tree = sc.clone_tree(fd)
    finally:
        os.close(fd)
    try:
        sc.mount_setattr("", sc.MOUNT_ATTR_RDONLY | sc.MOUNT_ATTR_NOSUID | sc.MOUNT_ATTR_NODEV,
                         propagation=sc.MS_PRIVATE, dirfd=tree)
        target_fd = os.open(target, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            sc.attach_tree(tree, target_fd)
        finally:
            os.close(target_fd)
    finally:
        os.close(tree)

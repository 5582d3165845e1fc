"""The image files the gateway publishes and compute nodes read: the contract between them.

In the site's `image_dir`, for each image id (the manifest digest's 64 hex digits):

    <id>.squashfs   the flattened image (ro, root-owned entries, no setuid/device nodes)
    <id>.json       its ImageRecord (below)

Both are written under a temporary name and renamed into place, the squashfs first and the
record last: an image exists for readers exactly when its record exists, so a reader never
sees a half-written image.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import msgspec

from shifter_site.errors import ImageError  # noqa: F401  (callers use imagefiles.ImageError)
from shifter_site.imageid import check_id  # noqa: F401  (the one rule; also imagefiles.check_id)


class ImageRecord(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """What a node needs to know about an image besides its squashfs.

    Field names follow the original gateway's JSON records where one exists.
    """

    id: str                                   # 64 hex digits; = digest without "sha256:"
    system: str                               # cluster name it was pulled for
    itype: str = "docker"                     # reference type: docker, id, local, custom
    tag: str = ""                             # the reference as pulled, e.g. ubuntu:22.04
    digest: str = ""                          # sha256:<id>
    env: list[str] = []                       # image ENV, "K=V" entries in order
    entrypoint: list[str] | None = None       # ENTRYPOINT
    cmd: list[str] | None = None              # CMD
    workdir: str = ""                         # WORKDIR ("" = not set)
    user: str = ""                            # USER (informational: we always run as the caller)
    labels: dict[str, str] = {}
    user_acl: list[int] = []                  # private image: uids allowed (empty = public)
    group_acl: list[int] = []                 # private image: gids allowed
    size: int = 0                             # bytes of the squashfs
    neutralised: dict[str, int] = {}          # hostile/unsafe entries dropped or fixed, by kind
    last_pull: float = 0.0                    # unix time of the conversion


def squashfs_path(image_dir: str, image_id: str) -> Path:
    return Path(image_dir) / f"{check_id(image_id)}.squashfs"


def record_path(image_dir: str, image_id: str) -> Path:
    return Path(image_dir) / f"{check_id(image_id)}.json"


def read_record(image_dir: str, image_id: str) -> ImageRecord:
    """The record of a published image, or ImageError saying it is not there."""
    path = record_path(image_dir, image_id)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"image {image_id} is not in {image_dir}; pull it first (shifterimg pull REF)") from None
    try:
        record = msgspec.json.decode(data, type=ImageRecord)
    except msgspec.DecodeError as err:
        raise ImageError(f"{path} is not a valid image record ({err}); re-pull the image") from None
    if record.id != image_id:
        raise ImageError(f"{path} describes image {record.id}, not {image_id}; re-pull the image")
    if not squashfs_path(image_dir, image_id).is_file():
        raise ImageError(f"{squashfs_path(image_dir, image_id)} is missing; re-pull the image")
    return record


def publish(image_dir: str, record: ImageRecord, squashfs_tmp: str | os.PathLike) -> None:
    """Move a finished squashfs into place, then write its record: readers never see half.
    A private record's squashfs is readable by its owner (the gateway), root and the listed
    users and groups only (restrict)."""
    target = squashfs_path(image_dir, record.id)
    restrict(squashfs_tmp, record.user_acl, record.group_acl)
    had_record = os.path.exists(record_path(image_dir, record.id))
    os.replace(squashfs_tmp, target)
    try:
        write_record(image_dir, record)
    except OSError as err:  # e.g. the disk filled up: no squashfs left without its record
        if not had_record:
            Path(target).unlink(missing_ok=True)
        raise ImageError(f"cannot write the record of image {record.id} in {image_dir} "
                         f"({err.strerror or err}); nothing was published: free space there, then pull again") from None


def restrict(path: str | os.PathLike, user_acl: list[int], group_acl: list[int]) -> None:
    """Public (both lists empty): mode 0644, no ACL. Private: mode 0600 plus a POSIX ACL
    entry granting read to each listed uid and gid (setfacl, apt package `acl`): other users
    cannot open the file, also where the gateway runs as a non-root account."""
    import subprocess

    private = bool(user_acl or group_acl)
    os.chmod(path, 0o600 if private else 0o644)
    entries = [f"u:{int(u)}:r" for u in user_acl] + [f"g:{int(g)}:r" for g in group_acl]
    argv = ["setfacl", "-b", str(path)] if not private else ["setfacl", "--set",
                                                              ",".join(["u::rw", "g::-", "o::-", *entries]), str(path)]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0 and (private or "Operation not supported" not in proc.stderr):
        raise ImageError(f"cannot set who may read {path}: {proc.stderr.strip() or 'setfacl failed'}; "
                         f"the image directory's filesystem must support POSIX ACLs (tell the site admins)")


def write_record(image_dir: str, record: ImageRecord) -> None:
    """Write (or replace) the record of a published image atomically."""
    fd, tmp = tempfile.mkstemp(dir=image_dir, prefix=f".{record.id}.", suffix=".json.tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(msgspec.json.encode(record))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, record_path(image_dir, record.id))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def list_records(image_dir: str) -> list[ImageRecord]:
    """Every published image (records whose squashfs is present)."""
    out = []
    for path in sorted(Path(image_dir).glob("*.json")):
        try:
            out.append(read_record(image_dir, path.stem))
        except ImageError:
            continue
    return out

"""The tag index: which image a name means, published by the gateway beside the images, so a
node resolves `shifter --image=docker:NAME` by reading one small file, as it reads the image
record, instead of asking the gateway over HTTP on every launch (docs/architecture.md, decision
14: 5.4x the launch by id before).

    <image_dir>/tags/<itype>/<canonical key, '%' and '/' escaped>    ->  "<64 hex id>\\n"

e.g. `tags/docker/127.0.0.1:5000%2Fdemo%2Fapp:1.0`. The key is the one the gateway files the
image under (imagegw.sources.canonical), so every spelling of a name finds one entry.

Public images only: a private image's name is never written here (its entry is removed before
its files are restricted), so nobody learns from this directory which private images exist;
lookups of private images, of names not here (pulled before the index existed, long keys,
digest references) and of entries whose image is gone go to the gateway as before. An entry
is written after the image's record and replaced atomically, so a reader never sees an entry
whose image is half-published. Standard library only: the launch path imports this.
"""

from __future__ import annotations

import os

from shifter_site.imageid import is_id

DIR = "tags"
NAME_MAX = 255


def entry_path(image_dir: str, itype: str, key: str) -> str | None:
    """Where the entry for (itype, canonical key) lives; None for keys that have none (too
    long for one file name, or a digest reference, which names its image already)."""
    if "@" in key or not key or itype not in ("docker",):
        return None
    name = key.replace("%", "%25").replace("/", "%2F")
    if len(name.encode()) > NAME_MAX or name.startswith("."):
        return None
    return os.path.join(image_dir, DIR, itype, name)


def read(image_dir: str, itype: str, key: str) -> str | None:
    """The image id published for this name, or None (no entry: ask the gateway)."""
    path = entry_path(image_dir, itype, key)
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        text = os.read(fd, 128).decode("ascii", "replace").strip()
    except OSError:
        return None
    finally:
        os.close(fd)
    return text if is_id(text) else None


def publish(image_dir: str, itype: str, key: str, image_id: str, public: bool) -> None:
    """Point the name at `image_id` (a public image: readable by everyone, mode 0644), or,
    for a private image, make sure the name is not in the index. Called by the gateway after
    it published the image's record (and before it restricts an image that turns private)."""
    path = entry_path(image_dir, itype, key)
    if path is None:
        return
    if not public:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    if not is_id(image_id):
        raise ValueError(f"{image_id!r} is not an image id")
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    for d in (os.path.dirname(directory), directory):  # readable by every user whatever the umask
        if os.stat(d).st_mode & 0o777 != 0o755:
            os.chmod(d, 0o755)
    tmp = os.path.join(directory, f".{os.getpid()}.{id(path)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        try:
            os.write(fd, f"{image_id}\n".encode())
            os.fchmod(fd, 0o644)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise

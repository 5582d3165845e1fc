"""`shifterimg import PATH NAME` (admins): publish a prebuilt image as `custom:NAME`.

Three forms are accepted, told apart by their content, never by their name:
- a squashfs file: unpacked as a stream (`sqfs2tar`) and converted again, as one layer;
- a `docker save` archive (a tar with `manifest.json`; its layers plain tars or compressed);
- an OCI image layout (a tar of the directory: `oci-layout`, `index.json`, `blobs/`).

Nothing in the archive is extracted to disk by name: the manifest's layer names are looked up
as members of the tar and copied, by content digest, into the gateway's layer cache (an OCI
blob whose content does not match its digest is refused). The layers then take the pull's
own path, `squash.convert`, with the same caps and the same neutralisation (setuid bits,
devices, links out of the tree, ...), and the image is published like a pulled one. The
image id is the sha256 of the uploaded file. A corrupt or hostile archive is refused with one
line; nothing is published and no row is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import zlib
from pathlib import Path, PurePosixPath

from shifter_site import imagefiles, logs
from shifter_site.config import Config
from shifter_site.errors import ShifterError

from imagegw import pull as pulling
from imagegw import registry, squash

log = logs.get("gateway.import")
_CHUNK = 1 << 20


class ArchiveError(ShifterError):
    """The archive cannot be imported; the message says why."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def kind(path: Path) -> str:
    """"squashfs", "docker-save" or "oci" from the content; ArchiveError otherwise."""
    with open(path, "rb") as f:
        if f.read(4) == b"hsqs":
            return "squashfs"
    try:
        tar = tarfile.open(path, "r:")
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ArchiveError(f"the file is not a squashfs, a docker save archive or an OCI layout ({err}); "
                           f"give one of those (an OCI layout directory is sent as a tar)") from None
    try:
        with tar:
            names = {PurePosixPath(m.name).as_posix().removeprefix("./") for m in _members(tar)}
    except (tarfile.TarError, EOFError, OSError) as err:  # a tar that breaks off
        raise ArchiveError(f"the archive is corrupt ({err}); nothing was published") from None
    if "manifest.json" in names:
        return "docker-save"
    if "oci-layout" in names and "index.json" in names:
        return "oci"
    raise ArchiveError("the tar holds neither manifest.json (docker save) nor oci-layout and index.json "
                       "(an OCI layout); give a squashfs, a docker save archive or an OCI layout")


def _members(tar: tarfile.TarFile, limit: int = 100_000) -> list[tarfile.TarInfo]:
    members = []
    for m in tar:
        members.append(m)
        if len(members) > limit:
            raise ArchiveError(f"the archive holds more than {limit} entries; an image archive holds a few")
    return members


def _regular(tar: tarfile.TarFile, name: str) -> tarfile.TarInfo:
    """The regular-file member `name` (a plain relative name); links and odd names refused."""
    clean = PurePosixPath(name)
    if clean.is_absolute() or ".." in clean.parts or not name:
        raise ArchiveError(f"the archive names {name!r}, outside the archive; refused")
    wanted = clean.as_posix()
    for m in tar.getmembers():
        if PurePosixPath(m.name).as_posix().removeprefix("./") == wanted:
            if not m.isreg():
                raise ArchiveError(f"{name!r} in the archive is not a regular file (a link or device); refused")
            return m
    raise ArchiveError(f"the archive's manifest names {name!r}, which is not in it; the archive is incomplete")


def _json(tar: tarfile.TarFile, name: str, limit: int = 4 << 20) -> object:
    m = _regular(tar, name)
    if m.size > limit:
        raise ArchiveError(f"{name} in the archive is {m.size} bytes; too large for image metadata")
    try:
        return json.loads(tar.extractfile(m).read())
    except ValueError as err:
        raise ArchiveError(f"{name} in the archive is not valid JSON ({err})") from None


def _to_cache(tar: tarfile.TarFile, name: str, cache: registry.LayerCache, expect: str | None = None) -> str:
    """Copy member `name` into the layer cache under its content digest ("sha256:..."),
    checked against `expect` when given."""
    member = _regular(tar, name)
    source = tar.extractfile(member)
    fd, tmp = tempfile.mkstemp(dir=cache.root, prefix=".import.", suffix=".part")
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(_CHUNK):
                h.update(chunk)
                out.write(chunk)
        digest = f"sha256:{h.hexdigest()}"
        if expect is not None and digest != expect:
            raise ArchiveError(f"blob {name} does not match its digest {expect} (it is {digest}); "
                               f"the layout is corrupt")
        os.replace(tmp, cache.path(digest))
        return digest
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _docker_save(tar: tarfile.TarFile, cache: registry.LayerCache) -> tuple[list[str], dict]:
    manifest = _json(tar, "manifest.json")
    if not (isinstance(manifest, list) and len(manifest) == 1 and isinstance(manifest[0], dict)
            and isinstance(manifest[0].get("Layers"), list) and isinstance(manifest[0].get("Config"), str)):
        raise ArchiveError("manifest.json must describe exactly one image (Config, Layers); "
                           "save one image per archive (docker save IMAGE)")
    config = _json(tar, manifest[0]["Config"])
    digests = [_to_cache(tar, layer, cache) for layer in manifest[0]["Layers"] if isinstance(layer, str)]
    if len(digests) != len(manifest[0]["Layers"]) or not digests:
        raise ArchiveError("manifest.json's Layers must be a non-empty list of file names")
    return digests, config if isinstance(config, dict) else {}


def _blob_name(descriptor: object) -> tuple[str, str]:
    digest = descriptor.get("digest", "") if isinstance(descriptor, dict) else ""
    algorithm, _, hexpart = digest.partition(":")
    if algorithm != "sha256" or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise ArchiveError(f"the layout names a blob {digest!r}, which is not sha256:<64 hex>")
    return f"blobs/sha256/{hexpart}", digest


def _oci(tar: tarfile.TarFile, cache: registry.LayerCache, platform: str) -> tuple[list[str], dict]:
    index = _json(tar, "index.json")
    manifests = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(manifests, list) or not manifests:
        raise ArchiveError("index.json lists no manifest; the layout holds no image")
    descriptor = manifests[0]
    for _ in range(2):  # an index inside the layout: the site's platform
        name, _digest = _blob_name(descriptor)
        document = _json(tar, name)
        if isinstance(document, dict) and "manifests" in document:
            wanted = dict(zip(("os", "architecture"), platform.split("/")))
            choices = [m for m in document["manifests"] if isinstance(m, dict)
                       and all((m.get("platform") or {}).get(k) == v for k, v in wanted.items())]
            if not choices:
                raise ArchiveError(f"the layout's index has no image for {platform}")
            descriptor = choices[0]
            continue
        break
    if not isinstance(document, dict) or not isinstance(document.get("layers"), list) or not document["layers"]:
        raise ArchiveError("the layout's manifest lists no layers")
    config = _json(tar, _blob_name(document.get("config"))[0])
    digests = []
    for layer in document["layers"]:
        name, digest = _blob_name(layer)
        digests.append(_to_cache(tar, name, cache, expect=digest))
    return digests, config if isinstance(config, dict) else {}


class _Tee:
    """A read-only stream that copies what is read from `source` into `out` (tarfile's stream
    mode reads the tar through it, so the headers are seen before each file's bytes land)."""

    def __init__(self, source, out) -> None:
        self.source, self.out = source, out

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.out.write(data)
        return data


def _squashfs(path: Path, cache: registry.LayerCache, max_bytes: int, max_files: int) -> tuple[list[str], dict]:
    """The squashfs as one tar layer (sqfs2tar streams it; nothing is mounted or unpacked).
    The stream is read as a tar on the way and stopped at the site's caps, before a file's
    bytes reach the cache: a squashfs of a few KB (sparse files) can unpack to any size."""
    exe = shutil.which("sqfs2tar")
    if not exe:
        raise ArchiveError("sqfs2tar is not installed on the gateway host; install squashfs-tools-ng")
    fd, tmp = tempfile.mkstemp(dir=cache.root, prefix=".import.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, tempfile.TemporaryFile() as errors:
            proc = subprocess.Popen([exe, "--no-skip", str(path)], stdout=subprocess.PIPE, stderr=errors)
            unreadable, finished = None, False
            try:
                tee, entries, size = _Tee(proc.stdout, out), 0, 0
                with tarfile.open(fileobj=tee, mode="r|") as tar:
                    for member in tar:
                        entries, size = entries + 1, size + (member.size if member.isreg() else 0)
                        if entries > max_files or size > max_bytes:
                            raise ArchiveError(
                                f"the squashfs unpacks to more than this site's limits (gateway.max_image_size "
                                f"{max_bytes} bytes, gateway.max_image_files {max_files}); make the image "
                                f"smaller or ask the admins")
                while tee.read(1 << 20):  # the end-of-archive blocks
                    pass
                finished = True
            except tarfile.TarError as err:
                unreadable = err
            finally:
                if not finished and proc.poll() is None:
                    proc.kill()  # stopped at a cap, or the tar was unreadable
                proc.stdout.close()
                code = proc.wait(timeout=3600)
            errors.seek(0)
            why = errors.read().decode(errors="replace").strip().splitlines()
        if code != 0:
            raise ArchiveError(f"the squashfs cannot be read ({why[-1] if why else f'exit {code}'}); "
                               f"it is corrupt or not a squashfs")
        if unreadable is not None:
            raise unreadable
        digest = f"sha256:{sha256_file(Path(tmp))}"
        os.replace(tmp, cache.path(digest))
        return [digest], {}
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def publish(cfg: Config, cache: registry.LayerCache, upload: Path, name: str, compression: str = "zstd",
            on_layers=None) -> imagefiles.ImageRecord:
    """Convert the uploaded archive and publish it as `custom:name`; its record."""
    try:
        return _publish(cfg, cache, upload, name, compression, on_layers)
    except (tarfile.TarError, EOFError, zlib.error) as err:
        raise ArchiveError(f"the archive is corrupt ({type(err).__name__}: {err}); nothing was published") from None


def _publish(cfg: Config, cache: registry.LayerCache, upload: Path, name: str, compression: str,
             on_layers) -> imagefiles.ImageRecord:
    image_id = sha256_file(upload)
    what = kind(upload)
    with logs.step(log, "import", name=name, id=image_id, kind=what) as info:
        if what == "squashfs":
            digests, config = _squashfs(upload, cache, cfg.gateway.max_image_size_bytes, cfg.gateway.max_image_files)
        else:
            with tarfile.open(upload, "r:") as tar:
                _members(tar)
                digests, config = (_docker_save(tar, cache) if what == "docker-save"
                                   else _oci(tar, cache, cfg.registries.platform))
        if on_layers:
            on_layers(image_id, digests)
        tmp = pulling.temp_path(cfg.image_dir, image_id)
        try:
            flat = squash.convert([cache.path(d) for d in digests], tmp, compression=compression,
                                  max_bytes=cfg.gateway.max_image_size_bytes, max_files=cfg.gateway.max_image_files)
        except squash.ConversionError as err:
            raise ArchiveError(f"the image cannot be converted: {err}") from None
        except ShifterError as err:  # a layer the flattener refuses (corrupt, over the caps)
            tmp.unlink(missing_ok=True)
            raise ArchiveError(str(err)) from None
        try:
            record = imagefiles.ImageRecord(
                id=image_id, system=cfg.system, itype="custom", tag=name, digest=f"sha256:{image_id}",
                size=tmp.stat().st_size, neutralised=dict(flat.neutralised), last_pull=time.time(),
                **pulling.metadata(config))
            imagefiles.publish(cfg.image_dir, record, tmp)
        finally:
            tmp.unlink(missing_ok=True)
        info.update(layers=len(digests), entries=flat.entries, neutralised=dict(flat.neutralised))
    return record

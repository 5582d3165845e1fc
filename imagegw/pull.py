"""One pull, start to end: resolve the manifest, fetch layers into the cache, convert, publish.

Used by the service's workers (and by bench/ and tests directly). Each step is one log event
with its duration. The squashfs is written as `.<id>.<pid>.squashfs.tmp` in the image
directory (same filesystem, so the final rename is atomic) and published with
shifter_site.imagefiles.publish, record last.
"""

from __future__ import annotations

import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import msgspec

from shifter_site import imagefiles, logs, tagindex
from shifter_site.config import Config

from imagegw import reference, registry, sources, squash

log = logs.get("gateway.pull")
_TMP = re.compile(r"^\.([0-9a-f]{64})\.(\d+)\.squashfs\.tmp$")


def metadata(config: dict) -> dict:
    """ENV, ENTRYPOINT, CMD, WORKDIR, USER, LABELS from an image config, as ImageRecord fields."""
    c = config.get("config") or {}
    return {
        "env": list(c.get("Env") or []),
        "entrypoint": list(c["Entrypoint"]) if c.get("Entrypoint") else None,
        "cmd": list(c["Cmd"]) if c.get("Cmd") else None,
        "workdir": c.get("WorkingDir") or "",
        "user": c.get("User") or "",
        "labels": {str(k): str(v) for k, v in (c.get("Labels") or {}).items()},
    }


def temp_path(image_dir: str, image_id: str) -> Path:
    return Path(image_dir) / f".{imagefiles.check_id(image_id)}.{os.getpid()}.squashfs.tmp"


def clean_stale_temps(image_dir: str) -> int:
    """Remove temporary squashfs files whose writer process is gone (a killed gateway)."""
    removed = 0
    for path in Path(image_dir).glob(".*.squashfs.tmp"):
        m = _TMP.match(path.name)
        if not m:
            continue
        pid = int(m.group(2))
        if pid == os.getpid() or not Path(f"/proc/{pid}").exists():  # ours from a past life, or orphaned
            path.unlink(missing_ok=True)
            removed += 1
    return removed


class Progress:
    """Counters a pull updates and a reporter reads (layers, bytes, entries)."""

    def __init__(self, report: Callable[[dict], None] | None = None, every: float = 0.25):
        self.data = {"layers": 0, "layers_done": 0, "bytes": 0, "bytes_total": 0, "entries": 0}
        self._report = report
        self._every = every
        self._last = 0.0
        self._lock = threading.Lock()

    def add(self, **counts: int) -> None:
        with self._lock:
            for k, v in counts.items():
                self.data[k] = self.data.get(k, 0) + v
            now = time.monotonic()
            if self._report and now - self._last >= self._every:
                self._last = now
                self._report(dict(self.data))

    def set(self, **values: int) -> None:
        with self._lock:
            self.data.update(values)
        if self._report:
            self._report(dict(self.data))


def resolve(cfg: Config, ref: reference.Reference, auth_file: str | None,
            user_credentials: registry.Credentials | None = None) -> tuple[registry.Client, registry.Resolved]:
    """The manifest from the first endpoint that has it: a registry's mirrors in order (the
    next one when one is unreachable or lacks the image), else the registry itself.
    `user_credentials` (a user's `shifterimg login`) replace the site's auth file."""
    urls = sources.endpoints(cfg.registries, ref)
    for index, base in enumerate(urls):
        credentials = user_credentials or (registry.credentials_for(urlsplit(base).netloc, auth_file)
                                           or registry.credentials_for(ref.host, auth_file))
        client = registry.Client(base, ref.repository, credentials, timeout=cfg.gateway.timeout, name=ref.host,
                                 auth_hosts=cfg.registries.auth_hosts)
        try:
            with logs.step(log, "resolve", ref=ref.key, endpoint=base) as info:
                resolved = client.resolve(ref.manifest_ref, cfg.registries.platform)
                info.update(digest=resolved.digest, layers=len(resolved.layers))
            return client, resolved
        except (registry.Unreachable, registry.NotFound):
            client.close()
            if index == len(urls) - 1:
                raise
            log.warning("mirror_skipped", ref=ref.key, endpoint=base)
        except BaseException:
            client.close()
            raise
    raise AssertionError("endpoints() is never empty")


def pull(cfg: Config, ref: reference.Reference, cache: registry.LayerCache, *,
         compression: str = "zstd", auth_file: str | None = None,
         on_state: Callable[[str], None] | None = None, progress: Progress | None = None,
         workers: int = 4, acl: tuple[list[int], list[int]] = ([], []),
         credentials: registry.Credentials | None = None,
         on_layers: Callable[[str, list[str]], None] | None = None) -> imagefiles.ImageRecord:
    """Pull and convert `ref`, publish it in cfg.image_dir, return its record. `on_layers(id,
    digests)` is told the layers before any is fetched (the layer cache keeps them).

    An image already published under the same manifest digest is not converted again (its
    access list is set to `acl`: (uids, gids), both empty for a public image).
    """
    progress = progress or Progress()
    on_state = on_state or (lambda state: None)
    ref = sources.canonical(cfg.registries, ref)
    on_state("PULLING")
    client, resolved = resolve(cfg, ref, auth_file, credentials)
    try:
        image_id = resolved.digest.split(":", 1)[1]
        if on_layers:
            on_layers(image_id, [layer.digest for layer in resolved.layers])
        try:
            existing = imagefiles.read_record(cfg.image_dir, image_id)
        except imagefiles.ImageError:
            existing = None
        if existing is not None:
            log.info("already_converted", id=image_id)
            if acl[0] or acl[1]:  # private: out of the index before its files are restricted
                index(cfg, ref.itype, ref.key, existing.id, public=False)
            record = set_access(cfg, existing, acl)  # same manifest digest = same image: nothing to download
            index(cfg, ref.itype, ref.key, record.id, public=not (record.user_acl or record.group_acl))
            return record
        progress.set(layers=len(resolved.layers), bytes_total=sum(l.size for l in resolved.layers))
        tmp = temp_path(cfg.image_dir, image_id)
        pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(resolved.layers))), thread_name_prefix="fetch")
        futures: list = []
        try:
            with logs.step(log, "fetch_and_convert", id=image_id, layers=len(resolved.layers),
                           compression=compression) as info:
                futures = registry.start_fetch(pool, client, resolved.layers, cache,
                                               progress=lambda n: progress.add(bytes=n),
                                               on_done=lambda layer: progress.add(layers_done=1))
                # the merge starts as soon as the newest layer is in the cache
                futures[-1].result()
                on_state("CONVERSION")
                flat = squash.convert(futures, tmp, compression=compression,
                                      progress=lambda entries, _: progress.set(entries=entries),
                                      max_bytes=cfg.gateway.max_image_size_bytes,
                                      max_files=cfg.gateway.max_image_files)
                info.update(entries=flat.entries, bytes=flat.bytes, neutralised=dict(flat.neutralised),
                            relinked=flat.relinked)
            progress.set(entries=flat.entries)  # the final count (the converter reports every few hundred)
            record = imagefiles.ImageRecord(
                id=image_id, system=cfg.system, itype=ref.itype, tag=ref.key, digest=resolved.digest,
                size=tmp.stat().st_size, neutralised=dict(flat.neutralised), last_pull=time.time(),
                user_acl=sorted(acl[0]), group_acl=sorted(acl[1]), **metadata(resolved.config))
            if acl[0] or acl[1]:  # a tag that was public and is pulled private: out of the index first
                index(cfg, ref.itype, ref.key, image_id, public=False)
            with logs.step(log, "publish", id=image_id, size=record.size):
                imagefiles.publish(cfg.image_dir, record, tmp)
            index(cfg, ref.itype, ref.key, image_id, public=not (acl[0] or acl[1]))
        finally:
            for future in futures:  # on failure: downloads not yet started are not started
                future.cancel()
            pool.shutdown(wait=True)
            tmp.unlink(missing_ok=True)
        return record
    finally:
        client.close()


def index(cfg: Config, itype: str, key: str, image_id: str, public: bool) -> None:
    """The published tag index (shifter_site.tagindex): the canonical name `key` means
    `image_id` for every reader (public), or is not in the index (private)."""
    with logs.step(log, "tag_index", key=key, id=image_id, public=public):
        tagindex.publish(cfg.image_dir, itype, key, image_id, public)


def set_access(cfg: Config, record: imagefiles.ImageRecord, acl: tuple[list[int], list[int]]
               ) -> imagefiles.ImageRecord:
    """Give a published image the access list `acl` (uids, gids): its record (what nodes
    check) and its squashfs's file permissions; a no-op when it has it already."""
    users, groups = sorted(acl[0]), sorted(acl[1])
    if record.user_acl == users and record.group_acl == groups:
        return record
    updated = msgspec.structs.replace(record, user_acl=users, group_acl=groups)
    with logs.step(log, "set_access", id=record.id, users=len(users), groups=len(groups)):
        imagefiles.restrict(imagefiles.squashfs_path(cfg.image_dir, record.id), users, groups)
        imagefiles.write_record(cfg.image_dir, updated)
    return updated

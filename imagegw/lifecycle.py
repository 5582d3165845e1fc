"""Removing images: `rm` (now), `expire` (mark, then removed once unused) and `autoexpire`
(every image whose expiry has passed), and the layer cache's garbage collection.

The one rule: an image a running job uses (the prolog's use record, imagegw.store.Use) is
never removed; the refusal names the jobs. The database row goes first, in one transaction
with that check (lookups stop serving it at once); then, when no other name refers to the
same image, its files: the record (what nodes read) before the squashfs. Layers no image
refers to any more leave the layer cache, unless a pull is under way (its layers may not be
recorded yet).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from shifter_site import imagefiles, logs, tagindex
from shifter_site.config import Config

from imagegw import registry
from imagegw.store import InUse, Row, Store

log = logs.get("gateway.lifecycle")


@dataclass
class Removal:
    """What one lifecycle call did."""

    removed: list[str] = field(default_factory=list)       # itype:key of rows removed
    files: list[str] = field(default_factory=list)         # image ids whose files went
    kept: dict[str, list[str]] = field(default_factory=dict)  # itype:key -> jobs using it
    layers: int = 0                                          # layer blobs collected


def remove(cfg: Config, store: Store, cache: registry.LayerCache, row: Row) -> Removal:
    """Remove one image now; InUse (nothing changed) while a job uses it or it is being pulled."""
    done = Removal()
    _remove_one(cfg, store, row, done)
    done.layers = collect_layers(store, cache)
    return done


def expire(cfg: Config, store: Store, cache: registry.LayerCache, row: Row) -> Removal:
    """Mark the image expired now and remove it unless a job uses it (then autoexpire removes
    it once its jobs have ended)."""
    store.update(row.system, row.itype, row.key, expires=time.time())
    return autoexpire(cfg, store, cache, only=row)


def autoexpire(cfg: Config, store: Store, cache: registry.LayerCache, only: Row | None = None) -> Removal:
    """Remove every image whose expiry has passed (or just `only`), except those in use."""
    done = Removal()
    with logs.step(log, "autoexpire", system=cfg.system) as info:
        for row in store.expired(cfg.system):
            if only is not None and (row.itype, row.key) != (only.itype, only.key):
                continue
            try:
                _remove_one(cfg, store, row, done)
            except InUse as err:
                done.kept[f"{row.itype}:{row.key}"] = err.jobs
            except KeyError:  # another gateway removed it meanwhile
                continue
        done.layers = collect_layers(store, cache)
        info.update(removed=len(done.removed), kept=len(done.kept), layers=done.layers)
    return done


def _remove_one(cfg: Config, store: Store, row: Row, done: Removal) -> None:
    with logs.step(log, "remove", ref=row.key, id=row.id or "") as info:
        removed, last = store.remove(row.system, row.itype, row.key)
        done.removed.append(f"{row.itype}:{row.key}")
        tagindex.publish(cfg.image_dir, row.itype, row.key, "", public=False)  # the name is gone
        info["files"] = bool(last and removed.id)
        if last and removed.id:
            for path in (imagefiles.record_path(cfg.image_dir, removed.id),
                         imagefiles.squashfs_path(cfg.image_dir, removed.id)):
                path.unlink(missing_ok=True)
            done.files.append(removed.id)


def collect_layers(store: Store, cache: registry.LayerCache) -> int:
    """Delete cached layer blobs no image refers to; none while a pull is under way."""
    if store.active_count():
        log.info("layers_kept_pull_running")
        return 0
    keep = {d.split(":", 1)[1] for d in store.layers_in_use()}
    removed = 0
    for blob in Path(cache.root).iterdir():
        if blob.name.startswith(".") or not blob.is_file() or blob.name in keep:
            continue
        blob.unlink(missing_ok=True)
        removed += 1
    if removed:
        log.info("layers_collected", removed=removed, kept=len(keep))
    return removed

"""The gateway's state and work behind its HTTP API (imagegw.api routes to it): the image
store, the pull workers (a pull asked for while one of the same image runs joins it), the
callers' access to private images, lookup counters and the signs of life of its pulls.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec
from fastapi import HTTPException

from shifter_site import imagefiles, logs
from shifter_site.config import Config
from shifter_site.errors import ShifterError

from imagegw import pull as pulling
from imagegw import identity, lifecycle, reference, registry, sources
from imagegw import metrics as prometheus
from imagegw.store import ACTIVE, Row, Store, StoreError

log = logs.get("gateway.api")
FLUSH_EVERY = 1.0  # seconds between writes of the lookup counters
HEARTBEAT = 2.0    # seconds between a gateway's signs of life on the pulls it runs
STALE_AFTER = 10.0  # a pull whose gateway gave no sign of life for this long has died with it


class Gateway:
    """The service's state: config, database, layer cache and the pull workers."""

    def __init__(self, cfg: Config, state_dir: str | Path, compression: str = "zstd", workers: int = 2,
                 auth_file: str | None = None, database: str | None = None):
        self.cfg = cfg
        self.state_dir = Path(state_dir)
        self.compression = compression
        self.auth_file = auth_file
        self.store = Store(database or self.state_dir / "images.db")
        # the READY rows last read: lookups keep being answered from these while the
        # database cannot be reached
        self.ready: dict[tuple[str, str], Row] = {}
        self.ready_lock = threading.Lock()
        # lookups counted in memory, written every FLUSH_EVERY s: a lookup never waits on a write
        self.lookups: dict[tuple[str, str, str], tuple[int, float, set[int]]] = {}
        self.lookups_lock = threading.Lock()
        self._stop = threading.Event()
        self.cache = registry.LayerCache(self.state_dir / "layers")
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pull")
        self.downloads_lock = threading.Lock()
        self.pulls_by: dict[str, set[str]] = defaultdict(set)  # requester -> keys queued or running
        self.pulls_lock = threading.Lock()
        self.metrics = prometheus.Metrics(self.store, cfg.system, self.flush)
        self.host = socket.gethostname()
        self.owner = f"{self.host}:{os.getpid()}:{time.time():.6f}"
        recovered = self.store.recover(self._dead)
        rekeyed = self.store.rekey(self._canonical_key)
        removed = pulling.clean_stale_temps(cfg.image_dir)
        self.cache.clean_partial()
        for row in self.store.list(cfg.system, ("READY",)):
            self.ready[(row.itype, row.key)] = row
        log.info("gateway_start", system=cfg.system, image_dir=cfg.image_dir, state_dir=str(self.state_dir),
                 database=self.store.url, failed_interrupted=recovered, removed_temps=removed, rekeyed=rekeyed)
        if cfg.gateway.autoexpire_every > 0:
            threading.Thread(target=self._autoexpire_loop, name="autoexpire", daemon=True).start()
        threading.Thread(target=self._flush_loop, name="flush", daemon=True).start()
        threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True).start()

    def _dead(self, owner: str) -> bool:
        """Whether the gateway process `owner` (host:pid:start) is known to be gone: an earlier
        process on this host (rows from before owners: yes). Other hosts' go stale instead."""
        if not owner:
            return True
        host, pid, _start = owner.rsplit(":", 2)
        if host != self.host:
            return False
        if int(pid) == os.getpid():
            return owner != self.owner
        return not Path(f"/proc/{pid}").exists()

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            with self.pulls_lock:
                running = any(self.pulls_by.values())
            if not running:  # no pull of ours: nothing to keep alive
                continue
            try:
                self.store.beat(self.owner)
            except StoreError:
                pass  # logged by the store; other gateways take the pulls over once stale

    def _current(self, ref: reference.Reference) -> Row | None:
        """The image's row; a pull under way whose gateway died (killed, another host gone
        quiet) is first marked failed, so this request starts it again here."""
        current = self.store.get(self.cfg.system, ref.itype, ref.key)
        if current is not None and current.status in ACTIVE and current.owner != self.owner and (
                self._dead(current.owner) or current.heartbeat < time.time() - STALE_AFTER):
            taken = self.store.recover(self._dead, stale_after=STALE_AFTER)
            log.warning("pull_taken_over", ref=ref.key, owner=current.owner, failed=taken)
            current = self.store.get(self.cfg.system, ref.itype, ref.key)
        return current

    def close(self) -> None:
        self._stop.set()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.flush()
        self.store.close()

    def _autoexpire_loop(self) -> None:
        """gateway.autoexpire_every: expired images go, except those jobs use."""
        while not self._stop.wait(self.cfg.gateway.autoexpire_every):
            try:
                self.flush()  # recent lookups move expiries on first
                lifecycle.autoexpire(self.cfg, self.store, self.cache)
            except Exception as err:  # noqa: BLE001 - logged; the next round tries again
                log.error("autoexpire_failed", error=f"{type(err).__name__}: {err}")

    def lookup_row(self, ref: reference.Reference, who: identity.Caller) -> Row | None:
        """The row a lookup serves (None: absent or not for this caller); counted as a use.
        With the database unreachable: the READY row last read (StoreError when none)."""
        try:
            row = self.find(ref)
        except StoreError:
            with self.ready_lock:
                row = self.ready.get((ref.itype, ref.key))
            if row is None:
                raise
            log.warning("lookup_from_memory", ref=ref.key)
            return self.readable(row, who)
        row = self.readable(row, who)
        if row is not None and row.status == "READY":
            with self.ready_lock:
                self.ready[(row.itype, row.key)] = row
            with self.lookups_lock:
                count, _, uids = self.lookups.get((row.system, row.itype, row.key), (0, 0.0, set()))
                self.lookups[(row.system, row.itype, row.key)] = (count + 1, time.time(), uids | {who.uid})
        return row

    def flush(self) -> None:
        """Write the lookups counted since the last flush (kept for the next one while the
        database is down)."""
        with self.lookups_lock:
            batch, self.lookups = self.lookups, {}
        if not batch:
            return
        try:
            self.store.touch(batch, self.cfg.gateway.expire_after)
        except StoreError:  # logged by the store; merged back
            with self.lookups_lock:
                for k, (count, last, uids) in batch.items():
                    c, l, u = self.lookups.get(k, (0, 0.0, set()))
                    self.lookups[k] = (count + c, max(last, l), uids | u)

    def _flush_loop(self) -> None:
        while not self._stop.wait(FLUSH_EVERY):
            self.flush()

    def forget(self, itype: str, key: str) -> None:
        with self.ready_lock:
            self.ready.pop((itype, key), None)

    def use_key(self, request: str, image_id: str) -> tuple[str, str]:
        """The image row a job's use belongs to: the job's request, canonical, when that row
        has the image; else any row with the image's id; else ("id", id)."""
        try:
            ref = sources.canonical(self.cfg.registries, reference.parse(request)) if request else None
        except reference.ReferenceError:
            ref = None
        if ref is not None and ref.itype != "id":
            row = self.store.get(self.cfg.system, ref.itype, ref.key)
            if row is not None and row.id == image_id:
                return row.itype, row.key
        for itype in ("docker", "custom"):
            rows = self.store.with_id(self.cfg.system, itype, image_id)
            if rows:
                return rows[0].itype, rows[0].key
        return "id", image_id

    def may_see_image(self, itype: str, key: str, image_id: str, who: identity.Caller) -> tuple[bool, str]:
        """(whether `who` may see that a job uses this image, the name to show)."""
        row = self.store.get(self.cfg.system, itype, key) if itype != "id" else None
        if row is not None:
            return who.can_read(row.user_acl, row.group_acl), f"{row.itype}:{row.tag}"
        try:
            published = imagefiles.read_record(self.cfg.image_dir, image_id)
        except imagefiles.ImageError:
            return who.admin, f"id:{image_id}"
        return who.can_read(published.user_acl, published.group_acl), f"id:{image_id}"

    def parse(self, system: str, itype: str, tag: str) -> reference.Reference:
        """The canonical reference (its `tag` the user's text); 400 with one line if it is
        malformed or names a registry the site does not pull from; nothing is contacted."""
        if system != self.cfg.system:
            raise HTTPException(404, f"this gateway serves system {self.cfg.system!r}, not {system!r}")
        tag = tag.rstrip("/")
        try:
            return sources.canonical(self.cfg.registries, reference.parse(f"{itype}:{tag}"))
        except reference.ReferenceError as err:
            raise HTTPException(400, str(err)) from None

    def _canonical_key(self, itype: str, key: str) -> str | None:
        """For rows filed before keys were canonical: the key they have now (None: drop)."""
        try:
            return sources.canonical(self.cfg.registries, reference.parse(f"{itype}:{key}")).key
        except reference.ReferenceError:
            return None

    def find(self, ref: reference.Reference) -> Row | None:
        """The row for `ref`; for `name@sha256:D`, an image with digest D pulled under that name
        (a READY row, else the published image) when the exact row is not READY."""
        row = self.store.get(self.cfg.system, ref.itype, ref.key)
        if not ref.digest or (row and row.status == "READY"):
            return row
        image_id = ref.digest.split(":", 1)[1]
        for other in self.store.with_id(self.cfg.system, ref.itype, image_id):
            if reference.name_of(other.key) == ref.name and other.status == "READY":
                return other
        try:
            published = imagefiles.read_record(self.cfg.image_dir, image_id)
        except imagefiles.ImageError:
            return row
        if reference.name_of(published.tag) != ref.name:
            return row
        return Row(system=self.cfg.system, itype=ref.itype, key=ref.key, tag=ref.tag, id=image_id, status="READY",
                   status_message="", progress={}, last_pull=published.last_pull, updated=time.time(),
                   user_acl=published.user_acl, group_acl=published.group_acl)

    def caller(self, credential: str | None) -> identity.Caller:
        """Who asks, from the request's munge credential; 401 (one line) without a valid one."""
        try:
            return identity.caller(self.cfg, credential)
        except identity.IdentityError as err:
            raise HTTPException(401, str(err)) from None

    def readable(self, row: Row | None, caller: identity.Caller) -> Row | None:
        """`row` when `caller` may see it; None (as if absent: no existence leak) otherwise."""
        return row if row is not None and caller.can_read(row.user_acl, row.group_acl) else None

    def _recent(self, row: Row) -> bool:
        """A finished pull (READY or FAILURE) within gateway.repull_after: not pulled again."""
        return time.time() - row.updated < self.cfg.gateway.repull_after

    def start_pull(self, ref: reference.Reference, caller: identity.Caller,
                   acl: tuple[list[int], list[int]] | None = None,
                   credentials: registry.Credentials | None = None) -> Row:
        """The image's row after a pull request: joined when one runs; unchanged when it was
        pulled (or failed) within gateway.repull_after; else a new pull, if `caller` is under
        the limit. `acl` (uids, gids; None: keep the image's) makes it private; it changes an
        existing image only for an admin or a user on its list, at once, without a pull."""
        limit = self.cfg.gateway.max_pulls_per_user
        requester = caller.key
        with self.pulls_lock:
            current = self._current(ref)
            if current is not None and not caller.can_read(current.user_acl, current.group_acl):
                log.warning("pull_refused_private", ref=ref.key, requester=requester)
                raise HTTPException(404, f"{ref.itype}:{ref.tag}: no such image you may pull on {self.cfg.system}; "
                                         f"ask its owner or the site admins")
            if current is not None and acl is not None and (current.user_acl, current.group_acl) != acl:
                if not (caller.admin or caller.uid in current.user_acl or
                        (not current.user_acl and not current.group_acl)):
                    raise HTTPException(403, f"{ref.itype}:{ref.tag}: only its users and the site admins may "
                                             f"change who may use it")
                current = self._set_acl(current, acl, requester)
            if acl is None:  # keep the image's list; a new image pulled with a user's login is theirs
                acl = (current.user_acl, current.group_acl) if current else (([caller.uid], []) if credentials
                                                                             else ([], []))
            published = self._published(current) if current is not None else None
            if current is not None and (current.status in ACTIVE or (self._recent(current) and (
                    current.status == "FAILURE" or published is not None))):
                log.info("pull_joined" if current.status in ACTIVE else "pull_recent", ref=ref.key,
                         status=current.status, requester=requester)
                return current
            mine = self.pulls_by[requester]
            if len(mine) >= limit:
                log.warning("pull_refused_limit", ref=ref.key, requester=requester, queued=len(mine))
                raise HTTPException(429, f"{ref.itype}:{ref.tag}: you have {len(mine)} pulls queued or running, "
                                         f"the most this site allows (gateway.max_pulls_per_user); wait for one "
                                         f"to finish (shifterimg images) and pull again")
            row, started = self.store.claim(self.cfg.system, ref.itype, ref.key, ref.tag, acl, owner=self.owner)
            if started:
                mine.add(ref.key)
        if started:
            log.info("pull_queued", ref=ref.key, requester=requester, private=bool(acl[0] or acl[1]))
            self.pool.submit(self._run, ref, requester, acl, credentials)
        else:
            log.info("pull_joined", ref=ref.key, status=row.status, requester=requester)
        return row

    def _set_acl(self, row: Row, acl: tuple[list[int], list[int]], requester: str) -> Row:
        """Give an image a new access list now: the row, and (when published) its files."""
        self.store.update(row.system, row.itype, row.key, acl=acl)
        published = self._published(row)
        if published is not None and row.status not in ACTIVE:
            public = not (acl[0] or acl[1])
            if not public:  # out of the tag index before the files are restricted
                pulling.index(self.cfg, row.itype, row.key, published.id, public=False)
            pulling.set_access(self.cfg, published, acl)
            if public:
                pulling.index(self.cfg, row.itype, row.key, published.id, public=True)
        log.info("acl_changed", ref=row.key, requester=requester, users=len(acl[0]), groups=len(acl[1]))
        return self.store.get(row.system, row.itype, row.key)

    def _published(self, row: Row) -> imagefiles.ImageRecord | None:
        if not row.id:
            return None
        try:
            return imagefiles.read_record(self.cfg.image_dir, row.id)
        except imagefiles.ImageError:
            return None

    def _run(self, ref: reference.Reference, requester: str, acl: tuple[list[int], list[int]],
             credentials: registry.Credentials | None = None) -> None:
        key = (self.cfg.system, ref.itype, ref.key)
        start = time.monotonic()
        progress = pulling.Progress(report=lambda data: self.store.update(*key, progress=data))
        try:
            record = pulling.pull(self.cfg, ref, self.cache, compression=self.compression, auth_file=self.auth_file,
                                  on_state=lambda state: self.store.update(*key, status=state),
                                  progress=progress, acl=acl, credentials=credentials,
                                  on_layers=self.store.set_layers)
            self.store.update(*key, status="READY", message="", image_id=record.id,
                              last_pull=record.last_pull, progress=progress.data)
            self.metrics.pulled(time.monotonic() - start, progress.data["bytes"], progress.data["entries"] > 0)
        except ShifterError as err:
            self.store.update(*key, status="FAILURE", message=str(err))
            self.metrics.failed(time.monotonic() - start, progress.data["bytes"])
            log.error("pull_failed", ref=ref.key, error=str(err))
        except Exception as err:  # a bug: still a FAILURE the user can read, with a trace in the log
            self.store.update(*key, status="FAILURE", message=f"internal error: {type(err).__name__}: {err}")
            self.metrics.failed(time.monotonic() - start, progress.data["bytes"])
            log.exception("pull_crashed", ref=ref.key)
        finally:
            with self.pulls_lock:
                self.pulls_by[requester].discard(ref.key)

    def record(self, row: Row, ready: bool = False) -> dict:
        """The row as JSON; `ready`: as its last READY image (lookups and lists serve only
        READY records, also while a re-pull runs), else with its current state."""
        published = self._published(row)
        if ready and published is not None:
            row = msgspec.structs.replace(row, status="READY", status_message="", last_pull=published.last_pull)
        return to_json(row, published)


def to_json(row: Row, published: imagefiles.ImageRecord | None) -> dict:
    """A row in the original gateway's JSON shape, with the published record when READY. `id`
    is always a string (the original client crashes on null): the last READY image's id, or
    "" before the first pull has finished."""
    status = row.status if (row.status != "READY" or published) else "MISSING"
    return {
        "id": (published.id if published else "") or "", "system": row.system, "itype": row.itype, "tag": row.key,
        "status": status, "status_message": row.status_message if status != "MISSING" else
        "the image files are gone from the image directory; pull again",
        "last_pull": row.last_pull, "userACL": row.user_acl, "groupACL": row.group_acl,
        "ENV": published.env if published else [], "ENTRY": published.entrypoint if published else None,
        "WORKDIR": published.workdir if published else "", "LABELS": published.labels if published else {},
        "progress": row.progress,
        "record": msgspec.to_builtins(published) if published and status == "READY" else None,
    }

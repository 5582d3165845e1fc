"""The gateway's HTTP API (FastAPI; OpenAPI at /openapi.json, docs at /docs).

Endpoints follow the original gateway so existing clients keep working:
`GET /api/list/{system}/`, `GET /api/lookup/{system}/{type}/{tag}/`,
`POST /api/pull/{system}/{type}/{tag}/`, `GET /api/queue/{system}/`. Records are JSON with the
original's keys (id, system, itype, tag, status, status_message, last_pull, userACL, groupACL,
ENV, ENTRY, WORKDIR, LABELS) plus `progress` and `record` (the published ImageRecord).
Pulls run on a small worker pool; a pull asked for while one of the same image is under way
joins it. References are normalised once (imagegw.sources.canonical): rows are keyed by the
canonical name, messages show the user's text; a registry the site does not list is refused
before anything is fetched; each user (from the munge credential in the `authentication`
header; callers without one count as one anonymous user) has at most
`gateway.max_pulls_per_user` pulls queued or running.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec
from fastapi import FastAPI, Header, HTTPException
from fastapi.responses import JSONResponse

from shifter_site import imagefiles, logs
from shifter_site.config import Config
from shifter_site.errors import ShifterError

from imagegw import pull as pulling
from imagegw import identity, reference, registry, sources
from imagegw.store import ACTIVE, Store, Row

log = logs.get("gateway.api")


class Gateway:
    """The service's state: config, database, layer cache and the pull workers."""

    def __init__(self, cfg: Config, state_dir: str | Path, compression: str = "zstd", workers: int = 2,
                 auth_file: str | None = None):
        self.cfg = cfg
        self.state_dir = Path(state_dir)
        self.compression = compression
        self.auth_file = auth_file
        self.store = Store(self.state_dir / "images.db")
        self.cache = registry.LayerCache(self.state_dir / "layers")
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pull")
        self.downloads_lock = threading.Lock()
        self.pulls_by: dict[str, set[str]] = defaultdict(set)  # requester -> keys queued or running
        self.pulls_lock = threading.Lock()
        recovered = self.store.recover()
        rekeyed = self.store.rekey(self._canonical_key)
        removed = pulling.clean_stale_temps(cfg.image_dir)
        self.cache.clean_partial()
        log.info("gateway_start", system=cfg.system, image_dir=cfg.image_dir, state_dir=str(self.state_dir),
                 failed_interrupted=recovered, removed_temps=removed, rekeyed=rekeyed)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.store.close()

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
                   status_message="", progress={}, last_pull=published.last_pull, updated=time.time())

    def requester(self, credential: str | None) -> str:
        """Who asks: `uid:N` from a munge credential, `anonymous` without one; 401 if forged."""
        if not credential:
            return "anonymous"
        try:
            return f"uid:{identity.uid_of(self.cfg, credential)}"
        except identity.IdentityError as err:
            raise HTTPException(401, str(err)) from None

    def start_pull(self, ref: reference.Reference, requester: str = "anonymous") -> Row:
        """Join the pull of `ref` under way, or start one if `requester` is under the limit."""
        limit = self.cfg.gateway.max_pulls_per_user
        with self.pulls_lock:
            current = self.store.get(self.cfg.system, ref.itype, ref.key)
            joining = current is not None and current.status in ACTIVE
            mine = self.pulls_by[requester]
            if not joining and len(mine) >= limit:
                log.warning("pull_refused_limit", ref=ref.key, requester=requester, queued=len(mine))
                raise HTTPException(429, f"{ref.itype}:{ref.tag}: you have {len(mine)} pulls queued or running, "
                                         f"the most this site allows (gateway.max_pulls_per_user); wait for one "
                                         f"to finish (shifterimg images) and pull again")
            row, started = self.store.claim(self.cfg.system, ref.itype, ref.key, ref.tag)
            if started:
                mine.add(ref.key)
        if started:
            log.info("pull_queued", ref=ref.key, requester=requester)
            self.pool.submit(self._run, ref, requester)
        else:
            log.info("pull_joined", ref=ref.key, status=row.status, requester=requester)
        return row

    def _run(self, ref: reference.Reference, requester: str = "anonymous") -> None:
        key = (self.cfg.system, ref.itype, ref.key)
        try:
            progress = pulling.Progress(report=lambda data: self.store.update(*key, progress=data))
            record = pulling.pull(self.cfg, ref, self.cache, compression=self.compression, auth_file=self.auth_file,
                                  on_state=lambda state: self.store.update(*key, status=state),
                                  progress=progress)
            self.store.update(*key, status="READY", message="", image_id=record.id,
                              last_pull=record.last_pull, progress=progress.data)
        except ShifterError as err:
            self.store.update(*key, status="FAILURE", message=str(err))
            log.error("pull_failed", ref=ref.key, error=str(err))
        except Exception as err:  # a bug: still a FAILURE the user can read, with a trace in the log
            self.store.update(*key, status="FAILURE", message=f"internal error: {type(err).__name__}: {err}")
            log.exception("pull_crashed", ref=ref.key)
        finally:
            with self.pulls_lock:
                self.pulls_by[requester].discard(ref.key)

    def record(self, row: Row) -> dict:
        published = None
        if row.status == "READY" and row.id:
            try:
                published = imagefiles.read_record(self.cfg.image_dir, row.id)
            except imagefiles.ImageError:
                published = None
        return to_json(row, published)


def to_json(row: Row, published: imagefiles.ImageRecord | None) -> dict:
    """A row in the original gateway's JSON shape, with the published record when READY."""
    status = row.status if (row.status != "READY" or published) else "MISSING"
    return {
        "id": row.id if published else None, "system": row.system, "itype": row.itype, "tag": row.key,
        "status": status, "status_message": row.status_message if status != "MISSING" else
        "the image files are gone from the image directory; pull again",
        "last_pull": row.last_pull, "userACL": published.user_acl if published else [],
        "groupACL": published.group_acl if published else [],
        "ENV": published.env if published else [], "ENTRY": published.entrypoint if published else None,
        "WORKDIR": published.workdir if published else "", "LABELS": published.labels if published else {},
        "progress": row.progress,
        "record": msgspec.to_builtins(published) if published else None,
    }


def create_app(gateway: Gateway) -> FastAPI:
    app = FastAPI(title="Shifter image gateway", version="1",
                  description="Pulls Docker/OCI images, converts them to squashfs, serves lookups.")

    @app.exception_handler(HTTPException)
    async def _error(request, exc: HTTPException):  # one key, `error`, the message for the user
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    @app.get("/api/list/{system}/", summary="Images ready on this system")
    def list_images(system: str) -> dict:
        gateway.parse(system, "docker", "x")
        rows = gateway.store.list(system, ("READY",))
        return {"list": [r for r in (gateway.record(row) for row in rows) if r["status"] == "READY"]}

    @app.get("/api/lookup/{system}/{itype}/{tag:path}", summary="The record of one image")
    def lookup(system: str, itype: str, tag: str) -> dict:
        ref = gateway.parse(system, itype, tag)
        row = gateway.find(ref)
        if row is None:
            raise HTTPException(404, f"{itype}:{tag.rstrip('/')} is not on system {system}; "
                                     f"pull it first: shifterimg pull {itype}:{tag.rstrip('/')}")
        return gateway.record(row)

    @app.post("/api/pull/{system}/{itype}/{tag:path}", summary="Start (or join) a pull; returns the record")
    def pull(system: str, itype: str, tag: str,
             authentication: str | None = Header(default=None, description="a munge credential")) -> dict:
        ref = gateway.parse(system, itype, tag)
        if ref.itype != "docker":
            raise HTTPException(400, f"{itype}:{tag} cannot be pulled; only docker images are pulled")
        return gateway.record(gateway.start_pull(ref, gateway.requester(authentication)))

    @app.get("/api/queue/{system}/", summary="Pulls under way")
    def queue(system: str) -> dict:
        gateway.parse(system, "docker", "x")
        return {"list": [gateway.record(r) for r in gateway.store.list(system, ("INIT", "PULLING", "CONVERSION"))]}

    @app.get("/api/metrics/{system}/", summary="Counters of this gateway process")
    def metrics(system: str) -> dict:
        gateway.parse(system, "docker", "x")
        return {"layer_downloads": gateway.cache.downloads}

    return app

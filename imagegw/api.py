"""The gateway's HTTP API (FastAPI; OpenAPI at /openapi.json, docs at /docs).

Endpoints follow the original gateway so existing clients keep working:
`GET /api/list/{system}/`, `GET /api/lookup/{system}/{type}/{tag}/`,
`POST /api/pull/{system}/{type}/{tag}/`, `GET /api/queue/{system}/`. Records are JSON with the
original's keys (id, system, itype, tag, status, status_message, last_pull, userACL, groupACL,
ENV, ENTRY, WORKDIR, LABELS) plus `progress` and `record` (the published ImageRecord).
Pulls run on a small worker pool; a pull asked for while one of the same image is under way
joins it. References are normalised once (imagegw.sources.canonical): rows are keyed by the
canonical name, messages show the user's text; a registry the site does not list is refused
before anything is fetched. Every call carries a munge credential (header `authentication`,
as the original client sends it; 401 without a valid one): the caller's uid and groups decide
which images it sees (private images: `userACL`/`groupACL`; others get "not on system", as if
absent), and bound its pulls (`gateway.max_pulls_per_user`). Lookups and lists serve only
READY records, and keep serving the last READY image while it is re-pulled; a pull asked for
within `gateway.repull_after` of the last one (or while one runs) returns the current record.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import socket
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from shifter_site import imagefiles, logs
from shifter_site.config import Config
from shifter_site.errors import ShifterError

from imagegw import pull as pulling
from imagegw import identity, lifecycle, reference, registry, sources
from imagegw import metrics as prometheus  # `metrics` is also the original API's route below
from imagegw.store import ACTIVE, InUse, Row, Store, StoreError

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


_IDS = re.compile(r"[0-9]{1,10}(?:,[0-9]{1,10})*")


def pull_request(body: bytes, who: identity.Caller
                 ) -> tuple[tuple[list[int], list[int]] | None, registry.Credentials | None]:
    """(access list, registry credentials) a pull asks for. The access list from the original
    client's body (`{"allowed_uids": "1001,1002", "allowed_gids": "100"}`: comma-separated, no
    spaces), with the requester always on it; None: keep the image's list. `registry_auth`
    ({"username", "password"}, ours): the caller's registry login, for this pull only (never
    stored or logged); a new image pulled with it is private to the caller unless the request
    lists others (Gateway.start_pull). 400 (one line) for anything else: malformed JSON, other keys, odd spacing,
    ids this system does not know."""
    if not body.strip():
        return None, None
    try:
        data = json.loads(body)
    except ValueError:
        raise HTTPException(400, "the pull request's body is not JSON; send "
                                 "{\"allowed_uids\": \"UID,UID\", \"allowed_gids\": \"GID\"} or nothing") from None
    if not isinstance(data, dict) or set(data) - {"allowed_uids", "allowed_gids", "registry_auth"}:
        raise HTTPException(400, "the pull request's body may hold only allowed_uids and allowed_gids "
                                 "(comma-separated numeric ids) and registry_auth")
    login = data.get("registry_auth")
    credentials = None
    if login is not None:
        if not (isinstance(login, dict) and set(login) == {"username", "password"}
                and all(isinstance(v, str) and v for v in login.values())):
            raise HTTPException(400, "registry_auth must be {\"username\": ..., \"password\": ...}; "
                                     "run shifterimg login again")
        credentials = registry.Credentials(username=login["username"], password=login["password"])
    lists = []
    for key, known in (("allowed_uids", _uid_known), ("allowed_gids", _gid_known)):
        text = data.get(key, "")
        if not isinstance(text, str) or (text and not _IDS.fullmatch(text)):
            raise HTTPException(400, f"{key} {text!r} is not a comma-separated list of numeric ids "
                                     f"(no spaces), e.g. \"1001,1002\"")
        ids = sorted({int(x) for x in text.split(",")}) if text else []
        unknown = [i for i in ids if not known(i)]
        if unknown:
            raise HTTPException(400, f"{key}: {', '.join(map(str, unknown))} "
                                     f"{'is' if len(unknown) == 1 else 'are'} not known on this system; "
                                     f"give existing {'users' if key == 'allowed_uids' else 'groups'}")
        lists.append(ids)
    if not lists[0] and not lists[1]:
        return None, credentials
    return (sorted({*lists[0], who.uid}), lists[1]), credentials


def _uid_known(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
        return True
    except KeyError:
        return False


def _gid_known(gid: int) -> bool:
    try:
        grp.getgrgid(gid)
        return True
    except KeyError:
        return False


def create_app(gateway: Gateway) -> FastAPI:
    app = FastAPI(title="Shifter image gateway", version="1",
                  description="Pulls Docker/OCI images, converts them to squashfs, serves lookups.")

    @app.exception_handler(HTTPException)
    async def _error(request, exc: HTTPException):  # one key, `error`, the message for the user
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    @app.exception_handler(StoreError)
    async def _store_error(request, exc: StoreError):  # the database is down: one line, 503
        return JSONResponse({"error": str(exc)}, status_code=503)

    @app.exception_handler(InUse)
    async def _in_use(request, exc: InUse):
        return JSONResponse({"error": str(exc), "jobs": exc.jobs}, status_code=409)

    def caller(authentication: str | None = Header(default=None, description="a munge credential (MUNGE:...)")
               ) -> identity.Caller:
        return gateway.caller(authentication)

    @app.get("/api/list/{system}/", summary="Images ready on this system that the caller may use")
    def list_images(system: str, who: identity.Caller = Depends(caller)) -> dict:
        gateway.parse(system, "docker", "x")
        rows = [r for r in gateway.store.list(system) if gateway.readable(r, who) and r.id]
        return {"list": [r for r in (gateway.record(row, ready=True) for row in rows) if r["status"] == "READY"]}

    @app.get("/api/lookup/{system}/{itype}/{tag:path}", summary="The READY record of one image")
    def lookup(system: str, itype: str, tag: str, who: identity.Caller = Depends(caller)) -> dict:
        ref = gateway.parse(system, itype, tag)
        row = gateway.lookup_row(ref, who)
        name = f"{itype}:{tag.rstrip('/')}"
        if row is None:
            raise HTTPException(404, f"{name} is not on system {system}; pull it first: shifterimg pull {name}")
        body = gateway.record(row, ready=True)
        if body["status"] != "READY":
            why = f" ({body['status_message']})" if body["status_message"] else ""
            raise HTTPException(404, f"{name} is not ready on {system}: {body['status']}{why}; "
                                     f"pull it: shifterimg pull {name}")
        return body

    @app.get("/api/status/{system}/{itype}/{tag:path}",
             summary="The record of one image in its current state (INIT ... READY, FAILURE); not in the original")
    def status(system: str, itype: str, tag: str, who: identity.Caller = Depends(caller)) -> dict:
        ref = gateway.parse(system, itype, tag)
        row = gateway.readable(gateway.find(ref), who)
        if row is None:
            name = f"{itype}:{tag.rstrip('/')}"
            raise HTTPException(404, f"{name} is not on system {system}; pull it first: shifterimg pull {name}")
        return gateway.record(row)

    @app.post("/api/pull/{system}/{itype}/{tag:path}",
              summary="Start (or join) a pull; returns the record. Body (optional, as the original "
                      "client sends it): {\"allowed_uids\": \"1001,1002\", \"allowed_gids\": \"100\"}")
    async def pull(system: str, itype: str, tag: str, request: Request,
                   authentication: str | None = Header(default=None, description="a munge credential")) -> dict:
        body = await request.body()
        return await run_in_threadpool(_pull, system, itype, tag, authentication, body)

    def _pull(system: str, itype: str, tag: str, authentication: str | None, body: bytes) -> dict:
        who = gateway.caller(authentication)
        ref = gateway.parse(system, itype, tag)
        if ref.itype != "docker":
            raise HTTPException(400, f"{itype}:{tag} cannot be pulled; only docker images are pulled")
        acl, credentials = pull_request(body, who)
        return gateway.record(gateway.start_pull(ref, who, acl, credentials))

    @app.get("/api/queue/{system}/", summary="Pulls under way")
    def queue(system: str, who: identity.Caller = Depends(caller)) -> dict:
        gateway.parse(system, "docker", "x")
        return {"list": [gateway.record(r) for r in gateway.store.list(system, ("INIT", "PULLING", "CONVERSION"))
                         if gateway.readable(r, who)]}

    @app.get("/api/metrics/{system}/", summary="Counters of this gateway process")
    def metrics(system: str, who: identity.Caller = Depends(caller)) -> dict:
        gateway.parse(system, "docker", "x")
        return {"layer_downloads": gateway.cache.downloads}

    @app.get("/metrics", summary="Prometheus text: pulls, conversions, failures, queue, per-image use "
                                 "(gateway.metrics_access: loopback callers, admins, or either)")
    def metrics_text(request: Request, authentication: str | None = Header(default=None)) -> Response:
        access = gateway.cfg.gateway.metrics_access
        local = request.client is not None and prometheus.loopback(request.client.host)
        if not (local and access in ("loopback", "either")):
            if access == "loopback":
                raise HTTPException(403, "/metrics answers callers on the gateway host only "
                                         "(gateway.metrics_access: loopback)")
            if not gateway.caller(authentication).admin:
                raise HTTPException(403, "/metrics is for the site's gateway admins (gateway.metrics_access)")
        return Response(gateway.metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    from imagegw import operations

    operations.add_operations(app, gateway, caller)
    operations.add_import(app, gateway)
    return app

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
import pwd
import re

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from shifter_site import logs

from imagegw import identity, registry
from imagegw import metrics as prometheus  # `metrics` is also the original API's route below
from imagegw.gateway import Gateway  # the state and work behind these routes (also imagegw.api.Gateway)
from imagegw.store import InUse, StoreError

log = logs.get("gateway.api")


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

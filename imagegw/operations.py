"""The gateway's operation routes (docs/operations.md), beside the original API of
imagegw.api: use records from the prolog and epilog (root or gateway.use_recorders only),
running jobs' images (`shifterimg jobs`), usage, the admins' removals (rm, expire,
autoexpire) and import. Each refusal is one line."""

from __future__ import annotations

import os
import pwd
import re
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool

from shifter_site import imagefiles, logs
from shifter_site.errors import ShifterError

from imagegw import identity, importer, lifecycle, reference
from imagegw.store import Row, Use

if TYPE_CHECKING:
    from imagegw.gateway import Gateway

log = logs.get("gateway.api")


_JOB = re.compile(r"[0-9]{1,12}(?:[_+.][0-9]{1,12})?")
_NODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,253}")


class UseBody(msgspec.Struct, forbid_unknown_fields=True):
    """A prolog's (or epilog's) report: job `job` uses image `id` on `node` for user `uid`
    (`request`: the job's image request as the user wrote it)."""

    job: str
    node: str
    id: str = ""
    uid: int = -1
    request: str = ""


def _use_body(body: bytes, start: bool) -> UseBody:
    try:
        use = msgspec.json.decode(body, type=UseBody)
    except msgspec.DecodeError as err:
        raise HTTPException(400, f"a use record must be JSON {{job, node, id, uid, request}}: {err}") from None
    if not _JOB.fullmatch(use.job) or not _NODE.fullmatch(use.node):
        raise HTTPException(400, f"use record: job {use.job!r} or node {use.node!r} is not a Slurm job id / node name")
    if start:
        try:
            imagefiles.check_id(use.id)
        except imagefiles.ImageError:
            raise HTTPException(400, f"use record: {use.id!r} is not an image id (64 hex digits)") from None
        if use.uid < 0:
            raise HTTPException(400, "use record: uid is missing")
    return use


def _need_admin(gateway: Gateway, who: identity.Caller, what: str) -> None:
    if not who.admin:
        log.warning("admin_refused", what=what, uid=who.uid)
        raise HTTPException(403, f"{what} is for the site's gateway admins (gateway.admins); ask one of them")


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def add_operations(app: FastAPI, gateway: Gateway, caller) -> None:
    """Use records, the running jobs' images, usage, and the admins' lifecycle operations."""

    def recorder(who: identity.Caller) -> None:
        allowed = {0, *(u for u in map(_uid_of, gateway.cfg.gateway.use_recorders) if u is not None)}
        if who.uid not in allowed:
            log.warning("use_record_refused", uid=who.uid)
            raise HTTPException(403, "only root or an account in gateway.use_recorders (the Slurm prolog) "
                                     "may record which job uses an image")

    @app.post("/api/use/{system}/", summary="The prolog: job J uses image I on node N (root/SlurmUser only)")
    async def use_start(system: str, request: Request,
                        authentication: str | None = Header(default=None)) -> dict:
        body = await request.body()
        return await run_in_threadpool(_use, system, authentication, body, True)

    @app.post("/api/unuse/{system}/", summary="The epilog: job J no longer uses its image on node N")
    async def use_end(system: str, request: Request, authentication: str | None = Header(default=None)) -> dict:
        body = await request.body()
        return await run_in_threadpool(_use, system, authentication, body, False)

    def _use(system: str, authentication: str | None, body: bytes, start: bool) -> dict:
        who = gateway.caller(authentication)
        gateway.parse(system, "docker", "x")
        recorder(who)
        use = _use_body(body, start)
        if not start:
            ended = gateway.store.end_use(system, use.job, use.node)
            log.info("use_ended", job=use.job, node=use.node, records=ended)
            return {"ended": ended}
        itype, key = gateway.use_key(use.request, use.id)
        gateway.store.start_use(Use(system=system, job_id=use.job, node=use.node, itype=itype, key=key,
                                    image_id=use.id, uid=use.uid, started=time.time()),
                                gateway.cfg.gateway.expire_after)
        log.info("use_started", job=use.job, node=use.node, ref=key, id=use.id)
        return {"image": f"{itype}:{key}"}

    @app.get("/api/jobs/{system}/", summary="Running jobs' images (those the caller may see)")
    def jobs(system: str, job: list[str] = Query(default=[]), who: identity.Caller = Depends(caller)) -> dict:
        gateway.parse(system, "docker", "x")
        bad = [j for j in job if not _JOB.fullmatch(j)]
        if bad:
            raise HTTPException(400, f"{', '.join(bad)}: not a Slurm job id (digits, e.g. 1234)")
        grouped: dict[tuple[str, str], dict] = {}
        seen: dict[tuple[str, str, str], tuple[bool, str]] = {}
        for use in gateway.store.running(system, job or None):
            image = (use.itype, use.key, use.image_id)
            if image not in seen:
                seen[image] = gateway.may_see_image(*image, who)
            visible, name = seen[image]
            if not visible:
                continue
            entry = grouped.setdefault((use.job_id, use.image_id), {
                "job": use.job_id, "user": _name(use.uid), "uid": use.uid, "image": name, "id": use.image_id,
                "nodes": [], "started": use.started})
            entry["nodes"].append(use.node)
        return {"list": sorted(grouped.values(), key=lambda e: (int(re.split(r"\D", e["job"])[0]), e["job"]))}

    @app.get("/api/usage/{system}/", summary="Per image: lookups, jobs, nodes, distinct users, last use")
    def usage(system: str, who: identity.Caller = Depends(caller)) -> dict:
        gateway.parse(system, "docker", "x")
        gateway.flush()
        figures = gateway.store.usage(system)
        out = []
        for row in gateway.store.list(system, ("READY",)):
            if not gateway.readable(row, who):
                continue
            u = figures.get((row.itype, row.key))
            out.append({"itype": row.itype, "tag": row.key, "id": row.id or "", "expires": row.expires,
                        **(msgspec.to_builtins(u) if u else {})})
        return {"list": out}

    def _row_for(system: str, itype: str, tag: str) -> Row:
        ref = gateway.parse(system, itype, tag)
        row = gateway.store.get(gateway.cfg.system, ref.itype, ref.key)
        if row is None:
            raise HTTPException(404, f"{itype}:{tag.rstrip('/')} is not on system {system}")
        return row

    def _removal(done: lifecycle.Removal) -> dict:
        for name in done.removed:
            gateway.forget(*name.split(":", 1))
        return {"removed": done.removed, "files": done.files, "kept": done.kept, "layers": done.layers}

    @app.delete("/api/image/{system}/{itype}/{tag:path}", summary="Remove an image now (admins; never in use)")
    def remove(system: str, itype: str, tag: str, who: identity.Caller = Depends(caller)) -> dict:
        _need_admin(gateway, who, "removing an image")
        return _removal(lifecycle.remove(gateway.cfg, gateway.store, gateway.cache, _row_for(system, itype, tag)))

    @app.post("/api/expire/{system}/{itype}/{tag:path}",
              summary="Expire an image now: removed at once, or once the jobs using it have ended (admins)")
    def expire(system: str, itype: str, tag: str, who: identity.Caller = Depends(caller)) -> dict:
        _need_admin(gateway, who, "expiring an image")
        return _removal(lifecycle.expire(gateway.cfg, gateway.store, gateway.cache, _row_for(system, itype, tag)))

    @app.post("/api/autoexpire/{system}/", summary="Remove every expired image no job uses (admins)")
    def autoexpire(system: str, who: identity.Caller = Depends(caller)) -> dict:
        _need_admin(gateway, who, "autoexpire")
        gateway.parse(system, "docker", "x")
        gateway.flush()  # recent lookups move expiries on first
        return _removal(lifecycle.autoexpire(gateway.cfg, gateway.store, gateway.cache))


def add_import(app: FastAPI, gateway: Gateway) -> None:
    """POST /api/import/{system}/{name}: the body is the archive (admins only; shifterimg import)."""

    @app.post("/api/import/{system}/{name:path}",
              summary="Publish an uploaded squashfs, docker save archive or OCI layout (tar) as custom:NAME (admins)")
    async def import_image(system: str, name: str, request: Request,
                           authentication: str | None = Header(default=None)) -> dict:
        who = await run_in_threadpool(gateway.caller, authentication)  # before a byte of the body is read
        _need_admin(gateway, who, "importing an image")
        ref = gateway.parse(system, "custom", name)
        uploads = gateway.state_dir / "uploads"
        uploads.mkdir(exist_ok=True)
        limit = gateway.cfg.gateway.max_image_size_bytes
        fd, tmp = tempfile.mkstemp(dir=uploads, prefix=".upload.")
        try:
            size = 0
            with os.fdopen(fd, "wb") as out:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise HTTPException(413, f"the archive is larger than gateway.max_image_size "
                                                 f"({gateway.cfg.gateway.max_image_size}); nothing was published")
                    out.write(chunk)
            return await run_in_threadpool(_import, ref, Path(tmp), who)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def _import(ref: reference.Reference, upload: Path, who: identity.Caller) -> dict:
        try:
            record = importer.publish(gateway.cfg, gateway.cache, upload, ref.tag, gateway.compression,
                                      on_layers=gateway.store.set_layers)
        except ShifterError as err:
            log.warning("import_refused", name=ref.tag, error=str(err), requester=who.key)
            raise HTTPException(400, f"custom:{ref.tag}: {err}") from None
        gateway.store.put_ready(gateway.cfg.system, "custom", ref.key, ref.tag, record.id, record.last_pull)
        gateway.forget("custom", ref.key)
        log.info("imported", name=ref.tag, id=record.id, requester=who.key)
        row = gateway.store.get(gateway.cfg.system, "custom", ref.key)
        return gateway.record(row)


def _uid_of(name: str) -> int | None:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None

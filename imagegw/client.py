"""Talking to the image gateway from login and compute nodes (`shifterimg`, `shifter`, the
Slurm submit hook). Gateways listed in the site config are tried in random order.

    record = imagegw.client.lookup(cfg, "docker:ubuntu:22.04")   # ImageRecord, or GatewayError
"""

from __future__ import annotations

import json
import random
import time
from typing import Callable
from urllib.parse import quote

import httpx
import msgspec

from shifter_site import imagefiles, imageid
from shifter_site.config import Config
from shifter_site.errors import ShifterError

from imagegw import identity, reference, sources

DONE = ("READY", "FAILURE")
USE_TIMEOUT = 10.0  # a use record never holds a prolog or epilog longer
IMPORT_TIMEOUT = 3600.0  # an import converts while the admin waits


class GatewayError(ShifterError):
    """The gateway is unreachable, refused the request, or the image is not there."""


class NotFound(GatewayError):
    """The image is not on this system (not pulled yet, or gone)."""

    exit_code = 3


_clients: dict[bool, httpx.Client] = {}


def _http(url: str) -> httpx.Client:
    """This process's HTTP client for a gateway URL, made once (a pull polls its status, a
    prolog records a use after a lookup: connections are reused). An https gateway's client
    loads the CA bundle; a plain-http one gets a TLS context that verifies and trusts nothing,
    never used: loading the bundle (what `httpx.request` does on every call) was most of a
    `shifterimg lookup` (bench/bench_client.py)."""
    tls = url.startswith("https://")
    http = _clients.get(tls)
    if http is None:
        import ssl

        http = _clients[tls] = httpx.Client(verify=True if tls else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    return http


def _request(cfg: Config, method: str, path: str, body=None, timeout: float | None = None) -> dict:
    """One call to the first gateway that answers, with a fresh munge credential (each is
    accepted once, so a retry against another gateway makes a new one)."""
    urls = list(cfg.gateway.urls)
    random.shuffle(urls)
    errors = []
    for url in urls:
        credential = identity.credential(cfg)
        if credential is None:
            raise GatewayError(f"cannot ask the image gateway: cannot make a munge credential (munge_socket "
                               f"{cfg.munge_socket}), and the gateway answers only callers that prove who they are; "
                               f"is munged running on this node?")
        headers = {identity.HEADER: credential}
        if isinstance(body, bytes) and body:
            headers["Content-Type"] = "application/json"
        elif body is not None and not isinstance(body, bytes):  # a file to upload (import), from its start
            headers["Content-Type"] = "application/octet-stream"
            body.seek(0)
        try:
            resp = _http(url).request(method, f"{url.rstrip('/')}{path}", timeout=timeout or cfg.gateway.timeout,
                                      headers=headers, content=body)
        except httpx.HTTPError as err:
            errors.append(f"{url}: {err.__class__.__name__}")
            continue
        try:
            body = resp.json()
        except ValueError:
            body = {}
        if resp.status_code == 404:
            raise NotFound(body.get("error") or f"not found: {path}")
        if resp.status_code >= 400:
            raise GatewayError(body.get("error") or body.get("detail") or f"gateway {url}: HTTP {resp.status_code}")
        return body
    raise GatewayError(f"cannot reach the image gateway ({'; '.join(errors)}); is shifter-gateway running? "
                       "(gateway.urls in the site config)")


def _path(cfg: Config, action: str, ref: reference.Reference) -> str:
    # the user's text: the gateway normalises it the same way, and its messages quote it
    return f"/api/{action}/{quote(cfg.system)}/{ref.itype}/{quote(ref.tag, safe='/:@')}/"


def parse(cfg: Config, ref: str | reference.Reference) -> reference.Reference:
    """The reference, checked here before any request: malformed, or naming a registry the
    site does not pull from, is a ReferenceError (one line, exit 2)."""
    parsed = ref if isinstance(ref, reference.Reference) else reference.parse(ref, cfg.default_image_type)
    sources.canonical(cfg.registries, parsed)
    return parsed


def status(cfg: Config, ref: str | reference.Reference) -> dict:
    """The gateway's record for `ref` in its current state (lookups serve READY images only);
    NotFound when it has none this caller may see."""
    return _request(cfg, "GET", _path(cfg, "status", parse(cfg, ref)))


def lookup(cfg: Config, ref: str | reference.Reference) -> imagefiles.ImageRecord:
    """The published record of a READY image; NotFound (one line, how to fix) otherwise.

    An id (`id:` and an id's first 12 or more digits, as `shifterimg images` shows it) is
    answered from the image directory without the gateway, as `shifter -i` answers it.
    """
    if isinstance(ref, str):
        try:
            found = imageid.local_id(cfg.image_dir, ref)
        except imageid.UnknownId as err:
            raise NotFound(str(err)) from None
        if found:
            ref = f"id:{found}"
    parsed = parse(cfg, ref)
    if parsed.itype == "id":
        try:
            return imagefiles.read_record(cfg.image_dir, parsed.tag.removeprefix("sha256:"))
        except imagefiles.ImageError as err:
            raise NotFound(str(err)) from None
    body = _request(cfg, "GET", _path(cfg, "lookup", parsed))
    if body.get("status") != "READY" or not body.get("record"):
        why = f" ({body['status_message']})" if body.get("status_message") else ""
        raise NotFound(f"{parsed.itype}:{parsed.tag} is not ready on {cfg.system}: {body.get('status')}{why}; "
                       f"pull it: shifterimg pull {parsed.itype}:{parsed.tag}")
    return msgspec.convert(body["record"], imagefiles.ImageRecord)


def images(cfg: Config) -> list[dict]:
    """Every READY image the gateway knows for this system."""
    return _request(cfg, "GET", f"/api/list/{quote(cfg.system)}/")["list"]


def jobs(cfg: Config, job_ids: list[str] | None = None) -> list[dict]:
    """Running jobs' images that the caller may see (all jobs, or those given)."""
    query = "&".join(f"job={quote(j)}" for j in job_ids or [])
    return _request(cfg, "GET", f"/api/jobs/{quote(cfg.system)}/" + (f"?{query}" if query else ""))["list"]


def usage(cfg: Config) -> list[dict]:
    """Per READY image the caller may see: lookups, jobs, nodes, users, last use, expiry."""
    return _request(cfg, "GET", f"/api/usage/{quote(cfg.system)}/")["list"]


def record_use(cfg: Config, job_id: str, node: str, image_id: str, uid: int, request: str) -> dict:
    """The prolog (root): job `job_id` uses `image_id` on `node`."""
    body = json.dumps({"job": job_id, "node": node, "id": image_id, "uid": uid, "request": request}).encode()
    return _request(cfg, "POST", f"/api/use/{quote(cfg.system)}/", body, timeout=USE_TIMEOUT)


def end_use(cfg: Config, job_id: str, node: str) -> dict:
    """The epilog (root): the job no longer uses its image on `node`."""
    return _request(cfg, "POST", f"/api/unuse/{quote(cfg.system)}/", json.dumps({"job": job_id, "node": node}).encode(),
                    timeout=USE_TIMEOUT)


def remove(cfg: Config, ref: str) -> dict:
    """Remove an image now (admins); GatewayError naming the jobs while any uses it."""
    return _request(cfg, "DELETE", _path(cfg, "image", parse(cfg, ref)))


def expire(cfg: Config, ref: str) -> dict:
    """Expire an image now (admins): removed at once, or once its jobs have ended."""
    return _request(cfg, "POST", _path(cfg, "expire", parse(cfg, ref)))


def autoexpire(cfg: Config) -> dict:
    """Remove every expired image no job uses (admins)."""
    return _request(cfg, "POST", f"/api/autoexpire/{quote(cfg.system)}/")


def import_image(cfg: Config, path: str, name: str) -> dict:
    """Upload a squashfs, a `docker save` archive or an OCI layout (a directory: sent as a tar)
    to be published as custom:NAME (admins); the gateway's record of it."""
    import os
    import tarfile
    import tempfile

    ref = parse(cfg, f"custom:{name}")
    if not os.path.exists(path):
        raise GatewayError(f"{path}: no such file or directory; give a squashfs, a docker save archive or an OCI "
                           f"layout directory")
    with tempfile.TemporaryFile() as packed:
        if os.path.isdir(path):
            if not os.path.isfile(os.path.join(path, "oci-layout")):
                raise GatewayError(f"{path} is a directory without an oci-layout file; give an OCI image layout "
                                   f"directory, or a squashfs or docker save archive file")
            with tarfile.open(fileobj=packed, mode="w") as tar:
                tar.add(path, arcname=".")
            packed.seek(0)
            source = packed
        else:
            try:
                source = open(path, "rb")
            except OSError as err:
                raise GatewayError(f"{path}: {err.strerror}") from None
        with source:
            return _request(cfg, "POST", f"/api/import/{quote(cfg.system)}/{quote(ref.tag, safe='/:')}", source,
                            timeout=IMPORT_TIMEOUT)


def pull_body(acl: tuple[list[int], list[int]] | None, login: dict | None = None) -> bytes | None:
    """The original client's pull body, `{"allowed_uids":"1,2","allowed_gids":"3"}`, plus
    `registry_auth` ({"username", "password"}: the caller's `shifterimg login` for the image's
    registry, which the gateway uses for this pull only); None when there is nothing to send."""
    data: dict = {}
    for key, ids in (("allowed_uids", acl[0] if acl else []), ("allowed_gids", acl[1] if acl else [])):
        if ids:
            data[key] = ",".join(str(i) for i in ids)
    if login:
        data["registry_auth"] = {"username": login["username"], "password": login["password"]}
    return json.dumps(data, separators=(",", ":")).encode() if data else None


def start_pull(cfg: Config, ref: str | reference.Reference, acl: tuple[list[int], list[int]] | None = None
               ) -> dict:
    """Ask for a pull (private to `acl`: uids, gids, when given); the gateway's record."""
    parsed = parse(cfg, ref)
    if parsed.itype != "docker":
        raise GatewayError(f"{parsed.itype}:{parsed.tag} cannot be pulled; only docker: images are pulled")
    from imagegw import logins

    login = logins.load().get(sources.canonical(cfg.registries, parsed).host)
    return _request(cfg, "POST", _path(cfg, "pull", parsed), pull_body(acl, login))


def pull(cfg: Config, ref: str | reference.Reference, on_update: Callable[[dict], None] | None = None,
         poll: float = 0.5, timeout: float | None = None, acl: tuple[list[int], list[int]] | None = None) -> dict:
    """Start (or join) a pull and wait until READY or FAILURE; the final gateway record. It
    polls with the same request, as the original client does (the gateway does not pull again
    while one runs or soon after)."""
    parsed = parse(cfg, ref)
    body = start_pull(cfg, parsed, acl)
    deadline = time.monotonic() + timeout if timeout else None
    while True:
        if on_update:
            on_update(body)
        if body.get("status") in DONE or body.get("status") == "MISSING":
            return body
        if deadline and time.monotonic() > deadline:
            raise GatewayError(f"pull of {parsed.tag} still {body.get('status')} after {timeout:.0f}s")
        time.sleep(poll)
        body = start_pull(cfg, parsed, acl)

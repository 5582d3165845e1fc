"""Registry transport: Docker Registry HTTP API v2 / OCI distribution spec, on httpx.

Why a direct client and not skopeo: conversion streams layers from a shared
content-addressed cache straight into the merge, and one `skopeo copy` per image costs a
process, a full OCI layout on disk and a second read of every layer (measured in
bench/bench_pull.py; figures in CHANGELOG). This client does what the gateway needs:
anonymous, Bearer (from the WWW-Authenticate challenge) and basic auth; OCI and Docker v2
manifests, OCI indexes and Docker manifest lists with platform selection; redirects for
blobs; sha256 of every manifest and blob checked; retries with backoff on transient errors;
layers downloaded in parallel into a cache where each blob is stored once.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import tempfile
import ssl
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import httpx
import msgspec

from imagegw.reference import HUB_API
from shifter_site import logs
from shifter_site.errors import ShifterError

log = logs.get("gateway.registry")

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST))
LISTS = (OCI_INDEX, DOCKER_LIST)
TRANSIENT = {408, 425, 429, 500, 502, 503, 504}
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


class RegistryError(ShifterError):
    """The registry refused or failed in a way retrying will not fix; the message says which."""


class Unreachable(RegistryError):
    """No HTTP answer. One text for every cause (refused, timed out, reset, no such name), so
    that an error never tells a user whether a port is closed or filtered; the log has why."""


class NotFound(RegistryError):
    """The registry answered 404 for the manifest (a mirror may lack what another has)."""


class PlainHttp(RegistryError):
    """An https URL for a registry that speaks plain http: a site config mistake."""


class Layer(msgspec.Struct, frozen=True):
    digest: str
    size: int
    media_type: str


class Resolved(msgspec.Struct, frozen=True):
    """What a reference resolves to: the manifest (its digest is the image id) and config."""

    digest: str
    manifest: dict
    config: dict
    layers: list[Layer]


def _check_digest(digest: str) -> str:
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise RegistryError(f"registry sent digest {digest!r}; only sha256:<64 hex> digests are supported")
    return digest


def _size(value) -> int:
    """A layer's size: a non-negative integer, or absent (0)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"layer size {value!r} is not a number of bytes")
    return value


_STRINGS = ("WorkingDir", "User")
_LISTS = ("Env", "Entrypoint", "Cmd")


def _check_config(config) -> None:
    """The parts of an image config the gateway keeps (ENV, ENTRYPOINT, CMD, WORKDIR, USER,
    LABELS) have the types the image spec gives them: ValueError otherwise (never a string
    read as a list of characters)."""
    if not isinstance(config, dict):
        raise ValueError("the image config is not a mapping")
    c = config.get("config") or {}
    if not isinstance(c, dict):
        raise ValueError("the image config's config is not a mapping")
    for key in _LISTS:
        if c.get(key) is not None and not (isinstance(c[key], list) and all(isinstance(v, str) for v in c[key])):
            raise ValueError(f"{key} is not a list of strings")
    for key in _STRINGS:
        if c.get(key) is not None and not isinstance(c[key], str):
            raise ValueError(f"{key} is not a string")
    if c.get("Labels") is not None and not isinstance(c["Labels"], dict):
        raise ValueError("Labels is not a mapping")


class Credentials(msgspec.Struct, frozen=True):
    username: str
    password: str


def credentials_for(host: str, auth_file: str | None) -> Credentials | None:
    """Credentials for a registry host from a containers/docker auth.json ("auths": {host: {auth}})."""
    if not auth_file or not os.path.exists(auth_file):
        return None
    try:
        auths = json.loads(Path(auth_file).read_text()).get("auths", {})
    except (OSError, ValueError) as err:
        raise RegistryError(f"{auth_file}: cannot read registry credentials ({err})") from None
    entry = auths.get(host) or auths.get(f"https://{host}") or auths.get(f"http://{host}")
    if not entry or "auth" not in entry:
        return None
    user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
    return Credentials(username=user, password=password)


class RealmNotAllowed(RegistryError):
    """A Bearer challenge names a token service the site does not trust: the gateway would
    send the user's or the site's credentials (and its own requests) to any host the
    registry's answer names."""


DOCKER_HUB_API = urlsplit(HUB_API).hostname
DOCKER_HUB_AUTH = "auth.docker.io"  # Docker Hub's token service, trusted for Docker Hub only


def realm_hosts(base_url: str, auth_hosts: tuple[str, ...] | list[str] = ()) -> set[str]:
    """The hosts a registry at `base_url` may send us to for a token: its own host (any
    port), the site's `registries.auth_hosts`, and Docker Hub's token service for Docker Hub."""
    own = (urlsplit(base_url).hostname or "").lower()
    return {own, *(h.lower() for h in auth_hosts), *([DOCKER_HUB_AUTH] if own == DOCKER_HUB_API else [])}


def check_realm(realm: str, base_url: str, where: str, auth_hosts: tuple[str, ...] | list[str] = ()) -> None:
    """RealmNotAllowed (one line) unless `realm` is an http(s) URL on an allowed host, and
    https when the registry itself is (credentials never leave TLS)."""
    try:
        parts = urlsplit(realm)
        host = (parts.hostname or "").lower() if parts.scheme in ("http", "https") else ""
    except ValueError:  # not a URL at all ("http://[")
        parts, host = urlsplit(""), ""
    if not host or host not in realm_hosts(base_url, auth_hosts):
        raise RealmNotAllowed(f"{where}: its token service {realm!r} is neither the registry's own host nor listed "
                              "in registries.auth_hosts; nothing was sent there (site admins: list the host in "
                              "registries.auth_hosts if it is this registry's token service)")
    if base_url.startswith("https://") and parts.scheme != "https":
        raise RealmNotAllowed(f"{where}: its token service {realm!r} is plain http while the registry is https; "
                              "nothing was sent there (the registry's auth config must give an https realm)")


class Client:
    """One registry, one repository. Thread-safe for parallel blob downloads."""

    def __init__(self, base_url: str, repository: str, credentials: Credentials | None = None,
                 retries: int = 4, backoff: float = 0.5, timeout: float = 60.0,
                 transport: httpx.BaseTransport | None = None, name: str | None = None,
                 auth_hosts: tuple[str, ...] | list[str] = ()):
        self.base = base_url.rstrip("/")
        self.auth_hosts = tuple(auth_hosts)
        # how messages name the registry: its name as the user wrote it (and the mirror used)
        own = urlsplit(self.base).netloc
        self.where = own if not name or name == own else f"{name} (at {own})"
        self.name = name or own
        self.repository = repository
        self.credentials = credentials
        self.retries = retries
        self.backoff = backoff
        self.http = httpx.Client(timeout=timeout, follow_redirects=True, transport=transport,
                                 limits=httpx.Limits(max_connections=8))
        self._auth_header: str | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        self.http.close()

    # ------------------------------------------------------------ auth and retries

    def _authenticate(self, challenge: str) -> None:
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() == "basic":
            if not self.credentials:
                raise RegistryError(f"{self.where} requires a login for {self.repository}; "
                                    f"run `shifterimg login {self.name}` and pull again")
            token = base64.b64encode(f"{self.credentials.username}:{self.credentials.password}".encode())
            self._auth_header = f"Basic {token.decode()}"
            return
        if scheme.lower() != "bearer":
            raise RegistryError(f"{self.where}: unsupported authentication scheme {scheme!r}")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        if "realm" not in fields:
            raise RegistryError(f"{self.where}: Bearer challenge without realm")
        check_realm(fields["realm"], self.base, self.where, self.auth_hosts)
        query = {k: v for k, v in fields.items() if k in ("service", "scope")}
        query.setdefault("scope", f"repository:{self.repository}:pull")
        auth = (self.credentials.username, self.credentials.password) if self.credentials else None
        resp = self._send("GET", fields["realm"], params=query, auth=auth, authorised=False)
        if resp.status_code != 200:
            raise RegistryError(f"{fields['realm']}: token request refused (HTTP {resp.status_code}); "
                                "check the image name and your credentials")
        try:
            body = resp.json()
        except ValueError:
            body = None
        token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
        if not token or not isinstance(token, str):
            raise RegistryError(f"{fields['realm']}: token response has no token")
        self._auth_header = f"Bearer {token}"

    def check_login(self) -> None:
        """Whether the registry accepts this client's credentials (GET /v2/ after its
        challenge); LoginError-like RegistryError (one line) when it refuses them."""
        resp = self._send("GET", f"{self.base}/v2/")
        if resp.status_code == 401 and "www-authenticate" in resp.headers:
            try:
                self._authenticate(resp.headers["www-authenticate"])
            except RealmNotAllowed:
                raise
            except RegistryError:
                raise RegistryError(f"{self.where} refused the user name and password; nothing stored") from None
            resp = self._send("GET", f"{self.base}/v2/")
        if resp.status_code in (401, 403):
            raise RegistryError(f"{self.where} refused the user name and password; nothing stored")
        if resp.status_code >= 400:
            raise RegistryError(f"{self.where}/v2/: HTTP {resp.status_code}; nothing stored")

    def _send(self, method: str, url: str, authorised: bool = True, stream: bool = False, **kw) -> httpx.Response:
        """One request with retries on connection errors and transient statuses."""
        headers = dict(kw.pop("headers", {}))
        auth = kw.pop("auth", None)
        for attempt in range(self.retries + 1):
            if authorised and self._auth_header:
                headers["Authorization"] = self._auth_header
            try:
                req = self.http.build_request(method, url, headers=headers, **kw)
                resp = self.http.send(req, stream=stream, auth=auth)
            except httpx.TransportError as err:
                log.warning("registry_unreachable", url=url, error=f"{type(err).__name__}: {err}", attempt=attempt + 1)
                if _tls_failed(err) and url.startswith("https://"):
                    self._explain_tls(url)
                if attempt == self.retries:
                    raise Unreachable(f"cannot reach registry {self.where} (tried {self.retries + 1} times); "
                                      "try again later, and tell the site admins if it persists") from None
                time.sleep(self.backoff * 2 ** attempt)
                continue
            if resp.status_code in TRANSIENT and attempt < self.retries:
                resp.close()
                log.warning("registry_retry", url=url, status=resp.status_code, attempt=attempt + 1)
                time.sleep(self.backoff * 2 ** attempt)
                continue
            return resp
        raise AssertionError("unreachable")

    def _explain_tls(self, url: str) -> None:
        """A TLS handshake failed: if the same host:port answers plain http, say so at once (a
        site config mistake, not something a retry fixes); else one Unreachable line."""
        plain = urlsplit(url)._replace(scheme="http", path="/v2/", query="").geturl()
        try:
            with httpx.Client(timeout=min(self.http.timeout.connect or 5.0, 5.0)) as probe:
                probe.get(plain)
        except httpx.HTTPError:
            raise Unreachable(f"cannot reach registry {self.where}: its TLS handshake failed; "
                              "tell the site admins") from None
        netloc = urlsplit(url).netloc
        raise PlainHttp(f"registry {self.where}: this registry speaks plain http; add it to registries.hosts "
                        f"as http://{netloc} (site config)")

    def request(self, method: str, path: str, stream: bool = False, **kw) -> httpx.Response:
        url = f"{self.base}/v2/{self.repository}/{path}"
        resp = self._send(method, url, stream=stream, **kw)
        if resp.status_code == 401 and "www-authenticate" in resp.headers:
            resp.close()
            with self._lock:
                self._authenticate(resp.headers["www-authenticate"])
            resp = self._send(method, url, stream=stream, **kw)
        if resp.status_code >= 400:
            if stream:
                resp.read()
            if resp.status_code == 404 and path.startswith("manifests/"):
                raise NotFound(self._explain(resp, path))
            raise RegistryError(self._explain(resp, path))
        return resp

    def _explain(self, resp: httpx.Response, path: str) -> str:
        what = f"{self.base}/v2/{self.repository}/{path}"
        try:
            errors = resp.json().get("errors") or []
            detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
        except ValueError:
            detail = ""
        if resp.status_code == 404:
            return f"{self.repository}:{path.rsplit('/', 1)[-1]} not found in {self.where} ({detail or 'HTTP 404'}); check the name and tag"
        if resp.status_code in (401, 403):
            return f"access to {self.repository} in {self.where} denied (HTTP {resp.status_code}); check the name and your credentials"
        return f"{what}: HTTP {resp.status_code} {detail}".rstrip()

    # ------------------------------------------------------------ manifests

    def manifest(self, ref: str) -> tuple[str, str, bytes]:
        """(digest, media type, raw bytes) of a manifest, its sha256 checked."""
        resp = self.request("GET", f"manifests/{ref}", headers={"Accept": ACCEPT})
        raw = resp.content
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        if ref.startswith("sha256:") and digest != ref:
            raise RegistryError(f"manifest {ref} of {self.repository}: content hashes to {digest}; refusing it")
        sent = resp.headers.get("docker-content-digest")
        if sent and sent != digest:
            raise RegistryError(f"manifest {ref} of {self.repository}: registry says {sent} but content hashes to {digest}")
        media = resp.headers.get("content-type", "").split(";")[0].strip()
        try:
            body = json.loads(raw)
        except ValueError:
            raise RegistryError(f"manifest {ref} of {self.repository} is not JSON") from None
        media = body.get("mediaType") or media
        return digest, media, raw

    def resolve(self, ref: str, platform: str = "linux/amd64") -> Resolved:
        """The image manifest for `ref`, choosing `platform` from an index or list. A manifest
        or config of the wrong shape (a list where a mapping belongs, a size that is no number)
        is one RegistryError line."""
        try:
            return self._resolve(ref, platform)
        except (AttributeError, TypeError, ValueError, KeyError) as err:
            raise RegistryError(f"{self.repository}:{ref}: the registry sent a malformed manifest or image config "
                                f"({type(err).__name__}: {str(err)[:120]}); tell the image's owner") from None

    def _resolve(self, ref: str, platform: str) -> Resolved:
        digest, media, raw = self.manifest(ref)
        body = json.loads(raw)
        if media in LISTS or "manifests" in body:
            chosen = select_platform(body.get("manifests") or [], platform)
            if chosen is None:
                have = sorted({_platform_name(m.get("platform") or {}) for m in body.get("manifests") or []})
                raise RegistryError(f"{self.repository}:{ref} has no image for platform {platform} "
                                    f"(it has: {', '.join(have) or 'none'}); set registries.platform")
            digest, media, raw = self.manifest(_check_digest(chosen["digest"]))
            body = json.loads(raw)
        if media not in (OCI_MANIFEST, DOCKER_MANIFEST) and body.get("schemaVersion") != 2:
            raise RegistryError(f"{self.repository}:{ref}: unsupported manifest type {media!r} "
                                "(Docker schema 1 is not supported; re-push the image with a current Docker)")
        if "config" not in body or "layers" not in body:
            raise RegistryError(f"{self.repository}:{ref}: manifest has no config or layers")
        config_digest = _check_digest(body["config"].get("digest"))
        config_raw = self.request("GET", f"blobs/{config_digest}").content
        if "sha256:" + hashlib.sha256(config_raw).hexdigest() != config_digest:
            raise RegistryError(f"image config {config_digest} of {self.repository} does not match its digest")
        try:
            config = json.loads(config_raw)
        except ValueError:
            raise RegistryError(f"image config of {self.repository} is not JSON") from None
        _check_config(config)
        layers = [Layer(digest=_check_digest(l.get("digest")), size=_size(l.get("size")),
                        media_type=l.get("mediaType", "")) for l in body["layers"]]
        return Resolved(digest=digest, manifest=body, config=config, layers=layers)

    # ------------------------------------------------------------ blobs

    def fetch_blob(self, layer: Layer, cache: "LayerCache", progress: Callable[[int], None] | None = None,
                   arriving: "Arriving | None" = None) -> Path:
        """The blob's path in the cache, downloading it (sha256 checked) if it is not there;
        `arriving` is told of every byte written, for a reader following the download."""
        fetched = []
        path = cache.get_or_fetch(layer.digest, lambda out: fetched.append(self._download(layer, out, progress)),
                                  arriving)
        if not fetched and progress:
            progress(layer.size)  # already in the cache: count it as done
        return path

    def _download(self, layer: Layer, out, progress) -> None:
        hasher = hashlib.sha256()
        size = 0
        resp = self.request("GET", f"blobs/{layer.digest}", stream=True)
        try:
            for chunk in resp.iter_bytes():  # as received: re-chunking to 1 MiB cost ~25% more CPU
                hasher.update(chunk)
                out.write(chunk)
                size += len(chunk)
                if progress:
                    progress(len(chunk))
        except httpx.HTTPError as err:
            log.warning("download_broke_off", digest=layer.digest, error=f"{type(err).__name__}: {err}")
            raise RegistryError(f"layer {layer.digest} of {self.repository}: the download from {self.where} "
                                "broke off; pull again") from None
        finally:
            resp.close()
        got = "sha256:" + hasher.hexdigest()
        if got != layer.digest:
            raise RegistryError(f"layer {layer.digest} of {self.repository}: downloaded content hashes to "
                                f"{got}; the registry's copy is corrupt or was tampered with")
        if layer.size and size != layer.size:
            raise RegistryError(f"layer {layer.digest} of {self.repository}: {size} bytes, manifest says {layer.size}")


def _tls_failed(err: BaseException) -> bool:
    """The error (or one it came from) is a failed TLS handshake."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, ssl.SSLError) or "SSL" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def _platform_name(p: dict) -> str:
    name = f"{p.get('os', '?')}/{p.get('architecture', '?')}"
    return name + (f"/{p['variant']}" if p.get("variant") else "")


def select_platform(manifests: list[dict], platform: str) -> dict | None:
    """The entry of an index/list for os/arch[/variant]; attestations ('unknown/unknown') never."""
    os_, arch, *variant = platform.split("/")
    for m in manifests:
        p = m.get("platform") or {}
        if p.get("os") == os_ and p.get("architecture") == arch and (not variant or p.get("variant") == variant[0]):
            return m
    return None


class LayerCache:
    """Blobs by digest, shared by every image: a layer is downloaded once. Concurrent requests
    for one blob wait for the one download; a failed download leaves nothing."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.downloads = 0  # blobs fetched from a registry by this process (for tests/metrics)

    def path(self, digest: str) -> Path:
        return self.root / _check_digest(digest).split(":", 1)[1]

    def get_or_fetch(self, digest: str, download: Callable, arriving: "Arriving | None" = None) -> Path:
        target = self.path(digest)
        with self._guard:
            lock = self._locks.setdefault(digest, threading.Lock())
        with lock:
            if target.exists():
                return target
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{target.name}.", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as out:
                    if arriving is not None:
                        arriving.started(tmp)
                        download(_Announcing(out, arriving))
                    else:
                        download(out)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            self.downloads += 1
            return target

    def clean_partial(self) -> None:
        for part in self.root.glob(".*.part"):
            part.unlink(missing_ok=True)


class Arriving:
    """A blob while it downloads into the cache, readable as it arrives, so that the merge
    reads the base layer during its download instead of after it (docs/architecture.md, decision 11). Bytes read this
    way count only once the download's own checks (sha256, size) passed: a reader ends where
    the download ended, and whoever reads must then wait for the download's result, which
    raises when it failed (Fetch.result)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._part: str | None = None
        self._size = 0
        self._ended = False

    def started(self, part: str) -> None:
        with self._cond:
            self._part = part
            self._cond.notify_all()

    def wrote(self, n: int) -> None:
        with self._cond:
            self._size += n
            self._cond.notify_all()

    def ended(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def follow(self) -> "Following | None":
        """The blob from its first byte, each read waiting for bytes still to come; None when
        there is no download to follow (already in the cache, or it ended before starting)."""
        with self._cond:
            self._cond.wait_for(lambda: self._part is not None or self._ended)
            if self._part is None:
                return None
            try:
                return Following(open(self._part, "rb"), self)
            except FileNotFoundError:  # already renamed into the cache (or removed): read that
                return None

    def _wait(self, pos: int, n: int) -> int:
        """Bytes available from `pos` (up to n) once there are some or the download ended."""
        with self._cond:
            self._cond.wait_for(lambda: self._size >= pos + n or self._ended)
            return self._size - pos


class Following(io.RawIOBase):
    """The reading end of an Arriving blob (an open partial file: a rename or removal of it
    does not matter)."""

    def __init__(self, f, arriving: Arriving):
        super().__init__()
        self._f = f
        self._arriving = arriving
        self._pos = 0

    def readable(self) -> bool:
        return True

    def head(self, n: int) -> bytes:
        """The blob's first n bytes (fewer if it is shorter), without moving."""
        available = self._arriving._wait(0, n)
        return os.pread(self._f.fileno(), min(n, available), 0)

    def readinto(self, buf) -> int:
        # what has arrived, at least one byte (a raw read may be short: decompressors read
        # on at once; layers.open_layer buffers an uncompressed layer, as tarfile needs)
        available = self._arriving._wait(self._pos, 1)
        if available <= 0:
            return 0
        n = os.preadv(self._f.fileno(), [memoryview(buf)[:min(len(buf), available)]], self._pos)
        self._pos += n
        return n

    def seekable(self) -> bool:  # readers rewind over what they read too far (ISA-L's gzip)
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END:
            offset += self._arriving._wait(0, 1 << 62)  # the whole blob: once the download ended
        elif whence == io.SEEK_CUR:
            offset += self._pos
        if offset < 0:
            raise OSError(f"seek to {offset}: before the blob's start")
        self._pos = offset
        return offset

    def close(self) -> None:
        self._f.close()
        super().close()


class _Announcing:
    """The download's output file, telling an Arriving of each chunk once it is in the file."""

    def __init__(self, out, arriving: Arriving):
        self._out = out
        self._arriving = arriving

    def write(self, data) -> int:
        n = self._out.write(data)
        self._out.flush()
        self._arriving.wrote(len(data))
        return n


class Fetch:
    """One layer being fetched: a future of its cache path (result, cancel, done) that can
    also be read while it arrives (follow)."""

    def __init__(self, future: Future, arriving: Arriving):
        self.future = future
        self._arriving = arriving
        future.add_done_callback(lambda _: arriving.ended())  # also when cancelled before it ran

    def result(self, timeout: float | None = None) -> Path:
        return self.future.result(timeout)

    def cancel(self) -> bool:
        return self.future.cancel()

    def done(self) -> bool:
        return self.future.done()

    def follow(self) -> Following | None:
        return self._arriving.follow()


def start_fetch(pool: ThreadPoolExecutor, client: Client, layers: list[Layer], cache: LayerCache,
                progress: Callable[[int], None] | None = None,
                on_done: Callable[[Layer], None] | None = None) -> list[Fetch]:
    """The layers' fetches (in manifest order), the newest submitted first: the merge reads
    newest first, so it can start while the base layer is still downloading, and it reads a
    layer while it downloads (Fetch.follow)."""
    def one(layer: Layer, arriving: Arriving) -> Path:
        try:
            path = client.fetch_blob(layer, cache, progress, arriving)
        finally:
            arriving.ended()
        if on_done:
            on_done(layer)
        return path

    fetches: dict[int, Fetch] = {}
    for index in reversed(range(len(layers))):
        arriving = Arriving()
        fetches[index] = Fetch(pool.submit(one, layers[index], arriving), arriving)
    return [fetches[i] for i in range(len(layers))]


def fetch_layers(client: Client, layers: list[Layer], cache: LayerCache, workers: int = 4,
                 progress: Callable[[int], None] | None = None,
                 on_done: Callable[[Layer], None] | None = None) -> list[Path]:
    """Every layer in the cache, downloaded in parallel; the first failure is raised."""
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(layers)))) as pool:
        return [f.result() for f in start_fetch(pool, client, layers, cache, progress, on_done)]

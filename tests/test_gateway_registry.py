"""Registry protocol paths the local (anonymous, well-behaved) registry cannot show: Bearer and
basic auth challenges, transient errors, redirects, lying registries. These fake only the
HTTP peer (httpx.MockTransport); the client code under test is the real one."""

from __future__ import annotations

import base64
import hashlib
import json

import httpx
import pytest

from imagegw import registry
from imagegw.registry import Client, Credentials, Layer, LayerCache, RegistryError

CONFIG = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Env": ["A=1"]}}).encode()
LAYER = b"layer bytes" * 100


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": registry.OCI_MANIFEST,
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": digest(CONFIG), "size": len(CONFIG)},
                       "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                   "digest": digest(LAYER), "size": len(LAYER)}]}).encode()


def serve(request: httpx.Request) -> httpx.Response:
    path = request.url.path
    if path.endswith("/manifests/1") or path.endswith(f"/manifests/{digest(MANIFEST)}"):
        return httpx.Response(200, content=MANIFEST, headers={"content-type": registry.OCI_MANIFEST})
    if path.endswith(f"/blobs/{digest(CONFIG)}"):
        return httpx.Response(200, content=CONFIG)
    if path.endswith(f"/blobs/{digest(LAYER)}"):
        return httpx.Response(200, content=LAYER)
    return httpx.Response(404, json={"errors": [{"code": "NAME_UNKNOWN", "message": "no such thing"}]})


def test_bearer_token_from_challenge(tmp_path):
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "auth.example":
            assert request.url.params["scope"] == "repository:org/app:pull"
            assert request.url.params["service"] == "reg"
            assert request.headers["authorization"] == "Basic " + base64.b64encode(b"u:p").decode()
            return httpx.Response(200, json={"token": "T0K"})
        if request.headers.get("authorization") != "Bearer T0K":
            return httpx.Response(401, headers={"www-authenticate":
                                  'Bearer realm="https://auth.example/token",service="reg",scope="repository:org/app:pull"'})
        return serve(request)

    c = Client("https://reg.example", "org/app", Credentials("u", "p"), transport=httpx.MockTransport(handler),
               auth_hosts=("auth.example",))
    resolved = c.resolve("1")
    assert resolved.digest == digest(MANIFEST) and resolved.config["config"]["Env"] == ["A=1"]
    path = c.fetch_blob(resolved.layers[0], LayerCache(tmp_path))
    assert path.read_bytes() == LAYER
    assert sum(1 for r in seen if r.url.host == "auth.example") == 1  # token reused


def test_basic_auth_and_missing_credentials():
    def handler(request):
        if request.headers.get("authorization") != "Basic " + base64.b64encode(b"me:pw").decode():
            return httpx.Response(401, headers={"www-authenticate": 'Basic realm="reg"'})
        return serve(request)

    ok = Client("https://reg.example", "app", Credentials("me", "pw"), transport=httpx.MockTransport(handler))
    assert ok.resolve("1").digest == digest(MANIFEST)
    anonymous = Client("https://reg.example", "app", transport=httpx.MockTransport(handler))
    with pytest.raises(RegistryError, match="requires a login"):
        anonymous.resolve("1")


def test_transient_errors_are_retried_permanent_ones_are_not():
    calls = {"n": 0}

    def flaky(request):
        calls["n"] += 1
        if calls["n"] <= 2:
            return httpx.Response(503)
        return serve(request)

    c = Client("https://reg.example", "app", transport=httpx.MockTransport(flaky), backoff=0)
    assert c.resolve("1").digest == digest(MANIFEST) and calls["n"] == 4  # 2 failures + manifest + config
    calls["n"] = 0

    def gone(request):
        calls["n"] += 1
        return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]})

    c = Client("https://reg.example", "app", transport=httpx.MockTransport(gone), backoff=0)
    with pytest.raises(RegistryError, match="not found.*MANIFEST_UNKNOWN"):
        c.resolve("nope")
    assert calls["n"] == 1

    def down(request):
        raise httpx.ConnectError("refused")

    c = Client("https://reg.example", "app", transport=httpx.MockTransport(down), backoff=0, retries=2)
    with pytest.raises(RegistryError, match="tried 3 times"):
        c.resolve("1")


def test_blob_redirect_is_followed(tmp_path):
    def handler(request):
        if request.url.host == "reg.example" and "/blobs/" in request.url.path and "layer" not in request.url.path:
            if request.url.path.endswith(digest(LAYER)):
                return httpx.Response(307, headers={"location": "https://cdn.example/layer"})
        if request.url.host == "cdn.example":
            return httpx.Response(200, content=LAYER)
        return serve(request)

    c = Client("https://reg.example", "app", transport=httpx.MockTransport(handler))
    layer = Layer(digest(LAYER), len(LAYER), "")
    assert c.fetch_blob(layer, LayerCache(tmp_path)).read_bytes() == LAYER


def test_lying_registry_is_refused(tmp_path):
    def wrong_manifest(request):
        return httpx.Response(200, content=MANIFEST + b" ", headers={"content-type": registry.OCI_MANIFEST})

    c = Client("https://reg.example", "app", transport=httpx.MockTransport(wrong_manifest))
    with pytest.raises(RegistryError, match="hashes to"):
        c.resolve(digest(MANIFEST))

    def wrong_blob(request):
        return httpx.Response(200, content=LAYER[:-1] + b"X")

    c = Client("https://reg.example", "app", transport=httpx.MockTransport(wrong_blob))
    cache = LayerCache(tmp_path)
    with pytest.raises(RegistryError, match="tampered"):
        c.fetch_blob(Layer(digest(LAYER), len(LAYER), ""), cache)
    assert list(tmp_path.iterdir()) == []  # no partial or bad blob kept


def test_schema1_manifest_is_refused_with_advice():
    def v1(request):
        return httpx.Response(200, content=json.dumps({"schemaVersion": 1, "fsLayers": []}).encode(),
                              headers={"content-type": "application/vnd.docker.distribution.manifest.v1+prettyjws"})

    c = Client("https://reg.example", "app", transport=httpx.MockTransport(v1))
    with pytest.raises(RegistryError, match="schema 1 is not supported"):
        c.resolve("1")


def _challenging(realm: str, seen: list):
    """A registry whose every request is answered with a Bearer challenge naming `realm`;
    a token request is answered (and recorded) wherever it goes."""
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.path == "/token":
            return httpx.Response(200, json={"token": "T"})
        if request.headers.get("authorization") == "Bearer T":
            return serve(request)
        return httpx.Response(401, headers={"www-authenticate": f'Bearer realm="{realm}",service="reg"'})
    return handler


@pytest.mark.parametrize("base,realm,auth_hosts", [
    ("https://reg.example", "https://evil.example/token", ()),             # any other host
    ("https://reg.example", "https://auth.example/token", ("other.example",)),
    ("https://reg.example", "https://reg.example.evil.example/token", ()),  # a suffix is another host
    ("https://reg.example", "https://auth.docker.io/token", ()),            # Docker Hub's, for another registry
    ("https://reg.example", "http://reg.example/token", ()),               # TLS registry, plain-http realm
    ("https://reg.example", "file:///etc/passwd", ()),
    ("https://reg.example", "https://user@evil.example/token", ()),
])
def test_a_realm_outside_the_allowed_hosts_is_refused_before_any_request(base, realm, auth_hosts):
    seen: list = []
    c = Client(base, "org/app", Credentials("u", "p"), retries=0, transport=httpx.MockTransport(_challenging(realm, seen)),
               auth_hosts=auth_hosts)
    with pytest.raises(registry.RealmNotAllowed) as err:
        c.resolve("1")
    assert "\n" not in str(err.value) and "nothing was sent there" in str(err.value)
    assert all(not url.endswith("/token") and "evil" not in url for url in seen), seen


@pytest.mark.parametrize("base,realm,auth_hosts", [
    ("https://reg.example", "https://reg.example:5001/token", ()),          # its own host, another port
    ("https://reg.example", "https://auth.example/token", ("auth.example",)),
    ("https://registry-1.docker.io", "https://auth.docker.io/token", ()),  # Docker Hub's token service
    ("http://127.0.0.1:5000", "http://127.0.0.1:5001/token", ()),
])
def test_a_realm_on_an_allowed_host_gets_the_token_request(base, realm, auth_hosts):
    seen: list = []
    c = Client(base, "org/app", Credentials("u", "p"), retries=0, transport=httpx.MockTransport(_challenging(realm, seen)),
               auth_hosts=auth_hosts)
    assert c.resolve("1").digest == digest(MANIFEST)
    assert any(url.startswith(realm) for url in seen), seen


def test_login_to_a_registry_with_a_foreign_realm_says_so():
    """Not 'refused the user name and password': the credentials were never sent."""
    seen: list = []
    c = Client("https://reg.example", "", Credentials("u", "p"), retries=0,
               transport=httpx.MockTransport(_challenging("https://evil.example/token", seen)))
    with pytest.raises(registry.RealmNotAllowed, match="evil.example"):
        c.check_login()
    assert not any("evil" in url for url in seen)

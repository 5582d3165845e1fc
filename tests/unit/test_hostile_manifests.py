"""Hostile registries, generated: whatever JSON (or not) a registry sends as a manifest, an
index or an image config, the gateway's client (imagegw/registry.py `Client.resolve`) and the
record it makes (imagegw/pull.py `metadata`) give a result or one RegistryError line, never
another exception. Only the HTTP peer is faked (httpx.MockTransport); pure, in `make unit`."""

from __future__ import annotations

import hashlib
import json

import httpx
from hypothesis import HealthCheck, example, given, settings, strategies as st

from imagegw import pull, registry

# the profile's count (tests/unit/conftest.py: fewer in `make unit`), at most 150; FUZZ_EXAMPLES=N for more
EXAMPLES = int(__import__("os").environ.get("FUZZ_EXAMPLES") or min(150, settings.default.max_examples))
FUZZ = settings(derandomize=True, max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow])


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


CONFIG_OK = json.dumps({"config": {"Env": ["A=1"]}}).encode()
LAYER = b"layer"
KEYS = ["schemaVersion", "mediaType", "config", "layers", "manifests", "platform", "os", "architecture",
        "variant", "digest", "size", "Env", "Entrypoint", "Cmd", "WorkingDir", "User", "Labels"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 2**70), st.floats(allow_nan=False), st.text(max_size=6),
                    st.sampled_from([digest(CONFIG_OK), digest(LAYER), "sha256:x", "linux", "amd64", "2",
                                     registry.OCI_MANIFEST, "application/vnd.oci.image.index.v1+json"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4), max_leaves=14)
documents = st.one_of(values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=20),
                      st.just(json.dumps({"schemaVersion": 2, "config": {"digest": digest(CONFIG_OK)},
                                          "layers": [{"digest": digest(LAYER), "size": "big"}]}).encode()))


def client_for(manifest: bytes, config: bytes) -> registry.Client:
    def serve(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if "/manifests/" in path:
            return httpx.Response(200, content=manifest, headers={"content-type": registry.OCI_MANIFEST})
        if path.endswith(digest(config)):
            return httpx.Response(200, content=config)
        return httpx.Response(404, json={"errors": [{"code": "BLOB_UNKNOWN", "message": "no"}]})
    return registry.Client("https://reg.example", "app", transport=httpx.MockTransport(serve), backoff=0, retries=0)


@FUZZ
@given(manifest=documents, config=documents)
@example(manifest=b"[]", config=CONFIG_OK)
@example(manifest=json.dumps({"manifests": ["x"]}).encode(), config=CONFIG_OK)
@example(manifest=json.dumps({"schemaVersion": 2, "config": "x", "layers": []}).encode(), config=CONFIG_OK)
@example(manifest=json.dumps({"schemaVersion": 2, "config": {"digest": digest(CONFIG_OK)},
                              "layers": [{"digest": digest(LAYER), "size": "big"}]}).encode(), config=CONFIG_OK)
@example(manifest=json.dumps({"schemaVersion": 2, "config": {"digest": digest(b"[1]")}, "layers": []}).encode(),
         config=b"[1]")
def test_any_manifest_and_config_resolve_or_are_one_line(manifest, config):
    client = client_for(manifest, config)
    try:
        resolved = client.resolve("1")
        record = pull.metadata(resolved.config)
    except registry.RegistryError as err:
        assert str(err) and "\n" not in str(err)
        return
    finally:
        client.close()
    assert all(isinstance(layer.size, int) and layer.size >= 0 for layer in resolved.layers)
    assert all(isinstance(e, str) for e in record["env"])


challenges = st.one_of(st.text(max_size=30), st.builds(
    lambda scheme, realm, rest: f'{scheme} realm="{realm}"{rest}',
    st.sampled_from(["Bearer", "bearer", "Basic", "Digest", ""]),
    st.sampled_from(["https://auth.example/token", "", "relative", "ftp://x/", "http://[", "https://auth.example:99999/",
                     "https://auth.example/\u2028"]),
    st.sampled_from(["", ',service="reg"', ',scope="x"', ',realm="again"'])))
token_bodies = st.one_of(documents, st.sampled_from([b'{"token": "t"}', b'{"access_token": "t"}', b"[]", b'"t"',
                                                     b'{"token": 5}', b"not json"]))


@FUZZ
@given(challenge=challenges, token=token_bodies, status=st.sampled_from([200, 401, 500]))
@example(challenge='Bearer realm="https://auth.example/token"', token=b"not json", status=200)
@example(challenge='Bearer realm="https://auth.example/token"', token=b"[]", status=200)
@example(challenge='Bearer realm="http://["', token=b"{}", status=200)
def test_any_auth_challenge_and_token_answer_authenticate_or_are_one_line(challenge, token, status):
    def serve(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example":
            return httpx.Response(status, content=token)
        if "authorization" not in request.headers:
            return httpx.Response(401, headers={"www-authenticate": challenge})
        if "/manifests/" in request.url.path:
            return httpx.Response(200, content=json.dumps({"schemaVersion": 2, "config": {"digest": digest(CONFIG_OK)},
                                                           "layers": []}).encode())
        return httpx.Response(200, content=CONFIG_OK)

    client = registry.Client("https://reg.example", "app", registry.Credentials("u", "p"),
                             transport=httpx.MockTransport(serve), backoff=0, retries=0, auth_hosts=("auth.example",))
    try:
        client.resolve("1")
    except registry.RegistryError as err:
        assert str(err) and "\n" not in str(err)
    finally:
        client.close()


def test_a_token_answer_without_a_token_is_named_as_such():
    for token in (b"not json", b"[]", b'{"token": 5}', b"{}"):
        def serve(request: httpx.Request, token=token) -> httpx.Response:
            if request.url.host == "auth.example":
                return httpx.Response(200, content=token)
            return httpx.Response(401, headers={"www-authenticate": 'Bearer realm="https://auth.example/token"'})
        client = registry.Client("https://reg.example", "app", transport=httpx.MockTransport(serve), backoff=0, retries=0,
                                 auth_hosts=("auth.example",))
        try:
            client.resolve("1")
        except registry.RegistryError as err:
            assert "token response has no token" in str(err), (token, str(err))
        else:
            raise AssertionError("resolved without a token")
        finally:
            client.close()

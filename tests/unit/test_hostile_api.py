"""The gateway's HTTP API under generated requests (the schemathesis idea with hypothesis):
every route of its own OpenAPI document, called with any path values, any `authentication`
header and any body, answers with a status below 500 and a JSON body; an error is one line.

The app runs in-process on a temporary state and image directory (no cluster, no network:
the site's only registry is a closed port and Docker Hub is off, and a pull that starts is
marked failed at once by the subclass below). Who calls is decided by a subclass of the gateway whose `caller` accepts
`test:UID` for a few of the system's users (from pwd) and hands anything else to the real
munge check, which refuses it with a 401: the identity is injected, nothing is patched.
"""

from __future__ import annotations

import json
import pwd
import re
import tempfile
import urllib.parse
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings, strategies as st

from imagegw import api, identity
from shifter_site import config

# 150 in every profile (about 0.5 s more than 25, and fewer never reach a 400 with derandomize,
# which test_the_requests_reached_past_every_check asserts); FUZZ_EXAMPLES=N for more
EXAMPLES = int(__import__("os").environ.get("FUZZ_EXAMPLES") or 150)
FUZZ = settings(derandomize=True, max_examples=EXAMPLES,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
USERS = sorted({p.pw_uid for p in pwd.getpwall()})[:3]
SITE = """\
system: fuzz
image_dir: {images}
munge_socket: {state}/no-munge.socket
gateway: {{urls: ["http://127.0.0.1:1"], repull_after: 0}}
registries: {{default: "http://127.0.0.1:1", docker_hub: false}}
"""


class TestGateway(api.Gateway):
    """The real gateway, with callers named by the test (`test:UID`)."""

    __test__ = False

    def caller(self, credential: str | None) -> identity.Caller:
        match = re.fullmatch(r"test:([0-9]+)", credential or "")
        if match and int(match.group(1)) in USERS:
            uid = int(match.group(1))
            gid = pwd.getpwuid(uid).pw_gid
            return identity.Caller(uid=uid, gid=gid, gids=identity.groups_of(uid, gid))
        return super().caller(credential)

    def _run(self, ref, requester, acl, credentials=None) -> None:
        """A started pull fails at once (the registry is not what is tested here; the real one
        would retry a closed port for seconds after the test)."""
        self.store.update(self.cfg.system, ref.itype, ref.key, status="FAILURE", message="test: no registry")
        with self.pulls_lock:
            self.pulls_by[requester].discard(ref.key)


@pytest.fixture(scope="module")
def client():
    with tempfile.TemporaryDirectory() as tmp:
        images, state = Path(tmp, "images"), Path(tmp, "state")
        images.mkdir()
        cfg = config.parse(SITE.format(images=images, state=state))
        gateway = TestGateway(cfg, state, workers=1)
        try:
            with TestClient(api.create_app(gateway), raise_server_exceptions=False) as test_client:
                test_client.routes = [(method.upper(), path) for path, item in
                                      test_client.get("/openapi.json").json()["paths"].items() for method in item]
                yield test_client
        finally:
            gateway.close()


PIECES = ["fuzz", "docker", "id", "local", "custom", "ubuntu", "a:b", "a@sha256:" + "0" * 64, "127.0.0.1:1",
          "..", ".", "/", "//", "%2F", "%00", "%", "%zz", "\u2028", "é", "a" * 300, "?", "#", ";", " ", "\\"]
path_values = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=8)), min_size=1, max_size=4).map("".join)
auth = st.one_of(st.sampled_from([f"test:{u}" for u in USERS]), st.none(), st.sampled_from([f"test:{u}" for u in USERS] + ["test:999999999", "MUNGE:", "MUNGE:abc=",
                                                                          "MUNGE:" + "A" * 5000, "", " "]),
                 st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20))
json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                                     st.text(max_size=10), st.sampled_from(["0", "1,2", str(USERS[0]), "1, 2", "-1"])),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                               st.sampled_from(["allowed_uids", "allowed_gids", "registry_auth", "username",
                                                "password", "x"]), inner, max_size=3), max_leaves=8)
# mostly plausible values (so requests get past the first check), else anything
values_st = st.tuples(st.sampled_from(["fuzz"]) | path_values, st.sampled_from(["docker", "id"]) | path_values,
                      st.sampled_from(["ubuntu", "a/b:1", "a@sha256:" + "0" * 64, "127.0.0.1:1/x:y", "Up:per",
                                       "id:" + "a" * 64, "a/"]) | path_values)
STATUSES: set[int] = set()
bodies = st.one_of(st.just(b""), st.binary(max_size=30), json_values.map(lambda v: json.dumps(v).encode()))


def _quote(value: str) -> str:
    return urllib.parse.quote(value.encode("utf-8", "surrogatepass"), safe="/:@%")


@FUZZ
@given(route=st.integers(0, 50), values=values_st, who=auth, body=bodies)
def test_no_request_gets_a_server_error(client, route, values, who, body):
    method, template = client.routes[route % len(client.routes)]
    params = iter(values)
    url = re.sub(r"\{[^}]+\}", lambda m: _quote(next(params)), template)
    headers = {"authentication": who} if who is not None else {}
    response = client.request(method, url, headers=headers, content=body if method == "POST" else None)
    assert response.status_code < 500, (method, url, who, body, response.status_code, response.text)
    STATUSES.add(response.status_code)
    data = response.json()
    if response.status_code >= 400 and "error" in data:
        assert isinstance(data["error"], str) and "\n" not in data["error"] and "Traceback" not in data["error"]


def test_the_requests_reached_past_every_check(client):
    """The generated requests were answered by each layer: served (200), malformed (400),
    no valid credential (401), not there (404). (Runs after the test above.)"""
    assert {200, 400, 401, 404} <= STATUSES, STATUSES


def test_the_routes_tried_are_the_apis_own(client):
    assert {("GET", "/api/lookup/{system}/{itype}/{tag}"), ("POST", "/api/pull/{system}/{itype}/{tag}"),
            ("GET", "/api/list/{system}/")} <= set(client.routes)

"""Attack class: the gateway as a request forger and port scanner, and one user starving the
pull workers. Played as a plain user against the local cluster's gateway,
with loopback addresses only: a host the site does not list is refused before any connection
(a socket we listen on sees none), a listening and a closed port give the same text, and each
user has a bounded number of pulls queued or running."""

from __future__ import annotations

import select
import socket
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

import gatewaytools as gt
from gatewaytools import Listener
from conftest import localcluster, run_as
from imagegw import registry
from shifter_site import config

SHIFTERIMG = str(localcluster.PREFIX / "bin/shifterimg")
GATEWAY = f"http://{localcluster.GATEWAY}"
LISTENED = "127.0.0.4:5000"   # listed in the local cluster's registries.hosts; tests listen here
CLOSED = "127.0.0.5:5000"     # listed too; nobody listens here


def listen(mode: str) -> Listener:
    addr, port = LISTENED.split(":")
    return Listener(addr, int(port), mode)


@pytest.fixture(scope="module")
def cfg(cluster):
    return config.load(str(gt.STATE / "etc/shifter.yaml"), privileged=False)


def gateway_status(ref: str) -> dict:
    itype, _, tag = ref.partition(":")
    credential = munge_credential("root")
    return httpx.get(f"{GATEWAY}/api/status/local/{itype}/{tag}/", headers={"authentication": credential},
                     timeout=10).json()


def wait_done(refs: list[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(gateway_status(r).get("status") in ("READY", "FAILURE") for r in refs):
            return
        time.sleep(0.2)
    raise AssertionError(f"pulls still running after {timeout}s: {refs}")


# ---------------------------------------------------------------- unlisted registries


@pytest.mark.parametrize("form", ["{addr}:{port}/x:1", "docker:{addr}:{port}/library/app", "{addr}:{port}/a/b@sha256:" + "a" * 64])
def test_unlisted_registry_is_refused_without_any_connection(cfg, form):
    listener = Listener("127.0.0.6", 0)
    try:
        ref = form.format(addr="127.0.0.6", port=listener.port)
        for command in ("pull", "lookup"):
            result = run_as("testuser", [SHIFTERIMG, command, ref])
            assert result.returncode == 2, result.stderr
            assert result.stderr.count("\n") == 1 and result.stdout == ""
            assert f"registry 127.0.0.6:{listener.port} is not one this site pulls from" in result.stderr
            assert "registries.hosts" in result.stderr and "Traceback" not in result.stderr
        # the API refuses it the same way (a client that skips shifterimg's own check)
        itype, tag = ("docker", ref.removeprefix("docker:"))
        for method, action in (("POST", "pull"), ("GET", "lookup")):
            resp = httpx.request(method, f"{GATEWAY}/api/{action}/local/{itype}/{tag}/", timeout=10,
                                 headers={"authentication": munge_credential("testuser")})
            assert resp.status_code == 400 and "is not one this site pulls from" in resp.json()["error"]
        time.sleep(0.5)
        assert listener.accepted == 0  # nothing ever connected to the socket
        assert select.select([listener.sock], [], [], 0)[0] == []
    finally:
        listener.close()


@pytest.mark.parametrize("ref", ["docker:169.254.169.254/latest/meta-data:1", "docker:127.0.0.1:1/x",
                                 "docker:localhost:8642/api", "docker:[::1]:22/x"])
def test_metadata_and_loopback_services_cannot_be_named(cfg, ref):
    resp = httpx.post(f"{GATEWAY}/api/pull/local/docker/{quote(ref.removeprefix('docker:'), safe='/:@')}/", timeout=10,
                      headers={"authentication": munge_credential("testuser")})
    assert resp.status_code == 400, resp.text
    assert "is not one this site pulls from" in resp.json()["error"]
    result = run_as("testuser", [SHIFTERIMG, "pull", ref])
    assert result.returncode == 2 and result.stderr.count("\n") == 1


# ---------------------------------------------------------------- no port-scanner oracle


def test_listening_and_closed_ports_give_the_same_text(cfg):
    """Both hosts are listed (so the gateway does try them): a port that accepts and closes,
    and a port nobody listens on, fail with the same words, naming no errno or address."""
    listener = listen("close")
    try:
        tag = time.time_ns()  # a new name: a recent failure of an earlier run would be answered without a pull
        refs = {LISTENED: f"docker:{LISTENED}/probe/app:{tag}", CLOSED: f"docker:{CLOSED}/probe/app:{tag}"}
        procs = {host: run_as_background("testuser", [SHIFTERIMG, "pull", ref]) for host, ref in refs.items()}
        results = {host: proc.communicate(timeout=120) for host, proc in procs.items()}
        assert {proc.returncode for proc in procs.values()} == {1}
        texts = {host: err.replace(host, "HOST") for host, (_, err) in results.items()}
        assert texts[LISTENED] == texts[CLOSED], texts
        text = texts[CLOSED]
        assert "cannot reach registry HOST" in text and text.count("\n") == 1
        for leak in ("Errno", "refused", "timed out", "Connection", "reset", "127.0.0", "ConnectError"):
            assert leak not in text, text
        assert listener.accepted >= 1  # the listed port was really tried
    finally:
        listener.close()


def run_as_background(user: str, argv: list[str]) -> subprocess.Popen:
    """run_as, without waiting: argv as `user` with a login-like environment."""
    return subprocess.Popen(["runuser", "-u", user, "--", "env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin",
                             f"HOME={Path('~' + user).expanduser()}", f"USER={user}", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("mode", ["closed", "close", "hang", "garbage"])
def test_client_gives_one_text_for_every_transport_failure(mode):
    """The registry client itself, against real loopback sockets (no gateway): refused,
    accepted-and-closed, silent (timeout), and non-HTTP peers all read the same."""
    srv = None
    if mode == "closed":
        probe = socket.create_server(("127.0.0.7", 0))
        port = probe.getsockname()[1]
        probe.close()
    else:
        srv = socket.create_server(("127.0.0.7", 0))
        port = srv.getsockname()[1]
        held = []

        def serve():
            while True:
                try:
                    conn, _ = srv.accept()
                except OSError:
                    return
                if mode == "garbage":
                    conn.recv(4096)
                    conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
                    conn.close()
                elif mode == "hang":
                    held.append(conn)
                else:
                    conn.close()
        threading.Thread(target=serve, daemon=True).start()
    client = registry.Client(f"http://127.0.0.7:{port}", "a/b", retries=1, backoff=0, timeout=0.5, name="reg.example")
    try:
        with pytest.raises(registry.Unreachable) as err:
            client.resolve("1")
    finally:
        client.close()
        if srv:
            srv.close()
    assert str(err.value) == ("cannot reach registry reg.example (at 127.0.0.7:%d) (tried 2 times); try again "
                              "later, and tell the site admins if it persists" % port)


# ---------------------------------------------------------------- one user cannot fill the workers


def munge_credential(user: str) -> str:
    socket_path = gt.STATE / "munge/munge.socket.2"
    out = run_as(user, ["munge", "--no-input", f"--socket={socket_path}"])
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_pulls_per_user_are_bounded(cfg):
    limit = cfg.gateway.max_pulls_per_user
    listener = listen("hang")
    tag = f"{time.time_ns()}"
    mine = [f"{LISTENED}/limit/a{i}:{tag}" for i in range(limit + 1)]
    other = f"{LISTENED}/limit/b:{tag}"
    started: list[str] = []

    def post(ref: str, credential: str | None) -> httpx.Response:
        headers = {"authentication": credential} if credential else {}
        return httpx.post(f"{GATEWAY}/api/pull/local/docker/{ref}/", headers=headers, timeout=10)

    try:
        for ref in mine[:limit]:
            resp = post(ref, munge_credential("testuser"))
            assert resp.status_code == 200 and resp.json()["status"] in ("INIT", "PULLING"), resp.text
            started.append(ref)
        refused = post(mine[limit], munge_credential("testuser"))
        assert refused.status_code == 429
        assert f"you have {limit} pulls queued or running" in refused.json()["error"]
        # as the user sees it
        result = run_as("testuser", [SHIFTERIMG, "pull", mine[limit]])
        assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
        assert "gateway.max_pulls_per_user" in result.stderr and "Traceback" not in result.stderr
        assert gateway_status(f"docker:{mine[limit]}").get("error")  # never queued
        # joining a pull already under way costs nothing; another user has their own share
        assert post(mine[0], munge_credential("testuser")).status_code == 200
        resp = post(other, munge_credential("testuser2"))
        assert resp.status_code == 200, resp.text
        started.append(other)
        # a forged or replayed credential is refused in one line
        forged = post(mine[limit], "MUNGE:AwQFAAB" + "A" * 60 + ":")
        assert forged.status_code == 401 and "munge credential was refused" in forged.json()["error"]
        once = munge_credential("testuser2")
        assert post(other, once).status_code == 200
        replayed = post(other, once)
        assert replayed.status_code == 401 and "\n" not in replayed.json()["error"]
    finally:
        listener.answer_all()  # the pulls under way fail now instead of waiting for timeouts
        try:
            wait_done([f"docker:{r}" for r in started])
        finally:
            listener.close()
    # the share is given back when the pulls end
    listener = listen("answer")
    try:
        again = post(mine[limit], munge_credential("testuser"))
        assert again.status_code == 200, again.text
        wait_done([f"docker:{mine[limit]}"])
    finally:
        listener.close()


# ---------------------------------------------------------------- token realms


@pytest.fixture
def token_registry(cluster, tmp_path):
    """The real registry (Debian's docker-registry) with token auth on the listed host
    LISTENED, its challenge's realm set by the test: `start(realm)` runs it."""
    cert, key = tmp_path / "token.pem", tmp_path / "token.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=token-issuer", "-days", "1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    procs = []

    def start(realm: str) -> None:
        conf = tmp_path / "registry.yml"
        conf.write_text(f"""version: 0.1
log: {{level: warn}}
storage: {{filesystem: {{rootdirectory: {tmp_path / 'data'}}}}}
http: {{addr: "{LISTENED}"}}
auth: {{token: {{realm: "{realm}", service: test-registry, issuer: token-issuer, rootcertbundle: {cert}}}}}
""")
        procs.append(subprocess.Popen(["docker-registry", "serve", str(conf)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://{LISTENED}/v2/", timeout=2).status_code == 401:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the token-auth registry did not start"
            time.sleep(0.1)

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=20)


def test_a_realm_on_an_unlisted_host_gets_no_request(token_registry):
    """The real registry's challenge names a token service on a host the site does not list:
    the pull fails with one line and the fake token endpoint sees no connection."""
    token = Listener("127.0.0.9", 0, "answer")
    try:
        token_registry(f"http://127.0.0.9:{token.port}/token")
        ref = f"docker:{LISTENED}/realm/app:{time.time_ns()}"
        result = run_as("testuser", [SHIFTERIMG, "pull", ref])
        assert result.returncode != 0 and result.stderr.count("\n") == 1, result.stderr
        assert f"token service 'http://127.0.0.9:{token.port}/token' is neither the registry's own host" in result.stderr
        assert "registries.auth_hosts" in result.stderr and "Traceback" not in result.stderr
        time.sleep(0.5)
        assert token.accepted == 0
    finally:
        token.close()


def test_a_realm_on_the_registrys_own_host_is_asked(token_registry):
    """The same registry with its token service on its own host (another port): the gateway
    asks it (this fake one answers 404, so the pull fails, saying the token was refused)."""
    addr = LISTENED.split(":")[0]
    token = Listener(addr, 0, "answer")
    try:
        token_registry(f"http://{addr}:{token.port}/token")
        ref = f"docker:{LISTENED}/realm/app:{time.time_ns()}"
        result = run_as("testuser", [SHIFTERIMG, "pull", ref])
        assert result.returncode != 0 and "token request refused (HTTP 404)" in result.stderr, result.stderr
        assert token.accepted >= 1
    finally:
        token.close()

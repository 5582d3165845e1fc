"""Gateway trust on the local cluster: the original Shifter client's requests
replayed byte for byte (its `authentication:MUNGE:` header, its comma-separated ACL body, its
polling by repeated POST), images available during re-pulls, munge identity on every call,
and private images through the real `shifterimg`, files and jobs. Two test users and an
admin (root, in the local cluster's gateway.admins); uids and gids come from pwd/grp."""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid

import pytest

import gatewaytools as gt
import imagebuilder as ib
import jobtools as jt
from conftest import localcluster, run_as
from imagegw import client, identity
from shifter_site import config

SHIFTERIMG = str(localcluster.PREFIX / "bin/shifterimg")
HOST, PORT = localcluster.GATEWAY.split(":")
IMAGES = gt.STATE / "images"
USER, OTHER = "testuser", "testuser2"


@pytest.fixture(scope="module")
def cfg(cluster):
    return config.load(str(gt.STATE / "etc/shifter.yaml"), privileged=False)


def unique_image(extra: int = 200000) -> ib.Image:
    root = tempfile.mkdtemp()
    try:
        ib.busybox_tree(root)
        layer = ib.layer_from_dir(root)
    finally:
        shutil.rmtree(root)
    marker = ib.layer_from_entries([ib.File("etc/unique", uuid.uuid4().hex.encode() + os.urandom(extra))])
    return ib.Image([layer, marker], config={"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]})


def credential(user: str, ttl: int | None = None) -> str:
    """A munge credential made by `user` with munge's own command (as the C client's libmunge)."""
    argv = ["munge", "--no-input", f"--socket={gt.STATE / 'munge/munge.socket.2'}"]
    out = run_as(user, argv + ([f"--ttl={ttl}"] if ttl else []))
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def original(method: str, path: str, user: str | None, body: bytes | None = None,
             cred: str | None = None) -> tuple[int, dict]:
    """One request exactly as the original shifterimg (libcurl) sends it: `authentication:`
    with no space, `Content-type: application/json` and the body on a POST (empty when no
    ACL), over a raw socket so nothing is normalised on the way."""
    cred = cred if cred is not None else (credential(user) if user else None)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{PORT}", "Accept: */*"]
    if cred is not None:
        lines.append(f"authentication:{cred}")
    if method == "POST":
        body = body or b""
        lines += [f"Content-Length: {len(body)}", "Content-type: application/json"]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")
    with socket.create_connection((HOST, int(PORT)), timeout=30) as sock:
        sock.sendall(raw)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            length = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
            if length and len(rest) >= length[0]:
                break
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(rest)


def api(action: str, repo_tag: str) -> str:
    return f"/api/{action}/local/docker/{repo_tag}/"


def manifest_gets(repo: str) -> int:
    text = (gt.STATE / "log/registry.out").read_text(errors="replace")
    return sum(1 for line in text.splitlines() if f"/v2/{repo}/manifests/" in line)


def age(key: str) -> None:
    gt.age_rows(f"%{key}")


def poll_original(repo_tag: str, user: str, body: bytes = b"", timeout: float = 120) -> tuple[dict, int]:
    """The original client's `pull`: POST, and POST again every second-ish until READY/FAILURE."""
    deadline = time.monotonic() + timeout
    polls = 0
    while time.monotonic() < deadline:
        code, rec = original("POST", api("pull", repo_tag), user, body)
        polls += 1
        assert code == 200, rec
        assert isinstance(rec["id"], str), rec  # never null: the original client crashes on it
        if rec["status"] in ("READY", "FAILURE"):
            return rec, polls
        time.sleep(0.2)
    raise AssertionError(f"{repo_tag} not done after {timeout}s")


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0, result.stdout
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    return result.stderr


# ------------------------------------------------------------------ the original client's requests


def test_original_client_pull_polls_without_new_pulls_and_lookup_has_an_id(cfg):
    repo = f"trust/orig{uuid.uuid4().hex[:8]}"
    digest = ib.push(gt.REGISTRY, repo, "1", unique_image())
    rec, polls = poll_original(f"{repo}:1", USER)
    assert rec["status"] == "READY" and rec["id"] == digest.split(":", 1)[1]
    asked = manifest_gets(repo)
    for _ in range(10):  # the client keeps polling: no new registry requests, same record
        code, again = original("POST", api("pull", f"{repo}:1"), USER)
        assert code == 200 and again["status"] == "READY" and again["id"] == rec["id"]
    assert manifest_gets(repo) == asked
    code, found = original("GET", api("lookup", f"{repo}:1"), OTHER)
    assert code == 200 and found["status"] == "READY" and found["id"] == rec["id"]
    code, listed = original("GET", "/api/list/local/", OTHER)
    assert code == 200 and rec["id"] in [r["id"] for r in listed["list"]]


def test_original_acl_body_makes_a_private_image(cfg):
    repo = f"trust/origacl{uuid.uuid4().hex[:8]}"
    ib.push(gt.REGISTRY, repo, "1", unique_image())
    me, other = pwd.getpwnam(USER), pwd.getpwnam(OTHER)
    body = f'{{"allowed_uids":"{me.pw_uid}"}}'.encode()  # what `shifterimg -u` of the original sends
    rec, _ = poll_original(f"{repo}:1", USER, body)
    assert rec["status"] == "READY" and rec["userACL"] == [me.pw_uid]
    assert original("GET", api("lookup", f"{repo}:1"), USER)[0] == 200
    code, hidden = original("GET", api("lookup", f"{repo}:1"), OTHER)
    assert code == 404 and "is not on system local" in hidden["error"]  # as if it did not exist
    code, missing = original("GET", api("lookup", f"{repo}:nosuchtag"), OTHER)
    assert hidden["error"].replace(f"{repo}:1", "X") == missing["error"].replace(f"{repo}:nosuchtag", "X")
    assert rec["id"] not in [r["id"] for r in original("GET", "/api/list/local/", OTHER)[1]["list"]]
    assert rec["id"] in [r["id"] for r in original("GET", "/api/list/local/", "root")[1]["list"]]  # admin
    # a group list: the other user's primary group lets them in
    gid = other.pw_gid
    code, shared = original("POST", api("pull", f"{repo}:1"), USER, f'{{"allowed_gids":"{gid}"}}'.encode())
    assert code == 200 and shared["groupACL"] == [gid] and shared["userACL"] == [me.pw_uid]
    assert original("GET", api("lookup", f"{repo}:1"), OTHER)[0] == 200


@pytest.mark.parametrize("body, says", [
    (b'{"allowed_uids":"1001, 1002"}', "no spaces"),
    (b'{"allowed_uids":" 1001"}', "no spaces"),
    (b'{"allowed_uids":"1001,,1002"}', "comma-separated"),
    (b'{"allowed_uids":"abc"}', "numeric ids"),
    (b'{"allowed_users":"1001"}', "only allowed_uids and allowed_gids"),
    (b'{"allowed_uids":', "not JSON"),
])
def test_original_body_bad_shapes_are_refused(cfg, body, says):
    repo = f"trust/bad{uuid.uuid4().hex[:8]}"
    code, rec = original("POST", api("pull", f"{repo}:1"), USER, body)
    assert code == 400 and says in rec["error"] and "\n" not in rec["error"]
    assert original("GET", api("status", f"{repo}:1"), "root")[0] == 404


def test_original_body_unknown_ids_are_refused(cfg):
    taken = {p.pw_uid for p in pwd.getpwall()}
    unknown = next(u for u in range(60000, 65000) if u not in taken)
    gtaken = {g.gr_gid for g in grp.getgrall()}
    gunknown = next(g for g in range(60000, 65000) if g not in gtaken)
    repo = f"trust/unk{uuid.uuid4().hex[:8]}"
    code, rec = original("POST", api("pull", f"{repo}:1"), USER, f'{{"allowed_uids":"{unknown}"}}'.encode())
    assert code == 400 and f"allowed_uids: {unknown} is not known on this system" in rec["error"]
    code, rec = original("POST", api("pull", f"{repo}:1"), USER, f'{{"allowed_gids":"{gunknown}"}}'.encode())
    assert code == 400 and f"allowed_gids: {gunknown} is not known" in rec["error"]
    assert original("GET", api("status", f"{repo}:1"), "root")[0] == 404


# ------------------------------------------------------------------ available during re-pulls


def test_lookup_and_images_keep_serving_the_last_ready_image_during_a_repull(cfg):
    repo = f"trust/repull{uuid.uuid4().hex[:8]}"
    first = ib.push(gt.REGISTRY, repo, "1", unique_image()).split(":", 1)[1]
    assert client.pull(cfg, f"{repo}:1", poll=0.1)["id"] == first
    second = ib.push(gt.REGISTRY, repo, "1", unique_image(extra=30_000_000)).split(":", 1)[1]
    asked = manifest_gets(repo)
    assert client.start_pull(cfg, f"{repo}:1")["status"] == "READY"  # recent: not pulled again
    assert manifest_gets(repo) == asked
    age(f"{repo}:1")
    assert client.start_pull(cfg, f"{repo}:1")["status"] in ("INIT", "PULLING")  # now it is
    seen_active = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = client.status(cfg, f"{repo}:1")["status"]
        out = run_as(OTHER, [SHIFTERIMG, "lookup", f"{repo}:1"])
        assert out.returncode == 0, out.stderr  # never "not ready" during the re-pull
        listed = run_as(OTHER, [SHIFTERIMG, "images"]).stdout
        if state != "READY":
            seen_active += 1
            assert out.stdout.strip() in (first, second)
            assert f"docker.io/{repo}:1" in listed or f"{repo}:1" in listed
        if out.stdout.strip() == second:
            break
    assert seen_active > 0 and out.stdout.strip() == second


def test_a_failure_is_not_retried_on_every_poll(cfg):
    repo = f"trust/fail{uuid.uuid4().hex[:8]}"
    rec, _ = poll_original(f"{repo}:1", USER)  # no such image in the registry
    assert rec["status"] == "FAILURE" and rec["id"] == ""
    asked = manifest_gets(repo)
    for _ in range(5):
        code, again = original("POST", api("pull", f"{repo}:1"), USER)
        assert code == 200 and again["status"] == "FAILURE"
    assert manifest_gets(repo) == asked
    age(f"{repo}:1")  # after gateway.repull_after it is tried again
    rec, _ = poll_original(f"{repo}:1", USER)
    assert rec["status"] == "FAILURE" and manifest_gets(repo) > asked


# ------------------------------------------------------------------ identity


def test_calls_without_a_valid_credential_are_refused(cfg):
    path = api("lookup", "trust/any:1")
    code, rec = original("GET", path, None)
    assert code == 401 and "no munge credential" in rec["error"] and "\n" not in rec["error"]
    code, rec = original("GET", "/api/list/local/", None, cred="MUNGE:AwQFAAB" + "A" * 60 + ":")  # forged
    assert code == 401 and "munge credential was refused" in rec["error"]
    once = credential(USER)
    assert original("GET", path, None, cred=once)[0] == 404  # accepted (no such image)
    code, rec = original("GET", path, None, cred=once)  # replayed
    assert code == 401 and "Replayed credential" in rec["error"]
    expiring = credential(USER, ttl=1)
    time.sleep(2.5)
    code, rec = original("POST", api("pull", "trust/any:1"), None, cred=expiring)
    assert code == 401 and "Expired credential" in rec["error"]
    assert original("GET", api("status", "trust/any:1"), "root")[0] == 404  # nothing was queued


def test_shifterimg_without_munge_says_so(cfg):
    top = tempfile.mkdtemp(prefix="trust-nomunge-")
    try:
        os.chmod(top, 0o755)
        text = (gt.STATE / "etc/shifter.yaml").read_text()
        assert f"munge_socket: {gt.STATE}/munge/munge.socket.2" in text
        text = text.replace(f"munge_socket: {gt.STATE}/munge/munge.socket.2", f"munge_socket: {top}/nosocket")
        conf = os.path.join(top, "shifter.yaml")
        with open(conf, "w") as handle:
            handle.write(text)
        os.chmod(conf, 0o644)
        result = run_as(USER, [SHIFTERIMG, "--config", conf, "images"])
        assert "cannot make a munge credential" in one_line_error(result)
    finally:
        shutil.rmtree(top)


# ------------------------------------------------------------------ private images: CLI, files, jobs


@pytest.fixture(scope="module")
def private(cfg):
    """An image testuser pulled private to themself with the real shifterimg."""
    repo = f"trust/private{uuid.uuid4().hex[:8]}"
    digest = ib.push(gt.REGISTRY, repo, "1", unique_image())
    out = run_as(USER, [SHIFTERIMG, "pull", "-u", USER, f"{repo}:1"])
    assert out.returncode == 0, out.stderr
    return repo, digest.split(":", 1)[1]


def test_private_image_through_shifterimg(private):
    repo, image_id = private
    assert run_as(USER, [SHIFTERIMG, "lookup", f"{repo}:1"]).stdout.strip() == image_id
    hidden = run_as(OTHER, [SHIFTERIMG, "lookup", f"{repo}:1"])
    assert hidden.returncode == 3 and "is not on system local" in one_line_error(hidden)
    assert image_id[:12] not in run_as(OTHER, [SHIFTERIMG, "images"]).stdout
    assert image_id[:12] in run_as(USER, [SHIFTERIMG, "images"]).stdout
    pulled = run_as(OTHER, [SHIFTERIMG, "pull", f"{repo}:1"])
    assert "no such image you may pull" in one_line_error(pulled)


def test_private_image_files_are_readable_by_its_users_only(private):
    repo, image_id = private
    squashfs = IMAGES / f"{image_id}.squashfs"
    assert squashfs.stat().st_mode & 0o007 == 0  # nothing for others (group bits show the ACL mask)
    denied = run_as(OTHER, ["head", "-c", "4", str(squashfs)])
    assert denied.returncode != 0 and "Permission denied" in denied.stderr
    allowed = run_as(USER, ["head", "-c", "4", str(squashfs)], text=False)
    assert allowed.returncode == 0 and allowed.stdout == b"hsqs"
    acl = subprocess.run(["getfacl", "-n", "-p", str(squashfs)], capture_output=True, text=True).stdout
    assert f"user:{pwd.getpwnam(USER).pw_uid}:r--" in acl and "other::---" in acl and "group::---" in acl
    assert f"user:{pwd.getpwnam(OTHER).pw_uid}:" not in acl


def test_shifterimg_pull_bad_users_is_one_line_and_nothing_pulled(cfg):
    repo = f"trust/badu{uuid.uuid4().hex[:8]}"
    taken = {p.pw_name for p in pwd.getpwall()}
    ghost = next(n for n in (f"nosuchuser{i}" for i in range(100)) if n not in taken)
    result = run_as(USER, [SHIFTERIMG, "pull", "-u", f"{OTHER},{ghost}", f"{repo}:1"])
    assert result.returncode == 2 and f"unknown user: {ghost}" in one_line_error(result)
    result = run_as(USER, [SHIFTERIMG, "pull", "-u", f"{OTHER}, {USER}", f"{repo}:1"])
    assert result.returncode == 2 and "without spaces" in one_line_error(result)
    assert original("GET", api("status", f"{repo}:1"), "root")[0] == 404


def test_a_job_with_a_private_image_runs_for_its_user_and_is_refused_for_others(private):
    repo, image_id = private
    body = f"#!/bin/sh\n#SBATCH --image=docker:{repo}:1\nsrun shifter cat /etc/unique >/dev/null && echo ran-ok\n"
    job = jt.write_job(USER, "trust-private.sh", body)
    _, out, _ = jt.sbatch_wait(USER, job)
    assert "ran-ok" in out
    job2 = jt.write_job(OTHER, "trust-private.sh", body)
    _, _, refused = jt.sbatch_wait(OTHER, job2, check=False)
    assert refused.returncode != 0 and f"{repo}:1 is not on system local" in refused.stderr
    assert "Traceback" not in refused.stderr


# ------------------------------------------------------------------ private registries: shifterimg login

PRIVATE_REGISTRY = "127.0.0.8:5001"  # listed in the local cluster's registries.hosts
PUSH_PORT = "127.0.0.8:5002"         # the same storage, anonymous, while the test image is pushed


def start_registry(top: str, addr: str, htpasswd: str | None) -> subprocess.Popen:
    auth = (f"auth:\n  htpasswd:\n    realm: trust-test\n    path: {htpasswd}\n") if htpasswd else ""
    conf = os.path.join(top, f"registry-{addr.replace(':', '-')}.yml")
    with open(conf, "w") as handle:
        handle.write(f"version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {top}/data\n"
                     f"http:\n  addr: {addr}\n{auth}")
    proc = subprocess.Popen(["docker-registry", "serve", conf], stdout=open(os.path.join(top, "registry.log"), "ab"),
                            stderr=subprocess.STDOUT)
    host, port = addr.split(":")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return proc
        except OSError:
            assert proc.poll() is None, open(os.path.join(top, "registry.log")).read()
            time.sleep(0.1)
    raise AssertionError(f"registry on {addr} did not start")


@pytest.fixture(scope="module")
def login_registry(cluster):
    """Debian's docker-registry with htpasswd (bcrypt, from apache2-utils) logins, holding
    secret/app:1; yields (user, password, image id)."""
    top = tempfile.mkdtemp(prefix="trust-registry-")
    user, password = f"reg{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    htpasswd = os.path.join(top, "htpasswd")
    subprocess.run(["htpasswd", "-Bbc", htpasswd, user, password], check=True, capture_output=True)
    procs = []
    try:
        procs.append(start_registry(top, PUSH_PORT, None))
        digest = ib.push(PUSH_PORT, "secret/app", "1", unique_image())
        procs[-1].terminate()
        procs[-1].wait(10)
        procs.append(start_registry(top, PRIVATE_REGISTRY, htpasswd))
        yield user, password, digest.split(":", 1)[1]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
        shutil.rmtree(top)


def login_file(user: str):
    return jt.home(user) / ".udiRoot/registry-auth.json"


def test_login_and_pull_from_a_private_registry(login_registry):
    reg_user, password, image_id = login_registry
    for who in (USER, OTHER):
        login_file(who).unlink(missing_ok=True)
    # without a login: the registry's refusal, and a message that is true
    needs = run_as(USER, [SHIFTERIMG, "pull", f"{PRIVATE_REGISTRY}/secret/needslogin:1"])
    assert f"run `shifterimg login {PRIVATE_REGISTRY}` and pull again" in one_line_error(needs)
    # wrong password: one line, nothing stored
    wrong = run_as(USER, [SHIFTERIMG, "login", PRIVATE_REGISTRY], input=f"{reg_user}\nnot-{password}\n")
    assert "refused the user name and password; nothing stored" in one_line_error(wrong)
    assert not login_file(USER).exists()
    unknown = run_as(USER, [SHIFTERIMG, "login", "127.0.0.9:1"], input=f"{reg_user}\n{password}\n")
    assert "is not one this site pulls from" in one_line_error(unknown) and not login_file(USER).exists()
    # right password (from stdin, as a script would): stored for this user only
    ok = run_as(USER, [SHIFTERIMG, "login", PRIVATE_REGISTRY], input=f"{reg_user}\n{password}\n")
    assert ok.returncode == 0, ok.stderr
    st = login_file(USER).stat()
    assert st.st_mode & 0o777 == 0o600 and st.st_uid == pwd.getpwnam(USER).pw_uid
    assert (login_file(USER).parent.stat().st_mode & 0o077) == 0
    # the pull uses it; the image is private to the puller
    ref = f"{PRIVATE_REGISTRY}/secret/app:1"
    gt.age_rows(f"{PRIVATE_REGISTRY}/secret/app:1")  # an earlier run's pull (other content) is not recent
    pulled = run_as(USER, [SHIFTERIMG, "pull", ref])
    assert pulled.returncode == 0 and image_id in pulled.stdout, pulled.stderr
    assert run_as(USER, [SHIFTERIMG, "lookup", ref]).stdout.strip() == image_id
    hidden = run_as(OTHER, [SHIFTERIMG, "lookup", ref])
    assert hidden.returncode == 3 and "is not on system local" in one_line_error(hidden)
    assert image_id[:12] not in run_as(OTHER, [SHIFTERIMG, "images"]).stdout
    denied = run_as(OTHER, ["head", "-c", "4", str(IMAGES / f"{image_id}.squashfs")])
    assert denied.returncode != 0 and "Permission denied" in denied.stderr
    # the password is on no disk of the gateway's: database, state, log, image directory
    found = subprocess.run(["grep", "-rlF", password, str(gt.STATE / "gateway"), str(gt.STATE / "log"), str(IMAGES)],
                           capture_output=True, text=True)
    assert found.stdout == "", found.stdout
    # a login file others can read is refused, not used
    login_file(USER).chmod(0o644)
    try:
        unsafe = run_as(USER, [SHIFTERIMG, "pull", ref])
        assert "readable by others" in one_line_error(unsafe)
    finally:
        login_file(USER).chmod(0o600)

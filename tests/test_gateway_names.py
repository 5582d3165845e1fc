"""Names users give images, on the local cluster as a plain user: every spelling of one image
is one record (also after a re-push, and in the job that runs it), a digest reference finds
the image with that digest, the tutorials' `docker:ubuntu:14.04` works through the site's
Docker Hub mirror, a plain-http registry configured as https is named in one line at once,
and Ctrl-C in `shifterimg pull` says the pull goes on in the gateway."""

from __future__ import annotations

import http.server
import os
import pwd
import shutil
import signal
import sqlite3
import tempfile
import threading
import time
import subprocess
import uuid
from pathlib import Path

import msgspec
import pytest

import gatewaytools as gt
import imagebuilder as ib
import images
from conftest import localcluster, run_as
from gatewaytools import Listener
from imagegw import client, reference, registry, sources
from imagegw import pull as pulling
from shifter_site import config

SHIFTERIMG = str(localcluster.PREFIX / "bin/shifterimg")
USER = "testuser"


@pytest.fixture(scope="module")
def cfg(cluster):
    return config.load(str(gt.STATE / "etc/shifter.yaml"), privileged=False)


def image_with(files: dict[str, bytes]) -> ib.Image:
    """A small runnable image (busybox root) with these files, new content every call."""
    root = Path(tempfile.mkdtemp())
    try:
        images.make_root(root)
        for name, data in files.items():
            (root / name).write_bytes(data)
        layer = ib.layer_from_dir(root)
    finally:
        shutil.rmtree(root)
    return ib.Image([layer], config={"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"],
                                     "Labels": {"run": uuid.uuid4().hex}})


def pull(user: str, ref: str) -> str:
    result = run_as(user, [SHIFTERIMG, "pull", ref])
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()[-1].split()[2]  # "<ref>: READY <id> (<s>)"


def lookup(user: str, ref: str) -> subprocess.CompletedProcess:
    return run_as(user, [SHIFTERIMG, "lookup", ref])


def rows_like(pattern: str) -> list[tuple]:
    db = sqlite3.connect(f"file:{gt.STATE / 'gateway/images.db'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT key, status FROM images WHERE key LIKE ? ORDER BY key", (pattern,)).fetchall()
    finally:
        db.close()


# ---------------------------------------------------------------- one image, one name


def test_every_spelling_is_one_image_also_after_a_repush(cfg):
    repo, tag = "demo/pyapp", "1.0"
    spellings = [f"{repo}:{tag}", f"docker:{repo}:{tag}", f"docker:127.0.0.1:5000/{repo}:{tag}",
                 f"docker:docker.io/{repo}:{tag}", f"index.docker.io/{repo}:{tag}"]
    first = ib.push(gt.REGISTRY, repo, tag, image_with({"etc/pyapp-version": b"one\n"})).split(":", 1)[1]
    gt.age_rows(f"docker.io/{repo}:{tag}")  # an earlier run's pull is not recent
    assert pull(USER, f"docker:127.0.0.1:5000/{repo}:{tag}") == first
    for ref in spellings:
        assert lookup(USER, ref).stdout == first + "\n", ref
    second = ib.push(gt.REGISTRY, repo, tag, image_with({"etc/pyapp-version": b"two\n"})).split(":", 1)[1]
    assert second != first
    assert pull(USER, f"{repo}:{tag}") == first  # pulled moments ago: not asked again (gateway.repull_after)
    gt.age_rows(f"docker.io/{repo}:{tag}")  # ... as if that was long ago
    assert pull(USER, f"{repo}:{tag}") == second  # pulled under another spelling
    for ref in spellings:
        assert lookup(USER, ref).stdout == second + "\n", ref
    assert rows_like(f"%{repo}:{tag}") == [(f"docker.io/{repo}:{tag}", "READY")]  # one record
    # the job runs the new image, whichever spelling it names
    home = pwd.getpwnam(USER).pw_dir
    step = run_as(USER, ["srun", "-N1", "-t", "2", f"--image=docker:127.0.0.1:5000/{repo}:{tag}",
                         "shifter", "cat", "/etc/pyapp-version"], cwd=home, timeout=120)
    assert (step.returncode, step.stdout) == (0, "two\n"), step.stderr

    # a digest reference finds the image with that digest (the older one is still published)
    assert lookup(USER, f"{repo}@sha256:{second}").stdout == second + "\n"
    assert lookup(USER, f"docker:127.0.0.1:5000/{repo}:{tag}@sha256:{second}").stdout == second + "\n"
    assert lookup(USER, f"docker.io/{repo}@sha256:{first}").stdout == first + "\n"
    # ...pulled under that name only, and the message quotes the user's own text
    other = lookup(USER, f"demo/other@sha256:{second}")
    assert other.returncode == 3 and other.stdout == ""
    assert f"docker:demo/other@sha256:{second} is not on system local" in other.stderr
    assert "docker.io/" not in other.stderr and other.stderr.count("\n") == 1


def test_digest_reference_pulls_and_then_looks_up(cfg):
    digest = ib.push(gt.REGISTRY, "demo/pinned", "v1", image_with({"etc/pinned": b"x\n"}))
    ref = f"docker:demo/pinned@{digest}"
    assert pull(USER, ref) == digest.split(":", 1)[1]
    assert lookup("testuser2", f"127.0.0.1:5000/demo/pinned@{digest}").stdout == digest.split(":", 1)[1] + "\n"
    assert rows_like(f"%demo/pinned@{digest}") == [(f"docker.io/demo/pinned@{digest}", "READY")]  # one record


def test_digest_reference_of_a_private_image_is_its_users_only(cfg):
    """A digest reference finds a private image (pulled by name) for its user, in a job too;
    another user is told it is not there, and its content is never shown to them."""
    name = f"demo/private{uuid.uuid4().hex[:8]}"
    digest = ib.push(gt.REGISTRY, name, "1", image_with({"etc/private": b"only-mine\n"}))
    image_id = digest.split(":", 1)[1]
    pulled = run_as(USER, [SHIFTERIMG, "pull", "-u", USER, f"{name}:1"])
    assert pulled.returncode == 0 and image_id in pulled.stdout, pulled.stderr
    assert lookup(USER, f"{name}@{digest}").stdout == image_id + "\n"
    assert lookup(USER, f"docker:127.0.0.1:5000/{name}:1@{digest}").stdout == image_id + "\n"
    other_user = "testuser2"
    other = lookup(other_user, f"{name}@{digest}")
    assert other.returncode == 3 and other.stdout == "" and other.stderr.count("\n") == 1, other.stderr
    assert f"docker:{name}@{digest} is not on system local" in other.stderr
    home = pwd.getpwnam(USER).pw_dir
    step = run_as(USER, ["srun", "-N1", "-t", "2", f"--image={name}@{digest}", "shifter", "cat", "/etc/private"],
                  cwd=home, timeout=120)
    assert (step.returncode, step.stdout) == (0, "only-mine\n"), step.stderr
    refused = run_as(other_user, ["srun", "-N1", "-t", "2", f"--image={name}@{digest}", "shifter", "cat",
                                  "/etc/private"], cwd=pwd.getpwnam(other_user).pw_dir, timeout=120)
    assert refused.returncode != 0 and "only-mine" not in refused.stdout, refused.stdout
    ours = [line for line in refused.stderr.splitlines() if "shifter:" in line]
    assert len(ours) == 1 and "is not on system local" in ours[0], refused.stderr
    assert "Traceback" not in refused.stderr


# ---------------------------------------------------------------- registries


def registry_log_mentions(text: str) -> bool:
    return text in (gt.STATE / "log/registry.out").read_text(errors="replace")


def test_tutorial_form_resolves_to_library_on_the_docker_hub_mirror(cfg):
    """`docker:ubuntu:14.04` is Docker Hub's library/ubuntu; the local registry is the site's
    mirror of Docker Hub, so the image is fetched from it as library/ubuntu (a stand-in image
    built here: tests never download)."""
    digest = ib.push(gt.REGISTRY, "library/ubuntu", "14.04", image_with({"etc/stand-in": b"not ubuntu\n"}))
    image_id = digest.split(":", 1)[1]
    gt.age_rows("docker.io/library/ubuntu:14.04")  # an earlier run's pull is not recent
    result = run_as(USER, [SHIFTERIMG, "pull", "docker:ubuntu:14.04"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith(f"docker:ubuntu:14.04: READY {image_id}")
    assert registry_log_mentions("GET /v2/library/ubuntu/manifests/14.04")
    for ref in ("ubuntu:14.04", "docker:docker.io/library/ubuntu:14.04", "docker:library/ubuntu:14.04",
                "registry-1.docker.io/ubuntu:14.04", "127.0.0.1:5000/library/ubuntu:14.04"):
        assert lookup("testuser2", ref).stdout == image_id + "\n", ref
    images_out = run_as(USER, [SHIFTERIMG, "images"]).stdout
    assert any(image_id[:12] in l and "docker.io/library/ubuntu:14.04" in l for l in images_out.splitlines())


def test_plain_http_registry_configured_as_https_is_named_at_once(cfg):
    """The local cluster lists plainhttp.localcluster:5000 as https://127.0.0.1:5000 on purpose:
    the registry there speaks plain http. One line, without five TLS retries."""
    ib.push(gt.REGISTRY, "demo/hello", "1", image_with({"etc/hello": b"hi\n"}))
    start = time.monotonic()
    result = run_as(USER, [SHIFTERIMG, "pull", "docker:plainhttp.localcluster:5000/demo/hello:1"])
    elapsed = time.monotonic() - start
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "this registry speaks plain http; add it to registries.hosts as http://127.0.0.1:5000" in result.stderr
    assert "SSL" not in result.stderr and "Traceback" not in result.stderr
    assert elapsed < 5, elapsed


def test_plain_http_detection_in_the_client(tmp_path):
    """The registry client alone, against a plain-http server on loopback reached over https."""
    class V2(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.8", 0), V2)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    c = registry.Client(f"https://127.0.0.8:{port}", "a/b", name=f"127.0.0.8:{port}")
    start = time.monotonic()
    try:
        with pytest.raises(registry.PlainHttp) as err:
            c.resolve("1")
    finally:
        c.close()
        server.shutdown()
    assert time.monotonic() - start < 2
    assert str(err.value) == (f"registry 127.0.0.8:{port}: this registry speaks plain http; add it to "
                              f"registries.hosts as http://127.0.0.8:{port} (site config)")


def test_mirrors_are_tried_in_order(cfg):
    """A first mirror that lacks the image (answers 404) is passed over for the next one, the
    local registry; the image is the one pushed there."""
    digest = ib.push(gt.REGISTRY, "demo/mirrored", "1", image_with({"etc/m": b"m\n"}))
    empty = Listener("127.0.0.9", 0, mode="answer")
    try:
        mirrors = {"docker.io": [f"http://127.0.0.9:{empty.port}", f"http://{gt.REGISTRY}"]}
        site = msgspec.structs.replace(cfg, registries=msgspec.structs.replace(cfg.registries, mirrors=mirrors))
        ref = sources.canonical(site.registries, reference.parse("demo/mirrored:1"))
        used, resolved = pulling.resolve(site, ref, None)
        used.close()
    finally:
        empty.close()
    assert empty.accepted >= 1 and used.base == f"http://{gt.REGISTRY}" and resolved.digest == digest


# ---------------------------------------------------------------- Ctrl-C


def test_ctrl_c_during_pull_says_the_pull_goes_on(cfg):
    listener = Listener("127.0.0.4", 5000, mode="hang")  # the registry never answers: the pull waits
    ref = f"docker:127.0.0.4:5000/ctrlc/app:{time.time_ns()}"
    entry = pwd.getpwnam(USER)
    proc = subprocess.Popen([SHIFTERIMG, "pull", ref], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            user=entry.pw_uid, group=entry.pw_gid, extra_groups=[], cwd=entry.pw_dir,
                            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": entry.pw_dir, "USER": USER},
                            start_new_session=True)
    try:
        first = proc.stdout.readline()  # the gateway took the pull (INIT or PULLING)
        assert first.split()[0] in ("INIT", "PULLING"), first
        os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C sends
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130
        assert err.count("\n") == 1 and "Traceback" not in err and "KeyboardInterrupt" not in err
        assert f"the pull of {ref} goes on in the gateway" in err
        assert f"shifterimg lookup {ref}" in err and "shifterimg images" in err
        assert client.status(cfg, ref)["status"] in ("INIT", "PULLING")  # and it does go on
    finally:
        if proc.poll() is None:
            proc.kill()
        listener.answer_all()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and client.status(cfg, ref)["status"] not in ("READY", "FAILURE"):
            time.sleep(0.2)
        listener.close()

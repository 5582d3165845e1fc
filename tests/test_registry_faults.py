"""Pulls from a registry that misbehaves, and into an image directory that fills up: each
fault gives one clear line, publishes nothing (no squashfs, record or temporary file in the
image directory), keeps no partial or wrong blob in the layer cache, and the next pull, once
the fault is gone, succeeds.

The registry is a small HTTP server in the test serving an image built by the test
(tests/imagebuilder.py) with the registry API's paths, and injecting the fault a test asks
for on the requests it names: 500s, a hang longer than the gateway's timeout, other bytes
than the digest names, a body cut off, a manifest cut off. The pull is the gateway's own
(`imagegw.pull.pull`: registry client, layer cache, flattening, tar2sqfs, publishing). No
cluster is needed; the full image directory (a small tmpfs) needs root.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import imagebuilder as ib
from conftest import need
from imagegw import pull as pulling
from imagegw import reference, registry
from shifter_site import config, imagefiles
from shifter_site.errors import ShifterError

REPO = "fault/app"


class FaultyRegistry:
    """A registry API on 127.0.0.1 (a free port) for one image; `fault(kind, name, n)` returns
    what to do with the n-th request (from 1) for a manifest or blob: None (serve it), an
    int (that HTTP status), ("hang", s), ("bytes", data), ("cut", n bytes sent of the
    announced length) or ("trickle", s: the body sent slowly, over about s seconds)."""

    def __init__(self, image: ib.Image):
        self.manifest, config_blob, layers = image.blobs()
        self.digest = ib.sha256(self.manifest)
        self.config_digest = ib.sha256(config_blob)
        self.layer_digests = [ib.sha256(layer) for layer in layers]
        self.blobs = {self.config_digest: config_blob, **dict(zip(self.layer_digests, layers))}
        self.fault = lambda kind, name, n: None
        self.requests: Counter[str] = Counter()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802 - http.server's name
                owner.handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def handle(self, req: BaseHTTPRequestHandler) -> None:
        match = re.fullmatch(rf"/v2/{REPO}/(manifests|blobs)/([^/?]+)", req.path)
        if req.path == "/v2/":
            return self.send(req, 200, b"{}")
        if not match:
            return self.send(req, 404, b'{"errors": [{"code": "NAME_UNKNOWN", "message": "no"}]}')
        kind, name = match.groups()
        self.requests[name] += 1
        if kind == "manifests" and name in ("1", self.digest):
            body, media = self.manifest, ib.OCI_MANIFEST
        elif kind == "blobs" and name in self.blobs:
            body, media = self.blobs[name], "application/octet-stream"
        else:
            return self.send(req, 404, b'{"errors": [{"code": "MANIFEST_UNKNOWN", "message": "no"}]}')
        action = self.fault(kind, name, self.requests[name])
        if isinstance(action, int):
            return self.send(req, action, b"{}")
        if isinstance(action, tuple) and action[0] == "hang":
            time.sleep(action[1])
        if isinstance(action, tuple) and action[0] == "bytes":
            body = action[1]
        if isinstance(action, tuple) and action[0] == "trickle":   # the whole body, over about action[1] s
            req.send_response(200)
            req.send_header("Content-Type", media)
            req.send_header("Content-Length", str(len(body)))
            req.end_headers()
            chunks = [body[i:i + 65536] for i in range(0, len(body), 65536)]
            try:
                for chunk in chunks:
                    req.wfile.write(chunk)
                    req.wfile.flush()
                    time.sleep(action[1] / len(chunks))
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        if isinstance(action, tuple) and action[0] == "cut":
            req.send_response(200)
            req.send_header("Content-Type", media)
            req.send_header("Content-Length", str(len(body)))
            req.send_header("Docker-Content-Digest", ib.sha256(body))
            req.end_headers()
            req.wfile.write(body[:action[1]])
            req.wfile.flush()
            req.close_connection = True
            return
        self.send(req, 200, body, media, ib.sha256(body) if kind == "manifests" else None)

    @staticmethod
    def send(req, status: int, body: bytes, media: str = "application/json", digest: str | None = None) -> None:
        try:
            req.send_response(status)
            req.send_header("Content-Type", media)
            req.send_header("Content-Length", str(len(body)))
            if digest:
                req.send_header("Docker-Content-Digest", digest)
            req.end_headers()
            req.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout)
            pass

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def fault_image() -> ib.Image:
    """Two layers, one of incompressible data (so a small image directory fills up)."""
    return ib.Image([ib.layer_from_entries([ib.Dir("app"), ib.File("app/release", b"fault-app-1\n")]),
                     ib.layer_from_entries([ib.File("app/data", os.urandom(3 << 20))])],
                    config={"Env": ["PATH=/usr/bin:/bin"]}, compresslevel=1)


@pytest.fixture(scope="module")
def served():
    need(shutil.which("tar2sqfs") is not None, "squashfs-tools-ng is not installed")
    reg = FaultyRegistry(fault_image())
    yield reg
    reg.close()


@pytest.fixture
def site(served, tmp_path):
    """A site whose default registry is the faulty one, with a 2 s timeout; its own image
    directory and layer cache."""
    served.fault = lambda kind, name, n: None
    served.requests.clear()
    images = tmp_path / "images"
    images.mkdir()
    cfg = config.parse(f"system: faults\nimage_dir: {images}\ngateway: {{urls: ['http://127.0.0.1:1'], timeout: 2}}\n"
                       f"registries: {{default: '{served.url}', docker_hub: false}}\n")
    return cfg, registry.LayerCache(tmp_path / "layers")


def pull(cfg, cache) -> object:
    return pulling.pull(cfg, reference.parse(f"docker:{REPO}:1"), cache)


def failed_cleanly(cfg, cache, words: str) -> str:
    """The pull fails with one line holding `words`; nothing is published or kept half-done."""
    with pytest.raises(ShifterError) as err:
        pull(cfg, cache)
    message = str(err.value)
    assert words in message and "\n" not in message and "Traceback" not in message, message
    assert sorted(os.listdir(cfg.image_dir)) == [], "nothing published, no temporary file"
    assert not list(cache.root.glob(".*")), "no partial download in the layer cache"
    return message


def published(cfg, cache, served) -> None:
    record = pull(cfg, cache)
    assert record.id == served.digest.split(":", 1)[1]
    assert sorted(os.listdir(cfg.image_dir)) == [f"{record.id}.json", f"{record.id}.squashfs", "tags"]  # tags: the name index
    for digest in served.layer_digests:   # every cached blob is the registry's
        assert ib.sha256(cache.path(digest).read_bytes()) == digest


def test_transient_500s_are_retried_and_the_pull_succeeds(served, site):
    served.fault = lambda kind, name, n: 500 if n <= 2 else None
    published(*site, served)
    assert served.requests[served.layer_digests[1]] == 3   # two 500s, then the blob


def test_a_registry_that_keeps_failing_fails_the_pull_with_one_line(served, site):
    served.fault = lambda kind, name, n: 500 if name == served.layer_digests[1] else None
    failed_cleanly(*site, "HTTP 500")
    served.fault = lambda kind, name, n: None
    published(*site, served)


def test_a_hang_past_the_timeout_is_retried(served, site):
    served.fault = lambda kind, name, n: ("hang", 4) if name == served.layer_digests[0] and n == 1 else None
    published(*site, served)
    assert served.requests[served.layer_digests[0]] == 2


def test_other_bytes_than_the_digest_names_are_refused(served, site):
    bad = served.layer_digests[1]
    served.fault = lambda kind, name, n: ("bytes", served.blobs[bad][:-1] + b"X") if name == bad else None
    failed_cleanly(*site, "tampered")
    assert not site[1].path(bad).exists()
    served.fault = lambda kind, name, n: None
    published(*site, served)


def test_a_blob_cut_off_is_refused(served, site):
    bad = served.layer_digests[1]
    served.fault = lambda kind, name, n: ("cut", 1000) if name == bad else None
    failed_cleanly(*site, "broke off")
    assert not site[1].path(bad).exists()
    served.fault = lambda kind, name, n: None
    published(*site, served)


def test_a_manifest_cut_off_or_not_json_is_one_line(served, site):
    served.fault = lambda kind, name, n: ("bytes", served.manifest[:40]) if kind == "manifests" else None
    failed_cleanly(*site, "manifest")
    served.fault = lambda kind, name, n: None
    published(*site, served)


@pytest.fixture
def small_image_dir(site):
    """The site's image directory on a 2 MiB tmpfs: the 3 MiB of random data cannot fit."""
    need(os.geteuid() == 0, "mounting the small image directory needs root")
    cfg, cache = site
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", cfg.image_dir], check=True)
    try:
        yield cfg, cache
    finally:
        subprocess.run(["umount", cfg.image_dir], check=True)


def test_an_image_directory_that_fills_up_fails_the_conversion_and_publishes_nothing(served, small_image_dir):
    cfg, cache = small_image_dir
    message = failed_cleanly(cfg, cache, f"the image directory {cfg.image_dir} is probably full")
    assert "cannot be read" not in message          # not blamed on a layer
    for digest in served.layer_digests:              # the downloads are kept for the next pull
        assert cache.path(digest).exists()
    subprocess.run(["mount", "-o", "remount,size=16m", cfg.image_dir], check=True)
    served.requests.clear()
    published(cfg, cache, served)
    assert not any(served.requests[d] for d in served.layer_digests)   # nothing downloaded again


def test_a_record_that_cannot_be_written_leaves_no_squashfs_behind(small_image_dir):
    """The disk fills between the squashfs and its record: the squashfs is taken back, so
    no image file lies in the image directory without its record."""
    cfg, _ = small_image_dir
    image_id = "b" * 64
    tmp = Path(cfg.image_dir) / f".{image_id}.tmp"
    with open(tmp, "wb") as out:   # the squashfs takes every byte there is
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    record = imagefiles.ImageRecord(id=image_id, system=cfg.system, itype="docker", tag="x/y:1",
                                    digest=f"sha256:{image_id}", size=tmp.stat().st_size, last_pull=time.time())
    with pytest.raises(imagefiles.ImageError, match="nothing was published"):
        imagefiles.publish(cfg.image_dir, record, tmp)
    assert os.listdir(cfg.image_dir) == []

"""Pulling through the local cluster's gateway (non-root service on 127.0.0.1:8642) from the
real registry: `shifterimg` as a plain user, indexes and manifest lists, a tampered blob, a
missing image, bad references, and 20 concurrent pulls of one image."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import threading
import uuid

import pytest

import gatewaytools as gt
import imagebuilder as ib
from conftest import localcluster, run_as
from imagegw import client
from shifter_site import config

SHIFTERIMG = str(localcluster.PREFIX / "bin/shifterimg")
IMAGES = gt.STATE / "images"


@pytest.fixture(scope="module")
def cfg(cluster):
    return config.load(str(gt.STATE / "etc/shifter.yaml"), privileged=False)


def unique_image(**kw) -> ib.Image:
    """A small image whose layer no earlier run has seen (so the layer cache is cold for it)."""
    root = tempfile.mkdtemp()
    try:
        ib.busybox_tree(root)
        layer = ib.layer_from_dir(root)
    finally:
        shutil.rmtree(root)
    marker = ib.layer_from_entries([ib.File("etc/unique", uuid.uuid4().hex.encode() + os.urandom(200000))])
    return ib.Image([layer, marker], config={"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]}, **kw)


def blob_gets(digest: str) -> int:
    text = (gt.STATE / "log/registry.out").read_text(errors="replace")
    return sum(1 for line in text.splitlines() if "GET /v2/" in line and f"/blobs/{digest} " in line
               and '" 200 ' in line)


def db_rows(key: str) -> list:
    db = sqlite3.connect(f"file:{gt.STATE / 'gateway/images.db'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT status FROM images WHERE key=?", (key,)).fetchall()
    finally:
        db.close()


def test_user_pulls_busybox_with_shifterimg(cfg):
    image = ib.Image([ib.layer_from_dir(ib.busybox_tree(tempfile.mkdtemp()))],
                     config={"Cmd": ["/bin/sh"], "Env": ["PATH=/bin", "A=b"], "WorkingDir": "/tmp"})
    digest = ib.push(gt.REGISTRY, "test/busybox", "static", image)
    gt.age_rows("%test/busybox:static")  # new content under an old name: not "pulled recently"
    image_id = digest.split(":", 1)[1]
    result = run_as("testuser", [SHIFTERIMG, "pull", "docker:test/busybox:static"])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1].startswith(f"docker:test/busybox:static: READY {image_id}")
    assert any("layers 1/1" in line for line in lines)  # live progress went by
    squash = IMAGES / f"{image_id}.squashfs"
    assert oct(squash.stat().st_mode & 0o777) == "0o644"
    entries = gt.squashfs_entries(squash)
    assert entries["bin/sh"] == ("l", 0o777, 0, 0, 0, "busybox", "")
    assert entries["bin/busybox"][6] == gt.hashlib.sha256(open("/bin/busybox", "rb").read()).hexdigest()
    # the same through the library the runtime and the submit hook use
    record = client.lookup(cfg, "test/busybox:static")
    assert (record.id, record.env, record.workdir, record.cmd) == (image_id, ["PATH=/bin", "A=b"], "/tmp", ["/bin/sh"])
    assert client.lookup(cfg, f"id:{image_id}").id == image_id
    table = run_as("testuser", [SHIFTERIMG, "images"])
    assert table.returncode == 0 and any(image_id[:12] in l and "test/busybox:static" in l
                                         for l in table.stdout.splitlines())
    lookup = run_as("testuser2", [SHIFTERIMG, "lookup", "test/busybox:static"])
    assert (lookup.returncode, lookup.stdout) == (0, image_id + "\n")


@pytest.mark.parametrize("docker", [False, True], ids=["oci-index", "docker-manifest-list"])
def test_index_and_manifest_list_select_linux_amd64(cfg, docker):
    amd = unique_image(docker=docker)
    arm = unique_image(docker=docker, architecture="arm64")
    # an OCI index may also carry attestations (platform unknown/unknown): never chosen
    attestation = unique_image(docker=docker, architecture="unknown", os="unknown")
    repo = f"test/multi-{'list' if docker else 'index'}"
    _, (att_digest, arm_digest, amd_digest) = ib.push_index(gt.REGISTRY, repo, "1", [attestation, arm, amd],
                                                            docker=docker)
    body = client.pull(cfg, f"{repo}:1", poll=0.1)
    assert body["status"] == "READY", body["status_message"]
    assert body["id"] == amd_digest.split(":", 1)[1] != arm_digest.split(":", 1)[1]
    assert (IMAGES / f"{body['id']}.squashfs").exists()


def test_missing_platform_fails_with_the_platforms_there(cfg):
    arm = unique_image(architecture="arm64")
    ib.push_index(gt.REGISTRY, "test/armonly", "1", [arm])
    body = client.pull(cfg, "test/armonly:1", poll=0.1)
    assert body["status"] == "FAILURE"
    assert "no image for platform linux/amd64" in body["status_message"] and "linux/arm64" in body["status_message"]


def test_tampered_blob_fails_and_publishes_nothing(cfg):
    image = unique_image()
    digest = ib.push(gt.REGISTRY, "test/tampered", "1", image)
    gt.age_rows("%test/tampered:1")  # new content under an old name: not "pulled recently"
    _, _, layers = image.blobs()
    blob = ib.blob_file(gt.REGISTRY_DATA, ib.sha256(layers[1]))
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte flipped
    blob.write_bytes(bytes(data))
    result = run_as("testuser", [SHIFTERIMG, "pull", "test/tampered:1"])
    assert result.returncode == 1
    assert "tampered" in result.stderr and result.stderr.count("\n") == 1
    image_id = digest.split(":", 1)[1]
    assert not list(IMAGES.glob(f"*{image_id}*"))
    assert not (gt.STATE / "gateway/layers" / ib.sha256(layers[1]).split(":")[1]).exists()
    assert db_rows("docker.io/test/tampered:1") == [("FAILURE",)]


def test_image_not_in_registry_fails_clearly(cfg):
    result = run_as("testuser", [SHIFTERIMG, "pull", "test/no-such-image:1"])
    assert result.returncode == 1 and "not found" in result.stderr and "Traceback" not in result.stderr
    lookup = run_as("testuser", [SHIFTERIMG, "lookup", "test/no-such-image:2"])
    assert lookup.returncode == 3 and lookup.stdout == "" and "pull it first" in lookup.stderr


@pytest.mark.parametrize("ref", ["docker:Bad/Name", "docker:app@sha256:123", "docker:", "local:/tmp"])
def test_bad_reference_is_one_line_and_leaves_nothing(cfg, ref):
    for command in ("pull", "lookup"):
        result = run_as("testuser", [SHIFTERIMG, command, ref])
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("shifterimg: ")
        assert "Traceback" not in result.stderr and result.stdout == ""
    assert db_rows(ref.removeprefix("docker:")) == []


def test_twenty_concurrent_pulls_download_once(cfg):
    image = unique_image()
    digest = ib.push(gt.REGISTRY, "test/concurrent", "1", image)
    gt.age_rows("%test/concurrent:1")  # new content under an old name: not "pulled recently"
    _, _, layers = image.blobs()
    unique_layer = ib.sha256(gzip_of(image, 1))
    barrier = threading.Barrier(20)
    results: list = []

    def one():
        barrier.wait()
        results.append(client.pull(cfg, "test/concurrent:1", poll=0.1))

    threads = [threading.Thread(target=one) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 20 and {r["status"] for r in results} == {"READY"}
    assert {r["id"] for r in results} == {digest.split(":", 1)[1]}
    assert blob_gets(unique_layer) == 1
    assert db_rows("docker.io/test/concurrent:1") == [("READY",)]
    # pulling a READY image again checks the manifest only: no layer is fetched
    again = client.pull(cfg, "test/concurrent:1", poll=0.1)
    assert again["status"] == "READY" and again["id"] == digest.split(":", 1)[1]
    assert blob_gets(unique_layer) == 1


def gzip_of(image: ib.Image, index: int) -> bytes:
    return image.blobs()[2][index]


def test_openapi_lists_the_endpoints(cluster):
    import httpx
    spec = httpx.get("http://127.0.0.1:8642/openapi.json").json()
    paths = set(spec["paths"])
    assert {"/api/list/{system}/", "/api/lookup/{system}/{itype}/{tag}", "/api/pull/{system}/{itype}/{tag}",
            "/api/queue/{system}/"} <= paths
    from imagegw import identity
    from shifter_site import config
    credential = identity.credential(config.load(str(gt.STATE / "etc/shifter.yaml"), privileged=False))
    other = httpx.get("http://127.0.0.1:8642/api/list/other/", headers={"authentication": credential})
    assert json.loads(other.text)["error"].startswith("this gateway serves")


def test_unreachable_gateway_is_one_clear_error(cfg):
    import msgspec
    down = msgspec.structs.replace(cfg, gateway=msgspec.structs.replace(cfg.gateway, urls=["http://127.0.0.1:9"],
                                                                        timeout=2.0))
    with pytest.raises(client.GatewayError, match="cannot reach the image gateway.*is shifter-gateway running"):
        client.lookup(down, "test/busybox:static")

"""A gateway killed in the middle of a conversion leaves no partial image, and the next pull
(after a restart) succeeds. Runs its own gateway instance as the service account, so the
cluster's gateway is not disturbed."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

import gatewaytools as gt
import imagebuilder as ib
from conftest import localcluster, need
from imagegw import client
from shifter_site import config

PORT = 18642
ACCOUNT = "shifter-gw"


def many_files_image() -> ib.Image:
    entries = [ib.Dir("data")] + [ib.File(f"data/f{i:05d}", os.urandom(40000)) for i in range(2500)]
    return ib.Image([ib.layer_from_entries(entries)], compresslevel=1)


@pytest.fixture
def instance(cluster):
    need(shutil.which("tar2sqfs") is not None, "squashfs-tools-ng is not installed")
    account = pwd.getpwnam(ACCOUNT)
    top = Path(tempfile.mkdtemp(prefix="gw-kill-", dir="/var/tmp"))
    os.chmod(top, 0o755)
    for sub in ("images", "state"):
        (top / sub).mkdir()
        os.chown(top / sub, account.pw_uid, account.pw_gid)
    text = (gt.STATE / "etc/shifter.yaml").read_text()
    text = text.replace(f"image_dir: {gt.STATE}/images", f"image_dir: {top}/images")
    text = text.replace("http://127.0.0.1:8642", f"http://127.0.0.1:{PORT}")
    (top / "shifter.yaml").write_text(text)
    procs: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        proc = subprocess.Popen(
            [str(localcluster.PREFIX / "bin/python"), "-m", "imagegw.service", "--config", str(top / "shifter.yaml"),
             "--state-dir", str(top / "state"), "--workers", "1"],
            user=account.pw_uid, group=account.pw_gid, extra_groups=[], cwd="/",
            env={"PATH": "/usr/bin:/bin"}, stdout=open(top / "gateway.log", "ab"), stderr=subprocess.STDOUT)
        procs.append(proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{PORT}/openapi.json", timeout=1).raise_for_status()
                return proc
            except httpx.HTTPError:
                assert proc.poll() is None, (top / "gateway.log").read_text()
                time.sleep(0.1)
        raise AssertionError("test gateway did not start")

    cfg = config.load(str(top / "shifter.yaml"), privileged=False)
    yield start, cfg, top
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    shutil.rmtree(top)


def writers(top: Path) -> list[str]:
    out = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(top).encode() in (entry / "cmdline").read_bytes() \
                    and (entry / "comm").read_text().strip() == "tar2sqfs":
                out.append(entry.name)
        except OSError:
            pass
    return out


def test_killed_mid_conversion_leaves_nothing_and_next_pull_succeeds(instance):
    start, cfg, top = instance
    digest = ib.push(gt.REGISTRY, "test/killme", "1", many_files_image())
    image_id = digest.split(":", 1)[1]
    gateway = start()
    assert client.start_pull(cfg, "test/killme:1")["status"] in ("INIT", "PULLING")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        body = client.status(cfg, "test/killme:1")
        if body["status"] == "CONVERSION" and (body["progress"].get("entries") or 0) > 0:
            break
        assert body["status"] not in ("READY", "FAILURE"), body
        time.sleep(0.02)
    else:
        raise AssertionError("never saw CONVERSION")
    gateway.send_signal(signal.SIGKILL)
    gateway.wait()
    time.sleep(0.5)
    assert writers(top) == []  # tar2sqfs died with the gateway
    images = top / "images"
    assert not (images / f"{image_id}.squashfs").exists() and not (images / f"{image_id}.json").exists()
    half = list(images.glob(f".{image_id}.*.squashfs.tmp"))
    assert len(half) == 1  # killed mid-conversion: a half-written file, under a name no reader uses
    start()  # restart: the interrupted pull is FAILED, its temporary file removed
    body = client.status(cfg, "test/killme:1")
    assert body["status"] == "FAILURE" and "stopped during this pull" in body["status_message"]
    assert [p.name for p in images.iterdir()] == []
    body = client.pull(cfg, "test/killme:1", poll=0.1)
    assert body["status"] == "READY" and body["id"] == image_id
    assert sorted(p.name for p in images.iterdir()) == [f"{image_id}.json", f"{image_id}.squashfs", "tags"]
    entries = gt.squashfs_entries(images / f"{image_id}.squashfs")
    assert len([p for p in entries if p.startswith("data/")]) == 2500


def test_killed_mid_download_leaves_no_partial_blob_and_next_pull_succeeds(instance):
    """The gateway is killed while a layer is still arriving (a registry in the test sends it
    slowly): after the restart the pull is FAILED, no partial blob or image file is left, and
    pulling again succeeds."""
    from test_registry_faults import REPO, FaultyRegistry, fault_image
    start, cfg, top = instance
    served = FaultyRegistry(fault_image())
    try:
        slow = served.layer_digests[1]
        served.fault = lambda kind, name, n: ("trickle", 60) if name == slow else None
        text = (top / "shifter.yaml").read_text()
        (top / "shifter.yaml").write_text(re.sub(r"(?m)^(\s*default:\s*).*$", rf"\g<1>{served.url}", text, count=1))
        assert served.url in (top / "shifter.yaml").read_text()
        gateway = start()
        client.start_pull(cfg, f"{REPO}:1")
        layers = top / "state/layers"
        deadline = time.monotonic() + 60
        while not list(layers.glob(".*.part")) or not any(p.stat().st_size for p in layers.glob(".*.part")):
            assert time.monotonic() < deadline, "the slow layer never started arriving"
            time.sleep(0.05)
        assert client.status(cfg, f"{REPO}:1")["status"] == "PULLING"
        gateway.send_signal(signal.SIGKILL)
        gateway.wait()
        start()
        body = client.status(cfg, f"{REPO}:1")
        assert body["status"] == "FAILURE" and "stopped during this pull" in body["status_message"]
        assert list(layers.glob(".*")) == [] and not layers.joinpath(slow.split(":", 1)[1]).exists()
        assert list((top / "images").iterdir()) == []
        served.fault = lambda kind, name, n: None
        body = client.pull(cfg, f"{REPO}:1", poll=0.1)
        assert body["status"] == "READY" and body["id"] == served.digest.split(":", 1)[1]
    finally:
        served.close()

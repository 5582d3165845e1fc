"""The three-layer Debian image (debootstrap minbase + whiteouts) pulled from the real registry:
converted entry by entry equal to what skopeo + umoci unpack, bit-identical when converted
again, and served through the cluster's gateway to a plain user."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import uuid

import pytest

import gatewaytools as gt
import imagebuilder as ib
from conftest import localcluster, need, run_as
from imagegw import registry, squash

REPO, TAG = "test/debian3", "1"


@pytest.fixture(scope="module")
def debian(cluster):
    need(shutil.which("debootstrap") is not None, "debootstrap is not installed")
    image = gt.debian_image(label=uuid.uuid4().hex)  # a new image id each run: converted for real
    digest = ib.push(gt.REGISTRY, REPO, TAG, image)
    return digest


def _convert(tmp_path, name):
    client = registry.Client(f"http://{gt.REGISTRY}", REPO)
    resolved = client.resolve(TAG)
    cache = registry.LayerCache(tmp_path / "cache")
    paths = registry.fetch_layers(client, resolved.layers, cache)
    out = tmp_path / name
    flat = squash.convert(paths, out)
    client.close()
    return resolved, out, flat


def test_matches_independent_unpacker(debian, tmp_path):
    need(shutil.which("umoci") and shutil.which("skopeo"), "skopeo and umoci are needed")
    resolved, out, flat = _convert(tmp_path, "image.squashfs")
    assert resolved.digest == debian and len(resolved.layers) == 3
    ours = gt.squashfs_entries(out)
    theirs = gt.tree_entries(gt.umoci_unpack(REPO, TAG, tmp_path / "umoci"))
    # what we neutralise by design: device nodes dropped, setuid/setgid cleared on files
    devices = {p for p, e in theirs.items() if e[0] in "cb"}
    assert devices and len(devices) == flat.neutralised["device"]
    setid = {p for p, e in theirs.items() if e[0] == "f" and e[1] & 0o6000}
    assert setid and flat.neutralised["setuid_setgid"] >= len(setid)
    expected = {}
    for path, e in theirs.items():
        if path in devices:
            continue
        if path in setid:
            e = (e[0], e[1] & ~0o6000, *e[2:])
        expected[path] = e
    missing = sorted(set(expected) - set(ours))
    extra = sorted(set(ours) - set(expected))
    differ = sorted(p for p in set(ours) & set(expected) if ours[p] != expected[p])
    assert (missing, extra, differ[:5]) == ([], [], []), [(p, ours[p], expected[p]) for p in differ[:5]]
    assert len(ours) > 3000
    # the whiteout cases really happened
    assert "etc/issue.net" not in ours and "etc/issue" in ours
    assert "usr/share/doc/recreated/README" in ours
    assert not any(p.startswith("usr/share/doc/") and not p.startswith("usr/share/doc/recreated") for p in ours)
    assert sorted(p for p in ours if p.startswith("etc/apt/")) == ["etc/apt/sources.list"]
    assert "opt/app/hello.txt" not in ours and ours["opt/app/world.txt"][2:4] == (1000, 1000)


def test_same_image_converts_to_identical_file(debian, tmp_path):
    _, first, _ = _convert(tmp_path, "a.squashfs")
    _, second, _ = _convert(tmp_path, "b.squashfs")
    assert hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()


def test_user_pulls_debian_through_gateway(debian):
    gt.age_rows(f"%{REPO}:{TAG}")  # the fixture may have pushed new content under this name
    result = run_as("testuser", [str(localcluster.PREFIX / "bin/shifterimg"), "pull", f"docker:{REPO}:{TAG}"], timeout=600)
    assert result.returncode == 0, result.stderr
    assert "READY" in result.stdout and "layers 3/3" in result.stdout
    image_id = debian.split(":", 1)[1]
    lookup = run_as("testuser", [str(localcluster.PREFIX / "bin/shifterimg"), "lookup", f"{REPO}:{TAG}"])
    assert lookup.returncode == 0 and lookup.stdout.strip() == image_id
    record = json.loads((gt.STATE / "images" / f"{image_id}.json").read_text())
    assert record["env"][1] == "LANG=C.UTF-8" and record["cmd"] == ["/bin/bash"]
    assert record["entrypoint"] == ["/usr/bin/env"] and record["workdir"] == "/opt/app"
    assert record["user"] == "1000" and record["labels"]["org.example.test"] == "debian-3-layers"
    assert record["neutralised"]["device"] > 0 and record["tag"] == f"docker.io/{REPO}:{TAG}"  # the canonical name
    entries = gt.squashfs_entries(gt.STATE / "images" / f"{image_id}.squashfs")
    shadow = os.lstat(ib.debian_tree() / "etc/shadow")  # the image's owners are kept (root:shadow here)
    assert entries["etc/shadow"][1:4] == (stat.S_IMODE(shadow.st_mode), shadow.st_uid, shadow.st_gid)
    assert shadow.st_gid != 0 and entries["opt/app/world.txt"][2:4] == (1000, 1000)
    assert not any(e[1] & 0o6000 for e in entries.values() if e[0] != "d")
    listed = run_as("testuser", [str(localcluster.PREFIX / "bin/shifterimg"), "images", "--json"])
    assert any(r["id"] == image_id and r["status"] == "READY" for r in json.loads(listed.stdout))

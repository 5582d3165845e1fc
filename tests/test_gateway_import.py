"""`shifterimg import PATH NAME`: a prebuilt squashfs, a `docker save` archive or an
OCI layout becomes `custom:NAME` through the pull's own conversion (same caps, same
neutralisation); corrupt and hostile archives are refused with one line and leave nothing.
The first part drives imagegw.importer directly (no cluster); the last part the real
`shifterimg` against the local cluster's gateway, as the admin (root) and as a user, and a
job running the imported image."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
import uuid
from pathlib import Path

import msgspec
import pytest

import gatewaytools as gt
import imagebuilder as ib
from imagegw import importer, registry
from shifter_site import config, imagefiles

REPO = Path(__file__).resolve().parent.parent


def site(image_dir: Path) -> config.Config:
    cfg = config.parse((REPO / "config/shifter.yaml.example").read_text(), "example")
    return msgspec.structs.replace(cfg, image_dir=str(image_dir))


def hostile_layer() -> bytes:
    """A layer with what a pull neutralises: a setuid-root file, a device, a link out of the tree."""
    return ib.layer_from_entries([
        ib.Dir("bin"), ib.File("bin/sh", b"#!/bin/true\n", mode=0o755),
        ib.File("bin/su", b"root me\n", mode=0o4755),
        ib.Device("dev-null"),
        ib.Symlink("escape", "../../../../etc/shadow"),
        ib.File("etc/hello", b"imported\n"),
    ])


def tar_of(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buf.getvalue()


def docker_save(layers: list[bytes], cfg: dict | None = None) -> bytes:
    config_blob = json.dumps({"config": cfg or {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
                              "rootfs": {"type": "layers"}}).encode()
    files = {f"{i:02d}/layer.tar": layer for i, layer in enumerate(layers)}
    files["config.json"] = config_blob
    files["manifest.json"] = json.dumps([{"Config": "config.json", "RepoTags": ["x:1"],
                                          "Layers": sorted(k for k in files if k.endswith("layer.tar"))}]).encode()
    return tar_of(files)


def oci_layout(layers: list[bytes], tamper: bool = False) -> bytes:
    blobs = {}

    def add(data: bytes) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        blobs[f"blobs/sha256/{digest}"] = data
        return {"digest": f"sha256:{digest}", "size": len(data)}

    compressed = [gzip.compress(layer, mtime=0) for layer in layers]
    layer_descriptors = [dict(add(c), mediaType="application/vnd.oci.image.layer.v1.tar+gzip") for c in compressed]
    config_d = add(json.dumps({"config": {"Env": ["PATH=/bin"], "WorkingDir": "/etc"}}).encode())
    manifest = add(json.dumps({"schemaVersion": 2, "config": config_d, "layers": layer_descriptors}).encode())
    if tamper:  # a layer blob whose content is not what its name says
        name = f"blobs/sha256/{layer_descriptors[0]['digest'].split(':')[1]}"
        blobs[name] = gzip.compress(b"\0" * 1024)
    files = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
             "index.json": json.dumps({"schemaVersion": 2, "manifests": [manifest]}).encode(), **blobs}
    return tar_of(files)


def squashfs_of(layer: bytes, path: Path) -> Path:
    subprocess.run(["tar2sqfs", "--quiet", "--force", "--no-skip", str(path)], input=layer, check=True)
    return path


@pytest.fixture
def where(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    return site(images), registry.LayerCache(tmp_path / "layers"), tmp_path


@pytest.mark.parametrize("form", ["docker-save", "oci", "squashfs"])
def test_each_form_is_converted_with_the_pulls_neutralisation(where, form):
    cfg, cache, tmp = where
    layer = hostile_layer()
    upload = tmp / "upload"
    if form == "docker-save":
        upload.write_bytes(docker_save([ib.layer_from_entries([ib.File("etc/base", b"base\n")]), layer]))
    elif form == "oci":
        upload.write_bytes(oci_layout([ib.layer_from_entries([ib.File("etc/base", b"base\n")]), layer]))
    else:
        squashfs_of(layer, upload)
    assert importer.kind(upload) == form
    record = importer.publish(cfg, cache, upload, "lab/tools:1")
    assert record.id == hashlib.sha256(upload.read_bytes()).hexdigest()
    assert (record.itype, record.tag) == ("custom", "lab/tools:1")
    assert record.neutralised.get("setuid_setgid") == 1 and record.neutralised.get("symlink_escape") == 1
    assert record.neutralised.get("device") == 1
    entries = gt.squashfs_entries(imagefiles.squashfs_path(cfg.image_dir, record.id))
    assert entries["etc/hello"][6] == hashlib.sha256(b"imported\n").hexdigest()
    assert entries["bin/su"][1] & 0o6000 == 0 and "escape" not in entries and "dev-null" not in entries
    if form != "squashfs":
        assert entries["etc/base"][0] == "f" and record.env == ["PATH=/bin"]
    assert imagefiles.read_record(cfg.image_dir, record.id) == record


def bad_archives(tmp: Path) -> dict[str, tuple[bytes, str]]:
    good = ib.layer_from_entries([ib.File("etc/x", b"x")])
    whole = docker_save([good])
    return {
        "not an archive": (b"just some text\n" * 10, "not a squashfs, a docker save archive or an OCI layout"),
        "truncated": (whole[: len(whole) // 2], "corrupt"),
        "manifest names a path outside": (tar_of({
            "manifest.json": json.dumps([{"Config": "c.json", "Layers": ["../../etc/passwd"]}]).encode(),
            "c.json": b"{}"}), "outside the archive"),
        "layer is a symlink": (tar_of({
            "manifest.json": json.dumps([{"Config": "c.json", "Layers": ["l.tar"]}]).encode(), "c.json": b"{}"},
            links={"l.tar": "/etc/shadow"}), "not a regular file"),
        "layer missing": (tar_of({
            "manifest.json": json.dumps([{"Config": "c.json", "Layers": ["gone.tar"]}]).encode(), "c.json": b"{}"}),
            "not in it"),
        "two images": (tar_of({"manifest.json": json.dumps([{"Config": "c", "Layers": []}] * 2).encode()}),
                       "exactly one image"),
        "oci blob tampered": (oci_layout([good], tamper=True), "does not match its digest"),
        "oci bad digest": (tar_of({"oci-layout": b"{}", "index.json": json.dumps(
            {"manifests": [{"digest": "sha256:../../x"}]}).encode()}), "not sha256:<64 hex>"),
        "layer not a tar": (docker_save([b"\x1f\x8b" + os.urandom(200)]), ""),
        "corrupt squashfs": (b"hsqs" + os.urandom(4000), "squashfs cannot be read"),
    }


def test_corrupt_and_hostile_archives_are_refused_and_leave_nothing(where):
    cfg, cache, tmp = where
    for label, (data, says) in bad_archives(tmp).items():
        upload = tmp / "upload"
        upload.write_bytes(data)
        with pytest.raises(importer.ArchiveError) as err:
            importer.publish(cfg, cache, upload, "bad:1")
        assert says in str(err.value) and "\n" not in str(err.value), (label, str(err.value))
        assert list(Path(cfg.image_dir).iterdir()) == [], label  # nothing published, no temp left
        assert [p.name for p in cache.root.iterdir() if p.name.startswith(".")] == [], label


def test_a_squashfs_that_unpacks_past_the_caps_stops_at_them(where):
    """A squashfs of a few KB holding a sparse 1 GiB file: refused at the site's size cap while
    it streams, before the layer cache holds more than the cap (a pull's layers inflate under
    the same cap)."""
    cfg, cache, tmp = where
    cfg = msgspec.structs.replace(cfg, gateway=msgspec.structs.replace(cfg.gateway, max_image_size="64M"))
    tree = tmp / "sparse"
    tree.mkdir()
    with open(tree / "zeros", "wb") as f:
        f.truncate(1 << 30)
    bomb = tmp / "bomb.sqfs"
    subprocess.run(["gensquashfs", "--quiet", "--pack-dir", str(tree), str(bomb)], check=True)
    assert bomb.stat().st_size < 1 << 20
    seen = []
    real = importer.subprocess.Popen

    def watched(*args, **kwargs):  # the cache's size whenever sqfs2tar is started and reaped
        proc = real(*args, **kwargs)
        wait = proc.wait

        def wait_and_measure(timeout=None):
            seen.append(sum(p.stat().st_size for p in cache.root.iterdir()))
            return wait(timeout=timeout)
        proc.wait = wait_and_measure
        return proc

    importer.subprocess.Popen = watched
    try:
        with pytest.raises(importer.ArchiveError) as err:
            importer.publish(cfg, cache, bomb, "bomb:1")
    finally:
        importer.subprocess.Popen = real
    assert "unpacks to more than this site's limits" in str(err.value) and "\n" not in str(err.value)
    assert seen and max(seen) <= cfg.gateway.max_image_size_bytes + (2 << 20), seen
    assert list(Path(cfg.image_dir).iterdir()) == []
    assert list(cache.root.iterdir()) == []


# ------------------------------------------------------------------ the real shifterimg on the cluster


def test_shifterimg_import_publishes_for_jobs_and_refuses_users(cluster, tmp_path):
    import jobtools as jt
    from conftest import run_as
    from test_gateway_lifecycle import SHIFTERIMG, USER, one_line_error, shifterimg

    name = f"lab/imported{uuid.uuid4().hex[:6]}:1"
    busybox = tmp_path / "busybox"
    ib.busybox_tree(busybox)
    archive = jt.home(USER) / "import-image.tar"  # readable by the user too: the gateway refuses, not the file
    archive.write_bytes(docker_save([ib.layer_from_dir(busybox), hostile_layer()]))
    os.chmod(archive, 0o644)
    refused = run_as(USER, [SHIFTERIMG, "import", str(archive), name])
    assert "gateway admins" in one_line_error(refused)
    assert shifterimg(USER, "lookup", f"custom:{name}").returncode == 3
    done = shifterimg("root", "import", str(archive), name)
    assert done.returncode == 0 and "READY" in done.stdout and "setuid_setgid 1" in done.stdout, done
    image_id = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert shifterimg(USER, "lookup", f"custom:{name}").stdout.strip() == image_id
    body = f"#!/bin/sh\n#SBATCH --image=custom:{name}\nsrun shifter cat /etc/hello\n"
    job = jt.write_job(USER, "import-job.sh", body)
    _, out, _ = jt.sbatch_wait(USER, job)
    assert "imported" in out
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"not an image")
    os.chmod(bad, 0o644)
    refused = shifterimg("root", "import", str(bad), "lab/bad:1")
    assert "not a squashfs, a docker save archive or an OCI layout" in one_line_error(refused)
    assert shifterimg("root", "lookup", "custom:lab/bad:1").returncode == 3
    wrong = shifterimg("root", "import", str(archive), "Lab/UPPER")
    assert wrong.returncode == 2 and "custom image name" in one_line_error(wrong)


def test_an_upload_over_the_size_cap_is_refused_while_it_streams(cluster, tmp_path):
    """The admin's archive body is counted as it arrives: past gateway.max_image_size the
    gateway answers 413 in one line and keeps nothing of it (a gateway in this process, with
    the cluster's munge for root's credential)."""
    from fastapi.testclient import TestClient

    import test_gateway_trust as tt
    from imagegw import api

    base = config.load(str(gt.STATE / "etc/shifter.yaml"), privileged=False)
    (tmp_path / "images").mkdir()
    site_cfg = msgspec.structs.replace(base, image_dir=str(tmp_path / "images"), gateway=msgspec.structs.replace(
        base.gateway, max_image_size="1M", autoexpire_every=0))
    gateway = api.Gateway(site_cfg, tmp_path / "state")
    try:
        web = TestClient(api.create_app(gateway))
        answer = web.post(f"/api/import/{site_cfg.system}/big:1", content=os.urandom(2 << 20),
                          headers={"authentication": tt.credential("root")})
        assert answer.status_code == 413, answer.text
        assert "larger than gateway.max_image_size (1M)" in answer.json()["error"]
        assert "\n" not in answer.json()["error"]
        assert list((tmp_path / "state/uploads").iterdir()) == []
        assert list((tmp_path / "images").iterdir()) == []
    finally:
        gateway.close()

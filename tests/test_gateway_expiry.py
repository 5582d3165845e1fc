"""Expiry and removal on both backends, without the cluster: lookups and job starts move an
image's expiry on (gateway.expire_after), the service's periodic autoexpire removes what
expired and nobody uses, a used image is never removed (the refusal names the jobs), and
layers no image refers to leave the layer cache while shared ones stay."""

from __future__ import annotations

import hashlib
import time
import uuid
from pathlib import Path

import msgspec
import pytest

from imagegw import api, identity, lifecycle, reference, registry
from imagegw.store import InUse, Store, Use
from shifter_site import config, imagefiles, tagindex

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "images.db")
    return request.getfixturevalue("postgres").create_database(f"e{uuid.uuid4().hex[:12]}")


def site(image_dir: Path, **gateway) -> config.Config:
    cfg = config.parse((REPO / "config/shifter.yaml.example").read_text(), "example")
    return msgspec.structs.replace(cfg, image_dir=str(image_dir),
                                   gateway=msgspec.structs.replace(cfg.gateway, **gateway))


def publish(cfg, store: Store, cache: registry.LayerCache, name: str, layers: list[bytes]) -> str:
    """A READY image `name` with files and its layers in the cache; its id."""
    image_id = hashlib.sha256(name.encode()).hexdigest()
    imagefiles.squashfs_path(cfg.image_dir, image_id).write_bytes(b"hsqs")
    imagefiles.write_record(cfg.image_dir, imagefiles.ImageRecord(id=image_id, system=cfg.system, tag=name))
    digests = []
    for data in layers:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        cache.path(digest).write_bytes(data)
        digests.append(digest)
    store.set_layers(image_id, digests)
    store.put_ready(cfg.system, "docker", name, name, image_id, time.time())
    tagindex.publish(cfg.image_dir, "docker", name, image_id, public=True)
    return image_id


def files(cfg, image_id: str) -> bool:
    return imagefiles.squashfs_path(cfg.image_dir, image_id).exists() and \
        imagefiles.record_path(cfg.image_dir, image_id).exists()


def test_in_use_images_are_kept_and_unused_layers_collected(where, tmp_path):
    (tmp_path / "images").mkdir()
    cfg = site(tmp_path / "images", expire_after=100)
    store, cache = Store(where), registry.LayerCache(tmp_path / "layers")
    shared, own_a, own_b = b"shared layer", b"layer of a", b"layer of b"
    a = publish(cfg, store, cache, "a:1", [shared, own_a])
    b = publish(cfg, store, cache, "b:1", [shared, own_b])
    store.start_use(Use(system=cfg.system, job_id="41", node="n1", itype="docker", key="a:1", image_id=a, uid=0,
                        started=time.time()), cfg.gateway.expire_after)
    store.start_use(Use(system=cfg.system, job_id="41", node="n2", itype="docker", key="a:1", image_id=a, uid=0,
                        started=time.time()), cfg.gateway.expire_after)
    store.start_use(Use(system=cfg.system, job_id="42", node="n1", itype="docker", key="a:1", image_id=a, uid=0,
                        started=time.time()), cfg.gateway.expire_after)
    assert store.get(cfg.system, "docker", "a:1").expires > time.time() + 90  # a job start moves it on
    with pytest.raises(InUse) as err:
        lifecycle.remove(cfg, store, cache, store.get(cfg.system, "docker", "a:1"))
    assert err.value.jobs == ["41", "42"] and "running jobs 41, 42" in str(err.value)
    assert files(cfg, a) and store.get(cfg.system, "docker", "a:1") is not None
    # both expired now: b goes (its own layer with it, the shared one stays), a is kept for its jobs
    done = lifecycle.expire(cfg, store, cache, store.get(cfg.system, "docker", "b:1"))
    assert done.removed == ["docker:b:1"] and done.files == [b] and not files(cfg, b)
    # a launch by name finds no index entry for a removed image; a kept one keeps its entry
    assert tagindex.read(cfg.image_dir, "docker", "b:1") is None
    assert tagindex.read(cfg.image_dir, "docker", "a:1") == a
    done = lifecycle.expire(cfg, store, cache, store.get(cfg.system, "docker", "a:1"))
    assert done.removed == [] and done.kept == {"docker:a:1": ["41", "42"]} and files(cfg, a)
    blobs = {p.name for p in cache.root.iterdir()}
    assert hashlib.sha256(own_b).hexdigest() not in blobs and hashlib.sha256(shared).hexdigest() in blobs
    for job, node in (("41", "n1"), ("41", "n2"), ("42", "n1")):
        assert store.end_use(cfg.system, job, node) == 1
    assert store.end_use(cfg.system, "42", "n1") == 0  # ended once
    done = lifecycle.autoexpire(cfg, store, cache)
    assert done.removed == ["docker:a:1"] and not files(cfg, a)
    assert [p.name for p in cache.root.iterdir()] == []
    usage = store.usage(cfg.system)
    assert usage == {}  # rows gone with their images


def test_the_service_expires_what_nobody_looks_up(where, tmp_path):
    (tmp_path / "images").mkdir()
    cfg = site(tmp_path / "images", expire_after=1.5, autoexpire_every=0.3)
    gateway = api.Gateway(cfg, tmp_path / "state", database=where)
    try:
        kept = publish(cfg, gateway.store, gateway.cache, "docker.io/library/kept:1", [b"k"])
        idle = publish(cfg, gateway.store, gateway.cache, "docker.io/library/idle:1", [b"i"])
        for name in ("kept", "idle"):  # both start with an expiry
            gateway.store.update(cfg.system, "docker", f"docker.io/library/{name}:1", expires=time.time() + 1.5)
        who = identity.Caller(uid=0, gid=0)
        ref = gateway.parse(cfg.system, "docker", "kept:1")
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            assert gateway.lookup_row(ref, who) is not None  # looked up: moved on each time
            time.sleep(0.2)
        assert files(cfg, kept) and not files(cfg, idle)
        assert gateway.store.get(cfg.system, "docker", "docker.io/library/idle:1") is None
        assert gateway.store.usage(cfg.system)[("docker", "docker.io/library/kept:1")].lookups >= 10
    finally:
        gateway.close()


def test_custom_names_parse_strictly():
    assert reference.parse("custom:lab/tools:1").key == "lab/tools:1"
    for bad in ("custom:../x", "custom:Lab", "custom:/abs", "custom:a//b", "custom:a:b:c"):
        with pytest.raises(reference.ReferenceError):
            reference.parse(bad)

"""The published tag index (shifter_site.tagindex) and name resolution through it
(runtime.cli.resolve_image): every spelling of a public name finds its one entry, private
images and names without an entry go to the gateway, a stale entry is not trusted."""

from __future__ import annotations

import os
import stat
from types import SimpleNamespace

import pytest

from runtime import cli
from shifter_site import tagindex

A = "a" * 64
B = "b" * 64
KEY = "127.0.0.1:5000/demo/app:1.0"


@pytest.fixture
def cfg(tmp_path):
    for image_id in (A, B):
        (tmp_path / f"{image_id}.json").write_text("{}")
    registries = SimpleNamespace(default="http://127.0.0.1:5000", hosts={}, mirrors={}, docker_hub=True)
    return SimpleNamespace(image_dir=str(tmp_path), registries=registries, default_image_type="docker")


def test_a_public_entry_is_one_world_readable_file_replaced_in_place(cfg):
    tagindex.publish(cfg.image_dir, "docker", KEY, A, public=True)
    path = tagindex.entry_path(cfg.image_dir, "docker", KEY)
    assert path == os.path.join(cfg.image_dir, "tags", "docker", "127.0.0.1:5000%2Fdemo%2Fapp:1.0")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert tagindex.read(cfg.image_dir, "docker", KEY) == A
    tagindex.publish(cfg.image_dir, "docker", KEY, B, public=True)  # re-pulled: a new image
    assert tagindex.read(cfg.image_dir, "docker", KEY) == B
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]  # no temporary left


def test_the_index_is_readable_by_everyone_whatever_the_umask(cfg):
    old = os.umask(0o077)
    try:
        tagindex.publish(cfg.image_dir, "docker", KEY, A, public=True)
    finally:
        os.umask(old)
    path = tagindex.entry_path(cfg.image_dir, "docker", KEY)
    for p in (path, os.path.dirname(path), os.path.dirname(os.path.dirname(path))):
        assert stat.S_IMODE(os.stat(p).st_mode) in (0o644, 0o755), p


def test_a_private_image_has_no_entry_and_turning_private_removes_it(cfg):
    tagindex.publish(cfg.image_dir, "docker", KEY, A, public=False)
    assert tagindex.read(cfg.image_dir, "docker", KEY) is None
    tagindex.publish(cfg.image_dir, "docker", KEY, A, public=True)
    tagindex.publish(cfg.image_dir, "docker", KEY, A, public=False)
    assert tagindex.read(cfg.image_dir, "docker", KEY) is None
    assert not os.path.exists(tagindex.entry_path(cfg.image_dir, "docker", KEY))


@pytest.mark.parametrize("key", [f"127.0.0.1:5000/demo/app@sha256:{A}", "x/" + "y" * 260 + ":1", ""])
def test_keys_without_an_entry(cfg, key):
    assert tagindex.entry_path(cfg.image_dir, "docker", key) is None
    tagindex.publish(cfg.image_dir, "docker", key, A, public=True)  # a no-op, not an error
    assert tagindex.read(cfg.image_dir, "docker", key) is None


def test_an_entry_that_is_not_an_id_or_is_a_link_is_not_read(cfg, tmp_path):
    path = tagindex.entry_path(cfg.image_dir, "docker", KEY)
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.write("../../etc/passwd\n")
    assert tagindex.read(cfg.image_dir, "docker", KEY) is None
    os.unlink(path)
    (tmp_path / "elsewhere").write_text(A)
    os.symlink(tmp_path / "elsewhere", path)
    assert tagindex.read(cfg.image_dir, "docker", KEY) is None


@pytest.mark.parametrize("typed", ["demo/app:1.0", "docker:demo/app:1.0", "docker:127.0.0.1:5000/demo/app:1.0"])
def test_every_spelling_resolves_from_the_index_without_the_gateway(cfg, typed, monkeypatch):
    tagindex.publish(cfg.image_dir, "docker", KEY, A, public=True)
    monkeypatch.setattr("imagegw.client.lookup", lambda *a: pytest.fail("the gateway was asked"))
    assert cli.resolve_image(cfg, typed) == A


def test_no_entry_or_a_stale_one_asks_the_gateway(cfg, monkeypatch):
    asked = []
    monkeypatch.setattr("imagegw.client.lookup", lambda c, ref: asked.append(ref) or SimpleNamespace(id=B))
    assert cli.resolve_image(cfg, "docker:demo/app:1.0") == B  # no entry
    tagindex.publish(cfg.image_dir, "docker", KEY, A, public=True)
    os.unlink(os.path.join(cfg.image_dir, f"{A}.json"))  # the image went away since
    assert cli.resolve_image(cfg, "docker:demo/app:1.0") == B
    assert asked == ["docker:demo/app:1.0", "docker:demo/app:1.0"]


def test_a_bad_reference_is_refused_before_the_index(cfg):
    from imagegw.reference import ReferenceError

    with pytest.raises(ReferenceError, match="uppercase"):
        cli.resolve_image(cfg, "docker:Demo/app:1.0")
    with pytest.raises(ReferenceError, match="not one this site pulls from"):
        cli.resolve_image(cfg, "docker:elsewhere.example.org/app:1")

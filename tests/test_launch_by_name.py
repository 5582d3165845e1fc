"""`shifter --image=docker:NAME` (how users type it) through the gateway's published tag index
(shifter_site.tagindex), on the local cluster as plain users: a public name launches without
asking the gateway and without importing its client, a private name is never in the index
(others are refused as by the gateway), and an image that turns private leaves the index.
Cost against the launch by id: bench/bench_byname.py."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import uuid
from pathlib import Path

import pytest

import gatewaytools as gt
import imagebuilder as ib
import images
from conftest import localcluster, run_as
from shifter_site import tagindex

SHIFTERIMG = str(localcluster.PREFIX / "bin/shifterimg")
SHIFTER = str(localcluster.PREFIX / "bin/shifter")
IMAGES = str(gt.STATE / "images")
USER, OTHER = "testuser", "testuser2"
# what a launch by id may not import (tests/test_shifter_cli.py), plus the gateway's client
MUST_NOT_IMPORT = {"typing", "json", "subprocess", "structlog", "msgspec", "yaml", "dataclasses", "shutil",
                   "hashlib", "logging", "inspect", "asyncio", "httpx", "imagegw.client", "imagegw.reference"}


def unique_image() -> ib.Image:
    root = Path(tempfile.mkdtemp())
    try:
        images.make_root(root)
        marker = uuid.uuid4().hex
        (root / "marker").write_text(marker)
        layer = ib.layer_from_dir(root)
    finally:
        shutil.rmtree(root)
    return ib.Image([layer], config={"Env": ["PATH=/usr/bin:/bin"], "Labels": {"run": marker}})


def pushed_and_pulled(private_to: str | None = None) -> tuple[str, str]:
    """(repo, image id) of a new image pushed to the local registry and pulled by USER."""
    repo = f"byname/app{uuid.uuid4().hex[:8]}"
    digest = ib.push(gt.REGISTRY, repo, "1", unique_image())
    out = run_as(USER, [SHIFTERIMG, "pull", *(["-u", private_to] if private_to else []), f"{repo}:1"])
    assert out.returncode == 0, out.stderr
    return repo, digest.split(":", 1)[1]


def entry(repo: str) -> str | None:
    return tagindex.entry_path(IMAGES, "docker", f"docker.io/{repo}:1")


def shifter(user: str, *args: str, env: tuple[str, ...] = ()):
    return run_as(user, [*env, SHIFTER, *args], cwd="/")


@pytest.fixture(scope="module")
def fuse(cluster):
    """Rootless launches need /dev/fuse usable by users; restored after."""
    mode = stat.S_IMODE(os.stat("/dev/fuse").st_mode)
    os.chmod("/dev/fuse", 0o666)
    try:
        yield
    finally:
        os.chmod("/dev/fuse", mode)


def test_a_public_name_launches_from_the_index_without_the_gateway(fuse):
    repo, image_id = pushed_and_pulled()
    assert tagindex.read(IMAGES, "docker", f"docker.io/{repo}:1") == image_id
    assert stat.S_IMODE(os.stat(entry(repo)).st_mode) == 0o644
    for spelling in (f"docker:{repo}:1", f"{repo}:1", f"docker:docker.io/{repo}:1"):
        ran = shifter(OTHER, f"--image={spelling}", "cat", "/marker")
        assert ran.returncode == 0 and len(ran.stdout) == 32, ran.stderr
    traced = shifter(OTHER, f"--image=docker:{repo}:1", "true", env=("PYTHONPROFILEIMPORTTIME=1",))
    assert traced.returncode == 0, traced.stderr
    imported = {line.split("|")[-1].strip() for line in traced.stderr.splitlines() if line.startswith("import time:")}
    assert "shifter_site.tagindex" in imported and "runtime.rootless" in imported  # the trace is of the launch
    assert imported & MUST_NOT_IMPORT == set()


def test_a_private_name_is_never_in_the_index(fuse):
    repo, image_id = pushed_and_pulled(private_to=USER)
    assert not os.path.exists(entry(repo))
    assert not any(image_id in open(os.path.join(root, f)).read()
                   for root, _, files in os.walk(os.path.join(IMAGES, "tags")) for f in files)
    refused = shifter(OTHER, f"--image=docker:{repo}:1", "true")
    assert refused.returncode != 0 and f"{repo}:1 is not on system local" in refused.stderr
    assert "Traceback" not in refused.stderr
    owner = shifter(USER, f"--image=docker:{repo}:1", "cat", "/marker")  # through the gateway
    assert owner.returncode == 0, owner.stderr


def test_an_image_made_private_leaves_the_index(fuse):
    repo, image_id = pushed_and_pulled()
    assert os.path.exists(entry(repo))
    out = run_as(USER, [SHIFTERIMG, "pull", "-u", USER, f"{repo}:1"])
    assert out.returncode == 0, out.stderr
    assert not os.path.exists(entry(repo))
    refused = shifter(OTHER, f"--image=docker:{repo}:1", "true")
    assert refused.returncode != 0 and f"{repo}:1 is not on system local" in refused.stderr

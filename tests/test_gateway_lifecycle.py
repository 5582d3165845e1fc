"""Image lifecycle and use records on the local cluster (`shifterimg
jobs`): real jobs' prologs record which image they use on which node, `shifterimg jobs` shows
it (private images to their users only), an image a running job uses is never removed (rm is
refused naming the job, expire waits for it), and once the job has ended autoexpire removes
the image, its files and its layers. Users are the test accounts (pwd); root is the local
cluster's gateway admin."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import tempfile
import time
import uuid

import pytest

import gatewaytools as gt
import imagebuilder as ib
import jobtools as jt
from conftest import localcluster, run_as
from shifter_site import config

SHIFTERIMG = str(localcluster.PREFIX / "bin/shifterimg")
IMAGES = gt.STATE / "images"
LAYERS = gt.STATE / "gateway/layers"
USER, OTHER = "testuser", "testuser2"


@pytest.fixture(scope="module")
def cfg(cluster):
    return config.load(str(gt.STATE / "etc/shifter.yaml"), privileged=False)


_BASE: list[bytes] = []


def base_layer() -> bytes:
    """One busybox layer, shared by every image of this module."""
    if not _BASE:
        root = tempfile.mkdtemp()
        try:
            ib.busybox_tree(root)
            _BASE.append(ib.layer_from_dir(root))
        finally:
            shutil.rmtree(root)
    return _BASE[0]


def unique_image() -> tuple[ib.Image, str]:
    """A busybox image (its base layer the same in every one) with a layer of its own;
    (image, that layer's digest)."""
    base = base_layer()
    marker = ib.layer_from_entries([ib.File("etc/unique", uuid.uuid4().hex.encode())])
    image = ib.Image([base, marker], config={"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]})
    return image, ib.sha256(image.blobs()[2][1])


def one_line_error(result) -> str:
    assert result.returncode != 0, result.stdout
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    return result.stderr


def shifterimg(user: str, *argv: str):
    if user == "root":
        import subprocess
        return subprocess.run([SHIFTERIMG, *argv], capture_output=True, text=True, timeout=120,
                              env={"PATH": "/usr/bin:/bin", "HOME": "/root"})
    return run_as(user, [SHIFTERIMG, *argv])


def pulled(user: str, name: str, *flags: str) -> tuple[str, str, str]:
    """Push a new image as `name`:1 and pull it as `user`; (reference, image id, marker layer)."""
    image, marker = unique_image()
    digest = ib.push(gt.REGISTRY, name, "1", image)
    out = shifterimg(user, "pull", *flags, f"{name}:1")
    assert out.returncode == 0, out.stderr
    return f"{name}:1", digest.split(":", 1)[1], marker


def jobs_view(user: str, *job_ids: str) -> list[dict]:
    out = shifterimg(user, "jobs", "--json", *job_ids)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


class HeldJob:
    """A batch job of `user` on `ref` that runs `srun shifter` once, waits for the test's
    go-ahead file, then runs it again: a real job using an image while the test acts on it."""

    def __init__(self, user: str, ref: str, name: str):
        self.user = user
        home = jt.home(user)
        self.flag = home / f"{name}.go"
        self.flag.unlink(missing_ok=True)
        body = (f"#!/bin/sh\n#SBATCH --image=docker:{ref}\nsrun shifter cat /etc/unique >/dev/null && echo first-ok\n"
                f"while [ ! -e {self.flag} ]; do sleep 0.2; done\n"
                f"srun shifter cat /etc/unique >/dev/null && echo second-ok\n")
        self.script = jt.write_job(user, f"{name}.sh", body)
        token = os.urandom(4).hex()  # job ids start again after a wipe: never an earlier run's output
        out = run_as(user, ["sbatch", "--parsable", "-o", f"{name}-%j-{token}.out", str(self.script)], cwd=home)
        assert out.returncode == 0, out.stderr
        self.id = out.stdout.strip().split(";")[0]
        self.out = home / f"{name}-{self.id}-{token}.out"

    def wait_recorded(self, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = jobs_view("root", self.id)
            if rows and self.out.exists() and "first-ok" in self.out.read_text():
                return rows[0]
            time.sleep(0.3)
        raise AssertionError(f"job {self.id}: no use record / first step after {timeout}s")

    def finish(self) -> str:
        entry = pwd.getpwnam(self.user)
        self.flag.touch()
        os.chown(self.flag, entry.pw_uid, entry.pw_gid)
        jt.wait_gone(self.id, 120)
        text = self.out.read_text()
        self.flag.unlink(missing_ok=True)
        return text


def test_a_running_jobs_image_is_shown_kept_and_removed_once_the_job_ends(cfg):
    name = f"life/held{uuid.uuid4().hex[:8]}"
    ref, image_id, marker = pulled(USER, name)
    job = HeldJob(USER, ref, "life-held")
    try:
        seen = job.wait_recorded()
        # the job's image from outside the job, for anyone (a public image)
        view = jobs_view(OTHER, job.id)
        assert [(r["job"], r["user"], r["id"], r["image"]) for r in view] == [
            (job.id, USER, image_id, f"docker:{ref}")]
        assert set(view[0]["nodes"]) <= set(localcluster.NODES) and view[0]["nodes"]
        assert seen["nodes"] == view[0]["nodes"]
        table = shifterimg(OTHER, "jobs").stdout
        assert any(line.split()[:2] == [job.id, USER] and line.endswith(f"docker:{ref}")
                   for line in table.splitlines()), table

        # not an admin: refused, one line, nothing changed
        for argv in (["rm", ref], ["expire", ref], ["autoexpire"]):
            refused = shifterimg(USER, *argv)
            assert "gateway admins" in one_line_error(refused)
        # the admin: rm refused naming the job; the image stays whole
        refused = shifterimg("root", "rm", ref)
        assert f"in use by running job {job.id}" in one_line_error(refused)
        assert (IMAGES / f"{image_id}.squashfs").exists() and (IMAGES / f"{image_id}.json").exists()
        assert shifterimg(USER, "lookup", ref).stdout.strip() == image_id
        # expire: kept while the job runs (said on stderr, exit 0), and the job goes on using it
        kept = shifterimg("root", "expire", ref)
        assert kept.returncode == 0 and f"in use by running job {job.id}" in kept.stderr, kept
        assert (IMAGES / f"{image_id}.squashfs").exists()
    finally:
        text = job.finish()
    assert "first-ok" in text and "second-ok" in text, text
    assert jobs_view("root", job.id) == []  # the epilog ended the record

    removed = shifterimg("root", "autoexpire")
    assert removed.returncode == 0 and f"removed docker:docker.io/{ref}" in removed.stdout, removed
    assert not (IMAGES / f"{image_id}.squashfs").exists() and not (IMAGES / f"{image_id}.json").exists()
    assert not (LAYERS / marker.split(":", 1)[1]).exists()  # its own layer left the cache
    gone = shifterimg(USER, "lookup", ref)
    assert gone.returncode == 3 and "is not on system" in one_line_error(gone)
    # pulled again: a new conversion from the registry, the same image
    again = shifterimg(USER, "pull", ref)
    assert again.returncode == 0 and image_id in again.stdout, again.stderr


def test_rm_removes_an_unused_image_now_and_keeps_shared_layers(cfg):
    name = f"life/rm{uuid.uuid4().hex[:8]}"
    ref, image_id, marker = pulled(USER, name)
    other_ref, other_id, _ = pulled(USER, f"{name}b")
    image, _ = unique_image()
    base = ib.sha256(image.blobs()[2][0]).split(":", 1)[1]
    assert (LAYERS / base).exists()
    out = shifterimg("root", "rm", ref)
    assert out.returncode == 0 and f"removed docker:docker.io/{ref}" in out.stdout, out.stderr
    assert not (IMAGES / f"{image_id}.squashfs").exists() and not (LAYERS / marker.split(":", 1)[1]).exists()
    assert (IMAGES / f"{other_id}.squashfs").exists()
    assert shifterimg(USER, "lookup", other_ref).stdout.strip() == other_id
    assert (LAYERS / base).exists()  # the base layer the other image shares stays
    missing = shifterimg("root", "rm", ref)
    assert "is not on system" in one_line_error(missing)


def test_jobs_of_a_private_image_are_shown_to_its_users_only(cfg):
    name = f"life/private{uuid.uuid4().hex[:8]}"
    ref, image_id, _ = pulled(USER, name, "-u", USER)
    job = HeldJob(USER, ref, "life-private")
    try:
        job.wait_recorded()
        assert [r["id"] for r in jobs_view(USER, job.id)] == [image_id]
        assert jobs_view(OTHER, job.id) == []
        assert image_id[:12] not in shifterimg(OTHER, "jobs").stdout
        usage = json.loads(shifterimg(USER, "images", "--usage", "--json").stdout)
        mine = [u for u in usage if u["id"] == image_id]
        assert mine and mine[0]["jobs"] == 1 and mine[0]["nodes"] == 1 and mine[0]["users"] >= 1, mine
        assert mine[0]["running_jobs"] == [job.id] and mine[0]["last_used"] > 0
        hidden = shifterimg(OTHER, "images", "--usage", "--json")
        assert hidden.returncode == 0 and image_id not in hidden.stdout
    finally:
        assert "second-ok" in job.finish()


def test_usage_counts_lookups_and_distinct_users(cfg):
    name = f"life/usage{uuid.uuid4().hex[:8]}"
    ref, image_id, _ = pulled(USER, name)
    for user in (USER, USER, OTHER):
        assert shifterimg(user, "lookup", ref).returncode == 0
    usage = {u["id"]: u for u in json.loads(shifterimg(OTHER, "images", "--usage", "--json").stdout)}
    assert usage[image_id]["lookups"] == 3 and usage[image_id]["users"] == 2 and usage[image_id]["jobs"] == 0
    table = shifterimg(OTHER, "images", "--usage").stdout
    assert any(line.startswith(image_id[:12]) and line.split()[1:3] == ["3", "0"] for line in table.splitlines())


def test_only_root_records_use_and_bad_records_are_refused(cfg):
    import test_gateway_trust as tt

    body = json.dumps({"job": "1", "node": "n1", "id": "a" * 64, "uid": pwd.getpwnam(USER).pw_uid,
                       "request": "x"}).encode()
    code, answer = tt.original("POST", "/api/use/local/", USER, body)
    assert code == 403 and "only root" in answer["error"]
    code, answer = tt.original("POST", "/api/use/local/", "root", b'{"job": "1; rm", "node": "n1"}')
    assert code == 400 and "not a Slurm job id" in answer["error"]
    code, answer = tt.original("POST", "/api/use/local/", "root", b'{"job": "1", "node": "n1", "id": "../x", "uid": 0}')
    assert code == 400 and "not an image id" in answer["error"]
    bad = shifterimg(USER, "jobs", "12x")
    assert bad.returncode == 2 and "not a job id" in one_line_error(bad)


# ------------------------------------------------------------------ metrics


def test_metrics_on_the_gateway_host_are_prometheus_text(cfg):
    from prometheus_client.parser import text_string_to_metric_families
    import httpx

    name = f"life/metrics{uuid.uuid4().hex[:8]}"
    ref, image_id, _ = pulled(USER, name)
    assert shifterimg(OTHER, "lookup", ref).returncode == 0
    answer = httpx.get(f"http://{localcluster.GATEWAY}/metrics", timeout=30)  # from this host: loopback
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(answer.text)}
    for family in ("shifter_gateway_pull_seconds", "shifter_gateway_pull_bytes", "shifter_gateway_conversions",
                   "shifter_gateway_pull_failures", "shifter_gateway_queue_depth", "shifter_image_lookups"):
        assert family in families, sorted(families)
    conversions = [s.value for s in families["shifter_gateway_conversions"].samples if s.name.endswith("_total")]
    assert conversions and conversions[0] >= 1
    lookups = {s.labels["image"]: s.value for s in families["shifter_image_lookups"].samples}
    assert lookups[f"docker:docker.io/{ref}"] == 1


@pytest.mark.parametrize("access", ["loopback", "admins", "either"])
def test_metrics_access_is_what_the_site_chose(cfg, tmp_path, access):
    """A gateway in this process (FastAPI's test client: a caller that is not on loopback),
    with the cluster's munge: loopback-only refuses it; admins takes root's credential and
    refuses a user's."""
    import msgspec
    from fastapi.testclient import TestClient

    import test_gateway_trust as tt
    from imagegw import api

    (tmp_path / "images").mkdir()
    site = msgspec.structs.replace(cfg, image_dir=str(tmp_path / "images"), gateway=msgspec.structs.replace(
        cfg.gateway, metrics_access=access, autoexpire_every=0))
    gateway = api.Gateway(site, tmp_path / "state")
    try:
        web = TestClient(api.create_app(gateway))
        codes = {who: web.get("/metrics", headers={"authentication": tt.credential(who)} if who else {}).status_code
                 for who in ("root", USER, None)}
        if access == "loopback":
            assert codes == {"root": 403, USER: 403, None: 403}
        else:
            assert codes == {"root": 200, USER: 403, None: 401}
        refused = web.get("/metrics", headers={"authentication": tt.credential(USER)})
        assert "\n" not in refused.json()["error"]
    finally:
        gateway.close()

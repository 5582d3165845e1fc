"""Two gateway processes on one PostgreSQL database: 20 concurrent pulls of one
image spread over both become one conversion; a gateway killed (-9) in the middle of a pull
leaves no stuck or half-published image: the other one takes the pull over and finishes it.
The gateways run as the service account on ports of their own, with a scratch image
directory, against a PostgreSQL cluster of the tests' own; munge and the registry are the
local cluster's."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

import gatewaytools as gt
import imagebuilder as ib
from conftest import localcluster
from imagegw import client
from shifter_site import config



@pytest.fixture
def pair(cluster, postgres):
    yield from gateways(postgres.create_database(f"pair{uuid.uuid4().hex[:8]}"), ("a", "b"))


@pytest.fixture
def lone(cluster):
    """One gateway on a PostgreSQL server of this test's own (to stop and start)."""
    import pgcluster

    server = pgcluster.Cluster()
    try:
        yield from ((server, *rest) for rest in gateways(server.url(), ("a",)))
    finally:
        server.stop()


def gateways(database: str, names: tuple[str, ...]):
    from pgcluster import free_port

    account = pwd.getpwnam(localcluster.GATEWAY_USER)
    top = Path(tempfile.mkdtemp(prefix="gw-pair-", dir="/var/tmp"))
    os.chmod(top, 0o755)
    for sub in ("images", "state-a", "state-b"):
        (top / sub).mkdir()
        os.chown(top / sub, account.pw_uid, account.pw_gid)
    ports = {name: free_port() for name in names}
    text = (gt.STATE / "etc/shifter.yaml").read_text().replace(f"image_dir: {gt.STATE}/images",
                                                              f"image_dir: {top}/images")
    (top / "shifter.yaml").write_text(text)
    base = config.load(str(top / "shifter.yaml"), privileged=False)
    cfgs = {name: msgspec.structs.replace(base, gateway=msgspec.structs.replace(
        base.gateway, urls=[f"http://127.0.0.1:{port}"])) for name, port in ports.items()}
    procs: dict[str, subprocess.Popen] = {}

    def start(name: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [str(localcluster.PREFIX / "bin/python"), "-m", "imagegw.service", "--config", str(top / "shifter.yaml"),
             "--state-dir", str(top / f"state-{name}"), "--database", database, "--workers", "2",
             "--listen", f"127.0.0.1:{ports[name]}"],
            user=account.pw_uid, group=account.pw_gid, extra_groups=[], cwd="/",
            env={"PATH": "/usr/bin:/bin"}, stdout=open(top / f"gateway-{name}.log", "ab"), stderr=subprocess.STDOUT)
        procs[name] = proc
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{ports[name]}/openapi.json", timeout=1).raise_for_status()
                return proc
            except httpx.HTTPError:
                assert proc.poll() is None, (top / f"gateway-{name}.log").read_text()
                time.sleep(0.1)
        raise AssertionError(f"gateway {name} did not start")

    for name in names:
        start(name)
    yield cfgs, procs, top, ports
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    shutil.rmtree(top)


def conversions(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        if family.name == "shifter_gateway_conversions":
            return sum(s.value for s in family.samples if s.name.endswith("_total"))
    raise AssertionError(text)


def big_image(mib: int) -> ib.Image:
    entries = [ib.Dir("data")] + [ib.File(f"data/f{i:04d}", os.urandom(1 << 20)) for i in range(mib)]
    return ib.Image([ib.layer_from_entries(entries)], compresslevel=1)


def test_twenty_concurrent_pulls_on_two_gateways_are_one_conversion(pair):
    cfgs, procs, top, ports = pair
    repo = f"pair/one{uuid.uuid4().hex[:8]}"
    image_id = ib.push(gt.REGISTRY, repo, "1", big_image(8)).split(":", 1)[1]
    barrier = threading.Barrier(20)
    answers: list[str] = []

    def ask(i: int) -> None:
        barrier.wait()
        answers.append(client.start_pull(cfgs["ab"[i % 2]], f"{repo}:1")["status"])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(answers) == 20 and all(a in ("INIT", "PULLING", "CONVERSION", "READY") for a in answers), answers
    for name in "ab":
        body = client.pull(cfgs[name], f"{repo}:1", poll=0.1, timeout=180)
        assert body["status"] == "READY" and body["id"] == image_id, body
    assert conversions(ports["a"]) + conversions(ports["b"]) == 1
    images = top / "images"
    assert sorted(p.name for p in images.iterdir()) == [f"{image_id}.json", f"{image_id}.squashfs", "tags"]


def test_a_gateway_killed_mid_pull_is_taken_over_by_the_other(pair):
    cfgs, procs, top, ports = pair
    repo = f"pair/kill{uuid.uuid4().hex[:8]}"
    image_id = ib.push(gt.REGISTRY, repo, "1", big_image(96)).split(":", 1)[1]
    assert client.start_pull(cfgs["a"], f"{repo}:1")["status"] in ("INIT", "PULLING")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        body = client.status(cfgs["b"], f"{repo}:1")  # b sees a's pull through the database
        if body["status"] in ("PULLING", "CONVERSION"):
            break
        assert body["status"] not in ("READY", "FAILURE"), body
        time.sleep(0.02)
    procs["a"].send_signal(signal.SIGKILL)
    procs["a"].wait()
    # b, asked to pull, sees a stuck pull until a's heartbeat is stale, then runs it itself
    body = client.pull(cfgs["b"], f"{repo}:1", poll=0.2, timeout=240)
    assert body["status"] == "READY" and body["id"] == image_id, body
    images = top / "images"
    published = sorted(p.name for p in images.iterdir() if not p.name.startswith("."))
    assert published == [f"{image_id}.json", f"{image_id}.squashfs", "tags"]
    entries = gt.squashfs_entries(images / f"{image_id}.squashfs")
    assert len([p for p in entries if p.startswith("data/")]) == 96
    log = (top / "gateway-b.log").read_text()
    assert "pull_taken_over" in log


def test_database_down_lookups_go_on_and_pulls_say_so_in_one_line(lone):
    server, cfgs, procs, top, ports = lone
    repo = f"pair/down{uuid.uuid4().hex[:8]}"
    image_id = ib.push(gt.REGISTRY, repo, "1", big_image(1)).split(":", 1)[1]
    assert client.pull(cfgs["a"], f"{repo}:1", poll=0.1, timeout=120)["status"] == "READY"
    assert client.lookup(cfgs["a"], f"{repo}:1").id == image_id
    server._as_user(["pg_ctl", "-D", str(server.data), "-w", "-m", "immediate", "stop"])
    assert client.lookup(cfgs["a"], f"{repo}:1").id == image_id  # served from what the gateway has
    with pytest.raises(client.GatewayError) as err:
        client.start_pull(cfgs["a"], f"{repo}-other:1")
    text = str(err.value)
    assert "image database" in text and "cannot be used" in text and "\n" not in text
    with pytest.raises(client.GatewayError) as err:  # never seen READY: the gateway cannot say, and says so
        client.lookup(cfgs["a"], f"{repo}-never:1")
    assert "cannot be used" in str(err.value) and not isinstance(err.value, client.NotFound)
    server._as_user(["pg_ctl", "-D", str(server.data), "-w", "-l", str(server.base / "server.log"), "-o",
                     f"-c listen_addresses=127.0.0.1 -c port={server.port} -c unix_socket_directories=", "start"])
    assert client.lookup(cfgs["a"], f"{repo}:1").id == image_id
    import sqlalchemy as sa

    engine = sa.create_engine(server.url().replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        keys = [r[0] for r in conn.exec_driver_sql("SELECT key FROM images")]
    engine.dispose()
    assert keys == [f"docker.io/{repo}:1"]  # the refused pull wrote nothing
    assert procs["a"].poll() is None

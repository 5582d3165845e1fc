"""A lookup at 10,000 images in the store, on SQLite and on PostgreSQL (target: at most
10 ms), against the same lookup with 10 images in the store, measured in the same run.

For each backend, two gateways in this process (uvicorn on loopback, real HTTP on one kept
connection: the gateway's answer time, not the client's start-up): one whose database holds
10 images, one with 10,000; lookups of published images (a record and a squashfs file in a
scratch image directory) interleaved, N rounds. Munge is left out on both sides
(bench_lookup_auth.py measures it: +0.57 ms). PostgreSQL is a cluster of
this run's own (tests/pgcluster.py: initdb/pg_ctl as the system's postgres account), so run
it as root; the local Slurm cluster is not needed:

    /opt/shifter/bin/python bench/bench_lookup_scale.py [--rounds 300] [--images 10000] [--json FILE]

Exits 1 when a backend's lookup is over the target (after measuring both); with --json
(`make bench`) it exits 0 and the report marks the miss.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import msgspec

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from imagegw import api, client, identity  # noqa: E402
from imagegw import store as st  # noqa: E402
from shifter_site import config, imagefiles  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from bench_lookup_auth import NoAuth, serve  # noqa: E402  (munge is not what this measures)
from results import Results, json_arg  # noqa: E402

PUBLISHED = 20  # images with files: the lookups cycle through them




def site(image_dir: Path, port: int) -> config.Config:
    text = (REPO / "config/shifter.yaml.example").read_text()
    cfg = config.parse(text, "example")
    return msgspec.structs.replace(
        cfg, image_dir=str(image_dir),
        gateway=msgspec.structs.replace(cfg.gateway, urls=[f"http://127.0.0.1:{port}"], autoexpire_every=0))


def fill(where: str, system: str, count: int, image_dir: Path) -> list[str]:
    """`count` READY rows (the first PUBLISHED with files); the published ones' references."""
    store = st.Store(where)
    now = time.time()
    rows = []
    for i in range(count):
        image_id = uuid.UUID(int=i).hex * 2
        rows.append({"system": system, "itype": "docker", "key": f"docker.io/bench/image{i}:1", "tag": f"bench/image{i}:1",
                     "id": image_id, "status": "READY", "status_message": "", "progress": "{}", "last_pull": now,
                     "updated": now, "user_acl": "[]", "group_acl": "[]", "expires": 0, "lookups": 0, "last_used": 0})
    with store._write() as conn:
        conn.execute(st._images.insert(), rows)
    store.close()
    refs = []
    for row in rows[:PUBLISHED]:
        imagefiles.squashfs_path(str(image_dir), row["id"]).write_bytes(b"hsqs")
        imagefiles.write_record(str(image_dir), imagefiles.ImageRecord(id=row["id"], system=system,
                                                                       tag=row["key"], last_pull=now))
        refs.append(f"docker:{row['tag']}")
    return refs


def measure(backend: str, databases: dict[str, str], top: Path, rounds: int) -> dict[str, float]:
    from pgcluster import free_port

    gateways = {}
    for name, where in databases.items():
        image_dir = top / f"{backend}-{name}-images"
        image_dir.mkdir()
        port = free_port()
        cfg = site(image_dir, port)
        refs = fill(where, cfg.system, int(name), image_dir)
        gateway = NoAuth(cfg, top / f"{backend}-{name}-state", database=where)
        gateways[name] = (cfg, refs, serve(api.create_app(gateway), port), gateway)
    times: dict[str, list[float]] = {name: [] for name in gateways}
    order = list(gateways)
    http = httpx.Client(headers={identity.HEADER: "MUNGE:dummy:"})  # one connection: the gateway's time
    for i in range(20 + rounds):
        for name in (order if i % 2 else order[::-1]):
            cfg, refs, _, _ = gateways[name]
            path = client._path(cfg, "lookup", client.parse(cfg, refs[i % len(refs)]))
            start = time.perf_counter()
            answer = http.get(cfg.gateway.urls[0] + path)
            elapsed = time.perf_counter() - start
            assert answer.status_code == 200 and answer.json()["status"] == "READY", answer.text
            if i >= 20:  # the first 20 warm up
                times[name].append(elapsed)
    http.close()
    for _, _, server, gateway in gateways.values():
        server.should_exit = True
        gateway.close()
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=300)
    p.add_argument("--images", type=int, default=10_000)
    p.add_argument("--baseline", type=int, default=10)
    json_arg(p)
    args = p.parse_args()
    res = Results("bench_lookup_scale", f"python bench/bench_lookup_scale.py --rounds {args.rounds} --images "
                  f"{args.images} (root: PostgreSQL runs as the postgres account; no cluster)",
                  f"gateway lookup over HTTP (one kept connection, no munge), {args.images} vs {args.baseline} "
                  f"images in the store, {args.rounds} interleaved rounds, SQLite and PostgreSQL")
    import logging

    from shifter_site import logs
    logs.configure(json=True, verbose=False)
    logging.disable(logging.INFO)
    import pgcluster

    top = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    os.chmod(top, 0o755)
    server = pgcluster.Cluster()
    failed = False
    try:
        sizes = [str(args.baseline), str(args.images)]
        backends = {
            "sqlite": {n: str(top / f"sqlite-{n}.db") for n in sizes},
            "postgresql": {n: server.create_database(f"bench{n}") for n in sizes},
        }
        for backend, databases in backends.items():
            medians = measure(backend, databases, top, args.rounds)
            base, big = medians[sizes[0]], medians[sizes[1]]
            ok = big * 1000 <= 10
            failed |= not ok
            print(f"{backend:10} lookup, median of {args.rounds}: {sizes[1]} images {big * 1000:.2f} ms, "
                  f"{sizes[0]} images {base * 1000:.2f} ms, ratio {big / base:.2f} "
                  f"({'within' if ok else 'OVER'} the 10 ms target)", flush=True)
            res.ratio(f"lookup at {args.images} images vs {args.baseline} images ({backend})", big * 1000,
                      base * 1000, f"{args.baseline} images")
            res.ratio(f"lookup at {args.images} images ({backend}) vs the 10 ms budget", big * 1000, 10.0,
                      "budget", target="<= 1")
        res.write(args.json)
    finally:
        server.stop()
        shutil.rmtree(top, ignore_errors=True)
    return 1 if failed and not args.json else 0


if __name__ == "__main__":
    sys.exit(main())

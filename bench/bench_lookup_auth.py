"""What munge authentication adds to one lookup (target: at most 2 ms).

Two gateways in this process on one copy of the local cluster's image database: one as
shipped (every call carries a munge credential that the gateway decodes), one whose caller
check is replaced by a fixed admin and whose client sends a dummy credential (no munge on
either side). `imagegw.client.lookup` against each, interleaved, N rounds; prints the medians,
the difference in ms and the ratio. Needs the local cluster (munged):

    /opt/shifter/bin/python tools/localcluster.py up && /opt/shifter/bin/python bench/bench_lookup_auth.py
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgspec
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imagegw import api, client, identity  # noqa: E402
from shifter_site import config  # noqa: E402

STATE = Path(os.environ.get("SHIFTER_CLUSTER_STATE", "/var/lib/shifter-cluster"))
ROUNDS = int(os.environ.get("ROUNDS", "300"))


class NoAuth(api.Gateway):
    def caller(self, credential):  # the baseline: nobody is asked who they are
        return identity.Caller(uid=0, gid=0, gids=frozenset({0}), admin=True)


def serve(app, port: int) -> uvicorn.Server:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server


def main() -> int:
    cfg = config.load(str(STATE / "etc/shifter.yaml"), privileged=False)
    state = tempfile.mkdtemp(prefix="bench-auth-")
    try:
        return measure(cfg, state)
    finally:
        shutil.rmtree(state, ignore_errors=True)  # a copy of the image database: nothing to keep


def measure(cfg: config.Config, state: str) -> int:
    with sqlite3.connect(STATE / "gateway/images.db") as src, sqlite3.connect(Path(state) / "images.db") as dst:
        src.backup(dst)
    gateway = api.Gateway(cfg, state)
    ready = [r for r in gateway.store.list(cfg.system, ("READY",)) if r.id and gateway._published(r)]
    if not ready:
        print("no READY image in the local cluster's gateway; pull one first (make demo)")
        return 1
    ref = f"{ready[0].itype}:{ready[0].key}"
    servers = [serve(api.create_app(gateway), 18651), serve(api.create_app(NoAuth(cfg, state)), 18652)]
    with_auth = msgspec.structs.replace(cfg, gateway=msgspec.structs.replace(cfg.gateway, urls=["http://127.0.0.1:18651"]))
    without = msgspec.structs.replace(cfg, gateway=msgspec.structs.replace(cfg.gateway, urls=["http://127.0.0.1:18652"]))
    real_credential = identity.credential
    times: dict[str, list[float]] = {"auth": [], "none": []}
    for _ in range(20):  # warm up both
        client.lookup(with_auth, ref)
    for i in range(ROUNDS):
        for name in (("auth", "none") if i % 2 else ("none", "auth")):
            identity.credential = real_credential if name == "auth" else (lambda cfg: "MUNGE:dummy:")
            start = time.perf_counter()
            client.lookup(with_auth if name == "auth" else without, ref)
            times[name].append(time.perf_counter() - start)
    identity.credential = real_credential
    for server in servers:
        server.should_exit = True
    auth, none = statistics.median(times["auth"]), statistics.median(times["none"])
    print(f"lookup {ref}: {ROUNDS} rounds, median with munge {auth * 1000:.2f} ms, "
          f"without {none * 1000:.2f} ms, added {(auth - none) * 1000:.2f} ms, ratio {auth / none:.2f}")
    if "--json" in sys.argv:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from results import Results
        res = Results("bench_lookup_auth", "python bench/bench_lookup_auth.py (root, cluster up)",
                      "gateway lookup over HTTP with and without munge")
        res.ratio("gateway lookup with munge vs without", auth * 1000, none * 1000, "lookup without munge")
        res.write(sys.argv[sys.argv.index("--json") + 1])
    return 0


if __name__ == "__main__":
    sys.exit(main())

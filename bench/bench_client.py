"""What the gateway client's HTTP client costs a `shifterimg lookup` (one client per process, not one per call).

Before: `imagegw.client._request` called `httpx.request`, which builds a new `httpx.Client`
per call, loading the CA bundle each time even for an http:// gateway. After: one client per
process (`client._http`), the CA bundle loaded only for https gateways. Both variants run
the real `shifterimg lookup` code as whole processes with the same start-up, against the
local cluster's gateway, interleaved, N rounds; the "before" process only swaps `_http` for
a fresh default `httpx.Client()` per call, as `httpx.request` did. Prints the medians and the
ratio. Needs the local cluster with one pulled image:

    /opt/shifter/bin/python bench/bench_client.py [--json FILE]   (root, cluster up)

(ROUNDS=N sets the rounds; `make bench` runs it after the benchmarks that pull images.)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imagegw import client  # noqa: E402
from shifter_site import config  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import Results, json_arg  # noqa: E402

STATE = Path(os.environ.get("SHIFTER_CLUSTER_STATE", "/var/lib/shifter-cluster"))
ROUNDS = int(os.environ.get("ROUNDS", "20"))
PYTHON = "/opt/shifter/bin/python"
RUN = "import sys; from imagegw import cli{patch}; sys.exit(cli.main(['lookup', sys.argv[1]]))"
BEFORE = "; import httpx; from imagegw import client; client._http = lambda url: httpx.Client()"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    json_arg(parser)
    args = parser.parse_args()
    cfg_path = str(STATE / "etc/shifter.yaml")
    cfg = config.load(cfg_path, privileged=False)
    ready = client.images(cfg)
    if not ready:
        print("no READY image in the local cluster's gateway; pull one first (make demo)")
        return 1
    ref = f"{ready[0]['itype']}:{ready[0]['tag']}"
    env = {"PATH": "/usr/bin:/bin", "SHIFTER_CONFIG": cfg_path, "HOME": "/root"}
    codes = {"before": RUN.format(patch=BEFORE), "after": RUN.format(patch="")}
    times: dict[str, list[float]] = {"before": [], "after": []}
    for i in range(ROUNDS + 2):
        for name in (("before", "after") if i % 2 else ("after", "before")):
            start = time.perf_counter()
            subprocess.run([PYTHON, "-c", codes[name], ref], env=env, check=True, capture_output=True)
            if i >= 2:  # two warm-up rounds
                times[name].append(time.perf_counter() - start)
    before, after = statistics.median(times["before"]), statistics.median(times["after"])
    print(f"shifterimg lookup {ref} ({cfg.gateway.urls[0]}): {ROUNDS} rounds, median before {before * 1000:.1f} ms, "
          f"after {after * 1000:.1f} ms, saved {(before - after) * 1000:.1f} ms, ratio {before / after:.2f}")
    # in one process: N calls (a pull polling its status)
    calls = {}
    for name, make in (("before", lambda url: __import__("httpx").Client()), ("after", client._http)):
        saved = client._http
        client._http = make
        start = time.perf_counter()
        for _ in range(ROUNDS):
            client.lookup(cfg, ref)
        calls[name] = (time.perf_counter() - start) / ROUNDS
        client._http = saved
    print(f"client.lookup x{ROUNDS} in one process: before {calls['before'] * 1000:.1f} ms/call, "
          f"after {calls['after'] * 1000:.1f} ms/call, ratio {calls['before'] / calls['after']:.2f}")
    res = Results("bench_client", f"ROUNDS={ROUNDS} python bench/bench_client.py (root, cluster up, an image pulled)",
                  f"shifterimg lookup {ref} against the local cluster's gateway, {ROUNDS} rounds")
    res.ratio("shifterimg lookup (a process), one HTTP client per process vs a client per call", after * 1000,
              before * 1000, "client per call (httpx.request)")
    res.ratio("client.lookup in one process, one HTTP client vs a client per call", calls["after"] * 1000,
              calls["before"] * 1000, "client per call (httpx.request)")
    res.write(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

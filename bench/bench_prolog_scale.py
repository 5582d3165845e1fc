#!/usr/bin/env python3
"""The prolog's time per node against the node count: the local cluster brought up
with N slurmd (N = 3, 8, 16 by default; $SHIFTER_CLUSTER_NODES), one small image pulled, then
`--jobs` image jobs that span every node, one after another (`srun shifter true` in each).
Each node's prolog logs one event per step (load_config, job_info, node_addresses, spec,
use_record, build: shifter_wlm/prolog.py); a node's prolog time is their sum, read from its
slurmd's log. Also timed: a job's submission to its script's start.

On this machine all N slurmd share one 2-core VM, so their prologs run at once on two cores:
what grows with N here is mostly that; the per-node work itself is one file open (the image)
and a few mounts. Root, the cluster down (it brings it up per N and down after).
usage: bench_prolog_scale.py [--nodes 3,8,16] [--jobs 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROLOG_STEPS = ("load_config", "job_info", "node_addresses", "spec", "use_record", "build")
USER = "testuser"
IMAGE = ("bench/prolog", "1")


def prolog_ms(job_id: int, nodes: list[str]) -> list[dict[str, float]]:
    """Each prolog step's ms, for each node that ran this job's prolog."""
    import jobtools as jt

    found = []
    for node in nodes:
        events = [e for e in jt.node_events(node) if e.get("part") == "prolog" and e.get("job") == job_id
                  and e.get("event") in PROLOG_STEPS]
        if events:
            found.append({step: sum(e["ms"] for e in events if e["event"] == step) for step in PROLOG_STEPS})
    return found


def one(count: int, jobs: int) -> dict:
    """At this node count ($SHIFTER_CLUSTER_NODES, set by the caller): up, pull, run, down."""
    sys.path[:0] = [str(REPO / "tools"), str(REPO / "tests")]
    import jobtools as jt
    import localcluster
    from test_slurm_jobs import _push_and_pull

    nodes = list(localcluster.NODES)
    assert len(nodes) == count, (nodes, count)
    os.environ["CI"] = "1"
    localcluster.up()
    try:
        _push_and_pull(*IMAGE, ["PATH=/usr/bin:/bin"])
        script = jt.write_job(USER, "prolog-scale.sl", f"#!/bin/bash\n#SBATCH -N {count} -n {count} -t 5\n"
                              f"#SBATCH --image=docker:{IMAGE[0]}:{IMAGE[1]}\n"
                              "echo start=$(date +%s.%N)\nsrun shifter true\n")
        per_node, starts = [], []
        for _ in range(jobs):
            submitted = time.time()
            job_id, output, _ = jt.sbatch_wait(USER, script)
            jt.wait_gone(job_id)
            starts.append(float(jt.field("start", output)) - submitted)
            found = prolog_ms(int(job_id), nodes)
            if len(found) != count:
                raise SystemExit(f"job {job_id}: prolog events from {len(found)} of {count} nodes")
            per_node += found
    finally:
        localcluster.down()
    totals = [sum(steps.values()) for steps in per_node]
    return {"nodes": count, "prolog_ms": statistics.median(totals), "prolog_max_ms": max(totals),
            "start_s": statistics.median(starts),
            **{f"{step}_ms": statistics.median(steps[step] for steps in per_node) for step in PROLOG_STEPS}}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", default="3,8,16", help="node counts, comma-separated")
    parser.add_argument("--jobs", type=int, default=3, help="all-node jobs per node count")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child: one node count
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON (make bench)")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.jobs)))
        return 0
    rows = []
    for count in [int(n) for n in args.nodes.split(",")]:
        proc = subprocess.run([sys.executable, __file__, "--one", str(count), "--jobs", str(args.jobs)],
                              env={**os.environ, "SHIFTER_CLUSTER_NODES": str(count)}, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{count} nodes: {proc.stderr.strip()[-2000:]}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{count:3} nodes: prolog per node {row['prolog_ms']:7.1f} ms (median; slowest {row['prolog_max_ms']:.0f}), "
              f"submission to script start {row['start_s']:.2f} s; medians per step: "
              + ", ".join(f"{step} {row[step + '_ms']:.1f}" for step in PROLOG_STEPS), flush=True)
    sys.path.insert(0, str(REPO / "bench"))
    from results import Results

    res = Results("bench_prolog_scale", f"python bench/bench_prolog_scale.py --nodes {args.nodes} --jobs {args.jobs} "
                  "(root, cluster down)",
                  f"{args.jobs} all-node image jobs per node count; all slurmd share one 2-core VM")
    first, last = rows[0], rows[-1]
    res.ratio(f"prolog per node, {last['nodes']} nodes vs {first['nodes']}", last["prolog_ms"], first["prolog_ms"],
              f"{first['nodes']} nodes")
    res.series("prolog_scale", **{key: [row[key] for row in rows] for key in rows[0]})
    res.write(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""MPI hello `-N3 -n6` in a container vs native, with and without the swap module, on the
local cluster (target: within 10% of native; run as root with the cluster up, e.g.
`tools/localcluster.py up`).

Two allocations of the three nodes, held while the steps run (what a user's job script does):
  job A  `--image=docker:mpi/mpich:1`                   (the image's own MPICH)
  job B  `--image=docker:mpi/mpich:1 --module=mpich`    (the host's MPICH swapped in)
and five kinds of step, one of each per round, the order rotated every round (so a slow
moment of this shared machine hits every kind alike):
  native      srun --mpi=pmi2 -N3 -n6 ~/mpi_hello_native        (job A; the same source, host MPICH)
  container   srun --mpi=pmi2 -N3 -n6 shifter /app/mpi_hello    (job A)
  swap        srun --mpi=pmi2 -N3 -n6 shifter /app/mpi_hello    (job B)
  true        srun -N3 -n6 /bin/true                            (job A)
  shifter     srun -N3 -n6 shifter /bin/true                    (job A)
Each MPI run's output is checked (one world of 6, each rank once on its node, Allreduce; the
swap run maps the host's library, the container run the image's). The last two split the
container's extra time: what any `srun shifter` step of six tasks costs (the generic step
path, as in bench_srun) and what is left for MPI. Then one `shifter -v` run of each
container kind gives the step path's phases per task (medians over the tasks), and the
prologs' events in slurmd's logs give each node's container build for both jobs: the module's
setup (its root hook, the compatibility check) is paid there, once per node and job.
usage: bench_mpi.py [-n 15] [--no-build] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tools"), str(REPO / "tests"), str(REPO / "bench")]
import localcluster  # noqa: E402
import mpiimages  # noqa: E402
from results import Results  # noqa: E402

USER = "testuser"
IMAGE = "docker:mpi/mpich:1"
NODES = ["n1", "n2", "n3"]
HOST_LIB = "/opt/udiImage/modules/mpich/lib/"  # where the swap module's libmpich is mapped from


def as_user(argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    entry = pwd.getpwnam(USER)
    env = {"PATH": "/usr/bin:/bin", "HOME": entry.pw_dir, "USER": USER,
           "SLURM_CONF": str(localcluster.STATE / "etc/slurm.conf")}
    result = subprocess.run(["runuser", "-u", USER, "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()], *argv],
                            capture_output=True, text=True, cwd=entry.pw_dir)
    if check and result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result


def allocate(name: str, *options: str) -> str:
    """A held allocation of the three nodes (salloc --no-shell); its job id."""
    salloc = subprocess.run(["runuser", "-u", USER, "--", "env", f"SLURM_CONF={localcluster.STATE / 'etc/slurm.conf'}",
                             "PATH=/usr/bin:/bin", "salloc", "--no-shell", "-N3", "-n6", f"--image={IMAGE}",
                             *options, "-J", name], capture_output=True, text=True, timeout=120)
    job = as_user(["squeue", "-h", "-u", USER, "-n", name, "-t", "R", "-o", "%i"]).stdout.split()
    if not job:
        raise SystemExit(f"no allocation {name}: {salloc.stdout}{salloc.stderr}")
    return job[0]


def check(side: str, out: str) -> None:
    if side in ("true", "shifter"):
        return
    ranks = mpiimages.check_world(out, NODES, 2)
    swapped = {r["mapped"].startswith(HOST_LIB) for r in ranks}
    if swapped != {side == "swap"}:
        raise SystemExit(f"{side}: libmpich mapped from {sorted({r['mapped'] for r in ranks})}; "
                         f"expected {'the module' if side == 'swap' else 'the image'}'s")


def phases(argv: list[str]) -> dict[str, float]:
    """`shifter -v`: the step path's phase marks of each task (shifter_wlm/task.py), medians
    over the six tasks."""
    err = as_user([*argv[:-1], "-v", argv[-1]] if argv[-2] == "shifter" else argv).stderr
    found: dict[str, list[float]] = {}
    for line in err.splitlines():
        if "step path (ms):" in line:
            for item in line.split("step path (ms):", 1)[1].split(","):
                name, value = item.split()
                found.setdefault(name, []).append(float(value))
    return {name: statistics.median(values) for name, values in found.items()}


def log_offsets() -> dict[Path, int]:
    """Where each node's slurmd log ends now: the prologs of this run's jobs are logged after."""
    return {log: log.stat().st_size for log in (localcluster.STATE / "log").glob("slurmd-n*.log")}


def prolog_ms(offsets: dict[Path, int], job: int) -> tuple[float, float]:
    """(the prolog's `build` of this job's container, its module root hooks), medians over the
    nodes, from the prolog's events in each slurmd's log since `offsets`."""
    events = []
    for log, offset in offsets.items():
        with open(log, "rb") as handle:
            handle.seek(offset)
            for line in handle.read().decode(errors="replace").splitlines():
                start = line.find('{"')
                if start >= 0 and '"event": "build' in line:
                    try:
                        events.append(json.loads(line[start:]))
                    except ValueError:
                        continue
    builds = [e for e in events if e.get("event") == "build" and e.get("job") == job and e.get("ok")]
    keys = {e["key"] for e in builds}
    hooks = [e["ms"] for e in events if e.get("event") == "build.root_hooks" and e.get("key") in keys]
    return (statistics.median(e["ms"] for e in builds) if builds else float("nan"),
            statistics.median(hooks) if hooks else 0.0)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=15, help="rounds (each runs every kind of step once)")
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON (make bench)")
    args = parser.parse_args()
    entry = pwd.getpwnam(USER)
    native = Path(entry.pw_dir) / "mpi_hello_native"
    mpiimages.compile_hello("mpich", native)
    os.chown(native, entry.pw_uid, entry.pw_gid)
    if not args.no_build:
        mpiimages.push_mpi_image("mpich", "mpi/mpich", "1")
        as_user([str(localcluster.PREFIX / "bin/shifterimg"), "pull", IMAGE])
    jobs = []
    offsets = log_offsets()
    try:
        plain = allocate("bench_mpi")
        jobs.append(plain)
        swap = allocate("bench_mpi_swap", "--module=mpich")
        jobs.append(swap)
        step = ["srun", "--mpi=pmi2", "-N3", "-n6"]
        sides = {"native": [*step, f"--jobid={plain}", str(native)],
                 "container": [*step, f"--jobid={plain}", "shifter", "/app/mpi_hello"],
                 "swap": [*step, f"--jobid={swap}", "shifter", "/app/mpi_hello"],
                 "true": ["srun", f"--jobid={plain}", "-N3", "-n6", "/bin/true"],
                 "shifter": ["srun", f"--jobid={plain}", "-N3", "-n6", "shifter", "/bin/true"]}
        for side, argv in sides.items():  # once each, untimed: first-use costs (page cache, loop device)
            check(side, as_user(argv).stdout)
        times: dict[str, list[float]] = {side: [] for side in sides}
        order = list(sides)
        for i in range(args.n):
            for side in order[i % len(order):] + order[:i % len(order)]:
                start = time.perf_counter()
                out = as_user(sides[side]).stdout
                times[side].append((time.perf_counter() - start) * 1000)
                check(side, out)
        marks = {side: phases(sides[side]) for side in ("container", "swap")}
        again = allocate("bench_mpi_swap2", "--module=mpich")  # the same image again: the check's kept verdict
        jobs.append(again)
        prolog = {"plain": prolog_ms(offsets, int(plain)), "swap": prolog_ms(offsets, int(swap)),
                  "again": prolog_ms(offsets, int(again))}
    finally:
        for job in jobs:
            localcluster.slurm("scancel", job, check=False)
    med = {side: statistics.median(values) for side, values in times.items()}
    spread = {side: (statistics.quantiles(values, n=4)[0], statistics.quantiles(values, n=4)[2])
              for side, values in times.items()}
    for side in sides:
        print(f"{side:10} median {med[side]:6.1f} ms  (quartiles {spread[side][0]:.1f} .. {spread[side][1]:.1f}; "
              f"{args.n} runs)  {' '.join(sides[side][:1] + sides[side][2:])}")
    step_extra = med["shifter"] - med["true"]
    for side in ("container", "swap"):
        extra = med[side] - med["native"]
        print(f"{side}/native = {med[side] / med['native']:.3f} ({extra:+.1f} ms): the step path of six tasks "
              f"{step_extra:+.1f} ms (shifter true vs true), the rest {extra - step_extra:+.1f} ms")
        print(f"   {side}: step path per task (ms, shifter -v, median of 6 tasks): "
              + ", ".join(f"{k} {v:.2f}" for k, v in marks[side].items()))
    print(f"prolog per node (median of the nodes' build events): {prolog['plain'][0]:.0f} ms without a module, "
          f"{prolog['swap'][0]:.0f} ms with --module=mpich, of which its root hook (the compatibility check) "
          f"{prolog['swap'][1]:.0f} ms; the next job with the image {prolog['again'][0]:.0f} ms "
          f"(root hook {prolog['again'][1]:.0f} ms)")
    res = Results("bench_mpi", f"python bench/bench_mpi.py -n {args.n} (root, cluster up)",
                  "MPICH hello -N3 -n6 over pmi2 on the local cluster, two held allocations, "
                  f"{args.n} rounds, each kind once per round in rotated order")
    for side, what in (("container", "the image's MPICH"), ("swap", "the host's MPICH swapped in (--module=mpich)")):
        res.ratio(f"MPI hello -N3 -n6 in the container, {what}, vs native", med[side], med["native"],
                  "native srun", target="<= 1.1")
        res.data["ratios"][-1]["overhead_ms"] = med[side] - med["native"]
    res.ratio("srun -N3 -n6 shifter /bin/true vs srun -N3 -n6 /bin/true (the generic step path)",
              med["shifter"], med["true"], "plain srun")
    res.data["ratios"][-1]["overhead_ms"] = step_extra
    res.ratio("prolog per node, image job with --module=mpich vs without (the module's setup)",
              prolog["swap"][0], prolog["plain"][0], "prolog without a module")
    res.data["ratios"][-1]["overhead_ms"] = prolog["swap"][0] - prolog["plain"][0]
    res.ratio("prolog per node, the next job with the image and --module=mpich vs without a module",
              prolog["again"][0], prolog["plain"][0], "prolog without a module")
    res.data["ratios"][-1]["overhead_ms"] = prolog["again"][0] - prolog["plain"][0]
    res.series("mpi_prolog", job=["plain", "swap", "again"],
               build_ms=[prolog[j][0] for j in ("plain", "swap", "again")],
               root_hooks_ms=[prolog[j][1] for j in ("plain", "swap", "again")])
    res.series("mpi_times", side=list(med), median_ms=list(med.values()),
               q1_ms=[spread[s][0] for s in med], q3_ms=[spread[s][1] for s in med])
    for side in ("container", "swap"):
        res.series(f"mpi_phases_{side}", phase=list(marks[side]), ms=list(marks[side].values()))
    res.write(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""MPI hello `-N3 -n6` in a container vs native, on the local cluster (issue 16; run as root
with the cluster up, e.g. `tools/localcluster.py up`, or through /work/coord/cluster-run).

Inside one allocation (`salloc -N3 -n6 --image=docker:mpi/mpich:1`), alternately:
  native:    srun --mpi=pmi2 -N3 -n6 ~/mpi_hello_native   (the same source, host MPICH)
  container: srun --mpi=pmi2 -N3 -n6 shifter /app/mpi_hello
Each run's output is checked (one world of 6, each rank once, Allreduce); prints the medians
and the ratio. Target: container launch overhead <= 10% of native. The image is built and
pushed by tests/mpiimages.py (pass --no-build when it is already pulled).
usage: bench_mpi.py [-n 10] [--no-build]
"""

from __future__ import annotations

import argparse
import os
import pwd
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tools"), str(REPO / "tests")]
import localcluster  # noqa: E402
import mpiimages  # noqa: E402

USER = "testuser"
IMAGE = "docker:mpi/mpich:1"
NODES = ["n1", "n2", "n3"]


def as_user(argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    entry = pwd.getpwnam(USER)
    env = {"PATH": "/usr/bin:/bin", "HOME": entry.pw_dir, "USER": USER,
           "SLURM_CONF": str(localcluster.STATE / "etc/slurm.conf")}
    result = subprocess.run(["runuser", "-u", USER, "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()], *argv],
                            capture_output=True, text=True, cwd=entry.pw_dir)
    if check and result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=10)
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
    # one allocation, steps inside it: what a user's job script does
    alloc = subprocess.Popen(["runuser", "-u", USER, "--", "env", f"SLURM_CONF={localcluster.STATE / 'etc/slurm.conf'}",
                              "PATH=/usr/bin:/bin", "salloc", "--no-shell", "-N3", "-n6", f"--image={IMAGE}", "-J", "bench_mpi"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    alloc.wait(timeout=60)
    job = as_user(["squeue", "-h", "-u", USER, "-n", "bench_mpi", "-o", "%i"]).stdout.split()
    if not job:
        raise SystemExit(f"no allocation: {alloc.stdout.read() if alloc.stdout else ''}")
    job_id = job[0]
    sides = {"native": ["srun", f"--jobid={job_id}", "--mpi=pmi2", "-N3", "-n6", str(native)],
             "container": ["srun", f"--jobid={job_id}", "--mpi=pmi2", "-N3", "-n6", "shifter", "/app/mpi_hello"]}
    times: dict[str, list[float]] = {"native": [], "container": []}
    try:
        for i in range(args.n):
            for side, argv in sides.items():
                start = time.perf_counter()
                out = as_user(argv).stdout
                times[side].append((time.perf_counter() - start) * 1000)
                mpiimages.check_world(out, NODES, 2)
    finally:
        localcluster.slurm("scancel", job_id, check=False)
    n, c = statistics.median(times["native"]), statistics.median(times["container"])
    print(f"mpi hello -N3 -n6 (pmi2): native {n:.0f} ms, container {c:.0f} ms (median of {args.n}); "
          f"container/native = {c / n:.3f}; overhead {c - n:+.0f} ms")
    sys.path.insert(0, str(REPO / "bench"))
    from results import Results
    res = Results("bench_mpi", f"python bench/bench_mpi.py -n {args.n} (root, cluster up; cluster-run)",
                  "MPICH hello -N3 -n6 over pmi2 on the local cluster")
    res.ratio("MPI hello -N3 -n6 in the container vs native", c, n, "native srun", target="<= 1.1")
    res.write(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

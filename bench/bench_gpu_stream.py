#!/usr/bin/env python3
"""GPU STREAM bandwidth natively vs inside a shifter container (target: within 1%).

    python bench/bench_gpu_stream.py --app /path/stream --image id:<64 hex> [--module gpu] [-n 5]

`--app` is bench/gpu/stream.cu compiled on this host (`nvcc -O3 -cudart static`); the image
holds the same binary at /app/stream (bench/gpu/device.sh makes both, the image and a site
config in $SHIFTER_CONFIG). Runs native and container alternately n times each and prints the
median bandwidth of each kernel and the container/native ratio. Where there is no NVIDIA GPU it
prints `SKIP: <reason>` and exits 0 (with `--json`, the JSON says so: the report shows the row
as not run, with the reason).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from results import Results, json_arg  # noqa: E402
LINE = re.compile(r"stream kernel=(\w+) .*best_gbs=([0-9.]+)")


def no_gpu_reason() -> str | None:
    """Why this machine cannot run the benchmark, or None. The driver must be loaded
    (/proc/driver/nvidia/version): the local cluster's fake GPUs are device files only."""
    if not os.path.exists("/proc/driver/nvidia/version"):
        return "no NVIDIA driver loaded here: /proc/driver/nvidia/version is missing"
    for dev in ("/dev/nvidiactl", "/dev/nvidia0"):
        if not os.path.exists(dev):
            return f"no NVIDIA GPU here: {dev} is missing"
    return None


def run(argv: list[str], what: str) -> dict[str, float]:
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
    found = {m[1]: float(m[2]) for m in LINE.finditer(proc.stdout)}
    if proc.returncode != 0 or "stream ok" not in proc.stdout or not found:
        raise SystemExit(f"{what} STREAM failed (exit {proc.returncode}): "
                         f"{(proc.stdout + proc.stderr).strip().splitlines()[-3:]}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", help="the STREAM binary on the host (required with a GPU)")
    parser.add_argument("--image", help="id:<image id> holding /app/stream (required with a GPU)")
    parser.add_argument("--module", default="gpu")
    parser.add_argument("-n", type=int, default=5)
    json_arg(parser)
    args = parser.parse_args()
    res = Results("bench_gpu_stream", f"python bench/bench_gpu_stream.py --app APP --image IMAGE -n {args.n} "
                  "(bench/gpu/device.sh makes APP and IMAGE)",
                  f"STREAM natively and in the container (--module={args.module}), {args.n} alternating runs")
    reason = no_gpu_reason()
    if reason:
        print(f"SKIP: {reason}")
        res.skipped(f"no GPU ({reason})")
        res.write(args.json)
        return 0
    if not args.app or not args.image:
        parser.error("--app and --image are needed where there is a GPU (bench/gpu/device.sh makes both)")
    shifter = [sys.executable, "-m", "runtime.cli", f"--image={args.image}", f"--module={args.module}", "/app/stream"]
    native: dict[str, list[float]] = {}
    container: dict[str, list[float]] = {}
    for i in range(args.n):
        for side, argv, store in (("native", [args.app], native), ("container", shifter, container)):
            for kernel, gbs in run(argv, side).items():
                store.setdefault(kernel, []).append(gbs)
                print(f"run {i + 1} {side} {kernel} {gbs:.1f} GB/s", flush=True)
    for kernel in sorted(native):
        n, c = statistics.median(native[kernel]), statistics.median(container.get(kernel, [0.0]))
        print(f"RATIO kernel={kernel} native_gbs={n:.1f} container_gbs={c:.1f} container/native={c / n:.4f} "
              f"runs={len(native[kernel])}+{len(container.get(kernel, []))}")
        res.ratio(f"STREAM {kernel} bandwidth, container vs native", c, n, "native", unit="GB/s",
                  target=">= 0.99", lower_is_better=False)
    res.write(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

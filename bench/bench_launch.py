#!/usr/bin/env python3
"""Launch cost of `shifter` (as root: run it as root; makes its own image and config).

    /opt/shifter-rt/bin/python bench/bench_launch.py [-n 30]

Prints, run side by side (interleaved) in one process on the same squashfs:
  1. `/bin/true` through `shifter` as testuser (rootless) vs `ch-run` (charliecloud) as testuser;
  2. as root, a launch while the image's loop device is already attached (warm) vs a cold one.
Ratios, not absolute times, are the result: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from images import make_image, write_config  # noqa: E402

SHIFTER = str(Path(sys.executable).with_name("shifter"))


def timed(argv, env=None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = (time.perf_counter() - start) * 1000
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed: {proc.stderr.strip()}")
    return elapsed


def as_user(user, argv, extra=()):
    return ["runuser", "-u", user, "--", "env", "-i", "PATH=/usr/bin:/bin", f"USER={user}", *extra, *argv]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=30)
    n = parser.parse_args().n
    if os.geteuid() != 0:
        raise SystemExit("run as root (it switches to testuser and restores /dev/fuse)")
    base = Path(tempfile.mkdtemp(prefix="shifter-bench-"))
    os.chmod(base, 0o755)
    fuse_mode = os.stat("/dev/fuse").st_mode & 0o7777
    os.chmod("/dev/fuse", 0o666)
    holder = None
    try:
        record = make_image(base / "images", env=("PATH=/usr/bin:/bin",))
        run = base / "run"
        run.mkdir(mode=0o755)
        cfg = write_config(base / "shifter.yaml", base / "images", run)
        sqfs = str(base / "images" / f"{record.id}.squashfs")
        user_shifter = as_user("testuser", [SHIFTER, f"--image=id:{record.id}", "/bin/true"],
                               [f"SHIFTER_CONFIG={cfg}"])
        user_chrun = as_user("testuser", ["ch-run", sqfs, "--", "/bin/true"])
        root_env = {"PATH": "/usr/bin:/bin", "SHIFTER_CONFIG": str(cfg)}
        root_shifter = [SHIFTER, f"--image=id:{record.id}", "/bin/true"]
        for argv in (user_shifter, user_chrun, root_shifter):
            timed(argv, root_env if argv is root_shifter else None)  # warm the page cache
        a, b = [], []
        for _ in range(n):
            a.append(timed(user_shifter))
            b.append(timed(user_chrun))
        s, c = statistics.median(a), statistics.median(b)
        print(f"user  shifter (rootless) /bin/true: median {s:6.1f} ms")
        print(f"user  ch-run             /bin/true: median {c:6.1f} ms")
        print(f"ratio shifter/ch-run:               {s / c:.2f}  (target <= 1.00)")
        # root: cold (no loop device attached) vs warm (another container holds the image)
        from runtime import build, spec as specs, teardown
        from shifter_site import config
        site = config.load(str(cfg))
        cold, warm = [], []
        import pwd
        user = specs.user_from_host(pwd.getpwnam("testuser").pw_uid, 31)
        for _ in range(n):
            cold.append(timed(root_shifter, root_env))
            holder = build.build(specs.from_config(site, record, user), str(run))
            warm.append(timed(root_shifter, root_env))
            teardown.teardown(str(run), holder.key)
            holder = None
            deadline = time.monotonic() + 2
            while record.id in subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.01)
        wc, ww = statistics.median(cold), statistics.median(warm)
        print(f"root  first launch (cold loop):     median {wc:6.1f} ms")
        print(f"root  second launch (warm loop):    median {ww:6.1f} ms")
        print(f"ratio warm/cold:                    {ww / wc:.2f}")
    finally:
        if holder:
            from runtime import teardown
            teardown.teardown(str(base / "run"), holder.key)
        os.chmod("/dev/fuse", fuse_mode)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

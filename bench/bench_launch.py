#!/usr/bin/env python3
"""Launch cost of `shifter` (as root: run it as root; makes its own image and config).

    /opt/shifter-rt/bin/python bench/bench_launch.py [-n 30]

Prints, run side by side (interleaved) in one process on the same squashfs:
  1. `/bin/true` through `shifter` as testuser (rootless) vs `ch-run` (charliecloud) as testuser,
     and what each start-up trim buys: the same launch with Python's `site` (the
     launcher without -S, runtime/launcher.py), with high-level `squashfuse` instead of
     `squashfuse_ll`, and without reading the command before exec (runtime/prefetch.py);
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
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "bench")]

from images import make_image, write_config  # noqa: E402
from results import Results, json_arg  # noqa: E402

SHIFTER = str(Path(sys.executable).with_name("shifter"))
# the same launch without one of the trims: argv[1] "site" (Python's site on: no -S),
# "squashfuse" (the high-level squashfuse instead of squashfuse_ll) and/or "prefetch" (exec
# pages the command in through FUSE, nothing read before)
VARIANT = """import sys
undo = sys.argv.pop(1)
sys.path.extend(%r)
if "squashfuse" in undo:
    from runtime import rootless
    rootless.check_host = lambda: "/usr/bin/squashfuse"
if "prefetch" in undo:
    from runtime import prefetch
    prefetch.warm = lambda path: None
from shifter_wlm.batch import main
sys.argv[0] = "shifter"
sys.exit(main())
"""


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
    json_arg(parser)
    args = parser.parse_args()
    n = args.n
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
        import sysconfig
        variant = base / "variant.py"
        variant.write_text(VARIANT % ([sysconfig.get_paths()["purelib"]],))
        os.chmod(variant, 0o644)
        python = str(Path(sys.executable))
        user_site = as_user("testuser", [python, str(variant), "site", f"--image=id:{record.id}", "/bin/true"],
                            [f"SHIFTER_CONFIG={cfg}"])
        user_hl = as_user("testuser", [python, "-S", str(variant), "squashfuse", f"--image=id:{record.id}",
                                       "/bin/true"], [f"SHIFTER_CONFIG={cfg}"])
        user_noprefetch = as_user("testuser", [python, "-S", str(variant), "prefetch", f"--image=id:{record.id}",
                                               "/bin/true"], [f"SHIFTER_CONFIG={cfg}"])
        cases = {"shifter": user_shifter, "ch-run": user_chrun, "shifter with site": user_site,
                 "shifter with squashfuse": user_hl, "shifter without prefetch": user_noprefetch}
        for argv in (*cases.values(), root_shifter):
            timed(argv, root_env if argv is root_shifter else None)  # warm the page cache
        times: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(n):
            for name, argv in cases.items():
                times[name].append(timed(argv))
        med = {k: statistics.median(v) for k, v in times.items()}
        s, c = med["shifter"], med["ch-run"]
        for name, value in med.items():
            print(f"user  {name:24} /bin/true: median {value:6.1f} ms")
        print(f"ratio shifter/ch-run:               {s / c:.2f}  (target <= 1.25)")
        print(f"python -S bought:                   {med['shifter with site'] - s:+.1f} ms "
              f"({med['shifter with site'] / s:.3f}x)")
        print(f"squashfuse_ll bought:               {med['shifter with squashfuse'] - s:+.1f} ms "
              f"({med['shifter with squashfuse'] / s:.3f}x)")
        print(f"reading the command first bought:   {med['shifter without prefetch'] - s:+.1f} ms "
              f"({med['shifter without prefetch'] / s:.3f}x; without it vs ch-run: "
              f"{med['shifter without prefetch'] / c:.2f})")
        res = Results("bench_launch", f"python bench/bench_launch.py -n {n} (root)",
                      "rootless /bin/true as testuser on a busybox image")
        res.ratio("rootless launch vs ch-run", s, c, "ch-run", target="<= 1.25")
        res.ratio("launch with Python's site (no -S) vs ours", med["shifter with site"], s, "shifter")
        res.ratio("launch with squashfuse (not _ll) vs ours", med["shifter with squashfuse"], s, "shifter")
        res.ratio("launch without reading the command before exec vs ours", med["shifter without prefetch"], s,
                  "shifter")
        res.ratio("rootless launch without reading the command first vs ch-run", med["shifter without prefetch"], c,
                  "ch-run")
        # root: cold (no loop device attached) vs warm (another container holds the image)
        from runtime import build, spec as specs, teardown
        from shifter_site import config, logs
        logs.configure(json=True, verbose=False, stream=open(os.devnull, "w"))  # the builds' events
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
        res.ratio("root launch, warm loop device vs cold", ww, wc, "shifter cold")
        res.write(args.json)
    finally:
        if holder:
            from runtime import teardown
            teardown.teardown(str(base / "run"), holder.key)
        os.chmod("/dev/fuse", fuse_mode)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

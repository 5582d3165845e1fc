#!/opt/shifter/bin/python
"""A launch by name, `shifter --image=docker:NAME /bin/true` as a plain user (rootless), against
the same launch by id, on the local cluster (root; the cluster up):

  by id          --image=id:<64 hex>
  by name        --image=docker:NAME, a public image: the gateway's tag index
                 (shifter_site.tagindex), one small file read
  by name (gw)   --image=docker:NAME2, the same content under a name whose index entry the
                 bench removed: the gateway's HTTP lookup, i.e. every launch by name before
                 the tag index (and, today, a private image's)

Runs are interleaved and medians compared (the machine is shared). Target:
by name <= 1.2x by id.

usage (root):  /opt/shifter/bin/python tools/localcluster.py up && \
                  /opt/shifter/bin/python bench/bench_byname.py -n 15
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "tools"), str(REPO / "bench")]

import imagebuilder as ib  # noqa: E402
import images  # noqa: E402
import localcluster  # noqa: E402
from results import Results, json_arg  # noqa: E402

from shifter_site import tagindex  # noqa: E402

USER = "testuser"
SHIFTER = str(localcluster.PREFIX / "bin/shifter")
SHIFTERIMG = str(localcluster.PREFIX / "bin/shifterimg")
IMAGES = str(localcluster.STATE / "images")


def as_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", USER, "--", "env", "-i", "PATH=/usr/bin:/bin", f"USER={USER}",
            f"HOME={Path('~' + USER).expanduser()}", *argv]


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd="/")
    elapsed = (time.perf_counter() - start) * 1000
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[-3:])} failed: {proc.stderr.strip()}")
    return elapsed


def pushed_and_pulled(image: ib.Image, repo: str) -> str:
    digest = ib.push(localcluster.REGISTRY, repo, "1", image)
    out = subprocess.run(as_user([SHIFTERIMG, "pull", f"{repo}:1"]), capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"shifterimg pull {repo}:1 failed: {out.stderr.strip()}")
    return digest.split(":", 1)[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=15)
    json_arg(parser)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root on the local cluster (tools/localcluster.py up), see --help")
    root = Path(tempfile.mkdtemp())
    try:
        images.make_root(root)
        (root / "marker").write_text(uuid.uuid4().hex)
        image = ib.Image([ib.layer_from_dir(root)], config={"Env": ["PATH=/usr/bin:/bin"]})
    finally:
        shutil.rmtree(root)
    tag = uuid.uuid4().hex[:8]
    image_id = pushed_and_pulled(image, f"bench/byname{tag}")
    same = pushed_and_pulled(image, f"bench/bygw{tag}")  # same content, same id, another name
    gw_entry = tagindex.entry_path(IMAGES, "docker", f"docker.io/bench/bygw{tag}:1")
    os.unlink(gw_entry)  # this name now goes to the gateway, as every name did before the index
    assert same == image_id
    fuse_mode = stat.S_IMODE(os.stat("/dev/fuse").st_mode)
    os.chmod("/dev/fuse", 0o666)
    cases = {"by id": as_user([SHIFTER, f"--image=id:{image_id}", "/bin/true"]),
             "by name (index)": as_user([SHIFTER, f"--image=docker:bench/byname{tag}:1", "/bin/true"]),
             "by name (gateway)": as_user([SHIFTER, f"--image=docker:bench/bygw{tag}:1", "/bin/true"])}
    times: dict[str, list[float]] = {k: [] for k in cases}
    try:
        for argv in cases.values():
            timed(argv)  # the user's caches of validated loads, the page cache
        for _ in range(args.n):
            for name, argv in cases.items():
                times[name].append(timed(argv))
    finally:
        os.chmod("/dev/fuse", fuse_mode)
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, value in med.items():
        print(f"{name:18} median {value:6.1f} ms")
    res = Results("bench_byname", f"python bench/bench_byname.py -n {args.n} (root, cluster up)",
                  "rootless launch of /bin/true as testuser")
    r1 = res.ratio("launch by name (tag index) vs by id", med["by name (index)"], med["by id"], "shifter by id",
                   target="<= 1.2")
    r2 = res.ratio("launch by name via the gateway (before) vs by id", med["by name (gateway)"], med["by id"],
                   "shifter by id")
    print(f"ratio by name (index) / by id:   {r1:.2f}  (target <= 1.2: {'met' if r1 <= 1.2 else 'NOT met'})")
    print(f"ratio by name (gateway) / by id: {r2:.2f}  (the path before the tag index)")
    res.write(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

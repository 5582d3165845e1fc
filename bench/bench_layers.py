#!/opt/shifter/bin/python
"""Layer conversion speed by layer compression: the same layer (the Debian minbase test tree,
one tar) as a gzip blob (level 6, what Docker and buildah write), a zstd blob (level 3,
`buildah push --compression-format zstd`) and an uncompressed tar, each converted the way the
gateway does (imagegw.squash.convert: one-pass flatten -> tar2sqfs zstd-3), and each merged
alone into /dev/null (the gateway's own share: decompression + tar parsing). Runs are
interleaved and medians printed with the ratio gzip / zstd (above 1: zstd layers are faster).

usage (no cluster needed; debootstrap tree cached by the tests):
    /opt/shifter/bin/python bench/bench_layers.py [--runs 3]
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import zstandard

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests"), str(REPO_ROOT / "bench")]  # this checkout

import imagebuilder as ib  # noqa: E402
from imagegw import layers, squash  # noqa: E402
from results import Results, json_arg  # noqa: E402


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    json_arg(ap)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-layers-", dir="/var/tmp"))
    try:
        tar = ib.layer_from_dir(ib.debian_tree())
        (work / "tar").write_bytes(tar)
        (work / "gzip").write_bytes(gzip.compress(tar, compresslevel=6, mtime=0))
        (work / "zstd").write_bytes(zstandard.ZstdCompressor(level=3).compress(tar))
        del tar  # measured from the files only
        blobs = {name: (work / name).stat().st_size for name in ("gzip", "zstd", "tar")}
        print(f"layer: Debian minbase, {blobs['tar'] / 2**20:.1f} MiB tar; gzip-6 {blobs['gzip'] / 2**20:.1f} MiB, "
              f"zstd-3 {blobs['zstd'] / 2**20:.1f} MiB")
        times: dict[str, list[float]] = {}
        for i in range(args.runs):  # interleaved, so machine noise hits every case alike
            for name in blobs:
                def merge(name=name):
                    with open("/dev/null", "wb") as null:
                        layers.flatten([work / name], null)
                times.setdefault(f"merge {name}", []).append(timed(merge))
                times.setdefault(f"convert {name}", []).append(
                    timed(lambda name=name: squash.convert([work / name], work / f"{name}-{i}.squashfs")))
        med = {k: statistics.median(v) for k, v in times.items()}
        for name, value in med.items():
            print(f"{name:14} {value:6.2f} s   (runs: {', '.join(f'{t:.2f}' for t in times[name])})")
        same = {(work / f"{name}-0.squashfs").read_bytes() for name in blobs}
        print(f"squashfs identical for the three layer compressions: {len(same) == 1}")
        print(f"merge:   gzip / zstd = {med['merge gzip'] / med['merge zstd']:.2f}x  "
              f"(gzip / tar = {med['merge gzip'] / med['merge tar']:.2f}x)")
        print(f"convert: gzip / zstd = {med['convert gzip'] / med['convert zstd']:.2f}x  "
              f"(gzip / tar = {med['convert gzip'] / med['convert tar']:.2f}x)")
        res = Results("bench_layers", f"python bench/bench_layers.py --runs {args.runs}",
                      "one Debian minbase layer, gzip-6 / zstd-3 / plain tar")
        res.ratio("convert a gzip layer vs a plain tar", med["convert gzip"], med["convert tar"], "tar layer", "s")
        res.ratio("convert a zstd layer vs a plain tar", med["convert zstd"], med["convert tar"], "tar layer", "s")
        res.write(args.json)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/opt/shifter/bin/python
"""Big images: conversion time and peak memory against image size (targets: >= 5x faster than
skopeo+umoci+mksquashfs, peak RSS under 256 MiB whatever the size).

For each size, a generated image (8 gzip layers, ~30 files per MiB as in the issue's 2 GB /
60,000-file image, later layers deleting and rewriting some earlier files) in an OCI layout
on local disk, converted side by side (interleaved, medians of --runs):

  ours        imagegw.squash.convert: one-pass merge of the gzip layers -> tar2sqfs (zstd-3),
              in a child process whose peak RSS (and tar2sqfs's) is measured
  ours -jN    the same with tar2sqfs compressing on N threads (--jobs; ours leaves tar2sqfs its
              default, a compressor thread per CPU)
  floor       zcat of every layer + tar2sqfs of the already-merged tar alone
  classic     umoci unpack + mksquashfs (defaults: gzip, all cores); skopeo's transport is
              left out here (no registry: the layers are already on disk; bench_pull.py has it)

usage (root; no cluster, but CPU-heavy: run it under the cluster lock):
    /opt/shifter/bin/python bench/bench_bigimage.py [--sizes 64,256] [--runs 1]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import isal.igzip as igzip

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from results import Results, json_arg  # noqa: E402

FILES_PER_MIB = 30  # the image: 60,000 files in 2 GB
LAYERS = 8
WORDS = b"import numpy scipy shared object library python module data lustre gpfs node rank " * 64


def content(rng: random.Random, size: int) -> bytes:
    """About 2:1 compressible, like binaries and text mixed."""
    half = size // 2
    start = rng.randrange(len(WORDS) - min(half, len(WORDS) - 1)) if half < len(WORDS) else 0
    text = (WORDS[start:] * (half // len(WORDS) + 2))[:half]
    return text + rng.randbytes(size - half)


def make_image(top: Path, size_mib: int, seed: int = 19) -> tuple[list[Path], int]:
    """An OCI layout at top (tag `1`); returns (layer blob paths, number of files)."""
    rng = random.Random(seed)
    files = size_mib * FILES_PER_MIB
    mean = size_mib * 2**20 // files
    blobs = top / "blobs/sha256"
    blobs.mkdir(parents=True)
    paths, layer_descs, diff_ids, written = [], [], [], []

    def put(data: bytes) -> tuple[str, int]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return f"sha256:{digest}", len(data)

    per_layer = files // LAYERS
    for k in range(LAYERS):
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            dirs = set()
            for i in range(per_layer):
                name = f"opt/stack/l{k}/d{i % 97:02d}/f{i:06d}.dat"
                d = os.path.dirname(name)
                for parent in (d.split("/")[:j + 1] for j in range(len(d.split("/")))):
                    p = "/".join(parent)
                    if p not in dirs:
                        dirs.add(p)
                        info = tarfile.TarInfo(p)
                        info.type, info.mode = tarfile.DIRTYPE, 0o755
                        tar.addfile(info)
                data = content(rng, max(1, int(rng.expovariate(1 / mean))))
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
                written.append(name)
            if k:  # delete 1% of what the layer before wrote (whiteouts)
                for name in rng.sample([n for n in written if f"/l{k - 1}/" in n], per_layer // 100):
                    info = tarfile.TarInfo(os.path.join(os.path.dirname(name), ".wh." + os.path.basename(name)))
                    tar.addfile(info)
        data = raw.getvalue()
        diff_ids.append("sha256:" + hashlib.sha256(data).hexdigest())
        digest, size = put(igzip.compress(data, compresslevel=1))
        layer_descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest,
                            "size": size})
        paths.append(blobs / digest.split(":")[1])
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/usr/bin:/bin"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    cdigest, csize = put(config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdigest,
                                      "size": csize}, "layers": layer_descs}).encode()
    mdigest, msize = put(manifest)
    (top / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (top / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mdigest, "size": msize,
         "annotations": {"org.opencontainers.image.ref.name": "1"}}]}))
    return paths, files


OURS = """import resource, sys
sys.path.insert(0, %(repo)r)
from imagegw import squash
jobs = %(jobs)d
if jobs:
    squash.COMPRESSORS["zstd"] = [*squash.COMPRESSORS["zstd"], "-j", str(jobs)]
squash.convert(%(blobs)r, %(out)r)
# this process's peak: VmHWM (per address space; ru_maxrss would carry the parent's size over)
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(hwm, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)  # KiB: the merge, tar2sqfs
"""


def ours(blobs: list[Path], out: Path, jobs: int = 0) -> tuple[float, float]:
    """(seconds, peak RSS in MiB of the merge process + tar2sqfs)."""
    code = OURS % {"repo": str(REPO), "blobs": [str(b) for b in blobs], "out": str(out), "jobs": jobs}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - start
    merge_kib, tar2sqfs_kib = (int(x) for x in proc.stdout.split())
    return elapsed, (merge_kib + tar2sqfs_kib) / 1024


def floor(blobs: list[Path], flat: Path, out: Path) -> float:
    from imagegw import squash
    start = time.perf_counter()
    for blob in blobs:
        subprocess.run(["zcat", str(blob)], stdout=subprocess.DEVNULL, check=True)
    with open(flat, "rb") as tar:
        subprocess.run(squash.tar2sqfs_argv(out), stdin=tar, check=True)
    return time.perf_counter() - start


def classic(layout: Path, bundle: Path, out: Path) -> tuple[float, float]:
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:1", str(bundle)], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["mksquashfs", str(bundle / "rootfs"), str(out), "-quiet", "-noappend"], check=True,
                   stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    shutil.rmtree(bundle)
    return elapsed, max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="64,256", help="MiB of file content, comma-separated")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=1, help="tar2sqfs threads for the -jN variant")
    json_arg(ap)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    res = Results("bench_bigimage", f"python bench/bench_bigimage.py --sizes {args.sizes} --runs {args.runs}",
                  f"generated images, {LAYERS} gzip layers, {FILES_PER_MIB} files/MiB (the issue's image: 2 GB / "
                  f"60,000 files), {args.sizes} MiB on this 2-core VM; peak RSS: merge process + tar2sqfs")
    rows = []
    from imagegw import layers
    for size in sizes:
        work = Path(tempfile.mkdtemp(prefix=f"bench-big-{size}-", dir="/var/tmp"))
        try:
            blobs, files = make_image(work / "layout", size)
            flat = work / "flat.tar"
            with open(flat, "wb") as out:
                layers.flatten(blobs, out)
            compressed = sum(b.stat().st_size for b in blobs)
            times: dict[str, list[float]] = {"ours": [], f"ours -j{args.jobs}": [], "floor": [], "classic": []}
            rss: dict[str, list[float]] = {"ours": [], "classic": []}
            for i in range(args.runs):
                t, r = ours(blobs, work / f"ours-{i}.squashfs")
                times["ours"].append(t)
                rss["ours"].append(r)
                times[f"ours -j{args.jobs}"].append(ours(blobs, work / f"oursj-{i}.squashfs", args.jobs)[0])
                times["floor"].append(floor(blobs, flat, work / f"floor-{i}.squashfs"))
                t, r = classic(work / "layout", work / f"bundle-{i}", work / f"classic-{i}.squashfs")
                times["classic"].append(t)
                rss["classic"].append(r)
            med = {k: statistics.median(v) for k, v in times.items()}
            o_rss = max(rss["ours"])
            same = (work / "ours-0.squashfs").read_bytes() == (work / "oursj-0.squashfs").read_bytes()
            print(f"{size} MiB, {files} files, {compressed / 2**20:.0f} MiB of gzip layers: "
                  + "  ".join(f"{k} {v:.2f} s" for k, v in med.items())
                  + f"   peak RSS ours {o_rss:.0f} MiB, classic {max(rss['classic']):.0f} MiB; "
                  f"-j{args.jobs} output identical: {same}")
            rows.append((size, files, med["ours"], med[f"ours -j{args.jobs}"], med["floor"], med["classic"], o_rss,
                         max(rss["classic"])))
            res.ratio(f"convert {size} MiB / {files} files vs floor", med["ours"], med["floor"], "zcat+tar2sqfs",
                      "s", target="<= 1.1")
            res.ratio(f"convert {size} MiB / {files} files vs umoci+mksquashfs", med["ours"], med["classic"],
                      "umoci+mksquashfs", "s", target="<= 0.2")
            res.ratio(f"convert {size} MiB with tar2sqfs -j{args.jobs} vs its default (a thread per CPU)",
                      med[f"ours -j{args.jobs}"], med["ours"], "ours", "s")
            res.ratio(f"peak RSS converting {size} MiB / {files} files (merge + tar2sqfs) vs the 256 MiB budget",
                      o_rss, 256, "budget", "MiB", target="<= 1")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    res.series("sizes", size_mib=[r[0] for r in rows], files=[r[1] for r in rows], ours_s=[r[2] for r in rows],
               ours_jobs_s=[r[3] for r in rows], floor_s=[r[4] for r in rows], classic_s=[r[5] for r in rows],
               ours_rss_mib=[r[6] for r in rows], classic_rss_mib=[r[7] for r in rows])
    res.write(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

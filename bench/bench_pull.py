#!/opt/shifter/bin/python
"""Pull + convert of the three-layer Debian test image from the local registry, cold cache,
with gzip layers and with zstd layers (--compression), against the baselines below (targets: >= 10x faster than
skopeo+umoci+mksquashfs, <= 1.1x the floor), run side by side in this process (medians of --runs):

  ours          imagegw.pull.pull: direct registry client (httpx) -> layer cache -> one-pass
                flatten -> tar2sqfs (zstd level 3)
  skopeo+ours   skopeo copy into an OCI layout, then the same flatten + tar2sqfs (the
                "skopeo as transport" alternative)
  floor (a)     zcat (zstdcat) of every layer blob + tar2sqfs alone on the already-flattened
                tar, same compression (target: ours <= 1.1x)
  classic (b)   skopeo copy + umoci unpack + mksquashfs with default options (target: ours
                at least 10x faster); gzip layers only: umoci 0.4 cannot unpack zstd layers

usage (root, local cluster up):  /opt/shifter/bin/python bench/bench_pull.py [--runs 3] [--compression gzip,zstd]
or against a registry of one's own (no cluster lock; its host listed in the config's registries.hosts):
    bench/bench_pull.py --registry 127.0.0.1:5123 --config my-shifter.yaml [--cases ours,floor]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))

sys.path.insert(0, str(REPO_ROOT / "bench"))
import gatewaytools as gt  # noqa: E402
import imagebuilder as ib  # noqa: E402
from imagegw import layers, pull, reference, registry, squash  # noqa: E402
from results import Results, json_arg  # noqa: E402
from shifter_site import config, logs  # noqa: E402

TAG = "1"


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--compression", default="gzip,zstd", help="layer compressions to measure, comma-separated")
    ap.add_argument("--registry", default=gt.REGISTRY, help="registry HOST:PORT (default: the local cluster's)")
    ap.add_argument("--config", default=str(gt.STATE / "etc/shifter.yaml"), help="site config (image_dir is replaced)")
    ap.add_argument("--cases", default="", help="only these cases, comma-separated (default: all)")
    json_arg(ap)
    args = ap.parse_args()
    logs.configure(json=True, verbose=False, stream=open("/dev/null", "w"))
    res = Results("bench_pull", f"python bench/bench_pull.py --runs {args.runs} (root, cluster up)",
                  "3-layer Debian test image from the local registry, cold layer cache")
    for compression in args.compression.split(","):
        one(args, compression, res)
    res.write(args.json)
    return 0


def one(args, compression: str, res: Results) -> None:
    """Every case for the Debian image pushed with `compression` layers."""
    cfg = config.load(args.config, privileged=False)
    repo = f"bench/debian3{'' if compression == 'gzip' else compression}"
    image = gt.debian_image()
    image.compression = [compression] * len(image.layers)
    digest = ib.push(args.registry, repo, TAG, image)
    unpack = {"gzip": "zcat", "zstd": "zstdcat"}[compression]
    work = Path(tempfile.mkdtemp(prefix="bench-pull-", dir="/var/tmp"))
    ref = reference.parse(f"docker:{repo}:{TAG}" if args.registry == gt.REGISTRY else f"docker:{args.registry}/{repo}:{TAG}")
    client = registry.Client(f"http://{args.registry}", repo)
    resolved = client.resolve(TAG)
    blobs = registry.fetch_layers(client, resolved.layers, registry.LayerCache(work / "blobs"))
    flat_tar = work / "flat.tar"
    with open(flat_tar, "wb") as out:
        layers.flatten(blobs, out)
    raw = sum(l.size for l in resolved.layers)
    print(f"image {repo}:{TAG} {digest[:19]}  3 {compression} layers, {raw / 2**20:.1f} MiB compressed, "
          f"flattened tar {flat_tar.stat().st_size / 2**20:.1f} MiB")

    def ours(i: int) -> None:
        image_dir = work / f"ours-{i}"
        image_dir.mkdir()
        run_cfg = msgspec.structs.replace(cfg, image_dir=str(image_dir))
        pull.pull(run_cfg, ref, registry.LayerCache(work / f"cache-{i}"))

    def skopeo_ours(i: int) -> None:
        layout = work / f"skopeo-{i}"
        subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{args.registry}/{repo}:{TAG}",
                        f"oci:{layout}:{TAG}"], check=True)
        paths = [layout / "blobs/sha256" / l.digest.split(":")[1] for l in resolved.layers]
        squash.convert(paths, work / f"skopeo-{i}.squashfs")

    def floor(i: int) -> None:
        for blob in blobs:
            subprocess.run([unpack, str(blob)], stdout=subprocess.DEVNULL, check=True)
        with open(flat_tar, "rb") as tar:
            subprocess.run(squash.tar2sqfs_argv(work / f"floor-{i}.squashfs"), stdin=tar, check=True)

    def classic(i: int) -> None:
        layout, bundle = work / f"classic-{i}", work / f"classic-{i}-bundle"
        subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{args.registry}/{repo}:{TAG}",
                        f"oci:{layout}:{TAG}"], check=True)
        subprocess.run(["umoci", "unpack", "--image", f"{layout}:{TAG}", str(bundle)], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["mksquashfs", str(bundle / "rootfs"), str(work / f"classic-{i}.squashfs"), "-quiet"],
                       check=True, stdout=subprocess.DEVNULL)

    def transport_direct(i: int) -> None:
        registry.fetch_layers(client, resolved.layers, registry.LayerCache(work / f"direct-only-{i}"))

    def transport_skopeo(i: int) -> None:
        subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{args.registry}/{repo}:{TAG}",
                        f"oci:{work / f'skopeo-only-{i}'}:{TAG}"], check=True)

    cases = {"ours": ours, "skopeo+ours": skopeo_ours, "floor (a)": floor, "classic (b)": classic,
             "fetch: direct": transport_direct, "fetch: skopeo": transport_skopeo}
    if compression != "gzip":  # umoci 0.4 refuses zstd layers ("blob is not correct mediatype")
        del cases["classic (b)"]
    if args.cases:
        cases = {k: v for k, v in cases.items() if k.split(" ")[0] in args.cases.split(",")}
    times: dict[str, list[float]] = {k: [] for k in cases}
    try:
        for i in range(args.runs):  # interleaved, so machine noise hits every case alike
            for name, fn in cases.items():
                times[name].append(timed(lambda: fn(i)))
        med = {k: statistics.median(v) for k, v in times.items()}
        for name, value in med.items():
            print(f"{name:14} {value:7.2f} s   (runs: {', '.join(f'{t:.2f}' for t in times[name])})")
        a = med["ours"] / med["floor (a)"]
        print(f"(a) ours / floor             = {a:.2f}x   (target <= 1.1x: {'met' if a <= 1.1 else 'NOT met'})")
        if "classic (b)" in med:
            sizes = {p.name: p.stat().st_size for p in (work / "ours-0").glob("*.squashfs")}
            classic_size = (work / "classic-0.squashfs").stat().st_size
            print(f"squashfs size: ours {sum(sizes.values()) / 2**20:.1f} MiB (zstd-3), "
                  f"classic {classic_size / 2**20:.1f} MiB (mksquashfs default gzip)")
            b = med["classic (b)"] / med["ours"]
            print(f"(b) classic / ours           = {b:.2f}x faster (target >= 10x: {'met' if b >= 10 else 'NOT met'})")
        elif compression == "gzip":
            print("(b) classic: not measured (--cases)")
        else:
            print(f"(b) classic: not measured for {compression} layers: umoci cannot unpack them")
        if {"skopeo+ours", "fetch: skopeo", "fetch: direct"} <= set(med):
            print(f"transport: skopeo+ours / ours = {med['skopeo+ours'] / med['ours']:.2f}x;  "
                  f"fetch only: skopeo / direct = {med['fetch: skopeo'] / med['fetch: direct']:.2f}x")
        res.ratio(f"pull+convert, {compression} layers, vs floor ({unpack} + tar2sqfs)", med["ours"],
                  med["floor (a)"], f"{unpack}+tar2sqfs", "s", target="<= 1.1")
        if "classic (b)" in med:
            res.ratio(f"pull+convert, {compression} layers, vs skopeo+umoci+mksquashfs", med["ours"],
                      med["classic (b)"], "skopeo+umoci+mksquashfs", "s", target="<= 0.1")
        if "skopeo+ours" in med:
            res.ratio(f"pull+convert, {compression} layers, vs skopeo + our conversion", med["ours"],
                      med["skopeo+ours"], "skopeo+ours", "s")
    finally:
        client.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

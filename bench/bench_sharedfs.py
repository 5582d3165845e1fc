#!/opt/shifter/bin/python
"""Start-up of a big Python stack on a shared filesystem: directory vs image.

The original Shifter's case: an image is one file on the parallel filesystem, so starting on
many nodes costs each node one open, not thousands of metadata operations. Here, measured:

  stack   a generated Pynamic-style stack: --packages packages of --modules modules (1,000 by
          default) importing each other, plus --cext small C extensions, compiled to .pyc
  fs      bench/slowfs.py: a FUSE passthrough that waits --delay-ms per metadata operation
          (lookup/getattr, open, readdir...) and counts every operation; nothing cached by
          the kernel (cold nodes)
  (a) dir    each node's Python imports the whole stack from the directory on that fs
  (b) image  the stack in a squashfs image (converted by the gateway's own imagegw.squash) on
             that fs; each node attaches it to its own loop device (direct I/O: no shared
             page cache), mounts it read-only (as the job prolog does) and imports from there
  nodes   1, 3 and 8 concurrent "nodes" (processes started together); a node's time is from
          its start to its import finished (the mount included for (b))

Prints, per delay and node count, the slowest node's time for (a) and (b), their ratio, and
the operations the shared filesystem served (metadata operations per node: (a) grows with
the stack's files, (b) stays a handful). Python and its standard library come from local
disk in both cases: only the stack's place differs.

usage (root; mfusepy, fuse3 and gcc; no cluster needed, but it mounts: run it under the
cluster lock): /opt/shifter/bin/python bench/bench_sharedfs.py [--delays 0.2,1] [--nodes 1,3,8]
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from results import Results, json_arg  # noqa: E402

PYTHON = "/usr/bin/python3.11"  # the nodes' interpreter (its stdlib on local disk)
CEXT = """#include <Python.h>
static PyObject *work(PyObject *self, PyObject *arg) { return PyLong_FromLong(PyLong_AsLong(arg) * %(i)d); }
static PyMethodDef methods[] = {{"work", work, METH_O, ""}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "%(name)s", NULL, -1, methods};
PyMODINIT_FUNC PyInit_%(name)s(void) { return PyModule_Create(&mod); }
"""


def make_stack(top: Path, packages: int, modules: int, cexts: int, seed: int = 19) -> int:
    """Write the stack under top (pyn_main imports everything); returns its file count."""
    rng = random.Random(seed)
    names = [(p, m) for p in range(packages) for m in range(modules)]
    for p in range(packages):
        pkg = top / f"pynpkg{p:03d}"
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text("".join(f"from . import mod{m:03d}\n" for m in range(modules)))
        for m in range(modules):
            index = p * modules + m
            # imports of earlier modules only (acyclic), mostly in other packages
            deps = sorted({names[rng.randrange(index)] for _ in range(3)}) if index else []
            lines = [f"import pynpkg{dp:03d}.mod{dm:03d}\n" for dp, dm in deps]
            if cexts and index % max(1, len(names) // cexts) == 0:
                lines.append(f"import pyncext{(index // max(1, len(names) // cexts)) % cexts:03d} as _c\n")
            lines += [f"def f{k}(x):\n    return x * {k} + {index}\n\n" for k in range(8)]
            lines.append(f"class C{index}:\n    value = {index}\n    def method(self):\n        return self.value\n")
            (pkg / f"mod{m:03d}.py").write_text("".join(lines))
    include = sysconfig.get_paths()["include"]
    for i in range(cexts):
        name = f"pyncext{i:03d}"
        src = top / f"{name}.c"
        src.write_text(CEXT % {"i": i + 1, "name": name})
        subprocess.run(["gcc", "-shared", "-fPIC", "-O1", f"-I{include}", "-o", str(top / f"{name}.so"), str(src)],
                       check=True)
        src.unlink()
    (top / "pyn_main.py").write_text("".join(f"import pynpkg{p:03d}\n" for p in range(packages)))
    # unchecked-hash: the .pyc is used as is, whatever mtimes the image keeps (same for (a) and (b))
    subprocess.run([PYTHON, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash", str(top)],
                   check=True)
    return sum(len(files) + len(dirs) for _, dirs, files in os.walk(top))


class SharedFS:
    """bench/slowfs.py serving `backing` at `mountpoint`, for one delay."""

    def __init__(self, backing: Path, mountpoint: Path, delay_ms: float) -> None:
        self.mountpoint = mountpoint
        self.proc = subprocess.Popen([sys.executable, str(REPO / "bench/slowfs.py"), str(backing), str(mountpoint),
                                      "--delay-ms", str(delay_ms)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not os.path.ismount(mountpoint):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("bench/slowfs.py did not mount (is mfusepy installed? fuse3?)")
            time.sleep(0.05)

    def count(self, name: str) -> int:
        return os.stat(self.mountpoint / f".ops-{name}").st_size

    def reset(self) -> None:
        os.stat(self.mountpoint / ".ops-reset")

    def close(self) -> None:
        subprocess.run(["fusermount3", "-u", str(self.mountpoint)], check=False)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


IMPORT = "import sys, time; sys.path.insert(0, %r); import pyn_main; print(len(sys.modules))"


def node_dir(stack: Path) -> list[str]:
    return [PYTHON, "-I", "-c", IMPORT % str(stack)]


def node_image(squashfs: Path, mountpoint: Path) -> list[str]:
    """One node: its own loop device (direct I/O) on the shared file, a read-only squashfs
    mount (what the prolog does), the import, then the mount and device let go."""
    script = (f"set -e; dev=$(losetup --direct-io=on -r -f --show {squashfs}); "
              f"trap 'umount {mountpoint} 2>/dev/null; losetup -d \"$dev\" 2>/dev/null || true' EXIT; "
              f"mount -t squashfs -o ro,nosuid,nodev \"$dev\" {mountpoint}; "
              f"{shlex.join(node_dir(mountpoint / 'stack'))}")
    return ["sh", "-c", script]


def run_nodes(argvs: list[list[str]]) -> list[float]:
    """Start every node at once; each one's seconds from the common start to its end."""
    start = time.perf_counter()
    procs = [subprocess.Popen(a, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for a in argvs]
    ends = []
    pending = dict(enumerate(procs))
    while pending:
        for i, proc in list(pending.items()):
            if proc.poll() is not None:
                ends.append(time.perf_counter() - start)
                out, err = proc.communicate()
                if proc.returncode != 0:
                    raise SystemExit(f"a node failed: {err.strip()[-500:]}")
                del pending[i]
        time.sleep(0.002)
    return ends


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packages", type=int, default=40)
    ap.add_argument("--modules", type=int, default=25)
    ap.add_argument("--cext", type=int, default=10)
    ap.add_argument("--delays", default="0.2,1", help="ms per metadata operation, comma-separated")
    ap.add_argument("--nodes", default="1,3,8")
    ap.add_argument("--runs", type=int, default=1, help="repeats per point (medians)")
    json_arg(ap)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (FUSE allow_other, loop devices, mounts)")
    delays = [float(d) for d in args.delays.split(",")]
    counts = [int(n) for n in args.nodes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-sharedfs-", dir="/var/tmp"))
    shared_mnt = work / "shared"
    shared_mnt.mkdir()
    fs = None
    res = Results("bench_sharedfs", f"python bench/bench_sharedfs.py --delays {args.delays} --nodes {args.nodes}",
                  "FUSE passthrough with per-operation delay; nodes = concurrent processes on one 2-core VM")
    try:
        backing = work / "backing"
        stack = backing / "stack"
        files = make_stack(stack, args.packages, args.modules, args.cext)
        from imagegw import squash
        layer = work / "stack.tar"
        with tarfile.open(layer, "w") as tar:
            tar.add(stack, arcname="stack")
        squash.convert([layer], backing / "stack.squashfs")
        layer.unlink()
        size = (backing / "stack.squashfs").stat().st_size
        print(f"stack: {args.packages * args.modules} modules in {args.packages} packages, {args.cext} C "
              f"extensions, {files} files and directories with .pyc; image {size / 2**20:.1f} MiB")
        # native: the same import from local disk, for scale
        local = statistics.median(max(run_nodes([node_dir(stack)])) for _ in range(3))
        print(f"local disk, 1 node: {local:.2f} s")
        rows = []
        for delay in delays:
            fs = SharedFS(backing, shared_mnt, delay)
            for n in counts:
                mounts = [work / f"node{i}" for i in range(n)]
                for m in mounts:
                    m.mkdir(exist_ok=True)
                point = {}
                for mode in ("dir", "image"):
                    times, meta, reads = [], [], []
                    for _ in range(args.runs):
                        fs.reset()
                        if mode == "dir":
                            argvs = [node_dir(shared_mnt / "stack") for _ in range(n)]
                        else:
                            argvs = [node_image(shared_mnt / "stack.squashfs", m) for m in mounts]
                        times.append(max(run_nodes(argvs)))
                        meta.append(fs.count("meta"))
                        reads.append(fs.count("read"))
                    point[mode] = (statistics.median(times), statistics.median(meta) / n, statistics.median(reads) / n)
                (ta, ma, ra), (tb, mb, rb) = point["dir"], point["image"]
                rows.append((delay, n, ta, tb, ma, mb, ra, rb))
                print(f"delay {delay:4} ms  nodes {n}:  dir {ta:6.2f} s ({ma:7.0f} metadata ops/node, {ra:5.0f} reads)"
                      f"   image {tb:6.2f} s ({mb:4.0f} metadata ops/node, {rb:5.0f} reads)   dir/image {ta / tb:5.2f}x")
                res.ratio(f"import from image vs dir on shared fs ({delay} ms/op, {n} nodes)", tb, ta, "directory",
                          unit="s")
            fs.close()
            fs = None
        res.series("sharedfs", delay_ms=[r[0] for r in rows], nodes=[r[1] for r in rows],
                   dir_s=[r[2] for r in rows], image_s=[r[3] for r in rows], dir_meta_per_node=[r[4] for r in rows],
                   image_meta_per_node=[r[5] for r in rows], local_s=[local] * len(rows))
        res.data["note"] += f"; stack {args.packages * args.modules} modules, {files} files; local disk {local:.2f} s"
        res.write(args.json)
    finally:
        for m in work.glob("node*"):
            subprocess.run(["umount", str(m)], capture_output=True)
        if fs is not None:
            fs.close()
        if not os.path.ismount(shared_mnt):  # never remove through a mount that is still there
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""MPI test images, made here from the host's Debian MPI (never downloaded).

How an image is made: `mpi_hello.c` below is compiled on the host with the MPI's own
`mpicc` (mpicc.mpich or mpicc.openmpi); the binary goes to /app/mpi_hello in a busybox root
(tests/images.py make_root), together with its shared-library closure (every library `ldd`
names, at the same path, glibc and the loader included) and the MPI's plugin directories
(UCX transports, OpenMPI/PMIx components) with their closures. So the image carries its own
MPI and would run on a host without one.
"""

from __future__ import annotations

import mmap
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import imagebuilder as ib
import images

MPI_HELLO_C = r"""
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
    int rank, size, len, sum = 0, one;
    char lib[MPI_MAX_LIBRARY_VERSION_STRING];
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Get_library_version(lib, &len);
    lib[strcspn(lib, "\n")] = 0;
    for (char *p = lib; *p; p++) if (*p == ' ' || *p == '\t') *p = '_';
    one = rank + 1;
    MPI_Allreduce(&one, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    const char *node = getenv("SLURMD_NODENAME");
    char line[4096], mapped[4096] = "none";
    FILE *maps = fopen("/proc/self/maps", "r");
    while (maps && fgets(line, sizeof line, maps)) {
        char *path = strchr(line, '/');
        if (path && strstr(path, "libmpi")) { path[strcspn(path, "\n")] = 0; strcpy(mapped, path); break; }
    }
    if (maps) fclose(maps);
    printf("mpi rank=%d size=%d node=%s sum=%d mapped=%s lib=%s\n", rank, size, node ? node : "?", sum, mapped, lib);
    MPI_Finalize();
    return 0;
}
"""
LIBDIR = "/usr/lib/x86_64-linux-gnu"
HOST_VERSION = "4.0.2"  # Debian 12's MPICH (MPII_Version_string)
# Plugin directories each MPI dlopens at run time (not visible to ldd).
PLUGINS = {"mpich": [f"{LIBDIR}/ucx"],
           "openmpi": [f"{LIBDIR}/openmpi", f"{LIBDIR}/pmix2", f"{LIBDIR}/ucx", "/usr/share/openmpi",
                       "/etc/openmpi", "/usr/share/pmix"]}


def compile_hello(flavour: str, dest: Path) -> None:
    """mpi_hello built with the host MPI's compiler wrapper."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "mpi_hello.c"
        src.write_text(MPI_HELLO_C)
        subprocess.run([f"mpicc.{flavour}", "-O2", "-o", str(dest), str(src)], check=True)


def _is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def closure(files: list[Path]) -> set[str]:
    """Every shared library (and the loader) the ELF files need, as host paths."""
    needed: set[str] = set()
    for path in files:
        if not _is_elf(path):
            continue
        out = subprocess.run(["ldd", str(path)], capture_output=True, text=True).stdout
        for line in out.splitlines():
            match = re.search(r"=> (/\S+)", line) or re.match(r"\s+(/\S+) \(", line)
            if match:
                needed.add(match.group(1))
    return needed


def _copy_into(root: Path, host_path: str) -> None:
    dest = root / host_path.lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists():
        shutil.copy2(host_path, dest)  # follows links: the file under its soname


def make_root(root: Path, flavour: str) -> None:
    """A busybox root with /app/mpi_hello built against the host's `flavour` MPI and all it needs."""
    images.make_root(root)
    (root / "app").mkdir()
    hello = root / "app/mpi_hello"
    compile_hello(flavour, hello)
    elves = [hello]
    for directory in PLUGINS[flavour]:
        if not os.path.exists(directory):
            continue
        shutil.copytree(directory, root / directory.lstrip("/"), symlinks=True, dirs_exist_ok=True)
        elves += [p for p in Path(directory).rglob("*") if p.is_file() and not p.is_symlink()]
    for lib in sorted(closure(elves)):
        _copy_into(root, lib)
    (root / "lib64").mkdir(exist_ok=True)
    if not (root / "lib64/ld-linux-x86-64.so.2").exists():
        _copy_into(root, "/lib64/ld-linux-x86-64.so.2")


def claim_version(root: Path, version: bytes) -> None:
    """Make the image's MPICH report another version (same length, patched in place): an
    image "with a newer MPICH" for the compatibility check, without building one."""
    lib = next(p for p in (root / "lib/x86_64-linux-gnu/libmpich.so.12", root / LIBDIR.lstrip("/") / "libmpich.so.12")
               if p.exists())  # ldd names /lib/... on a merged-/usr host
    assert not lib.is_symlink(), f"{lib} is a link: patching it would patch the host's MPICH"
    old = b"\x00" + HOST_VERSION.encode() + b"\x00"
    with open(lib, "r+b") as f, mmap.mmap(f.fileno(), 0) as data:  # 40 MB: patched where it lies
        at = data.find(old)
        assert at >= 0 and data.find(old, at + 1) < 0 and len(version) == len(HOST_VERSION), (at, version)
        data[at + 1:at + 1 + len(version)] = version


def push_mpi_image(flavour: str, repo: str, tag: str, version: bytes | None = None) -> str:
    """Build the root, push it to the local registry; the image's digest."""
    root = Path(tempfile.mkdtemp())
    try:
        make_root(root, flavour)
        if version:
            claim_version(root, version)
        layer = ib.layer_from_dir(root)
    finally:
        shutil.rmtree(root)
    env = ["PATH=/usr/bin:/bin", f"LD_LIBRARY_PATH={LIBDIR}"]
    return ib.push("127.0.0.1:5000", repo, tag, ib.Image([layer], config={"Env": env, "Cmd": ["/app/mpi_hello"]}))


def parse(output: str) -> list[dict[str, str]]:
    """The `mpi ...` lines as dicts."""
    return [dict(item.split("=", 1) for item in line.split()[1:])
            for line in output.splitlines() if line.startswith("mpi rank=")]


def check_world(output: str, nodes: list[str], per_node: int) -> list[dict[str, str]]:
    """The checks every MPI test makes: one world of the right size, each rank once, block
    placement over the nodes, a correct Allreduce (a wrong --mpi gives N one-rank worlds)."""
    ranks = parse(output)
    size = len(nodes) * per_node
    assert len(ranks) == size, output
    assert {r["size"] for r in ranks} == {str(size)}, output
    assert sorted(int(r["rank"]) for r in ranks) == list(range(size)), output
    for r in ranks:
        assert r["node"] == nodes[int(r["rank"]) // per_node], (r, output)
    assert {r["sum"] for r in ranks} == {str(size * (size + 1) // 2)}, output
    return ranks

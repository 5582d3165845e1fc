"""The GPU module (docs/architecture.md, "Data flow": Spec and Build): which GPUs a
container gets, and what of the node's NVIDIA driver comes with them.

A site makes one module the GPU module by giving it a `gpu:` section (shifter_site.config.Gpu):
it is on by itself when the step has GPUs (Slurm's `--gres=gpu:N`) or when asked for with
`--module=NAME`. The container then gets the control devices (/dev/nvidiactl,
/dev/nvidia-uvm*, /dev/nvidia-modeset, when the node has them) and ONLY the allocated
/dev/nvidiaN (runtime.phases `gpu_dev`: a /dev of its own), the driver's user-space libraries
found in the node's loader cache with the site's patterns, and its tools (`nvidia-smi`...),
bound under /opt/udiImage/gpu; the loader finds them through LD_LIBRARY_PATH, and
CUDA_VISIBLE_DEVICES numbers the GPUs inside 0..N-1 (only they exist there). No GPUs (none,
empty, `NoDevFiles`): nothing GPU-related is added.

The decisions are pure functions (unit-tested without a GPU); `host_plan` reads the node.
"""

from __future__ import annotations

import os

from runtime.frozen import Frozen
from shifter_site.errors import ShifterError

TYPE_CHECKING = False  # imported by a launch that names the module: no `typing` (docs/architecture.md, decision 13)
if TYPE_CHECKING:
    from typing import Iterable, Mapping

# Control devices every CUDA process needs (when the node has them); never a GPU itself.
CONTROL_DEVICES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
NO_DEVICES = ("", "NoDevFiles")
# Where the GPUs come from, strongest first: host numbers (Slurm's SLURM_STEP_GPUS, the
# prolog's SLURM_JOB_GPUS), then CUDA_VISIBLE_DEVICES.
SOURCES = ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS", "CUDA_VISIBLE_DEVICES")
# Where the libraries and tools appear inside the container.
CONTAINER_DIR = "/opt/udiImage/gpu"  # not under modules/: a module's copy_path is bound there
CONTAINER_LIB_DIR = CONTAINER_DIR + "/lib64"
CONTAINER_BIN_DIR = CONTAINER_DIR + "/bin"
CONTAINER_HOST_DIR = CONTAINER_DIR + "/host"  # the node's directories holding them, bound read-only
_LDCONFIG_LINE = r"\s+(\S+) \(([^)]*)\) => (\S+)$"


def _number(text: str) -> bool:
    """1-4 ASCII digits (not `re`: a step joining its container must not import it)."""
    return 1 <= len(text) <= 4 and text.isascii() and text.isdigit()


class GpuError(ShifterError):
    """The step's GPU allocation or the node's driver files cannot be used as they are."""


class GpuSite(Frozen):
    """The site's GPU settings (shifter_site.config.Gpu), as plain data for the spec."""

    module: str
    libraries: tuple[str, ...]
    tools: tuple[str, ...] = ()
    tool_path: tuple[str, ...] = ()
    loader_cache: str = "/etc/ld.so.cache"


class GpuPlan(Frozen):
    """What the build binds for the GPUs: device files, libraries and tools (host paths)."""

    gpus: tuple[int, ...]
    devices: tuple[str, ...] = ()
    libraries: tuple[str, ...] = ()
    tools: tuple[str, ...] = ()


def site_settings(cfg, name: str) -> GpuSite:
    """The GpuSite of module `name` (which has a gpu section)."""
    g = cfg.modules[name].gpu
    return GpuSite(module=name, libraries=tuple(g.libraries), tools=tuple(g.tools),
                   tool_path=tuple(g.tool_path), loader_cache=g.loader_cache)


def _indices(name: str, value: str) -> tuple[int, ...]:
    items = [item.strip() for item in value.split(",")]
    if not all(_number(item) for item in items):
        raise GpuError(f"gpu module: {name}={value!r} is not a list of GPU numbers (like 0,1); "
                       "unset it or let Slurm set it with --gres=gpu:N")
    gpus = tuple(int(item) for item in items)
    if len(set(gpus)) != len(gpus):
        raise GpuError(f"gpu module: {name}={value!r} names a GPU twice; name each GPU once")
    return gpus


def allocated(env: Mapping[str, str]) -> tuple[int, ...] | None:
    """The host GPU numbers in `env` (the first of SOURCES that is set); () for none, empty
    or NoDevFiles; None when no variable says anything."""
    for name in SOURCES:
        if name in env:
            value = env[name].strip()
            return () if value in NO_DEVICES else _indices(name, value)
    return None


def launch_gpus(env: Mapping[str, str], requested: bool, dev_names: Iterable[str]) -> tuple[int, ...]:
    """A `shifter` launch's GPUs: what its environment says (CUDA_VISIBLE_DEVICES...);
    asked for by name with nothing said, every GPU the node shows; else none."""
    said = allocated(env)
    if said is not None:
        return said
    return node_gpus(dev_names) if requested else ()


def node_gpus(names: Iterable[str]) -> tuple[int, ...]:
    """Every GPU the node shows (/dev/nvidiaN), sorted."""
    return tuple(sorted(int(n[6:]) for n in names if n.startswith("nvidia") and _number(n[6:])))


def device_files(gpus: Iterable[int], present: Iterable[str]) -> tuple[str, ...]:
    """The device files to expose: the control devices the node has, and only the allocated
    /dev/nvidiaN; an allocated GPU without its device file is the node's error (gres.conf)."""
    gpus = tuple(gpus)
    if not gpus:
        return ()
    have = set(present)
    if "nvidiactl" not in have:
        raise GpuError("gpu module: /dev/nvidiactl is missing on this node; load the NVIDIA driver "
                       "or remove the GPUs from this node's gres.conf")
    chosen = [f"/dev/{name}" for name in CONTROL_DEVICES if name in have]
    for gpu in gpus:
        if f"nvidia{gpu}" not in have:
            raise GpuError(f"gpu module: GPU {gpu} is allocated but /dev/nvidia{gpu} is missing on this "
                           "node; fix the node's gres.conf")
        chosen.append(f"/dev/nvidia{gpu}")
    return tuple(chosen)


def parse_ldconfig(text: str, arch: str = "x86-64") -> dict[str, str]:
    """soname -> path from `ldconfig -p`'s text, the first entry of this architecture for each
    name (read_loader_cache reads the file itself; this is its reference in the tests)."""
    import re

    line_rule = re.compile(_LDCONFIG_LINE)
    found: dict[str, str] = {}
    for line in text.splitlines():
        match = line_rule.match(line)
        if not match:
            continue
        name, flags, path = match.groups()
        if arch and arch not in flags.split(","):
            continue
        found.setdefault(name, path)
    return found


def driver_libraries(cache: Mapping[str, str], patterns: Iterable[str]) -> tuple[str, ...]:
    """Host paths of the loader-cache entries whose name matches a pattern (sorted, unique).
    One expression for all patterns: a node's cache lists hundreds of names."""
    import fnmatch
    import re

    matches = re.compile("|".join(fnmatch.translate(p) for p in patterns)).match
    return tuple(sorted({path for name, path in cache.items() if matches(name)}))


def find_tools(names: Iterable[str], path: Iterable[str]) -> tuple[str, ...]:
    """The host paths of the tools found in the `path` directories (the first of each name)."""
    found = []
    for name in names:
        for directory in path:
            candidate = os.path.join(directory, name)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                found.append(candidate)
                break
    return tuple(found)


def container_env(gpus: tuple[int, ...]) -> dict[str, str]:
    """Inside only the allocated GPUs exist, so CUDA numbers them 0..N-1 (as Slurm does when
    it constrains devices); SHIFTER_GPUS keeps the node's numbers."""
    if not gpus:
        return {}
    return {"CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(len(gpus))),
            "SHIFTER_GPUS": ",".join(str(g) for g in gpus)}


def plan(gpus: tuple[int, ...], site: GpuSite, *, present: Iterable[str], cache: Mapping[str, str]) -> GpuPlan:
    """The whole decision for `gpus` on a node showing `present` in /dev, whose loader cache
    lists `cache` (soname -> path)."""
    if not gpus:
        return GpuPlan(gpus=())
    devices = device_files(gpus, present)
    libraries = driver_libraries(cache, site.libraries)
    if not any(os.path.basename(p).startswith("libcuda.so") for p in libraries):
        raise GpuError(f"module {site.module!r}: the node's loader cache ({site.loader_cache}) lists no "
                       "libcuda.so; install the NVIDIA driver's libraries on this node and run ldconfig")
    return GpuPlan(gpus=gpus, devices=devices, libraries=libraries,
                   tools=find_tools(site.tools, site.tool_path))


_CACHE_MAGIC = b"glibc-ld.so.cache1.1"
_X86_64_LIBC6 = 0x0303  # FLAG_ELF_LIBC6 | FLAG_X8664_LIB64: ldconfig -p's "(libc6,x86-64)"


def layout(libraries: Iterable[str], tools: Iterable[str]) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """How the build shows the driver files: each node directory holding one (after links)
    bound once, at CONTAINER_HOST_DIR/<n>, and a link per file under its loader-cache name in
    CONTAINER_LIB_DIR or CONTAINER_BIN_DIR (a mount per directory, not per file: a driver has
    ~40 libraries, and a mount costs ~0.2 ms). Returns (node dirs, (link, target) pairs)."""
    dirs: list[str] = []
    links = []
    for where, files in ((CONTAINER_LIB_DIR, libraries), (CONTAINER_BIN_DIR, tools)):
        for path in files:
            real = os.path.realpath(path)
            parent = os.path.dirname(real)
            if parent not in dirs:
                dirs.append(parent)
            links.append((f"{where}/{os.path.basename(path)}",
                          f"{CONTAINER_HOST_DIR}/{dirs.index(parent)}/{os.path.basename(real)}"))
    return tuple(dirs), tuple(links)


def read_loader_cache(path: str) -> dict[str, str]:
    """soname -> path from a glibc loader cache (what `ldconfig -p -C path` lists), the first
    x86-64 entry of each name. Read directly: running ldconfig costs ~3 ms of a 5 ms budget."""
    import struct

    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as err:
        raise GpuError(f"gpu module: cannot read the loader cache {path} ({err.strerror}); run ldconfig "
                       "on this node or fix the module's loader_cache") from None
    start = data.find(_CACHE_MAGIC)
    if start < 0:
        raise GpuError(f"gpu module: {path} is not a glibc loader cache (no {_CACHE_MAGIC.decode()} header); "
                       "run ldconfig on this node or fix the module's loader_cache")
    nlibs = struct.unpack_from("<I", data, start + 20)[0]
    found: dict[str, str] = {}

    def text(offset: int) -> str:
        at = start + offset
        return data[at:data.index(b"\0", at)].decode(errors="surrogateescape")

    for flags, key, value, _os, _hwcap in struct.iter_unpack("<iIIIQ", data[start + 48:start + 48 + 24 * nlibs]):
        if flags == _X86_64_LIBC6:
            found.setdefault(text(key), text(value))
    return found


def host_plan(gpus: tuple[int, ...], site: GpuSite) -> GpuPlan:
    """`plan` with this node's /dev and loader cache."""
    if not gpus:
        return GpuPlan(gpus=())
    return plan(gpus, site, present=os.listdir("/dev"), cache=read_loader_cache(site.loader_cache))

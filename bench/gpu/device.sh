#!/bin/bash
# GPU STREAM natively and inside a shifter container, on a machine with an NVIDIA GPU (issue 16).
# Run from the repository root, as root, in one go (about 2-4 minutes):
#     bash bench/gpu/device.sh
# Needs bench/gpu/kit/ (made by bench/gpu/prepare.sh on the development machine): Python 3.12
# wheels and tar2sqfs. Uses no network. Every step prints what it found; the first missing
# piece stops the run with one line "device.sh: FAIL: ...". Overrides for a dry run elsewhere:
# PYTHON (a python3.12), NVCC, WHEELS (a wheel dir), WORK (scratch dir), REPS.
set -uo pipefail
say() { echo "device.sh: $*"; }
fail() { echo "device.sh: FAIL: $*"; exit 1; }
step() { echo; echo "=== $* ($(date +%T))"; }

repo=$(pwd)
[ -f "$repo/runtime/cli.py" ] && [ -f "$repo/bench/gpu/stream.cu" ] || fail "run me from the repository root (bench/gpu/device.sh not found under $repo)"
kit=$repo/bench/gpu/kit
WORK=${WORK:-/tmp/shifter-gpu-bench}
PYTHON=${PYTHON:-/opt/torch/.venv/bin/python3}
NVCC=${NVCC:-/usr/local/cuda/bin/nvcc}
WHEELS=${WHEELS:-$kit/wheels}
REPS=${REPS:-5}
[ "$(id -u)" = 0 ] || fail "run as root (the container build mounts as root)"

step "machine"
uname -a; cat /etc/os-release 2>/dev/null | grep -E '^(PRETTY_NAME)='
ls -l /dev/nvidia* 2>&1 | head -20
command -v nvidia-smi >/dev/null && nvidia-smi -L 2>&1 | head -8 || say "nvidia-smi: not on PATH"
ldconfig -p | grep -E 'libcuda\.so|libnvidia-ml\.so' | head -6 || say "ldconfig -p lists no libcuda"

step "kit and tools"
[ -d "$WHEELS" ] || fail "no wheels in $WHEELS: run bench/gpu/prepare.sh on the development machine first"
ls "$WHEELS"
[ -x "$kit/tar2sqfs/tar2sqfs" ] || fail "no $kit/tar2sqfs/tar2sqfs: run bench/gpu/prepare.sh first"
T2S() { LD_LIBRARY_PATH=$kit/tar2sqfs/lib "$kit/tar2sqfs/tar2sqfs" "$@"; }
T2S --version 2>&1 | head -1 || fail "the kit's tar2sqfs does not run here (missing library?): $(LD_LIBRARY_PATH=$kit/tar2sqfs/lib ldd "$kit/tar2sqfs/tar2sqfs" | grep 'not found')"
[ -x "$NVCC" ] || fail "no nvcc at $NVCC (set NVCC=...)"
"$NVCC" --version | tail -2
[ -x "$PYTHON" ] || fail "no python at $PYTHON (set PYTHON=... to a python3.12)"
"$PYTHON" --version
grep -q nosuid /proc/self/mountinfo && say "mounts: ok to read"; 
mkdir -p "$WORK" && chmod 755 "$WORK" || fail "cannot make $WORK"

step "venv"
venv=$WORK/venv
rm -rf "$venv"
VPY=$venv/bin/python3
if ! "$PYTHON" -m venv "$venv"; then
  say "venv with pip failed (no ensurepip?); trying --without-pip and pip from the kit's wheel"
  rm -rf "$venv"
  "$PYTHON" -m venv --without-pip "$venv" || fail "$PYTHON -m venv failed (is the venv module there?)"
  pipwheel=$(ls "$WHEELS"/pip-*.whl 2>/dev/null | head -1)
  [ -n "$pipwheel" ] || fail "no pip wheel in $WHEELS to bootstrap pip; rerun bench/gpu/prepare.sh"
  "$VPY" "$pipwheel/pip" install -q --no-index "$pipwheel" || fail "could not install pip from $pipwheel"
fi
"$VPY" -m pip install -q --no-index --find-links "$WHEELS" msgspec PyYAML structlog cffi pycparser setuptools \
  || fail "pip install from $WHEELS failed (wheels for another Python version? this is $("$VPY" --version))"
"$VPY" -c "import msgspec, yaml, structlog, cffi; print('imports ok: msgspec', msgspec.__version__, 'cffi', cffi.__version__)" \
  || fail "the runtime's imports do not load in the venv"

step "runtime._syscalls (cffi, compiled)"
inc=$("$VPY" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
say "Python headers: $inc"
if [ ! -f "$inc/Python.h" ]; then
  fail "no Python.h under $inc: the runtime's cffi module cannot be compiled with this Python; install the matching python3.12-dev (or point PYTHON= at a Python with headers) and rerun"
fi
command -v gcc >/dev/null || fail "no gcc to compile runtime._syscalls"
rm -f "$repo"/runtime/_syscalls.cpython-312*.so
(cd "$repo" && "$VPY" -m runtime.syscalls_build --inplace >"$WORK/syscalls_build.log" 2>&1) \
  || { tail -20 "$WORK/syscalls_build.log"; fail "runtime.syscalls_build failed (log above)"; }
(cd "$repo" && "$VPY" -c "import runtime.syscalls; print('runtime.syscalls ok')") || fail "runtime.syscalls does not import"

step "loop devices (the container build mounts the image through one)"
losetup -f || fail "no free loop device: the image cannot be mounted here (run on the host or in a container with loop devices)"
case ${CUDA_VISIBLE_DEVICES-unset} in
  unset|[0-9]*) say "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset}" ;;
  *) say "CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES is not a list of GPU numbers: unset for this run"; unset CUDA_VISIBLE_DEVICES ;;
esac

step "STREAM binary"
app=$WORK/stream
"$NVCC" -O3 -cudart static -o "$app" "$repo/bench/gpu/stream.cu" || fail "nvcc could not compile bench/gpu/stream.cu"
ldd "$app"

step "image (squashfs made with the kit's tar2sqfs)"
root=$WORK/root; images=$WORK/images
rm -rf "$root" "$images"; mkdir -p "$root/app" "$root/tmp" "$images"; chmod 755 "$images"
cp "$app" "$root/app/stream"
# the binary's own libraries (the C++ runtime; cudart is static, libcuda comes from the gpu module)
for lib in $(ldd "$app" | awk '/=> \//{print $3} /^\s*\/[^ ]*ld-linux/{print $1}'); do
  mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"
done
mkdir -p "$root/lib64"; cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/" 2>/dev/null
sqfs=$WORK/image.squashfs
tar -C "$root" --owner=0 --group=0 -cf - . | T2S --quiet --no-skip --force "$sqfs" || fail "tar2sqfs could not make $sqfs"
ls -l "$sqfs"
image_id=$(cd "$repo" && "$VPY" - "$images" "$sqfs" <<'PY'
import hashlib, os, shutil, sys
from shifter_site.imagefiles import ImageRecord, publish
images, sqfs = sys.argv[1:]
digest = hashlib.sha256(open(sqfs, "rb").read()).hexdigest()
tmp = os.path.join(images, f".{digest}.squashfs.tmp")
shutil.copyfile(sqfs, tmp)
publish(images, ImageRecord(id=digest, system="gpubench", itype="id", tag="gpu-stream", digest=f"sha256:{digest}",
                            env=["PATH=/app:/usr/bin:/bin"], size=os.path.getsize(sqfs)), tmp)
print(digest)
PY
) || fail "could not publish the image record"
say "image id:$image_id"

step "what the gpu module will give the container (runtime.gpu: /dev, the loader cache)"
(cd "$repo" && "$VPY" - <<'PY'
import os
from runtime import gpu
gpus = gpu.launch_gpus(dict(os.environ), True, os.listdir("/dev"))
site = gpu.GpuSite(module="gpu", libraries=("libcuda.so*", "libnvidia-*.so*", "libnvcuvid.so*", "libnvoptix.so*"),
                   tools=("nvidia-smi",), tool_path=("/usr/bin", "/usr/local/nvidia/bin", "/usr/local/bin"))
plan = gpu.host_plan(gpus, site)
print("gpus", plan.gpus, "devices", plan.devices)
print("tools", plan.tools)
print("libraries", len(plan.libraries), *plan.libraries[:40], sep="\n  ")
print("env", gpu.container_env(plan.gpus))
PY
) || fail "runtime.gpu cannot use this node's GPU driver (message above)"

step "site config"
etc=$WORK/etc; mkdir -p "$etc" "$WORK/run"; chmod 755 "$etc"
cat > "$etc/shifter.yaml" <<YAML
system: gpubench
image_dir: $images
run_dir: $WORK/run
gateway: {urls: ["http://127.0.0.1:1"]}
registries: {default: "http://127.0.0.1:5000"}
modules:
  gpu:
    gpu: {}                 # devices, driver libraries and tools: runtime.gpu (phases gpu, gpu_dev)
YAML
chmod 644 "$etc/shifter.yaml"
cat "$etc/shifter.yaml"
export SHIFTER_CONFIG=$etc/shifter.yaml
SHIFTER() { (cd "$repo" && "$VPY" -m runtime.cli --image="id:$image_id" --module=gpu "$@"); }

step "container smoke test"
SHIFTER /lib64/ld-linux-x86-64.so.2 --list /app/stream || fail "shifter could not start the image (message above)"
if [ -e /dev/nvidiactl ]; then
  SHIFTER -v /lib64/ld-linux-x86-64.so.2 --list /opt/udiImage/gpu/lib64/libcuda.so.1 \
    || fail "libcuda.so.1 is not loadable inside the container (gpu module; log above)"
fi

step "GPU check"
[ -e /dev/nvidia0 ] && [ -e /dev/nvidiactl ] || fail "no GPU: /dev/nvidia0 or /dev/nvidiactl missing on this machine"
"$app" 1000000 2 || fail "no GPU usable natively: the STREAM binary failed on the host (above)"

step "STREAM native vs container, interleaved x$REPS (bench/bench_gpu_stream.py)"
(cd "$repo" && "$VPY" bench/bench_gpu_stream.py --app "$app" --image "id:$image_id" --module gpu -n "$REPS") \
  || fail "the benchmark stopped (message above)"
say "done"

#!/bin/bash
# Run HERE (the development machine, with internet to PyPI): fills bench/gpu/kit/ with what the
# GPU device (Ubuntu 24.04, no internet, python 3.12) lacks for bench/gpu/device.sh:
#   kit/wheels/   Python 3.12 manylinux wheels of the runtime's imports (runtime/, shifter_site/)
#   kit/tar2sqfs/ tar2sqfs (Debian's squashfs-tools-ng) and its non-glibc shared libraries
# The kit is git-ignored and stays under 50 MiB.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kit=$here/kit
PIP=${PIP:-/opt/shifter/bin/pip}
rm -rf "$kit"; mkdir -p "$kit/wheels" "$kit/tar2sqfs/lib"
# runtime/ and shifter_site/ import msgspec, yaml, structlog, cffi (cffi needs pycparser, and on
# 3.12 setuptools to compile runtime._syscalls: distutils is gone)
"$PIP" download -q --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --platform any \
    -d "$kit/wheels" msgspec PyYAML structlog cffi pycparser setuptools pip
t2s=$(command -v tar2sqfs) || { echo "prepare.sh: tar2sqfs missing here; apt-get install squashfs-tools-ng"; exit 1; }
cp -L "$t2s" "$kit/tar2sqfs/tar2sqfs"
# its libraries, never glibc (the device's newer glibc runs Debian 12 binaries)
ldd "$t2s" | awk '/=> \//{print $3}' | while read -r lib; do
  case $(basename "$lib") in
    libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*) ;;
    *) cp -L "$lib" "$kit/tar2sqfs/lib/" ;;
  esac
done
size=$(du -sm "$kit" | cut -f1)
ls -l "$kit/wheels" "$kit/tar2sqfs" "$kit/tar2sqfs/lib"
echo "prepare.sh: kit ready in $kit (${size} MiB)"
[ "$size" -le 50 ] || { echo "prepare.sh: the kit is ${size} MiB, over the 50 MiB limit"; exit 1; }

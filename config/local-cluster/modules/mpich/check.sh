# root hook of the local cluster's module `mpich` (tests/test_mpi.py): the host's MPICH (lib/, filled by
# tools/localcluster.py: libmpich.so.12 and its non-glibc libraries) is swapped in through
# LD_LIBRARY_PATH; this refuses, in one line, an image whose MPICH is newer than the host's
# (by the site's rule in ./compat: major | full | strict, as Sarus) or whose glibc is older
# than the host library needs. Runs as root with cwd = the container root (image mounted).
dir=$(dirname "$0")
mode=$(cat "$dir/compat" 2>/dev/null)
case $mode in major|full|strict) ;; *) echo "mpich module: $dir/compat must say major, full or strict (it says '$mode'); ask the admins" >&2; exit 1 ;; esac
# A passed check is remembered per image (node-local, root's, gone at reboot): the image id is
# its content's digest, so only the rule and the host library can change the verdict, and
# both are part of what is remembered. The next job with the image pays a stat, not the check.
cache=${MPICH_CHECK_CACHE:-/run/shifter-hpc/mpich-check}
facts="$mode $(stat -L -c '%s %Y %i' "$dir/lib/libmpich.so.12" 2>/dev/null)"
key=
case $SHIFTER_IMAGE in *[!0-9a-f]*|'') ;; *) [ ${#SHIFTER_IMAGE} -eq 64 ] && key=$cache/$SHIFTER_IMAGE ;; esac
[ -n "$key" ] && [ "$(cat "$key" 2>/dev/null)" = "$facts" ] && exit 0
# MPICH's version: the string at its symbol MPII_Version_string (read from the file, never
# run); one readelf for the symbol and the segments that place it in the file (nm -D took
# twice as long: a prolog pays this on every node of every job with the module)
version() {
  elf=$(readelf -W -l --dyn-syms "$1" 2>/dev/null)
  addr=$(printf '%s\n' "$elf" | awk '$8=="MPII_Version_string"{print $2; exit}')
  [ -n "$addr" ] || return 0
  printf '%s\n' "$elf" | awk '$1=="LOAD"{print $2, $3, $5}' | while read -r off vaddr filesz; do
    if [ $((0x$addr)) -ge $((vaddr)) ] && [ $((0x$addr)) -lt $((vaddr + filesz)) ]; then
      dd if="$1" bs=1 skip=$((0x$addr - vaddr + off)) count=24 2>/dev/null | tr '\0' '\n' | head -1
    fi
  done
}
host=$(version "$dir/lib/libmpich.so.12")
[ -n "$host" ] || { echo "mpich module: the host library $dir/lib/libmpich.so.12 is missing on this node; ask the admins" >&2; exit 1; }
lib=$(find lib lib64 usr/lib usr/lib64 usr/local/lib -name 'libmpich.so.12*' -o -name 'libmpi.so.12*' 2>/dev/null | head -1)
[ -n "$lib" ] || exit 0   # the image carries no MPICH: nothing to compare (the host's is used)
image=$(version "$lib")
[ -n "$image" ] || { echo "mpich module: cannot read the MPICH version of the image's /$lib; run without --module=mpich" >&2; exit 1; }
IFS=. read -r hM hm hp <<V
$host
V
IFS=. read -r iM im ip <<V
$image
V
ok=1
case $mode in
  strict) [ "$image" = "$host" ] || ok=0 ;;
  full) { [ "$iM.$im" = "$hM.$hm" ] && [ "${ip:-0}" -le "${hp:-0}" ]; } || ok=0 ;;
  major) { [ "$iM" = "$hM" ] && { [ "${im:-0}" -lt "${hm:-0}" ] || { [ "${im:-0}" -eq "${hm:-0}" ] && [ "${ip:-0}" -le "${hp:-0}" ]; }; }; } || ok=0 ;;
esac
[ $ok = 1 ] || { echo "mpich module: the image's MPICH $image is not compatible with this system's $host (rule: $mode); rebuild the image with an MPICH $hM.x no newer than $host, or run without --module=mpich" >&2; exit 1; }
# the newest glibc symbol version the host libraries require (their version references:
# objdump -p reads the headers, not the 40 MB of code a grep of the files did)
need=$(objdump -p "$dir"/lib/*.so* 2>/dev/null | grep -o 'GLIBC_2\.[0-9]*' | sort -Vu | tail -1)
libc=$(find lib lib64 usr/lib usr/lib64 -name 'libc.so.6' 2>/dev/null | head -1)
have=$([ -n "$libc" ] && grep -a -o 'GLIBC_2\.[0-9]*' "$libc" | sort -V | tail -1)
if [ -n "$need" ] && [ -n "$have" ] && [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | tail -1)" != "$have" ]; then
  echo "mpich module: the image's glibc ($have) is older than the host MPICH needs ($need); use an image with a newer glibc, or run without --module=mpich" >&2; exit 1
fi
[ -z "$key" ] || { mkdir -p "$cache" && printf '%s\n' "$facts" > "$key.$$" && mv "$key.$$" "$key"; } 2>/dev/null
exit 0

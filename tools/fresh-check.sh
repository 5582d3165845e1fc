#!/usr/bin/env bash
# make fresh-check: the README's quick-start commands, run on a brand-new Debian 12 root.
#
# A minimal Debian 12 (debootstrap minbase, cached) gets a clean clone of this repository's
# HEAD; it is entered with pivot_root in a mount namespace of its own (not chroot: setns() into
# a namespace made inside must find this tree as its root, as on a real machine), with /tmp a
# tmpfs (as on Debian 13 and many HPC nodes; FRESH_TMPFS=0 keeps it on the root filesystem) and
# an empty environment but HOME, PATH, LANG and CI=1 (so that no test may skip: a skip there
# would hide a missing install step). Nothing else of this machine is inherited but
# its network, CA bundle, apt proxy and pip configuration.
#
# The commands are read from README.md's "Quick start" block, so the check proves what the
# README says. Both must succeed; afterwards nothing of the fresh root may still run.
# Stop any cluster on this machine first: the network namespace (ports) is shared.
#
# The fresh root's mount namespace is made on the CPU whose next namespace id is the highest:
# on kernels that take namespace ids from per-CPU batches (6.18) the prolog's namespaces, made
# on the other CPUs, then get smaller ids than slurmd's, as for any slurmd started after boot
# in a namespace of its own; so the check meets that case every time, not on a coin toss.
#
# Env: FRESH_DIR (default /var/tmp/shifter-fresh; the debootstrap base is cached there),
#      FRESH_TMPFS (1|0), FRESH_TIMEOUT (seconds per command, default 2400).
set -euo pipefail
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
D=${FRESH_DIR:-/var/tmp/shifter-fresh}
TMPFS=${FRESH_TMPFS:-1}
TIMEOUT=${FRESH_TIMEOUT:-2400}
INCLUDE=ca-certificates,git,make,procps
base=$D/base; w=$D/root

mapfile -t cmds < <(awk '/^## Quick start/{q=1} q&&/^```bash/{b=1;next} b&&/^```/{exit} b&&NF{sub(/ *#.*/,""); print}' "$repo/README.md")
[ "${#cmds[@]}" -eq 2 ] || { echo "fresh-check: README's quick start must hold exactly two commands, found ${#cmds[@]}" >&2; exit 1; }

mkdir -p "$D"
stamp="bookworm minbase $INCLUDE"
if [ "$(cat "$D/base.stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "fresh-check: debootstrap of a Debian 12 base into $base (cached for later runs)"
  rm -rf "$base" "$D/base.stamp"; mkdir -p "$base"
  debootstrap --variant=minbase --include="$INCLUDE" bookworm "$base" >"$D/debootstrap.log" 2>&1 \
    || { echo "fresh-check: debootstrap failed (see $D/debootstrap.log)" >&2; exit 1; }
  echo "$stamp" >"$D/base.stamp"
fi

if grep -q " $w[/ ]" /proc/self/mountinfo; then
  echo "fresh-check: something is still mounted under $w (an earlier run leaked); unmount it first" >&2; exit 1
fi
rm -rf "$w"; cp -a "$base" "$w"
cp /etc/resolv.conf /etc/hosts /etc/hostname "$w/etc/" 2>/dev/null || true
cp -a /etc/apt/apt.conf.d/. "$w/etc/apt/apt.conf.d/" 2>/dev/null || true   # proxies, if any
mkdir -p "$w/usr/local/share/ca-certificates" "$w/etc/xdg"
cp /usr/local/share/ca-certificates/* "$w/usr/local/share/ca-certificates/" 2>/dev/null || true
cp /etc/pip.conf "$w/etc/pip.conf" 2>/dev/null || true
cp -a /etc/xdg/pip "$w/etc/xdg/" 2>/dev/null || true
chroot "$w" update-ca-certificates >/dev/null 2>&1 || true
git clone -q "$repo" "$w/root/project"

# the CPU whose next namespace id is the highest (none: the kernel has no NS_GET_MNTNS_ID)
newest_cpu=$(/usr/bin/python3 - <<'PY'
import ctypes, fcntl, os, struct
libc, home, best = ctypes.CDLL(None, use_errno=True), os.open("/proc/self/ns/mnt", os.O_RDONLY), None
for cpu in sorted(os.sched_getaffinity(0)):
    os.sched_setaffinity(0, {cpu})
    if libc.unshare(0x20000) != 0:
        break
    fd, buf = os.open("/proc/self/ns/mnt", os.O_RDONLY), bytearray(8)
    try:
        fcntl.ioctl(fd, 0x8008B705, buf, True)  # NS_GET_MNTNS_ID
    except OSError:
        break
    libc.setns(home, 0x20000)
    if best is None or struct.unpack("=Q", buf)[0] > best[0]:
        best = (struct.unpack("=Q", buf)[0], cpu)
print(best[1] if best else "")
PY
) || newest_cpu=
all_cpus=$(taskset -c -p $$ | sed 's/.*: //')

cat >"$D/inner.sh" <<INNER
set -u
taskset -c -p "$all_cpus" \$\$ >/dev/null || exit 1   # made on one CPU (above); runs on all
mount --make-rprivate /
mount --bind "$w" "$w"
mount -t proc proc "$w/proc"; mount --rbind /sys "$w/sys"; mount --rbind /dev "$w/dev"
mount -t tmpfs tmpfs "$w/run"
if [ "$TMPFS" = 1 ]; then mount -t tmpfs tmpfs "$w/tmp"; chmod 1777 "$w/tmp"; fi
cd "$w" && mkdir -p .oldroot && pivot_root . .oldroot && cd / && umount -l /.oldroot && rmdir /.oldroot \
  || { echo "fresh-check: pivot_root failed"; exit 1; }
run() { timeout $TIMEOUT /usr/bin/env -i HOME=/root LANG=C.UTF-8 CI=1 \
          PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
          /bin/bash -lc "cd /root/project && \$1"; }
rc=0
for i in 1 2; do
  cmd=\$(sed -n "\${i}p" /cmds); t0=\$(date +%s)
  run "\$cmd" >"/log.\$i" 2>&1; r=\$?; t1=\$(date +%s)
  echo "fresh-check: '\$cmd' rc=\$r (\$((t1-t0)) s)"; [ \$r -eq 0 ] || { rc=1; tail -30 "/log.\$i"; }
done
run "make cluster-down" >/log.down 2>&1 || { echo "fresh-check: make cluster-down failed"; tail -5 /log.down; rc=1; }
# this shell is pid 1 of the fresh root's pid namespace: every other process is left over
left=\$(ps -e -o pid=,args= | awk '\$1 != 1 && !/inner\.sh|ps -e -o|awk /')
if [ -n "\$left" ]; then
  echo "fresh-check: processes left running (killed with the namespace):"; echo "\$left"; rc=1
fi
exit \$rc
INNER
printf '%s\n' "${cmds[@]}" >"$w/cmds"
# own mount and pid namespaces: when the inner shell (pid 1 there) exits, the kernel kills
# whatever it left running, inside containers too, so nothing of the fresh root outlives it
pidns=--pid; [ "${FRESH_PIDNS:-1}" = 0 ] && pidns=
on_cpu=(); [ -n "$newest_cpu" ] && on_cpu=(taskset -c "$newest_cpu")
echo "fresh-check: the fresh root's namespace made on CPU ${newest_cpu:-any}"
rc=0; "${on_cpu[@]}" unshare --mount $pidns --fork --kill-child bash "$D/inner.sh" || rc=$?
cp "$w"/log.* "$D/" 2>/dev/null || true
echo "fresh-check: logs in $D/log.1 $D/log.2 (tmpfs /tmp: $TMPFS)"
exit $rc

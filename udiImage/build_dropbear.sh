#!/bin/sh
# Build the container's static sshd, ssh client, scp and dropbearkey from Debian's own
# dropbear source package with musl (docs/architecture.md, decision 10) and install them into DEST/bin
# (the site's /opt/udiImage content). Root; re-running it is harmless: a build of the same
# source and options is kept.
#   build_dropbear.sh DEST [WORKDIR]
set -eu
dest=$1
work=${2:-/var/cache/shifter/dropbear-build}
here=$(cd "$(dirname "$0")" && pwd)
stamp_src=$(cat "$here/localoptions.h" "$here/dropbear-shifter.patch" "$here/ssh" "$0" | sha256sum | cut -c1-16)

if [ -x "$dest/bin/dropbearmulti" ] && [ "$(cat "$dest/bin/.dropbear-build" 2>/dev/null)" = "$stamp_src" ]; then
  echo "dropbear already built in $dest/bin"
  exit 0
fi

# apt-get source needs a deb-src line for the distribution's own suites
if ! grep -rqs '^\(deb-src\|Types:.*deb-src\)' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  . /etc/os-release
  cat > /etc/apt/sources.list.d/shifter-deb-src.sources <<SRC
# added by shifter's udiImage/build_dropbear.sh: apt-get source dropbear
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $VERSION_CODENAME $VERSION_CODENAME-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  DEBIAN_FRONTEND=noninteractive apt-get update -q
fi

rm -rf "$work"
mkdir -p "$work"
cd "$work"
# the _apt sandbox user cannot write here; the download is verified against the .dsc anyway
apt-get source -q --download-only dropbear 2>&1 | grep -v 'unsandboxed' || true
dsc=$(ls dropbear_*.dsc | head -1)
dpkg-source -x "$dsc" src >/dev/null 2>&1  # unpacks, applies Debian's patches (hashes checked by apt)
cd src
patch -s -p1 < "$here/dropbear-shifter.patch"
cp "$here/localoptions.h" localoptions.h
CC=musl-gcc ./configure --enable-static --disable-zlib --disable-pam --disable-lastlog \
  --disable-utmp --disable-utmpx --disable-wtmp --disable-wtmpx --disable-loginfunc \
  --disable-pututline --disable-pututxline >configure.log 2>&1 || { tail -20 configure.log; exit 1; }
make -j"$(nproc)" PROGRAMS="dropbear dbclient dropbearkey scp" MULTI=1 STATIC=1 >make.log 2>&1 \
  || { tail -30 make.log; exit 1; }
strip dropbearmulti

mkdir -p "$dest/bin"
install -m 0755 dropbearmulti "$dest/bin/dropbearmulti.new"
mv -f "$dest/bin/dropbearmulti.new" "$dest/bin/dropbearmulti"
for name in dropbear dbclient dropbearkey scp; do
  ln -sfn dropbearmulti "$dest/bin/$name"
done
install -m 0755 "$here/ssh" "$dest/bin/ssh"
echo "$stamp_src" > "$dest/bin/.dropbear-build"
chmod -R a+rX "$dest"
echo "dropbear $(basename "$dsc" .dsc) built into $dest/bin ($(stat -c %s "$dest/bin/dropbearmulti") bytes, static)"

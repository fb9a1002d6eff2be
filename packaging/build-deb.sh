#!/usr/bin/env bash
# build-deb.sh OUTDIR: build OUTDIR/rpwrap_VERSION_ARCH.deb with dpkg-deb.
#
# The binary is static (CGO_ENABLED=0) and carries the version of
# `git describe --tags --always --dirty` (or, outside a git clone, the one
# its build information gives). rpwrap(1) and the bash completion are
# written by the binary itself (rpwrap --help-man, --help-completion) from
# the text of --help and its flag set. Set GOARCH to build for another
# architecture; the only network used is the Go module proxy.
set -euo pipefail

out=${1:?usage: packaging/build-deb.sh OUTDIR}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 022

goarch=$(go env GOARCH)
case $goarch in
amd64 | arm64 | riscv64 | ppc64le | s390x | mips64le) arch=$goarch ;;
386) arch=i386 ;;
arm) arch=armhf ;;
*) echo "build-deb.sh: no Debian architecture known for GOARCH=$goarch" >&2; exit 1 ;;
esac

# The version: git's when this is a clone, else the binary's own.
version=
if git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
	version=$(git -C "$root" describe --tags --always --dirty)
	SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct)}
fi
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(date +%s)}

build() { # build OUTPUT GOARCH: the static binary
	(cd "$root" && CGO_ENABLED=0 GOOS=linux GOARCH=$2 go build -trimpath -buildvcs=auto \
		-ldflags "-s -w${version:+ -X main.version=$version}" -o "$1" ./cmd/rpwrap)
}
build "$work/rpwrap" "$goarch"
host=$work/rpwrap # runs here to write the man page and the completion
if [ "$goarch" != "$(go env GOHOSTARCH)" ]; then
	host=$work/rpwrap-host
	build "$host" "$(go env GOHOSTARCH)"
fi
if [ -z "$version" ]; then
	version=$("$host" --version | sed -n 's/^rpwrap //p')
fi
case $version in
"" | devel) echo "build-deb.sh: no version: build from a git clone or a tagged module" >&2; exit 1 ;;
esac

# A Debian version starts with a digit and, for a native package, has no
# hyphen: v1.2.3 -> 1.2.3, v1.2.3-4-gabc-dirty -> 1.2.3+4.gabc.dirty,
# a bare commit (no tag yet) 83902cb -> 0~git20250102.83902cb, sorting
# below every release.
debversion=${version#v}
if ! [[ $debversion =~ ^[0-9]+\.[0-9] ]]; then
	debversion="0~git$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y%m%d).$debversion"
fi
debversion=$(printf '%s' "$debversion" | sed 's/-/+/; s/-/./g; s/[^A-Za-z0-9.+~]/./g')

pkg=$work/pkg
doc=$pkg/usr/share/doc/rpwrap
install -d "$pkg/DEBIAN" "$pkg/usr/bin" "$pkg/usr/share/man/man1" \
	"$pkg/usr/share/bash-completion/completions" "$doc/examples"
install -m 0755 "$work/rpwrap" "$pkg/usr/bin/rpwrap"
"$host" --help-man | gzip -9n >"$pkg/usr/share/man/man1/rpwrap.1.gz"
"$host" --help-completion >"$pkg/usr/share/bash-completion/completions/rpwrap"
chmod 0644 "$pkg/usr/share/bash-completion/completions/rpwrap"
install -D -m 0644 "$root/packaging/lintian/rpwrap" "$pkg/usr/share/lintian/overrides/rpwrap"

# Examples: the systemd units and the Apache, nginx and HAProxy setups.
install -d "$doc/examples/systemd"
install -m 0644 "$root"/systemd/examples/* "$doc/examples/systemd/"
for server in apache nginx haproxy; do
	install -d "$doc/examples/$server"
	for f in "$root/examples/$server"/*; do
		case $f in *_test.go) continue ;; esac
		mode=0644
		[ -x "$f" ] && mode=0755
		install -m "$mode" "$f" "$doc/examples/$server/"
	done
done

maintainer="rpwrap developers <rpwrap@users.noreply.github.com>"
sed "s/@YEAR@/$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y)/" "$root/packaging/copyright" >"$doc/copyright"
chmod 0644 "$doc/copyright"
{
	printf 'rpwrap (%s) unstable; urgency=medium\n\n' "$debversion"
	printf '  * Built from %s.\n\n' "$version"
	printf ' -- %s  %s\n' "$maintainer" "$(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$doc/changelog.gz"

size=$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
cat >"$pkg/DEBIAN/control" <<CONTROL
Package: rpwrap
Version: $debversion
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $size
Section: net
Priority: optional
Homepage: https://github.com/rpwrap/rpwrap
Description: zero-downtime restarts for any Linux network server
 rpwrap owns a server's listening sockets (SO_REUSEPORT), passes them to
 the server with systemd socket activation, and on restart steers new
 connections from the old process to the new one with an eBPF program on
 the reuseport group, so that no connection is refused or reset. It runs
 from a shell, under systemd (Type=notify, systemctl reload) or as a
 container's PID 1, and works with Apache, nginx, HAProxy and any server
 that accepts inherited sockets or binds its own.
CONTROL
(cd "$pkg" && find usr -type f -printf '%P\n' | sort | sed 's|^|usr/|' | xargs md5sum) >"$pkg/DEBIAN/md5sums"
chmod 0644 "$pkg/DEBIAN/control" "$pkg/DEBIAN/md5sums"
find "$pkg" -exec touch --no-dereference -d "@$SOURCE_DATE_EPOCH" {} +

deb=$out/rpwrap_${debversion}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$pkg" "$deb" >/dev/null
echo "$deb"

#!/bin/bash
# deps: everything the build and the tests need, from Debian's archive.
#  - host packages by name (bookworm), the pinned linux-source-6.12
#  - QEMU 11.1 (trixie-backports) + arm64 UEFI firmware, unpacked into
#    build/qemu without touching the system's dpkg state
#  - a static arm64 busybox, unpacked into build/arm64-busybox
# Idempotent: every step is skipped when its result is already there.
set -euo pipefail
. "$(dirname "$0")/common.sh"

KSRC_VERSION=6.12.117-1~deb12u1
PKGS="build-essential flex bison bc libelf-dev libssl-dev cpio kmod rsync
      sparse gcc-aarch64-linux-gnu libc6-dev-arm64-cross busybox-static
      python3 xz-utils git perl"

missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
		missing="$missing $p"
done
have_src=$(dpkg-query -W -f='${Version}' linux-source-6.12 2>/dev/null || true)
[ "$have_src" = "$KSRC_VERSION" ] || missing="$missing linux-source-6.12=$KSRC_VERSION"
if [ -n "$missing" ]; then
	log "apt-get install$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# A private apt configuration: its own lists, cache and (empty) status, so
# nothing of the system's package state is read or changed.
private_apt() { # dir arch suites...
	local dir=$1 arch=$2; shift 2
	mkdir -p "$dir/lists/partial" "$dir/archives/partial"
	: > "$dir/status"
	: > "$dir/sources.list"
	for s in "$@"; do
		echo "deb http://deb.debian.org/debian $s main" >> "$dir/sources.list"
	done
	APT_OPTS=(-o Dir::Etc::SourceList="$dir/sources.list"
		-o Dir::Etc::SourceParts=/dev/null
		-o Dir::State::Lists="$dir/lists" -o Dir::State::status="$dir/status"
		-o Dir::Cache::archives="$dir/archives" -o Dir::Cache="$dir"
		-o APT::Architecture="$arch" -o APT::Architectures="$arch"
		-o APT::Install-Recommends=0 -o Debug::NoLocking=1
		-o APT::Sandbox::User=root)
	apt-get "${APT_OPTS[@]}" update -qq
}

if [ ! -x "$QEMU_PREFIX/usr/bin/qemu-system-aarch64" ] ||
   [ ! -f "$QEMU_PREFIX/usr/share/qemu-efi-aarch64/QEMU_EFI.fd" ]; then
	log "QEMU 11.1 from trixie-backports into $QEMU_PREFIX"
	d=$BUILD/apt-trixie
	private_apt "$d" amd64 trixie trixie-backports
	apt-get "${APT_OPTS[@]}" -o APT::Default-Release=trixie-backports \
		-y -qq --download-only install \
		qemu-system-arm qemu-system-x86 qemu-efi-aarch64 >/dev/null
	rm -rf "$QEMU_PREFIX.tmp"
	mkdir -p "$QEMU_PREFIX.tmp"
	for deb in "$d"/archives/*.deb; do dpkg -x "$deb" "$QEMU_PREFIX.tmp"; done
	rm -rf "$QEMU_PREFIX"
	mv "$QEMU_PREFIX.tmp" "$QEMU_PREFIX"
fi

if [ ! -x "$BUILD/arm64-busybox/bin/busybox" ]; then
	log "static arm64 busybox"
	d=$BUILD/apt-arm64
	private_apt "$d" arm64 bookworm
	(cd "$d/archives" && apt-get "${APT_OPTS[@]}" download busybox-static >/dev/null)
	rm -rf "$BUILD/arm64-busybox"
	dpkg -x "$d"/archives/busybox-static_*.deb "$BUILD/arm64-busybox"
fi

# The L2 VMM of the accel_vmm stage: Debian's arm64 QEMU 11.1, run inside the
# arm64 test guest through its prefix's own loader (guest/accel). Trimmed to
# what that run loads: no docs, no ROMs or firmware of other machines (the L2
# boots the L1's QEMU_EFI.fd).
QEMU_ARM64=$BUILD/qemu-arm64
if [ ! -x "$QEMU_ARM64/usr/bin/qemu-system-aarch64" ]; then
	log "arm64 QEMU 11.1 from trixie-backports into $QEMU_ARM64"
	d=$BUILD/apt-trixie-arm64
	private_apt "$d" arm64 trixie trixie-backports
	apt-get "${APT_OPTS[@]}" -o APT::Default-Release=trixie-backports \
		-y -qq --download-only install qemu-system-arm >/dev/null
	rm -rf "$QEMU_ARM64.tmp"
	mkdir -p "$QEMU_ARM64.tmp"
	for deb in "$d"/archives/*.deb; do dpkg -x "$deb" "$QEMU_ARM64.tmp"; done
	(cd "$QEMU_ARM64.tmp" && rm -rf usr/share/doc usr/share/man usr/share/locale \
		usr/share/lintian usr/share/bug usr/share/qemu usr/share/seabios \
		usr/share/icons usr/share/applications etc/qemu-ifup etc/qemu-ifdown \
		usr/bin/qemu-system-arm usr/lib/aarch64-linux-gnu/gconv)
	rm -rf "$QEMU_ARM64"
	mv "$QEMU_ARM64.tmp" "$QEMU_ARM64"
fi

"$QEMU_PREFIX/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --library-path \
	"$QEMU_PREFIX/usr/lib/x86_64-linux-gnu:$QEMU_PREFIX/lib/x86_64-linux-gnu" \
	"$QEMU_PREFIX/usr/bin/qemu-system-aarch64" --version | head -1

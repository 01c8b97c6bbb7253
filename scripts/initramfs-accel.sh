#!/bin/bash
# initramfs-accel: build/initramfs-arm64-accel.cpio, the accel_vmm stage's
# part of the arm64 test guest's initramfs, under /accel:
#   accel            the stage's script (guest/accel)
#   qemu/            Debian's arm64 QEMU 11.1 (build/qemu-arm64, make deps):
#                    the binary and the shared libraries it loads, no more
#   QEMU_EFI.fd      the L1's UEFI image, which boots the L2 too
#   Image.gz         the L2 kernel: the arm64 test kernel itself
#   l2.cpio.gz       the L2's initramfs: busybox, guest/l2-init, edu-l2.ko
# edu-l2.ko (tests/edu-l2) is built here against build/obj-arm64 (`make M=`
# in build/edu-l2: kbuild writes its objects next to the source).
# Rebuilt only when an input is newer.
set -euo pipefail
. "$(dirname "$0")/common.sh"

obj=$BUILD/obj-arm64
qemu=$BUILD/qemu-arm64
busybox=$BUILD/arm64-busybox/bin/busybox
out=$BUILD/initramfs-arm64-accel.cpio
efi=$QEMU_PREFIX/usr/share/qemu-efi-aarch64/QEMU_EFI.fd
inputs=("$TOP/guest/accel" "$TOP/guest/l2-init" "$TOP/tests/edu-l2/edu-l2.c"
	"$TOP/tests/edu-l2/Kbuild" "$obj/arch/arm64/boot/Image"
	"$qemu/usr/bin/qemu-system-aarch64" "$efi" "$busybox")
for f in "${inputs[@]}"; do [ -f "$f" ] || die "initramfs-accel: missing $f"; done
if [ -f "$out" ] && [ -z "$(find "${inputs[@]}" -newer "$out" | head -1)" ]; then
	exit 0
fi

# The L2's edu test driver
mod=$BUILD/edu-l2
rm -rf "$mod"
mkdir -p "$mod"
cp "$TOP/tests/edu-l2/edu-l2.c" "$TOP/tests/edu-l2/Kbuild" "$mod/"
make -C "$KTREE" O="$obj" ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- \
	M="$mod" modules >"$mod/build.log" 2>&1 ||
	{ grep -E 'error|warning' "$mod/build.log" >&2; die "initramfs-accel: tests/edu-l2 does not build"; }
! grep -q 'warning:' "$mod/build.log" ||
	{ grep 'warning:' "$mod/build.log" >&2; die "initramfs-accel: tests/edu-l2 has warnings"; }

stage=$BUILD/initramfs-arm64-accel
rm -rf "$stage"
mkdir -p "$stage/accel/qemu/lib" "$stage/l2"/{bin,dev,proc,sys}

# L2's initramfs
cp "$busybox" "$stage/l2/bin/busybox"
for app in sh mount cat echo ls sed grep sleep sync dmesg poweroff readlink \
	insmod printf cut; do
	ln -s busybox "$stage/l2/bin/$app"
done
cp "$TOP/guest/l2-init" "$stage/l2/init"
cp "$mod/edu-l2.ko" "$stage/l2/"
(cd "$stage/l2" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) |
	gzip -1 > "$stage/accel/l2.cpio.gz"
rm -rf "$stage/l2"

# QEMU: the binary, then every DT_NEEDED library, found in the prefix
cp "$qemu/usr/bin/qemu-system-aarch64" "$stage/accel/qemu/"
todo=("$qemu/usr/bin/qemu-system-aarch64")
while [ ${#todo[@]} -gt 0 ]; do
	f=${todo[0]}
	todo=("${todo[@]:1}")
	for n in $(aarch64-linux-gnu-readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
		[ -e "$stage/accel/qemu/lib/$n" ] && continue
		p=
		for d in usr/lib/aarch64-linux-gnu lib/aarch64-linux-gnu usr/lib; do
			[ -e "$qemu/$d/$n" ] && { p=$qemu/$d/$n; break; }
		done
		[ -n "$p" ] || die "initramfs-accel: $n (needed by ${f##*/}) is not in $qemu"
		cp -L "$p" "$stage/accel/qemu/lib/$n"
		todo+=("$p")
	done
done
# the loader QEMU runs through (the libraries' own glibc)
cp -L "$qemu/usr/lib/ld-linux-aarch64.so.1" "$stage/accel/qemu/lib/" 2>/dev/null ||
	cp -L "$qemu/lib/ld-linux-aarch64.so.1" "$stage/accel/qemu/lib/"
mkdir -p "$stage/accel/qemu/modules"

cp "$efi" "$stage/accel/QEMU_EFI.fd"
gzip -1 < "$obj/arch/arm64/boot/Image" > "$stage/accel/Image.gz"
cp "$TOP/guest/accel" "$stage/accel/accel"

# Not compressed: what the L1 kernel's unpacking costs under KASAN and TCG
# went with the 82 MB it writes into tmpfs, not with the inflating (gzip
# 50 s, plain 62 and 84 s, each at the load of its day); plain keeps the
# L1's memory during the unpack the same and the build short.
(cd "$stage" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) > "$out.tmp"
mv "$out.tmp" "$out"
log "initramfs arm64 accel part: $(du -sh "$stage" | cut -f1) in $(du -h "$out" | cut -f1) -> ${out#$TOP/}"

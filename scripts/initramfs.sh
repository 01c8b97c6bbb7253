#!/bin/bash
# initramfs ARCH: build/initramfs-ARCH.cpio.gz = static busybox + guest/init
# + the test programs built for ARCH. Rebuilt only when an input is newer.
set -euo pipefail
. "$(dirname "$0")/common.sh"

arch=${1:?usage: initramfs.sh x86_64|arm64}
obj=$BUILD/obj-$arch
out=$BUILD/initramfs-$arch.cpio.gz
case $arch in
x86_64) busybox=/bin/busybox ;;
arm64)  busybox=$BUILD/arm64-busybox/bin/busybox ;;
esac
inputs=("$busybox" "$TOP/guest/init" "$obj"/selftests/iommufd "$obj"/selftests/iommufd_fail_nth
	"$obj/viommu-bench")
if [ "$arch" = arm64 ]; then
	"$TOP/scripts/initramfs-accel.sh"
	inputs+=("$obj/viommu-e2e" "$obj/viommu-2smmu" "$BUILD/initramfs-arm64-accel.cpio")
fi
for f in "${inputs[@]}"; do [ -f "$f" ] || die "initramfs $arch: missing $f"; done

if [ -f "$out" ] && [ -z "$(find "${inputs[@]}" -newer "$out" | head -1)" ]; then
	exit 0
fi
stage=$BUILD/initramfs-$arch
rm -rf "$stage"
mkdir -p "$stage"/{bin,sbin,dev,proc,sys,tmp,tests}
cp "$busybox" "$stage/bin/busybox"
# busybox --install needs to run the binary; list the applets we use instead.
for app in sh mount umount cat echo ls sed grep date sleep sync dmesg \
	poweroff reboot head tail mkdir rm uname wc cut tr sort basename find awk \
	timeout mkfifo; do
	ln -s busybox "$stage/bin/$app"
done
cp "$TOP/guest/init" "$stage/init"
cp "$obj"/selftests/iommufd "$obj"/selftests/iommufd_fail_nth "$obj/viommu-bench" \
	"$stage/tests/"
[ "$arch" = arm64 ] && cp "$obj/viommu-e2e" "$obj/viommu-2smmu" "$stage/tests/"
(cd "$stage" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -1 > "$out.tmp"
# arm64: the accel_vmm stage's own part (QEMU, the L2 kernel and initramfs),
# appended as a plain cpio: the kernel unpacks concatenated archives in turn,
# compressed or not; an archive starts at a multiple of 4 bytes (the kernel
# skips zeros between them).
if [ "$arch" = arm64 ]; then
	pad=$(( (4 - $(stat -c %s "$out.tmp") % 4) % 4 ))
	head -c "$pad" /dev/zero >> "$out.tmp"
	cat "$BUILD/initramfs-arm64-accel.cpio" >> "$out.tmp"
fi
mv "$out.tmp" "$out"
log "initramfs $arch: $(du -h "$out" | cut -f1) -> ${out#$TOP/}"

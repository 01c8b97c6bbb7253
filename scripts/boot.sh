#!/bin/bash
# boot ARCH MODE [PART]: boot build/obj-ARCH's kernel with its initramfs in
# QEMU (TCG) and capture the console in build/console-ARCH-MODE[-PART].log.
#   MODE=test: the guest runs the suites (guest/init); progress lines are
#              printed as the '@@' markers go by.
#   MODE=run:  the demo; the console is shown as it comes from the demo's
#              first line on (the kernel's boot log stays in the log file).
#   MODE=bench: one set of the benchmark (scripts/bench.sh), PART=SET or
#              SET-nodebug (build/obj-ARCH-nodebug's kernel, same initramfs).
#              SET mock, or smmu (arm64): under -icount, where the guest
#              clock counts the guest's instructions (a cost the host's load
#              cannot change); smmu traces the SMMUv3 command queues into
#              build/qemu-trace-arm64-bench-PART.log. SET churn: two vCPUs,
#              each a host thread (multi-threaded TCG), wall clock.
#   PART=1|2:  this guest runs only its part of the suites (guest/init), so
#              two guests of one kernel can run side by side.
# x86-64: q35. arm64: virt booted by UEFI (ACPI/IORT) with an emulated
# SMMUv3 that has stage 1 and stage 2 (stage=nested), an edu DMA device
# behind it and EL2, so the guest could run KVM.
set -euo pipefail
. "$(dirname "$0")/common.sh"

arch=${1:?usage: boot.sh x86_64|arm64 test|run|bench [PART]}
mode=${2:?usage: boot.sh x86_64|arm64 test|run|bench [PART]}
part=${3:-}
case $mode:$part in
test:|test:[12]|run:|bench:mock|bench:churn|bench:smmu) ;;
bench:mock-nodebug|bench:churn-nodebug|bench:smmu-nodebug) ;;
*) die "boot: PART is 1 or 2 (test), or mock|churn|smmu[-nodebug] (bench), not '$part'" ;;
esac
obj=$BUILD/obj-$arch
[ "${part%-nodebug}" != "$part" ] && obj=$BUILD/obj-$arch-nodebug
logf=$BUILD/console-$arch-$mode${part:+-$part}.log
name=$arch${part:+/$part}
# A whole guest; each selftest has its own 120 s limit. The arm64 guest took
# up to 1253 s beside the x86-64 build on a slow day.
timeout=${BOOT_TIMEOUT:-2400}
# One vCPU each (measured under TCG on this 2-core machine): beside the
# x86-64 kernel build (scripts/test.sh) a second arm64 vCPU mostly spins
# (iommufd suite: 502 s with two, 434 s with one), and even alone the x86-64
# suites ran slower with two (iommufd 308 s, fail_nth 86 s; one: 226, 55).
# hugepages: the selftests' hugepage variants map 2 MiB pages (up to 128 MiB).
cmdline="harness=$mode panic=-1 log_buf_len=4M hugepagesz=2M hugepages=160"
# For development: BOOT_APPEND="only=iommufd_viommu" runs one fixture only.
cmdline="$cmdline${part:+ part=$part} ${BOOT_APPEND:-}"
# make run shows the SMMUv3 driver's debug lines (the vSMMU's VMID)
[ "$mode" = run ] && cmdline="$cmdline dyndbg=\"file arm-smmu-v3-iommufd.c +p\""
[ "$mode" = bench ] && cmdline="$cmdline bench=${part%-nodebug}"

# arm64: four SMMUv3 instances, user-created (QEMU 11.1; the guest finds
# them in the IORT), each with edu devices behind it:
#   pcie.0 (stage=nested): viommu-e2e's edu;
#   A, B (stage=nested) and C (stage=1: no stage 2, so no nesting) on pxb-pcie
#   buses 0x10, 0x20, 0x30: viommu-2smmu's deva and devc behind A, devb
#   behind B, devd behind C, each behind a root port of its own.
arm64_smmus=(-device arm-smmuv3,primary-bus=pcie.0,id=smmu0,stage=nested
	     -device edu)
for s in a:0x10:nested:2 b:0x20:nested:1 c:0x30:1:1; do
	IFS=: read -r id bus stage nedu <<<"$s"
	arm64_smmus+=(-device pxb-pcie,id=pxb$id,bus_nr=$bus,bus=pcie.0
		      -device arm-smmuv3,primary-bus=pxb$id,id=smmu$id,stage=$stage)
	for ((i = 1; i <= nedu; i++)); do
		arm64_smmus+=(-device pcie-root-port,id=rp$id$i,bus=pxb$id,chassis=$((bus + i))
			      -device edu,bus=rp$id$i)
	done
done
# What the SMMUs tag translations with (the VMID of the STE they use), for
# scripts/smmu-trace.py to check viommu-2smmu's VMIDs after the run
trace=$BUILD/qemu-trace-$arch-$mode${part:+-$part}.log
arm64_trace=(-D "$trace" -trace smmu_iotlb_lookup_hit -trace smmu_iotlb_lookup_miss
	     -trace 'smmuv3_translate_*' -trace smmuv3_propagate_event)
smp=1 bench_args=()
case $mode:${part%-nodebug} in
bench:churn) smp=2 ;;
bench:mock) bench_args=(-icount shift=0) ;;
bench:smmu)
	# What the SMMUs' command queues consumed (scripts/bench.sh counts)
	bench_args=(-icount shift=0)
	arm64_trace=(-D "$trace" -trace smmuv3_cmdq_opcode
		     -trace smmuv3_cmdq_tlbi_nh_asid -trace smmuv3_cmdq_consume) ;;
esac

case $arch in
x86_64)
	args=(qemu-system-x86_64 -M q35 -cpu max -smp $smp -m 2G -no-reboot
	      -kernel "$obj/arch/x86/boot/bzImage"
	      -append "console=ttyS0 $cmdline") ;;
arm64)
	args=(qemu-system-aarch64
	      -M virt,gic-version=3,virtualization=on
	      -cpu ${ARM_CPU:-max,pauth-impdef=on} -smp $smp -m 2G
	      -bios "$QEMU_PREFIX/usr/share/qemu-efi-aarch64/QEMU_EFI.fd"
	      "${arm64_smmus[@]}" "${arm64_trace[@]}"
	      -kernel "$obj/arch/arm64/boot/Image"
	      -append "console=ttyAMA0 acpi=force $cmdline") ;;
*) die "unknown arch $arch" ;;
esac
args+=(-initrd "$BUILD/initramfs-$arch.cpio.gz" -nographic -audio none
       -nic none -monitor none -serial stdio "${bench_args[@]}")

# A test boot with the kernel, initramfs and QEMU command line of the last
# complete one is not repeated: that run's console log is the result.
# FORCE_BOOT=1 boots anyway.
if [ "$mode" = test ]; then
	image=$(printf '%s\n' "${args[@]}" | sed -n '/^-kernel$/{n;p}')
	stamp=$( { printf '%s\n' "${args[@]}"; cat "$image" \
		"$BUILD/initramfs-$arch.cpio.gz"; } | sha1sum | cut -c1-40)
	if [ "${FORCE_BOOT:-0}" != 1 ] && grep -qx '@@ done' "$logf" 2>/dev/null &&
	   [ "$(cat "$logf.stamp" 2>/dev/null)" = "$stamp" ]; then
		log "boot $name (test): nothing changed since the last run, its console log stands (FORCE_BOOT=1 boots again)"
		exit 0
	fi
	rm -f "$logf.stamp"
fi

t0=$(date +%s)
log "boot $name ($mode): console in ${logf#$TOP/}"
[ "$mode" = run ] && log "boot $name (run): booting; the demo shows here once /init starts it"
set +e +o pipefail  # QEMU's status is PIPESTATUS[0], not an error here
# QEMU is timeout's own child: --foreground signals only that one.
qemu_cmd "${args[0]}"
timeout --foreground "$timeout" "${QEMU_CMD[@]}" "${args[@]:1}" </dev/null 2>&1 |
	tr -d '\r' | tee "$logf" | while IFS= read -r line; do
	if [ "$mode" = run ]; then
		case $line in "@@ demo"*) demo=1 ;; esac
		[ -n "${demo:-}" ] && printf '%s\n' "$line"
	else case $line in
		"@@ suite "*" begin") log "boot $name:   ${line#@@ suite } ..." ;;
		"@@ suite "*" end"*)  log "boot $name:   ${line#@@ suite }" ;;
		"@@ kmemleak begin")  log "boot $name:   kmemleak scan" ;;
		"@@ bench "*)         [ "$mode" = bench ] && log "boot $name:   ${line#@@ }" ;;
	esac fi
done
rc=${PIPESTATUS[0]}
set -e -o pipefail
[ "$rc" = 124 ] && echo "@@ timeout after ${timeout}s" >> "$logf"
# viommu-2smmu's VMIDs as QEMU saw them: a suite of its own in the log
if [ "$arch" = arm64 ] && [ "$mode" != bench ]; then
	if [ "$mode" = run ]; then
		python3 "$TOP/scripts/smmu-trace.py" "$logf" "$trace"
	else
		python3 "$TOP/scripts/smmu-trace.py" "$logf" "$trace" >> "$logf"
	fi
fi
if [ "$mode" = test ] && grep -qx '@@ done' "$logf"; then
	echo "$stamp" > "$logf.stamp"
fi
if [ "$mode" = run ] && ! grep -q '^@@ demo' "$logf"; then
	log "boot $name (run): the demo never started; the boot log is ${logf#$TOP/}"
fi
log "boot $name ($mode): guest ran $(( $(date +%s) - t0 ))s"
exit 0

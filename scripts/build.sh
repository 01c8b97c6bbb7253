#!/bin/bash
# build ARCH: the test kernel for ARCH (x86_64 | arm64) from build/linux into
# build/obj-ARCH, its uAPI headers, and the iommu selftests linked statically
# against those headers. Make does the incremental work; the .config is only
# regenerated when a config fragment or a Kconfig file changed.
# KTREE/BUILD_OBJ select another tree and object dir (make check does);
# KCONFIG_LENIENT=1 lets an option the tree does not know yet pass.
# NO_E2E=1 leaves out tests/viommu-e2e.c (arm64) and tests/viommu-bench.c.
# CONFIG_EXTRA=<fragment> goes on top of the others (make bench's kernel
# without the debug options: config/nodebug.config).
set -euo pipefail
. "$(dirname "$0")/common.sh"

arch=${1:?usage: build.sh x86_64|arm64}
case $arch in
x86_64) karch=x86_64 cross= image=arch/x86/boot/bzImage target=bzImage ;;
# arm64: "modules" builds none (the config has none) but writes Module.symvers,
# which the L2 edu test module (make M=) is built against.
arm64)  karch=arm64 cross=aarch64-linux-gnu- image=arch/arm64/boot/Image target="Image modules" ;;
*) die "unknown arch $arch" ;;
esac
obj=${BUILD_OBJ:-$BUILD/obj-$arch}
logf=$obj/build.log
mkdir -p "$obj"
kmake() { make -C "$KTREE" O="$obj" ARCH=$karch CROSS_COMPILE=$cross "$@"; }

frags=("$TOP/config/common.config" "$TOP/config/$arch.config" ${CONFIG_EXTRA:+"$CONFIG_EXTRA"})
# Options a fragment asks for that the .config does not have (a later
# fragment's value wins, as in merge_config.sh)
config_drift() {
	[ -f "$obj/.config" ] || { echo missing; return; }
	sed -n 's/^\(CONFIG_[A-Z0-9_]*\)=\(.*\)/\1 \2/p' "${frags[@]}" |
	awk '{ k = $1; sub(/^[^ ]* /, ""); v[k] = $0 } END { for (s in v) print s, v[s] }' |
	while read -r sym val; do
		if [ "$val" = n ]; then
			if grep -q "^$sym=" "$obj/.config"; then echo "$sym"; fi
		elif ! grep -qx "$sym=$val" "$obj/.config"; then
			echo "$sym"
		fi
	done
}
stamp=$( (cat "${frags[@]}"; cd "$KTREE" && git ls-files -z '*Kconfig*' |
	xargs -0 cat) | sha1sum | cut -c1-40)
# Regenerate when a fragment or Kconfig changed, or when the .config drifted
# (a make in an older tree drops the options that tree does not know).
# In a lenient build (make check walking the series) options a commit does not
# know yet are expected: only a Kconfig change regenerates there.
if [ "$(cat "$obj/.config.stamp" 2>/dev/null)" != "$stamp" ] ||
   { [ "${KCONFIG_LENIENT:-0}" != 1 ] && [ -n "$(config_drift)" ]; }; then
	log "build $arch: .config = tinyconfig + ${frags[*]##*/}"
	kmake -s tinyconfig >"$logf" 2>&1
	"$KTREE/scripts/kconfig/merge_config.sh" -m -O "$obj" "$obj/.config" "${frags[@]}" >>"$logf" 2>&1
	kmake -s olddefconfig >>"$logf" 2>&1
	bad=$(config_drift)
	if [ -n "$bad" ]; then
		[ "${KCONFIG_LENIENT:-0}" = 1 ] || die "build $arch: Kconfig dropped:" $bad
		log "build $arch: not (yet) in this tree:" $bad
	fi
	echo "$stamp" > "$obj/.config.stamp"
fi

t0=$(date +%s)
log "build $arch: kernel ($target, -j$JOBS), log in ${logf#$TOP/}"
# shellcheck disable=SC2086
if ! kmake -j"$JOBS" $target >>"$logf" 2>&1; then
	grep -E 'error|Error' "$logf" | head -20 >&2
	die "build $arch: kernel build failed"
fi
kmake -s headers_install >>"$logf" 2>&1
t1=$(date +%s)

log "build $arch: iommu selftests (static)"
mkdir -p "$obj/selftests"
if ! make -C "$KTREE/tools/testing/selftests/iommu" OUTPUT="$obj/selftests" \
	CC="${cross}gcc" KHDR_INCLUDES="-isystem $obj/usr/include" \
	LDFLAGS=-static >>"$logf" 2>&1; then
	grep -E 'error' "$logf" | head -20 >&2
	die "build $arch: selftests build failed"
fi
# arm64: the end-to-end nested DMA test (a VMM in miniature, tests/); make
# check, walking the series, skips it (NO_E2E=1): it needs the whole series.
if [ "$arch" = arm64 ] && [ "${NO_E2E:-0}" != 1 ]; then
	for t in viommu-e2e viommu-2smmu; do
		"${cross}gcc" -static -O2 -Wall -Wextra -Wno-unused-parameter \
			-isystem "$obj/usr/include" -o "$obj/$t.tmp" \
			"$TOP/tests/$t.c" >>"$logf" 2>&1 ||
			die "build $arch: tests/$t.c does not build; see ${logf#"$TOP"/}"
		cmp -s "$obj/$t.tmp" "$obj/$t" 2>/dev/null &&
			rm "$obj/$t.tmp" || mv "$obj/$t.tmp" "$obj/$t"
	done
fi
# Both arches: the benchmark (make bench; make test runs it with tiny counts)
if [ "${NO_E2E:-0}" != 1 ]; then
	"${cross}gcc" -static -O2 -Wall -Wextra -Wno-unused-parameter -pthread \
		-isystem "$obj/usr/include" -I "$KTREE/drivers/iommu/iommufd" \
		-o "$obj/viommu-bench.tmp" "$TOP/tests/viommu-bench.c" >>"$logf" 2>&1 ||
		die "build $arch: tests/viommu-bench.c does not build; see ${logf#"$TOP"/}"
	cmp -s "$obj/viommu-bench.tmp" "$obj/viommu-bench" 2>/dev/null &&
		rm "$obj/viommu-bench.tmp" || mv "$obj/viommu-bench.tmp" "$obj/viommu-bench"
fi
log "build $arch: done in $(( $(date +%s) - t0 ))s (kernel $((t1 - t0))s) -> ${obj#$TOP/}/$image"

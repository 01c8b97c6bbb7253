#!/bin/bash
# test: build and boot both arches, then the summary.
# Two cores, three long stages: the arm64 guest (the longest, one busy vCPU)
# runs while the x86-64 kernel builds at a lower priority on what is left;
# the x86-64 guest runs last. Each stage still logs its own progress lines.
set -euo pipefail
. "$(dirname "$0")/common.sh"
S=$TOP/scripts

t0=$(date +%s)
"$S/build.sh" arm64
"$S/initramfs.sh" arm64
"$S/boot.sh" arm64 test &
guest=$!
rc=0
{ nice -n 10 "$S/build.sh" x86_64 && "$S/initramfs.sh" x86_64; } || rc=$?
wait "$guest" || rc=$?
[ "$rc" = 0 ] || die "test: a stage failed (see above)"
"$S/boot.sh" x86_64 test
log "test: build and boot took $(( $(date +%s) - t0 ))s"
exec python3 "$S/summary.py" x86_64="$BUILD/console-x86_64-test.log" \
	arm64="$BUILD/console-arm64-test.log"

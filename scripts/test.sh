#!/bin/bash
# test: build and boot both arches, then the summary.
# Two cores, so at most two busy things at a time:
#   1. the arm64 kernel build (-j2);
#   2. the arm64 guest (one busy vCPU) beside the x86-64 build (nice 10);
#   3. the x86-64 suites in two guests of one vCPU each (guest/init's part=1
#      and part=2, about half the time each): the first starts when the
#      x86-64 build is done, the second when the arm64 guest is.
# Each stage still logs its own progress lines.
set -euo pipefail
. "$(dirname "$0")/common.sh"
S=$TOP/scripts

t0=$(date +%s)
"$S/build.sh" arm64
"$S/initramfs.sh" arm64
"$S/boot.sh" arm64 test &
arm64_guest=$!
rc=0
{ nice -n 10 "$S/build.sh" x86_64 && "$S/initramfs.sh" x86_64; } || rc=$?
if [ "$rc" = 0 ]; then
	"$S/boot.sh" x86_64 test 1 &
	x86_part1=$!
fi
wait "$arm64_guest" || rc=$?
if [ "$rc" = 0 ]; then
	"$S/boot.sh" x86_64 test 2 || rc=$?
	wait "$x86_part1" || rc=$?
elif [ -n "${x86_part1:-}" ]; then
	wait "$x86_part1" || true
fi
[ "$rc" = 0 ] || die "test: a stage failed (see above)"
log "test: build and boot took $(( $(date +%s) - t0 ))s"
exec python3 "$S/summary.py" x86_64/1="$BUILD/console-x86_64-test-1.log" \
	x86_64/2="$BUILD/console-x86_64-test-2.log" \
	arm64="$BUILD/console-arm64-test.log"

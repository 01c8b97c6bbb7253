#!/bin/bash
# check: what a maintainer runs before taking the series.
#  1. checkpatch.pl --strict on every patch;
#  2. every patch builds on both arches (kernel + iommu selftests), in a
#     separate worktree, one commit after the other, incrementally; the first
#     patch that breaks is named;
#  3. sparse and kernel-doc on the files the series touches: no warning that
#     the base does not already have.
set -euo pipefail
. "$(dirname "$0")/common.sh"

mapfile -t SERIES < <(grep -v '^\s*\(#\|$\)' "$TOP/patches/series" | grep -v '^0000-')
fail=0

log "check: checkpatch --strict on ${#SERIES[@]} patches"
for p in "${SERIES[@]}"; do
	# GIT_DIR: outside a git checkout, or checkpatch takes a tracked .patch
	# file for a source file
	out=$(GIT_DIR=/nonexistent perl "$KTREE/scripts/checkpatch.pl" --strict --no-tree --quiet \
		--ignore FILE_PATH_CHANGES "$TOP/patches/$p" 2>&1) || true
	if [ -n "$out" ]; then
		echo "checkpatch: $p"; echo "$out" | sed 's/^/    /'
		fail=1
	fi
done
[ $fail = 0 ] || die "check: checkpatch is not clean"

# checkpatch's FILE_PATH_CHANGES only asks whether MAINTAINERS needs an
# update for new files; answer it: each new file must have a subsystem entry
# other than THE REST.
for f in $(git -C "$KTREE" diff --name-only --diff-filter=A base HEAD); do
	entries=$(cd "$KTREE" && perl scripts/get_maintainer.pl --no-git \
		--no-git-fallback --no-rolestats --no-email --no-l --subsystem -f "$f" |
		grep -v '^THE REST$' || true)
	[ -n "$entries" ] || die "check: no MAINTAINERS entry covers $f"
done

# A worktree that follows the series commit by commit; its object dirs are
# kept between runs so that each step only rebuilds what the patch changed.
wt=$BUILD/check-linux
if [ ! -d "$wt" ]; then
	git -C "$KTREE" worktree prune
	git -C "$KTREE" worktree add -q --detach "$wt" base
fi
# A commit that built on both arches before (same id: same content, same
# parents; same config fragments) is not built again.
commits=$(git -C "$KTREE" rev-list --reverse base..HEAD)
built=$BUILD/check-built.txt
frag=$(cat "$TOP"/config/*.config | sha1sum | cut -c1-12)
touch "$built"
n=0
for c in $commits; do
	n=$((n + 1))
	p=$(git -C "$KTREE" log -1 --format=%s "$c")
	if grep -qx "$c $frag" "$built"; then
		log "check: [$n/${#SERIES[@]}] built before: $p"
		continue
	fi
	git -C "$wt" checkout -q --detach "$c"
	for arch in x86_64 arm64; do
		t0=$(date +%s)
		if ! KCONFIG_LENIENT=1 NO_E2E=1 KTREE=$wt BUILD_OBJ=$BUILD/check-obj-$arch "$TOP/scripts/build.sh" "$arch" >/dev/null 2>&1; then
			log "check: patch $n, \"$p\", breaks the $arch build; see ${BUILD#$TOP/}/check-obj-$arch/build.log"
			grep -E 'error:|Error ' "$BUILD/check-obj-$arch/build.log" | head -10 >&2
			exit 1
		fi
		log "check: [$n/${#SERIES[@]}] $arch builds: $p ($(( $(date +%s) - t0 ))s)"
	done
	echo "$c $frag" >> "$built"
done

# sparse and kernel-doc, base against HEAD, on the touched C files/headers.
files=$(git -C "$KTREE" diff --name-only --diff-filter=AM base HEAD -- '*.c' '*.h' |
	grep -v '^tools/' || true)
warnings() { # rev -> warnings of sparse and kernel-doc, line numbers dropped
	git -C "$wt" checkout -q --detach "$1"
	{ for f in $files; do
		[ -f "$wt/$f" ] || continue
		perl "$wt/scripts/kernel-doc" -none "$wt/$f" 2>&1 | sed "s|$wt/||" || true
	done
	for arch in x86_64 arm64; do
		o=$BUILD/check-obj-$arch
		# sparse on the objects the test kernel has and this rev has a source for
		objs=$(for f in $files; do
			case $f in *.c) [ -f "$o/${f%.c}.o" ] && [ -f "$wt/$f" ] && echo "${f%.c}.o";; esac
		done)
		[ -n "$objs" ] || continue
		case $arch in x86_64) a="ARCH=x86_64";; arm64) a="ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu-";; esac
		# The .config of HEAD, adjusted to this rev's Kconfig without prompts
		cp "$o/.config.head" "$o/.config"
		# shellcheck disable=SC2086
		make -C "$wt" O="$o" $a -s olddefconfig >/dev/null 2>&1
		# shellcheck disable=SC2086
		make -C "$wt" O="$o" $a C=2 -j"$JOBS" $objs 2>&1 </dev/null |
			grep -E 'warning:|error:' | sed "s|$wt/||" || true
	done; } | sed -E 's/:[0-9]+(:[0-9]+)?:/:/' | LC_ALL=C sort -u
}
for arch in x86_64 arm64; do
	cp "$BUILD/check-obj-$arch/.config" "$BUILD/check-obj-$arch/.config.head"
done
if [ -n "$files" ]; then
	log "check: sparse + kernel-doc on $(echo "$files" | wc -l) touched files"
	warnings base > "$BUILD/check-warn-base.txt"
	warnings "$(git -C "$KTREE" rev-parse HEAD)" > "$BUILD/check-warn-head.txt"
	new=$(LC_ALL=C comm -13 "$BUILD/check-warn-base.txt" "$BUILD/check-warn-head.txt")
	if [ -n "$new" ]; then
		echo "new sparse/kernel-doc warnings:"; echo "$new" | sed 's/^/    /'
		exit 1
	fi
fi
log "check: all ${#SERIES[@]} patches pass"

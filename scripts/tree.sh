#!/bin/bash
# tree: build/linux = the Debian linux-source-6.12 tarball as one git commit
# tagged 'base', with patches/series applied on top by `git am`.
# A tree whose HEAD already carries the whole series is left alone, so work
# committed there is never thrown away; pass FORCE=1 to start over.
set -euo pipefail
. "$(dirname "$0")/common.sh"

[ -f "$KSRC_TARBALL" ] || die "$KSRC_TARBALL missing: run 'make deps'"
mapfile -t SERIES < <(grep -v '^\s*\(#\|$\)' "$TOP/patches/series")

git_k() { git -C "$KTREE" "$@"; }

if [ -d "$KTREE/.git" ] && [ "${FORCE:-0}" != 1 ]; then
	# Same patches (by patch-id) as base..HEAD? Then the tree is current.
	want=$(for p in "${SERIES[@]}"; do [ "$p" = 0000-cover-letter.patch ] ||
		git patch-id --stable < "$TOP/patches/$p"; done | awk '{print $1}')
	have=$(git_k log --reverse --format=%H base..HEAD | while read -r c; do
		git_k show "$c" | git patch-id --stable; done | awk '{print $1}')
	if [ "$want" = "$have" ]; then
		log "tree: $KTREE is current (${#SERIES[@]} files in series)"
		exit 0
	fi
	if [ -n "$(git_k status --porcelain --untracked-files=no)" ]; then
		die "$KTREE has uncommitted changes and differs from patches/; commit them and 'make export', or FORCE=1"
	fi
	log "tree: $KTREE differs from patches/, re-applying the series"
	git_k am --abort >/dev/null 2>&1 || true
	git_k checkout -q -B main base
else
	log "tree: unpacking $(basename "$KSRC_TARBALL")"
	rm -rf "$KTREE" "$KTREE.tmp"
	mkdir -p "$KTREE.tmp"
	tar -C "$KTREE.tmp" --strip-components=1 -xf "$KSRC_TARBALL"
	# Debian's block at the end of .gitignore ignores every top-level path.
	sed -i '/^# Debian packaging: ignore everything/,$d' "$KTREE.tmp/.gitignore"
	sed -i '${/^#$/d}' "$KTREE.tmp/.gitignore"
	mv "$KTREE.tmp" "$KTREE"
	git_k init -q -b main
	git_k config user.name "iommufd-viommu harness"
	git_k config user.email "harness@localhost"
	git_k config core.abbrev 12
	git_k add -A
	git_k commit -q -m "Linux $(make -s -C "$KTREE" kernelversion) (Debian linux-source-6.12)"
	git_k tag base
	# New commits on the series carry the series' author
	git_k config user.name "Kernel Developer"
	git_k config user.email "kdev@iommufd-viommu.example"
fi

for p in "${SERIES[@]}"; do
	[ "$p" = 0000-cover-letter.patch ] && continue
	if ! git_k am -q --keep-cr "$TOP/patches/$p" >/dev/null 2>"$BUILD/am.err"; then
		files=$(git_k am --show-current-patch=diff 2>/dev/null |
			sed -n 's|^+++ b/||p' | while read -r f; do
			git_k apply --check --include="$f" "$TOP/patches/$p" >/dev/null 2>&1 || echo "$f"; done)
		git_k am --abort
		die "patch $p does not apply (files: ${files:-see $BUILD/am.err})"
	fi
done
log "tree: base + $(git_k rev-list --count base..HEAD) patches at $(git_k rev-parse --short HEAD)"

#!/bin/bash
# export: regenerate patches/ (and series) from base..HEAD of build/linux.
# Options are chosen so that re-exporting unchanged commits gives identical
# files: no signature, no base-commit, fixed abbrev, a zero From hash.
set -euo pipefail
. "$(dirname "$0")/common.sh"

[ -d "$KTREE/.git" ] || die "no $KTREE: run 'make tree'"
[ -z "$(git -C "$KTREE" status --porcelain --untracked-files=no)" ] ||
	die "$KTREE has uncommitted changes: commit them first"
cover=$TOP/patches/0000-cover-letter.patch
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git -C "$KTREE" -c core.abbrev=12 format-patch -q --no-signature \
	--no-base --zero-commit --no-numbered --abbrev=12 \
	-o "$tmp" base..HEAD
# The cover letter is written by hand and kept as it is.
[ -f "$cover" ] && cp "$cover" "$tmp/"
find "$TOP/patches" -name '*.patch' -delete
cp "$tmp"/*.patch "$TOP/patches/"
(cd "$TOP/patches" && ls -1 ./*.patch | sed 's|^\./||' | sort) > "$TOP/patches/series"
log "export: $(grep -c . "$TOP/patches/series") files in patches/"

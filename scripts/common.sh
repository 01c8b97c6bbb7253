# Shared by every stage script: paths and two small helpers.
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=$TOP/build
KTREE=${KTREE:-$BUILD/linux}
QEMU_PREFIX=$BUILD/qemu
KSRC_TARBALL=/usr/src/linux-source-6.12.tar.xz
JOBS=${JOBS:-$(nproc)}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# QEMU_CMD = the command that runs a QEMU binary from the private prefix
# through the prefix's own loader, so its libraries never mix with the
# system's. One process (env execs the loader): a signal reaches QEMU.
qemu_cmd() { # qemu-system-<arch>
	local lib=$QEMU_PREFIX/usr/lib/x86_64-linux-gnu
	QEMU_CMD=(env QEMU_MODULE_DIR="$lib/qemu" "$lib/ld-linux-x86-64.so.2"
		--library-path "$lib:$QEMU_PREFIX/lib/x86_64-linux-gnu"
		"$QEMU_PREFIX/usr/bin/$1" -L "$QEMU_PREFIX/usr/share/qemu"
		-L "$QEMU_PREFIX/usr/share/seabios")
}

# set -e must never exit silently: say where.
set -E
trap 'echo "error: ${BASH_SOURCE[0]#$TOP/}:$LINENO: $BASH_COMMAND" >&2' ERR

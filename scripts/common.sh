# Shared by every stage script: paths and two small helpers.
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=$TOP/build
KTREE=${KTREE:-$BUILD/linux}
QEMU_PREFIX=$BUILD/qemu
KSRC_TARBALL=/usr/src/linux-source-6.12.tar.xz
JOBS=${JOBS:-$(nproc)}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Run a QEMU binary from the private prefix through the prefix's own loader,
# so its libraries never mix with the system's.
qemu() { # qemu-system-<arch> args...
	local bin=$1; shift
	QEMU_MODULE_DIR=$QEMU_PREFIX/usr/lib/x86_64-linux-gnu/qemu \
	"$QEMU_PREFIX/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" \
		--library-path "$QEMU_PREFIX/usr/lib/x86_64-linux-gnu:$QEMU_PREFIX/lib/x86_64-linux-gnu" \
		"$QEMU_PREFIX/usr/bin/$bin" -L "$QEMU_PREFIX/usr/share/qemu" \
		-L "$QEMU_PREFIX/usr/share/seabios" "$@"
}

# set -e must never exit silently: say where.
set -E
trap 'echo "error: ${BASH_SOURCE[0]#$TOP/}:$LINENO: $BASH_COMMAND" >&2' ERR

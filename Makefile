# iommufd vIOMMU for Linux 6.12 LTS: the front door.
#   make test   deps -> tree -> build + boot (arm64, x86_64) -> summary
#   make run    the arm64 demo: nested-capable SMMUv3 + edu in QEMU
#   make check  checkpatch, per-patch build on both arches, sparse, kernel-doc
#   make bench  what the series costs: one table of ratios (not in make test)
#   make tree / make export   kernel tree <-> patches/
# Every generated thing lives in build/.
S := scripts
ARCHES := x86_64 arm64

.PHONY: all test run check bench deps tree export build clean
all: test

deps:
	@$(S)/deps.sh

tree: deps
	@$(S)/tree.sh

export:
	@$(S)/export.sh

build: tree
	@for a in $(ARCHES); do $(S)/build.sh $$a && $(S)/initramfs.sh $$a || exit 1; done

# build + boot both arches (the arm64 guest runs while x86-64 builds), summary
test: tree
	@$(S)/test.sh

run: tree
	@$(S)/build.sh arm64 && $(S)/initramfs.sh arm64 && $(S)/boot.sh arm64 run

check: tree
	@$(S)/check.sh

bench: tree
	@$(S)/bench.sh

clean:
	rm -rf build/obj-* build/initramfs-* build/console-* build/edu-l2 build/qemu-trace-*

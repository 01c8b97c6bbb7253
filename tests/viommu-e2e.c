// SPDX-License-Identifier: GPL-2.0
/*
 * viommu-e2e - end-to-end test of iommufd vIOMMU nesting on an ARM SMMUv3
 *
 * Usage: viommu-e2e [-v] /dev/vfio/devices/vfioN
 *
 * Runs in an arm64 guest whose (emulated, stage=nested) SMMUv3 has a QEMU
 * edu device (1234:11e8) behind it, already bound to vfio-pci. The program
 * is both the VMM and the guest driver: the VMM part allocates the iommufd
 * objects (IOAS, nesting parent = stage 2, vIOMMU, vDEVICE, vEVENTQ, nested
 * HWPT), the guest part writes a Context Descriptor and stage-1 page tables
 * into "guest memory" and drives edu DMA through both stages.
 *
 * Guest memory is a 16 MiB anonymous buffer mapped in the IOAS at IOVA
 * 0x01000000; the stage 2 maps IOVA = guest physical address (GPA) 1:1 onto
 * it, so every GPA below is host address gmem + (GPA - 0x01000000).
 *
 *   GPA 0x01000000  Context Descriptor (one 64-byte CD, linear table)
 *   GPA 0x01001000  stage-1 level-1 table (VA[31:30], 4 entries used)
 *   GPA 0x01002000  stage-1 level-2 table (VA[29:21])
 *   GPA 0x01003000  stage-1 level-3 table (VA[20:12])
 *   GPA 0x01100000  data: DMA source page
 *   GPA 0x01101000  data: first DMA destination
 *   GPA 0x01102000  data: DMA destination after the remap
 *   GPA 0x01103000  data: destination of the plain (non-nested) DMA
 *   GPA 0x01104000  data: destination of the DMA through a bypass vSTE
 *
 * Stage-1 (guest) virtual addresses, ASID 7, 4K granule, 32-bit VA:
 *
 *   VA 0x08000000 -> GPA 0x08000000, a 2 MiB block: the host's MSI window
 *                    (the SMMU driver's IOMMU_RESV_SW_MSI), 1:1 as a guest
 *                    maps it for an IORT RMR; stage 2 maps the doorbell there
 *   VA 0x0a000000 -> GPA 0x01100000 (source)
 *   VA 0x0a001000 -> GPA 0x01101000, then remapped to GPA 0x01102000
 *   VA 0x0b000000    not mapped: the fault
 *
 * Flow (one TAP check or a few per step, see test_name[]):
 *   1  open iommufd and the vfio cdev, bind, IOAS, map guest memory, edu
 *   2  GET_HW_INFO, also asking for a type
 *   3  allow_unsafe_nesting 0 -> nesting parent refused, 1 -> stage 2
 *   4  vIOMMU (and two refused allocations); as a VMM starts: abort and
 *      bypass vSTEs attach without a vDEVICE (DMA through bypass), a
 *      stage-1 one does not
 *   5  vDEVICE (virtual SID 0x42), vEVENTQ
 *   6  nested HWPTs from illegal, abort and bypass vSTEs
 *   7  CD + tables, stage-1 nested HWPT, attach (refused while
 *      allow_unsafe_nesting is 0 again), EBUSY on destroys
 *   8  DMA RAM -> edu -> RAM through both stages
 *   9  remap, CMD_TLBI_NH_VA through the vIOMMU, DMA lands at the new GPA
 *      (9b: stage 2 changes under stage 1; 9c: an MSI of edu through both
 *      stages reaches vfio's eventfd)
 *  10  DMA to an unmapped VA -> F_TRANSLATION vEVENT with the virtual SID
 *  11  invalidation arrays with refused commands (entry_num), the bound on
 *      entry_num, arrays longer than a command batch
 *  12  teardown A: everything destroyed in order
 *  13  teardown B: rebuild; a fault after the vDEVICE is destroyed (still
 *      attached) is the host's, not the guest's; close the fds with
 *      everything alive, reuse
 *  14  KVM: the vIOMMU holds the VM (debugfs directory) until destroyed
 *
 * Output is kselftest TAP; -v adds a step-by-step narrative as '# ' lines.
 * Exit status is 1 if any check failed.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <linux/iommufd.h>
#include <linux/kvm.h>
#include <linux/vfio.h>
#include "iommufd-util.h"

/* Guest memory and the GPA layout */
#define SZ_4K			0x1000ULL
#define SZ_2M			0x200000ULL
#define GMEM_SIZE		0x1000000ULL	/* 16 MiB */
#define GMEM_GPA		0x01000000ULL
#define GPA_CD			0x01000000ULL
#define GPA_L1			0x01001000ULL
#define GPA_L2			0x01002000ULL
#define GPA_L3			0x01003000ULL
#define GPA_DATA		0x01100000ULL
#define GPA_SRC			0x01100000ULL
#define GPA_DST_A		0x01101000ULL
#define GPA_DST_B		0x01102000ULL
#define GPA_DST_C		0x01103000ULL
#define GPA_DST_D		0x01104000ULL

/* Stage-1 virtual addresses (all in the 2 MiB covered by the L3 table) */
#define VA_SRC			0x0a000000ULL
#define VA_DST			0x0a001000ULL
#define VA_FAULT		0x0b000000ULL
/* A GPA mapped on its own in the IOAS, to change stage 2 under stage 1 */
#define GPA_S2			0x02000000ULL
#define VA_S2			0x0a002000ULL
/* The SMMUv3 driver's MSI window (IOMMU_RESV_SW_MSI), mapped 1:1 */
#define MSI_WINDOW		0x08000000ULL

#define ASID			0x7
#define VSID			0x42		/* virtual Stream ID of edu */
#define VSID_NONE		0x99		/* a virtual SID with no vDEVICE */
#define VEVENTQ_DEPTH		16

/* STE (vSTE) words 0 and 1 */
#define STE0_V			(1ULL << 0)
#define STE0_CFG(x)		((uint64_t)(x) << 1)
#define STE_CFG_ABORT		0x0
#define STE_CFG_BYPASS		0x4
#define STE_CFG_S1		0x5
#define STE_CFG_S2		0x6
#define STE0_S1FMT_LINEAR	(0ULL << 4)
#define STE0_S1CTXPTR_MASK	0x000fffffffffffc0ULL	/* bits[51:6] */
#define STE0_S1CDMAX(x)		((uint64_t)(x) << 59)
#define STE1_S1DSS_TERM		(0ULL << 0)
#define STE1_S1CIR_WBRA		(1ULL << 2)
#define STE1_S1COR_WBRA		(1ULL << 4)
#define STE1_S1CSH_ISH		(3ULL << 6)
#define STE1_SHCFG_INCOMING	(1ULL << 44)		/* not the guest's */

/* Context Descriptor words 0, 1, 3 */
#define CD0_T0SZ(x)		((uint64_t)(x) << 0)
#define CD0_TG0_4K		(0ULL << 6)
#define CD0_IRGN0_WBRA		(1ULL << 8)
#define CD0_ORGN0_WBRA		(1ULL << 10)
#define CD0_SH0_ISH		(3ULL << 12)
#define CD0_EPD1		(1ULL << 30)
#define CD0_V			(1ULL << 31)
#define CD0_IPS_40BIT		(2ULL << 32)
#define CD0_AA64		(1ULL << 41)
#define CD0_R			(1ULL << 45)
#define CD0_A			(1ULL << 46)
#define CD0_ASID(x)		((uint64_t)(x) << 48)
#define CD1_TTB0_MASK		0x000ffffffffffff0ULL	/* bits[51:4] */
#define CD3_MAIR_ATTR0_WB	0xffULL
#define CD_SIZE			64
#define S1_VA_BITS		32

/* Stage-1 descriptors, AArch64 4K granule */
#define PTE_TABLE		0x3ULL
#define PTE_PAGE		0x3ULL
#define PTE_BLOCK		0x1ULL
#define PTE_ATTRINDX(x)		((uint64_t)(x) << 2)
#define PTE_AP_RW_EL0		(1ULL << 6)
#define PTE_SH_ISH		(3ULL << 8)
#define PTE_AF			(1ULL << 10)
#define PTE_ADDR_MASK		0x0000fffffffff000ULL
#define S1_L1_IDX(va)		(((va) >> 30) & 0x3)
#define S1_L2_IDX(va)		(((va) >> 21) & 0x1ff)
#define S1_L3_IDX(va)		(((va) >> 12) & 0x1ff)

/* SMMUv3 commands */
#define CMD_CFGI_STE		0x03
#define CMD_CFGI_CD		0x05
#define CMD_CFGI_CD_ALL		0x06
#define CMD_TLBI_NH_ALL		0x10
#define CMD_TLBI_NH_ASID	0x11
#define CMD_TLBI_NH_VA		0x12
#define CMD_TLBI_S12_VMALL	0x28
#define CMD0_SSID(x)		((uint64_t)(x) << 12)
#define CMD0_SID(x)		((uint64_t)(x) << 32)
#define CMD0_ASID(x)		((uint64_t)(x) << 48)
#define CMD1_LEAF		1ULL
#define CMD1_VA_MASK		(~0xfffULL)

/* SMMUv3 event records */
#define EVT_F_TRANSLATION	0x10
#define EVT0_ID(w)		((w) & 0xff)
#define EVT0_SID(w)		((w) >> 32)
#define EVQ_TIMEOUT_MS		5000
#define HOST_EVT_LOG		"event 0x10 received"	/* arm_smmu_evtq_thread() */
#define EVQ_REC_SIZE		(sizeof(struct iommufd_vevent_header) + \
				 sizeof(struct iommu_vevent_arm_smmuv3))

/* edu, BAR0 */
#define EDU_IDENT		0x00
#define EDU_LIVENESS		0x04
#define EDU_DMA_SRC		0x80
#define EDU_DMA_DST		0x88
#define EDU_DMA_CNT		0x90
#define EDU_DMA_CMD		0x98
#define EDU_IRQ_RAISE		0x60
#define EDU_IRQ_ACK		0x64
#define EDU_IRQ_BIT		0x100
#define MSI_TIMEOUT_MS		5000
#define EDU_IDENT_VAL		0x010000edU
#define EDU_CMD_START		0x1
#define EDU_CMD_TO_RAM		0x2
#define EDU_BUF			0x40000ULL
#define EDU_DMA_LIMIT		0x10000000ULL		/* 28-bit DMA mask */
#define EDU_POLL_NS		10000000L		/* 10 ms */
#define EDU_POLL_TRIES		1000
#define EDU_LIVENESS_VAL	0x12345678U
#define DMA_LEN			4096
#define FAULT_LEN		256

#define PCI_CMD_OFF		0x04
#define PCI_CMD_MEMORY		0x2
#define PCI_CMD_MASTER		0x4

#define PATTERN_1		0x5a
#define PATTERN_2		0xc3
#define PATTERN_3		0x3c
#define POISON			0xee
#define HEX_BYTES		16

#define UNSAFE_NESTING_PARAM	"/sys/module/arm_smmu_v3/parameters/allow_unsafe_nesting"
#define KVM_DEBUGFS		"/sys/kernel/debug/kvm"

/* The TAP checks, in order */
enum {
	T_OPEN, T_BIND, T_IOAS, T_EDU,
	T_HWINFO, T_HWINFO_TYPE,
	T_UNSAFE0, T_UNSAFE1,
	T_VIOMMU, T_VIOMMU_TYPE, T_VIOMMU_IOAS,
	T_GBPA_ABORT, T_GBPA_BYPASS, T_S1_NOVDEV,
	T_VDEV, T_VEVENTQ,
	T_VSTE_SHCFG, T_VSTE_S2, T_VSTE_ABORT, T_VSTE_BYPASS,
	T_NESTED, T_ATTACH_UNSAFE, T_ATTACH, T_BUSY_NESTED, T_BUSY_VIOMMU, T_BUSY_S2,
	T_DMA1, T_DMA1_ONLY,
	T_TLBI, T_DMA2, T_DMA2_OLD,
	T_S2_DMA1, T_S2_REMAP, T_S2_OLD,
	T_MSI,
	T_EVQ_EMPTY, T_FAULT_EVT, T_FAULT_HDR, T_FAULT_ID, T_FAULT_SID,
	T_FAULT_ADDR,
	T_INV_BADSID, T_INV_S12, T_INV_STE, T_INV_OK,
	T_INV_BOUND, T_INV_MANY, T_INV_LATE,
	T_A_DETACH, T_A_NESTED, T_A_VDEV, T_A_VEVENTQ_BUSY, T_A_VEVENTQ,
	T_A_S2_BUSY, T_A_VIOMMU, T_A_S2, T_A_IOAS,
	T_B_BUILD, T_B_STALE_LOG, T_B_STALE_EVQ, T_B_VFIO_CLOSE, T_B_CLOSE, T_B_REBIND, T_B_ATTACH, T_B_DMA,
	T_KVM_VM, T_KVM_VIOMMU, T_KVM_HELD, T_KVM_GONE, T_KVM_CLEAN,
	T_COUNT
};

static const char *const test_name[T_COUNT] = {
	[T_OPEN]	= "open /dev/iommu and the vfio cdev",
	[T_BIND]	= "VFIO_DEVICE_BIND_IOMMUFD gives a device ID",
	[T_IOAS]	= "IOAS allocated, guest memory mapped at GPA 0x01000000",
	[T_EDU]		= "edu BAR0: ident 0x010000ed, liveness, memory and bus master on",
	[T_HWINFO]	= "GET_HW_INFO: ARM SMMUv3 with S1P and S2P",
	[T_HWINFO_TYPE]	= "GET_HW_INFO for type ARM_SMMUV3: the same; TEGRA241_CMDQV, INTEL_VTD: EOPNOTSUPP",
	[T_UNSAFE0]	= "allow_unsafe_nesting=0: nesting parent refused with EOPNOTSUPP",
	[T_UNSAFE1]	= "allow_unsafe_nesting=1: nesting parent (stage 2) allocated",
	[T_VIOMMU]	= "vIOMMU ARM_SMMUV3 allocated on the stage 2",
	[T_VIOMMU_TYPE]	= "vIOMMU of type DEFAULT refused with EOPNOTSUPP",
	[T_VIOMMU_IOAS]	= "vIOMMU on an IOAS ID refused with ENOENT",
	[T_GBPA_ABORT]	= "no vDEVICE yet: attach to an abort vSTE HWPT works",
	[T_GBPA_BYPASS]	= "no vDEVICE yet: attach to a bypass vSTE HWPT works, DMA to GPA 0x01104000 lands (stage 2 alone)",
	[T_S1_NOVDEV]	= "no vDEVICE yet: attach to a stage-1 vSTE HWPT refused with ENOENT",
	[T_VDEV]	= "vDEVICE allocated with virtual SID 0x42",
	[T_VEVENTQ]	= "vEVENTQ ARM_SMMUV3 allocated, depth 16",
	[T_VSTE_SHCFG]	= "nested HWPT from a vSTE with SHCFG set refused with EIO",
	[T_VSTE_S2]	= "nested HWPT from a vSTE with Config=stage-2 refused with EIO",
	[T_VSTE_ABORT]	= "nested HWPT from an abort vSTE allocated and destroyed",
	[T_VSTE_BYPASS]	= "nested HWPT from a bypass vSTE allocated and destroyed",
	[T_NESTED]	= "nested HWPT from a stage-1 vSTE (CD at GPA 0x01000000) allocated",
	[T_ATTACH_UNSAFE] = "allow_unsafe_nesting=0 again: nested attach refused with EINVAL",
	[T_ATTACH]	= "device attached to the nested HWPT",
	[T_BUSY_NESTED]	= "destroying the attached nested HWPT fails with EBUSY",
	[T_BUSY_VIOMMU]	= "destroying the vIOMMU in use fails with EBUSY",
	[T_BUSY_S2]	= "destroying the stage 2 in use fails with EBUSY",
	[T_DMA1]	= "DMA to VA 0x0a001000 lands at GPA 0x01101000 (both stages)",
	[T_DMA1_ONLY]	= "GPA 0x01102000 untouched by the first DMA",
	[T_TLBI]	= "remap + CMD_TLBI_NH_VA through the vIOMMU: success, entry_num 1",
	[T_DMA2]	= "after the remap, DMA to VA 0x0a001000 lands at GPA 0x01102000",
	[T_DMA2_OLD]	= "GPA 0x01101000 still holds the first pattern",
	[T_S2_DMA1]	= "DMA to VA 0x0a002000 lands in host page X at GPA 0x02000000",
	[T_S2_REMAP]	= "stage 2 remapped to page Y (IOAS unmap+map, no guest TLBI): DMA lands in Y",
	[T_S2_OLD]	= "host page X untouched after the stage-2 remap",
	[T_MSI]		= "MSI of edu through both stages (doorbell in stage 2) signals the vfio eventfd",
	[T_EVQ_EMPTY]	= "vEVENTQ empty before the fault",
	[T_FAULT_EVT]	= "DMA to unmapped VA 0x0b000000 raises a vEVENT",
	[T_FAULT_HDR]	= "vEVENT header: flags 0, sequence 0",
	[T_FAULT_ID]	= "vEVENT is F_TRANSLATION (0x10)",
	[T_FAULT_SID]	= "vEVENT StreamID is the virtual SID 0x42",
	[T_FAULT_ADDR]	= "vEVENT InputAddr is VA 0x0b000000",
	[T_INV_BADSID]	= "invalidate [NH_ASID, CFGI_CD vSID 0x99, NH_ALL]: EIO, entry_num 1",
	[T_INV_S12]	= "invalidate [NH_ALL, TLBI_S12_VMALL]: EIO, entry_num 1",
	[T_INV_STE]	= "invalidate [CFGI_STE vSID 0x42]: EIO, entry_num 0",
	[T_INV_OK]	= "invalidate [CFGI_CD, CFGI_CD_ALL vSID 0x42, NH_ALL]: success, entry_num 3",
	[T_INV_BOUND]	= "invalidate with entry_num (1 << 19) + 1: EINVAL, entry_num 0, at once",
	[T_INV_MANY]	= "invalidate 4096 NH_ASID commands in one call: success, entry_num 4096",
	[T_INV_LATE]	= "invalidate [129 NH_ASID, CFGI_STE]: EIO, entry_num 129",
	[T_A_DETACH]	= "teardown A: device detached",
	[T_A_NESTED]	= "teardown A: nested HWPT destroyed",
	[T_A_VDEV]	= "teardown A: vDEVICE destroyed",
	[T_A_VEVENTQ_BUSY] = "teardown A: vEVENTQ with its fd open: destroy fails with EBUSY",
	[T_A_VEVENTQ]	= "teardown A: vEVENTQ fd closed, vEVENTQ destroyed",
	[T_A_S2_BUSY]	= "teardown A: stage 2 held by the vIOMMU: destroy fails with EBUSY",
	[T_A_VIOMMU]	= "teardown A: vIOMMU destroyed",
	[T_A_S2]	= "teardown A: stage 2 destroyed",
	[T_A_IOAS]	= "teardown A: guest memory unmapped, IOAS destroyed",
	[T_B_BUILD]	= "teardown B: IOAS, S2, vIOMMU, vDEVICE, vEVENTQ, nested HWPT rebuilt, attached",
	[T_B_STALE_LOG]	= "teardown B: vDEVICE destroyed, still attached: a fault goes to the host log",
	[T_B_STALE_EVQ]	= "teardown B: ... and not to the vEVENTQ under the old virtual SID",
	[T_B_VFIO_CLOSE] = "teardown B: vfio fd closed first, the vDEVICE ID then gives ENOENT",
	[T_B_CLOSE]	= "teardown B: vIOMMU still busy, vEVENTQ fd and iommufd closed with it alive",
	[T_B_REBIND]	= "teardown B: cdev reopened and bound to a new iommufd",
	[T_B_ATTACH]	= "teardown B: plain IOAS attach works",
	[T_B_DMA]	= "teardown B: DMA through the plain IOAS lands at IOVA 0x01103000",
	[T_KVM_VM]	= "KVM: VM and VFIO device created, cdev added, VM in debugfs",
	[T_KVM_VIOMMU]	= "KVM: device bound, stage 2 and vIOMMU allocated",
	[T_KVM_HELD]	= "KVM: VM alive after closing its fds (held by the vIOMMU)",
	[T_KVM_GONE]	= "KVM: VM gone after destroying the vIOMMU",
	[T_KVM_CLEAN]	= "KVM: stage 2 and IOAS destroyed",
};

struct ctx {
	const char *cdev;
	int iommufd;
	int vfd;
	int evfd;
	uint32_t dev_id;
	uint32_t ioas_id;
	uint32_t s2_id;
	uint32_t viommu_id;
	uint32_t vdev_id;
	uint32_t veventq_id;
	uint32_t nested_id;
	bool attached;
	bool edu_ok;
	uint64_t bar0_off;
	uint64_t cfg_off;
	uint8_t *gmem;
	unsigned int stray_events;	/* vEVENTs seen outside step 10 */
};

static bool verbose;
static unsigned int next_test, n_pass, n_fail, n_skip;

/* ---- TAP ---- */

static void vlog(const char *fmt, ...)
{
	va_list ap;

	if (!verbose)
		return;
	va_start(ap, fmt);
	vdiag(fmt, ap);
	va_end(ap);
}

static void tap_result(unsigned int t, bool pass, const char *skip)
{
	if (skip) {
		printf("ok %u - %s # SKIP %s\n", t + 1, test_name[t], skip);
		n_skip++;
	} else if (pass) {
		printf("ok %u - %s\n", t + 1, test_name[t]);
		n_pass++;
	} else {
		printf("not ok %u - %s\n", t + 1, test_name[t]);
		n_fail++;
	}
	next_test = t + 1;
}

/* Checks before @t that were never reported fail with @why. */
static void fail_until(unsigned int t, const char *why)
{
	while (next_test < t && next_test < T_COUNT) {
		diag("%s", why);
		tap_result(next_test, false, NULL);
	}
}

/* Report check @t; on failure, @fmt says why (as a diagnostic line). */
static bool check(unsigned int t, bool pass, const char *fmt, ...)
{
	va_list ap;

	if (t < next_test) {
		diag("internal error: test %u reported twice", t + 1);
		return pass;
	}
	fail_until(t, "not reached (internal error)");
	if (!pass && fmt) {
		va_start(ap, fmt);
		vdiag(fmt, ap);
		va_end(ap);
	}
	tap_result(t, pass, NULL);
	return pass;
}

static void fail_range(unsigned int first, unsigned int last, const char *why)
{
	fail_until(first, "not reached (internal error)");
	fail_until(last + 1, why);
}

static void skip_range(unsigned int first, unsigned int last, const char *why)
{
	unsigned int t;

	fail_until(first, "not reached (internal error)");
	for (t = first; t <= last; t++)
		tap_result(t, true, why);
}

/* Pass iff @rc is -@err (or 0 for @err == 0). */
static bool check_err(unsigned int t, int rc, int err, const char *what)
{
	return check(t, rc == -err, "%s: got %s, expected %s", what, ename(rc),
		     ename(err));
}

/* ---- KVM ---- */

static int kvm_add_vfio_file(int kvm_dev_fd, int vfd)
{
	struct kvm_device_attr attr = {
		.group = KVM_DEV_VFIO_FILE,
		.attr = KVM_DEV_VFIO_FILE_ADD,
		.addr = (uintptr_t)&vfd,
	};

	return xioctl(kvm_dev_fd, KVM_SET_DEVICE_ATTR, &attr);
}

static int kvm_create_vfio_dev(int vmfd, int *dev_fd)
{
	struct kvm_create_device cmd = { .type = KVM_DEV_TYPE_VFIO };
	int rc = xioctl(vmfd, KVM_CREATE_DEVICE, &cmd);

	*dev_fd = rc ? -1 : (int)cmd.fd;
	return rc;
}

/* ---- edu ---- */

static int edu_rd32(struct ctx *c, uint32_t reg, uint32_t *val)
{
	uint32_t v = 0;
	int rc = vfio_rw(c->vfd, false, &v, 4, c->bar0_off + reg);

	*val = le32toh(v);
	return rc;
}

static int edu_wr32(struct ctx *c, uint32_t reg, uint32_t val)
{
	uint32_t v = htole32(val);

	return vfio_rw(c->vfd, true, &v, 4, c->bar0_off + reg);
}

static int edu_wr64(struct ctx *c, uint32_t reg, uint64_t val)
{
	uint64_t v = htole64(val);

	return vfio_rw(c->vfd, true, &v, 8, c->bar0_off + reg);
}

static int pci_cmd_enable(struct ctx *c, uint16_t *readback)
{
	uint16_t v = 0;
	int rc;

	rc = vfio_rw(c->vfd, false, &v, 2, c->cfg_off + PCI_CMD_OFF);
	if (rc)
		return rc;
	v = htole16(le16toh(v) | PCI_CMD_MEMORY | PCI_CMD_MASTER);
	rc = vfio_rw(c->vfd, true, &v, 2, c->cfg_off + PCI_CMD_OFF);
	if (rc)
		return rc;
	rc = vfio_rw(c->vfd, false, &v, 2, c->cfg_off + PCI_CMD_OFF);
	*readback = le16toh(v);
	return rc;
}

/* Regions, PCI command, ident, liveness. Returns NULL or what failed. */
static const char *edu_setup(struct ctx *c, char *buf, size_t len)
{
	uint64_t bar_size, cfg_size;
	uint32_t ident = 0, live = 0;
	uint16_t cmd = 0;
	int rc;

	c->edu_ok = false;
	rc = vfio_region(c->vfd, VFIO_PCI_BAR0_REGION_INDEX, &c->bar0_off,
			 &bar_size);
	if (!rc)
		rc = vfio_region(c->vfd, VFIO_PCI_CONFIG_REGION_INDEX,
				 &c->cfg_off, &cfg_size);
	if (rc || bar_size < EDU_DMA_CMD + 4) {
		snprintf(buf, len, "region info: %s, BAR0 size 0x%" PRIx64,
			 ename(rc), bar_size);
		return buf;
	}
	/* vfio-pci refuses BAR accesses while memory decoding is off */
	rc = pci_cmd_enable(c, &cmd);
	if (rc || (cmd & (PCI_CMD_MEMORY | PCI_CMD_MASTER)) !=
		  (PCI_CMD_MEMORY | PCI_CMD_MASTER)) {
		snprintf(buf, len, "PCI command: %s, reads 0x%04x", ename(rc),
			 cmd);
		return buf;
	}
	rc = edu_rd32(c, EDU_IDENT, &ident);
	if (rc || ident != EDU_IDENT_VAL) {
		snprintf(buf, len, "ident: %s, read 0x%08x", ename(rc), ident);
		return buf;
	}
	rc = edu_wr32(c, EDU_LIVENESS, EDU_LIVENESS_VAL);
	if (!rc)
		rc = edu_rd32(c, EDU_LIVENESS, &live);
	if (rc || live != (uint32_t)~EDU_LIVENESS_VAL) {
		snprintf(buf, len, "liveness: %s, read 0x%08x, expected 0x%08x",
			 ename(rc), live, ~EDU_LIVENESS_VAL);
		return buf;
	}
	vlog("edu: BAR0 at region offset 0x%" PRIx64 " (0x%" PRIx64
	     " bytes), ident 0x%08x, PCI command 0x%04x", c->bar0_off,
	     bar_size, ident, cmd);
	c->edu_ok = true;
	return NULL;
}

/* Start a DMA and wait for the device to clear the start bit. */
static int edu_dma(struct ctx *c, uint64_t src, uint64_t dst, uint32_t cnt,
		   uint32_t cmd)
{
	struct timespec ts = { .tv_nsec = EDU_POLL_NS };
	uint32_t v;
	int i, rc;

	if (src >= EDU_DMA_LIMIT || dst >= EDU_DMA_LIMIT)
		return -ERANGE;
	__sync_synchronize();	/* guest memory written before the DMA */
	rc = edu_wr64(c, EDU_DMA_SRC, src);
	if (!rc)
		rc = edu_wr64(c, EDU_DMA_DST, dst);
	if (!rc)
		rc = edu_wr64(c, EDU_DMA_CNT, cnt);
	if (!rc)
		rc = edu_wr32(c, EDU_DMA_CMD, cmd | EDU_CMD_START);
	if (rc)
		return rc;
	/* The transfer runs on a QEMU timer ~100 ms later: wait for it. */
	for (i = 0; i < EDU_POLL_TRIES; i++) {
		nanosleep(&ts, NULL);
		rc = edu_rd32(c, EDU_DMA_CMD, &v);
		if (rc)
			return rc;
		if (!(v & EDU_CMD_START)) {
			__sync_synchronize();
			return 0;
		}
	}
	return -ETIMEDOUT;
}

/* Guest memory at @iova (through the IOMMU) -> edu buffer */
static int edu_from_ram(struct ctx *c, uint64_t iova, uint32_t len)
{
	return edu_dma(c, iova, EDU_BUF, len, 0);
}

/* edu buffer -> guest memory at @iova (through the IOMMU) */
static int edu_to_ram(struct ctx *c, uint64_t iova, uint32_t len)
{
	return edu_dma(c, EDU_BUF, iova, len, EDU_CMD_TO_RAM);
}

/* ---- guest memory, stage-1 structures ---- */

static uint8_t *gpa_ptr(struct ctx *c, uint64_t gpa)
{
	return c->gmem + (gpa - GMEM_GPA);
}

static void gpa_put64(struct ctx *c, uint64_t gpa, uint64_t val)
{
	uint64_t v = htole64(val);

	memcpy(gpa_ptr(c, gpa), &v, sizeof(v));
}

static uint64_t gpa_get64(struct ctx *c, uint64_t gpa)
{
	uint64_t v;

	memcpy(&v, gpa_ptr(c, gpa), sizeof(v));
	return le64toh(v);
}

static uint8_t *gmem_alloc(void)
{
	size_t len = GMEM_SIZE + SZ_2M;
	uint8_t *p, *aligned;
	uintptr_t head;

	p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	/* 2 MiB aligned, so the stage 2 may use block mappings */
	aligned = (uint8_t *)(((uintptr_t)p + SZ_2M - 1) & ~(SZ_2M - 1));
	head = aligned - p;
	if (head)
		munmap(p, head);
	if (len - head > GMEM_SIZE)
		munmap(aligned + GMEM_SIZE, len - head - GMEM_SIZE);
	memset(aligned, 0, GMEM_SIZE);
	return aligned;
}

static uint64_t vste_s1(void)
{
	return STE0_V | STE0_CFG(STE_CFG_S1) | STE0_S1FMT_LINEAR |
	       (GPA_CD & STE0_S1CTXPTR_MASK) | STE0_S1CDMAX(0);
}

static uint64_t vste_s1_word1(void)
{
	return STE1_S1DSS_TERM | STE1_S1CIR_WBRA | STE1_S1COR_WBRA |
	       STE1_S1CSH_ISH;
}

static uint64_t cd_word0(void)
{
	return CD0_T0SZ(64 - S1_VA_BITS) | CD0_TG0_4K | CD0_IRGN0_WBRA |
	       CD0_ORGN0_WBRA | CD0_SH0_ISH | CD0_EPD1 | CD0_V |
	       CD0_IPS_40BIT | CD0_AA64 | CD0_R | CD0_A | CD0_ASID(ASID);
}

static uint64_t s1_l3_addr(uint64_t va)
{
	return GPA_L3 + 8 * S1_L3_IDX(va);
}

/* Point @va at @gpa; @va must be in the 2 MiB of VA_SRC (one L3 table). */
static void s1_set_page(struct ctx *c, uint64_t va, uint64_t gpa)
{
	uint64_t pte = (gpa & PTE_ADDR_MASK) | PTE_PAGE | PTE_ATTRINDX(0) |
		       PTE_AP_RW_EL0 | PTE_SH_ISH | PTE_AF;

	if ((va & ~(SZ_2M - 1)) != (VA_SRC & ~(SZ_2M - 1))) {
		diag("internal error: VA 0x%" PRIx64 " outside the L3 table", va);
		return;
	}
	gpa_put64(c, s1_l3_addr(va), pte);
	vlog("stage 1: L3[%" PRIu64 "] at GPA 0x%08" PRIx64 " = 0x%016" PRIx64
	     " (VA 0x%08" PRIx64 " -> GPA 0x%08" PRIx64 ")", S1_L3_IDX(va),
	     s1_l3_addr(va), pte, va, gpa);
}

static void s1_build(struct ctx *c)
{
	uint64_t l1e = GPA_L1 + 8 * S1_L1_IDX(VA_SRC);
	uint64_t l2e = GPA_L2 + 8 * S1_L2_IDX(VA_SRC);
	int i;

	memset(gpa_ptr(c, GPA_CD), 0, GPA_DATA - GPA_CD);
	gpa_put64(c, GPA_CD + 0, cd_word0());
	gpa_put64(c, GPA_CD + 8, GPA_L1 & CD1_TTB0_MASK);
	gpa_put64(c, GPA_CD + 24, CD3_MAIR_ATTR0_WB);
	gpa_put64(c, l1e, GPA_L2 | PTE_TABLE);
	gpa_put64(c, l2e, GPA_L3 | PTE_TABLE);
	/* The MSI window 1:1, a 2 MiB block, as a guest maps an RMR */
	gpa_put64(c, GPA_L2 + 8 * S1_L2_IDX(MSI_WINDOW),
		  (MSI_WINDOW & PTE_ADDR_MASK) | PTE_BLOCK | PTE_ATTRINDX(0) |
		  PTE_AP_RW_EL0 | PTE_SH_ISH | PTE_AF);
	for (i = 0; i < CD_SIZE / 8; i += 4)
		vlog("CD at GPA 0x%08" PRIx64 ", words %d-%d: %016" PRIx64
		     " %016" PRIx64 " %016" PRIx64 " %016" PRIx64, GPA_CD, i,
		     i + 3, gpa_get64(c, GPA_CD + 8 * i),
		     gpa_get64(c, GPA_CD + 8 * (i + 1)),
		     gpa_get64(c, GPA_CD + 8 * (i + 2)),
		     gpa_get64(c, GPA_CD + 8 * (i + 3)));
	vlog("stage 1: L1[%" PRIu64 "] at GPA 0x%08" PRIx64 " = 0x%016" PRIx64,
	     S1_L1_IDX(VA_SRC), l1e, gpa_get64(c, l1e));
	vlog("stage 1: L2[%" PRIu64 "] at GPA 0x%08" PRIx64 " = 0x%016" PRIx64,
	     S1_L2_IDX(VA_SRC), l2e, gpa_get64(c, l2e));
	vlog("stage 1: L2[%" PRIu64 "] = 0x%016" PRIx64
	     " (VA 0x%08" PRIx64 " -> GPA 0x%08" PRIx64 ", 2 MiB: MSI window)",
	     S1_L2_IDX(MSI_WINDOW),
	     gpa_get64(c, GPA_L2 + 8 * S1_L2_IDX(MSI_WINDOW)), MSI_WINDOW,
	     MSI_WINDOW);
	s1_set_page(c, VA_SRC, GPA_SRC);
	s1_set_page(c, VA_DST, GPA_DST_A);
}

/* ---- data patterns ---- */

static uint8_t pattern_byte(uint8_t seed, size_t i)
{
	return seed ^ (uint8_t)(i * 7 + (i >> 8) * 13);
}

static void pattern_fill(struct ctx *c, uint64_t gpa, uint8_t seed)
{
	uint8_t *p = gpa_ptr(c, gpa);
	size_t i;

	for (i = 0; i < DMA_LEN; i++)
		p[i] = pattern_byte(seed, i);
}

/* Index of the first byte that differs from the pattern, DMA_LEN if none */
static size_t pattern_cmp(struct ctx *c, uint64_t gpa, uint8_t seed)
{
	const uint8_t *p = gpa_ptr(c, gpa);
	size_t i;

	for (i = 0; i < DMA_LEN; i++)
		if (p[i] != pattern_byte(seed, i))
			break;
	return i;
}

static void poison(struct ctx *c, uint64_t gpa)
{
	memset(gpa_ptr(c, gpa), POISON, DMA_LEN);
}

static bool poisoned(struct ctx *c, uint64_t gpa)
{
	const uint8_t *p = gpa_ptr(c, gpa);
	size_t i;

	for (i = 0; i < DMA_LEN; i++)
		if (p[i] != POISON)
			return false;
	return true;
}

static void hex_line(struct ctx *c, const char *what, uint64_t gpa, bool force)
{
	const uint8_t *p = gpa_ptr(c, gpa);
	char line[3 * HEX_BYTES + 1];
	int i;

	if (!verbose && !force)
		return;
	for (i = 0; i < HEX_BYTES; i++)
		snprintf(line + 3 * i, 4, " %02x", p[i]);
	diag("%s GPA 0x%08" PRIx64 ":%s ...", what, gpa, line);
}

/* ---- vEVENTQ ---- */

static void evt_print(const struct iommufd_vevent_header *h,
		      const struct iommu_vevent_arm_smmuv3 *e, bool force)
{
	if (!verbose && !force)
		return;
	if (!e) {
		diag("vEVENT flags 0x%x sequence %u (no record)", h->flags,
		     h->sequence);
		return;
	}
	diag("vEVENT flags 0x%x sequence %u: %016" PRIx64 " %016" PRIx64
	     " %016" PRIx64 " %016" PRIx64, h->flags, h->sequence,
	     (uint64_t)le64toh(e->evt[0]), (uint64_t)le64toh(e->evt[1]),
	     (uint64_t)le64toh(e->evt[2]), (uint64_t)le64toh(e->evt[3]));
	diag("  event ID 0x%02" PRIx64 ", StreamID 0x%" PRIx64
	     ", InputAddr 0x%" PRIx64, EVT0_ID(le64toh(e->evt[0])),
	     EVT0_SID(le64toh(e->evt[0])), (uint64_t)le64toh(e->evt[2]));
}

/*
 * Read what is queued, waiting up to @timeout_ms for the first event.
 * Returns the number of bytes read, 0 if nothing came, or -errno.
 */
static ssize_t evq_read(int evfd, int timeout_ms, void *buf, size_t len)
{
	struct pollfd pfd = { .fd = evfd, .events = POLLIN };
	ssize_t n;
	int rc;

	rc = poll(&pfd, 1, timeout_ms);
	if (rc < 0)
		return -errno;
	if (!rc)
		return 0;
	n = read(evfd, buf, len);
	return n < 0 ? -errno : n;
}

/* Walk the records in @buf; returns how many there were. */
static unsigned int evq_parse(const uint8_t *buf, size_t len, bool force)
{
	struct iommufd_vevent_header h;
	struct iommu_vevent_arm_smmuv3 e;
	unsigned int count = 0;
	size_t off = 0;

	while (off + sizeof(h) <= len) {
		memcpy(&h, buf + off, sizeof(h));
		off += sizeof(h);
		count++;
		if (h.flags & IOMMU_VEVENTQ_FLAG_LOST_EVENTS ||
		    off + sizeof(e) > len) {
			evt_print(&h, NULL, force);
			continue;
		}
		memcpy(&e, buf + off, sizeof(e));
		off += sizeof(e);
		evt_print(&h, &e, force);
	}
	return count;
}

/* Read and show everything queued now; returns the number of records. */
static unsigned int evq_drain(struct ctx *c, bool force)
{
	uint8_t buf[VEVENTQ_DEPTH * EVQ_REC_SIZE];
	unsigned int count = 0;
	ssize_t n;

	if (c->evfd < 0)
		return 0;
	while ((n = evq_read(c->evfd, 0, buf, sizeof(buf))) > 0)
		count += evq_parse(buf, n, force);
	if (n < 0)
		diag("vEVENTQ read: %s", ename(n));
	return count;
}

/* After a failed DMA: show the SMMU's view of it, if it reported any. */
static void evq_explain(struct ctx *c)
{
	unsigned int n = evq_drain(c, true);

	if (n)
		diag("(%u vEVENT(s) pending after the failure, shown above)", n);
	c->stray_events += n;
}

/* ---- misc ---- */

static int set_unsafe_nesting(int val)
{
	return write_param(UNSAFE_NESTING_PARAM, val);
}

static bool is_dir(const char *path)
{
	struct stat st;

	return !stat(path, &st) && S_ISDIR(st.st_mode);
}

/* The debugfs directory of our VM, "<pid>-<vmfd>"; false if none. */
static bool kvm_find_vm_dir(int vmfd, char *path, size_t len)
{
	char prefix[32], exact[32];
	struct dirent *de;
	bool found = false;
	DIR *d;

	snprintf(prefix, sizeof(prefix), "%d-", (int)getpid());
	snprintf(exact, sizeof(exact), "%d-%d", (int)getpid(), vmfd);
	d = opendir(KVM_DEBUGFS);
	if (!d)
		return false;
	while ((de = readdir(d))) {
		if (strncmp(de->d_name, prefix, strlen(prefix)))
			continue;
		snprintf(path, len, "%s/%s", KVM_DEBUGFS, de->d_name);
		found = true;
		if (!strcmp(de->d_name, exact))
			break;
	}
	closedir(d);
	return found;
}

/* Physical RID of the device, to show it differs from the virtual SID */
static void show_rid(struct ctx *c)
{
	const char *name = strrchr(c->cdev, '/');
	char link[256], path[128];
	unsigned int dom, bus, dev, fn;
	const char *bdf;
	ssize_t n;

	snprintf(path, sizeof(path), "/sys/class/vfio-dev/%s/device",
		 name ? name + 1 : c->cdev);
	n = readlink(path, link, sizeof(link) - 1);
	if (n <= 0)
		return;
	link[n] = '\0';
	bdf = strrchr(link, '/');
	bdf = bdf ? bdf + 1 : link;
	if (sscanf(bdf, "%x:%x:%x.%x", &dom, &bus, &dev, &fn) != 4)
		return;
	vlog("edu is PCI %s, RID 0x%04x; its virtual SID will be 0x%x", bdf,
	     bus << 8 | dev << 3 | fn, VSID);
	if ((bus << 8 | dev << 3 | fn) == VSID)
		diag("warning: the physical RID equals the virtual SID 0x%x",
		     VSID);
}

/* ---- step 1: open, bind, IOAS, guest memory, edu ---- */

static int step_open(struct ctx *c)
{
	char why[160];
	const char *err;
	int rc;

	vlog("step 1: open /dev/iommu and %s, bind, map guest memory", c->cdev);
	c->iommufd = open("/dev/iommu", O_RDWR);
	rc = c->iommufd < 0 ? -errno : 0;
	c->vfd = open(c->cdev, O_RDWR);
	if (!check(T_OPEN, c->iommufd >= 0 && c->vfd >= 0,
		   "/dev/iommu: %s, %s: %s", ename(rc), c->cdev,
		   ename(c->vfd < 0 ? -errno : 0)))
		return -1;
	show_rid(c);

	rc = vfio_bind(c->vfd, c->iommufd, &c->dev_id);
	vlog("bound to the iommufd: dev_id %u", c->dev_id);
	if (!check(T_BIND, !rc && c->dev_id > 0, "bind: %s, dev_id %u",
		   ename(rc), c->dev_id))
		return -1;

	c->gmem = gmem_alloc();
	rc = c->gmem ? ioas_alloc(c->iommufd, &c->ioas_id) : -ENOMEM;
	if (!rc)
		rc = ioas_map(c->iommufd, c->ioas_id, c->gmem, GMEM_SIZE,
			      GMEM_GPA);
	vlog("IOAS %u: guest memory %p (16 MiB) at GPA 0x%08" PRIx64, c->ioas_id,
	     (void *)c->gmem, GMEM_GPA);
	if (!check(T_IOAS, !rc, "IOAS alloc/map: %s", ename(rc)))
		return -1;

	err = edu_setup(c, why, sizeof(why));
	check(T_EDU, !err, "edu: %s", err);
	return 0;
}

/* ---- step 2: GET_HW_INFO ---- */

/* IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV, which an SMMU without CMDQV lacks */
#define HW_INFO_TYPE_TEGRA241_CMDQV	3

static void step_hw_info(struct ctx *c)
{
	struct iommu_hw_info_arm_smmuv3 info = { 0 }, info2 = { 0 };
	uint32_t type = 0, type2, cmdqv_type, vtd_type;
	int rc, rc2, cmdqv_rc, vtd_rc, i;

	vlog("step 2: IOMMU_GET_HW_INFO");
	rc = get_hw_info(c->iommufd, c->dev_id, &info, &type);
	vlog("data type %u, IIDR 0x%08x, AIDR 0x%08x", type, info.iidr,
	     info.aidr);
	for (i = 0; i < 6; i++)
		vlog("  IDR%d = 0x%08x", i, info.idr[i]);
	check(T_HWINFO, !rc && type == IOMMU_HW_INFO_TYPE_ARM_SMMUV3 &&
			(info.idr[0] & 0x3) == 0x3,
	      "hw_info: %s, type %u (expected %u), IDR0 0x%08x (S1P|S2P = 0x3)",
	      ename(rc), type, IOMMU_HW_INFO_TYPE_ARM_SMMUV3, info.idr[0]);

	/* As QEMU's cmdqv=auto probes: by type, a missing one is refused */
	type2 = IOMMU_HW_INFO_TYPE_ARM_SMMUV3;
	rc2 = get_hw_info(c->iommufd, c->dev_id, &info2, &type2);
	cmdqv_type = HW_INFO_TYPE_TEGRA241_CMDQV;
	cmdqv_rc = get_hw_info(c->iommufd, c->dev_id, &info2, &cmdqv_type);
	vtd_type = IOMMU_HW_INFO_TYPE_INTEL_VTD;
	vtd_rc = get_hw_info(c->iommufd, c->dev_id, &info2, &vtd_type);
	vlog("asking for ARM_SMMUV3: %s; TEGRA241_CMDQV: %s; INTEL_VTD: %s",
	     ename(rc2), ename(cmdqv_rc), ename(vtd_rc));
	check(T_HWINFO_TYPE, !rc2 && type2 == IOMMU_HW_INFO_TYPE_ARM_SMMUV3 &&
			     !memcmp(&info, &info2, sizeof(info)) &&
			     cmdqv_rc == -EOPNOTSUPP && vtd_rc == -EOPNOTSUPP,
	      "ARM_SMMUV3: %s, type %u; TEGRA241_CMDQV: %s; INTEL_VTD: %s",
	      ename(rc2), type2, ename(cmdqv_rc), ename(vtd_rc));
}

/* ---- step 3: allow_unsafe_nesting and the stage 2 ---- */

static int step_s2(struct ctx *c)
{
	uint32_t id;
	int prc, rc;

	vlog("step 3: nesting parent with allow_unsafe_nesting 0, then 1");
	prc = set_unsafe_nesting(0);
	rc = s2_alloc(c->iommufd, c->dev_id, c->ioas_id, &id);
	if (!rc)
		iommu_destroy(c->iommufd, id);
	check(T_UNSAFE0, !prc && rc == -EOPNOTSUPP,
	      "writing 0 to %s: %s; nesting parent alloc: got %s, expected %s",
	      UNSAFE_NESTING_PARAM, ename(prc), ename(rc), ename(EOPNOTSUPP));

	prc = set_unsafe_nesting(1);
	rc = s2_alloc(c->iommufd, c->dev_id, c->ioas_id, &c->s2_id);
	vlog("stage 2 (nesting parent HWPT) %u on IOAS %u", c->s2_id, c->ioas_id);
	check(T_UNSAFE1, !prc && !rc,
	      "writing 1 to %s: %s; nesting parent alloc: %s",
	      UNSAFE_NESTING_PARAM, ename(prc), ename(rc));
	return rc ? -1 : 0;
}

/* ---- step 4: vIOMMU ---- */

static int step_viommu(struct ctx *c)
{
	uint32_t id;
	int rc;

	vlog("step 4: vIOMMU on the stage 2");
	rc = viommu_alloc(c->iommufd, IOMMU_VIOMMU_TYPE_ARM_SMMUV3, c->dev_id,
			  c->s2_id, &c->viommu_id);
	vlog("vIOMMU %u on stage 2 %u", c->viommu_id, c->s2_id);
	check(T_VIOMMU, !rc && c->viommu_id, "vIOMMU alloc: %s", ename(rc));

	rc = viommu_alloc(c->iommufd, IOMMU_VIOMMU_TYPE_DEFAULT, c->dev_id,
			  c->s2_id, &id);
	if (!rc)
		iommu_destroy(c->iommufd, id);
	check_err(T_VIOMMU_TYPE, rc, EOPNOTSUPP, "type DEFAULT");

	rc = viommu_alloc(c->iommufd, IOMMU_VIOMMU_TYPE_ARM_SMMUV3, c->dev_id,
			  c->ioas_id, &id);
	if (!rc)
		iommu_destroy(c->iommufd, id);
	check_err(T_VIOMMU_IOAS, rc, ENOENT, "hwpt_id = IOAS");
	return c->viommu_id ? 0 : -1;
}


/* ---- step 5: vDEVICE, vEVENTQ ---- */

static void step_vdev_veventq(struct ctx *c)
{
	int rc;

	vlog("step 5: vDEVICE and vEVENTQ");
	rc = vdevice_alloc(c->iommufd, c->viommu_id, c->dev_id, VSID,
			   &c->vdev_id);
	vlog("vDEVICE %u: dev_id %u is virtual SID 0x%x on vIOMMU %u",
	     c->vdev_id, c->dev_id, VSID, c->viommu_id);
	check(T_VDEV, !rc && c->vdev_id, "vDEVICE alloc: %s", ename(rc));

	rc = veventq_alloc(c->iommufd, c->viommu_id,
			   IOMMU_VEVENTQ_TYPE_ARM_SMMUV3, VEVENTQ_DEPTH,
			   &c->veventq_id, &c->evfd);
	vlog("vEVENTQ %u, fd %d", c->veventq_id, c->evfd);
	check(T_VEVENTQ, !rc && c->veventq_id && c->evfd >= 0,
	      "vEVENTQ alloc: %s, fd %d", ename(rc), c->evfd);
}

/* ---- step 6: vSTE validation ---- */

static void vste_refused(struct ctx *c, unsigned int t, uint64_t w0,
			 uint64_t w1)
{
	uint32_t id;
	int rc;

	rc = nested_alloc(c->iommufd, c->dev_id, c->viommu_id, w0, w1, &id);
	if (!rc)
		iommu_destroy(c->iommufd, id);
	vlog("vSTE 0x%016" PRIx64 " 0x%016" PRIx64 ": %s", w0, w1, ename(rc));
	check_err(t, rc, EIO, "nested HWPT alloc");
}

static void vste_accepted(struct ctx *c, unsigned int t, uint64_t w0)
{
	uint32_t id;
	int rc, drc = -EINVAL;

	rc = nested_alloc(c->iommufd, c->dev_id, c->viommu_id, w0, 0, &id);
	if (!rc)
		drc = iommu_destroy(c->iommufd, id);
	vlog("vSTE 0x%016" PRIx64 " 0: HWPT %u, %s, destroy %s", w0, id,
	     ename(rc), ename(drc));
	check(t, !rc && !drc, "alloc: %s, destroy: %s", ename(rc),
	      rc ? "not tried" : ename(drc));
}

static void step_vste(struct ctx *c)
{
	uint64_t s1 = vste_s1(), s1w1 = vste_s1_word1();
	uint64_t s2cfg = (s1 & ~STE0_CFG(0x7)) | STE0_CFG(STE_CFG_S2);

	vlog("step 6: nested HWPTs from illegal and from abort/bypass vSTEs");
	vste_refused(c, T_VSTE_SHCFG, s1, s1w1 | STE1_SHCFG_INCOMING);
	vste_refused(c, T_VSTE_S2, s2cfg, s1w1);
	vste_accepted(c, T_VSTE_ABORT, STE0_V | STE0_CFG(STE_CFG_ABORT));
	vste_accepted(c, T_VSTE_BYPASS, STE0_V | STE0_CFG(STE_CFG_BYPASS));
}

/* ---- step 7: stage-1 nested HWPT, attach, EBUSY ---- */

static void busy_destroy(struct ctx *c, unsigned int t, uint32_t *id,
			 const char *what)
{
	int rc;

	if (!*id) {
		check(t, false, "no %s to destroy", what);
		return;
	}
	rc = iommu_destroy(c->iommufd, *id);
	if (!rc)
		*id = 0;	/* it is gone, whatever the check says */
	check_err(t, rc, EBUSY, what);
}

static void step_nested(struct ctx *c)
{
	uint32_t pt;
	int rc;

	vlog("step 7: CD and stage-1 tables in guest memory, nested HWPT");
	s1_build(c);
	vlog("vSTE 0x%016" PRIx64 " 0x%016" PRIx64, vste_s1(), vste_s1_word1());
	rc = nested_alloc(c->iommufd, c->dev_id, c->viommu_id, vste_s1(),
			  vste_s1_word1(), &c->nested_id);
	vlog("nested HWPT %u on vIOMMU %u", c->nested_id, c->viommu_id);
	check(T_NESTED, !rc && c->nested_id, "nested HWPT alloc: %s",
	      ename(rc));

	/* Each nested device is checked, not only the parent's (no S2FWB) */
	pt = c->nested_id;
	rc = set_unsafe_nesting(0);
	if (!rc) {
		rc = c->nested_id ? vfio_attach(c->vfd, &pt) : -ENOENT;
		if (!rc)
			vfio_detach(c->vfd);
		if (set_unsafe_nesting(1))
			diag("allow_unsafe_nesting=1 again failed");
	}
	vlog("allow_unsafe_nesting=0: attach to HWPT %u: %s", c->nested_id,
	     ename(rc));
	check_err(T_ATTACH_UNSAFE, rc, EINVAL, "nested attach");

	pt = c->nested_id;
	rc = c->nested_id ? vfio_attach(c->vfd, &pt) : -ENOENT;
	c->attached = !rc;
	vlog("device attached to HWPT %u", pt);
	check(T_ATTACH, !rc && pt == c->nested_id,
	      "attach: %s, pt_id out %u (expected %u)", ename(rc), pt,
	      c->nested_id);

	busy_destroy(c, T_BUSY_NESTED, &c->nested_id, "nested HWPT");
	busy_destroy(c, T_BUSY_VIOMMU, &c->viommu_id, "vIOMMU");
	busy_destroy(c, T_BUSY_S2, &c->s2_id, "stage 2");
}

/* ---- steps 8, 9: DMA through both stages ---- */

/* RAM (source VA) -> edu -> RAM (destination VA) */
static int dma_copy(struct ctx *c, uint64_t src, uint64_t dst)
{
	int rc;

	vlog("edu DMA: 0x%08" PRIx64 " -> edu 0x%" PRIx64 " -> 0x%08" PRIx64
	     ", %d bytes each way", src, EDU_BUF, dst, DMA_LEN);
	rc = edu_from_ram(c, src, DMA_LEN);
	if (!rc)
		rc = edu_to_ram(c, dst, DMA_LEN);
	if (rc)
		diag("edu DMA: %s", ename(rc));
	return rc;
}

static bool check_pattern(struct ctx *c, unsigned int t, uint64_t gpa,
			  uint8_t seed, int dma_rc)
{
	size_t at = pattern_cmp(c, gpa, seed);
	bool pass = !dma_rc && at == DMA_LEN;

	if (!pass && at < DMA_LEN)
		diag("GPA 0x%08" PRIx64 " byte %zu is 0x%02x, expected 0x%02x",
		     gpa, at, gpa_ptr(c, gpa)[at], pattern_byte(seed, at));
	hex_line(c, "  data at", gpa, !pass);
	return check(t, pass, dma_rc ? "DMA did not complete" : NULL);
}

static bool check_poisoned(struct ctx *c, unsigned int t, uint64_t gpa,
			   int dma_rc)
{
	bool pass = !dma_rc && poisoned(c, gpa);

	hex_line(c, "  data at", gpa, !pass);
	return check(t, pass, dma_rc ? "DMA did not complete" :
		     "GPA 0x%08" PRIx64 " was written", gpa);
}

/*
 * What a VMM does at start, before the guest installs any STE (QEMU 11.1 with
 * arm-smmuv3,accel=on): the device goes to an abort or a bypass vSTE, as the
 * guest's SMMU_GBPA says, with no vDEVICE yet. Only the guest's own stage 1
 * needs the device known to the vIOMMU.
 */
static void step_gbpa(struct ctx *c)
{
	uint32_t abort_id = 0, bypass_id = 0, s1_id = 0, pt;
	int rc, drc = 0;

	vlog("step 4b: as a VMM at start: abort and bypass vSTEs, no vDEVICE");
	rc = nested_alloc(c->iommufd, c->dev_id, c->viommu_id,
			  STE0_V | STE0_CFG(STE_CFG_ABORT), 0, &abort_id);
	pt = abort_id;
	if (!rc)
		rc = vfio_attach(c->vfd, &pt);
	vlog("abort vSTE HWPT %u, attach: %s", abort_id, ename(rc));
	check(T_GBPA_ABORT, !rc && pt == abort_id, "abort vSTE: %s", ename(rc));

	rc = nested_alloc(c->iommufd, c->dev_id, c->viommu_id,
			  STE0_V | STE0_CFG(STE_CFG_BYPASS), 0, &bypass_id);
	pt = bypass_id;
	if (!rc)
		rc = vfio_attach(c->vfd, &pt);
	vlog("bypass vSTE HWPT %u, attach: %s", bypass_id, ename(rc));
	if (!rc && c->edu_ok) {
		/* Bypass: the stage 2 alone, IOVA = GPA */
		pattern_fill(c, GPA_SRC, PATTERN_1);
		poison(c, GPA_DST_D);
		drc = dma_copy(c, GPA_SRC, GPA_DST_D);
	}
	if (rc || !c->edu_ok)
		check(T_GBPA_BYPASS, false, "bypass vSTE: %s%s", ename(rc),
		      c->edu_ok ? "" : ", no edu");
	else
		check_pattern(c, T_GBPA_BYPASS, GPA_DST_D, PATTERN_1, drc);
	poison(c, GPA_DST_D);

	/* The tables do not matter: the attach is refused before any use */
	rc = nested_alloc(c->iommufd, c->dev_id, c->viommu_id, vste_s1(),
			  vste_s1_word1(), &s1_id);
	pt = s1_id;
	if (!rc)
		rc = vfio_attach(c->vfd, &pt);
	vlog("stage-1 vSTE HWPT %u, attach without a vDEVICE: %s", s1_id,
	     ename(rc));
	check_err(T_S1_NOVDEV, rc, ENOENT, "stage-1 vSTE attach");

	vfio_detach(c->vfd);
	if (s1_id)
		iommu_destroy(c->iommufd, s1_id);
	if (bypass_id)
		iommu_destroy(c->iommufd, bypass_id);
	if (abort_id)
		iommu_destroy(c->iommufd, abort_id);
}

static void step_dma(struct ctx *c)
{
	int rc;

	vlog("step 8: DMA through stage 1 (VA) and stage 2 (GPA)");
	if (!c->edu_ok || !c->attached) {
		fail_range(T_DMA1, T_DMA1_ONLY, "no edu or no nested attach");
		return;
	}
	pattern_fill(c, GPA_SRC, PATTERN_1);
	poison(c, GPA_DST_A);
	poison(c, GPA_DST_B);
	hex_line(c, "source", GPA_SRC, false);
	rc = dma_copy(c, VA_SRC, VA_DST);
	if (rc || pattern_cmp(c, GPA_DST_A, PATTERN_1) != DMA_LEN)
		evq_explain(c);
	vlog("after the DMA:");
	check_pattern(c, T_DMA1, GPA_DST_A, PATTERN_1, rc);
	check_poisoned(c, T_DMA1_ONLY, GPA_DST_B, rc);
}

static void step_remap(struct ctx *c)
{
	struct iommu_viommu_arm_smmuv3_invalidate inv = {
		.cmd = { htole64(CMD_TLBI_NH_VA | CMD0_ASID(ASID)),
			 htole64((VA_DST & CMD1_VA_MASK) | CMD1_LEAF) },
	};
	uint32_t num = 1;
	int rc;

	vlog("step 9: remap VA 0x%08" PRIx64 " to GPA 0x%08" PRIx64
	     ", CMD_TLBI_NH_VA", VA_DST, GPA_DST_B);
	s1_set_page(c, VA_DST, GPA_DST_B);
	__sync_synchronize();
	rc = viommu_invalidate(c->iommufd, c->viommu_id, &inv, &num);
	vlog("CMD_TLBI_NH_VA %016" PRIx64 " %016" PRIx64 ": %s, entry_num %u",
	     (uint64_t)le64toh(inv.cmd[0]), (uint64_t)le64toh(inv.cmd[1]),
	     ename(rc), num);
	check(T_TLBI, !rc && num == 1, "invalidate: %s, entry_num %u",
	      ename(rc), num);

	if (!c->edu_ok || !c->attached) {
		fail_range(T_DMA2, T_DMA2_OLD, "no edu or no nested attach");
		return;
	}
	pattern_fill(c, GPA_SRC, PATTERN_2);
	poison(c, GPA_DST_B);
	hex_line(c, "source", GPA_SRC, false);
	rc = dma_copy(c, VA_SRC, VA_DST);
	if (rc || pattern_cmp(c, GPA_DST_B, PATTERN_2) != DMA_LEN)
		evq_explain(c);
	vlog("after the DMA:");
	check_pattern(c, T_DMA2, GPA_DST_B, PATTERN_2, rc);
	check_pattern(c, T_DMA2_OLD, GPA_DST_A, PATTERN_1, rc);
}

/*
 * Change stage 2 under a live stage-1 mapping: the kernel must invalidate the
 * combined TLB entries of the vSMMU's VMID on its own, the guest does not
 * know its stage 2 changed.
 */
static void step_s2_remap(struct ctx *c)
{
	uint8_t *x, *y;
	uint32_t num = 1;
	int rc;
	struct iommu_viommu_arm_smmuv3_invalidate inv = {
		.cmd = { htole64(CMD_TLBI_NH_VA | CMD0_ASID(ASID)),
			 htole64((VA_S2 & CMD1_VA_MASK) | CMD1_LEAF) },
	};

	vlog("step 9b: stage 2 changes under stage 1");
	if (!c->edu_ok || !c->attached) {
		fail_range(T_S2_DMA1, T_S2_OLD, "no edu or no nested attach");
		return;
	}
	x = mmap(NULL, 2 * SZ_4K, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (x == MAP_FAILED) {
		fail_range(T_S2_DMA1, T_S2_OLD, "no memory");
		return;
	}
	y = x + SZ_4K;
	memset(x, POISON, 2 * SZ_4K);
	pattern_fill(c, GPA_SRC, PATTERN_3);

	rc = ioas_map(c->iommufd, c->ioas_id, x, SZ_4K, GPA_S2);
	s1_set_page(c, VA_S2, GPA_S2);
	__sync_synchronize();
	if (!rc)
		rc = viommu_invalidate(c->iommufd, c->viommu_id, &inv, &num);
	if (!rc)
		rc = dma_copy(c, VA_SRC, VA_S2);
	check(T_S2_DMA1, !rc && x[0] == pattern_byte(PATTERN_3, 0) &&
		  x[DMA_LEN - 1] == pattern_byte(PATTERN_3, DMA_LEN - 1),
	      "map %s, X[0] %#x", ename(rc), x[0]);
	vlog("page X (GPA 0x%08" PRIx64 "): %02x %02x %02x %02x ...", GPA_S2,
	     x[0], x[1], x[2], x[3]);

	memset(x, POISON, SZ_4K);
	rc = ioas_unmap(c->iommufd, c->ioas_id, GPA_S2, SZ_4K, NULL);
	if (!rc)
		rc = ioas_map(c->iommufd, c->ioas_id, y, SZ_4K, GPA_S2);
	if (!rc)
		rc = dma_copy(c, VA_SRC, VA_S2);
	check(T_S2_REMAP, !rc && y[0] == pattern_byte(PATTERN_3, 0) &&
		  y[DMA_LEN - 1] == pattern_byte(PATTERN_3, DMA_LEN - 1),
	      "remap %s, Y[0] %#x", ename(rc), y[0]);
	check(T_S2_OLD, x[0] == POISON && x[DMA_LEN - 1] == POISON,
	      "X[0] %#x", x[0]);
	vlog("after the remap, page Y: %02x %02x %02x %02x ..., page X: %02x",
	     y[0], y[1], y[2], y[3], x[0]);

	gpa_put64(c, s1_l3_addr(VA_S2), 0);
	ioas_unmap(c->iommufd, c->ioas_id, GPA_S2, SZ_4K, NULL);
	munmap(x, 2 * SZ_4K);
}

/* ---- step 9c: MSI through both stages ---- */

/* @efd >= 0: edu's MSI signals @efd; < 0: MSI off */
static int vfio_msi(int vfd, int efd)
{
	struct {
		struct vfio_irq_set set;
		int32_t fd;
	} cmd = {
		.set = {
			.argsz = efd >= 0 ? sizeof(cmd) : sizeof(cmd.set),
			.flags = VFIO_IRQ_SET_ACTION_TRIGGER |
				 (efd >= 0 ? VFIO_IRQ_SET_DATA_EVENTFD :
					     VFIO_IRQ_SET_DATA_NONE),
			.index = VFIO_PCI_MSI_IRQ_INDEX,
			.count = efd >= 0 ? 1 : 0,
		},
		.fd = efd,
	};

	return xioctl(vfd, VFIO_DEVICE_SET_IRQS, &cmd);
}

/*
 * The device's MSI write goes through the guest's stage 1, which maps the MSI
 * window 1:1, then the stage 2, where the kernel maps the interrupt
 * controller's doorbell when vfio sets the MSI up: the host interrupt signals
 * vfio's eventfd, as it would inject into a guest.
 */
static void step_msi(struct ctx *c)
{
	struct pollfd pfd = { .events = POLLIN };
	uint64_t count = 0;
	int efd, rc, prc = 0;

	vlog("step 9c: MSI of edu through stage 1 (MSI window 1:1) and stage 2");
	if (!c->edu_ok || !c->attached) {
		fail_range(T_MSI, T_MSI, "no edu or no nested attach");
		return;
	}
	efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (efd < 0) {
		check(T_MSI, false, "eventfd: %s", ename(-errno));
		return;
	}
	/* Enabled while attached to the nested HWPT, as a VMM does */
	rc = vfio_msi(c->vfd, efd);
	if (!rc)
		rc = edu_wr32(c, EDU_IRQ_RAISE, EDU_IRQ_BIT);
	if (!rc) {
		pfd.fd = efd;
		prc = poll(&pfd, 1, MSI_TIMEOUT_MS);
		if (prc > 0 && read(efd, &count, sizeof(count)) != sizeof(count))
			count = 0;
		edu_wr32(c, EDU_IRQ_ACK, EDU_IRQ_BIT);
	}
	vlog("MSI on, edu raises its interrupt: %s; eventfd count %" PRIu64,
	     ename(rc), count);
	check(T_MSI, !rc && count >= 1,
	      "MSI setup/raise: %s; eventfd %s within %d ms (a lost MSI is a stage-2 fault in the host log)",
	      ename(rc), prc > 0 ? "readable" : "not signalled",
	      MSI_TIMEOUT_MS);
	rc = vfio_msi(c->vfd, -1);
	if (rc)
		diag("MSI off: %s", ename(rc));
	close(efd);
}

/* ---- step 10: stage-1 fault -> vEVENT ---- */

static void fault_checks(const uint8_t *buf, ssize_t n)
{
	struct iommufd_vevent_header h;
	struct iommu_vevent_arm_smmuv3 e;
	bool hdr_ok, id_ok, sid_ok, addr_ok;
	uint64_t e0, addr;

	memcpy(&h, buf, sizeof(h));
	memcpy(&e, buf + sizeof(h), sizeof(e));
	e0 = le64toh(e.evt[0]);
	addr = le64toh(e.evt[2]);
	hdr_ok = h.flags == 0 && h.sequence == 0;
	id_ok = EVT0_ID(e0) == EVT_F_TRANSLATION;
	sid_ok = EVT0_SID(e0) == VSID;
	addr_ok = addr == VA_FAULT;
	evt_print(&h, &e, !(hdr_ok && id_ok && sid_ok && addr_ok));
	check(T_FAULT_HDR, hdr_ok, "header flags 0x%x, sequence %u", h.flags,
	      h.sequence);
	check(T_FAULT_ID, id_ok, "event ID 0x%02" PRIx64 ", expected 0x%02x",
	      EVT0_ID(e0), EVT_F_TRANSLATION);
	check(T_FAULT_SID, sid_ok,
	      "StreamID 0x%" PRIx64 ", expected the virtual 0x%x",
	      EVT0_SID(e0), VSID);
	check(T_FAULT_ADDR, addr_ok,
	      "InputAddr 0x%" PRIx64 ", expected 0x%" PRIx64, addr, VA_FAULT);
	if (n > (ssize_t)EVQ_REC_SIZE)
		vlog("more records in the same read:");
	evq_parse(buf + EVQ_REC_SIZE, n - EVQ_REC_SIZE, false);
}

static void step_fault(struct ctx *c)
{
	uint8_t buf[VEVENTQ_DEPTH * EVQ_REC_SIZE];
	unsigned int pending;
	ssize_t n;
	int rc;

	vlog("step 10: DMA to VA 0x%08" PRIx64 ", not mapped in stage 1",
	     VA_FAULT);
	if (c->evfd < 0) {
		fail_range(T_EVQ_EMPTY, T_FAULT_ADDR, "no vEVENTQ");
		return;
	}
	pending = evq_drain(c, true);
	check(T_EVQ_EMPTY, !pending && !c->stray_events,
	      "%u vEVENT(s) pending, %u seen after earlier failures", pending,
	      c->stray_events);
	if (!c->edu_ok || !c->attached) {
		fail_range(T_FAULT_EVT, T_FAULT_ADDR, "no edu or no nested attach");
		return;
	}
	rc = edu_to_ram(c, VA_FAULT, FAULT_LEN);
	n = evq_read(c->evfd, EVQ_TIMEOUT_MS, buf, sizeof(buf));
	vlog("edu DMA to VA 0x%08" PRIx64 ": %s; vEVENTQ read: %zd bytes",
	     VA_FAULT, ename(rc), n);
	if (!check(T_FAULT_EVT, !rc && n >= (ssize_t)EVQ_REC_SIZE,
		   "DMA: %s; vEVENTQ poll+read (%d ms): %zd bytes, %s",
		   ename(rc), EVQ_TIMEOUT_MS, n < 0 ? (ssize_t)0 : n,
		   ename(n < 0 ? (int)n : 0))) {
		if (n > 0)
			evq_parse(buf, n, true);
		fail_range(T_FAULT_HDR, T_FAULT_ADDR, "no vEVENT to look at");
		return;
	}
	fault_checks(buf, n);
	pending = evq_drain(c, false);
	vlog("%u more vEVENT(s) drained", pending);
}

/* ---- step 11: invalidation arrays ---- */

static void cmd_set(struct iommu_viommu_arm_smmuv3_invalidate *e,
		    uint64_t cmd0, uint64_t cmd1)
{
	e->cmd[0] = htole64(cmd0);
	e->cmd[1] = htole64(cmd1);
}

static void inval_check(struct ctx *c, unsigned int t,
			struct iommu_viommu_arm_smmuv3_invalidate *cmds,
			uint32_t n, int err, uint32_t want_num)
{
	uint32_t num = n;
	int rc;

	rc = viommu_invalidate(c->iommufd, c->viommu_id, cmds, &num);
	vlog("%u command(s): %s, entry_num %u", n, ename(rc), num);
	check(t, rc == -err && num == want_num,
	      "got %s, entry_num %u; expected %s, entry_num %u", ename(rc),
	      num, ename(err), want_num);
}

/* Beyond the core's bound; longer than a batch of the driver's */
#define INV_BOUND		(1U << 19)
#define INV_MANY		4096
#define INV_LATE		129
#define INV_BOUND_MS		1000

static void step_invalidate_long(struct ctx *c)
{
	struct iommu_viommu_arm_smmuv3_invalidate *cmds;
	struct timespec t0, t1;
	uint32_t num, i;
	long ms;
	int rc;

	cmds = calloc(INV_MANY, sizeof(*cmds));
	if (!cmds) {
		fail_range(T_INV_BOUND, T_INV_LATE, "no memory");
		return;
	}
	/* Refused before a single entry is read: the buffer is much shorter */
	num = INV_BOUND + 1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	rc = viommu_invalidate(c->iommufd, c->viommu_id, cmds, &num);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ms = (t1.tv_sec - t0.tv_sec) * 1000 +
	     (t1.tv_nsec - t0.tv_nsec) / 1000000;
	vlog("entry_num %u: %s, entry_num %u, %ld ms", INV_BOUND + 1, ename(rc),
	     num, ms);
	check(T_INV_BOUND, rc == -EINVAL && !num && ms < INV_BOUND_MS,
	      "got %s, entry_num %u in %ld ms; expected EINVAL, 0, < %d ms",
	      ename(rc), num, ms, INV_BOUND_MS);

	for (i = 0; i < INV_MANY; i++)
		cmd_set(&cmds[i], CMD_TLBI_NH_ASID | CMD0_ASID(ASID), 0);
	inval_check(c, T_INV_MANY, cmds, INV_MANY, 0, INV_MANY);

	/* A bad command right after two full batches of the driver */
	cmd_set(&cmds[INV_LATE], CMD_CFGI_STE | CMD0_SID(VSID), CMD1_LEAF);
	inval_check(c, T_INV_LATE, cmds, INV_LATE + 1, EIO, INV_LATE);
	free(cmds);
}

static void step_invalidate(struct ctx *c)
{
	struct iommu_viommu_arm_smmuv3_invalidate cmds[3];

	vlog("step 11: invalidation arrays through the vIOMMU");
	cmd_set(&cmds[0], CMD_TLBI_NH_ASID | CMD0_ASID(ASID), 0);
	cmd_set(&cmds[1], CMD_CFGI_CD | CMD0_SSID(0) | CMD0_SID(VSID_NONE),
		CMD1_LEAF);
	cmd_set(&cmds[2], CMD_TLBI_NH_ALL, 0);
	inval_check(c, T_INV_BADSID, cmds, 3, EIO, 1);

	cmd_set(&cmds[0], CMD_TLBI_NH_ALL, 0);
	cmd_set(&cmds[1], CMD_TLBI_S12_VMALL, 0);
	inval_check(c, T_INV_S12, cmds, 2, EIO, 1);

	cmd_set(&cmds[0], CMD_CFGI_STE | CMD0_SID(VSID), CMD1_LEAF);
	inval_check(c, T_INV_STE, cmds, 1, EIO, 0);

	cmd_set(&cmds[0], CMD_CFGI_CD | CMD0_SSID(0) | CMD0_SID(VSID),
		CMD1_LEAF);
	cmd_set(&cmds[1], CMD_CFGI_CD_ALL | CMD0_SID(VSID), 0);
	cmd_set(&cmds[2], CMD_TLBI_NH_ALL, 0);
	inval_check(c, T_INV_OK, cmds, 3, 0, 3);

	step_invalidate_long(c);
}

/* ---- step 12: teardown A ---- */

static void destroy_check(struct ctx *c, unsigned int t, uint32_t *id,
			  const char *what)
{
	int rc;

	if (!*id) {
		check(t, false, "no %s to destroy", what);
		return;
	}
	rc = iommu_destroy(c->iommufd, *id);
	vlog("destroy %s %u: %s", what, *id, ename(rc));
	if (!rc)
		*id = 0;
	check(t, !rc, "destroy %s: %s", what, ename(rc));
}

static void step_teardown_a(struct ctx *c)
{
	uint64_t unmapped = 0;
	int rc;

	vlog("step 12: teardown A, in order");
	rc = c->attached ? vfio_detach(c->vfd) : -ENODEV;
	if (!rc)
		c->attached = false;
	check(T_A_DETACH, !rc, "detach: %s", c->attached || rc != -ENODEV ?
	      ename(rc) : "was not attached");
	destroy_check(c, T_A_NESTED, &c->nested_id, "nested HWPT");
	destroy_check(c, T_A_VDEV, &c->vdev_id, "vDEVICE");

	busy_destroy(c, T_A_VEVENTQ_BUSY, &c->veventq_id, "vEVENTQ");
	rc = c->evfd >= 0 ? close(c->evfd) : 0;
	c->evfd = -1;
	if (rc)
		diag("close vEVENTQ fd: %s", ename(-errno));
	destroy_check(c, T_A_VEVENTQ, &c->veventq_id, "vEVENTQ");

	busy_destroy(c, T_A_S2_BUSY, &c->s2_id, "stage 2");
	destroy_check(c, T_A_VIOMMU, &c->viommu_id, "vIOMMU");
	destroy_check(c, T_A_S2, &c->s2_id, "stage 2");

	rc = ioas_unmap(c->iommufd, c->ioas_id, GMEM_GPA, GMEM_SIZE, &unmapped);
	if (!rc)
		rc = iommu_destroy(c->iommufd, c->ioas_id);
	if (!rc)
		c->ioas_id = 0;
	check(T_A_IOAS, !rc && unmapped == GMEM_SIZE,
	      "unmap/destroy: %s, unmapped 0x%" PRIx64, ename(rc), unmapped);
}

/* ---- step 13: teardown B ---- */

/* Build the whole nested setup again; NULL or the part that failed */
static const char *rebuild(struct ctx *c, int *rc)
{
	uint32_t pt;

	*rc = ioas_alloc(c->iommufd, &c->ioas_id);
	if (!*rc)
		*rc = ioas_map(c->iommufd, c->ioas_id, c->gmem, GMEM_SIZE,
			       GMEM_GPA);
	if (*rc)
		return "IOAS";
	*rc = s2_alloc(c->iommufd, c->dev_id, c->ioas_id, &c->s2_id);
	if (*rc)
		return "stage 2";
	*rc = viommu_alloc(c->iommufd, IOMMU_VIOMMU_TYPE_ARM_SMMUV3, c->dev_id,
			   c->s2_id, &c->viommu_id);
	if (*rc)
		return "vIOMMU";
	*rc = vdevice_alloc(c->iommufd, c->viommu_id, c->dev_id, VSID,
			    &c->vdev_id);
	if (*rc)
		return "vDEVICE";
	*rc = veventq_alloc(c->iommufd, c->viommu_id,
			    IOMMU_VEVENTQ_TYPE_ARM_SMMUV3, VEVENTQ_DEPTH,
			    &c->veventq_id, &c->evfd);
	if (*rc)
		return "vEVENTQ";
	*rc = nested_alloc(c->iommufd, c->dev_id, c->viommu_id, vste_s1(),
			   vste_s1_word1(), &c->nested_id);
	if (*rc)
		return "nested HWPT";
	pt = c->nested_id;
	*rc = vfio_attach(c->vfd, &pt);
	if (*rc)
		return "attach";
	c->attached = true;
	vlog("rebuilt: IOAS %u, S2 %u, vIOMMU %u, vDEVICE %u, vEVENTQ %u (fd %d), nested HWPT %u, attached",
	     c->ioas_id, c->s2_id, c->viommu_id, c->vdev_id, c->veventq_id,
	     c->evfd, c->nested_id);
	return NULL;
}

/*
 * Wait for a line containing @what in the kernel log after @kfd's position:
 * the SMMU event thread is done with the event once it logged it.
 */
static bool kmsg_wait(int kfd, const char *what, int timeout_ms)
{
	struct pollfd pfd = { .fd = kfd, .events = POLLIN };
	char rec[1024];
	ssize_t n;

	for (;;) {
		n = read(kfd, rec, sizeof(rec) - 1);
		if (n > 0) {
			rec[n] = 0;
			if (strstr(rec, what))
				return true;
			continue;
		}
		if (n < 0 && errno == EPIPE)	/* overwritten records */
			continue;
		if (n < 0 && errno != EAGAIN)
			return false;
		if (poll(&pfd, 1, timeout_ms) <= 0)
			return false;
	}
}

/*
 * Destroy the vDEVICE while the device stays attached to the nested HWPT,
 * then fault: the guest no longer knows the device, so the event is the
 * host's (logged by the SMMU driver) and not queued under the old vSID.
 * The vDEVICE is given back for what follows.
 */
static void stale_vsid(struct ctx *c)
{
	uint8_t buf[VEVENTQ_DEPTH * EVQ_REC_SIZE];
	bool logged = false;
	int kfd, rc;
	ssize_t n;

	kfd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK);
	if (kfd < 0 || lseek(kfd, 0, SEEK_END) < 0) {
		fail_range(T_B_STALE_LOG, T_B_STALE_EVQ, "no /dev/kmsg");
		if (kfd >= 0)
			close(kfd);
		return;
	}
	evq_drain(c, true);
	rc = iommu_destroy(c->iommufd, c->vdev_id);
	if (!rc) {
		c->vdev_id = 0;
		rc = edu_to_ram(c, VA_FAULT, FAULT_LEN);
	}
	if (!rc)
		logged = kmsg_wait(kfd, HOST_EVT_LOG, EVQ_TIMEOUT_MS);
	close(kfd);
	vlog("vDEVICE destroyed, DMA to VA 0x%08" PRIx64 ": %s; host log: %s",
	     VA_FAULT, ename(rc), logged ? "\"" HOST_EVT_LOG "\"" : "nothing");
	check(T_B_STALE_LOG, !rc && logged,
	      "destroy vDEVICE + DMA: %s; \"%s\" %sin the kernel log within %d ms",
	      ename(rc), HOST_EVT_LOG, logged ? "" : "not ", EVQ_TIMEOUT_MS);
	/* The event thread is done with it: no waiting for the vEVENTQ */
	n = evq_read(c->evfd, 0, buf, sizeof(buf));
	if (n > 0)
		evq_parse(buf, n, true);
	check(T_B_STALE_EVQ, logged && n == 0, "vEVENTQ read: %zd bytes", n);

	rc = vdevice_alloc(c->iommufd, c->viommu_id, c->dev_id, VSID,
			   &c->vdev_id);
	if (rc)
		diag("vDEVICE again: %s", ename(rc));
}

static void forget_objects(struct ctx *c)
{
	c->ioas_id = c->s2_id = c->viommu_id = c->vdev_id = 0;
	c->veventq_id = c->nested_id = c->dev_id = 0;
	c->attached = c->edu_ok = false;
}

/* Close the vfio fd, then the vEVENTQ fd, then the iommufd. */
static void close_all_alive(struct ctx *c)
{
	int vrc, brc, erc = 0, irc, rc = -ENOENT;

	vrc = close(c->vfd) ? -errno : 0;
	c->vfd = -1;
	if (c->vdev_id)
		rc = iommu_destroy(c->iommufd, c->vdev_id);
	vlog("vfio fd closed: %s; destroy vDEVICE %u: %s", ename(vrc),
	     c->vdev_id, ename(rc));
	check(T_B_VFIO_CLOSE, !vrc && c->vdev_id && rc == -ENOENT,
	      "close: %s; vDEVICE %u destroy: got %s, expected ENOENT",
	      ename(vrc), c->vdev_id, ename(rc));

	/* The device is gone; what it was attached to is not. */
	brc = c->viommu_id ? iommu_destroy(c->iommufd, c->viommu_id) : -ENOENT;
	if (c->evfd >= 0)
		erc = close(c->evfd) ? -errno : 0;
	c->evfd = -1;
	irc = close(c->iommufd) ? -errno : 0;
	c->iommufd = -1;
	vlog("destroy vIOMMU %u: %s; vEVENTQ fd closed: %s; iommufd closed: %s",
	     c->viommu_id, ename(brc), ename(erc), ename(irc));
	check(T_B_CLOSE, brc == -EBUSY && !erc && !irc,
	      "destroy vIOMMU %u: got %s, expected EBUSY; close vEVENTQ fd: %s, iommufd: %s",
	      c->viommu_id, ename(brc), ename(erc), ename(irc));
	forget_objects(c);
}

static int reopen_bind(struct ctx *c)
{
	int rc;

	c->iommufd = open("/dev/iommu", O_RDWR);
	rc = c->iommufd < 0 ? -errno : 0;
	if (!rc) {
		c->vfd = open(c->cdev, O_RDWR);
		rc = c->vfd < 0 ? -errno : 0;
	}
	if (!rc)
		rc = vfio_bind(c->vfd, c->iommufd, &c->dev_id);
	vlog("cdev reopened, bound to a new iommufd: dev_id %u", c->dev_id);
	check(T_B_REBIND, !rc && c->dev_id, "reopen/bind: %s", ename(rc));
	return rc;
}

static void plain_dma(struct ctx *c)
{
	char why[160];
	const char *err;
	int rc;

	err = edu_setup(c, why, sizeof(why));
	if (err) {
		check(T_B_DMA, false, "edu: %s", err);
		return;
	}
	pattern_fill(c, GPA_SRC, PATTERN_3);
	poison(c, GPA_DST_C);
	rc = dma_copy(c, GPA_SRC, GPA_DST_C);
	check_pattern(c, T_B_DMA, GPA_DST_C, PATTERN_3, rc);
}

static void step_teardown_b(struct ctx *c)
{
	const char *err;
	uint32_t pt;
	int rc;

	vlog("step 13: teardown B, rebuild and close the fds with all alive");
	if (c->iommufd < 0 || c->vfd < 0) {
		fail_range(T_B_BUILD, T_B_DMA, "no iommufd or vfio fd");
		return;
	}
	err = rebuild(c, &rc);
	check(T_B_BUILD, !err, "rebuild: %s: %s", err, ename(rc));
	if (err || !c->edu_ok)
		fail_range(T_B_STALE_LOG, T_B_STALE_EVQ, "not rebuilt, or no edu");
	else
		stale_vsid(c);
	close_all_alive(c);

	if (reopen_bind(c)) {
		fail_range(T_B_ATTACH, T_B_DMA, "not bound");
		return;
	}
	rc = ioas_alloc(c->iommufd, &c->ioas_id);
	if (!rc)
		rc = ioas_map(c->iommufd, c->ioas_id, c->gmem, GMEM_SIZE,
			      GMEM_GPA);
	pt = c->ioas_id;
	if (!rc)
		rc = vfio_attach(c->vfd, &pt);
	vlog("IOAS %u, device attached to HWPT %u", c->ioas_id, pt);
	check(T_B_ATTACH, !rc && pt, "IOAS alloc/map/attach: %s", ename(rc));
	if (rc)
		fail_range(T_B_DMA, T_B_DMA, "not attached");
	else
		plain_dma(c);

	/* Step 14 needs the cdev unbound */
	close(c->vfd);
	close(c->iommufd);
	c->vfd = c->iommufd = -1;
	forget_objects(c);
}

/* ---- step 14: KVM ---- */

struct kvm_ctx {
	int kvmfd, vmfd, kdevfd;
	bool have_dir;
	char dir[sizeof(KVM_DEBUGFS) + 1 + sizeof(((struct dirent *)0)->d_name)];
};

/* VM, KVM VFIO device, a fresh vfio fd added to it */
static int kvm_setup(struct ctx *c, struct kvm_ctx *k)
{
	int rc;

	k->vmfd = ioctl(k->kvmfd, KVM_CREATE_VM, 0);
	rc = k->vmfd < 0 ? -errno : 0;
	if (rc) {
		diag("KVM_CREATE_VM: %s", ename(rc));
		return rc;
	}
	rc = kvm_create_vfio_dev(k->vmfd, &k->kdevfd);
	if (rc) {
		diag("KVM_CREATE_DEVICE (VFIO): %s", ename(rc));
		return rc;
	}
	c->vfd = open(c->cdev, O_RDWR);
	rc = c->vfd < 0 ? -errno : kvm_add_vfio_file(k->kdevfd, c->vfd);
	if (rc) {
		diag("open %s / KVM_DEV_VFIO_FILE_ADD: %s", c->cdev, ename(rc));
		return rc;
	}
	k->have_dir = kvm_find_vm_dir(k->vmfd, k->dir, sizeof(k->dir));
	vlog("VM fd %d, KVM VFIO device fd %d, vfio fd %d added; debugfs %s",
	     k->vmfd, k->kdevfd, c->vfd, k->have_dir ? k->dir : "(none)");
	if (!k->have_dir)
		diag("no %s/%d-* directory", KVM_DEBUGFS, (int)getpid());
	return k->have_dir ? 0 : -ENOENT;
}

static int kvm_viommu(struct ctx *c)
{
	int rc;

	c->iommufd = open("/dev/iommu", O_RDWR);
	rc = c->iommufd < 0 ? -errno : 0;
	if (!rc)
		rc = vfio_bind(c->vfd, c->iommufd, &c->dev_id);
	if (!rc)
		rc = ioas_alloc(c->iommufd, &c->ioas_id);
	if (!rc)
		rc = s2_alloc(c->iommufd, c->dev_id, c->ioas_id, &c->s2_id);
	if (!rc)
		rc = viommu_alloc(c->iommufd, IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
				  c->dev_id, c->s2_id, &c->viommu_id);
	vlog("bound dev_id %u, IOAS %u, S2 %u, vIOMMU %u: %s", c->dev_id,
	     c->ioas_id, c->s2_id, c->viommu_id, ename(rc));
	return check(T_KVM_VIOMMU, !rc, "bind/IOAS/S2/vIOMMU: %s", ename(rc)) ?
	       0 : -1;
}

static void kvm_close_fds(struct ctx *c, struct kvm_ctx *k)
{
	if (k->kdevfd >= 0)
		close(k->kdevfd);
	if (k->vmfd >= 0)
		close(k->vmfd);
	if (c->vfd >= 0)
		close(c->vfd);
	if (k->kvmfd >= 0)
		close(k->kvmfd);
	k->kdevfd = k->vmfd = k->kvmfd = c->vfd = -1;
}

static void kvm_cleanup(struct ctx *c, bool report)
{
	int rc = 0, rc2 = 0;

	if (c->viommu_id)
		iommu_destroy(c->iommufd, c->viommu_id);
	if (c->s2_id)
		rc = iommu_destroy(c->iommufd, c->s2_id);
	if (c->ioas_id)
		rc2 = iommu_destroy(c->iommufd, c->ioas_id);
	if (report)
		check(T_KVM_CLEAN, c->s2_id && c->ioas_id && !rc && !rc2,
		      "destroy stage 2 %u: %s, IOAS %u: %s", c->s2_id,
		      ename(rc), c->ioas_id, ename(rc2));
	if (c->iommufd >= 0)
		close(c->iommufd);
	c->iommufd = -1;
	forget_objects(c);
}

static void step_kvm(struct ctx *c)
{
	struct kvm_ctx k = { .kvmfd = -1, .vmfd = -1, .kdevfd = -1 };
	int rc;

	vlog("step 14: KVM, the vIOMMU holds the VM");
	k.kvmfd = open("/dev/kvm", O_RDWR);
	if (k.kvmfd < 0 && errno == ENOENT) {
		skip_range(T_KVM_VM, T_KVM_CLEAN, "no /dev/kvm");
		return;
	}
	rc = k.kvmfd < 0 ? -errno : kvm_setup(c, &k);
	if (!check(T_KVM_VM, !rc, "KVM setup: %s", ename(rc)) && c->vfd < 0) {
		kvm_close_fds(c, &k);
		fail_range(T_KVM_VIOMMU, T_KVM_CLEAN, "no VM");
		return;
	}
	if (kvm_viommu(c)) {
		kvm_close_fds(c, &k);
		fail_range(T_KVM_HELD, T_KVM_GONE, "no vIOMMU");
		kvm_cleanup(c, true);
		return;
	}

	kvm_close_fds(c, &k);
	vlog("closed the KVM device, VM and vfio fds; %s %s", k.dir,
	     k.have_dir && is_dir(k.dir) ? "exists" : "is gone");
	check(T_KVM_HELD, k.have_dir && is_dir(k.dir), "%s: %s",
	      k.have_dir ? k.dir : "VM directory", k.have_dir ? "gone" :
	      "never found");

	rc = iommu_destroy(c->iommufd, c->viommu_id);
	if (!rc)
		c->viommu_id = 0;
	vlog("destroy vIOMMU: %s; %s %s", ename(rc), k.dir,
	     k.have_dir && is_dir(k.dir) ? "exists" : "is gone");
	check(T_KVM_GONE, !rc && k.have_dir && !is_dir(k.dir),
	      "destroy vIOMMU: %s; %s %s", ename(rc),
	      k.have_dir ? k.dir : "VM directory",
	      k.have_dir ? "still exists" : "never found");
	kvm_cleanup(c, true);
}

/* ---- main ---- */

static void usage(const char *prog)
{
	fprintf(stderr, "Usage: %s [-v] /dev/vfio/devices/vfioN\n", prog);
	exit(2);
}

int main(int argc, char **argv)
{
	struct ctx c = { .iommufd = -1, .vfd = -1, .evfd = -1 };
	int i;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-v"))
			verbose = true;
		else if (!c.cdev && argv[i][0] != '-')
			c.cdev = argv[i];
		else
			usage(argv[0]);
	}
	if (!c.cdev)
		usage(argv[0]);
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("TAP version 13\n1..%d\n", T_COUNT);
	raise_memlock();

	if (step_open(&c))
		goto out;
	step_hw_info(&c);
	if (step_s2(&c) || step_viommu(&c))
		goto out;
	step_gbpa(&c);
	step_vdev_veventq(&c);
	step_vste(&c);
	step_nested(&c);
	step_dma(&c);
	step_remap(&c);
	step_s2_remap(&c);
	step_msi(&c);
	step_fault(&c);
	step_invalidate(&c);
	step_teardown_a(&c);
	step_teardown_b(&c);
	step_kvm(&c);
out:
	if (next_test < T_COUNT)
		diag("bailing out: the remaining checks need what failed above");
	fail_until(T_COUNT, "not run: bailed out");
	printf("# Totals: pass:%u fail:%u xfail:0 xpass:0 skip:%u error:0\n",
	       n_pass, n_fail, n_skip);
	return n_fail ? 1 : 0;
}

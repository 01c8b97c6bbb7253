// SPDX-License-Identifier: GPL-2.0
/*
 * viommu-2smmu - one stage 2 under two vSMMUs on two SMMUv3 instances
 *
 * Usage: viommu-2smmu [-v] [DEVA DEVB DEVC [DEVD]]
 *
 * The design of the vIOMMU object in one flow: a VM's stage 2 is shared by a
 * vSMMU per physical SMMU instance, each with a VMID of its own, and a third
 * device sits on the stage 2 directly:
 *
 *   hwpt_alloc(deva, nesting_parent) = s2
 *   viommu_alloc(deva, s2) = v1        # SMMU instance A
 *   viommu_alloc(devb, s2) = v2        # SMMU instance B
 *   hwpt_alloc(deva, v1, vste) = na
 *   hwpt_alloc(devb, v2, vste) = nb
 *   attach(deva, na); attach(devb, nb); attach(devc, s2)
 *
 * Runs in an arm64 guest with QEMU edu devices (1234:11e8) behind several
 * emulated SMMUv3 instances (user-created arm-smmuv3 on pxb-pcie buses):
 * deva and devc behind SMMU A (stage=nested), devb behind SMMU B
 * (stage=nested), devd behind SMMU C (stage=1: no stage 2, so no nesting).
 * The devices are PCI addresses (DDDD:BB:DD.F); without them the program
 * takes the edu devices off bus 0 and gives them their roles by SMMU: the
 * instance with two of them is A, the other nesting-capable one B, the one
 * without stage 2 C. It binds them to vfio-pci itself.
 *
 * As in viommu-e2e, the program is the VMM and the guest driver at once:
 * guest memory is a 16 MiB buffer mapped in the IOAS at GPA 0x01000000,
 * stage 2 = IOAS, and each vSMMU's "guest" writes a CD and stage-1 tables:
 *
 *   GPA 0x01000000  deva: CD, L1 0x01001000, L2 0x01002000, L3 0x01003000
 *   GPA 0x01010000  devb: CD, L1 0x01011000, L2 0x01012000, L3 0x01013000
 *   GPA 0x01100000  DMA source
 *   GPA 0x01101000  deva's destination (its VA 0x0a001000)
 *   GPA 0x01102000  devb's destination (its VA 0x0a001000 too)
 *   GPA 0x01103000  devc's destination (IOVA = GPA, stage 2 alone)
 *   GPA 0x02000000  one page mapped on its own: host page X, then Y, then Z
 *                   (deva's and devb's VA 0x0a002000)
 *   VA  0x0b000000  not mapped: the fault
 *
 * Both vSMMUs give their device the same virtual SID (0x42): each is a guest
 * SMMU of its own. The VMIDs: the program reads the driver's "vSMMU %u: VMID
 * %u" debug line (dynamic debug) and prints, as '@@ 2smmu' lines, each
 * device's physical SID and each vSMMU's VMID. What the SMMUs actually tag
 * translations with is in QEMU's trace (the STEs as the SMMU model decoded
 * them): scripts/smmu-trace.py checks it on the host, after the guest.
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
#include <limits.h>
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
#include <sys/resource.h>
#include <sys/stat.h>

#include <linux/iommufd.h>
#include <linux/vfio.h>
#include "iommufd-util.h"

/* Guest memory and the GPA layout */
#define SZ_4K			0x1000ULL
#define SZ_2M			0x200000ULL
#define GMEM_SIZE		0x1000000ULL	/* 16 MiB */
#define GMEM_GPA		0x01000000ULL
#define GPA_S1_A		0x01000000ULL	/* deva's CD and tables */
#define GPA_S1_B		0x01010000ULL	/* devb's */
#define S1_CD			0x0000		/* offsets in those */
#define S1_L1			0x1000
#define S1_L2			0x2000
#define S1_L3			0x3000
#define S1_SIZE			0x4000
#define GPA_SRC			0x01100000ULL
#define GPA_DST_A		0x01101000ULL
#define GPA_DST_B		0x01102000ULL
#define GPA_DST_C		0x01103000ULL
/* A GPA mapped on its own in the IOAS, to change stage 2 under everything */
#define GPA_S2			0x02000000ULL

/* Stage-1 virtual addresses (all in the 2 MiB covered by one L3 table) */
#define VA_SRC			0x0a000000ULL
#define VA_DST			0x0a001000ULL
#define VA_S2			0x0a002000ULL
#define VA_FAULT		0x0b000000ULL

#define ASID			0x7
#define VSID			0x42	/* deva's on v1 and devb's on v2 */
#define VEVENTQ_DEPTH		16

/* STE (vSTE) words 0 and 1 */
#define STE0_V			(1ULL << 0)
#define STE0_CFG(x)		((uint64_t)(x) << 1)
#define STE_CFG_S1		0x5
#define STE0_S1FMT_LINEAR	(0ULL << 4)
#define STE0_S1CTXPTR_MASK	0x000fffffffffffc0ULL	/* bits[51:6] */
#define STE0_S1CDMAX(x)		((uint64_t)(x) << 59)
#define STE1_S1DSS_TERM		(0ULL << 0)
#define STE1_S1CIR_WBRA		(1ULL << 2)
#define STE1_S1COR_WBRA		(1ULL << 4)
#define STE1_S1CSH_ISH		(3ULL << 6)

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
#define S1_VA_BITS		32

/* Stage-1 descriptors, AArch64 4K granule */
#define PTE_TABLE		0x3ULL
#define PTE_PAGE		0x3ULL
#define PTE_ATTRINDX(x)		((uint64_t)(x) << 2)
#define PTE_AP_RW_EL0		(1ULL << 6)
#define PTE_SH_ISH		(3ULL << 8)
#define PTE_AF			(1ULL << 10)
#define PTE_ADDR_MASK		0x0000fffffffff000ULL
#define S1_L1_IDX(va)		(((va) >> 30) & 0x3)
#define S1_L2_IDX(va)		(((va) >> 21) & 0x1ff)
#define S1_L3_IDX(va)		(((va) >> 12) & 0x1ff)

/* SMMUv3 commands, event records, ID registers */
#define CMD_TLBI_NH_VA		0x12
#define CMD0_ASID(x)		((uint64_t)(x) << 48)
#define CMD1_LEAF		1ULL
#define CMD1_VA_MASK		(~0xfffULL)
#define EVT_F_TRANSLATION	0x10
#define EVT0_ID(w)		((w) & 0xff)
#define EVT0_SID(w)		((w) >> 32)
#define EVQ_TIMEOUT_MS		5000
#define EVQ_REC_SIZE		(sizeof(struct iommufd_vevent_header) + \
				 sizeof(struct iommu_vevent_arm_smmuv3))
#define IDR0_S1P		(1U << 1)
#define IDR0_S2P		(1U << 0)

/* edu, BAR0 */
#define EDU_IDENT		0x00
#define EDU_LIVENESS		0x04
#define EDU_DMA_SRC		0x80
#define EDU_DMA_DST		0x88
#define EDU_DMA_CNT		0x90
#define EDU_DMA_CMD		0x98
#define EDU_IDENT_VAL		0x010000edU
#define EDU_CMD_START		0x1
#define EDU_CMD_TO_RAM		0x2
#define EDU_BUF			0x40000ULL
#define EDU_DMA_LIMIT		0x10000000ULL		/* 28-bit DMA mask */
#define EDU_POLL_NS		10000000L		/* 10 ms */
#define EDU_POLL_TRIES		1000
#define EDU_LIVENESS_VAL	0x12345678U
#define EDU_VENDOR		"0x1234"
#define EDU_DEVICE		"0x11e8"
#define DMA_LEN			4096
#define FAULT_LEN		256

#define PCI_CMD_OFF		0x04
#define PCI_CMD_MEMORY		0x2
#define PCI_CMD_MASTER		0x4

#define POISON			0xee

#define PCI_DEVICES		"/sys/bus/pci/devices"
#define UNSAFE_NESTING_PARAM	"/sys/module/arm_smmu_v3/parameters/allow_unsafe_nesting"
#define DYNDBG_CONTROL		"/proc/dynamic_debug/control"
#define DYNDBG_FILE		"arm-smmu-v3-iommufd.c"
#define VMID_LOG		"vSMMU "	/* arm_vsmmu_init(): "vSMMU %u: VMID %u" */
#define BIND_TIMEOUT_MS		30000	/* for the vfio cdev */

/* The TAP checks, in order */
enum {
	T_FIND, T_BIND, T_IOAS, T_EDU, T_HWINFO,
	T_S2, T_V1, T_V2, T_VMIDS, T_VDEV, T_VEVENTQ, T_NA, T_NB,
	T_CROSS_NESTED, T_CROSS_ATTACH, T_CROSS_S2, T_ATTACH,
	T_DMA_A, T_DMA_B, T_DMA_C,
	T_FAULT_A, T_FAULT_A_ONLY, T_FAULT_B, T_FAULT_B_ONLY,
	T_S2_X, T_S2_A, T_S2_B, T_S2_C, T_S2_OLD,
	T_C_S2, T_C_VIOMMU, T_C_NOTHING,
	T_V1_DOWN, T_V1_S2_BUSY, T_AFTER_B, T_AFTER_C, T_AFTER_S2,
	T_TEARDOWN,
	T_COUNT
};

static const char *const test_name[T_COUNT] = {
	[T_FIND]	= "edu devices found: deva and devc behind SMMU A, devb behind SMMU B, devd behind SMMU C",
	[T_BIND]	= "all four bound to vfio-pci, opened and bound to one iommufd",
	[T_IOAS]	= "IOAS allocated, guest memory mapped at GPA 0x01000000",
	[T_EDU]		= "edu BAR0 of all four: ident, liveness, memory and bus master on",
	[T_HWINFO]	= "GET_HW_INFO: SMMUs A and B have S1P and S2P, SMMU C S1P only",
	[T_S2]		= "hwpt_alloc(deva, nesting parent) = s2",
	[T_V1]		= "viommu_alloc(deva, s2) = v1 on SMMU A",
	[T_V2]		= "viommu_alloc(devb, s2) = v2 on SMMU B, the same stage 2",
	[T_VMIDS]	= "the driver reports a VMID for v1 on SMMU A and for v2 on SMMU B",
	[T_VDEV]	= "vDEVICEs: deva on v1 and devb on v2, both virtual SID 0x42",
	[T_VEVENTQ]	= "a vEVENTQ on v1 and one on v2",
	[T_NA]		= "hwpt_alloc(deva, v1, vSTE) = na",
	[T_NB]		= "hwpt_alloc(devb, v2, vSTE) = nb",
	[T_CROSS_NESTED] = "hwpt_alloc(devb, v1, vSTE): devb is not behind v1's SMMU: EINVAL",
	[T_CROSS_ATTACH] = "attach(devb, na): na is v1's, on SMMU A: EINVAL",
	[T_CROSS_S2]	= "attach(devb, s2): s2 is a domain of SMMU A, devb reaches it through v2 only: EINVAL",
	[T_ATTACH]	= "attach(deva, na), attach(devb, nb), attach(devc, s2)",
	[T_DMA_A]	= "deva: DMA to its VA 0x0a001000 lands at GPA 0x01101000 (v1's stage 1 + s2)",
	[T_DMA_B]	= "devb: DMA to its VA 0x0a001000 lands at GPA 0x01102000 (v2's stage 1 + s2)",
	[T_DMA_C]	= "devc: DMA to IOVA 0x01103000 lands at GPA 0x01103000 (s2 alone)",
	[T_FAULT_A]	= "deva: DMA to unmapped VA 0x0b000000: F_TRANSLATION in v1's vEVENTQ, vSID 0x42",
	[T_FAULT_A_ONLY] = "... and nothing in v2's vEVENTQ",
	[T_FAULT_B]	= "devb: DMA to unmapped VA 0x0b000000: F_TRANSLATION in v2's vEVENTQ, vSID 0x42",
	[T_FAULT_B_ONLY] = "... and nothing in v1's vEVENTQ",
	[T_S2_X]	= "page X at GPA 0x02000000: DMA of deva, devb, devc all land in X",
	[T_S2_A]	= "s2 remapped to page Y (IOAS unmap + map, no guest TLBI): deva's DMA lands in Y",
	[T_S2_B]	= "... devb's DMA lands in Y (s2 invalidation reached v2's VMID on SMMU B)",
	[T_S2_C]	= "... devc's DMA lands in Y (and the plain s2 domain's VMID)",
	[T_S2_OLD]	= "page X untouched after the remap",
	[T_C_S2]	= "SMMU C (no stage 2): nesting parent for devd refused with EOPNOTSUPP",
	[T_C_VIOMMU]	= "viommu_alloc(devd, s2) on SMMU C refused with EOPNOTSUPP",
	[T_C_NOTHING]	= "... nothing left allocated: the object ID it took is free again",
	[T_V1_DOWN]	= "v1's side destroyed: deva detached, na, vDEVICE, vEVENTQ, v1",
	[T_V1_S2_BUSY]	= "s2 still in use by v2 and devc: destroy fails with EBUSY",
	[T_AFTER_B]	= "devb: DMA through v2 still lands at GPA 0x01102000",
	[T_AFTER_C]	= "devc: DMA through s2 still lands at GPA 0x01103000",
	[T_AFTER_S2]	= "s2 remapped to page Z: devb's and devc's DMA land in Z",
	[T_TEARDOWN]	= "teardown: detach, nb, vDEVICE, vEVENTQ, v2, s2, IOAS destroyed",
};

/* One edu device */
struct edu {
	const char *role;		/* "deva", ... */
	char bdf[16];			/* 0000:11:00.0 */
	char smmu[64];			/* its IOMMU's sysfs name */
	char smmu_dev[64];		/* the SMMU's device name, for the log */
	char cdev[64];
	unsigned int sid;		/* the PCI RID, = the physical StreamID */
	int vfd;
	uint32_t dev_id;
	uint64_t bar0_off;
	uint64_t cfg_off;
	bool edu_ok;
	uint32_t idr0;
};

/* One vSMMU and what hangs off it */
struct vsmmu {
	const char *name;		/* "v1", "v2" */
	struct edu *dev;
	uint64_t s1_base;		/* GPA of its guest's CD and tables */
	uint64_t dst;			/* GPA its VA_DST points at */
	uint32_t viommu_id, vdev_id, veventq_id, nested_id;
	int evfd;
	int vmid;			/* from the driver's debug line, -1 */
	char vmid_dev[64];		/* the SMMU device that logged it */
	bool attached;
};

enum { DEVA, DEVB, DEVC, DEVD, N_DEVS };

struct ctx {
	struct edu dev[N_DEVS];
	struct vsmmu v[2];
	int iommufd;
	int kfd;			/* /dev/kmsg, for the VMID lines */
	uint32_t ioas_id, s2_id;
	bool c_attached;
	uint8_t *gmem;
	bool dyndbg_was_on;
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

/* Pass iff @rc is -@err (or 0 for @err == 0). */
static bool check_err(unsigned int t, int rc, int err, const char *what)
{
	return check(t, rc == -err, "%s: got %s, expected %s", what, ename(rc),
		     ename(err));
}

/* ---- edu ---- */

static int edu_rd32(struct edu *c, uint32_t reg, uint32_t *val)
{
	uint32_t v = 0;
	int rc = vfio_rw(c->vfd, false, &v, 4, c->bar0_off + reg);

	*val = le32toh(v);
	return rc;
}

static int edu_wr32(struct edu *c, uint32_t reg, uint32_t val)
{
	uint32_t v = htole32(val);

	return vfio_rw(c->vfd, true, &v, 4, c->bar0_off + reg);
}

static int edu_wr64(struct edu *c, uint32_t reg, uint64_t val)
{
	uint64_t v = htole64(val);

	return vfio_rw(c->vfd, true, &v, 8, c->bar0_off + reg);
}

static int pci_cmd_enable(struct edu *c, uint16_t *readback)
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
static const char *edu_setup(struct edu *c, char *buf, size_t len)
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
static int edu_dma(struct edu *c, uint64_t src, uint64_t dst, uint32_t cnt,
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
static int edu_from_ram(struct edu *c, uint64_t iova, uint32_t len)
{
	return edu_dma(c, iova, EDU_BUF, len, 0);
}

/* edu buffer -> guest memory at @iova (through the IOMMU) */
static int edu_to_ram(struct edu *c, uint64_t iova, uint32_t len)
{
	return edu_dma(c, EDU_BUF, iova, len, EDU_CMD_TO_RAM);
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

/* ---- misc ---- */

static int set_unsafe_nesting(int val)
{
	return write_param(UNSAFE_NESTING_PARAM, val);
}


/* ---- guest memory, stage-1 structures, patterns ---- */

static uint8_t *gmem;

static uint8_t *gpa_ptr(uint64_t gpa)
{
	return gmem + (gpa - GMEM_GPA);
}

static void gpa_put64(uint64_t gpa, uint64_t val)
{
	uint64_t v = htole64(val);

	memcpy(gpa_ptr(gpa), &v, sizeof(v));
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

static uint64_t vste_s1(const struct vsmmu *v)
{
	return STE0_V | STE0_CFG(STE_CFG_S1) | STE0_S1FMT_LINEAR |
	       ((v->s1_base + S1_CD) & STE0_S1CTXPTR_MASK) | STE0_S1CDMAX(0);
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

/* Point @va at @gpa (0: unmap) in @v's stage 1; @va in VA_SRC's 2 MiB */
static void s1_set_page(const struct vsmmu *v, uint64_t va, uint64_t gpa)
{
	uint64_t pte = gpa ? (gpa & PTE_ADDR_MASK) | PTE_PAGE |
			     PTE_ATTRINDX(0) | PTE_AP_RW_EL0 | PTE_SH_ISH |
			     PTE_AF : 0;

	gpa_put64(v->s1_base + S1_L3 + 8 * S1_L3_IDX(va), pte);
	vlog("%s's stage 1: VA 0x%08" PRIx64 " -> GPA 0x%08" PRIx64, v->name,
	     va, gpa);
}

/* @v's guest: a CD (ASID 7) and VA_SRC -> GPA_SRC, VA_DST -> @v->dst */
static void s1_build(const struct vsmmu *v)
{
	uint64_t b = v->s1_base;

	memset(gpa_ptr(b), 0, S1_SIZE);
	gpa_put64(b + S1_CD + 0, cd_word0());
	gpa_put64(b + S1_CD + 8, (b + S1_L1) & CD1_TTB0_MASK);
	gpa_put64(b + S1_CD + 24, CD3_MAIR_ATTR0_WB);
	gpa_put64(b + S1_L1 + 8 * S1_L1_IDX(VA_SRC), (b + S1_L2) | PTE_TABLE);
	gpa_put64(b + S1_L2 + 8 * S1_L2_IDX(VA_SRC), (b + S1_L3) | PTE_TABLE);
	vlog("%s's guest: CD at GPA 0x%08" PRIx64 ", ASID %d, tables at 0x%08"
	     PRIx64 "..0x%08" PRIx64, v->name, b + S1_CD, ASID, b + S1_L1,
	     b + S1_L3);
	s1_set_page(v, VA_SRC, GPA_SRC);
	s1_set_page(v, VA_DST, v->dst);
}

static uint8_t pattern_byte(uint8_t seed, size_t i)
{
	return seed ^ (uint8_t)(i * 7 + (i >> 8) * 13);
}

static void pattern_fill(uint8_t *p, uint8_t seed)
{
	size_t i;

	for (i = 0; i < DMA_LEN; i++)
		p[i] = pattern_byte(seed, i);
}

/* Index of the first byte that differs from the pattern, DMA_LEN if none */
static size_t pattern_cmp(const uint8_t *p, uint8_t seed)
{
	size_t i;

	for (i = 0; i < DMA_LEN; i++)
		if (p[i] != pattern_byte(seed, i))
			break;
	return i;
}

static bool poisoned(const uint8_t *p)
{
	size_t i;

	for (i = 0; i < DMA_LEN; i++)
		if (p[i] != POISON)
			return false;
	return true;
}

/* ---- vEVENTQ, dynamic debug, sysfs ---- */

/* Read and show everything queued now; returns the number of records. */
static unsigned int evq_drain(int evfd, bool force)
{
	uint8_t buf[VEVENTQ_DEPTH * EVQ_REC_SIZE];
	unsigned int count = 0;
	ssize_t n;

	if (evfd < 0)
		return 0;
	while ((n = evq_read(evfd, 0, buf, sizeof(buf))) > 0)
		count += evq_parse(buf, n, force);
	if (n < 0)
		diag("vEVENTQ read: %s", ename(n));
	return count;
}

static int write_file(const char *path, const char *s)
{
	ssize_t n, len = strlen(s);
	int fd, rc = 0;

	fd = open(path, O_WRONLY);
	if (fd < 0)
		return -errno;
	n = write(fd, s, len);
	if (n != len)
		rc = n < 0 ? -errno : -EIO;
	close(fd);
	return rc;
}

static int read_line(const char *path, char *buf, size_t len)
{
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = 0;
	buf[strcspn(buf, "\n")] = 0;
	return 0;
}

/* Last path component of the symlink @path, or "" */
static void link_name(const char *path, char *buf, size_t len)
{
	char target[PATH_MAX];
	ssize_t n = readlink(path, target, sizeof(target) - 1);
	const char *s;

	buf[0] = 0;
	if (n <= 0)
		return;
	target[n] = 0;
	s = strrchr(target, '/');
	s = s ? s + 1 : target;
	if (strlen(s) < len)
		memcpy(buf, s, strlen(s) + 1);
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* Whether the driver's dyndbg line is on now (set from the command line) */
static bool dyndbg_on(void)
{
	char line[512];
	bool on = false;
	FILE *f;

	f = fopen(DYNDBG_CONTROL, "r");
	if (!f)
		return false;
	while (fgets(line, sizeof(line), f))
		if (strstr(line, DYNDBG_FILE) && strstr(line, VMID_LOG) &&
		    strstr(line, "=p"))
			on = true;
	fclose(f);
	return on;
}

/*
 * The driver's "vSMMU <id>: VMID <n>" line for @v, logged by the SMMU device
 * that allocated it; false if none within a second.
 */
static bool vmid_from_log(struct ctx *c, struct vsmmu *v)
{
	struct pollfd pfd = { .fd = c->kfd, .events = POLLIN };
	char rec[1024], want[32];
	const char *msg, *p;
	unsigned int vmid;
	ssize_t n;

	if (c->kfd < 0)
		return false;
	snprintf(want, sizeof(want), VMID_LOG "%u: VMID ", v->viommu_id);
	for (;;) {
		n = read(c->kfd, rec, sizeof(rec) - 1);
		if (n < 0 && errno == EPIPE)
			continue;
		if (n < 0 && errno == EAGAIN) {
			if (poll(&pfd, 1, 1000) <= 0)
				return false;
			continue;
		}
		if (n <= 0)
			return false;
		rec[n] = 0;
		/* "<prio>,<seq>,<ts>,<flags>;arm-smmu-v3 <device>: <message>" */
		msg = strchr(rec, ';');
		p = strstr(rec, want);
		if (!msg || !p || sscanf(p + strlen(want), "%u", &vmid) != 1)
			continue;
		v->vmid = vmid;
		msg = strchr(msg, ' ');
		if (msg && msg < p)
			snprintf(v->vmid_dev, sizeof(v->vmid_dev), "%.*s",
				 (int)strcspn(msg + 1, ":"), msg + 1);
		return true;
	}
}

/* ---- step 1: find the edu devices, bind them to vfio-pci ---- */

static bool is_edu(const char *bdf)
{
	char path[PATH_MAX], v[16], d[16];

	snprintf(path, sizeof(path), PCI_DEVICES "/%s/vendor", bdf);
	if (read_line(path, v, sizeof(v)))
		return false;
	snprintf(path, sizeof(path), PCI_DEVICES "/%s/device", bdf);
	if (read_line(path, d, sizeof(d)))
		return false;
	return !strcmp(v, EDU_VENDOR) && !strcmp(d, EDU_DEVICE);
}

/*
 * The SMMU of a device bound to vfio-pci. With ACPI, a PCI device meets its
 * IOMMU when a driver binds (dma_configure), not when the SMMU probes: an
 * edu device without a driver has no IOMMU group yet.
 */
static int edu_smmu(struct edu *e)
{
	char path[PATH_MAX], smmu_dev[PATH_MAX];

	snprintf(path, sizeof(path), PCI_DEVICES "/%s/iommu", e->bdf);
	link_name(path, e->smmu, sizeof(e->smmu));
	if (!e->smmu[0])
		return -ENODEV;
	snprintf(smmu_dev, sizeof(smmu_dev), "/sys/class/iommu/%s/device",
		 e->smmu);
	link_name(smmu_dev, e->smmu_dev, sizeof(e->smmu_dev));
	return 0;
}

static int edu_parse_bdf(struct edu *e)
{
	unsigned int dom, bus, dev, fn;

	if (sscanf(e->bdf, "%x:%x:%x.%x", &dom, &bus, &dev, &fn) != 4)
		return -EINVAL;
	e->sid = bus << 8 | dev << 3 | fn;
	return 0;
}

/* Bound to vfio-pci, the cdev path in e->cdev */
static int edu_bind_vfio(struct edu *e)
{
	char path[PATH_MAX], drv[64];
	struct dirent *de;
	int waited = 0;
	DIR *d;

	snprintf(path, sizeof(path), PCI_DEVICES "/%s/driver", e->bdf);
	link_name(path, drv, sizeof(drv));
	if (strcmp(drv, "vfio-pci")) {
		snprintf(path, sizeof(path), PCI_DEVICES "/%s/driver_override",
			 e->bdf);
		if (write_file(path, "vfio-pci"))
			return -EIO;
		if (drv[0]) {
			snprintf(path, sizeof(path), PCI_DEVICES
				 "/%s/driver/unbind", e->bdf);
			write_file(path, e->bdf);
		}
		write_file("/sys/bus/pci/drivers_probe", e->bdf);
	}
	snprintf(path, sizeof(path), PCI_DEVICES "/%s/vfio-dev", e->bdf);
	for (;;) {
		d = opendir(path);
		while (d && (de = readdir(d)))
			if (!strncmp(de->d_name, "vfio", 4)) {
				snprintf(e->cdev, sizeof(e->cdev),
					 "/dev/vfio/devices/%.32s", de->d_name);
				closedir(d);
				return 0;
			}
		if (d)
			closedir(d);
		if (waited >= BIND_TIMEOUT_MS)
			return -ETIMEDOUT;
		sleep_ms(100);
		waited += 100;
		if (waited == 1000)
			vlog("%s: waiting for its vfio cdev", e->bdf);
	}
}

static int by_bdf(const void *a, const void *b)
{
	return strcmp(((const struct edu *)a)->bdf,
		      ((const struct edu *)b)->bdf);
}

/* Roles from the SMMUs: A has two, B and C one each, C has no stage 2 */
static int assign_roles(struct ctx *c, struct edu *found, int n)
{
	int i, j, count, a = -1, a2 = -1, b = -1, d = -1;

	for (i = 0; i < n; i++) {
		count = 0;
		for (j = 0; j < n; j++)
			count += !strcmp(found[i].smmu, found[j].smmu);
		if (count == 2 && a < 0) {
			a = i;
			for (j = i + 1; j < n; j++)
				if (!strcmp(found[i].smmu, found[j].smmu))
					a2 = j;
		} else if (count == 1 && !(found[i].idr0 & IDR0_S2P)) {
			d = i;
		} else if (count == 1) {
			b = i;
		}
	}
	if (a < 0 || a2 < 0 || b < 0 || d < 0)
		return -ENODEV;
	c->dev[DEVA] = found[a];
	c->dev[DEVC] = found[a2];
	c->dev[DEVB] = found[b];
	c->dev[DEVD] = found[d];
	return 0;
}

/* IDR0 of the SMMU behind the sysfs device, from the GET_HW_INFO of a
 * temporary bind: GET_HW_INFO needs a bound device, and roles come first. */
static int edu_open_bind(struct ctx *c, struct edu *e)
{
	struct iommu_hw_info_arm_smmuv3 info = { 0 };
	uint32_t type = 0;
	int rc;

	e->vfd = open(e->cdev, O_RDWR);
	if (e->vfd < 0)
		return -errno;
	rc = vfio_bind(e->vfd, c->iommufd, &e->dev_id);
	if (!rc)
		rc = get_hw_info(c->iommufd, e->dev_id, &info, &type);
	if (!rc && type != IOMMU_HW_INFO_TYPE_ARM_SMMUV3)
		rc = -EPROTO;
	e->idr0 = info.idr[0];
	return rc;
}

static const char *const role_name[N_DEVS] = { "deva", "devb", "devc", "devd" };

static int step_find(struct ctx *c, char **bdfs, int nbdfs)
{
	struct edu found[8] = { 0 };
	struct dirent *de;
	int i, n = 0, rc = 0;
	DIR *d;

	vlog("step 1: the edu devices, their SMMUs, vfio-pci");
	if (nbdfs) {
		for (i = 0; i < nbdfs && i < N_DEVS; i++)
			snprintf(found[n++].bdf, sizeof(found[0].bdf), "%.12s",
				 bdfs[i]);
	} else {
		d = opendir(PCI_DEVICES);
		while (d && (de = readdir(d)) && n < 8) {
			unsigned int bus;

			/* Bus 0 is viommu-e2e's */
			if (sscanf(de->d_name, "%*x:%x:", &bus) != 1 || !bus ||
			    !is_edu(de->d_name))
				continue;
			snprintf(found[n++].bdf, sizeof(found[0].bdf), "%.12s",
				 de->d_name);
		}
		if (d)
			closedir(d);
		qsort(found, n, sizeof(found[0]), by_bdf);
	}
	for (i = 0; i < n && !rc; i++) {
		found[i].vfd = -1;
		rc = edu_parse_bdf(&found[i]);
		if (!rc)
			rc = edu_bind_vfio(&found[i]);
		if (!rc)
			rc = edu_smmu(&found[i]);
		if (!rc)
			rc = edu_open_bind(c, &found[i]);
		if (rc)
			diag("%s: %s", found[i].bdf, ename(rc));
		vlog("%s: SID 0x%04x, %s (%s), %s, IDR0 0x%08x", found[i].bdf,
		     found[i].sid, found[i].smmu, found[i].smmu_dev,
		     found[i].cdev, found[i].idr0);
	}
	if (!rc && nbdfs) {
		if (n < N_DEVS)
			rc = -EINVAL;
		for (i = 0; i < n && !rc; i++)
			c->dev[i] = found[i];
	} else if (!rc) {
		rc = assign_roles(c, found, n);
	}
	for (i = 0; i < n && rc; i++)	/* none of them is ours */
		if (found[i].vfd >= 0)
			close(found[i].vfd);
	if (!check(T_FIND, !rc, "%d edu device(s) off bus 0: %s", n,
		   ename(rc)))
		return -1;
	for (i = 0; i < N_DEVS; i++) {
		c->dev[i].role = role_name[i];
		/* For the host's look at QEMU's trace (scripts/smmu-trace.py) */
		printf("@@ 2smmu dev %s %s sid 0x%x smmu %s\n", c->dev[i].role,
		       c->dev[i].bdf, c->dev[i].sid, c->dev[i].smmu_dev);
	}
	rc = strcmp(c->dev[DEVA].smmu, c->dev[DEVC].smmu) ||
	     !strcmp(c->dev[DEVA].smmu, c->dev[DEVB].smmu) ||
	     !strcmp(c->dev[DEVA].smmu, c->dev[DEVD].smmu) ||
	     !strcmp(c->dev[DEVB].smmu, c->dev[DEVD].smmu);
	for (i = 0; i < N_DEVS; i++)
		if (!c->dev[i].dev_id)
			rc = 1;
	return check(T_BIND, !rc, "SMMUs %s %s %s %s, dev_ids %u %u %u %u",
		     c->dev[0].smmu, c->dev[1].smmu, c->dev[2].smmu,
		     c->dev[3].smmu, c->dev[0].dev_id, c->dev[1].dev_id,
		     c->dev[2].dev_id, c->dev[3].dev_id) ? 0 : -1;
}

/* ---- step 2: IOAS, guest memory, edu, hw_info ---- */

static int step_ioas(struct ctx *c)
{
	char why[160];
	const char *err = NULL;
	int i, rc;

	gmem = c->gmem = gmem_alloc();
	rc = c->gmem ? ioas_alloc(c->iommufd, &c->ioas_id) : -ENOMEM;
	if (!rc)
		rc = ioas_map(c->iommufd, c->ioas_id, c->gmem, GMEM_SIZE,
			      GMEM_GPA);
	vlog("IOAS %u: guest memory %p (16 MiB) at GPA 0x%08" PRIx64,
	     c->ioas_id, (void *)c->gmem, GMEM_GPA);
	if (!check(T_IOAS, !rc, "IOAS alloc/map: %s", ename(rc)))
		return -1;

	for (i = 0; i < N_DEVS && !err; i++)
		err = edu_setup(&c->dev[i], why, sizeof(why));
	check(T_EDU, !err, "%s: %s", c->dev[i - 1].role, err);

	check(T_HWINFO, (c->dev[DEVA].idr0 & 3) == 3 &&
			(c->dev[DEVB].idr0 & 3) == 3 &&
			(c->dev[DEVD].idr0 & 3) == IDR0_S1P,
	      "IDR0: A 0x%08x, B 0x%08x, C 0x%08x", c->dev[DEVA].idr0,
	      c->dev[DEVB].idr0, c->dev[DEVD].idr0);
	return 0;
}

/* ---- step 3: the flow of the design ---- */

static int step_viommus(struct ctx *c)
{
	struct edu *a = &c->dev[DEVA], *b = &c->dev[DEVB];
	bool found[2];
	int rc, i;

	vlog("step 3: s2, then a vSMMU on it for each SMMU instance");
	rc = set_unsafe_nesting(1);
	if (!rc)
		rc = s2_alloc(c->iommufd, a->dev_id, c->ioas_id, &c->s2_id);
	vlog("hwpt_alloc(deva %u, nesting parent) = s2 %u: %s", a->dev_id,
	     c->s2_id, ename(rc));
	if (!check(T_S2, !rc, "allow_unsafe_nesting=1 / nesting parent: %s",
		   ename(rc)))
		return -1;

	rc = viommu_alloc(c->iommufd, IOMMU_VIOMMU_TYPE_ARM_SMMUV3, a->dev_id,
			  c->s2_id, &c->v[0].viommu_id);
	vlog("viommu_alloc(deva, s2) = v1 %u (%s): %s", c->v[0].viommu_id,
	     a->smmu, ename(rc));
	check(T_V1, !rc, "v1: %s", ename(rc));
	rc = viommu_alloc(c->iommufd, IOMMU_VIOMMU_TYPE_ARM_SMMUV3, b->dev_id,
			  c->s2_id, &c->v[1].viommu_id);
	vlog("viommu_alloc(devb, s2) = v2 %u (%s): %s", c->v[1].viommu_id,
	     b->smmu, ename(rc));
	check(T_V2, !rc, "v2: %s", ename(rc));
	if (!c->v[0].viommu_id || !c->v[1].viommu_id)
		return -1;

	for (i = 0; i < 2; i++) {
		found[i] = vmid_from_log(c, &c->v[i]);
		vlog("%s (vIOMMU %u): VMID %d, logged by %s", c->v[i].name,
		     c->v[i].viommu_id, c->v[i].vmid,
		     found[i] ? c->v[i].vmid_dev : "(no line)");
		if (found[i])
			printf("@@ 2smmu vmid %s %d smmu %s\n", c->v[i].name,
			       c->v[i].vmid, c->v[i].vmid_dev);
	}
	check(T_VMIDS, found[0] && found[1] && c->v[0].vmid > 0 &&
		       c->v[1].vmid > 0 &&
		       !strcmp(c->v[0].vmid_dev, a->smmu_dev) &&
		       !strcmp(c->v[1].vmid_dev, b->smmu_dev),
	      "v1: VMID %d from %s (SMMU A is %s); v2: VMID %d from %s (SMMU B is %s)",
	      c->v[0].vmid, found[0] ? c->v[0].vmid_dev : "no line",
	      a->smmu_dev, c->v[1].vmid, found[1] ? c->v[1].vmid_dev :
	      "no line", b->smmu_dev);
	return 0;
}

static void step_nested(struct ctx *c)
{
	struct edu *a = &c->dev[DEVA], *b = &c->dev[DEVB], *d = &c->dev[DEVC];
	struct vsmmu *v1 = &c->v[0], *v2 = &c->v[1];
	int rc, rc2, i, rcs[2];
	uint32_t id, pt;

	vlog("step 4: vDEVICEs, vEVENTQs, nested HWPTs, attach");
	rc = vdevice_alloc(c->iommufd, v1->viommu_id, a->dev_id, VSID,
			   &v1->vdev_id);
	rc2 = vdevice_alloc(c->iommufd, v2->viommu_id, b->dev_id, VSID,
			    &v2->vdev_id);
	vlog("vDEVICE %u: deva on v1, vSID 0x%x: %s; vDEVICE %u: devb on v2, vSID 0x%x: %s",
	     v1->vdev_id, VSID, ename(rc), v2->vdev_id, VSID, ename(rc2));
	check(T_VDEV, !rc && !rc2, "v1: %s, v2: %s", ename(rc), ename(rc2));

	rc = veventq_alloc(c->iommufd, v1->viommu_id,
			   IOMMU_VEVENTQ_TYPE_ARM_SMMUV3, VEVENTQ_DEPTH,
			   &v1->veventq_id, &v1->evfd);
	rc2 = veventq_alloc(c->iommufd, v2->viommu_id,
			    IOMMU_VEVENTQ_TYPE_ARM_SMMUV3, VEVENTQ_DEPTH,
			    &v2->veventq_id, &v2->evfd);
	check(T_VEVENTQ, !rc && !rc2, "v1: %s, v2: %s", ename(rc), ename(rc2));

	for (i = 0; i < 2; i++) {
		s1_build(&c->v[i]);
		rc = nested_alloc(c->iommufd, c->v[i].dev->dev_id,
				  c->v[i].viommu_id, vste_s1(&c->v[i]),
				  vste_s1_word1(), &c->v[i].nested_id);
		vlog("hwpt_alloc(%s, %s, vSTE 0x%016" PRIx64 ") = %u: %s",
		     c->v[i].dev->role, c->v[i].name, vste_s1(&c->v[i]),
		     c->v[i].nested_id, ename(rc));
		check(i ? T_NB : T_NA, !rc, "nested HWPT: %s", ename(rc));
	}

	/* A device reaches another SMMU's stage 2 through its own vSMMU */
	rc = nested_alloc(c->iommufd, b->dev_id, v1->viommu_id, vste_s1(v2),
			  vste_s1_word1(), &id);
	if (!rc)
		iommu_destroy(c->iommufd, id);
	vlog("hwpt_alloc(devb, v1, vSTE): %s", ename(rc));
	check_err(T_CROSS_NESTED, rc, EINVAL, "devb's nested HWPT on v1");
	pt = v1->nested_id;
	rc = pt ? vfio_attach(b->vfd, &pt) : -ENOENT;
	if (!rc)
		vfio_detach(b->vfd);
	vlog("attach(devb, na): %s", ename(rc));
	check_err(T_CROSS_ATTACH, rc, EINVAL, "attach devb to na");
	pt = c->s2_id;
	rc = vfio_attach(b->vfd, &pt);
	if (!rc)
		vfio_detach(b->vfd);
	vlog("attach(devb, s2): %s", ename(rc));
	check_err(T_CROSS_S2, rc, EINVAL, "attach devb to s2");

	for (i = 0; i < 2; i++) {
		pt = c->v[i].nested_id;
		rcs[i] = pt ? vfio_attach(c->v[i].dev->vfd, &pt) : -ENOENT;
		c->v[i].attached = !rcs[i];
		vlog("attach(%s, %s's nested HWPT %u): %s", c->v[i].dev->role,
		     c->v[i].name, c->v[i].nested_id, ename(rcs[i]));
	}
	pt = c->s2_id;
	rc = vfio_attach(d->vfd, &pt);
	c->c_attached = !rc && pt == c->s2_id;
	vlog("attach(devc, s2 %u): %s, attached to %u", c->s2_id, ename(rc),
	     pt);
	check(T_ATTACH, v1->attached && v2->attached && c->c_attached,
	      "deva: %s, devb: %s, devc: %s", ename(rcs[0]), ename(rcs[1]),
	      ename(rc));
}

/* ---- DMA ---- */

/* RAM at @src -> edu -> RAM at @dst, addresses as @e sees them */
static int dma_copy(struct edu *e, uint64_t src, uint64_t dst)
{
	int rc;

	vlog("%s DMA: 0x%08" PRIx64 " -> edu -> 0x%08" PRIx64, e->role, src,
	     dst);
	rc = edu_from_ram(e, src, DMA_LEN);
	if (!rc)
		rc = edu_to_ram(e, dst, DMA_LEN);
	if (rc)
		diag("%s DMA: %s", e->role, ename(rc));
	return rc;
}

/* Source = @seed's pattern; @e copies @src to @dst; @where must hold it */
static bool dma_check(unsigned int t, struct edu *e, uint64_t src,
		      uint64_t dst, uint8_t *where, uint8_t seed)
{
	size_t at;
	int rc;

	if (!e->edu_ok)
		return check(t, false, "%s: no edu", e->role);
	pattern_fill(gpa_ptr(GPA_SRC), seed);
	memset(where, POISON, DMA_LEN);
	__sync_synchronize();
	rc = dma_copy(e, src, dst);
	at = pattern_cmp(where, seed);
	return check(t, !rc && at == DMA_LEN,
		     "%s DMA: %s; byte %zu is 0x%02x, expected 0x%02x",
		     e->role, ename(rc), at, at < DMA_LEN ? where[at] : 0,
		     at < DMA_LEN ? pattern_byte(seed, at) : 0);
}

static void step_dma(struct ctx *c)
{
	vlog("step 5: DMA of the three devices, each through its translation");
	dma_check(T_DMA_A, &c->dev[DEVA], VA_SRC, VA_DST, gpa_ptr(GPA_DST_A),
		  0xa1);
	dma_check(T_DMA_B, &c->dev[DEVB], VA_SRC, VA_DST, gpa_ptr(GPA_DST_B),
		  0xb1);
	dma_check(T_DMA_C, &c->dev[DEVC], GPA_SRC, GPA_DST_C,
		  gpa_ptr(GPA_DST_C), 0xc1);
}

/* ---- step 6: a stage-1 fault goes to the vSMMU of the device ---- */

static void fault_on(struct ctx *c, unsigned int t, int i)
{
	uint8_t buf[VEVENTQ_DEPTH * EVQ_REC_SIZE];
	struct vsmmu *v = &c->v[i], *other = &c->v[!i];
	struct iommu_vevent_arm_smmuv3 e;
	struct iommufd_vevent_header h;
	uint64_t e0 = 0, addr = 0;
	unsigned int stray;
	ssize_t n;
	int rc;

	evq_drain(v->evfd, true);
	evq_drain(other->evfd, true);
	rc = v->dev->edu_ok ? edu_to_ram(v->dev, VA_FAULT, FAULT_LEN) : -ENODEV;
	n = evq_read(v->evfd, EVQ_TIMEOUT_MS, buf, sizeof(buf));
	if (n >= (ssize_t)EVQ_REC_SIZE) {
		memcpy(&h, buf, sizeof(h));
		memcpy(&e, buf + sizeof(h), sizeof(e));
		e0 = le64toh(e.evt[0]);
		addr = le64toh(e.evt[2]);
		evq_parse(buf, n, false);
	}
	vlog("%s DMA to VA 0x%08" PRIx64 ": %s; %s's vEVENTQ: %zd bytes, event 0x%02"
	     PRIx64 ", vSID 0x%" PRIx64 ", address 0x%" PRIx64, v->dev->role,
	     VA_FAULT, ename(rc), v->name, n, EVT0_ID(e0), EVT0_SID(e0), addr);
	check(t, !rc && n >= (ssize_t)EVQ_REC_SIZE &&
		 EVT0_ID(e0) == EVT_F_TRANSLATION && EVT0_SID(e0) == VSID &&
		 addr == VA_FAULT,
	      "DMA: %s; %s's vEVENTQ: %zd bytes, event 0x%02" PRIx64
	      ", vSID 0x%" PRIx64 ", address 0x%" PRIx64, ename(rc), v->name,
	      n, EVT0_ID(e0), EVT0_SID(e0), addr);
	/* The event thread is done with the fault once v's event is queued */
	stray = evq_drain(other->evfd, true);
	vlog("%s's vEVENTQ: %u event(s)", other->name, stray);
	check(t + 1, n > 0 && !stray, "%u event(s) in %s's vEVENTQ", stray,
	      other->name);
	evq_drain(v->evfd, false);
}

static void step_fault(struct ctx *c)
{
	vlog("step 6: stage-1 faults, each to its own vSMMU's vEVENTQ");
	fault_on(c, T_FAULT_A, 0);
	fault_on(c, T_FAULT_B, 1);
}

/* ---- step 7: the shared stage 2 changes under all three ---- */

static void tlbi_va(struct ctx *c, struct vsmmu *v, uint64_t va)
{
	struct iommu_viommu_arm_smmuv3_invalidate inv = {
		.cmd = { htole64(CMD_TLBI_NH_VA | CMD0_ASID(ASID)),
			 htole64((va & CMD1_VA_MASK) | CMD1_LEAF) },
	};
	uint32_t num = 1;
	int rc = viommu_invalidate(c->iommufd, v->viommu_id, &inv, &num);

	if (rc)
		diag("%s: TLBI_NH_VA: %s", v->name, ename(rc));
}

/* Map @page at GPA_S2 in place of @old (NULL: nothing mapped there yet) */
static int s2_move(struct ctx *c, uint8_t *old, uint8_t *page)
{
	int rc = 0;

	if (old)
		rc = ioas_unmap(c->iommufd, c->ioas_id, GPA_S2, SZ_4K, NULL);
	if (!rc)
		rc = ioas_map(c->iommufd, c->ioas_id, page, SZ_4K, GPA_S2);
	vlog("IOAS: GPA 0x%08" PRIx64 " now host page %p (%s)", GPA_S2,
	     (void *)page, ename(rc));
	if (rc)
		diag("stage 2 unmap/map: %s", ename(rc));
	return rc;
}

/* DMA of @e through @va/@iova at GPA_S2: in @page, seed @seed? */
static bool s2_dma(struct edu *e, uint64_t iova, uint8_t *page, uint8_t seed)
{
	int rc;

	if (!e->edu_ok)
		return false;
	pattern_fill(gpa_ptr(GPA_SRC), seed);
	memset(page, POISON, DMA_LEN);
	__sync_synchronize();
	rc = dma_copy(e, iova == GPA_S2 ? GPA_SRC : VA_SRC, iova);
	if (!rc && pattern_cmp(page, seed) == DMA_LEN)
		return true;
	diag("%s: DMA %s, page %p[0] = 0x%02x, expected 0x%02x", e->role,
	     ename(rc), (void *)page, page[0], pattern_byte(seed, 0));
	return false;
}

static uint8_t *pages;	/* X, Y, Z */

static void step_s2_remap(struct ctx *c)
{
	struct edu *a = &c->dev[DEVA], *b = &c->dev[DEVB], *d = &c->dev[DEVC];
	uint8_t *x, *y;
	bool ok;
	int i;

	vlog("step 7: the shared stage 2 changes under the three devices");
	pages = mmap(NULL, 3 * SZ_4K, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (pages == MAP_FAILED) {
		pages = NULL;
		fail_range(T_S2_X, T_S2_OLD, "no memory");
		return;
	}
	x = pages;
	y = pages + SZ_4K;
	for (i = 0; i < 2; i++) {
		s1_set_page(&c->v[i], VA_S2, GPA_S2);
		__sync_synchronize();
		tlbi_va(c, &c->v[i], VA_S2);
	}
	/* Each DMA leaves its SMMU a TLB entry: v1's, v2's, s2's VMID */
	ok = !s2_move(c, NULL, x);
	ok = ok && s2_dma(a, VA_S2, x, 0xa2);
	ok = ok && s2_dma(b, VA_S2, x, 0xb2);
	ok = ok && s2_dma(d, GPA_S2, x, 0xc2);
	check(T_S2_X, ok, "not all three reached page X");
	if (!ok) {
		fail_range(T_S2_A, T_S2_OLD, "no DMA to page X");
		return;
	}
	ok = !s2_move(c, x, y);
	memset(x, POISON, DMA_LEN);
	check(T_S2_A, ok && s2_dma(a, VA_S2, y, 0xa3), NULL);
	check(T_S2_B, ok && s2_dma(b, VA_S2, y, 0xb3), NULL);
	check(T_S2_C, ok && s2_dma(d, GPA_S2, y, 0xc3), NULL);
	check(T_S2_OLD, poisoned(x), "page X[0] = 0x%02x", x[0]);
}

/* ---- step 8: a vSMMU on an SMMU without stage 2 ---- */

static void step_smmu_c(struct ctx *c)
{
	struct edu *e = &c->dev[DEVD];
	uint32_t id = 0, probe = 0, probe2 = 0;
	int rc, prc;

	vlog("step 8: devd's SMMU C has no stage 2 (IDR0 0x%08x)", e->idr0);
	rc = s2_alloc(c->iommufd, e->dev_id, c->ioas_id, &id);
	if (!rc)
		iommu_destroy(c->iommufd, id);
	vlog("hwpt_alloc(devd, nesting parent): %s", ename(rc));
	check_err(T_C_S2, rc, EOPNOTSUPP, "nesting parent on SMMU C");

	/* The lowest free object ID, before and after the refusal */
	prc = ioas_alloc(c->iommufd, &probe);
	if (!prc)
		iommu_destroy(c->iommufd, probe);
	rc = viommu_alloc(c->iommufd, IOMMU_VIOMMU_TYPE_ARM_SMMUV3, e->dev_id,
			  c->s2_id, &id);
	if (!rc)
		iommu_destroy(c->iommufd, id);
	vlog("viommu_alloc(devd, s2): %s", ename(rc));
	check_err(T_C_VIOMMU, rc, EOPNOTSUPP, "vIOMMU on SMMU C");
	if (!prc)
		prc = ioas_alloc(c->iommufd, &probe2);
	if (!prc)
		iommu_destroy(c->iommufd, probe2);
	vlog("free object ID before the refused vIOMMU: %u, after: %u", probe,
	     probe2);
	check(T_C_NOTHING, !prc && probe && probe == probe2,
	      "probe IOAS: %s, ID %u before, %u after", ename(prc), probe,
	      probe2);
}

/* ---- step 9: v1's side goes, the rest keeps working ---- */

static int destroy(struct ctx *c, uint32_t *id)
{
	int rc = *id ? iommu_destroy(c->iommufd, *id) : -ENOENT;

	if (!rc)
		*id = 0;
	return rc;
}

static void vsmmu_down(struct ctx *c, struct vsmmu *v, int *rcs)
{
	rcs[0] = v->attached ? vfio_detach(v->dev->vfd) : -ENODEV;
	if (!rcs[0])
		v->attached = false;
	rcs[1] = destroy(c, &v->nested_id);
	rcs[2] = destroy(c, &v->vdev_id);
	if (v->evfd >= 0)
		close(v->evfd);
	v->evfd = -1;
	rcs[3] = destroy(c, &v->veventq_id);
	rcs[4] = destroy(c, &v->viommu_id);
	vlog("%s down: detach %s, nested HWPT %s, vDEVICE %s, vEVENTQ %s, vIOMMU %s",
	     v->name, ename(rcs[0]), ename(rcs[1]), ename(rcs[2]),
	     ename(rcs[3]), ename(rcs[4]));
}

static void step_v1_down(struct ctx *c)
{
	struct edu *b = &c->dev[DEVB], *d = &c->dev[DEVC];
	int rcs[5], rc, i;
	bool ok;

	vlog("step 9: v1's side destroyed; devb and devc go on");
	vsmmu_down(c, &c->v[0], rcs);
	for (rc = 0, i = 0; i < 5; i++)
		rc = rc ? rc : rcs[i];
	check(T_V1_DOWN, !rc, "detach %s, na %s, vDEVICE %s, vEVENTQ %s, v1 %s",
	      ename(rcs[0]), ename(rcs[1]), ename(rcs[2]), ename(rcs[3]),
	      ename(rcs[4]));
	rc = iommu_destroy(c->iommufd, c->s2_id);
	if (!rc)
		c->s2_id = 0;
	check_err(T_V1_S2_BUSY, rc, EBUSY, "destroy s2");

	dma_check(T_AFTER_B, b, VA_SRC, VA_DST, gpa_ptr(GPA_DST_B), 0xb4);
	dma_check(T_AFTER_C, d, GPA_SRC, GPA_DST_C, gpa_ptr(GPA_DST_C), 0xc4);

	/* The invalidation fan-out without v1 */
	if (!pages) {
		check(T_AFTER_S2, false, "no pages");
		return;
	}
	ok = s2_dma(b, VA_S2, pages + SZ_4K, 0xb5) &&
	     s2_dma(d, GPA_S2, pages + SZ_4K, 0xc5);
	ok = ok && !s2_move(c, pages + SZ_4K, pages + 2 * SZ_4K);
	memset(pages + SZ_4K, POISON, DMA_LEN);
	ok = ok && s2_dma(b, VA_S2, pages + 2 * SZ_4K, 0xb6) &&
	     s2_dma(d, GPA_S2, pages + 2 * SZ_4K, 0xc6);
	check(T_AFTER_S2, ok && poisoned(pages + SZ_4K), "page Y[0] = 0x%02x",
	      pages[SZ_4K]);
}

/* ---- step 10: teardown ---- */

static void step_teardown(struct ctx *c)
{
	int rcs[5], rc, i, crc = 0;

	vlog("step 10: teardown");
	vsmmu_down(c, &c->v[1], rcs);
	for (rc = 0, i = 0; i < 5; i++)
		rc = rc ? rc : rcs[i];
	if (c->c_attached)
		crc = vfio_detach(c->dev[DEVC].vfd);
	c->c_attached = false;
	if (!rc)
		rc = crc;
	if (!rc)
		rc = destroy(c, &c->s2_id);
	if (!rc && pages)
		rc = ioas_unmap(c->iommufd, c->ioas_id, GPA_S2, SZ_4K, NULL);
	if (!rc)
		rc = ioas_unmap(c->iommufd, c->ioas_id, GMEM_GPA, GMEM_SIZE,
				NULL);
	if (!rc)
		rc = destroy(c, &c->ioas_id);
	vlog("teardown: %s", ename(rc));
	check(T_TEARDOWN, !rc, "v2 side: %s %s %s %s %s; devc detach %s; then %s",
	      ename(rcs[0]), ename(rcs[1]), ename(rcs[2]), ename(rcs[3]),
	      ename(rcs[4]), ename(crc), ename(rc));
}

/* ---- main ---- */

static void usage(const char *prog)
{
	fprintf(stderr, "Usage: %s [-v] [DEVA DEVB DEVC DEVD]\n", prog);
	exit(2);
}

int main(int argc, char **argv)
{
	struct ctx c = {
		.iommufd = -1, .kfd = -1,
		.v = {
			{ .name = "v1", .s1_base = GPA_S1_A, .dst = GPA_DST_A,
			  .evfd = -1, .vmid = -1 },
			{ .name = "v2", .s1_base = GPA_S1_B, .dst = GPA_DST_B,
			  .evfd = -1, .vmid = -1 },
		},
	};
	char *bdfs[N_DEVS];
	int i, nbdfs = 0;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-v"))
			verbose = true;
		else if (argv[i][0] != '-' && nbdfs < N_DEVS)
			bdfs[nbdfs++] = argv[i];
		else
			usage(argv[0]);
	}
	if (nbdfs && nbdfs != N_DEVS)
		usage(argv[0]);
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("TAP version 13\n1..%d\n", T_COUNT);
	raise_memlock();

	/* The driver's VMID line: on for the run, as it was after */
	c.dyndbg_was_on = dyndbg_on();
	if (!c.dyndbg_was_on &&
	    write_file(DYNDBG_CONTROL, "file " DYNDBG_FILE " +p"))
		diag("cannot enable the dynamic debug of " DYNDBG_FILE);
	c.kfd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK);
	if (c.kfd >= 0)
		lseek(c.kfd, 0, SEEK_END);

	c.iommufd = open("/dev/iommu", O_RDWR);
	if (c.iommufd < 0) {
		diag("/dev/iommu: %s", ename(-errno));
		goto out;
	}
	if (step_find(&c, bdfs, nbdfs))
		goto out;
	c.v[0].dev = &c.dev[DEVA];
	c.v[1].dev = &c.dev[DEVB];
	if (step_ioas(&c) || step_viommus(&c))
		goto out;
	step_nested(&c);
	step_dma(&c);
	step_fault(&c);
	step_s2_remap(&c);
	step_smmu_c(&c);
	step_v1_down(&c);
	step_teardown(&c);
out:
	if (next_test < T_COUNT)
		diag("bailing out: the remaining checks need what failed above");
	fail_until(T_COUNT, "not run: bailed out");
	if (!c.dyndbg_was_on)
		write_file(DYNDBG_CONTROL, "file " DYNDBG_FILE " -p");
	printf("# Totals: pass:%u fail:%u xfail:0 xpass:0 skip:%u error:0\n",
	       n_pass, n_fail, n_skip);
	return n_fail ? 1 : 0;
}

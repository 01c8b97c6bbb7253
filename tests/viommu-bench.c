// SPDX-License-Identifier: GPL-2.0
/*
 * viommu-bench - what the iommufd vIOMMU series costs, as ratios
 *
 * Usage: viommu-bench [-s] [-r REPS] [mock] [churn] [smmu /dev/vfio/devices/vfioN]
 *
 * Under TCG absolute times mean little, so every figure is the ratio of two
 * things measured in the same run, interleaved. A measure has variants (say
 * 1-entry and 128-entry calls); each repetition times every variant once,
 * in an order that rotates from one repetition to the next, for a sample of
 * calls long enough for the clock (calibrated first). A ratio is taken per
 * repetition, between two variants of that repetition, and its min, median
 * and max over the repetitions are reported with their count.
 *
 * mock (the iommufd selftest driver, CONFIG_IOMMUFD_TEST):
 *   inv     IOMMU_HWPT_INVALIDATE, cost per entry through a vIOMMU (one
 *           vDEVICE named per entry) over the cost through a nested HWPT
 *           on the nesting parent (the 6.12 path), 1, 8, 32, 128 and 1024
 *           entries per call; per entry, 1 entry per call over 128 entries
 *           per call, for both paths
 *   lookup  128-entry vIOMMU invalidations on vIOMMUs holding 64 and 4096
 *           vDEVICEs (one mock device each) over the same on a vIOMMU
 *           holding one; every entry names the same virt_id, or (spread)
 *           each entry another vDEVICE; and 4096 vDEVICEs with dense
 *           virt_ids (0 to 4095: as few xarray levels as one vDEVICE)
 *   vevent  trigger + read, events per second with 64-event reads over
 *           1-event reads; a trigger into a full vEVENTQ (the event is
 *           lost) over a trigger into one with room
 * churn     VIOMMU_ALLOC + VDEVICE_ALLOC + nested HWPT + attach + detach +
 *           destroy of all three, per second, two threads over one: one
 *           iommufd for both threads (as one VMM), one iommufd each (two
 *           VMMs), and getppid() as the control (what the guest and the
 *           host give two threads at all); then each churn ratio over the
 *           control's, per repetition
 * smmu      the ARM SMMUv3 behind the vfio cdev (the arm64 guest's emulated
 *           SMMUv3 with QEMU's edu): guest TLBI_NH_VA commands through the
 *           vSMMU, per entry, 1 per call over 128 per call. Before that,
 *           one 128-entry call and one 1-entry call, each between two
 *           TLBI_NH_ASID marker commands (ASIDs printed on a '@@ bench-marks'
 *           line), so that the commands the SMMU received can be counted in
 *           the L0 QEMU's smmuv3_cmdq_* trace (scripts/bench.sh).
 *
 * -s is the smoke run of make test: tiny counts, so the program cannot rot.
 *
 * The clock is CLOCK_MONOTONIC. make bench runs the mock and smmu sets under
 * QEMU's -icount shift=0, where a guest nanosecond is a guest instruction:
 * the costs are then instruction counts, which the host's load cannot
 * change. The churn set needs real parallelism, so it runs on the wall
 * clock, with its control.
 *
 * Output is kselftest TAP, one check per measure: a check fails only when the
 * measure cannot be taken (an ioctl fails or reports other than expected);
 * goals are judged by scripts/bench.sh. Each ratio is also printed as
 *   @@ bench KEY MIN MEDIAN MAX REPS
 * and side figures (absolute rates, setup costs) as '@@ bench-note KEY text'.
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>

#include <linux/iommufd.h>
#include <linux/vfio.h>
#include "iommufd-util.h"
#include "iommufd_test.h"

#define NSEC_PER_SEC		1000000000.0
/* How to read the ns of a note: see the clock, above */
#define NOTE_ICOUNT		" (medians; guest ns: instructions when QEMU runs with -icount shift=0, as in make bench)"

/* mock: invalidation */
static const unsigned int inv_sizes[] = { 1, 8, 32, 128, 1024 };
#define ARRAY_SIZE(a)		(sizeof(a) / sizeof((a)[0]))
#define INV_SIZES		ARRAY_SIZE(inv_sizes)
#define INV_MAX			1024
#define INV_BATCH		128
/* mock: vEVENTQ */
#define VEVENT_BATCH		64
#define VEVENTQ_FULL_DEPTH	64
#define VEVENTQ_ROOM_DEPTH	(1U << 16)
/* churn */
#define CHURN_THREADS		2

/* smmu */
#define UNSAFE_NESTING_PARAM	"/sys/module/arm_smmu_v3/parameters/allow_unsafe_nesting"
#define CMD_TLBI_NH_ASID	0x11
#define CMD_TLBI_NH_VA		0x12
#define CMD0_ASID(x)		((uint64_t)(x) << 48)
#define CMD1_LEAF		1ULL
#define SMMU_ASID		7
#define SMMU_VA			0x08000000ULL
#define SMMU_PAGE		0x1000ULL
#define SMMU_BATCH		128
#define MARK_ASID_0		0xb01	/* before the 128-entry call */
#define MARK_ASID_1		0xb02	/* between it and the 1-entry call */
#define MARK_ASID_2		0xb03	/* after the 1-entry call */

/*
 * Repetitions, sample length, churn window (full run; -s shrinks them). In
 * make bench, the mock and smmu sets run under QEMU's -icount, where a guest
 * nanosecond is a guest instruction: a sample is 10 million instructions.
 */
static unsigned int reps = 21;
static double target_ns = 10e6;
static double window_ns = 300e6;
static bool smoke;

static unsigned int n_test, n_pass, n_fail;

/* ---- TAP ---- */

/* Report the next check; on failure @fmt says why. */
static bool check(bool pass, const char *name, const char *fmt, ...)
{
	va_list ap;

	if (!pass && fmt) {
		va_start(ap, fmt);
		vdiag(fmt, ap);
		va_end(ap);
	}
	n_test++;
	printf("%sok %u - %s\n", pass ? "" : "not ", n_test, name);
	if (pass)
		n_pass++;
	else
		n_fail++;
	return pass;
}

static void print_note(const char *key, const char *fmt, ...)
{
	va_list ap;

	printf("@@ bench-note %s ", key);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

/* ---- time, samples, ratios ---- */

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * NSEC_PER_SEC + ts.tv_nsec;
}

/* Run @iters iterations of a variant; 0 or -errno. */
typedef int (*run_fn)(void *arg, unsigned long iters);

struct variant {
	run_fn run;
	run_fn after;		/* untimed, after each sample (e.g. a drain) */
	void *arg;
	double units;		/* units of work per iteration: entries, events */
	unsigned long max_iters;	/* 0: no limit */
	unsigned long iters;	/* per sample, calibrated */
	double *cost;		/* [reps]: ns per unit */
};

static int sample(struct variant *v, unsigned long iters, double *ns)
{
	double t0;
	int rc;

	t0 = now_ns();
	rc = v->run(v->arg, iters);
	*ns = now_ns() - t0;
	if (!rc && v->after)
		rc = v->after(v->arg, iters);
	return rc;
}

/* Iterations for a sample of about target_ns; doubles as a warm-up. */
static int calibrate(struct variant *v)
{
	unsigned long n = 1;
	double ns;
	int rc;

	for (;;) {
		rc = sample(v, n, &ns);
		if (rc)
			return rc;
		if (ns >= target_ns / 8 || (v->max_iters && n >= v->max_iters))
			break;
		n *= 2;
		if (v->max_iters && n > v->max_iters)
			n = v->max_iters;
	}
	v->iters = ns > 0 ? n * target_ns / ns : n;
	if (!v->iters)
		v->iters = 1;
	if (v->max_iters && v->iters > v->max_iters)
		v->iters = v->max_iters;
	return 0;
}

/* Calibrate, then sample every variant once per repetition, interleaved. */
static int measure(struct variant *v, unsigned int nv)
{
	unsigned int r, i;
	double ns;
	int rc;

	for (i = 0; i < nv; i++) {
		v[i].cost = calloc(reps, sizeof(double));
		if (!v[i].cost)
			return -ENOMEM;
		rc = calibrate(&v[i]);
		if (rc)
			return rc;
	}
	for (r = 0; r < reps; r++) {
		for (i = 0; i < nv; i++) {
			struct variant *s = &v[(i + r) % nv];

			rc = sample(s, s->iters, &ns);
			if (rc)
				return rc;
			s->cost[r] = ns / (s->iters * s->units);
		}
	}
	return 0;
}

static void measure_free(struct variant *v, unsigned int nv)
{
	unsigned int i;

	for (i = 0; i < nv; i++) {
		free(v[i].cost);
		v[i].cost = NULL;
	}
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *x, unsigned int n)
{
	qsort(x, n, sizeof(*x), cmp_double);
	return n % 2 ? x[n / 2] : (x[n / 2 - 1] + x[n / 2]) / 2;
}

/* Median of a series (not sorted in place) */
static double median_of(const double *x, unsigned int n)
{
	double *c = malloc(n * sizeof(*c));
	double m;

	if (!c)
		return 0;
	memcpy(c, x, n * sizeof(*c));
	m = median(c, n);
	free(c);
	return m;
}

/* Print the ratio @num[r] / @den[r] over the repetitions. */
static void report(const char *key, const char *what, const double *num,
		   const double *den)
{
	double *q = calloc(reps, sizeof(*q));
	double med;
	unsigned int r;

	if (!q)
		return;
	for (r = 0; r < reps; r++)
		q[r] = den[r] > 0 ? num[r] / den[r] : 0;
	med = median(q, reps);
	printf("@@ bench %s %.4f %.4f %.4f %u\n", key, q[0], med,
	       q[reps - 1], reps);
	diag("%s: %s: %.3fx (min %.3f, max %.3f, %u reps)", key, what, med,
	     q[0], q[reps - 1], reps);
	free(q);
}

/* ---- iommufd: what tests/iommufd-util.h does not have; 0 or -errno ---- */

/* A mock nested HWPT on @pt_id: a nesting parent (6.12) or a vIOMMU */
static int mock_nested_alloc(int fd, uint32_t dev_id, uint32_t pt_id,
			     uint32_t *id)
{
	struct iommu_hwpt_selftest data = { .iotlb = IOMMU_TEST_IOTLB_DEFAULT };

	return hwpt_alloc(fd, 0, dev_id, pt_id, IOMMU_HWPT_DATA_SELFTEST,
			  &data, sizeof(data), id);
}

/* @num: in, the number of entries; out, the number handled */
static int hwpt_invalidate(int fd, uint32_t id, uint32_t type, void *entries,
			   uint32_t entry_len, uint32_t *num)
{
	struct iommu_hwpt_invalidate cmd = {
		.size = sizeof(cmd),
		.hwpt_id = id,
		.data_uptr = (uintptr_t)entries,
		.data_type = type,
		.entry_len = entry_len,
		.entry_num = *num,
	};
	int rc = xioctl(fd, IOMMU_HWPT_INVALIDATE, &cmd);

	*num = cmd.entry_num;
	return rc;
}

/* ---- the mock driver's test ops ---- */

/* A mock device attached to @pt_id: its selftest object and device IDs */
static int mock_dev_add(int fd, uint32_t pt_id, uint32_t *stdev_id,
			uint32_t *dev_id)
{
	struct iommu_test_cmd cmd = {
		.size = sizeof(cmd),
		.op = IOMMU_TEST_OP_MOCK_DOMAIN,
		.id = pt_id,
	};
	int rc = xioctl(fd, IOMMU_TEST_CMD, &cmd);

	*stdev_id = rc ? 0 : cmd.mock_domain.out_stdev_id;
	*dev_id = rc ? 0 : cmd.mock_domain.out_idev_id;
	return rc;
}

/* Attach (replace) the mock device @stdev_id to @pt_id */
static int mock_replace(int fd, uint32_t stdev_id, uint32_t pt_id)
{
	struct iommu_test_cmd cmd = {
		.size = sizeof(cmd),
		.op = IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE,
		.id = stdev_id,
		.mock_domain_replace = { .pt_id = pt_id },
	};

	return xioctl(fd, IOMMU_TEST_CMD, &cmd);
}

static int mock_trigger_vevent(int fd, uint32_t dev_id)
{
	struct iommu_test_cmd cmd = {
		.size = sizeof(cmd),
		.op = IOMMU_TEST_OP_TRIGGER_VEVENT,
		.trigger_vevent = { .dev_id = dev_id },
	};

	return xioctl(fd, IOMMU_TEST_CMD, &cmd);
}

/* ---- mock: the environment ---- */

/* One iommufd, an IOAS, a nesting parent on it, mock devices attached there */
struct mock_env {
	int fd;
	uint32_t ioas_id;
	uint32_t s2_id;
	uint32_t dev0_stdev, dev0_id;	/* the device the nesting parent is for */
};

/* A mock device with a vDEVICE on its own vIOMMU */
struct mock_vdev {
	uint32_t stdev_id, dev_id;
	uint32_t viommu_id, vdev_id;
	uint64_t virt_id;
};

static int mock_env_open(struct mock_env *e)
{
	int rc;

	memset(e, 0, sizeof(*e));
	e->fd = open("/dev/iommu", O_RDWR);
	if (e->fd < 0)
		return -errno;
	rc = ioas_alloc(e->fd, &e->ioas_id);
	if (!rc)
		rc = mock_dev_add(e->fd, e->ioas_id, &e->dev0_stdev,
				  &e->dev0_id);
	if (!rc)
		rc = s2_alloc(e->fd, e->dev0_id, e->ioas_id, &e->s2_id);
	if (!rc)
		rc = mock_replace(e->fd, e->dev0_stdev, e->s2_id);
	if (rc) {
		close(e->fd);
		e->fd = -1;
	}
	return rc;
}

static void mock_env_close(struct mock_env *e)
{
	if (e->fd >= 0)
		close(e->fd);
	e->fd = -1;
}

/* A guest's ID for device @i: BDF-like, bus 1 up, 32 slots per bus */
static uint64_t virt_id_of(unsigned int i)
{
	return ((uint64_t)(i / 32 + 1) << 8) | ((i % 32) << 3);
}

/* A new mock device on the nesting parent, with a vIOMMU and a vDEVICE */
static int mock_vdev_new(struct mock_env *e, struct mock_vdev *d)
{
	int rc;

	memset(d, 0, sizeof(*d));
	d->virt_id = virt_id_of(0);
	rc = mock_dev_add(e->fd, e->s2_id, &d->stdev_id, &d->dev_id);
	if (!rc)
		rc = viommu_alloc(e->fd, IOMMU_VIOMMU_TYPE_SELFTEST, d->dev_id,
				  e->s2_id, &d->viommu_id);
	if (!rc)
		rc = vdevice_alloc(e->fd, d->viommu_id, d->dev_id, d->virt_id,
				   &d->vdev_id);
	return rc;
}

/* ---- mock: invalidation through a vIOMMU vs a nested HWPT ---- */

struct inv_arg {
	int fd;
	uint32_t id;		/* vIOMMU or nested HWPT */
	uint32_t type;
	void *entries;
	uint32_t entry_len;
	uint32_t num;
};

static int inv_run(void *arg, unsigned long iters)
{
	struct inv_arg *a = arg;
	uint32_t num;
	int rc;

	while (iters--) {
		num = a->num;
		rc = hwpt_invalidate(a->fd, a->id, a->type, a->entries,
				     a->entry_len, &num);
		if (rc)
			return rc;
		if (num != a->num)
			return -EIO;
	}
	return 0;
}

static bool bench_inv(struct mock_env *e)
{
	static struct iommu_viommu_invalidate_selftest ventries[INV_MAX];
	static struct iommu_hwpt_invalidate_selftest hentries[INV_MAX];
	struct inv_arg va[INV_SIZES + 1], ha[INV_SIZES + 1];
	struct variant v[2 * INV_SIZES + 2] = {};
	const unsigned int nv = 2 * INV_SIZES + 2;
	uint32_t nested_id;
	struct mock_vdev d;
	char key[32], what[96];
	unsigned int i;
	int rc;

	/* The vIOMMU path: one vDEVICE; the 6.12 path: a nested HWPT */
	rc = mock_vdev_new(e, &d);
	if (!rc)
		rc = mock_nested_alloc(e->fd, e->dev0_id, e->s2_id, &nested_id);
	if (rc)
		return check(false, "inv: vIOMMU with a vDEVICE, 6.12 nested HWPT",
			     "setup: %s", ename(rc));
	for (i = 0; i < INV_MAX; i++) {
		ventries[i].vdev_id = d.virt_id;
		ventries[i].cache_id = i % MOCK_DEV_CACHE_NUM;
		hentries[i].iotlb_id = i % MOCK_NESTED_DOMAIN_IOTLB_NUM;
	}
	for (i = 0; i < INV_SIZES; i++) {
		va[i] = (struct inv_arg){ e->fd, d.viommu_id,
			IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST, ventries,
			sizeof(ventries[0]), inv_sizes[i] };
		ha[i] = (struct inv_arg){ e->fd, nested_id,
			IOMMU_HWPT_INVALIDATE_DATA_SELFTEST, hentries,
			sizeof(hentries[0]), inv_sizes[i] };
		v[2 * i] = (struct variant){ .run = inv_run, .arg = &va[i],
					     .units = inv_sizes[i] };
		v[2 * i + 1] = (struct variant){ .run = inv_run, .arg = &ha[i],
						 .units = inv_sizes[i] };
	}
	/* Last: calls with no entry, the core's part of a call (per call) */
	va[i] = va[0];
	va[i].num = 0;
	ha[i] = ha[0];
	ha[i].num = 0;
	v[2 * i] = (struct variant){ .run = inv_run, .arg = &va[i], .units = 1 };
	v[2 * i + 1] = (struct variant){ .run = inv_run, .arg = &ha[i],
					 .units = 1 };
	rc = measure(v, nv);
	if (!check(!rc, "inv: IOMMU_HWPT_INVALIDATE via vIOMMU and nested HWPT, 1..1024 entries",
		   "invalidate: %s", ename(rc))) {
		measure_free(v, nv);
		return false;
	}
	report("inv.0", "per call, no entries (the core's part), vIOMMU over 6.12 nested HWPT",
	       v[2 * INV_SIZES].cost, v[2 * INV_SIZES + 1].cost);
	for (i = 0; i < INV_SIZES; i++) {
		snprintf(key, sizeof(key), "inv.%u", inv_sizes[i]);
		snprintf(what, sizeof(what),
			 "per entry, vIOMMU over 6.12 nested HWPT, %u per call",
			 inv_sizes[i]);
		report(key, what, v[2 * i].cost, v[2 * i + 1].cost);
	}
	for (i = 0; i < INV_SIZES && inv_sizes[i] != INV_BATCH; i++)
		;
	report("inv.batch", "vIOMMU, per entry, 1 per call over 128 per call",
	       v[0].cost, v[2 * i].cost);
	report("inv.batch.nested",
	       "6.12 nested HWPT, per entry, 1 per call over 128 per call",
	       v[1].cost, v[2 * i + 1].cost);
	print_note("inv", "per entry at 1/call: vIOMMU %.0f ns, nested %.0f ns; at 128/call: %.0f ns, %.0f ns" NOTE_ICOUNT,
	     median_of(v[0].cost, reps), median_of(v[1].cost, reps),
	     median_of(v[2 * i].cost, reps),
	     median_of(v[2 * i + 1].cost, reps));
	print_note("inv.0", "per call with no entries: vIOMMU %.0f ns, nested %.0f ns" NOTE_ICOUNT,
		   median_of(v[2 * INV_SIZES].cost, reps),
		   median_of(v[2 * INV_SIZES + 1].cost, reps));
	measure_free(v, nv);
	return true;
}

/* ---- mock: vDEVICE lookup with 1, 64, 4096 vDEVICEs ---- */

/*
 * The vIOMMUs of the lookup measure, each with its own mock devices: BDF-like
 * virt_ids (virt_id_of(), as a VMM's vSIDs or vRIDs), or dense ones (0 up),
 * which keep 4096 vDEVICEs within two levels of the xarray (64 x 64 slots).
 */
struct lookup_set {
	unsigned int full, smoke;	/* vDEVICEs in the full and smoke runs */
	bool dense;
	const char *key;		/* NULL: the reference, one vDEVICE */
	const char *what;
};

static const struct lookup_set lookup_sets[] = {
	{ 1, 1, false, NULL, NULL },
	{ 64, 4, false, "lookup.%u",
	  "per entry, %u vDEVICEs over 1, all entries naming one virt_id" },
	{ 4096, 16, false, "lookup.%u",
	  "per entry, %u vDEVICEs over 1, all entries naming one virt_id" },
	{ 4096, 16, true, "lookup.dense.%u",
	  "per entry, %u vDEVICEs with virt_ids 0 up over 1, one virt_id" },
};
#define LOOKUP_SETS		ARRAY_SIZE(lookup_sets)

static uint64_t lookup_virt_id(const struct lookup_set *set, unsigned int i)
{
	return set->dense ? i : virt_id_of(i);
}

/* The virt_id every entry names: the reference's, if the set has it */
static uint64_t lookup_named(const struct lookup_set *set, unsigned int n)
{
	return set->dense ? (virt_id_of(0) < n ? virt_id_of(0) : 0) :
	       virt_id_of(0);
}

static bool bench_lookup(struct mock_env *e)
{
	static struct iommu_viommu_invalidate_selftest same[LOOKUP_SETS][INV_BATCH];
	static struct iommu_viommu_invalidate_selftest spread[INV_BATCH];
	const unsigned int big = 2;	/* the set the spread variant uses */
	struct inv_arg a[LOOKUP_SETS + 1];
	struct variant v[LOOKUP_SETS + 1] = {};
	unsigned int n[LOOKUP_SETS], s, i, ndev = 0;
	uint32_t viommu[LOOKUP_SETS];
	uint32_t stdev, dev, vdev;
	char key[32], what[96];
	double t0, secs;
	int rc = 0;

	/* One vIOMMU per set, on the same nesting parent; a device each */
	t0 = now_ns();
	for (s = 0; s < LOOKUP_SETS && !rc; s++) {
		n[s] = smoke ? lookup_sets[s].smoke : lookup_sets[s].full;
		for (i = 0; i < n[s] && !rc; i++) {
			rc = mock_dev_add(e->fd, e->s2_id, &stdev, &dev);
			if (!rc && !i)
				rc = viommu_alloc(e->fd,
						  IOMMU_VIOMMU_TYPE_SELFTEST,
						  dev, e->s2_id, &viommu[s]);
			if (!rc)
				rc = vdevice_alloc(e->fd, viommu[s], dev,
						   lookup_virt_id(&lookup_sets[s], i),
						   &vdev);
			if (!rc)
				ndev++;
		}
	}
	secs = (now_ns() - t0) / NSEC_PER_SEC;
	if (!check(!rc, "lookup: mock devices with a vDEVICE each",
		   "device %u: %s", ndev, ename(rc)))
		return false;
	print_note("lookup", "%u mock devices, each with a vDEVICE, on %zu vIOMMUs: %.1f s (guest clock) to set up",
		   ndev, LOOKUP_SETS, secs);

	/* Variant s: set s, every entry naming one vDEVICE; last: spread */
	for (i = 0; i < INV_BATCH; i++) {
		for (s = 0; s < LOOKUP_SETS; s++) {
			same[s][i].vdev_id = lookup_named(&lookup_sets[s], n[s]);
			same[s][i].cache_id = i % MOCK_DEV_CACHE_NUM;
		}
		spread[i].vdev_id = virt_id_of(i * n[big] / INV_BATCH);
		spread[i].cache_id = i % MOCK_DEV_CACHE_NUM;
	}
	for (s = 0; s <= LOOKUP_SETS; s++) {
		a[s] = (struct inv_arg){ e->fd,
			viommu[s < LOOKUP_SETS ? s : big],
			IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
			s < LOOKUP_SETS ? same[s] : spread, sizeof(spread[0]),
			INV_BATCH };
		v[s] = (struct variant){ .run = inv_run, .arg = &a[s],
					 .units = INV_BATCH };
	}
	rc = measure(v, LOOKUP_SETS + 1);
	if (!check(!rc, "lookup: 128-entry invalidations naming one vDEVICE",
		   "invalidate: %s", ename(rc))) {
		measure_free(v, LOOKUP_SETS + 1);
		return false;
	}
	for (s = 1; s < LOOKUP_SETS; s++) {
		snprintf(key, sizeof(key), lookup_sets[s].key, n[s]);
		snprintf(what, sizeof(what), lookup_sets[s].what, n[s]);
		report(key, what, v[s].cost, v[0].cost);
	}
	snprintf(key, sizeof(key), "lookup.spread.%u", n[big]);
	snprintf(what, sizeof(what),
		 "per entry, %u vDEVICEs, 128 different ones per call, over 1",
		 n[big]);
	report(key, what, v[LOOKUP_SETS].cost, v[0].cost);
	measure_free(v, LOOKUP_SETS + 1);
	return true;
}

/* ---- mock: vEVENTQ ---- */

/* What read() returns per mock event: a header and the mock's data */
struct mock_vevent {
	struct iommufd_vevent_header hdr;
	struct iommu_viommu_event_selftest event;
} __attribute__((packed));	/* no __packed in userspace */

/* A vEVENTQ and the sequence number of the next event it should give */
struct vevent_q {
	int evfd;
	uint32_t seq;
};

struct vevent_arg {
	int fd;
	uint32_t dev_id;
	struct vevent_q *q;
	unsigned int per_read;		/* events per read() */
	bool lost;			/* triggers into a full queue */
};

static int trigger(struct vevent_arg *a, unsigned long n)
{
	int rc;

	while (n--) {
		rc = mock_trigger_vevent(a->fd, a->dev_id);
		/* Into a full queue: 0 upstream (lost), EOVERFLOW before */
		if (rc && !(a->lost && rc == -EOVERFLOW))
			return rc;
	}
	return 0;
}

/* Read @n events, a->per_read per read(), each one in sequence */
static int read_events(struct vevent_arg *a, unsigned long n)
{
	struct mock_vevent ev[VEVENT_BATCH];
	unsigned int k, i;
	ssize_t got;

	while (n) {
		k = n < a->per_read ? n : a->per_read;
		got = read(a->q->evfd, ev, k * sizeof(ev[0]));
		if (got < 0)
			return -errno;
		if ((size_t)got != k * sizeof(ev[0]))
			return -EIO;
		for (i = 0; i < k; i++) {
			if (ev[i].hdr.flags || ev[i].hdr.sequence != a->q->seq)
				return -EIO;
			a->q->seq = (a->q->seq + 1) & INT32_MAX;
		}
		n -= k;
	}
	return 0;
}

/* One iteration: VEVENT_BATCH triggers, then read them all */
static int vevent_rw_run(void *arg, unsigned long iters)
{
	struct vevent_arg *a = arg;
	int rc = 0;

	while (iters-- && !rc) {
		rc = trigger(a, VEVENT_BATCH);
		if (!rc)
			rc = read_events(a, VEVENT_BATCH);
	}
	return rc;
}

static int vevent_trigger_run(void *arg, unsigned long iters)
{
	return trigger(arg, iters);
}

/* Untimed: read what a sample of queued triggers left */
static int vevent_drain(void *arg, unsigned long iters)
{
	return read_events(arg, iters);
}

/*
 * Read the full queue back: its events, then the loss, told by a
 * LOST_EVENTS header (at the tail) or a gap in the sequence numbers.
 */
static int vevent_check_lost(struct vevent_q *q, unsigned int depth,
			     unsigned int *events, bool *lost_seen)
{
	size_t len = (depth + 1) * sizeof(struct mock_vevent);
	struct iommufd_vevent_header h;
	uint8_t *buf = malloc(len);
	size_t off = 0;
	ssize_t got;

	*events = 0;
	*lost_seen = false;
	if (!buf)
		return -ENOMEM;
	got = read(q->evfd, buf, len);
	if (got < 0) {
		free(buf);
		return -errno;
	}
	while (off + sizeof(h) <= (size_t)got) {
		memcpy(&h, buf + off, sizeof(h));
		off += sizeof(h);
		if (h.flags & IOMMU_VEVENTQ_FLAG_LOST_EVENTS) {
			*lost_seen = true;
			continue;
		}
		if (h.sequence != q->seq)
			*lost_seen = true;
		q->seq = (h.sequence + 1) & INT32_MAX;
		off += sizeof(struct iommu_viommu_event_selftest);
		(*events)++;
	}
	free(buf);
	return 0;
}

static bool bench_vevent(struct mock_env *e)
{
	struct vevent_q qfull = { .evfd = -1 }, qroom = { .evfd = -1 };
	struct vevent_arg rw1, rw64, full, room;
	struct mock_vdev dfull, droom;
	struct variant v[4] = {};
	unsigned int events;
	bool lost_seen;
	int rc;

	/* Two vIOMMUs: one whose vEVENTQ stays full, one with room */
	rc = mock_vdev_new(e, &dfull);
	if (!rc)
		rc = mock_vdev_new(e, &droom);
	if (!rc)
		rc = veventq_alloc(e->fd, dfull.viommu_id,
				   IOMMU_VEVENTQ_TYPE_SELFTEST,
				   VEVENTQ_FULL_DEPTH, NULL, &qfull.evfd);
	if (!rc)
		rc = veventq_alloc(e->fd, droom.viommu_id,
				   IOMMU_VEVENTQ_TYPE_SELFTEST,
				   VEVENTQ_ROOM_DEPTH, NULL, &qroom.evfd);
	full = (struct vevent_arg){ e->fd, dfull.dev_id, &qfull, 1, false };
	room = (struct vevent_arg){ e->fd, droom.dev_id, &qroom, VEVENT_BATCH,
				    false };
	/* Fill the first queue: from now on its triggers are lost */
	if (!rc)
		rc = trigger(&full, VEVENTQ_FULL_DEPTH);
	full.lost = true;
	if (!check(!rc, "vevent: two vIOMMUs with a vEVENTQ, one full",
		   "setup: %s", ename(rc)))
		goto out;

	rw1 = room;
	rw1.per_read = 1;
	rw64 = room;
	v[0] = (struct variant){ .run = vevent_rw_run, .arg = &rw1,
				 .units = VEVENT_BATCH };
	v[1] = (struct variant){ .run = vevent_rw_run, .arg = &rw64,
				 .units = VEVENT_BATCH };
	v[2] = (struct variant){ .run = vevent_trigger_run, .arg = &full,
				 .units = 1 };
	v[3] = (struct variant){ .run = vevent_trigger_run,
				 .after = vevent_drain, .arg = &room,
				 .units = 1, .max_iters = VEVENTQ_ROOM_DEPTH };
	rc = measure(v, 4);
	if (!check(!rc, "vevent: trigger + read; triggers lost and queued",
		   "vEVENTQ: %s", ename(rc))) {
		measure_free(v, 4);
		goto out;
	}
	report("vevent.read64", "events/s, 64-event reads over 1-event reads",
	       v[0].cost, v[1].cost);
	/*
	 * Not quite like for like: a lost event is freed in the trigger, a
	 * queued one when it is read (vevent_drain, untimed).
	 */
	report("vevent.lost", "trigger into a full vEVENTQ (lost, freed at once) over one with room (freed when read, untimed)",
	       v[2].cost, v[3].cost);
	print_note("vevent", "trigger + read, per event: %.0f ns with 1-event reads, %.0f ns with 64-event reads; a trigger: %.0f ns queued, %.0f ns lost" NOTE_ICOUNT,
	     median_of(v[0].cost, reps), median_of(v[1].cost, reps),
	     median_of(v[3].cost, reps), median_of(v[2].cost, reps));
	measure_free(v, 4);

	rc = vevent_check_lost(&qfull, VEVENTQ_FULL_DEPTH, &events,
			       &lost_seen);
	check(!rc && events == VEVENTQ_FULL_DEPTH && lost_seen,
	      "vevent: the full vEVENTQ reads back its events and the loss",
	      "read: %s, %u events (expected %u), loss %sreported", ename(rc),
	      events, VEVENTQ_FULL_DEPTH, lost_seen ? "" : "not ");
out:
	if (qfull.evfd >= 0)
		close(qfull.evfd);
	if (qroom.evfd >= 0)
		close(qroom.evfd);
	return !rc;
}

/* ---- churn: object life cycles per second, one thread vs two ---- */

struct churn_ctx {
	struct mock_env env;		/* shared or own */
	uint32_t stdev_id, dev_id;	/* this thread's device */
};

struct churn_thread {
	pthread_t thread;
	struct churn_ctx *ctx;
	int mode;
	pthread_barrier_t *start;
	double end_ns;
	unsigned long ops;
	int rc;
};

enum {
	CHURN_CONTROL, CHURN_SHARED, CHURN_SEPARATE,
	CHURN_SHARED_NOATTACH,	/* one iommufd, no attach and detach */
	CHURN_MODES
};

static int churn_stop;		/* __atomic accesses only */

/* vIOMMU, vDEVICE, nested HWPT, attach, detach, destroy: one op */
static int churn_op(struct churn_ctx *c, bool attach)
{
	struct mock_env *e = &c->env;
	uint32_t viommu, vdev = 0, nested = 0;
	bool attached = false;
	int rc, rc2;

	rc = viommu_alloc(e->fd, IOMMU_VIOMMU_TYPE_SELFTEST, c->dev_id,
			  e->s2_id, &viommu);
	if (rc)
		return rc;
	rc = vdevice_alloc(e->fd, viommu, c->dev_id, virt_id_of(0), &vdev);
	if (!rc)
		rc = mock_nested_alloc(e->fd, c->dev_id, viommu, &nested);
	if (!rc && attach) {
		rc = mock_replace(e->fd, c->stdev_id, nested);
		attached = !rc;
	}
	/* Undo whatever was done, also after a failure; the first error wins */
	if (attached) {
		rc2 = mock_replace(e->fd, c->stdev_id, e->s2_id);
		rc = rc ? rc : rc2;
	}
	if (nested) {
		rc2 = iommu_destroy(e->fd, nested);
		rc = rc ? rc : rc2;
	}
	if (vdev) {
		rc2 = iommu_destroy(e->fd, vdev);
		rc = rc ? rc : rc2;
	}
	rc2 = iommu_destroy(e->fd, viommu);
	return rc ? rc : rc2;
}

static void *churn_main(void *arg)
{
	struct churn_thread *t = arg;

	pthread_barrier_wait(t->start);
	/* At least one op, however short the window */
	do {
		if (t->mode == CHURN_CONTROL) {
			getppid();
		} else {
			t->rc = churn_op(t->ctx,
					 t->mode != CHURN_SHARED_NOATTACH);
			if (t->rc)
				break;
		}
		t->ops++;
	} while (!__atomic_load_n(&churn_stop, __ATOMIC_RELAXED));
	t->end_ns = now_ns();
	return NULL;
}

/* Ops per second of @n threads in @mode over one window */
static int churn_window(struct churn_ctx *ctx, int mode, unsigned int n,
			double *rate)
{
	struct churn_thread t[CHURN_THREADS] = {};
	struct timespec ts = { (time_t)(window_ns / NSEC_PER_SEC),
			       (long)window_ns % 1000000000L };
	pthread_barrier_t start;
	double t0, end = 0;
	unsigned long ops = 0;
	unsigned int i;
	int rc = 0;

	pthread_barrier_init(&start, NULL, n + 1);
	__atomic_store_n(&churn_stop, 0, __ATOMIC_RELAXED);
	for (i = 0; i < n; i++) {
		t[i].ctx = &ctx[i];
		t[i].mode = mode;
		t[i].start = &start;
		/* The started threads wait at the barrier: no way back */
		if (pthread_create(&t[i].thread, NULL, churn_main, &t[i])) {
			fprintf(stderr, "churn: pthread_create failed\n");
			exit(1);
		}
	}
	pthread_barrier_wait(&start);
	t0 = now_ns();
	nanosleep(&ts, NULL);
	__atomic_store_n(&churn_stop, 1, __ATOMIC_RELAXED);
	for (i = 0; i < n; i++) {
		pthread_join(t[i].thread, NULL);
		if (t[i].rc && !rc)
			rc = t[i].rc;
		ops += t[i].ops;
		if (t[i].end_ns > end)
			end = t[i].end_ns;
	}
	pthread_barrier_destroy(&start);
	*rate = end > t0 ? ops * NSEC_PER_SEC / (end - t0) : 0;
	return rc;
}

static int churn_setup(struct churn_ctx *shared, struct churn_ctx *sep)
{
	unsigned int i;
	int rc;

	rc = mock_env_open(&shared[0].env);
	for (i = 0; i < CHURN_THREADS && !rc; i++) {
		shared[i].env = shared[0].env;
		rc = mock_dev_add(shared[i].env.fd, shared[i].env.s2_id,
				  &shared[i].stdev_id, &shared[i].dev_id);
	}
	for (i = 0; i < CHURN_THREADS && !rc; i++) {
		rc = mock_env_open(&sep[i].env);
		if (!rc)
			rc = mock_dev_add(sep[i].env.fd, sep[i].env.s2_id,
					  &sep[i].stdev_id, &sep[i].dev_id);
	}
	return rc;
}

static bool bench_churn(void)
{
	static const char *const key[CHURN_MODES] = {
		"churn.control", "churn.shared", "churn.separate",
		"churn.shared.noattach",
	};
	static const char *const what[CHURN_MODES] = {
		"getppid() per second, 2 threads over 1 (the control)",
		"object churn per second, 2 threads over 1, one iommufd",
		"object churn per second, 2 threads over 1, an iommufd each",
		"object churn without attach, 2 threads over 1, one iommufd",
	};
	struct churn_ctx shared[CHURN_THREADS] = {}, sep[CHURN_THREADS] = {};
	double *rate[CHURN_MODES][CHURN_THREADS] = {};
	double *scale[CHURN_MODES] = {};
	struct churn_ctx *ctx;
	unsigned int m, n, r, i;
	int rc;

	rc = 0;
	for (m = 0; m < CHURN_MODES; m++) {
		for (n = 0; n < CHURN_THREADS; n++) {
			rate[m][n] = calloc(reps, sizeof(double));
			if (!rate[m][n])
				rc = -ENOMEM;
		}
		scale[m] = calloc(reps, sizeof(double));
		if (!scale[m])
			rc = -ENOMEM;
	}
	for (i = 0; i < CHURN_THREADS; i++)
		shared[i].env.fd = sep[i].env.fd = -1;
	if (!rc)
		rc = churn_setup(shared, sep);
	if (!check(!rc, "churn: mock devices for two threads, shared and separate iommufds",
		   "setup: %s", ename(rc)))
		goto out;

	/* Each repetition: every mode with 1 and 2 threads, order rotating */
	for (r = 0; r < reps && !rc; r++) {
		for (i = 0; i < 2 * CHURN_MODES && !rc; i++) {
			unsigned int k = (i + r) % (2 * CHURN_MODES);

			m = k / 2;
			n = (k % 2) + 1;
			ctx = m == CHURN_SEPARATE ? sep : shared;
			rc = churn_window(ctx, m, n, &rate[m][n - 1][r]);
		}
	}
	if (!check(!rc, "churn: VIOMMU_ALLOC + VDEVICE_ALLOC + nested HWPT + attach + destroy, 1 and 2 threads",
		   "churn: %s", ename(rc)))
		goto out;
	for (m = 0; m < CHURN_MODES; m++)
		report(key[m], what[m], rate[m][1], rate[m][0]);
	/* What the kernel lets two threads scale, with the platform's share out */
	for (r = 0; r < reps; r++)
		for (m = 0; m < CHURN_MODES; m++)
			scale[m][r] = rate[m][0][r] > 0 ?
				      rate[m][1][r] / rate[m][0][r] : 0;
	report("churn.shared.eff", "2-thread scaling, one iommufd, over the control's",
	       scale[CHURN_SHARED], scale[CHURN_CONTROL]);
	report("churn.separate.eff", "2-thread scaling, an iommufd each, over the control's",
	       scale[CHURN_SEPARATE], scale[CHURN_CONTROL]);
	report("churn.shared.noattach.eff",
	       "2-thread scaling without attach, one iommufd, over the control's",
	       scale[CHURN_SHARED_NOATTACH], scale[CHURN_CONTROL]);
	print_note("churn", "1 thread: %.0f getppid/s; churn ops/s %.0f (one iommufd), %.0f (own iommufd), %.0f (one iommufd, no attach); 2 threads: %.0f; %.0f, %.0f, %.0f (medians, wall clock, %ld CPUs online)",
		   median_of(rate[0][0], reps), median_of(rate[1][0], reps),
		   median_of(rate[2][0], reps), median_of(rate[3][0], reps),
		   median_of(rate[0][1], reps), median_of(rate[1][1], reps),
		   median_of(rate[2][1], reps), median_of(rate[3][1], reps),
		   sysconf(_SC_NPROCESSORS_ONLN));
out:
	for (m = 0; m < CHURN_MODES; m++) {
		for (n = 0; n < CHURN_THREADS; n++)
			free(rate[m][n]);
		free(scale[m]);
	}
	mock_env_close(&shared[0].env);
	for (i = 0; i < CHURN_THREADS; i++)
		mock_env_close(&sep[i].env);
	return !rc;
}

/* ---- smmu: guest TLBIs through the vSMMU ---- */

struct smmu_env {
	int fd, vfd;
	uint32_t dev_id, ioas_id, s2_id, viommu_id;
	int unsafe_old;		/* allow_unsafe_nesting before, -1: unknown */
};

static int read_param(const char *path)
{
	char s[4] = "";
	int fd = open(path, O_RDONLY);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = read(fd, s, sizeof(s) - 1);
	close(fd);
	return n > 0 ? (s[0] == 'Y' || s[0] == '1') : -1;
}

/* iommufd, the device bound, an IOAS, the nesting parent, the vSMMU */
static int smmu_open(struct smmu_env *s, const char *cdev)
{
	int rc;

	s->fd = open("/dev/iommu", O_RDWR);
	if (s->fd < 0)
		return -errno;
	s->vfd = open(cdev, O_RDWR);
	if (s->vfd < 0)
		return -errno;
	rc = vfio_bind(s->vfd, s->fd, &s->dev_id);
	if (!rc)
		rc = ioas_alloc(s->fd, &s->ioas_id);
	/* QEMU's emulated SMMUv3 has no S2FWB: see tests/viommu-e2e.c */
	s->unsafe_old = read_param(UNSAFE_NESTING_PARAM);
	if (!rc && s->unsafe_old == 0)
		rc = write_param(UNSAFE_NESTING_PARAM, 1);
	if (!rc)
		rc = s2_alloc(s->fd, s->dev_id, s->ioas_id, &s->s2_id);
	if (!rc)
		rc = viommu_alloc(s->fd, IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
				  s->dev_id, s->s2_id, &s->viommu_id);
	return rc;
}

static void smmu_close(struct smmu_env *s)
{
	if (s->viommu_id)
		iommu_destroy(s->fd, s->viommu_id);
	if (s->s2_id)
		iommu_destroy(s->fd, s->s2_id);
	if (s->vfd >= 0)
		close(s->vfd);
	if (s->fd >= 0)
		close(s->fd);
	if (s->unsafe_old == 0)
		write_param(UNSAFE_NESTING_PARAM, 0);
}

static int smmu_mark(struct smmu_env *s, uint32_t asid)
{
	struct iommu_viommu_arm_smmuv3_invalidate cmd = {
		.cmd = { htole64(CMD_TLBI_NH_ASID | CMD0_ASID(asid)), 0 },
	};
	struct inv_arg a = { s->fd, s->viommu_id,
			     IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3, &cmd,
			     sizeof(cmd), 1 };

	return inv_run(&a, 1);
}

static bool bench_smmu(const char *cdev)
{
	static struct iommu_viommu_arm_smmuv3_invalidate cmds[SMMU_BATCH];
	struct smmu_env s = { .fd = -1, .vfd = -1, .unsafe_old = -1 };
	struct inv_arg a1, a128;
	struct variant v[2] = {};
	unsigned int i;
	int rc;

	rc = smmu_open(&s, cdev);
	if (!check(!rc, "smmu: vSMMU on a nesting parent for the vfio device",
		   "%s: %s", cdev, ename(rc)))
		goto out;
	for (i = 0; i < SMMU_BATCH; i++) {
		cmds[i].cmd[0] = htole64(CMD_TLBI_NH_VA | CMD0_ASID(SMMU_ASID));
		cmds[i].cmd[1] = htole64((SMMU_VA + i * SMMU_PAGE) | CMD1_LEAF);
	}
	a1 = (struct inv_arg){ s.fd, s.viommu_id,
			       IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3, cmds,
			       sizeof(cmds[0]), 1 };
	a128 = a1;
	a128.num = SMMU_BATCH;

	/* For the count in the L0 QEMU's trace: marked calls */
	rc = smmu_mark(&s, MARK_ASID_0);
	if (!rc)
		rc = inv_run(&a128, 1);
	if (!rc)
		rc = smmu_mark(&s, MARK_ASID_1);
	if (!rc)
		rc = inv_run(&a1, 1);
	if (!rc)
		rc = smmu_mark(&s, MARK_ASID_2);
	if (!check(!rc, "smmu: a 128-entry and a 1-entry TLBI_NH_VA call between marker TLBI_NH_ASIDs",
		   "invalidate: %s", ename(rc)))
		goto out;
	printf("@@ bench-marks %u %u %u\n", MARK_ASID_0, MARK_ASID_1,
	       MARK_ASID_2);

	v[0] = (struct variant){ .run = inv_run, .arg = &a1, .units = 1 };
	v[1] = (struct variant){ .run = inv_run, .arg = &a128,
				 .units = SMMU_BATCH };
	rc = measure(v, 2);
	if (check(!rc, "smmu: TLBI_NH_VA through the vSMMU, 1 and 128 per call",
		  "invalidate: %s", ename(rc))) {
		report("smmu.batch", "vSMMU TLBI_NH_VA, per entry, 1 per call over 128 per call",
		       v[0].cost, v[1].cost);
		print_note("smmu", "per entry: %.0f ns at 1/call, %.0f ns at 128/call" NOTE_ICOUNT,
		     median_of(v[0].cost, reps), median_of(v[1].cost, reps));
	}
	measure_free(v, 2);
out:
	smmu_close(&s);
	return !rc;
}

/* ---- main ---- */

static void usage(const char *prog)
{
	fprintf(stderr, "Usage: %s [-s] [-r REPS] [mock] [churn] [smmu /dev/vfio/devices/vfioN]\n",
		prog);
	exit(2);
}

int main(int argc, char **argv)
{
	bool do_mock = false, do_churn = false;
	const char *cdev = NULL, *reps_arg = NULL;
	struct mock_env env;
	int i, rc;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-s"))
			smoke = true;
		else if (!strcmp(argv[i], "-r") && i + 1 < argc)
			reps_arg = argv[++i];
		else if (!strcmp(argv[i], "mock"))
			do_mock = true;
		else if (!strcmp(argv[i], "churn"))
			do_churn = true;
		else if (!strcmp(argv[i], "smmu") && i + 1 < argc)
			cdev = argv[++i];
		else
			usage(argv[0]);
	}
	if (!do_mock && !do_churn && !cdev)
		usage(argv[0]);
	if (smoke) {
		reps = 3;
		target_ns = 1e6;
		window_ns = 20e6;
	}
	if (reps_arg)
		reps = strtoul(reps_arg, NULL, 0);
	if (!reps)
		usage(argv[0]);
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("TAP version 13\n");
	diag("viommu-bench: %u repetitions, samples of %.0f ms, churn windows of %.0f ms",
	     reps, target_ns / 1e6, window_ns / 1e6);

	if (do_mock) {
		rc = mock_env_open(&env);
		if (check(!rc, "mock: iommufd, IOAS, mock device, nesting parent",
			  "/dev/iommu: %s", ename(rc))) {
			bench_inv(&env);
			bench_lookup(&env);
			bench_vevent(&env);
			mock_env_close(&env);
		}
	}
	if (do_churn)
		bench_churn();
	if (cdev)
		bench_smmu(cdev);

	printf("1..%u\n", n_test);
	printf("# Totals: pass:%u fail:%u xfail:0 xpass:0 skip:0 error:0\n",
	       n_pass, n_fail);
	return n_fail ? 1 : 0;
}

/* SPDX-License-Identifier: GPL-2.0 */
/*
 * iommufd-util.h - what the test programs in tests/ share: diagnostics in
 * kselftest TAP ('# ' lines), errno names, and one helper per iommufd and
 * VFIO cdev ioctl, each returning 0 or -errno.
 *
 * Include it after defining _GNU_SOURCE (strerrorname_np()). Everything
 * here is static inline: a program uses what it needs.
 */
#ifndef IOMMUFD_UTIL_H
#define IOMMUFD_UTIL_H

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/resource.h>

#include <linux/iommufd.h>
#include <linux/vfio.h>

/* ---- diagnostics ---- */

static inline void vdiag(const char *fmt, va_list ap)
{
	fputs("# ", stdout);
	vprintf(fmt, ap);
	fputc('\n', stdout);
}

static inline void diag(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vdiag(fmt, ap);
	va_end(ap);
}

static inline const char *ename(int rc)
{
	const char *name;

	if (!rc)
		return "success";
	name = strerrorname_np(rc < 0 ? -rc : rc);
	return name ? name : "unknown errno";
}

/* Write a boolean module parameter (a sysfs file): 0 or -errno */
static inline int write_param(const char *path, int val)
{
	char s[2] = { val ? '1' : '0', '\n' };
	int fd, rc = 0;
	ssize_t n;

	fd = open(path, O_WRONLY);
	if (fd < 0)
		return -errno;
	n = write(fd, s, sizeof(s));
	if (n != sizeof(s))
		rc = n < 0 ? -errno : -EIO;
	close(fd);
	return rc;
}

static inline void raise_memlock(void)
{
	struct rlimit rl = { RLIM_INFINITY, RLIM_INFINITY };

	setrlimit(RLIMIT_MEMLOCK, &rl);
}

/* ---- iommufd, one helper per ioctl; 0 or -errno ---- */

static inline int xioctl(int fd, unsigned long req, void *arg)
{
	return ioctl(fd, req, arg) ? -errno : 0;
}

static inline int iommu_destroy(int fd, uint32_t id)
{
	struct iommu_destroy cmd = { .size = sizeof(cmd), .id = id };

	return xioctl(fd, IOMMU_DESTROY, &cmd);
}

static inline int ioas_alloc(int fd, uint32_t *ioas_id)
{
	struct iommu_ioas_alloc cmd = { .size = sizeof(cmd) };
	int rc = xioctl(fd, IOMMU_IOAS_ALLOC, &cmd);

	*ioas_id = rc ? 0 : cmd.out_ioas_id;
	return rc;
}

static inline int ioas_map(int fd, uint32_t ioas_id, void *va, uint64_t len,
			   uint64_t iova)
{
	struct iommu_ioas_map cmd = {
		.size = sizeof(cmd),
		.flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE |
			 IOMMU_IOAS_MAP_WRITEABLE,
		.ioas_id = ioas_id,
		.user_va = (uintptr_t)va,
		.length = len,
		.iova = iova,
	};
	int rc = xioctl(fd, IOMMU_IOAS_MAP, &cmd);

	if (!rc && cmd.iova != iova)
		return -EFAULT;
	return rc;
}

static inline int ioas_unmap(int fd, uint32_t ioas_id, uint64_t iova, uint64_t len,
			     uint64_t *unmapped)
{
	struct iommu_ioas_unmap cmd = {
		.size = sizeof(cmd),
		.ioas_id = ioas_id,
		.iova = iova,
		.length = len,
	};
	int rc = xioctl(fd, IOMMU_IOAS_UNMAP, &cmd);

	if (unmapped)
		*unmapped = rc ? 0 : cmd.length;
	return rc;
}

/* @type: in, the type asked for (0: the default); out, the type given */
static inline int get_hw_info(int fd, uint32_t dev_id,
			      struct iommu_hw_info_arm_smmuv3 *info, uint32_t *type)
{
	struct iommu_hw_info cmd = {
		.size = sizeof(cmd),
		.flags = *type ? IOMMU_HW_INFO_FLAG_INPUT_TYPE : 0,
		.dev_id = dev_id,
		.data_len = sizeof(*info),
		.data_uptr = (uintptr_t)info,
		.in_data_type = *type,
	};
	int rc = xioctl(fd, IOMMU_GET_HW_INFO, &cmd);

	*type = rc ? 0 : cmd.out_data_type;
	return rc;
}

static inline int hwpt_alloc(int fd, uint32_t flags, uint32_t dev_id, uint32_t pt_id,
			     uint32_t data_type, void *data, uint32_t data_len,
			     uint32_t *hwpt_id)
{
	struct iommu_hwpt_alloc cmd = {
		.size = sizeof(cmd),
		.flags = flags,
		.dev_id = dev_id,
		.pt_id = pt_id,
		.data_type = data_type,
		.data_len = data_len,
		.data_uptr = (uintptr_t)data,
	};
	int rc = xioctl(fd, IOMMU_HWPT_ALLOC, &cmd);

	*hwpt_id = rc ? 0 : cmd.out_hwpt_id;
	return rc;
}

static inline int s2_alloc(int fd, uint32_t dev_id, uint32_t ioas_id, uint32_t *id)
{
	return hwpt_alloc(fd, IOMMU_HWPT_ALLOC_NEST_PARENT, dev_id, ioas_id,
			  IOMMU_HWPT_DATA_NONE, NULL, 0, id);
}

/* A nested HWPT on an ARM SMMUv3 vIOMMU, from a vSTE's two words */
static inline int nested_alloc(int fd, uint32_t dev_id, uint32_t viommu_id,
			       uint64_t ste0, uint64_t ste1, uint32_t *id)
{
	struct iommu_hwpt_arm_smmuv3 ste = {
		.ste = { htole64(ste0), htole64(ste1) },
	};

	return hwpt_alloc(fd, 0, dev_id, viommu_id, IOMMU_HWPT_DATA_ARM_SMMUV3,
			  &ste, sizeof(ste), id);
}

static inline int viommu_alloc(int fd, uint32_t type, uint32_t dev_id,
			       uint32_t hwpt_id, uint32_t *viommu_id)
{
	struct iommu_viommu_alloc cmd = {
		.size = sizeof(cmd),
		.type = type,
		.dev_id = dev_id,
		.hwpt_id = hwpt_id,
	};
	int rc = xioctl(fd, IOMMU_VIOMMU_ALLOC, &cmd);

	*viommu_id = rc ? 0 : cmd.out_viommu_id;
	return rc;
}

static inline int vdevice_alloc(int fd, uint32_t viommu_id, uint32_t dev_id,
				uint64_t virt_id, uint32_t *vdev_id)
{
	struct iommu_vdevice_alloc cmd = {
		.size = sizeof(cmd),
		.viommu_id = viommu_id,
		.dev_id = dev_id,
		.virt_id = virt_id,
	};
	int rc = xioctl(fd, IOMMU_VDEVICE_ALLOC, &cmd);

	*vdev_id = rc ? 0 : cmd.out_vdevice_id;
	return rc;
}

/* @veventq_id may be NULL */
static inline int veventq_alloc(int fd, uint32_t viommu_id, uint32_t type,
				uint32_t depth, uint32_t *veventq_id, int *evfd)
{
	struct iommu_veventq_alloc cmd = {
		.size = sizeof(cmd),
		.viommu_id = viommu_id,
		.type = type,
		.veventq_depth = depth,
	};
	int rc = xioctl(fd, IOMMU_VEVENTQ_ALLOC, &cmd);

	if (veventq_id)
		*veventq_id = rc ? 0 : cmd.out_veventq_id;
	*evfd = rc ? -1 : (int)cmd.out_veventq_fd;
	return rc;
}

/* ARM SMMUv3 commands; @num: in, the number of them; out, the number handled */
static inline int viommu_invalidate(int fd, uint32_t viommu_id,
				    struct iommu_viommu_arm_smmuv3_invalidate *cmds,
				    uint32_t *num)
{
	struct iommu_hwpt_invalidate cmd = {
		.size = sizeof(cmd),
		.hwpt_id = viommu_id,
		.data_uptr = (uintptr_t)cmds,
		.data_type = IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
		.entry_len = sizeof(*cmds),
		.entry_num = *num,
	};
	int rc = xioctl(fd, IOMMU_HWPT_INVALIDATE, &cmd);

	*num = cmd.entry_num;
	return rc;
}

/* ---- VFIO cdev ---- */

static inline int vfio_bind(int vfd, int iommufd, uint32_t *dev_id)
{
	struct vfio_device_bind_iommufd cmd = {
		.argsz = sizeof(cmd),
		.iommufd = iommufd,
	};
	int rc = xioctl(vfd, VFIO_DEVICE_BIND_IOMMUFD, &cmd);

	*dev_id = rc ? 0 : cmd.out_devid;
	return rc;
}

/* @pt_id: in, the IOAS or HWPT; out, the HWPT the device is attached to */
static inline int vfio_attach(int vfd, uint32_t *pt_id)
{
	struct vfio_device_attach_iommufd_pt cmd = {
		.argsz = sizeof(cmd),
		.pt_id = *pt_id,
	};
	int rc = xioctl(vfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &cmd);

	*pt_id = rc ? 0 : cmd.pt_id;
	return rc;
}

static inline int vfio_detach(int vfd)
{
	struct vfio_device_detach_iommufd_pt cmd = { .argsz = sizeof(cmd) };

	return xioctl(vfd, VFIO_DEVICE_DETACH_IOMMUFD_PT, &cmd);
}

static inline int vfio_region(int vfd, uint32_t index, uint64_t *off, uint64_t *size)
{
	struct vfio_region_info cmd = { .argsz = sizeof(cmd), .index = index };
	int rc = xioctl(vfd, VFIO_DEVICE_GET_REGION_INFO, &cmd);

	*off = rc ? 0 : cmd.offset;
	*size = rc ? 0 : cmd.size;
	return rc;
}

static inline int vfio_rw(int vfd, bool write, void *buf, size_t len, uint64_t off)
{
	ssize_t n = write ? pwrite(vfd, buf, len, off) : pread(vfd, buf, len, off);

	if (n < 0)
		return -errno;
	return (size_t)n == len ? 0 : -EIO;
}

#endif /* IOMMUFD_UTIL_H */

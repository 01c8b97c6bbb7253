// SPDX-License-Identifier: GPL-2.0
/*
 * edu-l2: a test driver for QEMU's edu device, for the L2 guest of the
 * accel_vmm stage (harness code, not part of the series).
 *
 * In L2, edu is an L1 vfio-pci device behind QEMU's accelerated vSMMU
 * (arm-smmuv3,accel=on). This driver uses it the way a guest's native driver
 * would: through the DMA API, so every address edu sees is an IOVA of L2's
 * own SMMUv3 driver (L2's stage 1), which the L1 kernel nests on its stage 2.
 * L2's vfio cannot take edu (QEMU's accel IORT gives its group an RMR).
 *
 * /sys/kernel/debug/edu-l2/run takes the name of one check and runs it; the
 * write succeeds when the check passed. Reading the file gives one line about
 * the last check (addresses, what differed). l2-init turns them into TAP.
 *   copy   RAM -> edu -> RAM through two IOVAs, bytes checked; each IOVA
 *          translates (L2's page table) to the page that was mapped
 *   remap  a DMA to IOVA i lands in page X; unmap (L2 invalidates its TLB),
 *          map page Y at the same i: the next DMA lands in Y, X is untouched
 *   msi    edu raises its interrupt: the MSI reaches this driver's handler
 *   fault  a DMA to an IOVA L2 never mapped (the event is L2's SMMU driver's
 *          to log; l2-init looks for it)
 *
 * edu (QEMU hw/misc/edu.c): BAR0 0x24 interrupt status, 0x60 raise, 0x64
 * acknowledge; DMA 0x80 source, 0x88 destination, 0x90 count, 0x98 command
 * (bit 0 start, cleared when done; bit 1 edu buffer -> RAM; bit 2 interrupt
 * when done). The DMA buffer is 4 KiB at edu address 0x40000 (an access out
 * of it aborts QEMU) and runs 100 ms after the start; edu masks the RAM
 * address to 28 bits.
 */
#include <linux/completion.h>
#include <linux/debugfs.h>
#include <linux/delay.h>
#include <linux/dma-mapping.h>
#include <linux/interrupt.h>
#include <linux/iommu.h>
#include <linux/jiffies.h>
#include <linux/module.h>
#include <linux/pci.h>

#define EDU_ID			0x00
#define EDU_IRQ_STATUS		0x24
#define EDU_IRQ_RAISE		0x60
#define EDU_IRQ_ACK		0x64
#define EDU_DMA_SRC		0x80
#define EDU_DMA_DST		0x88
#define EDU_DMA_CNT		0x90
#define EDU_DMA_CMD		0x98
#define EDU_DMA_START		BIT(0)
#define EDU_DMA_TO_RAM		BIT(1)
#define EDU_BUF			0x40000
#define EDU_BUF_SIZE		4096
#define EDU_DMA_BITS		28
/* Raised by hand for the msi check: an arbitrary pattern in the status */
#define EDU_MSI_PATTERN		0x00a5c300
/* An IOVA the DMA API never hands out here: it allocates top-down */
#define EDU_UNMAPPED_IOVA	0x200000
/* Bounds for a DMA (100 ms in QEMU) and an MSI, with nested TCG slack */
#define EDU_WAIT_MS		10000

struct edu {
	struct pci_dev *pdev;
	void __iomem *bar;
	struct dentry *dir;
	struct mutex lock;	/* one check at a time */
	struct completion irq_done;
	u32 irq_status;
	int irq;		/* <0: why MSI could not be set up */
	char result[160];
};

static struct device *edu_dev(struct edu *edu)
{
	return &edu->pdev->dev;
}

static int edu_dma(struct edu *edu, dma_addr_t ram, bool to_ram)
{
	unsigned long end = jiffies + msecs_to_jiffies(EDU_WAIT_MS);

	writeq(to_ram ? EDU_BUF : ram, edu->bar + EDU_DMA_SRC);
	writeq(to_ram ? ram : EDU_BUF, edu->bar + EDU_DMA_DST);
	writeq(EDU_BUF_SIZE, edu->bar + EDU_DMA_CNT);
	writeq(EDU_DMA_START | (to_ram ? EDU_DMA_TO_RAM : 0),
	       edu->bar + EDU_DMA_CMD);
	while (readq(edu->bar + EDU_DMA_CMD) & EDU_DMA_START) {
		if (time_after(jiffies, end))
			return -ETIMEDOUT;
		msleep(20);
	}
	return 0;
}

/* A page mapped for DMA: its IOVA must translate to it in L2's stage 1 */
static int edu_map(struct edu *edu, struct page *page,
		   enum dma_data_direction dir, dma_addr_t *iova)
{
	struct iommu_domain *domain = iommu_get_domain_for_dev(edu_dev(edu));
	phys_addr_t phys;

	*iova = dma_map_page(edu_dev(edu), page, 0, PAGE_SIZE, dir);
	if (dma_mapping_error(edu_dev(edu), *iova))
		return -ENOMEM;
	phys = iommu_iova_to_phys(domain, *iova);
	if (phys != page_to_phys(page)) {
		dma_unmap_page(edu_dev(edu), *iova, PAGE_SIZE, dir);
		snprintf(edu->result, sizeof(edu->result),
			 "IOVA %pad translates to %pa, not to its page %pa",
			 iova, &phys, &(phys_addr_t){ page_to_phys(page) });
		return -EFAULT;
	}
	return 0;
}

static void edu_fill(struct page *page, u8 seed)
{
	u8 *p = page_address(page);
	int i;

	for (i = 0; i < EDU_BUF_SIZE; i++)
		p[i] = seed + i * 7;
}

/* Where @page differs from edu_fill(@seed), or -1 */
static int edu_differs(struct page *page, u8 seed)
{
	u8 *p = page_address(page);
	int i;

	for (i = 0; i < EDU_BUF_SIZE; i++)
		if (p[i] != (u8)(seed + i * 7))
			return i;
	return -1;
}

static int edu_check_copy(struct edu *edu)
{
	struct page *src, *dst;
	dma_addr_t s, d;
	int ret, at;

	src = alloc_page(GFP_KERNEL);
	dst = alloc_page(GFP_KERNEL);
	if (!src || !dst) {
		ret = -ENOMEM;
		goto out_free;
	}
	edu_fill(src, 0x31);
	memset(page_address(dst), 0, PAGE_SIZE);

	ret = edu_map(edu, src, DMA_TO_DEVICE, &s);
	if (ret)
		goto out_free;
	ret = edu_map(edu, dst, DMA_FROM_DEVICE, &d);
	if (ret)
		goto out_unmap_src;
	ret = edu_dma(edu, s, false);
	if (!ret)
		ret = edu_dma(edu, d, true);
	dma_unmap_page(edu_dev(edu), d, PAGE_SIZE, DMA_FROM_DEVICE);
	if (ret) {
		snprintf(edu->result, sizeof(edu->result),
			 "edu DMA did not finish in %d ms", EDU_WAIT_MS);
		goto out_unmap_src;
	}
	at = edu_differs(dst, 0x31);
	snprintf(edu->result, sizeof(edu->result),
		 "RAM %pa (IOVA %pad) -> edu -> RAM %pa (IOVA %pad): %s%d",
		 &(phys_addr_t){ page_to_phys(src) }, &s,
		 &(phys_addr_t){ page_to_phys(dst) }, &d,
		 at < 0 ? "4096 bytes equal" : "first difference at byte ",
		 at < 0 ? 0 : at);
	if (at >= 0)
		ret = -EIO;
out_unmap_src:
	dma_unmap_page(edu_dev(edu), s, PAGE_SIZE, DMA_TO_DEVICE);
out_free:
	if (src)
		__free_page(src);
	if (dst)
		__free_page(dst);
	return ret;
}

static int edu_check_remap(struct edu *edu)
{
	struct page *pat, *x, *y;
	dma_addr_t p, i, j;
	int ret, at_y, at_x;

	pat = alloc_page(GFP_KERNEL);
	x = alloc_page(GFP_KERNEL);
	y = alloc_page(GFP_KERNEL);
	if (!pat || !x || !y) {
		ret = -ENOMEM;
		goto out_free;
	}
	/* edu's buffer holds a pattern */
	edu_fill(pat, 0x57);
	ret = edu_map(edu, pat, DMA_TO_DEVICE, &p);
	if (ret)
		goto out_free;
	ret = edu_dma(edu, p, false);
	dma_unmap_page(edu_dev(edu), p, PAGE_SIZE, DMA_TO_DEVICE);
	if (ret)
		goto out_timeout;

	/* IOVA i -> X, used once: the translation is now cached */
	memset(page_address(x), 0, PAGE_SIZE);
	ret = edu_map(edu, x, DMA_FROM_DEVICE, &i);
	if (ret)
		goto out_free;
	ret = edu_dma(edu, i, true);
	dma_unmap_page(edu_dev(edu), i, PAGE_SIZE, DMA_FROM_DEVICE);
	if (ret)
		goto out_timeout;
	at_x = edu_differs(x, 0x57);
	if (at_x >= 0) {
		snprintf(edu->result, sizeof(edu->result),
			 "first DMA to IOVA %pad: page differs at byte %d",
			 &i, at_x);
		ret = -EIO;
		goto out_free;
	}

	/* unmapped above (strict: L2 invalidated it); X changes, Y at i */
	memset(page_address(x), 0, PAGE_SIZE);
	memset(page_address(y), 0, PAGE_SIZE);
	ret = edu_map(edu, y, DMA_FROM_DEVICE, &j);
	if (ret)
		goto out_free;
	if (j != i) {
		dma_unmap_page(edu_dev(edu), j, PAGE_SIZE, DMA_FROM_DEVICE);
		snprintf(edu->result, sizeof(edu->result),
			 "the DMA API gave IOVA %pad, not %pad again: no remap to test",
			 &j, &i);
		ret = -EAGAIN;
		goto out_free;
	}
	ret = edu_dma(edu, j, true);
	dma_unmap_page(edu_dev(edu), j, PAGE_SIZE, DMA_FROM_DEVICE);
	if (ret)
		goto out_timeout;
	at_y = edu_differs(y, 0x57);
	at_x = memchr_inv(page_address(x), 0, PAGE_SIZE) ? 1 : 0;
	snprintf(edu->result, sizeof(edu->result),
		 "IOVA %pad: page %pa, unmapped, then page %pa: new page %s, old page %s",
		 &i, &(phys_addr_t){ page_to_phys(x) },
		 &(phys_addr_t){ page_to_phys(y) },
		 at_y < 0 ? "written" : "NOT written",
		 at_x ? "WRITTEN (stale translation)" : "untouched");
	if (at_y >= 0 || at_x)
		ret = -EIO;
	goto out_free;

out_timeout:
	snprintf(edu->result, sizeof(edu->result),
		 "edu DMA did not finish in %d ms", EDU_WAIT_MS);
out_free:
	if (pat)
		__free_page(pat);
	if (x)
		__free_page(x);
	if (y)
		__free_page(y);
	return ret;
}

static irqreturn_t edu_irq(int irq, void *data)
{
	struct edu *edu = data;
	u32 status = readl(edu->bar + EDU_IRQ_STATUS);

	if (!status)
		return IRQ_NONE;
	writel(status, edu->bar + EDU_IRQ_ACK);
	edu->irq_status = status;
	complete(&edu->irq_done);
	return IRQ_HANDLED;
}

static int edu_check_msi(struct edu *edu)
{
	struct msi_msg msg = {};

	if (edu->irq < 0) {
		snprintf(edu->result, sizeof(edu->result),
			 "no MSI vector: %d", edu->irq);
		return edu->irq;
	}
	get_cached_msi_msg(edu->irq, &msg);
	reinit_completion(&edu->irq_done);
	edu->irq_status = 0;
	writel(EDU_MSI_PATTERN, edu->bar + EDU_IRQ_RAISE);
	if (!wait_for_completion_timeout(&edu->irq_done,
					 msecs_to_jiffies(EDU_WAIT_MS))) {
		snprintf(edu->result, sizeof(edu->result),
			 "no MSI (IRQ %d, address 0x%08x%08x data 0x%x) in %d ms; edu status 0x%x",
			 edu->irq, msg.address_hi, msg.address_lo, msg.data,
			 EDU_WAIT_MS, readl(edu->bar + EDU_IRQ_STATUS));
		/* Leave edu quiet for what comes next */
		writel(EDU_MSI_PATTERN, edu->bar + EDU_IRQ_ACK);
		return -ETIMEDOUT;
	}
	snprintf(edu->result, sizeof(edu->result),
		 "MSI (IRQ %d, address 0x%08x%08x data 0x%x) handled, status 0x%x",
		 edu->irq, msg.address_hi, msg.address_lo, msg.data,
		 edu->irq_status);
	return edu->irq_status == EDU_MSI_PATTERN ? 0 : -EIO;
}

static int edu_check_fault(struct edu *edu)
{
	struct iommu_domain *domain = iommu_get_domain_for_dev(edu_dev(edu));
	struct iommu_fwspec *fwspec = dev_iommu_fwspec_get(edu_dev(edu));
	dma_addr_t iova = EDU_UNMAPPED_IOVA;

	if (!fwspec || !fwspec->num_ids)
		return -ENODEV;
	if (iommu_iova_to_phys(domain, iova)) {
		snprintf(edu->result, sizeof(edu->result),
			 "IOVA %pad is mapped", &iova);
		return -EEXIST;
	}
	if (edu_dma(edu, iova, true)) {
		snprintf(edu->result, sizeof(edu->result),
			 "edu DMA did not finish in %d ms", EDU_WAIT_MS);
		return -ETIMEDOUT;
	}
	/* What l2-init looks for in L2's SMMU event log */
	snprintf(edu->result, sizeof(edu->result), "sid=0x%x iova=%pad",
		 fwspec->ids[0], &iova);
	return 0;
}

static const struct {
	const char *name;
	int (*run)(struct edu *edu);
} edu_checks[] = {
	{ "copy", edu_check_copy },
	{ "remap", edu_check_remap },
	{ "msi", edu_check_msi },
	{ "fault", edu_check_fault },
};

static ssize_t edu_run_write(struct file *file, const char __user *ubuf,
			     size_t count, loff_t *ppos)
{
	struct edu *edu = file->private_data;
	char name[16];
	int i, ret = -EINVAL;

	if (count >= sizeof(name))
		return -EINVAL;
	if (copy_from_user(name, ubuf, count))
		return -EFAULT;
	name[count] = '\0';
	strim(name);

	mutex_lock(&edu->lock);
	edu->result[0] = '\0';
	for (i = 0; i < ARRAY_SIZE(edu_checks); i++) {
		if (strcmp(name, edu_checks[i].name))
			continue;
		ret = edu_checks[i].run(edu);
		dev_info(edu_dev(edu), "%s: %s (%d): %s\n", name,
			 ret ? "failed" : "passed", ret, edu->result);
		break;
	}
	mutex_unlock(&edu->lock);
	return ret ? ret : count;
}

static ssize_t edu_run_read(struct file *file, char __user *ubuf,
			    size_t count, loff_t *ppos)
{
	struct edu *edu = file->private_data;
	char line[sizeof(edu->result) + 1];
	int len;

	mutex_lock(&edu->lock);
	len = scnprintf(line, sizeof(line), "%s\n", edu->result);
	mutex_unlock(&edu->lock);
	return simple_read_from_buffer(ubuf, count, ppos, line, len);
}

static const struct file_operations edu_run_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.read = edu_run_read,
	.write = edu_run_write,
	.llseek = default_llseek,
};

static int edu_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct edu *edu;
	int ret;

	edu = devm_kzalloc(&pdev->dev, sizeof(*edu), GFP_KERNEL);
	if (!edu)
		return -ENOMEM;
	edu->pdev = pdev;
	mutex_init(&edu->lock);
	init_completion(&edu->irq_done);

	ret = pcim_enable_device(pdev);
	if (ret)
		return ret;
	edu->bar = pcim_iomap_region(pdev, 0, "edu-l2");
	if (IS_ERR(edu->bar))
		return PTR_ERR(edu->bar);
	if ((readl(edu->bar + EDU_ID) & 0xffff) != 0x00ed)
		return -ENODEV;
	ret = dma_set_mask_and_coherent(&pdev->dev,
					DMA_BIT_MASK(EDU_DMA_BITS));
	if (ret)
		return ret;
	pci_set_master(pdev);

	/* Without MSI the msi check fails and says why; the rest still runs */
	ret = pci_alloc_irq_vectors(pdev, 1, 1, PCI_IRQ_MSI);
	edu->irq = ret < 0 ? ret : pci_irq_vector(pdev, 0);
	if (edu->irq >= 0) {
		ret = devm_request_irq(&pdev->dev, edu->irq, edu_irq, 0,
				       "edu-l2", edu);
		if (ret)
			edu->irq = ret;
	}

	pci_set_drvdata(pdev, edu);
	edu->dir = debugfs_create_dir("edu-l2", NULL);
	debugfs_create_file("run", 0600, edu->dir, edu, &edu_run_fops);
	dev_info(&pdev->dev, "edu %08x, IOMMU domain type %#x, MSI IRQ %d\n",
		 readl(edu->bar + EDU_ID),
		 iommu_get_domain_for_dev(&pdev->dev) ?
		 iommu_get_domain_for_dev(&pdev->dev)->type : 0, edu->irq);
	return 0;
}

static void edu_remove(struct pci_dev *pdev)
{
	struct edu *edu = pci_get_drvdata(pdev);

	debugfs_remove_recursive(edu->dir);
	if (edu->irq >= 0)
		devm_free_irq(&pdev->dev, edu->irq, edu);
	pci_free_irq_vectors(pdev);
}

static const struct pci_device_id edu_ids[] = {
	{ PCI_DEVICE(0x1234, 0x11e8) },
	{ }
};
MODULE_DEVICE_TABLE(pci, edu_ids);

static struct pci_driver edu_driver = {
	.name = "edu-l2",
	.id_table = edu_ids,
	.probe = edu_probe,
	.remove = edu_remove,
};
module_pci_driver(edu_driver);

MODULE_DESCRIPTION("QEMU edu test driver for the accel_vmm L2 guest");
MODULE_LICENSE("GPL");

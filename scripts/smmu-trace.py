#!/usr/bin/env python3
"""smmu-trace: viommu-2smmu's VMIDs as the emulated SMMUs used them.

Arguments: CONSOLE_LOG QEMU_TRACE. viommu-2smmu prints '@@ 2smmu dev ROLE
BDF sid SID smmu DEV' for each device and '@@ 2smmu vmid vN VMID smmu DEV'
for each vSMMU (the VMID the driver says it allocated). QEMU's trace has,
for each translation, the IOTLB lookup (the ASID and VMID of the STE the
SMMU decoded for the device) right before the translation's result (with
the StreamID). This pairs them and checks, as a TAP suite between '@@
suite' markers (for scripts/summary.py), that each device's DMA was tagged
with the VMID of what it is attached to: deva with v1's, devb with v2's,
devc with the plain stage 2's, which is not v1's (both on SMMU A). Prints
nothing when the console has no viommu-2smmu run.
"""
import re
import sys

DEV = re.compile(r'@@ 2smmu dev (\S+) (\S+) sid (0x[0-9a-f]+) smmu (\S+)')
VMID = re.compile(r'@@ 2smmu vmid (\S+) (-?\d+) smmu (\S+)')
LOOKUP = re.compile(r'smmu_iotlb_lookup_(?:hit|miss) .*asid=(-?\d+) vmid=(-?\d+)')
RESULT = re.compile(r'smmuv3_(translate_\w+|propagate_event) .*sid=(0x[0-9a-f]+)')


def main():
    console, trace = sys.argv[1], sys.argv[2]
    devs, vmids = {}, {}
    try:
        for ln in open(console, errors='replace'):
            m = DEV.search(ln)
            if m:
                devs[m.group(1)] = (m.group(2), int(m.group(3), 16), m.group(4))
            m = VMID.search(ln)
            if m:
                vmids[m.group(1)] = (int(m.group(2)), m.group(3))
    except OSError:
        return 0
    if not devs:
        return 0

    # SID -> {VMID: number of translations}, from lookup + result pairs
    seen = {}
    last = None
    try:
        for ln in open(trace, errors='replace'):
            m = LOOKUP.search(ln)
            if m:
                last = int(m.group(2))
                continue
            m = RESULT.search(ln)
            if m:
                if last is not None:
                    sid = int(m.group(2), 16)
                    seen.setdefault(sid, {}).setdefault(last, 0)
                    seen[sid][last] += 1
                last = None
    except OSError:
        pass

    def vmid_of(role):
        """The one VMID of the role's translations, or None and why."""
        if role not in devs:
            return None, f'no {role} in the console'
        bdf, sid, _ = devs[role]
        got = seen.get(sid, {})
        if len(got) != 1:
            return None, (f'{role} (SID {sid:#x}): translations under VMIDs '
                          f'{sorted(got)}' if got else
                          f'{role} (SID {sid:#x}): no translation in {trace}')
        return next(iter(got)), f'{role} (SID {sid:#x}): VMID {next(iter(got))}' \
            f' in {sum(got.values())} translation(s)'

    va, wa = vmid_of('deva')
    vb, wb = vmid_of('devb')
    vc, wc = vmid_of('devc')
    k1 = vmids.get('v1', (None, None))[0]
    k2 = vmids.get('v2', (None, None))[0]
    checks = [
        ("QEMU: deva's DMA tagged with v1's VMID (the driver's, in the STE)",
         va is not None and va == k1, f'{wa}; the driver gave v1 VMID {k1}'),
        ("QEMU: devb's DMA tagged with v2's VMID",
         vb is not None and vb == k2, f'{wb}; the driver gave v2 VMID {k2}'),
        ("QEMU: devc's DMA (s2 alone, SMMU A) tagged with a VMID other than v1's",
         vc is not None and va is not None and vc != va, f'{wc}; {wa}'),
        ('QEMU: the two vSMMUs have different VMIDs',
         va is not None and vb is not None and va != vb, f'{wa}; {wb}'),
    ]
    print('@@ suite viommu_2smmu/qemu begin')
    print('TAP version 13')
    print(f'1..{len(checks)}')
    for n, (name, ok, why) in enumerate(checks, 1):
        print(f'# {why}')
        print(f'{"ok" if ok else "not ok"} {n} - {name}')
    fails = sum(1 for c in checks if not c[1])
    print(f'# Totals: pass:{len(checks) - fails} fail:{fails} xfail:0 xpass:0 skip:0 error:0')
    print(f'@@ suite viommu_2smmu/qemu end rc={1 if fails else 0} secs=0')
    return 0


if __name__ == '__main__':
    sys.exit(main())

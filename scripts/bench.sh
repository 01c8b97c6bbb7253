#!/bin/bash
# bench: what the series costs (make bench). Builds what it needs as make test
# does (the two test kernels, and the same two without the debug options,
# config/nodebug.config, in build/obj-ARCH-nodebug, for a second column),
# boots the bench guests one after the other and prints one table, also kept
# in build/bench.md.
# The measures are tests/viommu-bench.c's; every figure is a ratio of two
# things measured in the same guest, interleaved. The guests (boot.sh):
#   mock  x86-64, debug and non-debug kernel: items 1-3 on the mock driver,
#         under -icount, so a cost is a count of guest instructions;
#   churn the same two kernels: item 5, two vCPUs, wall clock; it needs two
#         free host cores, and its control shows whether it got them;
#   smmu  arm64, the same two kernels: item 4 on the emulated SMMUv3 with edu,
#         under -icount; the commands the SMMU consumed are counted in
#         QEMU's trace. The emulated SMMU's own work takes no guest time:
#         the costs are the kernel's.
# bench.sh --report prints the table again from the last run's console logs.
set -euo pipefail
. "$(dirname "$0")/common.sh"
S=$TOP/scripts

if [ "${1:-}" != --report ]; then
t0=$(date +%s)
"$S/build.sh" arm64
"$S/initramfs.sh" arm64
"$S/build.sh" x86_64
"$S/initramfs.sh" x86_64
for arch in arm64 x86_64; do
	CONFIG_EXTRA=$TOP/config/nodebug.config BUILD_OBJ=$BUILD/obj-$arch-nodebug \
		"$S/build.sh" $arch
done
t1=$(date +%s)
: > "$BUILD/bench-load.txt"
for guest in x86_64:mock x86_64:mock-nodebug x86_64:churn \
	     x86_64:churn-nodebug arm64:smmu arm64:smmu-nodebug; do
	# The host's other load matters to the churn measure: keep it
	echo "${guest#*:} $(cut -d' ' -f1 /proc/loadavg)" >> "$BUILD/bench-load.txt"
	"$S/boot.sh" "${guest%:*}" bench "${guest#*:}"
done
t2=$(date +%s)
log "bench: build $((t1 - t0))s, guests $((t2 - t1))s"
fi

qemu_cmd qemu-system-x86_64
qemu_version=$("${QEMU_CMD[@]}" --version | head -1)
python3 - "$BUILD" "$qemu_version" "$(nproc)" <<'PY' | tee "$BUILD/bench.md"
"""Join the guests' '@@ bench' lines into one table, with the goals' verdicts."""
import collections
import datetime
import re
import sys

build, qemu, ncpu = sys.argv[1:4]
# Columns: kernel -> its guests' console logs
KERNELS = [('debug', ['x86_64-bench-mock', 'x86_64-bench-churn', 'arm64-bench-smmu']),
           ('non-debug', ['x86_64-bench-mock-nodebug', 'x86_64-bench-churn-nodebug',
                          'arm64-bench-smmu-nodebug'])]

# (item, key, what, goal): goal is (op, limit) for the median, or None
ROWS = [
    (1, 'inv.0', 'invalidation, per call with no entries (the core alone), vIOMMU / 6.12 nested HWPT', None),
    (1, 'inv.1', 'invalidation, per entry, vIOMMU / 6.12 nested HWPT: 1 entry per call', ('<=', 1.0)),
    (1, 'inv.8', '... 8 entries per call', ('<=', 1.0)),
    (1, 'inv.32', '... 32 entries per call', ('<=', 1.0)),
    (1, 'inv.128', '... 128 entries per call', ('<=', 1.0)),
    (1, 'inv.1024', '... 1024 entries per call', ('<=', 1.0)),
    (1, 'inv.batch', 'vIOMMU invalidation, per entry: 1 per call / 128 per call', ('>=', 20.0)),
    (1, 'inv.batch.nested', '6.12 nested HWPT, the same', None),
    (2, 'lookup.64', 'vDEVICE lookup, per entry: 64 vDEVICEs / 1 (128 entries naming one virt_id)', None),
    (2, 'lookup.4096', '... 4096 vDEVICEs / 1', ('<=', 1.1)),
    (2, 'lookup.spread.4096', '... 4096 vDEVICEs, 128 different ones per call / 1', None),
    (2, 'lookup.dense.4096', '... 4096 vDEVICEs, virt_ids 0-4095 (as few xarray levels as 1) / 1', None),
    (3, 'vevent.read64', 'vEVENTQ trigger + read, events/s: 64-event reads / 1-event reads', None),
    (3, 'vevent.lost', 'vEVENTQ trigger: event lost (queue full; freed at once) / event queued (freed when read, untimed)', None),
    (4, 'smmu.cmds.128', 'vSMMU, one 128-entry TLBI_NH_VA call: what the SMMU consumed',
     ('==', '128 TLBI_NH_VA + 1 CMD_SYNC')),
    (4, 'smmu.cmds.1', 'vSMMU, one 1-entry call: what the SMMU consumed',
     ('==', '1 TLBI_NH_VA + 1 CMD_SYNC')),
    (4, 'smmu.batch', 'vSMMU TLBI_NH_VA, per entry: 1 per call / 128 per call', None),
    (5, 'churn.control', 'getppid() per second, 2 threads / 1 (the control: what the host gives)', None),
    (5, 'churn.shared', 'object churn per second, 2 threads / 1, one iommufd', None),
    (5, 'churn.separate', '... an iommufd each', None),
    (5, 'churn.shared.eff', "2-thread scaling of the churn / the control's, one iommufd", None),
    (5, 'churn.separate.eff', '... an iommufd each', None),
    (5, 'churn.shared.noattach', 'object churn without attach and detach per second, 2 threads / 1, one iommufd', None),
    (5, 'churn.shared.noattach.eff', "... its 2-thread scaling / the control's", None),
]


def read_log(path):
    """KEY -> (min, median, max, reps); notes; marker ASIDs; finished"""
    res, notes, marks = {}, [], None
    try:
        lines = open(path, errors='replace').read().splitlines()
    except OSError:
        return res, [f'no console log {path}'], marks, False
    lines = [re.sub(r'^\[\s*\d+\.\d+\]\s?', '', ln) for ln in lines]
    for ln in lines:
        m = re.match(r'@@ bench (\S+) (\S+) (\S+) (\S+) (\d+)$', ln)
        if m:
            res[m.group(1)] = tuple(float(x) for x in m.group(2, 3, 4)) + (int(m.group(5)),)
        elif ln.startswith('@@ bench-note '):
            notes.append(ln[len('@@ bench-note '):])
        elif ln.startswith('@@ bench-marks '):
            marks = [int(x) for x in ln.split()[2:]]
        elif re.match(r'not ok \d+ ', ln):
            notes.append(f'FAILED: {ln}')
    done = '@@ done' in lines and any(
        ln.startswith('@@ suite viommu_bench end rc=0') for ln in lines)
    return res, notes, marks, done


def smmu_counts(trace, marks):
    """What the SMMU consumed between the marker commands: counts, queue writes"""
    ev, last = [], None
    try:
        for ln in open(trace, errors='replace'):
            m = re.search(r'smmuv3_cmdq_opcode <--- SMMU_CMD_(\w+)', ln)
            a = re.search(r'smmuv3_cmdq_tlbi_nh_asid asid=(\d+)', ln)
            p = re.search(r'smmuv3_cmdq_consume prod=(\d+) .*prod.wrap=(\d+)', ln)
            if m:
                ev.append(('op', m.group(1)))
            elif a:
                ev.append(('asid', int(a.group(1))))
            elif p:
                # QEMU traces this once per command it takes: a new
                # producer index is a new write of the driver to CMDQ_PROD
                if p.groups() != last:
                    ev.append(('write', None))
                last = p.groups()
            # The last marker closes the last window: the measure after
            # it traces every command it sends
            if a and int(a.group(1)) == marks[-1]:
                break
    except OSError:
        return {}
    where = {e[1]: i for i, e in enumerate(ev) if e[0] == 'asid'}
    out = {}
    for key, a, b in (('smmu.cmds.128', marks[0], marks[1]),
                      ('smmu.cmds.1', marks[1], marks[2])):
        if a not in where or b not in where:
            continue
        win = ev[where[a] + 1:where[b]]
        # The first marker's CMD_SYNC opens the window; the second marker's
        # queue write and TLBI_NH_ASID close it.
        if win and win[0] == ('op', 'SYNC'):
            win = win[1:]
        if win and win[-1] == ('op', 'TLBI_NH_ASID'):
            win = win[:-1]
        if win and win[-1] == ('write', None):
            win = win[:-1]
        ops = collections.Counter(e[1] for e in win if e[0] == 'op')
        text = ' + '.join(f'{n} {"CMD_" if op == "SYNC" else ""}{op}' for op, n in
                          sorted(ops.items(), key=lambda x: x[0] == 'SYNC'))
        out[key] = (text, sum(1 for e in win if e[0] == 'write'))
    return out


def verdict(goal, med):
    """Judged on the median as the table shows it (2 decimals)"""
    op, lim = goal
    if op == '==':
        return 'met' if med == lim else 'missed'
    med = round(med, 2)
    if (med <= lim) if op == '<=' else (med >= lim):
        return 'met'
    if op == '<=':
        return f'missed: {(med / lim - 1) * 100:.0f}% over'
    return f'missed: {(1 - med / lim) * 100:.0f}% short'


cols, notes, failed = [], [], False
for name, logs in KERNELS:
    res = {}
    for log in logs:
        path = f'{build}/console-{log}.log'
        r, n, marks, done = read_log(path)
        res.update(r)
        notes += [f'{log} ({name} kernel): {x}' for x in n]
        if not done:
            failed = True
            notes.append(f'{log}: the benchmark did not finish cleanly; see {path}')
        if marks:
            res.update(smmu_counts(f'{build}/qemu-trace-{log}.log', marks))
    cols.append((name, res))
try:
    for ln in open(f'{build}/bench-load.txt'):
        guest, load = ln.split()
        notes.append(f'host load before the {guest} guest: {load} (1-minute average, {ncpu} cores)')
except OSError:
    pass

host = re.search(r'model name\s*:\s*(.*)', open('/proc/cpuinfo').read())
print(f'viommu-bench, {datetime.date.today()}, {host.group(1) if host else "?"} '
      f'({ncpu} cores), {qemu}, TCG. Each cell: median (min-max, repetitions) '
      'of the per-repetition ratio.')
print()
print('| # | measure | goal |' + ''.join(f' {n} kernel | verdict |' for n, _ in cols))
print('|' + ' --- |' * (3 + 2 * len(cols)))
for item, key, what, goal in ROWS:
    g = '' if goal is None else (goal[1] if goal[0] == '==' else f'{goal[0]} {goal[1]:g}x')
    line = f'| {item} | {what} | {g} |'
    for name, res in cols:
        v = res.get(key)
        if v is None and goal:
            failed = True
            line += ' not measured | missed |'
        elif v is None:
            line += ' - | |'
        elif isinstance(v[0], str):
            writes = f'{v[1]} queue write{"" if v[1] == 1 else "s"}'
            line += f' {v[0]} ({writes}) | {verdict(goal, v[0]) if goal else ""} |'
        else:
            lo, med, hi, n = v
            line += (f' {med:.2f}x ({lo:.2f}-{hi:.2f}, {n}) |'
                     f' {verdict(goal, med) if goal else ""} |')
    print(line)
print()
for n in notes:
    print(f'- {n}')
if failed:
    print('bench: a guest did not finish its benchmark (see above)')
sys.exit(1 if failed else 0)
PY

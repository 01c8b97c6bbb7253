#!/usr/bin/env python3
"""summary: read the console logs of `make test` and print one summary.

Arguments are LABEL=LOG, one per guest (x86_64/1, x86_64/2, arm64). Per
guest: the kselftest suites between '@@ suite' markers (TAP), the KUnit
suites the kernel ran at boot (KTAP; arm64), every kernel report (KASAN,
UBSAN, lockdep, WARN, BUG, ...) with the test that was running, and the
kmemleak scan. The last line is 'N passed, N failed[, N skipped]'; the exit status
is 1 when anything failed.
"""
import re
import sys

TS = re.compile(r'^\[\s*\d+\.\d+\]\s?')
REPORT = re.compile(
    r'(BUG: KASAN|UBSAN:|BUG:|WARNING:|kernel BUG at|Oops|Unable to handle kernel'
    r'|general protection fault|Kernel panic|ODEBUG:|list_(add|del) corruption'
    r'|INFO: task .* blocked|INFO: rcu_.* detected stall|possible deadlock)')
# Lines that match REPORT but are not reports.
NOT_REPORT = re.compile(r'WARNING: The mand mount option')


class Tally:
    def __init__(self):
        self.passed = self.failed = self.skipped = 0
        self.problems = []

    def fail(self, what):
        self.failed += 1
        self.problems.append(what)


def kselftest(arch, name, lines, end, t):
    """A kselftest TAP suite: trust '# Totals', name every 'not ok'."""
    totals = None
    plan = None
    results = [0, 0, 0]  # top-level TAP lines: pass, fail, skip
    last_assert = ''
    now = start = None
    durations = []
    for ln in lines:
        m = re.match(r'@@ t=(\d+\.\d+)', ln)
        if m:
            now = float(m.group(1))
            continue
        r = re.match(r'#\s+RUN\s+(\S+)', ln)
        if r:
            start = now
        elif re.match(r'(not )?ok \d+ ', ln) and start is not None and now is not None:
            durations.append((now - start, ln.split(' ', 3)[-1] if ln.startswith('not') else ln.split(' ', 2)[-1]))
            start = None
        m = re.match(r'1\.\.(\d+)$', ln)
        if m and plan is None:
            plan = int(m.group(1))
        m = re.match(r'(not )?ok \d+ [^#]*(# (SKIP|skip))?', ln)
        if m:
            results[2 if m.group(3) else 1 if m.group(1) else 0] += 1
        m = re.match(r'# Totals: pass:(\d+) fail:(\d+) xfail:(\d+) xpass:(\d+) skip:(\d+) error:(\d+)', ln)
        if m:
            totals = [int(x) for x in m.groups()]
        elif re.match(r'#\s+\S+\.c:\d+:', ln):
            last_assert = ln[1:].strip()
        elif ln.startswith('not ok '):
            t.problems.append(f'{arch} {name}: {ln[7:].strip()}'
                              + (f' ({last_assert})' if last_assert else ''))
        elif re.match(r'ok \d+ ', ln):
            last_assert = ''
    secs = end.group(2) if end else '?'
    # Plain TAP (a plan and result lines, no kselftest '# Totals'): counted
    # here; a planned result that never came is a failure.
    if totals is None and plan is not None and end is not None:
        totals = [results[0], results[1], 0, 0, results[2], 0]
    if plan is not None and totals is not None and sum(results) != plan:
        t.fail(f'{arch} {name}: {plan} results planned, {sum(results)} reported')
    if end is None or totals is None:
        t.fail(f'{arch} {name}: did not finish (crash or timeout)')
        print(f'{arch:8} {name:28} did not finish')
        return
    p, f, xf, xp, s, e = totals
    t.passed += p + xf
    t.skipped += s
    t.failed += f + xp + e
    if int(end.group(1)) != 0 and f + xp + e == 0:
        t.fail(f'{arch} {name}: exit status {end.group(1)}')
    slow = max(durations) if durations else None
    print(f'{arch:8} {name:28} pass {p:4}  fail {f + xp + e:3}  skip {s:3}  ({secs}s'
          + (f'; slowest {slow[1]} {slow[0]:.1f}s)' if slow else ')'))


def kunit(arch, lines, t):
    """KUnit suites printed at boot: '# Subtest: X' ... '# X: pass:.. fail:..'."""
    suite = None
    cases = []
    for ln in lines:
        s = ln.strip()
        m = re.match(r'# Subtest: (\S+)', s)
        if m and ln.startswith('    # Subtest'):
            suite = m.group(1)
            cases = []
            continue
        m = re.match(r'(not )?ok \d+ (\S+)', s)
        if suite and m and ln.startswith('    ' + s):
            cases.append(('fail' if m.group(1) else 'skip' if '# SKIP' in s else 'pass', m.group(2)))
        if suite and re.match(r'not ok \d+ ', s) and ln.startswith('    not ok'):
            t.problems.append(f'{arch} kunit {suite}: {s}')
        m = re.match(r'# (\S+): pass:(\d+) fail:(\d+) skip:(\d+) total:(\d+)', s)
        if m and m.group(1) == suite:
            p, f, sk = int(m.group(2)), int(m.group(3)), int(m.group(4))
            t.passed += p
            t.failed += f
            t.skipped += sk
            print(f'{arch:8} {"kunit " + suite:28} pass {p:4}  fail {f:3}  skip {sk:3}')
            # a line per case, so that each one's result is in the summary
            for res, case in cases:
                print(f'{"":8}   {res:4} {case}')
            suite = None


def summarize(arch, path, t, expect_kunit):
    try:
        raw = open(path, errors='replace').read().splitlines()
    except OSError:
        t.fail(f'{arch}: no console log {path}')
        return
    lines = [TS.sub('', ln) for ln in raw]
    if expect_kunit:
        before = len(t.problems), t.passed
        kunit(arch, lines, t)
        if t.passed == before[1] and len(t.problems) == before[0]:
            t.fail(f'{arch}: no KUnit results in the boot log')
    running = 'boot'
    i = 0
    leaks = []
    while i < len(lines):
        ln = lines[i]
        m = re.match(r'@@ suite (\S+) begin', ln)
        if m:
            name, body, end = m.group(1), [], None
            i += 1
            while i < len(lines):
                e = re.match(r'@@ suite (\S+) end rc=(\d+) secs=(\d+)', lines[i])
                if e:
                    end = re.match(r'.* rc=(\d+) secs=(\d+)', lines[i])
                    break
                body.append(lines[i])
                i += 1
            # Reports inside the suite, named after the test that ran.
            running = name
            for b in body:
                r = re.match(r'#\s+RUN\s+(\S+)', b)
                if r:
                    running = f'{name}: {r.group(1)}'
                elif REPORT.search(b) and not NOT_REPORT.search(b) and not b.startswith('#'):
                    t.fail(f'{arch} kernel report during {running}: {b.strip()}')
            kselftest(arch, name, body, end, t)
            running = f'after {name}'
        elif ln == '@@ kmemleak begin':
            i += 1
            while i < len(lines) and lines[i] != '@@ kmemleak end':
                if lines[i].startswith('unreferenced object'):
                    leaks.append([lines[i]])
                elif leaks and re.search(r'\[<[0-9a-f]+>\] ', lines[i]):
                    fn = lines[i].split('] ', 1)[1].strip()
                    if not re.match(r'(kmemleak_|slab_|__kmalloc|kmalloc|kmem_cache_|__kvmalloc|kvmalloc|__alloc|alloc_pages|__kmem)', fn):
                        leaks[-1].append(fn)
                i += 1
        elif REPORT.search(ln) and not NOT_REPORT.search(ln):
            t.fail(f'{arch} kernel report during {running}: {ln.strip()}')
        i += 1
    for leak in leaks:
        t.fail(f'{arch} kmemleak: {leak[0]} from {" <- ".join(leak[1:4])}')
    print(f'{arch:8} {"kmemleak":28} {len(leaks)} leak(s)')
    if '@@ done' not in lines:
        why = 'timeout' if any(ln.startswith('@@ timeout') for ln in lines) else 'crash'
        t.fail(f'{arch}: the guest did not finish ({why}); see {path}')


def main():
    t = Tally()
    for arg in sys.argv[1:]:
        arch, path = arg.split('=', 1)
        summarize(arch, path, t, expect_kunit=(arch == 'arm64'))
    for p in t.problems:
        print(f'FAIL: {p}')
    line = f'{t.passed} passed, {t.failed} failed'
    if t.skipped:
        line += f', {t.skipped} skipped'
    print(line)
    return 1 if t.failed else 0


if __name__ == '__main__':
    sys.exit(main())

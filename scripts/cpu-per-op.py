#!/usr/bin/env python3
"""CPU per operation of Go benchmarks, two builds side by side.

usage: scripts/cpu-per-op.py ROUNDS A_DIR B_DIR

A_DIR and B_DIR are checkouts (e.g. `git worktree add --detach /tmp/a REV`).
Each benchmark's test binary is built in both (go test -c), then run with
-test.benchtime Nx and 1x, ROUNDS times, the two builds interleaved; the CPU
time of the process (user+system, getrusage) over N-1 iterations is the CPU
per operation, which other work on a shared machine inflates far less than
wall time. Prints the median of the rounds for A and B.
"""
import os, resource, statistics, subprocess, sys

BENCHES = [("api", "BenchmarkRenew$", 600), ("api", "BenchmarkWorkloadSign$/provisioner", 600),
           ("api", "BenchmarkToken$", 3000), ("api", "BenchmarkJWTSVID$", 3000),
           ("ca", "BenchmarkLogAuthorityIssue$/log=on\\+receipt", 600),
           ("store/bolt", "BenchmarkIssueParallel$/writers-64/cert\\+log\\+token", 3000)]


def cpu(cmd, cwd):
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def main():
    rounds, dirs = int(sys.argv[1]), sys.argv[2:4]
    for d in dirs:
        for pkg in sorted({p for p, _, _ in BENCHES}):
            subprocess.run(["go", "test", "-c", "-o", os.path.join(d, pkg, "cpu-per-op.test"), "./" + pkg],
                           cwd=d, check=True)
    res = {}
    for _ in range(rounds):
        for d in dirs:
            for pkg, bench, n in BENCHES:
                cwd = os.path.join(d, pkg)
                run = lambda k: [os.path.join(cwd, "cpu-per-op.test"), "-test.run", "^$", "-test.bench", bench,
                                 "-test.benchtime", f"{k}x"]
                per = (cpu(run(n), cwd) - cpu(run(1), cwd)) / (n - 1) * 1e6
                res.setdefault((bench, d), []).append(per)
    for _, bench, _ in BENCHES:
        a, b = (statistics.median(res[(bench, d)]) for d in dirs)
        print(f"{bench:52s} A {a:7.1f} µs  B {b:7.1f} µs  {100 * (b - a) / a:+.1f}%")


if __name__ == "__main__":
    main()

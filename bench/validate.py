#!/usr/bin/env python3
"""End-to-end benchmark of `weir validate` on a generated configuration of mixed resources.

Generates N resources (default 10,000: ServiceEntries, VirtualServices with four routes each,
DestinationRules with three subsets), runs `weir validate -f FILE` several times, and prints wall
time and peak RSS per run (from wait4's rusage), with the goal next to them.

    python3 bench/validate.py --weir target/release/weir --gen target/release/examples/gen_config
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

GOAL_SECONDS = 1.0


def run_once(cmd):
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.stdout.read()
    proc.stderr.read()
    _, status, rusage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    return elapsed, rusage.ru_maxrss, os.waitstatus_to_exitcode(status), out.decode()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weir", required=True)
    ap.add_argument("--gen", required=True)
    ap.add_argument("--resources", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "config.yaml")
        with open(path, "wb") as f:
            f.write(subprocess.check_output([args.gen, str(args.resources)]))
        size_mb = os.path.getsize(path) / 1e6
        times, rss = [], []
        for _ in range(args.runs):
            elapsed, maxrss_kb, code, out = run_once([args.weir, "validate", "-f", path])
            if code != 0:
                print(out, file=sys.stderr)
                sys.exit(f"weir validate exited {code}")
            times.append(elapsed)
            rss.append(maxrss_kb / 1024)
        print(f"weir validate, {args.resources} mixed resources ({size_mb:.1f} MB of YAML), {args.runs} runs")
        print(f"  wall time: median {statistics.median(times):.3f} s, min {min(times):.3f} s, max {max(times):.3f} s"
              f"  (goal: well under {GOAL_SECONDS:.0f} s)")
        print(f"  peak RSS:  median {statistics.median(rss):.1f} MB, max {max(rss):.1f} MB")
        print(f"  throughput: {args.resources / statistics.median(times):,.0f} resources/s")
        print(f"  last summary: {out.strip().splitlines()[-1]}")


if __name__ == "__main__":
    main()

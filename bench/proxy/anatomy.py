#!/usr/bin/env python3
"""Where a proxy's time per request goes at a fixed, low rate (where added latency is judged):
for nginx, HAProxy and Weir (one worker each) in one run, at `--rate` requests per second over
16 connections, per request: user and system CPU microseconds, voluntary and involuntary
context switches, minor page faults, then (in a second, shorter pass under `strace -c`, which
slows the process) the system calls it made. The same system calls and context switches with
more user time point at the code path; more calls or switches at the event loop.

    bench/proxy/anatomy.py [--rate 1000] [--seconds 8] [--binary target/release/weir]

Needs what bench.py needs (`make bench-proxy` builds and installs it) and strace.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the harness's configurations and helpers)

TICK = os.sysconf("SC_CLK_TCK")


def counters(pids):
    """User and system seconds, voluntary and involuntary switches, minor faults of `pids`."""
    user = system = voluntary = involuntary = faults = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            continue
        faults += int(fields[7])
        user += int(fields[11]) / TICK
        system += int(fields[12]) / TICK
        voluntary += int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.M).group(1))
        involuntary += int(re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", status, re.M).group(1))
    return user, system, voluntary, involuntary, faults


def busy_pids(pids):
    """The processes that serve requests (nginx's master only forks its worker)."""
    return pids[1:] if len(pids) > 1 else pids


def syscalls(port, pids, rate, seconds):
    """System calls per request, from `strace -c` attached while the same load runs."""
    out = Path(tempfile.mkstemp(prefix="weir-strace-")[1])
    tracers = [subprocess.Popen(["strace", "-c", "-f", "-p", str(pid), "-o", f"{out}.{pid}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for pid in pids]
    time.sleep(1)
    done = bench.load(port, 16, seconds, rate)["requests"]
    calls = {}
    for t, pid in zip(tracers, pids):
        t.terminate()
        t.wait()
        report = Path(f"{out}.{pid}")
        for line in report.read_text().splitlines():
            m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
            if m and m.group(2) != "total":
                calls[m.group(2)] = calls.get(m.group(2), 0) + int(m.group(1))
        report.unlink()
    out.unlink()
    per = {name: n / max(done, 1) for name, n in calls.items() if n / max(done, 1) >= 0.01}
    return ", ".join(f"{name} {n:.2f}" for name, n in sorted(per.items(), key=lambda kv: -kv[1]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--binary", default=str(bench.WEIR))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="weir-anatomy-"))
    backend = subprocess.Popen([str(bench.LOADGEN), "serve", f"127.0.0.1:{bench.BACKEND}"], stdout=subprocess.DEVNULL)
    started = []
    try:
        bench.wait_port(bench.BACKEND)
        targets = []
        for name, port, start in (("nginx", bench.NGINX, bench.start_nginx),
                                  ("haproxy", bench.HAPROXY, bench.start_haproxy),
                                  ("weir", bench.WEIR_PORT, lambda t: bench.start_weir(t, binary=args.binary))):
            p, pids = start(tmp)
            started.append(p)
            targets.append((name, port, pids))
        print(f"per request at {args.rate:.0f} req/s over 16 connections, {args.seconds:.0f}s, one worker per proxy")
        print(f"{'target':8} {'user µs':>8} {'sys µs':>8} {'vol cs':>7} {'invol cs':>8} {'faults':>7}  p50 µs  p99 µs")
        for name, port, pids in targets:
            bench.load(port, 16, 1, args.rate)  # connections open, pools warm
            serving = busy_pids(pids())
            before = counters(serving)
            result = bench.load(port, 16, args.seconds, args.rate)
            after = counters(serving)
            n = max(result["requests"], 1)
            d = [(a - b) / n for a, b in zip(after, before)]
            print(f"{name:8} {d[0] * 1e6:8.1f} {d[1] * 1e6:8.1f} {d[2]:7.2f} {d[3]:8.2f} {d[4]:7.3f}  "
                  f"{result['p50_us']:6} {result['p99_us']:7}", flush=True)
        print("\nsystem calls per request (strace -c, a separate pass)")
        for name, port, pids in targets:
            print(f"{name:8} {syscalls(port, busy_pids(pids()), args.rate, min(args.seconds, 4))}", flush=True)
    finally:
        for p in started:
            p.terminate()
        backend.terminate()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

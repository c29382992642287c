#!/usr/bin/env python3
"""Where a proxy's time per request goes at a fixed, low rate (where added latency is judged):
for nginx, HAProxy and Weir (one worker each) in one run, at `--rate` requests per second over
16 connections, per request: user and system CPU microseconds, voluntary and involuntary
context switches, minor page faults, then (in a second, shorter pass under `strace -c`, which
slows the process) the system calls it made. The same system calls and context switches with
more user time point at the code path; more calls or switches at the event loop.

A third pass, when `perf` can record kernel tracepoints (root, or a low
`perf_event_paranoid`), splits the proxy's part of the added latency from the machine's. For
every request or response it forwards: the time from the `recvfrom` that read it to the
`sendto`/`writev` that passed it on (the time the proxy holds it), and the time from that
call's return until the proxy's thread next stops running (the kernel wakes the receiver on the
sender's CPU, where it waits for the sender to stop). For every wake-up of its serving thread:
the time from `sched_wakeup` to the thread running (the scheduler's part, which the proxy does
not control). The tracepoints slow every proxy alike by a few microseconds per event.

    bench/proxy/anatomy.py [--rate 1000] [--seconds 8] [--binary target/release/weir]

Needs what bench.py needs (`make bench-proxy` builds and installs it), strace, and perf for the
third pass (`setup.sh` installs both).
"""

import argparse
import os
import re
import shutil
import signal
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


HOLD_EVENTS = ["syscalls:sys_exit_recvfrom", "syscalls:sys_enter_sendto", "syscalls:sys_enter_writev",
               "syscalls:sys_exit_sendto", "syscalls:sys_exit_writev", "sched:sched_wakeup", "sched:sched_switch"]
FORWARD_STARTS = ("syscalls:sys_enter_sendto", "syscalls:sys_enter_writev")
TRACE_LINE = re.compile(r"\s*(\d+)\s+([\d.]+):\s+([\w:]+):\s*(.*)")


def threads(pids):
    """Every thread id of `pids`."""
    tids = set()
    for pid in pids:
        try:
            tids.update(int(t.name) for t in Path(f"/proc/{pid}/task").iterdir())
        except FileNotFoundError:
            pass
    return tids


def hold_times(trace, tids):
    """From `perf script` lines of HOLD_EVENTS: µs per forward from a read with data to the
    forwarding call, µs from that call's return to the thread stopping, and µs per wake-up of
    one of `tids` to it running."""
    held, after, waits = [], [], []
    last_read, forwarded, woken = {}, {}, {}
    for line in trace.splitlines():
        m = TRACE_LINE.match(line)
        if not m:
            continue
        tid, at, event, rest = int(m.group(1)), float(m.group(2)) * 1e6, m.group(3), m.group(4)
        if event == "sched:sched_wakeup":
            target = re.search(r"\bpid=(\d+)", rest)
            if target and int(target.group(1)) in tids:
                woken.setdefault(int(target.group(1)), at)
        elif event == "sched:sched_switch":
            previous = int(re.search(r"prev_pid=(\d+)", rest).group(1))
            if previous in forwarded:
                after.append(at - forwarded.pop(previous))
            target = re.search(r"next_pid=(\d+)", rest)
            if target and int(target.group(1)) in woken:
                waits.append(at - woken.pop(int(target.group(1))))
        elif tid not in tids:
            continue
        elif event == "syscalls:sys_exit_recvfrom":
            if int(rest.split()[0], 16) > 0:  # bytes read, not EAGAIN (negative)
                last_read.setdefault(tid, at)
        elif event in FORWARD_STARTS:
            if tid in last_read:  # what was read goes on
                held.append(at - last_read.pop(tid))
        else:  # the forwarding call returns; the receiver may be waiting for this CPU
            forwarded[tid] = at
    return held, after, waits


def percentiles(values, qs=(0.5, 0.9, 0.99)):
    """The `qs` quantiles of `values` (NaN for none)."""
    v = sorted(values)
    return [v[min(len(v) - 1, int(q * len(v)))] if v else float("nan") for q in qs]


def perf_works():
    """Whether `perf` may record a kernel tracepoint system-wide here."""
    if not shutil.which("perf"):
        return False
    probe = subprocess.run(["perf", "record", "-q", "-a", "-e", HOLD_EVENTS[0], "-o", "/dev/null", "--", "true"],
                           capture_output=True)
    return probe.returncode == 0


def holding(port, pids, rate, seconds):
    """Per request at `rate`: forwards, and p50/p90/p99 of the hold time, of the time on the CPU
    after forwarding, and of the wake-up wait."""
    data = Path(tempfile.mkstemp(prefix="weir-perf-")[1])
    recorder = subprocess.Popen(["perf", "record", "-q", "-a", "-e", ",".join(HOLD_EVENTS), "-o", str(data)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    done = bench.load(port, 16, seconds, rate)["requests"]
    recorder.send_signal(signal.SIGINT)
    recorder.wait()
    trace = subprocess.run(["perf", "script", "-i", str(data), "--ns", "-F", "tid,time,event,trace"],
                           capture_output=True, text=True).stdout
    data.unlink()
    held, after, waits = hold_times(trace, threads(pids))
    return len(held) / max(done, 1), percentiles(held), percentiles(after), percentiles(waits)


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
        if not perf_works():
            print("\nno hold times: `perf` is missing, or may not record kernel tracepoints here")
            return
        print("\nµs per forwarded request or response (perf tracepoints, a separate pass): held = read to "
              "forward; then = forward to the proxy stopping; woken = wake-up to running, the scheduler's part")
        print(f"{'target':8} {'forwards':>8} {'held p50':>9} {'p90':>6} {'p99':>6} {'then p50':>9} {'p90':>6} {'p99':>6} "
              f"{'woken p50':>10} {'p90':>6} {'p99':>6}")
        for name, port, pids in targets:
            forwards, *spans = holding(port, busy_pids(pids()), args.rate, min(args.seconds, 4))
            cells = " ".join(f"{a:{w}.1f} {b:6.1f} {c:6.1f}" for (a, b, c), w in zip(spans, (9, 9, 10)))
            print(f"{name:8} {forwards:8.2f} {cells}", flush=True)
    finally:
        for p in started:
            p.terminate()
        backend.terminate()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

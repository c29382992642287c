#!/usr/bin/env python3
"""Counts the instructions Weir's proxy executes per request, under callgrind: the same bootstrap
as bench.py (plain route, and the route with the resilience machinery), a fixed load of
requests, instrumentation switched on only while they run. Unlike CPU seconds on a shared
two-core machine (±15% from run to run), the count is repeatable, so it tells whether a change
to the data path made it cheaper, and by how much.

    bench/proxy/instructions.py [--binary target/release/weir] [--requests 2000] [--baseline BINARY]
                                [--peers]

`--peers` counts nginx and HAProxy, configured as bench.py configures them, under the same load:
the number of instructions a request costs each proxy, the figure behind CPU per request.

Needs valgrind (callgrind_control), target/release/weir and target/release/examples/loadgen
(`make bench-proxy` builds them).
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


def count(binary, resilient, requests, tmp):
    """Weir's instructions per request (the bench's bootstrap, one worker)."""
    p, _ = bench.start_weir(tmp, resilient=resilient, binary=binary)
    p.terminate()
    p.wait()
    argv = bench.weir_argv(binary, tmp / "weir.yaml", bench.WEIR_ADMIN)
    return under_callgrind(argv, bench.WEIR_PORT, requests, tmp, f"weir-{int(resilient)}")


def count_peer(name, requests, tmp):
    """nginx's or HAProxy's, configured as in bench.py, as one process (no master)."""
    if name == "nginx":
        p, _ = bench.start_nginx(tmp)
        argv = ["nginx", "-c", str(tmp / "nginx.conf"), "-p", str(tmp), "-g", "master_process off;"]
        port = bench.NGINX
    else:
        p, _ = bench.start_haproxy(tmp)
        argv = ["haproxy", "-f", str(tmp / "haproxy.cfg")]
        port = bench.HAPROXY
    p.terminate()
    p.wait()
    return under_callgrind(argv, port, requests, tmp, name)


def under_callgrind(argv, port, requests, tmp, label):
    """Runs `argv` under callgrind and counts the instructions of `requests` requests to `port`
    over 16 kept-alive connections (warmed first, counted only while the load runs)."""
    out = tmp / f"callgrind-{os.getpid()}-{label}.out"
    vg = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}", *argv],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "WEIR_LOG": "warn"})
    try:
        bench.wait_port(port, timeout=60)
        bench.load(port, 16, 2, 200)  # connections open, pools warm
        subprocess.run(["callgrind_control", "-i", "on", str(vg.pid)], capture_output=True, check=True)
        seconds = 5
        done = bench.load(port, 16, seconds, requests / seconds)["requests"]
        subprocess.run(["callgrind_control", "-d", str(vg.pid)], capture_output=True, check=True)
    finally:
        vg.terminate()
        vg.wait()
    dumps = sorted(tmp.glob(out.name + ".*"))
    if not dumps:
        sys.exit(f"callgrind wrote no dump for {label}")
    text = dumps[-1].read_text()
    total = re.search(r"^summary:\s+(\d+)", text, re.M) or re.search(r"^totals:\s+(\d+)", text, re.M)
    for f in [out, *dumps]:
        f.unlink(missing_ok=True)
    return int(total.group(1)) / done


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=str(bench.WEIR))
    ap.add_argument("--baseline", help="another weir binary to count the same way")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--peers", action="store_true",
                    help="also count nginx and HAProxy (as bench.py configures them) the same way")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="weir-instr-"))
    backend = subprocess.Popen([str(bench.LOADGEN), "serve", f"127.0.0.1:{bench.BACKEND}"], stdout=subprocess.DEVNULL)
    try:
        bench.wait_port(bench.BACKEND)
        binaries = [("weir", args.binary)] + ([("baseline", args.baseline)] if args.baseline else [])
        print(f"instructions per request (callgrind, {args.requests} requests over 16 connections)")
        for name, binary in binaries:
            plain = count(binary, False, args.requests, tmp)
            resilient = count(binary, True, args.requests, tmp)
            print(f"{name:9} plain {plain:8.0f}   with resilience {resilient:8.0f} ({(resilient / plain - 1) * 100:+.1f}%)")
            time.sleep(0.2)
        if args.peers:
            for peer in ("nginx", "haproxy"):
                print(f"{peer:9} {count_peer(peer, args.requests, tmp):14.0f}", flush=True)
                time.sleep(0.2)
    finally:
        backend.terminate()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Runs the same HTTP load against a backend directly, through nginx, HAProxy and Weir (each a
reverse proxy with one worker), in one run, and prints per target: added latency at a fixed rate
(p50/p90/p99 over the direct path), saturation throughput, CPU seconds per 10k requests and idle
and peak RSS of the proxy process.

    bench/proxy/bench.py [--rate 1000] [--seconds 10] [--connections 16] [--saturate-connections 32]
                         [--pairs 1] [--weir-only] [--binary BINARY] [--baseline BINARY] [--rounds 3]
                         [--pin LOAD_CPUS:PROXY_CPUS] [--tcp]

After the per-target runs, the added latency and the saturation throughput are measured again
with every target running at once, in `--rounds` interleaved rounds (median and range per
target, and each round's ratio to nginx): the figures to compare proxies by on a shared machine.

`--pin 0:1` runs the load generator and the backend on CPU 0 and every proxy on CPU 1 (`taskset`
lists, as `0:0` or `0-1:1`); `--pin 0:0` puts everything on one CPU, which takes the wake-ups
across cores out of the latency.

`--tcp` has every proxy forward bytes instead of requests (nginx's `stream` module, HAProxy's
`mode tcp`, Weir's `tcp_proxy`; `weir+res` then has the circuit breakers and outlier detection
alone); the load is still HTTP/1.1 on kept-alive connections, one upstream connection each.

Needs target/release/weir and target/release/examples/loadgen (`make bench-proxy` builds them)
and nginx and haproxy (bench/proxy/setup.sh installs them from Debian). Writes
bench/out/proxy.json.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WEIR = ROOT / "target/release/weir"
LOADGEN = ROOT / "target/release/examples/loadgen"
BACKEND, NGINX, HAPROXY, WEIR_PORT, WEIR_ADMIN = 19000, 19001, 19002, 19003, 19004
# A second Weir (the resilient route, or a baseline binary) running beside the first.
WEIR2_PORT, WEIR2_ADMIN = 19005, 19006
# CPU lists (`taskset -c`) for the load generator and backend, and for the proxies (`--pin`).
PIN = {"load": None, "proxy": None}
# Whether the proxies forward bytes (`--tcp`) rather than HTTP requests.
MODE = {"tcp": False}
# Debian's `libnginx-mod-stream`.
NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"

# The resilience machinery on the hot path (issue: "within 5% of the plain route"): the same
# route with a retry policy and a timeout, to a cluster with outlier detection and circuit
# breakers, as Istio generates them for a VirtualService with `retries`/`timeout` and a
# DestinationRule with `outlierDetection`/`connectionPool`.
RESILIENT_ROUTE = """
                  retry_policy:
                    retry_on: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
                    num_retries: 2
                    retriable_status_codes: [503]
                    per_try_timeout: 5s
                    retry_host_predicate:
                    - name: envoy.retry_host_predicates.previous_hosts
                      typed_config: {"@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate}
                    host_selection_retry_max_attempts: 5"""
RESILIENT_CLUSTER = """
    circuit_breakers:
      thresholds: [{max_connections: 10000, max_pending_requests: 10000, max_requests: 10000, max_retries: 100}]
    outlier_detection:
      consecutive_5xx: 5
      interval: 10s
      base_ejection_time: 30s
      max_ejection_percent: 100
      enforcing_success_rate: 0"""


def wait_port(port, timeout=10.0):
    import socket
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def cpu_seconds(pids):
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except FileNotFoundError:
            pass
    return total / tick


def rss_kb(pids, key):
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                total += int(line.split()[1])
    return total


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def pinned(argv, role):
    """`argv` run on the CPUs `--pin` gave `role` ("load" or "proxy"), or as it is."""
    cpus = PIN[role]
    return ["taskset", "-c", cpus] + argv if cpus else argv


def load(port, connections, seconds, rate, h2=False):
    """`loadgen run` against `port` (HTTP/1.1, or HTTP/2 with prior knowledge): its JSON summary."""
    argv = [str(LOADGEN), "run", f"127.0.0.1:{port}", "bench.test", str(connections), str(seconds), str(rate)]
    out = subprocess.run(pinned(argv + (["h2"] if h2 else []), "load"), capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def start_nginx(tmp):
    conf = tmp / "nginx.conf"
    conf.write_text((f"load_module {NGINX_STREAM_MODULE};\n" if MODE["tcp"] else "") + f"""
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 4096; }}
""" + (f"""
stream {{
  upstream backend {{ server 127.0.0.1:{BACKEND}; }}
  server {{ listen 127.0.0.1:{NGINX}; proxy_pass backend; }}
}}
""" if MODE["tcp"] else f"""
http {{
  access_log off;
  keepalive_requests 10000000;
  upstream backend {{ server 127.0.0.1:{BACKEND}; keepalive 64; keepalive_requests 10000000; }}
  server {{
    listen 127.0.0.1:{NGINX};
    location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
"""))
    p = subprocess.Popen(pinned(["nginx", "-c", str(conf), "-p", str(tmp)], "proxy"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(NGINX)
    # The master forks one worker; both are measured.
    return p, lambda: [p.pid] + children(p.pid)


def start_haproxy(tmp):
    conf = tmp / "haproxy.cfg"
    conf.write_text(f"""
global
  nbthread 1
  maxconn 4096
defaults
  mode {"tcp" if MODE["tcp"] else "http"}
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend f
  bind 127.0.0.1:{HAPROXY}
  default_backend b
backend b
  server s1 127.0.0.1:{BACKEND}
""")
    p = subprocess.Popen(pinned(["haproxy", "-f", str(conf)], "proxy"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(HAPROXY)
    return p, lambda: [p.pid]


def static_bootstrap(listeners, clusters):
    """An Envoy bootstrap of `static_resources` (items made by `listener` and `static_cluster`)."""
    return f"""
static_resources:
  listeners:{listeners}
  clusters:{clusters}
"""


def listener(name, port, filters, chain_extra=""):
    """A listener on 127.0.0.1:`port` with one filter chain of `filters` (say, `http_filters`);
    `chain_extra`: more keys of that chain (a `transport_socket`), indented to match."""
    return f"""
  - name: {name}
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:{filters}{chain_extra}"""


def http_filters(stat_prefix, cluster, route_extra=""):
    """The `filters:` of a listener's filter chain: an HTTP connection manager that sends every
    request to `cluster` with a 15 s timeout."""
    return f"""
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {stat_prefix}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: /}}
                route:
                  cluster: {cluster}
                  timeout: 15s{route_extra}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}"""


def tcp_filters(stat_prefix, cluster):
    """The `filters:` of a listener's filter chain: a TCP proxy to `cluster`."""
    return f"""
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: {stat_prefix}
          cluster: {cluster}"""


def static_cluster(name, port, extra=""):
    """A STATIC cluster with one endpoint, 127.0.0.1:`port` (an item of `clusters:`)."""
    return f"""
  - name: {name}
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}{extra}"""


def weir_argv(binary, conf, admin):
    """`weir proxy` from the bootstrap file `conf`, one worker, its admin port on 127.0.0.1."""
    return [str(binary or WEIR), "proxy", "--bootstrap", str(conf), "--admin", f"127.0.0.1:{admin}", "--workers", "1"]


def launch_weir(conf, port, admin, binary=None, log=subprocess.DEVNULL):
    """Starts `weir_argv` (warnings only, to `log`) and waits until `port` accepts connections."""
    p = subprocess.Popen(pinned(weir_argv(binary, conf, admin), "proxy"), stdout=subprocess.DEVNULL, stderr=log,
                         env={**os.environ, "WEIR_LOG": "warn"})
    wait_port(port)
    return p


def start_weir(tmp, resilient=False, binary=None, port=WEIR_PORT, admin=WEIR_ADMIN):
    conf = tmp / ("weir.yaml" if port == WEIR_PORT else f"weir-{port}.yaml")
    route_extra = RESILIENT_ROUTE if resilient else ""
    cluster_extra = RESILIENT_CLUSTER if resilient else ""
    filters = tcp_filters("bench", "backend") if MODE["tcp"] else http_filters("bench", "backend", route_extra)
    conf.write_text(static_bootstrap(listener("bench", port, filters), static_cluster("backend", BACKEND, cluster_extra)))
    p = launch_weir(conf, port, admin, binary)
    return p, lambda: [p.pid]


def measure(name, port, pids, args, direct):
    time.sleep(0.5)
    idle = rss_kb(pids(), "VmRSS") if pids else None
    load(port, 4, 1, 0)  # warm up connections
    fixed = load(port, args.connections, args.seconds, args.rate)
    before = cpu_seconds(pids()) if pids else None
    sat = load(port, args.saturate_connections, args.seconds, 0)
    cpu = cpu_seconds(pids()) - before if pids else None
    peak = rss_kb(pids(), "VmHWM") if pids else None
    row = {
        "target": name,
        "fixed_rate": fixed,
        "saturation": sat,
        "added_p50_us": fixed["p50_us"] - direct["fixed_rate"]["p50_us"] if direct else 0,
        "added_p90_us": fixed["p90_us"] - direct["fixed_rate"]["p90_us"] if direct else 0,
        "added_p99_us": fixed["p99_us"] - direct["fixed_rate"]["p99_us"] if direct else 0,
        "cpu_s_per_10k": (cpu / sat["requests"] * 10000) if cpu is not None and sat["requests"] else None,
        "idle_rss_mb": idle / 1024 if idle else None,
        "peak_rss_mb": peak / 1024 if peak else None,
    }
    return row


def interleaved_rounds(args, targets, tmp):
    """Added latency at the fixed rate, then throughput at saturation, with every target running
    at once and measured in turn, round after round, each round starting with the next target: a
    disturbance on the shared machine then hits one round of every target instead of the whole
    measurement of one, and no target is always measured first or last. Returns
    ({target: [added p50/p90/p99 per round]}, {target: [req/s and CPU s per 10k per round]})."""
    running = []
    try:
        for name, port, start in targets:
            p, pids = start(tmp)
            running.append((name, port, p, pids))
        for _, port, _, _ in running:
            load(port, 4, 1, 0)  # connections open, pools warm
        added = {name: [] for name, _, _, _ in running}
        saturated = {name: [] for name, _, _, _ in running}
        for i in range(args.rounds):
            # Each round starts with the next target, so that none is always measured first.
            order = running[i % len(running):] + running[:i % len(running)]
            direct = load(BACKEND, args.connections, args.seconds, args.rate)
            for name, port, _, _ in order:
                r = load(port, args.connections, args.seconds, args.rate)
                added[name].append({k: r[k] - direct[k] for k in ("p50_us", "p90_us", "p99_us")})
            for name, port, _, pids in order:
                before = cpu_seconds(pids())
                r = load(port, args.saturate_connections, args.seconds, 0)
                cpu = cpu_seconds(pids()) - before
                saturated[name].append({"rps": r["rps"], "cpu_s_per_10k": cpu / max(r["requests"], 1) * 10000})
        return added, saturated
    finally:
        for name, _, p, _ in running:
            p.send_signal(signal.SIGINT if name in ("weir", "weir+res", "baseline") else signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def spread(values):
    """Median [min, max] of a list."""
    v = sorted(values)
    return v[len(v) // 2], v[0], v[-1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--saturate-connections", type=int, default=32)
    ap.add_argument("--pairs", type=int, default=1,
                    help="measure weir and weir+res this many times, alternating, and compare medians")
    ap.add_argument("--weir-only", action="store_true", help="skip nginx and HAProxy")
    ap.add_argument("--binary", metavar="BINARY", type=Path,
                    help="the weir binary to measure (default target/release/weir; `make release-pgo` builds target/pgo/weir)")
    ap.add_argument("--baseline", metavar="BINARY",
                    help="another weir binary (say, before a change) measured alternately with this one, instead of weir+res")
    ap.add_argument("--rounds", type=int, default=3,
                    help="then measure added latency and saturation again in this many interleaved rounds, all targets running (0: skip)")
    ap.add_argument("--pin", metavar="LOAD_CPUS:PROXY_CPUS",
                    help="run the load generator and backend on LOAD_CPUS and the proxies on PROXY_CPUS (taskset lists)")
    ap.add_argument("--tcp", action="store_true",
                    help="every proxy forwards bytes (nginx stream, HAProxy mode tcp, Weir tcp_proxy) instead of HTTP requests")
    args = ap.parse_args()
    MODE["tcp"] = args.tcp
    if args.pin:
        load_cpus, sep, proxy_cpus = args.pin.partition(":")
        if not (sep and load_cpus and proxy_cpus):
            sys.exit(f"--pin {args.pin}: expected LOAD_CPUS:PROXY_CPUS, as 0:1")
        PIN.update(load=load_cpus, proxy=proxy_cpus)
    global WEIR
    WEIR = args.binary or WEIR
    for tool in [WEIR, LOADGEN]:
        if not tool.exists():
            sys.exit(f"{tool} is missing: run `make bench-proxy`")
    for tool in ["nginx", "haproxy"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: run bench/proxy/setup.sh")
    if args.tcp and not Path(NGINX_STREAM_MODULE).exists():
        sys.exit(f"{NGINX_STREAM_MODULE} is missing: run bench/proxy/setup.sh")
    tmp = Path(tempfile.mkdtemp(prefix="weir-bench-"))
    procs = []
    try:
        backend = subprocess.Popen(pinned([str(LOADGEN), "serve", f"127.0.0.1:{BACKEND}"], "load"), stdout=subprocess.DEVNULL)
        procs.append(backend)
        wait_port(BACKEND)
        rows = []
        direct = measure("direct", BACKEND, None, args, None)
        rows.append(direct)
        peers = [] if args.weir_only else [("nginx", NGINX, start_nginx), ("haproxy", HAPROXY, start_haproxy)]
        if args.baseline:
            second = ("baseline", WEIR_PORT, lambda tmp: start_weir(tmp, binary=args.baseline))
        else:
            second = ("weir+res", WEIR_PORT, lambda tmp: start_weir(tmp, resilient=True))
        targets = peers + [("weir", WEIR_PORT, start_weir), second] * args.pairs
        for name, port, start in targets:
            p, pids = start(tmp)
            procs.append(p)
            rows.append(measure(name, port, pids, args, direct))
            p.send_signal(signal.SIGTERM if not name.startswith("weir") else signal.SIGINT)
            p.wait(timeout=10)
        print(f"\n{args.rate:.0f} req/s over {args.connections} connections for {args.seconds:.0f}s (added latency over direct); "
              f"saturation with {args.saturate_connections} connections; one worker per proxy; "
              + (f"load generator and backend on CPU {PIN['load']}, proxies on CPU {PIN['proxy']}\n" if args.pin
                 else f"{os.cpu_count()} cores shared with the load generator\n"))
        print(f"{'target':<8} {'p50 +µs':>8} {'p90 +µs':>8} {'p99 +µs':>8} {'p99 µs':>8} {'req/s sat.':>11} {'CPU s/10k':>10} {'idle MB':>8} {'peak MB':>8} {'errors':>7}")
        for r in rows:
            f, s = r["fixed_rate"], r["saturation"]
            fmt = lambda v, spec: format(v, spec) if v is not None else "-"
            print(f"{r['target']:<8} {r['added_p50_us']:>8} {r['added_p90_us']:>8} {r['added_p99_us']:>8} {f['p99_us']:>8} {s['rps']:>11.0f} "
                  f"{fmt(r['cpu_s_per_10k'], '10.3f'):>10} {fmt(r['idle_rss_mb'], '8.1f'):>8} {fmt(r['peak_rss_mb'], '8.1f'):>8} {f['errors'] + s['errors']:>7}")
        def median(target, value):
            values = sorted(value(r) for r in rows if r["target"] == target)
            return values[len(values) // 2]
        other = second[0]
        cpu = [median(t, lambda r: r["cpu_s_per_10k"]) for t in ("weir", other)]
        rps = [median(t, lambda r: r["saturation"]["rps"]) for t in ("weir", other)]
        p99 = [median(t, lambda r: r["fixed_rate"]["p99_us"]) for t in ("weir", other)]
        print(f"\n{other} against weir (medians of {args.pairs} alternating run(s)): "
              f"CPU/10k {100 * (cpu[1] / cpu[0] - 1):+.1f}%, req/s {100 * (rps[1] / rps[0] - 1):+.1f}%, "
              f"p99 {p99[1] - p99[0]:+d} µs")
        rounds, saturated = {}, {}
        if args.rounds > 0:
            if args.baseline:
                second_now = ("baseline", WEIR2_PORT,
                              lambda tmp: start_weir(tmp, binary=args.baseline, port=WEIR2_PORT, admin=WEIR2_ADMIN))
            else:
                second_now = ("weir+res", WEIR2_PORT,
                              lambda tmp: start_weir(tmp, resilient=True, port=WEIR2_PORT, admin=WEIR2_ADMIN))
            rounds, saturated = interleaved_rounds(args, peers + [("weir", WEIR_PORT, start_weir), second_now], tmp)
            print(f"\nadded latency at {args.rate:.0f} req/s, all targets running, {args.rounds} interleaved rounds of "
                  f"{args.seconds:.0f}s each (over direct in the same round): median [min, max] of the rounds\n")
            print(f"{'target':<9} {'p50 +µs':>18} {'p90 +µs':>18} {'p99 +µs':>20}")
            for name, per_round in rounds.items():
                cells = [f"{m} [{lo}, {hi}]" for m, lo, hi in (spread([r[k] for r in per_round]) for k in ("p50_us", "p90_us", "p99_us"))]
                print(f"{name:<9} {cells[0]:>18} {cells[1]:>18} {cells[2]:>20}")
            print(f"\nsaturation with {args.saturate_connections} connections, same rounds: median [min, max]; "
                  f"against nginx in the same round (median of the rounds' ratios)\n")
            print(f"{'target':<9} {'req/s':>26} {'CPU s/10k':>26} {'req/s vs nginx':>15} {'CPU vs nginx':>13}")
            for name, per_round in saturated.items():
                rps, cpu = spread([r["rps"] for r in per_round]), spread([r["cpu_s_per_10k"] for r in per_round])
                ratios = ""
                if "nginx" in saturated:
                    base = saturated["nginx"]
                    rps_ratio = spread([r["rps"] / b["rps"] for r, b in zip(per_round, base)])[0]
                    cpu_ratio = spread([r["cpu_s_per_10k"] / b["cpu_s_per_10k"] for r, b in zip(per_round, base)])[0]
                    ratios = f"{rps_ratio:>15.2f} {cpu_ratio:>13.2f}"
                print(f"{name:<9} {f'{rps[0]:.0f} [{rps[1]:.0f}, {rps[2]:.0f}]':>26} "
                      f"{f'{cpu[0]:.3f} [{cpu[1]:.3f}, {cpu[2]:.3f}]':>26} {ratios}")
        out = ROOT / "bench/out"
        out.mkdir(parents=True, exist_ok=True)
        (out / "proxy.json").write_text(json.dumps({"pin": args.pin, "runs": rows, "latency_rounds": rounds, "saturation_rounds": saturated}, indent=2))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

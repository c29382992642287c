#!/usr/bin/env python3
"""The training run of a profile-guided build (scripts/release-pgo.sh): drives an instrumented
`weir` with the work its profile should describe, then lets it exit so that it writes its counts.

- the proxy with bench.py's bootstrap, plain route and the route with the resilience machinery:
  HTTP/1.1 over kept-alive connections, at saturation and at a fixed rate;
- HTTP/2 with prior knowledge (h2c) on the same listener;
- mutual TLS between two proxies, as between two sidecars: one routes to a cluster that
  originates TLS with a client certificate, the other terminates it, requires the client's
  certificate and routes to the backend (keys made with `openssl`);
- `weir validate` over the Istio corpus beside the repository (or the examples without it).

Code the run does not reach (TCP proxying, TLS passthrough, the forward-proxy port, the control
plane's xDS generation) is compiled as code that is rarely run. Runs the loadgen of an ordinary
release build (target/release/examples/loadgen) as client and backend, on bench.py's ports
(19000-19006), which must be free.

    bench/proxy/pgo_train.py INSTRUMENTED_WEIR
"""

import json
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the harness's configurations and helpers)

ROOT = Path(__file__).resolve().parents[2]


def stop(p):
    """Ctrl-C, as a user stops it: the profile is written when the process exits normally."""
    p.send_signal(signal.SIGINT)
    code = p.wait(timeout=30)
    if code != 0:
        sys.exit(f"pgo_train: weir exited with {code}; its profile would be incomplete")


def make_certificates(tmp):
    """A CA and one certificate it signs (for `bench.test`, server and client use) in `tmp`."""
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=tmp, check=True, capture_output=True)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=weir-pgo-ca")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=bench.test")
    (tmp / "leaf.ext").write_text("subjectAltName=DNS:bench.test\nbasicConstraints=CA:FALSE\n"
                                  "extendedKeyUsage=serverAuth,clientAuth\n")
    openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "leaf.pem", "-days", "2", "-extfile", "leaf.ext")


def start_mutual_tls(tmp, binary):
    """Two Weir processes: the first listens on bench.py's port and speaks mutual TLS to the
    second, which terminates it and routes to the backend. (Two, because a proxy refuses to send
    a request to an address it listens on itself.)"""
    make_certificates(tmp)
    certificate = json.dumps({
        "tls_certificates": [{"certificate_chain": {"filename": str(tmp / "leaf.pem")},
                              "private_key": {"filename": str(tmp / "leaf.key")}}],
        "validation_context": {"trusted_ca": {"filename": str(tmp / "ca.pem")}},
    })
    originate = """
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: bench.test
        common_tls_context: """ + certificate
    terminate = """
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context: """ + certificate
    proxies = [
        ("terminate", bench.WEIR2_PORT, bench.WEIR2_ADMIN, bench.static_bootstrap(
            bench.listener("tls", bench.WEIR2_PORT, bench.http_filters("tls", "backend"), terminate),
            bench.static_cluster("backend", bench.BACKEND))),
        ("originate", bench.WEIR_PORT, bench.WEIR_ADMIN, bench.static_bootstrap(
            bench.listener("plain", bench.WEIR_PORT, bench.http_filters("plain", "mutual_tls")),
            bench.static_cluster("mutual_tls", bench.WEIR2_PORT, originate))),
    ]
    processes = []
    for name, port, admin, bootstrap in proxies:
        conf = tmp / f"weir-tls-{name}.yaml"
        conf.write_text(bootstrap)
        processes.append(bench.launch_weir(conf, port, admin, binary, log=(tmp / "weir-tls.log").open("a")))
    return processes


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    binary = Path(sys.argv[1])
    if not bench.LOADGEN.exists():
        sys.exit(f"{bench.LOADGEN} is missing: cargo build --release -p weir --example loadgen")
    if not shutil.which("openssl"):
        sys.exit("pgo_train: openssl is missing (it makes the certificates of the TLS leg)")
    tmp = Path(tempfile.mkdtemp(prefix="weir-pgo-"))
    backend = subprocess.Popen([str(bench.LOADGEN), "serve", f"127.0.0.1:{bench.BACKEND}"], stdout=subprocess.DEVNULL)
    try:
        bench.wait_port(bench.BACKEND)
        starts = [lambda: [bench.start_weir(tmp, resilient=False, binary=binary)[0]],
                  lambda: [bench.start_weir(tmp, resilient=True, binary=binary)[0]],
                  lambda: start_mutual_tls(tmp, binary)]
        for start in starts:
            processes = start()
            try:
                for connections, seconds, rate, h2 in [(32, 3, 0, False), (16, 3, 1000, False), (16, 2, 0, True)]:
                    r = bench.load(bench.WEIR_PORT, connections, seconds, rate, h2=h2)
                    if r["errors"] or not r["requests"]:
                        log = tmp / "weir-tls.log"
                        detail = log.read_text()[-1000:] if log.exists() else ""
                        sys.exit(f"pgo_train: the {'HTTP/2' if h2 else 'HTTP/1.1'} load failed: {r}\n{detail}")
            finally:
                for p in processes:
                    stop(p)
        corpus = ROOT.parent / "shared/corpus/istio"
        configs = [corpus] if corpus.is_dir() else [ROOT / "examples"]
        for _ in range(3):
            v = subprocess.run([str(binary), "validate", "-f", *map(str, configs)], capture_output=True, timeout=300)
            # 1: some of the configuration is invalid, as the corpus means it to be.
            if v.returncode not in (0, 1):
                sys.exit(f"pgo_train: weir validate exited with {v.returncode}: {v.stderr.decode()[-500:]}")
    finally:
        backend.terminate()
        backend.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    print("pgo_train: done", file=sys.stderr)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The training run of a profile-guided build (scripts/release-pgo.sh): drives an instrumented
`weir` with the work its profile should describe, then lets it exit so that it writes its counts.

- the proxy with bench.py's bootstrap, plain route and the route with the resilience machinery:
  HTTP/1.1 over kept-alive connections, at saturation and at a fixed rate;
- HTTP/2 with prior knowledge (h2c) on the same listener;
- `weir validate` over the Istio corpus beside the repository (or the examples without it).

Code the run does not reach (TLS, TCP proxying, the control plane's xDS generation) is compiled
as code that is rarely run. Run with the loadgen from an ordinary release build
(target/release/examples/loadgen) and a backend on bench.py's ports, which must be free.

    bench/proxy/pgo_train.py INSTRUMENTED_WEIR
"""

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


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    binary = Path(sys.argv[1])
    if not bench.LOADGEN.exists():
        sys.exit(f"{bench.LOADGEN} is missing: cargo build --release -p weir --example loadgen")
    tmp = Path(tempfile.mkdtemp(prefix="weir-pgo-"))
    backend = subprocess.Popen([str(bench.LOADGEN), "serve", f"127.0.0.1:{bench.BACKEND}"], stdout=subprocess.DEVNULL)
    try:
        bench.wait_port(bench.BACKEND)
        for resilient in (False, True):
            p, _ = bench.start_weir(tmp, resilient=resilient, binary=binary)
            try:
                for connections, seconds, rate, h2 in [(32, 3, 0, False), (16, 3, 1000, False), (16, 2, 0, True)]:
                    r = bench.load(bench.WEIR_PORT, connections, seconds, rate, h2=h2)
                    if r["errors"] or not r["requests"]:
                        sys.exit(f"pgo_train: the {'HTTP/2' if h2 else 'HTTP/1.1'} load failed: {r}")
            finally:
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

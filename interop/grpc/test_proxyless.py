"""The gRPC proxyless xDS client (PyPI grpcio) configured by `weir discovery`.

Backends are real gRPC servers on 127.0.0.1. The client dials `xds:///echo.interop.test:7070`
with a GRPC_XDS_BOOTSTRAP file pointing at Weir; every routing change below is made by rewriting
a file in the watched configuration folder while the same client channel stays open.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unittest
import urllib.request
from concurrent import futures

WORKDIR = tempfile.mkdtemp(prefix="weir-interop-")
BOOTSTRAP = os.path.join(WORKDIR, "bootstrap.json")
os.environ["GRPC_XDS_BOOTSTRAP"] = BOOTSTRAP

import grpc  # noqa: E402  (the bootstrap variable must be set first)

METHOD = "/weir.interop.Echo/Call"
TARGET = "xds:///echo.interop.test:7070"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_backend(name):
    """A gRPC server answering every call with its name."""

    def call(request, context):
        return name.encode()

    handler = grpc.method_handlers_generic_handler(
        "weir.interop.Echo", {"Call": grpc.unary_unary_rpc_method_handler(call)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


SERVICE = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [echo.interop.test]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 7070, name: grpc, protocol: GRPC}}]
  workloadSelector: {{labels: {{app: echo}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: echo-v1, namespace: default}}
spec: {{address: 127.0.0.1, ports: {{grpc: {v1}}}, labels: {{app: echo, version: v1}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: echo-v2, namespace: default}}
spec: {{address: 127.0.0.1, ports: {{grpc: {v2}}}, labels: {{app: echo, version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo, namespace: default}}
spec:
  host: echo.interop.test
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
"""

WEIGHTED = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo.interop.test]
  http:
  - route:
    - {destination: {host: echo.interop.test, subset: v1}, weight: 80}
    - {destination: {host: echo.interop.test, subset: v2}, weight: 20}
"""

BY_HEADER = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo.interop.test]
  http:
  - match: [{headers: {x-user: {exact: jason}}}]
    route: [{destination: {host: echo.interop.test, subset: v2}}]
  - route: [{destination: {host: echo.interop.test, subset: v1}}]
"""

ABORT = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo.interop.test]
  http:
  - match: [{headers: {x-fault: {exact: abort}}}]
    fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
    route: [{destination: {host: echo.interop.test, subset: v1}}]
  - route: [{destination: {host: echo.interop.test, subset: v1}}]
"""


class ProxylessGrpc(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.backends = {name: start_backend(name) for name in ("v1", "v2")}
        cls.config = os.path.join(WORKDIR, "config")
        os.makedirs(cls.config)
        with open(os.path.join(cls.config, "echo.yaml"), "w") as f:
            f.write(SERVICE.format(v1=cls.backends["v1"][1], v2=cls.backends["v2"][1]))
        ads, monitoring = free_port(), free_port()
        cls.monitoring = monitoring
        with open(BOOTSTRAP, "w") as f:
            json.dump(
                {
                    "xds_servers": [
                        {
                            "server_uri": f"127.0.0.1:{ads}",
                            "channel_creds": [{"type": "insecure"}],
                            "server_features": ["xds_v3"],
                        }
                    ],
                    "node": {
                        "id": "sidecar~127.0.0.1~client.default~default.svc.cluster.local",
                        "metadata": {"GENERATOR": "grpc", "NAMESPACE": "default"},
                        "locality": {},
                    },
                },
                f,
            )
        cls.weir = subprocess.Popen(
            [
                os.environ.get("WEIR_BIN", "weir"),
                "discovery",
                "--config", cls.config,
                "--listen", f"127.0.0.1:{ads}",
                "--monitoring", f"127.0.0.1:{monitoring}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        cls.log = []
        ready = threading.Event()

        def read_output():
            for line in cls.weir.stdout:
                cls.log.append(line)
                if "serving ADS" in line:
                    ready.set()

        threading.Thread(target=read_output, daemon=True).start()
        if not ready.wait(30):
            cls.weir.kill()
            raise RuntimeError("weir discovery did not start:\n" + "".join(cls.log))
        cls.channel = grpc.insecure_channel(TARGET)
        cls.call = cls.channel.unary_unary(METHOD)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.weir.terminate()
        try:
            cls.weir.wait(10)
        except subprocess.TimeoutExpired:
            cls.weir.kill()
        for server, _ in cls.backends.values():
            server.stop(None)
        if sys.exc_info()[0] is not None:
            print("".join(cls.log), file=sys.stderr)
        shutil.rmtree(WORKDIR, ignore_errors=True)

    def rpc(self, metadata=()):
        return self.call(b"ping", timeout=5, metadata=metadata).decode()

    def write_routes(self, text):
        path = os.path.join(self.config, "routes.yaml")
        with open(path + ".tmp", "w") as f:
            f.write(textwrap.dedent(text))
        os.replace(path + ".tmp", path)

    def eventually(self, check, what, seconds=15):
        deadline = time.monotonic() + seconds
        last = None
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except grpc.RpcError as e:
                last = e
            time.sleep(0.1)
        self.fail(f"{what} not seen within {seconds}s (last error: {last})\n" + "".join(self.log[-20:]))

    def test_1_plain_routing_reaches_both_workload_entries(self):
        seen = {self.rpc() for _ in range(50)}
        self.assertEqual(seen, {"v1", "v2"}, "round robin over the ServiceEntry's two WorkloadEntries")

    def test_2_weighted_split_80_20(self):
        self.write_routes(WEIGHTED)
        # Applied without restarting the client: wait until the old even split is gone.
        # At least 75 of 100 on v1: under the previous even split that has probability 3e-7.
        self.eventually(lambda: sum(self.rpc() == "v1" for _ in range(100)) >= 75, "the 80/20 split")
        n = 2000
        v1 = sum(self.rpc() == "v1" for _ in range(n))
        share = v1 / n
        # Binomial(2000, 0.8) has a standard deviation of 0.9%; 0.74..0.86 is more than 6 sigma.
        self.assertGreater(share, 0.74, f"v1 got {share:.3f} of {n} calls")
        self.assertLess(share, 0.86, f"v1 got {share:.3f} of {n} calls")

    def test_3_header_based_routing(self):
        self.write_routes(BY_HEADER)
        # Twenty in a row each way: under the previous 80/20 split this happens by chance with
        # probability 0.2**20, so it only passes once the new routes are in force.
        self.eventually(
            lambda: all(self.rpc([("x-user", "jason")]) == "v2" for _ in range(20))
            and all(self.rpc() == "v1" for _ in range(20)),
            "header routing",
        )
        self.assertTrue(all(self.rpc([("x-user", "jason")]) == "v2" for _ in range(50)))
        self.assertTrue(all(self.rpc([("x-user", "someone")]) == "v1" for _ in range(50)))

    def test_4_fault_injection_abort(self):
        self.write_routes(ABORT)

        def aborted():
            try:
                self.rpc([("x-fault", "abort")])
            except grpc.RpcError as e:
                return e.code() == grpc.StatusCode.UNAVAILABLE
            return False

        self.eventually(aborted, "the injected abort")
        for _ in range(20):
            with self.assertRaises(grpc.RpcError) as caught:
                self.rpc([("x-fault", "abort")])
            self.assertEqual(caught.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(self.rpc(), "v1", "requests without the header are not aborted")

    def test_5_removing_the_virtual_service_restores_default_routing(self):
        os.remove(os.path.join(self.config, "routes.yaml"))
        self.eventually(lambda: {self.rpc() for _ in range(40)} == {"v1", "v2"}, "default routing again")

    def test_6_metrics_count_pushes_and_no_rejections(self):
        base = f"http://127.0.0.1:{self.monitoring}"
        metrics = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        pushes = [l for l in metrics.splitlines() if l.startswith("pilot_xds_pushes ")]
        self.assertTrue(pushes and int(pushes[0].split()[1]) > 0, metrics)
        self.assertIn("pilot_total_xds_rejects 0", metrics, "the gRPC client accepted everything")
        rejections = json.loads(urllib.request.urlopen(base + "/debug/rejections", timeout=5).read())
        self.assertEqual(rejections, [])


if __name__ == "__main__":
    unittest.main()

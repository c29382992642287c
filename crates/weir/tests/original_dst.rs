//! A sidecar as Istio runs one: `weir proxy` against `weir discovery`, inside a network namespace
//! where iptables redirects the application's outbound TCP to the proxy's `virtualOutbound`
//! port (15001). The proxy reads each connection's original destination (`SO_ORIGINAL_DST`) and
//! hands it to the listener that owns it: the HTTP listener of the port for a service address,
//! the TCP listener of a TCP service's address. curl is the application.
//!
//! Needs root, iproute2 and iptables (`scripts/test-deps.sh`, run by `make test`, installs them).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

mod support;

use std::time::Duration;

use support::{Netns, Proc, address_in, eventually, folder};

const NODE: &str = "sidecar~10.10.0.99~app.default~default.svc.cluster.local";

fn services(backend: std::net::SocketAddr) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: hello}}
spec:
  hosts: [hello.test]
  addresses: [10.10.0.1]
  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {port}}}]
  resolution: STATIC
  endpoints: [{{address: {ip}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: db}}
spec:
  hosts: [db.test]
  addresses: [10.10.0.2]
  ports: [{{number: 5432, name: tcp, protocol: TCP, targetPort: {port}}}]
  resolution: STATIC
  endpoints: [{{address: {ip}}}]
",
        port = backend.port(),
        ip = backend.ip()
    )
}

/// The application's namespace: iptables capture of the service range to 15001, an echo backend
/// (`hello-v1`) behind two ServiceEntries, `weir discovery` and the sidecar `weir proxy`, ready.
struct Sidecar {
    // Dropped in this order: the processes, then their namespace.
    proxy: Proc,
    _discovery: Proc,
    _echo: Proc,
    ns: Netns,
}

impl Sidecar {
    fn start(name: &str) -> Sidecar {
        let ns = Netns::new(name);
        // The pod's address and a route for the service range, so that connect() leaves the
        // application and meets the iptables rule (as in a pod, whose default route covers it).
        ns.exec(&[
            "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
        ]);
        ns.exec(&["ip", "addr", "add", "10.10.0.99/16", "dev", "eth0"]);
        ns.exec(&["ip", "link", "set", "eth1", "up"]);
        ns.exec(&["ip", "link", "set", "eth0", "up"]);
        // Istio's outbound capture, reduced to the service range: everything else (the proxy's
        // own connections to 127.0.0.1 among it) goes out untouched.
        ns.exec(&[
            "iptables",
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            "10.10.0.0/16",
            "-j",
            "REDIRECT",
            "--to-ports",
            "15001",
        ]);

        let echo = Proc::weir_in(
            &ns,
            "echo",
            &["echo", "--listen", "127.0.0.1:0", "--name", "hello-v1"],
        );
        let backend = address_in(
            &echo.wait_line("listening on", Duration::from_secs(10)),
            "listening on ",
        );
        let dir = folder(&format!("original-dst-{name}"));
        std::fs::write(dir.join("services.yaml"), services(backend)).unwrap();
        let discovery = Proc::weir_in(
            &ns,
            "discovery",
            &[
                "discovery",
                "--config",
                dir.to_str().unwrap(),
                "--listen",
                "127.0.0.1:15010",
                "--monitoring",
                "127.0.0.1:15014",
            ],
        );
        discovery.wait_line("serving ADS on", Duration::from_secs(20));
        // As configured, not --local: virtualOutbound binds 0.0.0.0:15001 and the service
        // listeners (`bind_to_port: false`) take only what it hands them.
        let proxy = Proc::weir_in(
            &ns,
            "proxy",
            &[
                "proxy",
                "--discovery",
                "127.0.0.1:15010",
                "--node",
                NODE,
                "--admin",
                "127.0.0.1:15000",
            ],
        );
        proxy.wait_line(
            "listening listener=virtualOutbound address=0.0.0.0:15001",
            Duration::from_secs(20),
        );
        let sidecar = Sidecar {
            proxy,
            _discovery: discovery,
            _echo: echo,
            ns,
        };
        eventually("the proxy is ready", Duration::from_secs(20), &mut || {
            sidecar.curl(&[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "http://127.0.0.1:15000/ready",
            ]) == "200"
        });
        sidecar
    }

    /// `curl -s --max-time 5 ARGS` run by the application: its output (panics if curl fails).
    fn curl(&self, args: &[&str]) -> String {
        self.ns.exec(&curl_command(args))
    }

    /// `curl -s --max-time 5 ARGS` run by the application, however it ends: its exit code.
    fn curl_status(&self, args: &[&str]) -> Option<i32> {
        self.ns.status(&curl_command(args))
    }
}

/// `curl -s --max-time 5 ARGS`.
fn curl_command<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["curl", "-s", "--max-time", "5"];
    all.extend_from_slice(args);
    all
}

#[test]
fn redirected_connections_reach_the_listener_of_their_original_destination() {
    let sidecar = Sidecar::start("odst");
    let curl = |args: &[&str]| sidecar.curl(args);

    // HTTP to the service address (as the cluster DNS would answer): `0.0.0.0_80` routes it.
    let body = curl(&["--resolve", "hello.test:80:10.10.0.1", "http://hello.test/greet"]);
    assert!(body.contains("\"server\": \"hello-v1\""), "{body}");
    assert!(body.contains("\"uri\": \"/greet\""), "{body}");
    // TCP to the TCP service's address: `10.10.0.2_5432` proxies the bytes as they are.
    let body = curl(&["--resolve", "db.test:5432:10.10.0.2", "http://db.test:5432/raw"]);
    assert!(body.contains("\"server\": \"hello-v1\""), "{body}");
    assert!(body.contains("\"host\": \"db.test:5432\""), "{body}");

    let stats = curl(&["http://127.0.0.1:15000/stats/prometheus"]);
    let http = stats
        .lines()
        .find(|l| l.starts_with("istio_requests_total{") && l.contains("destination_service=\"hello.test\""))
        .unwrap_or_else(|| panic!("no request metric for hello.test:\n{stats}"));
    assert!(http.contains("response_code=\"200\""), "{http}");
    assert!(
        stats
            .lines()
            .any(|l| l.starts_with("istio_tcp_connections_opened_total{")
                && l.contains("destination_service=\"db.test\"")),
        "no TCP metric for db.test:\n{stats}"
    );
}

#[test]
fn a_passthrough_back_to_the_wildcard_listener_is_refused_not_looped() {
    let sidecar = Sidecar::start("odst-loop");
    // The pod's own address on the inbound capture port: iptables redirects the connection to
    // virtualOutbound (0.0.0.0:15001), no listener owns 10.10.0.99:15006 (virtualInbound takes
    // only redirected inbound traffic), and the passthrough cluster would connect to it, which
    // iptables would redirect back to the proxy, forever. 10.10.0.99 is no address the proxy
    // listens on: it is an address of its host, on the port of its wildcard listener
    // virtualInbound (0.0.0.0:15006). (15001 itself Istio sends to a blackhole chain.)
    let code = sidecar.curl_status(&["http://10.10.0.99:15006/again"]);
    // Closed without a reply: curl sees the end (52), or a reset (56) when the proxy closed
    // with the request unread.
    assert!(
        matches!(code, Some(52 | 56)),
        "curl exited {code:?}: not closed without a reply"
    );
    sidecar.proxy.wait_line(
        "refusing a passthrough to this proxy's own address (it would loop) target=10.10.0.99:15006",
        Duration::from_secs(5),
    );
    // Nothing else is disturbed: the service behind the same listener still answers.
    let body = sidecar.curl(&["--resolve", "hello.test:80:10.10.0.1", "http://hello.test/after"]);
    assert!(body.contains("\"server\": \"hello-v1\""), "{body}");
}

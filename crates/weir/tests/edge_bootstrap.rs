//! What Envoy's edge best-practices bootstrap asks of a proxy, each part with a real `weir proxy
//! --bootstrap`, real backends and clients: path normalisation, header-name checks, request
//! and per-route idle timeouts, buffer limits, connection limits and the overload manager —
//! then the whole file as Envoy publishes it (`examples/edge/envoy.yaml`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{Client, Proc, address_in, echo, free_port, proxy_on, socket_address, static_bootstrap};

/// A listener address for a test proxy.
fn listener() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// The admin address `weir proxy` printed.
fn admin_of(proxy: &Proc) -> SocketAddr {
    address_in(&proxy.wait_line("admin on", Duration::from_secs(5)), "admin on ")
}

/// The value of the counter `name` on the admin's `/stats`.
fn counter(client: &Client, admin: SocketAddr, name: &str) -> u64 {
    let stats = client.direct(admin, "GET", "/stats", &[], "").body;
    stats
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": ")?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {stats}"))
}

#[test]
fn paths_are_normalised_before_routing_as_the_connection_manager_says() {
    let (_e, backend) = echo("paths");
    let private = "              - match: {prefix: /private}
                direct_response: {status: 403, body: {inline_string: private}}
";
    let strict = listener();
    let manager = "          normalize_path: true
          merge_slashes: true
          path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT
";
    let proxy = proxy_on(
        "paths-strict",
        strict,
        &static_bootstrap("strict", &socket_address(strict), backend, manager, private),
    );
    let admin = admin_of(&proxy);
    let client = Client::new();
    let upstream_uri = |listener: SocketAddr, path: &str| {
        let r = client.direct(listener, "GET", path, &[], "");
        assert_eq!(r.status, 200, "{path}: {r:?}");
        r.json()["uri"].as_str().unwrap().to_string()
    };
    // Dot segments resolved, slashes merged, unreserved characters decoded; the query as sent.
    assert_eq!(
        upstream_uri(strict, "/a/./b/../c//d/%7e%41?q=/../%41"),
        "/a/c/d/~A?q=/../%41"
    );
    assert_eq!(
        upstream_uri(strict, "/a\\b"),
        "/a/b",
        "a backslash is a separator"
    );
    // A route cannot be dodged with dot segments.
    for sneaky in [
        "/public/../private/keys",
        "/public/%2e%2e/private/keys",
        "//private/keys",
    ] {
        let r = client.direct(strict, "GET", sneaky, &[], "");
        assert_eq!((r.status, r.body.as_str()), (403, "private"), "{sneaky}");
    }
    // Escaped slashes: the client is sent to the decoded (and normalised) path…
    let r = client.direct(strict, "GET", "/a%2Fb%5C..%2fc?x=%2F", &[], "");
    assert_eq!(r.status, 307, "{r:?}");
    assert_eq!(r.header("location"), Some("/a/c?x=%2F"));
    // …unless it speaks gRPC, which does not follow redirects.
    let grpc = [("content-type", "application/grpc")];
    assert_eq!(
        client.direct(strict, "POST", "/svc%2FMethod", &grpc, "").status,
        400
    );
    // A NUL, even escaped, fails the path.
    assert_eq!(client.direct(strict, "GET", "/a/%00/b", &[], "").status, 400);
    assert_eq!(
        counter(
            &client,
            admin,
            "http.downstream_rq_redirected_with_normalized_path"
        ),
        1
    );
    assert_eq!(
        counter(&client, admin, "http.downstream_rq_failed_path_normalization"),
        2
    );

    // REJECT_REQUEST refuses escaped slashes; UNESCAPE_AND_FORWARD passes them on decoded;
    // by default (nothing set) paths go upstream as they came.
    let reject = listener();
    let _reject = proxy_on(
        "paths-reject",
        reject,
        &static_bootstrap(
            "reject",
            &socket_address(reject),
            backend,
            "          path_with_escaped_slashes_action: REJECT_REQUEST\n",
            "",
        ),
    );
    assert_eq!(client.direct(reject, "GET", "/a%2fb", &[], "").status, 400);
    assert_eq!(
        upstream_uri(reject, "/a/../b"),
        "/a/../b",
        "no normalisation asked for"
    );
    let forward = listener();
    let _forward = proxy_on(
        "paths-forward",
        forward,
        &static_bootstrap(
            "forward",
            &socket_address(forward),
            backend,
            "          path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD\n",
            "",
        ),
    );
    assert_eq!(upstream_uri(forward, "/a%2fb%5Cc"), "/a/b\\c");
    let plain = listener();
    let _plain = proxy_on(
        "paths-plain",
        plain,
        &static_bootstrap("plain", &socket_address(plain), backend, "", private),
    );
    assert_eq!(
        upstream_uri(plain, "/public/../private//x%2F"),
        "/public/../private//x%2F"
    );
}

/// curl's exit code, its output (`-i`: status line and headers, then the body) and its error
/// output, for `curl -sS --max-time 5 ARGS`.
fn curl(args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "-i", "--max-time", "5"])
        .args(args)
        .output()
        .expect("curl runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn header_names_with_underscores_are_refused_or_dropped_as_the_connection_manager_says() {
    let (_e, backend) = echo("underscores");
    let with_action = |action: &str| {
        format!("          common_http_protocol_options: {{headers_with_underscores_action: {action}}}\n")
    };
    let reject = listener();
    let rejecting = proxy_on(
        "underscores-reject",
        reject,
        &static_bootstrap(
            "reject",
            &socket_address(reject),
            backend,
            &with_action("REJECT_REQUEST"),
            "",
        ),
    );
    let client = Client::new();
    let url = |at: SocketAddr| format!("http://{at}/");
    // HTTP/1.1: 400, and the connection is closed; without the header the request passes.
    let (code, out, err) = curl(&["-H", "x_user: admin", &url(reject)]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.to_ascii_lowercase().contains("connection: close"), "{out}");
    // A request with a body is served by hyper's server rather than Weir's: the same answer.
    let (_, out, _) = curl(&["-H", "x_user: admin", "--data", "body", &url(reject)]);
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert_eq!(
        client
            .direct(reject, "GET", "/", &[("x-user", "admin")], "")
            .status,
        200
    );
    // HTTP/2: the stream is reset, as Envoy's codec resets it.
    let (code, out, err) = curl(&["--http2-prior-knowledge", "-H", "x_user: admin", &url(reject)]);
    assert_eq!(code, Some(92), "curl: HTTP/2 stream error expected; {out} {err}");
    assert!(err.contains("INTERNAL_ERROR"), "{err}");
    let (code, out, _) = curl(&["--http2-prior-knowledge", &url(reject)]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("HTTP/2 200"), "{out}");
    let admin = admin_of(&rejecting);
    assert_eq!(
        counter(
            &client,
            admin,
            "http1.requests_rejected_with_underscores_in_headers"
        ),
        2
    );
    assert_eq!(
        counter(
            &client,
            admin,
            "http2.requests_rejected_with_underscores_in_headers"
        ),
        1
    );

    // DROP_HEADER: the request goes on without them, each value counted.
    let drop = listener();
    let dropping = proxy_on(
        "underscores-drop",
        drop,
        &static_bootstrap(
            "drop",
            &socket_address(drop),
            backend,
            &with_action("DROP_HEADER"),
            "",
        ),
    );
    let r = client.direct(
        drop,
        "GET",
        "/",
        &[("x_user", "admin"), ("x_user", "root"), ("x-kept", "yes")],
        "",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let seen = &r.json()["headers"];
    assert!(seen["x_user"].is_null(), "{seen}");
    assert_eq!(seen["x-kept"], "yes");
    let (code, out, _) = curl(&["--http2-prior-knowledge", "-H", "x_user: admin", &url(drop)]);
    assert_eq!(code, Some(0));
    assert!(!out.contains("x_user"), "{out}");
    let admin = admin_of(&dropping);
    assert_eq!(
        counter(&client, admin, "http1.dropped_headers_with_underscores"),
        2
    );
    assert_eq!(
        counter(&client, admin, "http2.dropped_headers_with_underscores"),
        1
    );

    // Envoy's default, ALLOW: they pass.
    let allow = listener();
    let _allow = proxy_on(
        "underscores-allow",
        allow,
        &static_bootstrap("allow", &socket_address(allow), backend, "", ""),
    );
    let r = client.direct(allow, "GET", "/", &[("x_user", "admin")], "");
    assert_eq!(r.json()["headers"]["x_user"], "admin");
}

/// Sends `head` and `body_part` on a new connection to `at`, then waits: the status line of the
/// answer and how long it took, or `None` when none came within `patience`.
fn partial_request(
    at: SocketAddr,
    head: &str,
    body_part: &str,
    patience: Duration,
) -> Option<(String, Duration)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(at).unwrap();
    let sent = std::time::Instant::now();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body_part.as_bytes()).unwrap();
    stream.set_read_timeout(Some(patience)).unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.lines().next().filter(|l| l.starts_with("HTTP/"))?;
    Some((status.to_string(), sent.elapsed()))
}

#[test]
fn a_request_must_arrive_whole_within_the_request_timeout_and_routes_set_their_idle_timeout() {
    let (_e, backend) = echo("timeouts");
    let at = listener();
    let routes = "              - match: {prefix: /retried}
                route: {cluster: backend, retry_policy: {retry_on: 5xx}}
              - match: {prefix: /route-idle}
                route: {cluster: backend, timeout: 0s, idle_timeout: 0.3s}
              - match: {prefix: /no-idle}
                route: {cluster: backend, timeout: 0s, idle_timeout: 0s}
";
    let manager = "          request_timeout: 0.5s\n          stream_idle_timeout: 1s\n";
    let proxy = proxy_on(
        "request-timeout",
        at,
        &static_bootstrap("timeouts", &socket_address(at), backend, manager, routes),
    );
    let head = |path: &str| format!("POST {path} HTTP/1.1\r\nhost: svc\r\ncontent-length: 10\r\n\r\n");
    // A body still arriving at the deadline: 408, whether it streams up (no retry policy) or
    // is being kept for a retry.
    for path in ["/streamed", "/retried"] {
        let (status, took) = partial_request(at, &head(path), "12345", Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{path}: no answer"));
        assert!(status.starts_with("HTTP/1.1 408"), "{path}: {status}");
        assert!(took >= Duration::from_millis(450), "{path}: {took:?}");
    }
    let client = Client::new();
    let admin = admin_of(&proxy);
    // Counted as the request timeout, not the stream idle timeout (1 s).
    assert_eq!(counter(&client, admin, "http.downstream_rq_timeout"), 2);
    assert_eq!(counter(&client, admin, "http.downstream_rq_idle_timeout"), 0);
    // A whole request is not bound by it, however long the answer takes (that is the route's
    // timeout and the stream idle timeout).
    let r = client.direct(at, "POST", "/whole", &[("x-echo-delay-ms", "800")], "0123456789");
    assert_eq!(r.status, 200, "{r:?}");

    // The route's idle timeout replaces the connection manager's stream idle timeout (1 s)…
    let r = client.direct(at, "GET", "/route-idle", &[("x-echo-delay-ms", "800")], "");
    assert_eq!((r.status, r.body.as_str()), (408, "stream timeout"), "{r:?}");
    // …and 0s turns it off for the route.
    let r = client.direct(at, "GET", "/no-idle", &[("x-echo-delay-ms", "1300")], "");
    assert_eq!(r.status, 200, "{r:?}");
    // Elsewhere the connection manager's applies.
    let r = client.direct(at, "GET", "/other", &[("x-echo-delay-ms", "1300")], "");
    assert_eq!(r.status, 408, "{r:?}");
}

/// A TCP server that sends back whatever it reads, on each connection.
fn tcp_echo() -> SocketAddr {
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = server.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in server.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = conn.try_clone().unwrap();
                let mut writer = conn;
                let _ = std::io::copy(&mut reader, &mut writer);
            });
        }
    });
    address
}

#[test]
fn tcp_proxying_with_small_connection_buffer_limits_carries_every_byte_in_order() {
    use std::io::{Read, Write};
    let backend = tcp_echo();
    let at = listener();
    let text = format!(
        r#"static_resources:
  listeners:
  - name: tcp
    address: {{socket_address: {{{listen}}}}}
    per_connection_buffer_limit_bytes: 1024
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: echo
  clusters:
  - name: echo
    type: STATIC
    per_connection_buffer_limit_bytes: 512
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{{backend}}}}}}}
"#,
        listen = socket_address(at),
        backend = socket_address(backend),
    );
    let _p = proxy_on("tcp-buffers", at, &text);
    // 256 KiB each way through 1 KiB and 512-byte reads, intact and in order.
    let sent: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    let mut conn = std::net::TcpStream::connect(at).unwrap();
    let mut reader = conn.try_clone().unwrap();
    let writing = {
        let sent = sent.clone();
        std::thread::spawn(move || {
            conn.write_all(&sent).unwrap();
            conn.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    reader.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut received = Vec::new();
    reader.read_to_end(&mut received).unwrap();
    writing.join().unwrap();
    assert_eq!(received.len(), sent.len());
    assert!(received == sent, "the bytes came back changed");
}

/// A self-signed certificate for `names` (its own CA for curl), written to `dir` as
/// `<file>.pem` and `<file>-key.pem`.
fn self_signed(
    dir: &std::path::Path,
    file: &str,
    names: &[&str],
) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (pem, key_pem) = (
        dir.join(format!("{file}.pem")),
        dir.join(format!("{file}-key.pem")),
    );
    std::fs::write(&pem, cert.pem()).unwrap();
    std::fs::write(&key_pem, key.serialize_pem()).unwrap();
    (pem, key_pem)
}

#[test]
fn the_edge_example_runs_as_written() {
    let (_e, backend) = echo("shop");
    let dir = support::folder("edge-example-certs");
    let (cert, key) = self_signed(&dir, "shop", &["shop.example.test", "www.shop.example.test"]);
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/edge/envoy.yaml"
    ))
    .unwrap();
    let at = listener();
    // Only where it listens, where its backend is and its certificate's files change.
    let replace = [
        ("port_value: 8443", format!("port_value: {}", at.port())),
        ("port_value: 8080", format!("port_value: {}", backend.port())),
        ("certs/shop-key.pem", key.display().to_string()),
        ("certs/shop.pem", cert.display().to_string()),
    ];
    let mut text = example.clone();
    for (from, to) in &replace {
        assert_eq!(text.matches(from).count(), 1, "{from} once in the example");
        text = text.replace(from, to);
    }
    let proxy = proxy_on("edge-example", at, &text);
    let host = "shop.example.test";
    let url = |path: &str| format!("https://{host}:{}{path}", at.port());
    let resolve = format!("{host}:{}:127.0.0.1", at.port());
    let cacert = cert.display().to_string();
    let https = |extra: &[&str], path: &str| {
        let mut args = vec!["--cacert", &cacert, "--resolve", &resolve];
        args.extend_from_slice(extra);
        let url = url(path);
        args.push(&url);
        curl(&args)
    };
    // Both protocols of the one ALPN entry "h2,http/1.1" are offered.
    let (code, out, err) = https(&["--http2"], "/");
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("HTTP/2 200"), "{out}");
    let (_, out, _) = https(&["--http1.1"], "/");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    // The client's address comes from the connection (use_remote_address).
    assert!(out.contains(r#""x-forwarded-for": "127.0.0.1""#), "{out}");
    // Paths normalised and merged; escaped slashes redirected; underscores refused.
    let (_, out, _) = https(&["--path-as-is"], "/a/./b/../c//d");
    assert!(out.contains(r#"/a/c/d""#), "{out}");
    let (_, out, _) = https(&[], "/a%2Fb");
    assert!(out.starts_with("HTTP/2 307"), "{out}");
    assert!(out.contains("location: /a/b"), "{out}");
    let (_, out, _) = https(&["--http1.1", "-H", "x_user: root"], "/");
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    // A server name no chain serves: the connection is closed, no certificate is offered.
    let other = format!("other.example.test:{}:127.0.0.1", at.port());
    let (code, _, _) = curl(&[
        "--cacert",
        &cacert,
        "--resolve",
        &other,
        &format!("https://other.example.test:{}/", at.port()),
    ]);
    assert_eq!(code, Some(35), "TLS refused");
    // The overload manager measures, and sheds nothing at this pressure.
    let client = Client::new();
    let admin = admin_of(&proxy);
    let pressure = counter(
        &client,
        admin,
        "overload.envoy.resource_monitors.fixed_heap.pressure",
    );
    assert!(pressure < 5, "{pressure}% of 2 GiB");
    assert_eq!(
        counter(
            &client,
            admin,
            "overload.envoy.overload_actions.stop_accepting_requests.active"
        ),
        0
    );
}

/// A listener `name` on `at` proxying TCP to `backend`, with `extra` lines at listener level.
fn tcp_listener(name: &str, at: SocketAddr, extra: &str) -> String {
    format!(
        r#"  - name: {name}
    address: {{socket_address: {{{listen}}}}}
{extra}    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: {name}
          cluster: backend
"#,
        listen = socket_address(at)
    )
}

/// A static cluster `backend` with one endpoint.
fn backend_cluster(backend: SocketAddr) -> String {
    format!(
        "  clusters:\n  - name: backend\n    type: STATIC\n    load_assignment:\n      cluster_name: backend\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{address: {{socket_address: {{{}}}}}}}\n",
        socket_address(backend)
    )
}

/// A connection through a TCP proxy: `Some` when it carries bytes both ways, `None` when the
/// proxy closed it.
fn tcp_through(at: SocketAddr) -> Option<std::net::TcpStream> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(at).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(b"ping").ok()?;
    let mut back = [0u8; 4];
    conn.read_exact(&mut back).ok()?;
    (&back == b"ping").then_some(conn)
}

#[test]
fn connections_over_a_listeners_or_the_global_limit_are_closed_at_once() {
    let backend = tcp_echo();
    let (limited, exempt) = (listener(), listener());
    let text = format!(
        r#"static_resources:
  listeners:
{}{}{}overload_manager:
  resource_monitors:
  - name: envoy.resource_monitors.global_downstream_max_connections
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig
      max_active_downstream_connections: 3
layered_runtime:
  layers:
  - name: limits
    static_layer:
      envoy.resource_limits.listener.limited.connection_limit: 2
"#,
        tcp_listener("limited", limited, ""),
        tcp_listener("exempt", exempt, "    ignore_global_conn_limit: true\n"),
        backend_cluster(backend),
    );
    let proxy = proxy_on("connection-limits", limited, &text);
    let client = Client::new();
    let admin = admin_of(&proxy);
    // The probe that saw the listener accept holds a place from when the proxy accepts it
    // until the proxy sees it close.
    support::eventually(
        "the readiness probe's connection is accepted and closed",
        Duration::from_secs(5),
        &mut || {
            counter(&client, admin, "listener.downstream_cx_total") == 1
                && counter(&client, admin, "listener.downstream_cx_active") == 0
        },
    );
    let a1 = tcp_through(limited).expect("first on the limited listener");
    let _a2 = tcp_through(limited).expect("second on the limited listener");
    assert!(tcp_through(limited).is_none(), "the listener's limit is 2");
    assert_eq!(counter(&client, admin, "listener.downstream_cx_overflow"), 1);
    let _b1 = tcp_through(exempt).expect("third connection in all");
    assert!(tcp_through(limited).is_none(), "the global limit is 3");
    assert_eq!(
        counter(&client, admin, "listener.downstream_global_cx_overflow"),
        1
    );
    // A listener that ignores the global limit still takes connections, which count.
    let b2 = tcp_through(exempt).expect("exempt from the global limit");
    drop(a1);
    support::eventually(
        "a closed connection gives its place back",
        Duration::from_secs(5),
        &mut || {
            counter(&client, admin, "listener.downstream_global_cx_overflow") == 2
                || tcp_through(limited).is_none()
        },
    );
    drop(b2);
    support::eventually(
        "places come back as connections close",
        Duration::from_secs(5),
        &mut || tcp_through(limited).is_some(),
    );
}

/// Writes a pressure for an injected resource monitor.
fn inject(file: &std::path::Path, pressure: &str) {
    std::fs::write(file, pressure).unwrap();
}

#[test]
fn overload_actions_follow_the_pressure_of_their_monitors() {
    let (_e, backend) = echo("overload");
    let dir = support::folder("overload-pressure");
    let files = ["requests", "reject", "accept"].map(|n| dir.join(n));
    for f in &files {
        inject(f, "0");
    }
    let monitor = |name: &str, file: &std::path::Path| {
        format!(
            "  - name: {name}\n    typed_config:\n      \"@type\": type.googleapis.com/envoy.extensions.resource_monitors.injected_resource.v3.InjectedResourceConfig\n      filename: {}\n",
            file.display()
        )
    };
    let action = |name: &str, monitor: &str| {
        format!(
            "  - name: envoy.overload_actions.{name}\n    triggers:\n    - name: {monitor}\n      threshold: {{value: 0.9}}\n"
        )
    };
    let (shed, bypass) = (listener(), listener());
    let http = static_bootstrap(
        "shed",
        &socket_address(shed),
        backend,
        "          append_local_overload: true\n",
        "",
    );
    let exempt = static_bootstrap("bypass", &socket_address(bypass), backend, "", "");
    // Two listeners: the second bypasses the overload manager.
    let exempt_listener =
        &exempt[exempt.find("  - name: bypass").unwrap()..exempt.find("  clusters:").unwrap()].replacen(
            "    filter_chains:",
            "    bypass_overload_manager: true\n    filter_chains:",
            1,
        );
    let text = format!(
        "{}overload_manager:\n  refresh_interval: 0.05s\n  resource_monitors:\n{}{}{}  actions:\n{}{}{}",
        http.replacen("  clusters:", &format!("{exempt_listener}  clusters:"), 1),
        monitor("requests", &files[0]),
        monitor("reject", &files[1]),
        monitor("accept", &files[2]),
        action("stop_accepting_requests", "requests"),
        action("reject_incoming_connections", "reject"),
        action("stop_accepting_connections", "accept"),
    );
    let proxy = proxy_on("overload", shed, &text);
    let client = Client::new();
    let admin = admin_of(&proxy);
    assert_eq!(client.direct(shed, "GET", "/", &[], "").status, 200);

    // stop_accepting_requests: 503 from the proxy itself, but not on the bypassing listener.
    inject(&files[0], "0.95");
    support::eventually("requests refused", Duration::from_secs(5), &mut || {
        client.direct(shed, "GET", "/", &[], "").status == 503
    });
    let r = client.direct(shed, "GET", "/", &[], "");
    assert_eq!((r.status, r.body.as_str()), (503, "envoy overloaded"));
    assert_eq!(r.header("x-envoy-local-overloaded"), Some("true"));
    assert_eq!(client.direct(bypass, "GET", "/", &[], "").status, 200);
    assert_eq!(counter(&client, admin, "overload.requests.pressure"), 95);
    assert_eq!(
        counter(
            &client,
            admin,
            "overload.envoy.overload_actions.stop_accepting_requests.active"
        ),
        1
    );
    assert!(counter(&client, admin, "http.downstream_rq_overload_close") >= 2);
    inject(&files[0], "0");
    support::eventually("requests served again", Duration::from_secs(5), &mut || {
        client.direct(shed, "GET", "/", &[], "").status == 200
    });

    // reject_incoming_connections: closed as they are accepted, nothing answered.
    inject(&files[1], "1");
    support::eventually("connections rejected", Duration::from_secs(5), &mut || {
        curl(&[&format!("http://{shed}/")]).0 != Some(0)
    });
    assert_eq!(curl(&[&format!("http://{bypass}/")]).0, Some(0));
    assert!(counter(&client, admin, "listener.downstream_cx_overload_reject") >= 1);
    inject(&files[1], "0");
    support::eventually("connections taken again", Duration::from_secs(5), &mut || {
        curl(&[&format!("http://{shed}/")]).0 == Some(0)
    });

    // stop_accepting_connections: what arrives waits in the kernel's queue until the pressure
    // falls, then is served.
    inject(&files[2], "1");
    support::eventually("accepting stopped", Duration::from_secs(5), &mut || {
        counter(
            &client,
            admin,
            "overload.envoy.overload_actions.stop_accepting_connections.active",
        ) == 1
    });
    // The accept loop may have been waiting in accept() when the action turned on: one
    // connection may still be taken; the next waits.
    let _ = curl(&["--max-time", "1", &format!("http://{shed}/")]);
    let (done, waited) = std::sync::mpsc::channel();
    let url = format!("http://{shed}/");
    std::thread::spawn(move || {
        let _ = done.send(curl(&["--max-time", "20", &url]));
    });
    assert!(
        waited.recv_timeout(Duration::from_millis(800)).is_err(),
        "answered while accepting had stopped"
    );
    inject(&files[2], "0");
    let (code, out, err) = waited
        .recv_timeout(Duration::from_secs(10))
        .expect("answered once accepting resumed");
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}

#[test]
fn the_fixed_heap_monitor_measures_the_processs_memory_and_shrink_heap_gives_it_back() {
    let (_e, backend) = echo("heap");
    let at = listener();
    // The refresh interval written as Envoy's documentation writes durations.
    let overload = "overload_manager:
  refresh_interval: {seconds: 0, nanos: 50000000}
  resource_monitors:
  - name: envoy.resource_monitors.fixed_heap
    typed_config:
      \"@type\": type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig
      max_heap_size_bytes: 1048576
  actions:
  - name: envoy.overload_actions.shrink_heap
    triggers:
    - {name: envoy.resource_monitors.fixed_heap, threshold: {value: 0.95}}
  - name: envoy.overload_actions.stop_accepting_requests
    triggers:
    - {name: envoy.resource_monitors.fixed_heap, threshold: {value: 0.98}}
";
    let text = format!(
        "{}{overload}",
        static_bootstrap("heap", &socket_address(at), backend, "", "")
    );
    // A typed config the descriptors do not know (one newer than this build) is refused, and
    // the error says why.
    let future = text.replacen(
        "envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig",
        "envoy.extensions.resource_monitors.fixed_heap.v9.FixedHeapConfig",
        1,
    );
    let refused = support::refused_bootstrap("future-typed-config", &future);
    assert!(
        refused.contains("FixedHeapConfig' not found (a typed config newer"),
        "{refused}"
    );
    // `shrink_heap` gives memory back every `timer_interval` while saturated.
    let tuned = text.replacen(
        "    - {name: envoy.resource_monitors.fixed_heap, threshold: {value: 0.95}}\n",
        "    - {name: envoy.resource_monitors.fixed_heap, threshold: {value: 0.95}}\n    typed_config:\n      \"@type\": type.googleapis.com/envoy.config.overload.v3.ShrinkHeapConfig\n      timer_interval: 0.1s\n",
        1,
    );
    assert_ne!(tuned, text);
    let proxy = proxy_on("fixed-heap", at, &tuned);
    let client = Client::new();
    let admin = admin_of(&proxy);
    // A proxy holds more than 1 MiB: saturated, so requests are refused and memory is given
    // back, at once and then every 0.1 s (Envoy's default is 10 s: three times could not be
    // within 5 s).
    support::eventually(
        "memory given back again and again",
        Duration::from_secs(5),
        &mut || {
            counter(
                &client,
                admin,
                "overload.envoy.overload_actions.shrink_heap.shrink_count",
            ) >= 3
        },
    );
    assert!(
        counter(
            &client,
            admin,
            "overload.envoy.resource_monitors.fixed_heap.pressure"
        ) > 100
    );
    assert_eq!(client.direct(at, "GET", "/", &[], "").status, 503);
}

/// Whether the proxy ends an HTTP/2 connection (h2c, hyper's client) within 2 s of answering
/// its one request.
fn http2_closes_after_one_request(at: SocketAddr) -> bool {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (status, _, h2c) = support::h2c_get(at, "/").await;
        assert_eq!(status, 200);
        let _sender = h2c.sender;
        tokio::time::timeout(Duration::from_secs(2), h2c.conn)
            .await
            .is_ok()
    })
}

#[test]
fn keepalive_is_disabled_and_load_shed_points_shed_as_their_triggers_say() {
    let (_e, backend) = echo("keepalive");
    let dir = support::folder("keepalive-pressure");
    let files = ["keepalive", "accept", "headers"].map(|n| dir.join(n));
    for f in &files {
        inject(f, "0");
    }
    let monitors: String = ["keepalive", "accept", "headers"]
        .iter()
        .zip(&files)
        .map(|(name, file)| {
            format!(
                "  - name: {name}\n    typed_config:\n      \"@type\": type.googleapis.com/envoy.extensions.resource_monitors.injected_resource.v3.InjectedResourceConfig\n      filename: {}\n",
                file.display()
            )
        })
        .collect();
    let at = listener();
    let text = format!(
        "{}overload_manager:
  refresh_interval: 0.05s
  resource_monitors:
{monitors}  actions:
  - name: envoy.overload_actions.disable_http_keepalive
    triggers: [{{name: keepalive, threshold: {{value: 0.9}}}}]
  loadshed_points:
  - name: envoy.load_shed_points.tcp_listener_accept
    triggers: [{{name: accept, threshold: {{value: 0.9}}}}]
  - name: envoy.load_shed_points.http_connection_manager_decode_headers
    triggers: [{{name: headers, threshold: {{value: 0.9}}}}]
",
        static_bootstrap("keepalive", &socket_address(at), backend, "", "")
    );
    let proxy = proxy_on("keepalive", at, &text);
    let client = Client::new();
    let admin = admin_of(&proxy);
    let url = format!("http://{at}/");
    // Two requests with one curl: whether the second had to open a connection of its own.
    let connections = |extra: &[&str]| {
        let mut args = vec!["-o", "/dev/null", "-o", "/dev/null", "-w", "%{num_connects} "];
        args.extend_from_slice(extra);
        args.extend([url.as_str(), url.as_str()]);
        let (code, out, err) = curl(&args);
        assert_eq!(code, Some(0), "{err}");
        out
    };
    assert_eq!(connections(&[]), "1 0 ", "kept alive");
    assert!(!http2_closes_after_one_request(at), "kept alive");

    inject(&files[0], "1");
    support::eventually("keep-alive disabled", Duration::from_secs(5), &mut || {
        client.direct(at, "GET", "/", &[], "").header("connection") == Some("close")
    });
    assert_eq!(connections(&[]), "1 1 ", "HTTP/1.1: connection: close");
    assert!(http2_closes_after_one_request(at), "HTTP/2: a GOAWAY");
    assert!(counter(&client, admin, "http.downstream_cx_overload_disable_keepalive") >= 4);
    inject(&files[0], "0");

    inject(&files[1], "1");
    support::eventually("new connections shed", Duration::from_secs(5), &mut || {
        curl(&[&url]).0 != Some(0)
    });
    assert!(
        counter(
            &client,
            admin,
            "overload.envoy.load_shed_points.tcp_listener_accept.shed_load_count"
        ) >= 1
    );
    inject(&files[1], "0");
    support::eventually("connections taken again", Duration::from_secs(5), &mut || {
        curl(&[&url]).0 == Some(0)
    });

    inject(&files[2], "1");
    support::eventually("requests shed", Duration::from_secs(5), &mut || {
        client.direct(at, "GET", "/", &[], "").status == 503
    });
    assert_eq!(client.direct(at, "GET", "/", &[], "").body, "envoy overloaded");
    let shed = "overload.envoy.load_shed_points.http_connection_manager_decode_headers.shed_load_count";
    assert!(counter(&client, admin, shed) >= 2);
    assert_eq!(
        counter(
            &client,
            admin,
            "overload.envoy.load_shed_points.http_connection_manager_decode_headers.scale_percent"
        ),
        100
    );
}

/// The first flight of a real TLS client (rustls) for `edge.test`: its ClientHello.
fn client_hello() -> Vec<u8> {
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let mut client =
        rustls::ClientConnection::new(std::sync::Arc::new(config), "edge.test".try_into().unwrap()).unwrap();
    let mut hello = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut hello).unwrap();
    }
    hello
}

/// Sends `bytes` to `at` and reads as many back: `None` if the proxy closed the connection
/// first.
fn echoed(at: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(at).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(bytes).ok()?;
    let mut back = vec![0u8; bytes.len()];
    conn.read_exact(&mut back).ok()?;
    Some(back)
}

#[test]
fn the_tls_inspector_closes_what_it_cannot_read_when_told_and_reads_no_more_than_its_limit() {
    let backend = tcp_echo();
    let inspector = |config: &str| {
        format!(
            "    listener_filters:\n    - name: envoy.filters.listener.tls_inspector\n      typed_config:\n        \"@type\": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector\n{config}"
        )
    };
    let (lenient, strict, small) = (listener(), listener(), listener());
    let text = format!(
        "static_resources:\n  listeners:\n{}{}{}{}",
        tcp_listener("lenient", lenient, &inspector("")),
        tcp_listener(
            "strict",
            strict,
            &inspector("        close_connection_on_client_hello_parsing_errors: true\n")
        ),
        tcp_listener(
            "small",
            small,
            &inspector(
                "        close_connection_on_client_hello_parsing_errors: true\n        max_client_hello_size: 64\n"
            )
        ),
        backend_cluster(backend),
    );
    let _proxy = proxy_on("tls-inspector", lenient, &text);
    let hello = client_hello();
    assert!(hello.len() > 64, "a ClientHello of {} bytes", hello.len());
    // Plain text is proxied as plain text by default; closed when the inspector is told to.
    assert_eq!(echoed(lenient, b"ping").as_deref(), Some(&b"ping"[..]));
    assert_eq!(echoed(strict, b"ping"), None);
    // A ClientHello is read whole within Envoy's 16 KiB, and the connection goes on…
    assert_eq!(echoed(strict, &hello).as_deref(), Some(&hello[..]));
    // …but not within 64 bytes: not a ClientHello the inspector could read, so closed.
    assert_eq!(echoed(small, &hello), None);
    // Over Envoy's maximum: refused with Envoy's words.
    let listener_at = listener();
    let too_large = format!(
        "static_resources:\n  listeners:\n{}{}",
        tcp_listener(
            "large",
            listener_at,
            &inspector("        max_client_hello_size: 16385\n")
        ),
        backend_cluster(backend),
    );
    let refused = support::refused_bootstrap("tls-inspector-large", &too_large);
    assert!(
        refused.contains("max_client_hello_size of 16385 is greater than maximum of 16384."),
        "{refused}"
    );
}

/// Whether the admin endpoint at `admin` answers `/ready` on a new connection (false: the proxy
/// closed the connection without answering).
fn admin_answers(admin: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect(admin) else {
        return false;
    };
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    if conn
        .write_all(b"GET /ready HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

#[test]
fn a_bootstraps_admin_endpoint_is_under_the_global_limit_unless_it_ignores_it() {
    let backend = tcp_echo();
    // A proxy whose bootstrap names its admin endpoint (no --admin), with room for two
    // downstream connections in all.
    let start = |label: &str, admin_extra: &str| {
        let (data, admin) = (listener(), listener());
        let text = format!(
            r#"admin:
  address: {{socket_address: {{{}}}}}
{admin_extra}static_resources:
  listeners:
{}{}overload_manager:
  resource_monitors:
  - name: envoy.resource_monitors.global_downstream_max_connections
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig
      max_active_downstream_connections: 2
"#,
            socket_address(admin),
            tcp_listener("data", data, ""),
            backend_cluster(backend),
        );
        let file = support::folder(label).join("envoy.yaml");
        std::fs::write(&file, text).unwrap();
        let proxy = Proc::weir(label, &["proxy", "--bootstrap", file.to_str().unwrap()]);
        support::eventually("the admin endpoint answers", Duration::from_secs(20), &mut || {
            admin_answers(admin)
        });
        (proxy, data, admin)
    };
    // A place through the data listener, once the admin connection before it has given its
    // own back.
    let hold = |data: SocketAddr| {
        let mut conn = None;
        support::eventually("a place under the limit", Duration::from_secs(5), &mut || {
            conn = tcp_through(data);
            conn.is_some()
        });
        conn.unwrap()
    };
    let (_limited, data, admin) = start("admin-limited", "");
    let held = [hold(data), hold(data)];
    // Both places are taken: Envoy's admin listener is refused like any other.
    assert!(
        !admin_answers(admin),
        "the admin endpoint answered over the limit"
    );
    drop(held);
    support::eventually(
        "the admin endpoint answers once places are free",
        Duration::from_secs(5),
        &mut || admin_answers(admin),
    );
    let client = Client::new();
    assert!(counter(&client, admin, "listener.downstream_global_cx_overflow") >= 1);

    let (_exempt, data, admin) = start("admin-exempt", "  ignore_global_conn_limit: true\n");
    let _held = [hold(data), hold(data)];
    assert!(
        admin_answers(admin),
        "ignore_global_conn_limit: answered at the limit"
    );
    // It still counts: the two data connections and the one reading the gauge.
    support::eventually(
        "the admin connection counted",
        Duration::from_secs(5),
        &mut || counter(&client, admin, "listener.downstream_cx_active") == 3,
    );
}

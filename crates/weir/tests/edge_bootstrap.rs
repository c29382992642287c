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

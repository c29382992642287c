//! `weir proxy` on its own: against `weir discovery` (the control plane stopped and restarted
//! while traffic flows), from an Envoy v3 bootstrap with static resources, TCP through a
//! CONNECT tunnel, and a resource the proxy cannot honour (NACKed, the rest applied).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use support::{
    Client, Proc, Standalone, address_in, discovery, echo, eventually, folder, free_port, http_service,
    proxy_on, refused_bootstrap, socket_address, standalone, static_bootstrap, wait_ready,
};

#[test]
fn the_last_good_configuration_serves_while_the_control_plane_is_away() {
    let (_e1, a1) = echo("one");
    let (_e2, a2) = echo("two");
    let dir = folder("restart");
    std::fs::write(
        dir.join("svc.yaml"),
        http_service("svc.test", 80, "svc", &[("v1", a1)]),
    )
    .unwrap();
    let Standalone {
        control_plane: mut cp,
        port,
        proxy: _p,
        admin,
        http,
        client,
        ..
    } = standalone(&dir, &[]);
    wait_ready(&client, admin);
    assert_eq!(
        client
            .via_proxy(http, "GET", "http://svc.test/", &[], "")
            .server(),
        Some("one")
    );

    cp.kill();
    for _ in 0..20 {
        let r = client.via_proxy(http, "GET", "http://svc.test/", &[], "");
        assert_eq!(
            (r.status, r.server()),
            (200, Some("one")),
            "served from the last good configuration"
        );
    }
    // The configuration changes while the control plane is down; when it is back the proxy
    // reconnects (with back-off) and applies it.
    std::fs::write(
        dir.join("svc.yaml"),
        http_service("svc.test", 80, "svc", &[("v1", a2)]),
    )
    .unwrap();
    let (_cp, _) = discovery(dir.to_str().unwrap(), port);
    eventually("the new endpoint is used", Duration::from_secs(40), &mut || {
        client
            .via_proxy(http, "GET", "http://svc.test/", &[], "")
            .server()
            == Some("two")
    });
}

#[test]
fn a_resource_the_proxy_cannot_honour_is_nacked_and_the_rest_applies() {
    let (_e1, a1) = echo("good");
    let (_e2, a2) = echo("guarded");
    let dir = folder("nack");
    std::fs::write(
        dir.join("good.yaml"),
        http_service("good.test", 80, "good", &[("v1", a1)]),
    )
    .unwrap();
    std::fs::write(
        dir.join("guarded.yaml"),
        http_service("guarded.test", 80, "guarded", &[("v1", a2)]),
    )
    .unwrap();
    // TLS origination with a CA file this machine does not have: the cluster must be refused,
    // not served without verification.
    std::fs::write(
        dir.join("dr.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: guarded}\nspec:\n  host: guarded.test\n  trafficPolicy:\n    tls: {mode: SIMPLE, caCertificates: /nonexistent/weir-test-ca.pem}\n",
    )
    .unwrap();
    let Standalone {
        control_plane: _cp,
        monitoring,
        proxy: _p,
        admin,
        http,
        client,
        ..
    } = standalone(&dir, &[]);
    eventually("good.test served", Duration::from_secs(15), &mut || {
        client
            .via_proxy(http, "GET", "http://good.test/", &[], "")
            .server()
            == Some("good")
    });
    let guarded = client.via_proxy(http, "GET", "http://guarded.test/", &[], "");
    assert_eq!(guarded.status, 503, "{guarded:?}");
    let rejections = client
        .direct(monitoring, "GET", "/debug/rejections", &[], "")
        .body;
    assert!(
        rejections.contains("/nonexistent/weir-test-ca.pem")
            && rejections.contains("outbound|80||guarded.test"),
        "{rejections}"
    );
    assert_eq!(client.direct(admin, "GET", "/ready", &[], "").status, 200);
}

#[test]
fn an_envoy_bootstrap_with_static_resources_drives_the_proxy() {
    let (_e, backend) = echo("static");
    let port = free_port();
    let dir = folder("bootstrap");
    let bootstrap = format!(
        "node: {{id: \"sidecar~192.0.2.20~static.default~default.svc.cluster.local\", cluster: static}}\n\
         admin:\n  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}\n{}",
        static_bootstrap(
            "ingress",
            &socket_address(SocketAddr::from(([127, 0, 0, 1], port))),
            backend,
            "          stream_idle_timeout: 0.6s
          drain_timeout: 0.5s
          common_http_protocol_options: {idle_timeout: 1s}
",
            "              - match: {prefix: /health}
                direct_response: {status: 200, body: {inline_string: ok}}
              - match: {prefix: /untimed}
                route: {cluster: backend, timeout: 0s}
              - match: {prefix: /stream/}
                route: {cluster: backend, timeout: 0s}
              - match: {prefix: /short}
                route: {cluster: backend, timeout: 0.2s}
",
        )
    );
    let file = dir.join("envoy.yaml");
    std::fs::write(&file, bootstrap).unwrap();
    let p = Proc::weir("bootstrap", &["proxy", "--bootstrap", file.to_str().unwrap()]);
    p.wait_line(
        &format!("listener ingress on 127.0.0.1:{port}"),
        Duration::from_secs(20),
    );
    let client = Client::new();
    let listener: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let r = client.direct(listener, "GET", "/health", &[], "");
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    let r = client.direct(listener, "GET", "/hello", &[], "");
    assert_eq!(r.server(), Some("static"), "{r:?}");

    // The stream idle timeout (0.6 s) bounds the wait for a response head, with or without a
    // longer route timeout: Envoy's 408 "stream timeout"; a shorter route timeout answers first.
    let slow = [("x-echo-delay-ms", "1500")];
    for path in ["/untimed", "/hello"] {
        let r = client.direct(listener, "GET", path, &slow, "");
        assert_eq!((r.status, r.body.as_str()), (408, "stream timeout"), "{path}");
        assert!(r.elapsed < Duration::from_millis(1400), "{path}: {r:?}");
    }
    let r = client.direct(listener, "GET", "/short", &slow, "");
    assert_eq!((r.status, r.body.as_str()), (504, "upstream request timeout"));
    // While a body streams, it is the gap between chunks that counts: 4 chunks 200 ms apart
    // pass (0.8 s in all), chunks 900 ms apart are cut after the first.
    let whole = client.direct(listener, "GET", "/stream/4/200", &[], "");
    assert_eq!(whole.body.lines().count(), 4, "{whole:?}");
    let cut = client.direct(listener, "GET", "/stream/4/900", &[], "");
    assert_eq!(cut.status, 200, "{cut:?}");
    assert!(cut.body.lines().count() < 4, "the body was not cut: {cut:?}");
    assert!(cut.elapsed < Duration::from_millis(2500), "{cut:?}");
    // HTTP/2 (h2c): a stream that lasts longer than the idle timeout keeps the connection; once
    // no stream is open for 1 s, the proxy ends it (GOAWAY).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (lines, closed_after) = rt.block_on(async {
        let (_, body, h2c) = support::h2c_get(listener, "/stream/3/400").await;
        let lines = String::from_utf8_lossy(&body).lines().count();
        let idle_from = std::time::Instant::now();
        let _sender = h2c.sender;
        let ended = tokio::time::timeout(Duration::from_secs(5), h2c.conn).await;
        assert!(ended.is_ok(), "the idle HTTP/2 connection was not closed");
        (lines, idle_from.elapsed())
    });
    assert_eq!(lines, 3, "a 1.2 s stream is not cut by the 1 s idle timeout");
    assert!(closed_after >= Duration::from_millis(800), "{closed_after:?}");
    // An HTTP/2 connection that never opens a stream (preface and settings, then nothing — not
    // even an answer to the proxy's PING) gets a GOAWAY after the idle timeout and is closed
    // after the drain timeout (0.5 s).
    let silent = silent_http2(listener, Duration::from_secs(5));
    let closed_after = silent
        .closed_after
        .expect("the silent HTTP/2 connection was not closed");
    assert!(closed_after >= Duration::from_millis(1300), "{closed_after:?}");
    // Frame type 7 is GOAWAY: the proxy said goodbye before closing.
    assert!(silent.types.contains(&7), "frame types {:?}", silent.types);
    // A request body that stalls on its way up ends the stream too: 408 before any response.
    {
        use std::io::{Read, Write};
        let mut stalled = std::net::TcpStream::connect(listener).unwrap();
        stalled.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let started = std::time::Instant::now();
        stalled
            .write_all(b"POST /untimed HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc")
            .unwrap();
        let mut buf = [0u8; 512];
        let n = stalled.read(&mut buf).unwrap();
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(head.starts_with("HTTP/1.1 408"), "{head}");
        assert!(
            started.elapsed() < Duration::from_millis(2000),
            "{:?}",
            started.elapsed()
        );
    }
    // A body that streams up whole (two pieces 0.4 s apart, each gap within the 0.6 s): the
    // wait for the response head then counts from the body's end — 408 about 0.6 s after it,
    // not the backend's answer 1.5 s later.
    {
        use std::io::{Read, Write};
        let mut slow_answer = std::net::TcpStream::connect(listener).unwrap();
        slow_answer
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        slow_answer
            .write_all(b"POST /untimed HTTP/1.1\r\nhost: x\r\nx-echo-delay-ms: 1500\r\ncontent-length: 10\r\n\r\nabc")
            .unwrap();
        std::thread::sleep(Duration::from_millis(400));
        let body_ended = std::time::Instant::now();
        slow_answer.write_all(b"defghij").unwrap();
        let mut buf = [0u8; 512];
        let n = slow_answer.read(&mut buf).unwrap();
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(head.starts_with("HTTP/1.1 408"), "{head}");
        let waited = body_ended.elapsed();
        assert!(
            waited >= Duration::from_millis(500) && waited < Duration::from_millis(1300),
            "{waited:?}"
        );
    }
    let admin = address_in(&p.wait_line("admin on", Duration::from_secs(5)), "admin on ");
    let stats = client.direct(admin, "GET", "/stats", &[], "").body;
    assert!(stats.contains("http.downstream_rq_idle_timeout: 5"), "{stats}");
    // A kept-alive HTTP/1.1 connection idle for the connection manager's idle_timeout (1 s) is
    // closed by the proxy.
    {
        use std::io::{Read, Write};
        let mut idle = std::net::TcpStream::connect(listener).unwrap();
        idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        idle.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 512];
        let n = idle.read(&mut buf).unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&buf[..n])
        );
        let waited = std::time::Instant::now();
        assert_eq!(idle.read(&mut buf).unwrap(), 0, "closed when idle");
        assert!(
            waited.elapsed() >= Duration::from_millis(800),
            "{:?}",
            waited.elapsed()
        );
    }

    // What the proxy cannot honour is refused with the field named.
    let err = refused_bootstrap(
        "bootstrap-refused",
        "static_resources:\n  clusters:\n  - name: c\n    type: STATIC\n    lb_policy: RING_HASH\n    ring_hash_lb_config: {hash_function: MURMUR_HASH_2}\n",
    );
    assert!(err.contains("cluster \"c\"") && err.contains("XX_HASH"), "{err}");
}

#[test]
fn tcp_services_are_proxied_through_connect_tunnels() {
    let (_e, backend) = echo("tcp-backend");
    let dir = folder("tcp");
    std::fs::write(
        dir.join("tcp.yaml"),
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: db}}\nspec:\n  hosts: [db.test]\n  ports: [{{number: 7000, name: tcp, protocol: TCP}}]\n  resolution: STATIC\n  endpoints: [{{address: {}, ports: {{tcp: {}}}}}]\n",
            backend.ip(),
            backend.port()
        ),
    )
    .unwrap();
    let Standalone {
        control_plane: _cp,
        proxy: _p,
        admin,
        http,
        client,
        ..
    } = standalone(&dir, &[]);
    wait_ready(&client, admin);
    let mut s = TcpStream::connect(http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"CONNECT db.test:7000 HTTP/1.1\r\nHost: db.test:7000\r\n\r\n")
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s.write_all(b"GET /inside HTTP/1.1\r\nHost: db.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(
        body.contains("\"server\": \"tcp-backend\"") && body.contains("/inside"),
        "{body}"
    );
    // Half-closes are passed on (as Envoy's TCP proxy does); the connection ends when the
    // client closes too.
    drop(s);
    let metrics = client.direct(admin, "GET", "/stats/prometheus", &[], "").body;
    eventually("TCP metrics", Duration::from_secs(5), &mut || {
        client
            .direct(admin, "GET", "/stats/prometheus", &[], "")
            .body
            .contains("istio_tcp_connections_closed_total{")
    });
    assert!(
        metrics.contains("istio_tcp_connections_opened_total{"),
        "{metrics}"
    );
}

#[test]
fn the_state_of_the_world_protocol_serves_the_same_configuration() {
    let (_e1, a1) = echo("sotw-one");
    let (_e2, a2) = echo("sotw-two");
    let dir = folder("sotw");
    std::fs::write(
        dir.join("svc.yaml"),
        http_service("sotw.test", 80, "sotw", &[("v1", a1)]),
    )
    .unwrap();
    let Standalone {
        control_plane: _cp,
        proxy: p,
        admin,
        http,
        client,
        ..
    } = standalone(&dir, &["--xds-protocol", "sotw"]);
    wait_ready(&client, admin);
    assert_eq!(
        client
            .via_proxy(http, "GET", "http://sotw.test/", &[], "")
            .server(),
        Some("sotw-one")
    );
    std::fs::write(
        dir.join("svc.yaml"),
        http_service("sotw.test", 80, "sotw", &[("v1", a2)]),
    )
    .unwrap();
    eventually("the new endpoint is used", Duration::from_secs(15), &mut || {
        client
            .via_proxy(http, "GET", "http://sotw.test/", &[], "")
            .server()
            == Some("sotw-two")
    });
    assert!(!p.output().contains("NACK"), "{}", p.output());
}

#[test]
fn websocket_upgrades_pass_through_the_sidecar() {
    let (_e, backend) = echo("ws-backend");
    let dir = folder("websocket");
    std::fs::write(
        dir.join("svc.yaml"),
        http_service("ws.test", 80, "ws", &[("v1", backend)]),
    )
    .unwrap();
    let Standalone {
        control_plane: _cp,
        proxy: _p,
        admin,
        http,
        client,
        ..
    } = standalone(&dir, &[]);
    wait_ready(&client, admin);
    let mut s = TcpStream::connect(http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET http://ws.test/chat HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("upgrade: websocket") && head.contains("x-echo-server: ws-backend"),
        "{head}"
    );
    // Bytes now flow both ways through the proxy, unframed by HTTP.
    s.write_all(b"ping over the upgraded connection").unwrap();
    let mut echoed = [0u8; 33];
    s.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"ping over the upgraded connection");
}

#[test]
fn endpoints_on_unix_domain_sockets_are_reached() {
    let dir = folder("unix");
    let socket = dir.join("echo.sock");
    let p = Proc::weir(
        "echo unix",
        &[
            "echo",
            "--listen",
            "127.0.0.1:0",
            "--name",
            "unix-backend",
            "--unix",
            socket.to_str().unwrap(),
        ],
    );
    p.wait_line("listening on unix:", Duration::from_secs(10));
    std::fs::write(
        dir.join("svc.yaml"),
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: local}}\nspec:\n  hosts: [local.test]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints: [{{address: 'unix://{}'}}]\n",
            socket.display()
        ),
    )
    .unwrap();
    let Standalone {
        control_plane: _cp,
        proxy: _p,
        admin,
        http,
        client,
        ..
    } = standalone(&dir, &[]);
    wait_ready(&client, admin);
    let r = client.via_proxy(http, "GET", "http://local.test/over-a-socket", &[], "");
    assert_eq!((r.status, r.server()), (200, Some("unix-backend")), "{r:?}");
}

#[test]
fn a_cluster_pointing_back_at_the_proxys_own_listener_is_refused_not_looped() {
    let port = free_port();
    let listener: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let _p = proxy_on(
        "self-loop",
        listener,
        &static_bootstrap("self", &socket_address(listener), listener, "", ""),
    );
    let mut conn = TcpStream::connect(listener).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    for _ in 0..2 {
        conn.write_all(b"GET /loop HTTP/1.1\r\nhost: svc\r\n\r\n")
            .unwrap();
        let r = read_response(&mut conn, &mut buf, false);
        assert_eq!(r.status_line, "HTTP/1.1 502 Bad Gateway", "{r:?}");
        let body = String::from_utf8_lossy(&r.body);
        assert!(
            body.contains(&format!("{listener}, an address of this proxy")),
            "{body}"
        );
    }
}

#[test]
fn a_listener_on_the_ipv6_wildcard_takes_ipv4_connections_only_with_ipv4_compat() {
    let (_e, backend) = echo("v6");
    let ipv6_only = SocketAddr::from((Ipv6Addr::UNSPECIFIED, free_port()));
    let _v6 = proxy_on(
        "ipv6-only",
        SocketAddr::from((Ipv6Addr::LOCALHOST, ipv6_only.port())),
        &static_bootstrap("v6", &socket_address(ipv6_only), backend, "", ""),
    );
    let client = Client::new();
    let r = client.direct(
        SocketAddr::from((Ipv6Addr::LOCALHOST, ipv6_only.port())),
        "GET",
        "/over-ipv6",
        &[],
        "",
    );
    assert_eq!((r.status, r.server()), (200, Some("v6")), "{r:?}");
    // As in Envoy, `::` without `ipv4_compat` is IPv6-only, whatever the host's default.
    let refused = TcpStream::connect((Ipv4Addr::LOCALHOST, ipv6_only.port()));
    assert!(refused.is_err(), "an IPv4 connection was accepted: {refused:?}");

    // Dual-stack: IPv4 connections are accepted, and the IPv4 address is the proxy's own too (a
    // cluster pointing at it is refused as a loop).
    let dual = SocketAddr::from((Ipv6Addr::UNSPECIFIED, free_port()));
    let over_ipv4 = SocketAddr::from((Ipv4Addr::LOCALHOST, dual.port()));
    let _dual = proxy_on(
        "dual-stack",
        over_ipv4,
        &static_bootstrap(
            "dual",
            &format!("{}, ipv4_compat: true", socket_address(dual)),
            over_ipv4,
            "",
            "",
        ),
    );
    let r = client.direct(over_ipv4, "GET", "/loop", &[], "");
    assert_eq!(r.status, 502, "{r:?}");
    assert!(
        r.body.contains(&format!("{over_ipv4}, an address of this proxy")),
        "{r:?}"
    );

    // Where `ipv4_compat` cannot apply, the listener is refused with Envoy's words.
    let on_ipv6_loopback = SocketAddr::from((Ipv6Addr::LOCALHOST, free_port()));
    let err = refused_bootstrap(
        "ipv4-compat-refused",
        &static_bootstrap(
            "bad",
            &format!("{}, ipv4_compat: true", socket_address(on_ipv6_loopback)),
            backend,
            "",
            "",
        ),
    );
    assert!(
        err.contains(&format!(
            "Only IPv6 address '::' or valid IPv4-mapped IPv6 address can set ipv4_compat: {on_ipv6_loopback}"
        )),
        "{err}"
    );
}

/// An HTTP/1.1 backend that answers its `n`-th connection with `statuses[n]` (200 once they
/// run out) and closes it: the body says how many body bytes the request brought, and the
/// `server` header is `scripted`.
fn scripted_backend(statuses: Vec<u16>) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut conn) = conn else { continue };
            let mut request = Vec::new();
            let mut buf = [0u8; 16 * 1024];
            let body_len = loop {
                let Ok(read) = conn.read(&mut buf) else { break 0 };
                if read == 0 {
                    break 0;
                }
                request.extend_from_slice(&buf[..read]);
                let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if request.len() >= end + 4 + length {
                    break length;
                }
            };
            let status = statuses.get(n).copied().unwrap_or(200);
            let body = body_len.to_string();
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\nserver: scripted\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    address
}

/// Two routes that retry a 5xx once: `/kept` keeps request bodies up to 300,000 bytes for it,
/// `/streamed` sets no limit of its own.
fn retried_routes() -> String {
    let retried = "route: {cluster: backend, timeout: 5s, retry_policy: {retry_on: 5xx, num_retries: 1}}";
    format!(
        "              - match: {{prefix: /kept}}
                per_request_buffer_limit_bytes: 300000
                {retried}
              - match: {{prefix: /streamed}}
                {retried}
"
    )
}

#[test]
fn a_route_keeps_a_large_body_for_retries_up_to_its_buffer_limit() {
    // Connections 1 and 3 fail: each request's first attempt.
    let backend = scripted_backend(vec![503, 200, 503]);
    let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let routes = retried_routes();
    let _p = proxy_on(
        "buffer-limit",
        listener,
        &static_bootstrap("buffer", &socket_address(listener), backend, "", &routes),
    );
    // 100 KiB: above Weir's default limit (64 KiB), within the route's.
    let body = "x".repeat(100 * 1024);
    let client = Client::new();
    let kept = client.direct(listener, "POST", "/kept", &[], &body);
    assert_eq!((kept.status, kept.body.as_str()), (200, "102400"), "{kept:?}");
    let streamed = client.direct(listener, "POST", "/streamed", &[], &body);
    assert_eq!(streamed.status, 503, "streamed, so not retried: {streamed:?}");
}

#[test]
fn a_listeners_connection_buffer_limit_is_the_default_request_buffer_limit() {
    // Connections 1, 2 and 4 fail: see the requests below.
    let backend = scripted_backend(vec![503, 503, 200, 503]);
    let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let routes = retried_routes();
    let text = static_bootstrap(
        "connection-buffer",
        &socket_address(listener),
        backend,
        "",
        &routes,
    )
    .replacen(
        "    filter_chains:",
        "    per_connection_buffer_limit_bytes: 32768\n    filter_chains:",
        1,
    );
    let _p = proxy_on("connection-buffer", listener, &text);
    let client = Client::new();
    // 40 KiB: within Weir's own default (64 KiB), above the listener's 32 KiB: streamed, so the
    // first attempt's 503 is the answer.
    let body = "x".repeat(40 * 1024);
    let streamed = client.direct(listener, "POST", "/streamed", &[], &body);
    assert_eq!(streamed.status, 503, "streamed, so not retried: {streamed:?}");
    // The route's own limit comes first.
    let body = "x".repeat(100 * 1024);
    let kept = client.direct(listener, "POST", "/kept", &[], &body);
    assert_eq!((kept.status, kept.body.as_str()), (200, "102400"), "{kept:?}");
    // Within the listener's limit: kept and retried.
    let body = "x".repeat(20 * 1024);
    let kept = client.direct(listener, "POST", "/streamed", &[], &body);
    assert_eq!((kept.status, kept.body.as_str()), (200, "20480"), "{kept:?}");
}

#[test]
fn responses_carry_the_attempt_count_when_the_virtual_host_asks() {
    // Each request to /retried fails its first attempt: connections 1 and 3 (and 4) answer 503.
    let backend = scripted_backend(vec![503, 200, 503, 503]);
    let refused = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let routes = "              - match: {prefix: /retried}
                route: {cluster: backend, timeout: 5s, retry_policy: {retry_on: 5xx, num_retries: 1}}
              - match: {prefix: /refused}
                route: {cluster: refused, timeout: 5s, retry_policy: {retry_on: connect-failure, num_retries: 2}}
              - match: {prefix: /empty}
                route: {cluster: empty}
              - match: {prefix: /local}
                direct_response: {status: 200, body: {inline_string: here}}
";
    let clusters = format!(
        "  - name: refused
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: refused
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{{}}}}}}}
  - name: empty
    type: STATIC
    load_assignment: {{cluster_name: empty}}
",
        socket_address(refused)
    );
    let text = static_bootstrap("attempts", &socket_address(listener), backend, "", routes).replace(
        "              domains: [\"*\"]\n",
        "              domains: [\"*\"]\n              include_attempt_count_in_response: true\n",
    );
    assert!(text.contains("include_attempt_count_in_response"));
    let _p = proxy_on("attempts", listener, &format!("{text}{clusters}"));
    let client = Client::new();
    let count = |path: &str, status: u16| {
        let r = client.direct(listener, "GET", path, &[], "");
        assert_eq!(r.status, status, "{path}: {r:?}");
        r.header("x-envoy-attempt-count").map(str::to_string)
    };
    assert_eq!(
        count("/retried", 200),
        Some("2".into()),
        "retried once, then answered"
    );
    assert_eq!(
        count("/retried", 503),
        Some("2".into()),
        "the upstream's 503 after its retry"
    );
    assert_eq!(count("/", 200), Some("1".into()), "no retry policy: one attempt");
    assert_eq!(
        count("/refused", 503),
        Some("3".into()),
        "Envoy's local reply after three refused connections"
    );
    assert_eq!(count("/empty", 503), None, "no host to try: no attempt made");
    assert_eq!(count("/local", 200), None, "a direct response is not an attempt");
}

/// What an HTTP/2 client learns of a proxy's settings: the streams it may open at once, and
/// the send capacity two streams get when each asks for 1 MiB (the first is bounded by the
/// stream window, the second by what the first left of the connection window).
fn http2_limits(listener: SocketAddr) -> (usize, [usize; 2]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(listener).await.unwrap();
        // The client's own send buffer (400 KiB by default) must not be the bound.
        let (client, mut conn) = h2::client::Builder::new()
            .max_send_buffer_size(4 << 20)
            .handshake::<_, bytes::Bytes>(tcp)
            .await
            .unwrap();
        let request = |method: &str| {
            hyper::Request::builder()
                .method(method)
                .uri(format!("http://{listener}/"))
                .body(())
                .unwrap()
        };
        let mut client = client.ready().await.unwrap();
        let (response, _) = client.send_request(request("GET"), true).unwrap();
        let response = tokio::select! {
            r = response => r.unwrap(),
            r = &mut conn => panic!("the connection ended: {r:?}"),
        };
        assert_eq!(response.status(), 200);
        let streams = conn.max_concurrent_send_streams();
        let mut capacities = [0; 2];
        // Kept open: a stream dropped gives its capacity back.
        let mut open = Vec::new();
        for capacity in &mut capacities {
            client = client.ready().await.unwrap();
            let (_, mut body) = client.send_request(request("POST"), false).unwrap();
            body.reserve_capacity(1 << 20);
            // Capacity comes as the windows open: read it once it stops growing.
            loop {
                let grew = tokio::select! {
                    c = std::future::poll_fn(|cx| body.poll_capacity(cx)) => c.is_some(),
                    () = tokio::time::sleep(Duration::from_millis(300)) => false,
                    r = &mut conn => panic!("the connection ended: {r:?}"),
                };
                if !grew {
                    break;
                }
            }
            *capacity = body.capacity();
            open.push(body);
        }
        (streams, capacities)
    })
}

#[test]
fn downstream_http2_settings_come_from_the_connection_manager() {
    let (_e, backend) = echo("h2-settings");
    let tuned = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let settings = "          http2_protocol_options:
            max_concurrent_streams: 7
            initial_stream_window_size: 100000
            initial_connection_window_size: 131072
            connection_keepalive: {interval: 0.2s, timeout: 0.5s}
";
    let _tuned = proxy_on(
        "h2-tuned",
        tuned,
        &static_bootstrap("tuned", &socket_address(tuned), backend, settings, ""),
    );
    let plain = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let _plain = proxy_on(
        "h2-plain",
        plain,
        &static_bootstrap("plain", &socket_address(plain), backend, "", ""),
    );
    assert_eq!(
        http2_limits(tuned),
        (7, [100_000, 131_072 - 100_000]),
        "the configured settings"
    );
    assert_eq!(
        http2_limits(plain),
        (200, [1 << 20, 0]),
        "hyper's defaults: 200 streams, 1 MiB windows"
    );

    // Keepalive: a client that answers no PING is disconnected after the timeout.
    let silent = silent_http2(tuned, Duration::from_secs(5));
    assert!(silent.types.contains(&6), "a PING: {:?}", silent.types);
    let closed_after = silent
        .closed_after
        .expect("the unresponsive client was not disconnected");
    assert!(closed_after >= Duration::from_millis(700), "{closed_after:?}");
    // Without keepalive no PING is sent and the connection stays.
    let silent = silent_http2(plain, Duration::from_millis(1500));
    assert!(!silent.types.contains(&6), "{:?}", silent.types);
    assert_eq!(silent.closed_after, None);

    // Values outside Envoy's ranges are refused, naming the field.
    let err = refused_bootstrap(
        "h2-refused",
        &static_bootstrap(
            "refused",
            &socket_address(SocketAddr::from(([127, 0, 0, 1], free_port()))),
            backend,
            "          http2_protocol_options: {initial_stream_window_size: 1024}\n",
            "",
        ),
    );
    assert!(
        err.contains(
            "http2_protocol_options.initial_stream_window_size: value must be inside range [65535, 2147483647]"
        ),
        "{err}"
    );
}

#[test]
fn the_overprovisioning_factor_decides_when_a_degraded_priority_spills_over() {
    let (_p, primary) = echo("primary");
    let (_f, fallback) = echo("fallback");
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    // Priority 0: the primary and an UNHEALTHY endpoint (50% healthy); priority 1: the fallback.
    let servers = |factor: &str| {
        let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let cluster = format!(
            "  - name: tiered
    type: STATIC
    load_assignment:
      cluster_name: tiered
      {factor}
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{{primary}}}}}}}
        - endpoint: {{address: {{socket_address: {{{dead}}}}}}}
          health_status: UNHEALTHY
      - priority: 1
        lb_endpoints:
        - endpoint: {{address: {{socket_address: {{{fallback}}}}}}}
",
            primary = socket_address(primary),
            dead = socket_address(dead),
            fallback = socket_address(fallback),
        );
        let routes = "              - match: {prefix: /tiered}\n                route: {cluster: tiered}\n";
        let text = static_bootstrap("tiered", &socket_address(listener), primary, "", routes);
        let proxy = proxy_on(
            &format!("overprovisioning-{}", listener.port()),
            listener,
            &format!("{text}{cluster}"),
        );
        let client = Client::new();
        let mut fallback_share = 0;
        for _ in 0..60 {
            let r = client.direct(listener, "GET", "/tiered", &[], "");
            assert_eq!(r.status, 200, "{r:?}");
            if r.server() == Some("fallback") {
                fallback_share += 1;
            }
        }
        drop(proxy);
        fallback_share
    };
    // Envoy's default 140: priority 0 keeps 50% × 1.4 = 70%; about 18 of 60 spill.
    let default = servers("");
    assert!((5..=35).contains(&default), "{default} of 60 to the fallback");
    // 200: 50% × 2 = 100%, nothing spills.
    assert_eq!(servers("policy: {overprovisioning_factor: 200}"), 0);
    // 0 is refused, with Envoy's rule.
    let err = refused_bootstrap(
        "overprovisioning-zero",
        &static_bootstrap(
            "zero",
            &socket_address(SocketAddr::from(([127, 0, 0, 1], free_port()))),
            primary,
            "",
            "",
        )
        .replace(
            "      cluster_name: backend\n",
            "      cluster_name: backend\n      policy: {overprovisioning_factor: 0}\n",
        ),
    );
    assert!(
        err.contains("overprovisioning_factor: value must be greater than 0"),
        "{err}"
    );
}

#[test]
fn retried_requests_say_whether_they_follow_a_per_try_timeout_when_the_virtual_host_asks() {
    let (_e, echo_at) = echo("answers");
    // An upstream that takes requests and never answers them.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_at = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in silent.incoming().flatten() {
            held.push(conn);
        }
    });
    let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let routes = "              - match: {prefix: /mixed}
                route:
                  cluster: mixed
                  timeout: 5s
                  retry_policy:
                    retry_on: 5xx
                    num_retries: 1
                    per_try_timeout: 0.3s
                    retry_host_predicate: [{name: envoy.retry_host_predicates.previous_hosts, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate}}]
              - match: {prefix: /flaky}
                route: {cluster: backend, timeout: 5s, retry_policy: {retry_on: 5xx, num_retries: 1}}
";
    let mixed = format!(
        "  - name: mixed
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: mixed
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{{}}}}}}}
        - endpoint: {{address: {{socket_address: {{{}}}}}}}
",
        socket_address(silent_at),
        socket_address(echo_at)
    );
    let text = static_bootstrap("timeout-retry", &socket_address(listener), echo_at, "", routes).replace(
        "              domains: [\"*\"]\n",
        "              domains: [\"*\"]\n              include_is_timeout_retry_header: true\n              include_attempt_count_in_response: true\n",
    );
    let _p = proxy_on("timeout-retry", listener, &format!("{text}{mixed}"));
    let client = Client::new();
    let seen = |path: &str| {
        let r = client.direct(listener, "GET", path, &[], "");
        assert_eq!(r.status, 200, "{r:?}");
        let header = r.json()["headers"]["x-envoy-is-timeout-retry"]
            .as_str()
            .map(str::to_string);
        (r.header("x-envoy-attempt-count").map(str::to_string), header)
    };
    // Round robin over the silent upstream and the echo: a first attempt on the silent one
    // times out and is retried on the echo (never the same host twice).
    let mut retried = 0;
    for _ in 0..4 {
        match seen("/mixed") {
            (Some(one), None) if one == "1" => {}
            (Some(two), Some(timeout)) if two == "2" => {
                assert_eq!(timeout, "true");
                retried += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    // The retry moves the round robin on too: most first attempts land on the silent one.
    assert!(retried >= 2, "{retried} of 4 retried");
    // A retry after a 503 is not a timeout retry.
    assert_eq!(seen("/flaky/k/1"), (Some("2".into()), Some("false".into())));
}

#[test]
fn the_server_header_is_kept_or_set_as_the_connection_manager_says() {
    let backend = scripted_backend(Vec::new());
    let (_e, quiet) = echo("quiet");
    let local = "              - match: {prefix: /local}
                direct_response: {status: 200, body: {inline_string: here}}
              - match: {prefix: /quiet}
                route: {cluster: quiet}
";
    let bootstrap = |transformation: &str| {
        let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let text = static_bootstrap(
            "server",
            &socket_address(listener),
            backend,
            &format!("          server_header_transformation: {transformation}\n"),
            local,
        );
        let quiet_cluster = format!(
            "  - name: quiet\n    type: STATIC\n    load_assignment:\n      cluster_name: quiet\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{address: {{socket_address: {{{}}}}}}}\n",
            socket_address(quiet)
        );
        (listener, format!("{text}{quiet_cluster}"))
    };
    let client = Client::new();
    let server = |listener: SocketAddr, path: &str| {
        let r = client.direct(listener, "GET", path, &[], "");
        assert_eq!(r.status, 200, "{r:?}");
        r.header("server").map(str::to_string)
    };
    let (listener, text) = bootstrap("APPEND_IF_ABSENT");
    let _append = proxy_on("server-append", listener, &text);
    assert_eq!(
        server(listener, "/"),
        Some("scripted".into()),
        "the upstream's is kept"
    );
    assert_eq!(
        server(listener, "/quiet"),
        Some("envoy".into()),
        "set where there is none"
    );
    assert_eq!(server(listener, "/local"), Some("envoy".into()));
    let (listener, text) = bootstrap("PASS_THROUGH");
    let _pass = proxy_on("server-pass", listener, &text);
    assert_eq!(server(listener, "/"), Some("scripted".into()));
    assert_eq!(server(listener, "/quiet"), None, "none is added");
    assert_eq!(server(listener, "/local"), None);
    let (listener, text) = bootstrap("OVERWRITE");
    let _overwrite = proxy_on("server-overwrite", listener, &text);
    assert_eq!(server(listener, "/"), Some("envoy".into()), "Envoy's default");
}

#[test]
fn a_weighted_cluster_rewrites_the_host_of_the_requests_sent_to_it() {
    let (_e, backend) = echo("weighted");
    let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let routes = "              - match: {prefix: /weighted}
                route:
                  host_rewrite_literal: route.test
                  weighted_clusters:
                    clusters:
                    - {name: backend, weight: 1, host_rewrite_literal: cluster.test}
              - match: {prefix: /route}
                route: {host_rewrite_literal: route.test, weighted_clusters: {clusters: [{name: backend, weight: 1}]}}
";
    let _p = proxy_on(
        "weighted-host",
        listener,
        &static_bootstrap("weighted", &socket_address(listener), backend, "", routes),
    );
    let client = Client::new();
    let host = |path: &str| {
        let r = client.direct(listener, "GET", path, &[], "");
        assert_eq!(r.status, 200, "{r:?}");
        r.json()["headers"]["host"].as_str().map(str::to_string)
    };
    assert_eq!(
        host("/weighted").as_deref(),
        Some("cluster.test"),
        "the cluster's rewrite comes first"
    );
    assert_eq!(host("/route").as_deref(), Some("route.test"));
}

/// What a silent HTTP/2 client saw: it sends the preface and empty settings, then nothing — no
/// acknowledgement, no answer to a PING.
struct Silent {
    /// The types of the frames the proxy sent (4 SETTINGS, 6 PING, 7 GOAWAY…).
    types: Vec<u8>,
    /// When the proxy closed the connection, if it did within the patience given.
    closed_after: Option<Duration>,
}

/// Opens a silent HTTP/2 connection to `listener` (see [`Silent`]) and reads what comes for up
/// to `patience`.
fn silent_http2(listener: SocketAddr, patience: Duration) -> Silent {
    let mut silent = TcpStream::connect(listener).unwrap();
    let opened = std::time::Instant::now();
    silent
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .unwrap();
    let mut frames = Vec::new();
    let mut buf = [0u8; 512];
    let closed_after = loop {
        let left = patience.saturating_sub(opened.elapsed());
        if left.is_zero() {
            break None;
        }
        silent.set_read_timeout(Some(left)).unwrap();
        match silent.read(&mut buf) {
            Ok(0) => break Some(opened.elapsed()),
            Ok(n) => frames.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break None;
            }
            // A reset is a close too.
            Err(_) => break Some(opened.elapsed()),
        }
    };
    let mut at = 0;
    let mut types = Vec::new();
    while at + 9 <= frames.len() {
        let len =
            usize::from(frames[at]) << 16 | usize::from(frames[at + 1]) << 8 | usize::from(frames[at + 2]);
        types.push(frames[at + 3]);
        at += 9 + len;
    }
    Silent { types, closed_after }
}

/// The listeners (`LISTEN` lines of `ss`) on `port`: their accept queue lengths.
fn backlogs_on(port: u16) -> Vec<String> {
    let out = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .expect("ss (iproute2) runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().nth(2).unwrap_or_default().to_string())
        .collect()
}

#[test]
fn a_second_proxy_shares_a_listeners_port_unless_reuse_port_is_off() {
    let (_e, backend) = echo("shared");
    let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let text = static_bootstrap("shared", &socket_address(listener), backend, "", "").replacen(
        "    filter_chains:",
        "    tcp_backlog_size: 7\n    filter_chains:",
        1,
    );
    let mut first = proxy_on("reuse-first", listener, &text);
    assert_eq!(backlogs_on(listener.port()), ["7"], "tcp_backlog_size");
    // Envoy's default `enable_reuse_port`: a new proxy binds the same port and takes over.
    let file = folder("reuse-second").join("envoy.yaml");
    std::fs::write(&file, &text).unwrap();
    let second = Proc::weir(
        "reuse-second",
        &[
            "proxy",
            "--bootstrap",
            file.to_str().unwrap(),
            "--admin",
            "127.0.0.1:0",
        ],
    );
    second.wait_line(&format!("listener shared on {listener}"), Duration::from_secs(20));
    assert_eq!(backlogs_on(listener.port()), ["7", "7"]);
    first.kill();
    let r = Client::new().direct(listener, "GET", "/after-the-takeover", &[], "");
    assert_eq!((r.status, r.server()), (200, Some("shared")), "{r:?}");

    let exclusive = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let text = static_bootstrap("exclusive", &socket_address(exclusive), backend, "", "").replacen(
        "    filter_chains:",
        "    enable_reuse_port: false\n    filter_chains:",
        1,
    );
    let _owner = proxy_on("reuse-off", exclusive, &text);
    let err = refused_bootstrap("reuse-off-second", &text);
    assert!(err.contains(&format!("cannot bind {exclusive}")), "{err}");
}

/// A response read off a raw connection: status line, headers (names lowercased), body.
#[derive(Debug)]
struct RawResponse {
    status_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

/// Reads one HTTP/1.1 response from `stream`, keeping what follows it in `buf`: the body by
/// `content-length`, by chunks, or (`HEAD`, `204`, `304`) none.
fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>, head_only: bool) -> RawResponse {
    fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, want: impl Fn(&[u8]) -> Option<usize>) -> usize {
        loop {
            if let Some(n) = want(buf) {
                return n;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).expect("read");
            assert!(
                n > 0,
                "connection closed mid-response: {:?}",
                String::from_utf8_lossy(buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    let end = fill(stream, buf, |b| {
        b.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
    });
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap().to_string();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let mut response = RawResponse {
        status_line,
        headers,
        body: Vec::new(),
    };
    let status: u16 = response.status_line[9..12].parse().unwrap();
    if head_only || status == 204 || status == 304 {
        return response;
    }
    if response
        .header("transfer-encoding")
        .is_some_and(|t| t.ends_with("chunked"))
    {
        loop {
            let line_end = fill(stream, buf, |b| b.windows(2).position(|w| w == b"\r\n"));
            let size = usize::from_str_radix(String::from_utf8_lossy(&buf[..line_end]).trim(), 16).unwrap();
            buf.drain(..line_end + 2);
            if size == 0 {
                let end = fill(stream, buf, |b| b.windows(2).position(|w| w == b"\r\n"));
                buf.drain(..end + 2);
                return response;
            }
            fill(stream, buf, |b| (b.len() >= size + 2).then_some(size + 2));
            response.body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
        }
    }
    let length: usize = response
        .header("content-length")
        .map_or(0, |v| v.parse().unwrap());
    fill(stream, buf, |b| (b.len() >= length).then_some(length));
    response.body = buf.drain(..length).collect();
    response
}

#[test]
fn one_http1_connection_is_served_by_weirs_server_then_hypers() {
    let (_e, backend) = echo("raw");
    let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let bootstrap = static_bootstrap(
        "raw",
        &socket_address(listener),
        backend,
        "",
        "              - match: {prefix: /local}
                direct_response: {status: 503, body: {inline_string: local}}
",
    );
    let _p = proxy_on("raw-http1", listener, &bootstrap);
    let connect = || {
        let s = TcpStream::connect(listener).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    };

    let mut conn = connect();
    let mut buf = Vec::new();
    // Two requests in one write: answered in order.
    conn.write_all(
        b"GET /a HTTP/1.1\r\nhost: svc\r\n\r\nGET /b?q=1 HTTP/1.1\r\nHost: svc\r\nX-Mixed-Case: v\r\n\r\n",
    )
    .unwrap();
    let first = read_response(&mut conn, &mut buf, false);
    let second = read_response(&mut conn, &mut buf, false);
    assert_eq!(first.status_line, "HTTP/1.1 200 OK");
    assert_eq!(first.json()["uri"], "/a");
    assert_eq!(second.json()["uri"], "/b?q=1");
    assert_eq!(second.json()["headers"]["x-mixed-case"], "v");
    assert!(first.header("date").is_some(), "{first:?}");
    assert_eq!(first.header("x-echo-server"), Some("raw"));
    assert!(
        first.header("x-envoy-upstream-service-time").is_some(),
        "{first:?}"
    );
    // A chunked answer of unknown length (three chunks from the backend).
    conn.write_all(b"GET /stream/3/20 HTTP/1.1\r\nhost: svc\r\n\r\n")
        .unwrap();
    let streamed = read_response(&mut conn, &mut buf, false);
    assert_eq!(
        streamed.header("transfer-encoding"),
        Some("chunked"),
        "{streamed:?}"
    );
    assert_eq!(
        String::from_utf8_lossy(&streamed.body).lines().count(),
        3,
        "{streamed:?}"
    );
    // HEAD: the length the backend declared, no body (the next answer follows at once).
    conn.write_all(b"HEAD /h HTTP/1.1\r\nhost: svc\r\n\r\nGET /local HTTP/1.1\r\nhost: svc\r\n\r\n")
        .unwrap();
    let head = read_response(&mut conn, &mut buf, true);
    assert!(
        head.header("content-length").is_some_and(|l| l != "0"),
        "{head:?}"
    );
    let local = read_response(&mut conn, &mut buf, false);
    assert_eq!(
        (local.status_line.as_str(), local.body.as_slice()),
        ("HTTP/1.1 503 Service Unavailable", &b"local"[..])
    );
    // A request with a body: hyper's server takes the connection from here, the body whole.
    conn.write_all(b"POST /c HTTP/1.1\r\nhost: svc\r\ncontent-length: 5\r\n\r\nhello")
        .unwrap();
    let posted = read_response(&mut conn, &mut buf, false);
    assert_eq!(
        (
            posted.json()["uri"].as_str(),
            posted.json()["body_bytes"].as_u64()
        ),
        (Some("/c"), Some(5))
    );
    conn.write_all(b"GET /d HTTP/1.1\r\nhost: svc\r\nconnection: close\r\n\r\n")
        .unwrap();
    let last = read_response(&mut conn, &mut buf, false);
    assert_eq!(last.json()["uri"], "/d");
    assert_eq!(last.header("connection"), Some("close"), "{last:?}");
    assert_eq!(
        conn.read(&mut [0u8; 16]).unwrap(),
        0,
        "closed after connection: close"
    );

    // `connection: close` on a request Weir's server answers: said, then closed.
    let mut conn = connect();
    let mut buf = Vec::new();
    conn.write_all(b"GET /e HTTP/1.1\r\nhost: svc\r\nconnection: close\r\n\r\n")
        .unwrap();
    let closing = read_response(&mut conn, &mut buf, false);
    assert_eq!(closing.json()["uri"], "/e");
    assert_eq!(closing.header("connection"), Some("close"), "{closing:?}");
    assert_eq!(
        conn.read(&mut [0u8; 16]).unwrap(),
        0,
        "closed after connection: close"
    );

    // What only hyper's server takes: HTTP/1.0, a malformed head, an oversized one.
    let mut conn = connect();
    conn.write_all(b"GET /old HTTP/1.0\r\nhost: svc\r\n\r\n").unwrap();
    let old = read_response(&mut conn, &mut Vec::new(), false);
    assert!(old.status_line.starts_with("HTTP/1.0 200"), "{old:?}");
    assert_eq!(old.json()["uri"], "/old");
    let mut conn = connect();
    conn.write_all(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n")
        .unwrap();
    let bad = read_response(&mut conn, &mut Vec::new(), false);
    assert!(bad.status_line.starts_with("HTTP/1.1 400"), "{bad:?}");
    let mut conn = connect();
    let huge = format!(
        "GET / HTTP/1.1\r\nhost: svc\r\nx-big: {}\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    // The proxy may close before reading it all.
    let _ = conn.write_all(huge.as_bytes());
    let too_large = read_response(&mut conn, &mut Vec::new(), false);
    assert!(too_large.status_line.starts_with("HTTP/1.1 431"), "{too_large:?}");

    // A client that goes away mid-request leaves the proxy serving the next one.
    let mut gone = connect();
    gone.write_all(b"GET /slow HTTP/1.1\r\nhost: svc\r\nx-echo-delay-ms: 300\r\n\r\n")
        .unwrap();
    drop(gone);
    let mut conn = connect();
    conn.write_all(b"GET /after HTTP/1.1\r\nhost: svc\r\n\r\n")
        .unwrap();
    assert_eq!(
        read_response(&mut conn, &mut Vec::new(), false).json()["uri"],
        "/after"
    );
}

#[test]
fn an_injected_abort_answers_with_the_response_body_the_fault_filter_names() {
    let (_e, backend) = echo("fault-body");
    let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let fault = |abort: &str| {
        format!(
            "\"@type\": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault\n                    abort: {{{abort}, percentage: {{numerator: 100}}}}"
        )
    };
    // A gRPC abort on one route (its own fault settings), the filter's HTTP abort elsewhere.
    let routes = format!(
        "              - match: {{prefix: /grpc}}
                route: {{cluster: backend}}
                typed_per_filter_config:
                  envoy.filters.http.fault:
                    {}
              - match: {{prefix: /plain}}
                route: {{cluster: backend}}
                typed_per_filter_config:
                  envoy.filters.http.fault:
                    {}
",
        fault("grpc_status: 14, response_body: \"drained: 100% ✓\""),
        fault("http_status: 418"),
    );
    let text = static_bootstrap("faults", &socket_address(listener), backend, "", &routes)
        .replace(
            "          http_filters:\n",
            &format!(
                "          http_filters:\n          - name: envoy.filters.http.fault\n            typed_config:\n              {}\n",
                fault("http_status: 503, response_body: maintenance window")
                    .replace("\n                    ", "\n              ")
            ),
        );
    let _proxy = proxy_on("fault-body", listener, &text);
    let client = Client::new();
    let r = client.direct(listener, "GET", "/", &[], "");
    assert_eq!((r.status, r.body.as_str()), (503, "maintenance window"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    let r = client.direct(listener, "GET", "/grpc", &[], "");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("grpc-status"), Some("14"));
    // Percent-encoded as gRPC requires: `%` and the bytes outside printable ASCII.
    assert_eq!(
        r.header("grpc-message"),
        Some("drained: 100%25 %E2%9C%93"),
        "{r:?}"
    );
    // Without a body of its own, an abort says what Envoy says.
    let r = client.direct(listener, "GET", "/plain", &[], "");
    assert_eq!((r.status, r.body.as_str()), (418, "fault filter abort"));
}

#[test]
fn the_router_adds_its_x_envoy_headers_unless_told_to_suppress_them() {
    let (_e, backend) = echo("suppress");
    let client = Client::new();
    // A bootstrap on `listener` whose router filter has the extra `router` lines.
    let bootstrap = |label: &str, listener: SocketAddr, router: &str| {
        const ROUTER: &str =
            "\"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n";
        static_bootstrap(label, &socket_address(listener), backend, "", "")
            .replace(ROUTER, &format!("{ROUTER}{router}"))
    };
    let proxy = |label: &str, router: &str| {
        let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
        (
            proxy_on(label, listener, &bootstrap(label, listener, router)),
            listener,
        )
    };
    // The route has a 5 s timeout: the upstream is told so, and the client how long it took.
    let (_plain, plain) = proxy("router-plain", "");
    let r = client.direct(plain, "GET", "/", &[], "");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.header("x-envoy-upstream-service-time").is_some(), "{r:?}");
    assert_eq!(r.json()["headers"]["x-envoy-expected-rq-timeout-ms"], "5000");
    let (_quiet, quiet) = proxy(
        "router-suppress",
        "              suppress_envoy_headers: true\n              dynamic_stats: false\n",
    );
    let r = client.direct(quiet, "GET", "/", &[], "");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-envoy-upstream-service-time"), None, "{r:?}");
    assert!(
        r.json()["headers"]
            .get("x-envoy-expected-rq-timeout-ms")
            .is_none(),
        "{r:?}"
    );
    // What the router cannot do is refused by name.
    let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let strict = bootstrap(
        "strict",
        listener,
        "              strict_check_headers: [x-envoy-max-retries]\n",
    );
    let refused = refused_bootstrap("router-strict", &strict);
    assert!(
        refused.contains("router.strict_check_headers is not supported"),
        "{refused}"
    );
}

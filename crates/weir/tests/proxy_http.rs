//! `weir run` end to end over real sockets: `weir echo` backends, the embedded control plane,
//! the local sidecar's forward-proxy port, and hyper's HTTP client. Routing (weighted, by
//! header), configuration edits while running, route actions, timeouts and retries, failure
//! paths, and the admin endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

mod support;

use std::time::Duration;

use support::{Mesh, echo, http_service, subsets};

const VS_HEAD: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: hello}\nspec:\n  hosts: [hello.test]\n  http:\n";

fn weighted(v1: u32, v2: u32) -> String {
    format!(
        "{VS_HEAD}  - match:\n    - headers:\n        end-user: {{exact: jason}}\n    route:\n    - destination: {{host: hello.test, subset: v2}}\n  - route:\n    - destination: {{host: hello.test, subset: v1}}\n      weight: {v1}\n    - destination: {{host: hello.test, subset: v2}}\n      weight: {v2}\n"
    )
}

#[test]
fn weighted_and_header_routing_follow_the_virtual_service_and_its_edits() {
    let (_e1, a1) = echo("hello-v1");
    let (_e2, a2) = echo("hello-v2");
    let svc = http_service("hello.test", 80, "hello", &[("v1", a1), ("v2", a2)]);
    let dr = subsets("hello.test", "hello", &["v1", "v2"]);
    let mesh = Mesh::start(
        "weighted",
        &[
            ("svc.yaml", &svc),
            ("dr.yaml", &dr),
            ("vs.yaml", &weighted(75, 25)),
        ],
        &[],
    );
    let n = 400;
    let v1 = (0..n)
        .filter(|_| {
            let r = mesh.get("http://hello.test/", &[]);
            assert_eq!(r.status, 200, "{r:?}");
            r.server() == Some("hello-v1")
        })
        .count();
    let share = v1 as f64 / n as f64;
    // 75% ± 4.5 standard deviations of a binomial(400, 0.75).
    assert!((0.65..=0.85).contains(&share), "v1 share {share}");
    for _ in 0..20 {
        assert_eq!(
            mesh.get("http://hello.test/", &[("end-user", "jason")]).server(),
            Some("hello-v2")
        );
    }
    // The echo saw the request as Envoy forwards it.
    let seen = mesh.get("http://hello.test/some/path?q=1", &[]).json();
    assert_eq!(seen["uri"], "/some/path?q=1");
    assert_eq!(seen["headers"]["host"], "hello.test");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "http");
    assert_eq!(seen["headers"]["x-request-id"].as_str().unwrap().len(), 36);
    assert!(seen["headers"]["proxy-connection"].is_null());
    // HEAD: no body, and the upstream's content-length kept.
    let get = mesh.get("http://hello.test/some/path", &[]);
    let head = mesh
        .client
        .via_proxy(mesh.proxy, "HEAD", "http://hello.test/some/path", &[], "");
    assert_eq!(head.status, 200, "{head:?}");
    assert!(head.body.is_empty(), "{head:?}");
    let length = head.header("content-length").expect("content-length");
    // The echo's answer names the method: one byte longer for HEAD than for GET.
    assert_eq!(length, (get.body.len() + 1).to_string(), "{head:?}");

    // An edit is applied while running: everything to v1.
    mesh.write("vs.yaml", &weighted(100, 0));
    mesh.eventually("all traffic on v1", || {
        (0..20).all(|_| mesh.get("http://hello.test/", &[]).server() == Some("hello-v1"))
    });
}

#[test]
fn route_actions_rewrite_redirect_answer_and_edit_headers() {
    let (_e, a) = echo("actions");
    let svc = http_service("web.test", 80, "web", &[("v1", a)]);
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web}\nspec:\n  hosts: [web.test]\n  http:\n  - match: [{uri: {prefix: /old}}]\n    rewrite: {uri: /new, authority: rewritten.test}\n    route: [{destination: {host: web.test}}]\n  - match: [{uri: {exact: /moved}}]\n    redirect: {uri: /elsewhere, authority: other.test, redirectCode: 308}\n  - match: [{uri: {prefix: /teapot}}]\n    directResponse: {status: 418, body: {string: short and stout}}\n  - match: [{uri: {prefix: /cors}}]\n    corsPolicy:\n      allowOrigins: [{exact: 'https://app.test'}]\n      allowMethods: [GET, POST]\n      allowHeaders: [x-custom]\n      maxAge: 60s\n    route: [{destination: {host: web.test}}]\n  - headers:\n      request:\n        set: {x-set: by-mesh}\n        remove: [x-secret]\n      response:\n        add: {x-added: 'yes'}\n        remove: [x-echo-server]\n    route: [{destination: {host: web.test}}]\n";
    let mesh = Mesh::start("actions", &[("svc.yaml", &svc), ("vs.yaml", vs)], &[]);

    let r = mesh.get("http://web.test/old/page?x=1", &[]);
    let seen = r.json();
    assert_eq!(seen["uri"], "/new/page?x=1");
    assert_eq!(seen["headers"]["host"], "rewritten.test");
    assert_eq!(seen["headers"]["x-envoy-original-path"], "/old/page");

    let r = mesh.get("http://web.test/moved?keep=1", &[]);
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("http://other.test/elsewhere?keep=1"));

    let r = mesh.get("http://web.test/teapot", &[]);
    assert_eq!((r.status, r.body.as_str()), (418, "short and stout"));

    let pre = mesh.client.via_proxy(
        mesh.proxy,
        "OPTIONS",
        "http://web.test/cors",
        &[
            ("origin", "https://app.test"),
            ("access-control-request-method", "POST"),
        ],
        "",
    );
    assert_eq!(pre.status, 200);
    assert_eq!(
        pre.header("access-control-allow-origin"),
        Some("https://app.test")
    );
    assert_eq!(pre.header("access-control-allow-methods"), Some("GET,POST"));
    assert_eq!(pre.header("access-control-max-age"), Some("60"));
    let simple = mesh.get("http://web.test/cors", &[("origin", "https://app.test")]);
    assert_eq!(
        simple.header("access-control-allow-origin"),
        Some("https://app.test")
    );
    let other = mesh.get("http://web.test/cors", &[("origin", "https://evil.test")]);
    assert_eq!(other.header("access-control-allow-origin"), None);

    let r = mesh.get(
        "http://web.test/plain",
        &[("x-secret", "s3cret"), ("x-set", "client")],
    );
    let seen = r.json();
    assert_eq!(seen["headers"]["x-set"], "by-mesh");
    assert!(seen["headers"]["x-secret"].is_null());
    assert_eq!(r.header("x-added"), Some("yes"));
    assert_eq!(r.server(), None, "x-echo-server is removed from the response");
}

#[test]
fn request_paths_are_normalised_as_the_mesh_config_says() {
    let (_e, a) = echo("paths");
    let svc = http_service("web.test", 80, "web", &[("v1", a)]);
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web}\nspec:\n  hosts: [web.test]\n  http:\n  - match: [{uri: {prefix: /admin}}]\n    directResponse: {status: 403, body: {string: admins only}}\n  - route: [{destination: {host: web.test}}]\n";
    let mesh = Mesh::start("paths", &[("svc.yaml", &svc), ("vs.yaml", vs)], &[]);
    // Istio's default (`BASE`): dot segments are resolved before routing.
    let r = mesh.get("http://web.test/app/../admin/users", &[]);
    assert_eq!((r.status, r.body.as_str()), (403, "admins only"));
    assert_eq!(
        mesh.get("http://web.test/app/./x/%41", &[]).json()["uri"],
        "/app/x/A"
    );
    // `NONE`: paths go upstream as they came.
    let level = |name: &str| format!("pathNormalization:\n  normalization: {name}\n");
    mesh.write("mesh.yaml", &level("NONE"));
    mesh.eventually("paths kept as sent", || {
        mesh.get("http://web.test/app/../admin/users", &[]).status == 200
    });
    // `DECODE_AND_MERGE_SLASHES`: escaped slashes decoded and slashes merged too.
    mesh.write("mesh.yaml", &level("DECODE_AND_MERGE_SLASHES"));
    mesh.eventually("escaped slashes decoded", || {
        mesh.get("http://web.test/app%2F..%2F%2Fadmin", &[]).status == 403
    });
    assert_eq!(mesh.get("http://web.test//a%2fb", &[]).json()["uri"], "/a/b");
}

#[test]
fn timeouts_retries_and_istio_default_retry_policy() {
    let (_e, a) = echo("slow");
    let svc = http_service("slow.test", 80, "slow", &[("v1", a)]);
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: slow}\nspec:\n  hosts: [slow.test]\n  http:\n  - match: [{uri: {prefix: /delay}}, {uri: {prefix: /stream}}]\n    timeout: 0.5s\n    route: [{destination: {host: slow.test}}]\n  - match: [{uri: {prefix: /flaky/retried}}]\n    retries: {attempts: 3, retryOn: 5xx}\n    route: [{destination: {host: slow.test}}]\n  - match: [{uri: {prefix: /flaky/never}}]\n    retries: {attempts: 0}\n    route: [{destination: {host: slow.test}}]\n  - route: [{destination: {host: slow.test}}]\n";
    let mesh = Mesh::start("timeouts", &[("svc.yaml", &svc), ("vs.yaml", vs)], &[]);

    let r = mesh.get("http://slow.test/delay/3000", &[]);
    assert_eq!(r.status, 504, "{r:?}");
    assert_eq!(r.body, "upstream request timeout");
    assert!(r.elapsed < Duration::from_millis(2500), "{:?}", r.elapsed);
    assert_eq!(mesh.get("http://slow.test/delay/10", &[]).status, 200);
    // The timeout covers the whole response: a body still streaming is cut at 0.5 s (the
    // head has gone out, so the stream is reset) …
    let cut = mesh.get("http://slow.test/stream/10/150", &[]);
    assert_eq!(cut.status, 200, "{cut:?}");
    let chunks = cut.body.lines().count();
    assert!(chunks < 10, "the body was not cut: {cut:?}");
    assert!(
        (Duration::from_millis(450)..Duration::from_millis(1300)).contains(&cut.elapsed),
        "{:?}",
        cut.elapsed
    );
    // … and one that ends in time is whole.
    let whole = mesh.get("http://slow.test/stream/3/100", &[]);
    assert_eq!(whole.body.lines().count(), 3, "{whole:?}");
    // `x-envoy-upstream-rq-timeout-ms` overrides the route's timeout.
    let r = mesh.get(
        "http://slow.test/delay/800",
        &[("x-envoy-upstream-rq-timeout-ms", "2000")],
    );
    assert_eq!(r.status, 200);

    // attempts: 3 → fails twice, then succeeds.
    assert_eq!(mesh.get("http://slow.test/flaky/retried-a/2", &[]).status, 200);
    // … and 4 failures exhaust them.
    assert_eq!(mesh.get("http://slow.test/flaky/retried-b/4", &[]).status, 503);
    // attempts: 0 → no retry.
    assert_eq!(mesh.get("http://slow.test/flaky/never-a/1", &[]).status, 503);
    // Istio's default policy retries a 503 twice (retriable-status-codes 503).
    assert_eq!(mesh.get("http://slow.test/flaky/default-a/2", &[]).status, 200);
    assert_eq!(mesh.get("http://slow.test/flaky/default-b/3", &[]).status, 503);
    let stats = mesh.admin("/stats").body;
    assert!(
        stats.contains("cluster.outbound|80||slow.test.upstream_rq_retry: "),
        "{stats}"
    );
    assert!(
        !stats.contains("cluster.outbound|80||slow.test.upstream_rq_retry: 0\n"),
        "{stats}"
    );
}

#[test]
fn failures_are_answered_with_envoys_statuses_and_reasons() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (_e, a) = echo("ok");
    let refused = http_service("refused.test", 80, "refused", &[("v1", closed)]);
    let ok = http_service("ok.test", 80, "ok", &[("v1", a)]);
    let dns = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: nowhere}\nspec:\n  hosts: [nowhere.test]\n  ports: [{number: 8080, name: http, protocol: HTTP}]\n  resolution: DNS\n  endpoints: [{address: no-such-host.invalid}]\n";
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ok}\nspec:\n  hosts: [ok.test]\n  http:\n  - match: [{uri: {prefix: /api}}]\n    route: [{destination: {host: ok.test}}]\n";
    let mesh = Mesh::start(
        "failures",
        &[
            ("refused.yaml", &refused),
            ("ok.yaml", &ok),
            ("dns.yaml", dns),
            ("vs.yaml", vs),
        ],
        &[],
    );
    let r = mesh.get("http://refused.test/", &[]);
    assert_eq!(r.status, 503);
    assert!(
        r.body.contains("upstream connect error") && r.body.contains("connection failure"),
        "{}",
        r.body
    );
    let r = mesh.get("http://nowhere.test:8080/", &[]);
    assert_eq!(r.status, 503, "{r:?}");
    assert!(
        r.body.contains("no healthy upstream") || r.body.contains("DNS"),
        "{}",
        r.body
    );
    assert_eq!(mesh.get("http://ok.test/api/x", &[]).status, 200);
    assert_eq!(mesh.get("http://ok.test/other", &[]).status, 404);
    let metrics = mesh.admin("/stats/prometheus").body;
    assert!(
        metrics.contains("destination_service=\"refused.test\"")
            && metrics.contains("response_flags=\"UF,URX\""),
        "{metrics}"
    );
    assert!(metrics.contains("response_flags=\"NR\""), "{metrics}");
}

#[test]
fn registry_only_blocks_unknown_hosts_with_502() {
    let (_e, a) = echo("known");
    let svc = http_service("known.test", 80, "known", &[("v1", a)]);
    let sidecar = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default}\nspec:\n  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n";
    let mesh = Mesh::start(
        "registry-only",
        &[("svc.yaml", &svc), ("sidecar.yaml", sidecar)],
        &[],
    );
    assert_eq!(mesh.get("http://known.test/", &[]).status, 200);
    let blocked = mesh.get("http://unknown.test/", &[]);
    assert_eq!(blocked.status, 502, "{blocked:?}");
}

#[test]
fn the_admin_endpoint_reports_readiness_configuration_hosts_and_metrics() {
    let (_e, a) = echo("adm");
    let svc = http_service("adm.test", 80, "adm", &[("v1", a)]);
    let mesh = Mesh::start("admin", &[("svc.yaml", &svc)], &[]);
    let posted = "x".repeat(1000);
    let r = mesh
        .client
        .via_proxy(mesh.proxy, "POST", "http://adm.test/", &[], &posted);
    assert_eq!((r.status, r.json()["body_bytes"].as_u64()), (200, Some(1000)));
    let ready = mesh.admin("/ready");
    assert_eq!((ready.status, ready.body.trim()), (200, "LIVE"));
    let dump: serde_json::Value = serde_json::from_str(&mesh.admin("/config_dump").body).unwrap();
    let configs = dump["configs"].as_array().unwrap();
    let clusters = &configs[0]["dynamic_active_clusters"];
    assert!(
        clusters
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["cluster"]["name"] == "outbound|80||adm.test"),
        "{clusters}"
    );
    assert!(
        configs[1]["dynamic_listeners"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["name"] == "0.0.0.0_80")
    );
    let hosts = mesh.admin("/clusters").body;
    assert!(
        hosts.contains(&format!("outbound|80||adm.test::{a}::health_flags::healthy")),
        "{hosts}"
    );
    assert!(
        hosts.contains(&format!("outbound|80||adm.test::{a}::rq_total::1")),
        "{hosts}"
    );
    let metrics = mesh.admin("/stats/prometheus").body;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("istio_requests_total{") && l.contains("destination_service=\"adm.test\""))
        .unwrap_or_else(|| panic!("{metrics}"));
    for label in [
        "reporter=\"source\"",
        "source_workload=\"weir-local\"",
        "response_code=\"200\"",
        "request_protocol=\"http\"",
    ] {
        assert!(line.contains(label), "{label} missing in {line}");
    }
    assert!(line.ends_with(" 1"), "{line}");
    let size = |name: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!("{name}_sum{{")) && l.contains("destination_service=\"adm.test\"")
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name}_sum: {metrics}"))
    };
    assert_eq!(size("istio_request_bytes"), 1000.0);
    assert!(size("istio_response_bytes") > 0.0);
    assert!(
        metrics.contains("istio_request_duration_milliseconds_bucket{"),
        "{metrics}"
    );
}

#[test]
fn http2_prior_knowledge_on_service_addresses_reaches_an_http2_upstream() {
    let (_e, a) = echo("h2-backend");
    let svc = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: h2}}\nspec:\n  hosts: [h2.test]\n  ports: [{{number: 18080, name: http2, protocol: HTTP2, targetPort: {}}}]\n  resolution: STATIC\n  endpoints: [{{address: {}}}]\n",
        a.port(),
        a.ip()
    );
    let mesh = Mesh::start(
        "h2c",
        &[("svc.yaml", &svc)],
        &["--allocation-range", "127.241.0.0/16"],
    );
    let line = mesh.run.wait_line("h2.test on ", Duration::from_secs(10));
    let vip = support::address_in(&line, "h2.test on ");
    // HTTP/2 with prior knowledge (h2c) from the client to the service address…
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, body) = rt.block_on(async {
        use http_body_util::BodyExt;
        let stream = tokio::net::TcpStream::connect(vip).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .uri("http://h2.test:18080/over-h2")
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    });
    assert_eq!(status, 200, "{body}");
    // … and from the proxy to the upstream, as the port's protocol says.
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["protocol"], "HTTP/2.0", "{seen}");
    assert_eq!(seen["uri"], "http://h2.test:18080/over-h2");
}

#[test]
fn consistent_hashing_keeps_a_user_on_one_backend_and_faults_are_injected() {
    let (_e1, a1) = echo("hash-a");
    let (_e2, a2) = echo("hash-b");
    let (_e3, a3) = echo("hash-c");
    let svc = http_service("hash.test", 80, "hash", &[("a", a1), ("b", a2), ("c", a3)]);
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: hash}\nspec:\n  host: hash.test\n  trafficPolicy:\n    loadBalancer:\n      consistentHash: {httpHeaderName: x-user}\n";
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: hash}\nspec:\n  hosts: [hash.test]\n  http:\n  - match: [{uri: {prefix: /abort}}]\n    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}\n    route: [{destination: {host: hash.test}}]\n  - match: [{uri: {prefix: /delay}}]\n    fault: {delay: {fixedDelay: 0.3s, percentage: {value: 100}}}\n    route: [{destination: {host: hash.test}}]\n  - route: [{destination: {host: hash.test}}]\n";
    let mesh = Mesh::start(
        "hashing",
        &[("svc.yaml", &svc), ("dr.yaml", dr), ("vs.yaml", vs)],
        &[],
    );
    let mut seen = std::collections::BTreeSet::new();
    for user in 0..30 {
        let header = format!("user-{user}");
        let first = mesh
            .get("http://hash.test/", &[("x-user", &header)])
            .server()
            .map(str::to_string);
        for _ in 0..5 {
            let again = mesh
                .get("http://hash.test/", &[("x-user", &header)])
                .server()
                .map(str::to_string);
            assert_eq!(again, first, "{header} moved");
        }
        seen.extend(first);
    }
    assert!(seen.len() >= 2, "30 users all hashed to {seen:?}");

    let r = mesh.get("http://hash.test/abort", &[]);
    assert_eq!((r.status, r.body.as_str()), (418, "fault filter abort"));
    let r = mesh.get("http://hash.test/delay", &[]);
    assert_eq!(r.status, 200);
    assert!(r.elapsed >= Duration::from_millis(300), "{:?}", r.elapsed);
    let metrics = mesh.admin("/stats/prometheus").body;
    assert!(
        metrics.contains("response_flags=\"FI\"") && metrics.contains("response_flags=\"DI\""),
        "{metrics}"
    );
}

/// Sends one HTTP/1.1 request on a kept-alive connection and reads the response head and its
/// `content-length` body: (status, whether the proxy said `connection: close`).
fn exchange(stream: &mut std::net::TcpStream, host: &str, extra: &str) -> (u16, bool) {
    use std::io::{BufRead, BufReader, Read, Write};
    write!(stream, "GET / HTTP/1.1\r\nhost: {host}\r\n{extra}\r\n").unwrap();
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {status_line:?}"));
    let (mut length, mut close) = (0usize, false);
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end().to_ascii_lowercase();
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        close |= line == "connection: close";
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (status, close)
}

#[test]
fn route_timeouts_hold_for_each_request_on_a_kept_alive_connection() {
    // The requests of one connection share a timer (`weir_proxy::request_timer`): armed for a
    // later deadline it must move earlier, armed for an earlier one it must not cut a request
    // whose own deadline is later.
    let (_e, a) = echo("timed");
    let svc = http_service("timed.test", 18092, "timed", &[("v1", a)]);
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: timed}\nspec:\n  hosts: [timed.test]\n  http:\n  - match: [{headers: {x-timeout: {exact: short}}}]\n    timeout: 0.4s\n    route: [{destination: {host: timed.test}}]\n  - timeout: 5s\n    route: [{destination: {host: timed.test}}]\n";
    let mesh = Mesh::start(
        "timed",
        &[("svc.yaml", &svc), ("vs.yaml", vs)],
        &["--allocation-range", "127.243.0.0/16"],
    );
    let vip = support::address_in(
        &mesh.run.wait_line("timed.test on ", Duration::from_secs(10)),
        "timed.test on ",
    );
    let mut conn = std::net::TcpStream::connect(vip).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut timed = |extra: &str| {
        let started = std::time::Instant::now();
        let (status, close) = exchange(&mut conn, "timed.test:18092", extra);
        assert!(!close, "the connection stays open");
        (status, started.elapsed())
    };
    let short_cut = |(status, elapsed): (u16, Duration)| {
        status == 504 && (Duration::from_millis(350)..Duration::from_millis(1500)).contains(&elapsed)
    };
    // 5 s, answered at once: the timer stays armed 5 s away.
    assert_eq!(timed("").0, 200);
    // 0.4 s: the timer moves earlier and cuts the request there.
    let r = timed("x-timeout: short\r\nx-echo-delay-ms: 3000\r\n");
    assert!(short_cut(r), "{r:?}");
    // 0.4 s, answered in 100 ms; the timer stays armed for this deadline …
    assert_eq!(timed("x-timeout: short\r\nx-echo-delay-ms: 100\r\n").0, 200);
    // … which passes while the next request (5 s) waits 800 ms: not cut.
    let r = timed("x-echo-delay-ms: 800\r\n");
    assert_eq!(r.0, 200, "{r:?}");
    assert!(r.1 >= Duration::from_millis(750), "{r:?}");
    let r = timed("x-timeout: short\r\nx-echo-delay-ms: 3000\r\n");
    assert!(short_cut(r), "{r:?}");
}

#[test]
fn a_changed_listener_drains_its_kept_alive_connections_after_the_request_in_flight() {
    use std::io::Read;
    let (_e, a) = echo("drained");
    let svc = http_service("drain.test", 18090, "drained", &[("v1", a)]);
    let mesh = Mesh::start(
        "drain",
        &[("svc.yaml", &svc)],
        &["--allocation-range", "127.242.0.0/16"],
    );
    let vip = support::address_in(
        &mesh.run.wait_line("drain.test on ", Duration::from_secs(10)),
        "drain.test on ",
    );
    let mut kept = std::net::TcpStream::connect(vip).unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(exchange(&mut kept, "drain.test:18090", ""), (200, false));

    // A service on another port changes another listener: this connection stays.
    let other = http_service("other.test", 18091, "other", &[("v1", a)]);
    mesh.write("other.yaml", &other);
    mesh.run.wait_line("other.test on ", Duration::from_secs(10));
    assert_eq!(exchange(&mut kept, "drain.test:18090", ""), (200, false));

    // A TCP service on the same port changes this connection's listener (`0.0.0.0_18090` gets
    // a chain of its own) while a slow request is in flight: the request is answered, with
    // `connection: close`, and the connection ends; a new one gets the new configuration.
    let mut slow = kept.try_clone().unwrap();
    let in_flight =
        std::thread::spawn(move || exchange(&mut slow, "drain.test:18090", "x-echo-delay-ms: 1500\r\n"));
    std::thread::sleep(Duration::from_millis(300));
    let tcp = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: db}\nspec:\n  hosts: [db.test]\n  ports: [{number: 18090, name: tcp, protocol: TCP}]\n  resolution: STATIC\n  endpoints: [{address: 127.0.0.1}]\n";
    mesh.write("tcp.yaml", tcp);
    mesh.run.wait_line("db.test on ", Duration::from_secs(10));
    assert_eq!(in_flight.join().unwrap(), (200, true));
    let mut rest = Vec::new();
    assert_eq!(kept.read_to_end(&mut rest).unwrap(), 0, "the connection ends");
    let mut fresh = std::net::TcpStream::connect(vip).unwrap();
    fresh.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(exchange(&mut fresh, "drain.test:18090", ""), (200, false));
}

#[test]
fn a_dynamic_dns_service_entry_reaches_its_host_by_name_through_the_forward_proxy() {
    let (_e, backend) = echo("dynamic-dns");
    let port = backend.port();
    let se = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: by-name}}\nspec:\n  hosts: [\"*.localhost\"]\n  location: MESH_EXTERNAL\n  ports:\n  - {{number: {port}, name: http, protocol: HTTP}}\n  resolution: DYNAMIC_DNS\n"
    );
    let mesh = Mesh::start("dynamic-dns", &[("se.yaml", &se)], &[]);
    // Names under `localhost.` resolve to the loopback addresses (RFC 6761), on any machine.
    let r = mesh.get(&format!("http://app.localhost:{port}/by-name"), &[]);
    assert_eq!((r.status, r.server()), (200, Some("dynamic-dns")), "{r:?}");
    // Through the dynamic forward proxy cluster, not the passthrough one.
    let dump = mesh.admin("/config_dump").body;
    assert!(dump.contains("envoy.clusters.dynamic_forward_proxy"), "{dump}");
    let stats = mesh.admin("/stats").body;
    let sent = format!("cluster.outbound|{port}||*.localhost.upstream_rq_total: 1");
    assert!(stats.contains(&sent), "{stats}");
}

//! Resilience end to end, as Istio's tasks show it, with `weir echo` backends: circuit
//! breaking (overflow answered 503 with `x-envoy-overloaded`), outlier detection (a failing
//! instance ejected, then back), mirroring (the mirror sees the traffic, the client never its
//! answers), fault injection for one user and for a share of requests, and locality failover.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::{
    Client, Mesh, Proc, Standalone, echo, echo_with, eventually, folder, free_port, http_service, standalone,
    wait_ready,
};

/// A `weir echo` answering `status` to everything.
fn failing_echo(name: &str, status: u16) -> (Proc, SocketAddr) {
    echo_with(name, &["--status", &status.to_string()])
}

fn stat(mesh: &Mesh, name: &str) -> u64 {
    let stats = mesh.admin("/stats").body;
    stats
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(": ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /stats:\n{stats}"))
}

#[test]
fn concurrent_load_beyond_the_connection_pool_is_answered_503_overflow() {
    let (_e, a) = echo("pool");
    let svc = http_service("pool.test", 80, "pool", &[("v1", a)]);
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: pool}\nspec:\n  host: pool.test\n  trafficPolicy:\n    connectionPool:\n      tcp: {maxConnections: 1}\n      http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1}\n";
    let mesh = Mesh::start("breaker", &[("svc.yaml", &svc), ("dr.yaml", dr)], &[]);
    let proxy = mesh.proxy;
    let slow = move || {
        Client::new().via_proxy(
            proxy,
            "GET",
            "http://pool.test/",
            &[("x-echo-delay-ms", "600")],
            "",
        )
    };
    // One request holds the only connection; while it is in flight one more may wait for it,
    // and the rest overflow at once.
    let first = std::thread::spawn(slow);
    std::thread::sleep(Duration::from_millis(200));
    // Istio asks for the remaining capacity to be published (`track_remaining`).
    let remaining = |what: &str| {
        stat(
            &mesh,
            &format!("cluster.outbound|80||pool.test.circuit_breakers.default.remaining_{what}"),
        )
    };
    assert_eq!((remaining("cx"), remaining("pending")), (0, 1));
    let started = Instant::now();
    let others: Vec<_> = (0..5).map(|_| std::thread::spawn(slow)).collect();
    let others: Vec<_> = others.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(first.join().unwrap().status, 200);
    let overflowed: Vec<_> = others.iter().filter(|r| r.status == 503).collect();
    let served = others.iter().filter(|r| r.status == 200).count();
    assert_eq!((served, overflowed.len()), (1, 4), "{others:#?}");
    for r in &overflowed {
        assert_eq!(r.header("x-envoy-overloaded"), Some("true"), "{r:?}");
        assert!(r.body.contains("reset reason: overflow"), "{r:?}");
        assert!(
            r.elapsed < Duration::from_millis(400),
            "overflow is immediate: {r:?}"
        );
    }
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "the pending request waited"
    );
    assert_eq!(
        stat(
            &mesh,
            "cluster.outbound|80||pool.test.upstream_rq_pending_overflow"
        ),
        4
    );
    let clusters = mesh.admin("/clusters").body;
    assert!(
        clusters.contains("outbound|80||pool.test::default_priority::max_connections::1\n"),
        "{clusters}"
    );
    // With the load gone, requests flow again.
    assert_eq!(mesh.get("http://pool.test/", &[]).status, 200);
}

#[test]
fn requests_waiting_for_the_only_connection_fail_fast_when_it_cannot_be_made() {
    let closed = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let svc = http_service("down.test", 80, "down", &[("v1", closed)]);
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: down}\nspec:\n  host: down.test\n  trafficPolicy:\n    connectionPool:\n      tcp: {maxConnections: 1}\n      http: {http1MaxPendingRequests: 10}\n";
    let mesh = Mesh::start("down", &[("svc.yaml", &svc), ("dr.yaml", dr)], &[]);
    let proxy = mesh.proxy;
    let replies: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || Client::new().via_proxy(proxy, "GET", "http://down.test/", &[], ""))
        })
        .collect();
    for r in replies {
        let r = r.join().unwrap();
        assert_eq!(r.status, 503, "{r:?}");
        assert!(r.body.contains("connection failure"), "{r:?}");
        assert!(
            r.elapsed < Duration::from_secs(5),
            "a waiting request was not woken: {r:?}"
        );
    }
}

#[test]
fn retries_beyond_the_retry_circuit_breaker_are_not_made() {
    let (_e, a) = echo("retry-pool");
    let svc = http_service("retry.test", 80, "retry", &[("v1", a)]);
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: retry}\nspec:\n  host: retry.test\n  trafficPolicy:\n    connectionPool:\n      http: {maxRetries: 1}\n";
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: retry}\nspec:\n  hosts: [retry.test]\n  http:\n  - route: [{destination: {host: retry.test}}]\n    retries: {attempts: 2, retryOn: 5xx}\n";
    let mesh = Mesh::start(
        "retry-breaker",
        &[("svc.yaml", &svc), ("dr.yaml", dr), ("vs.yaml", vs)],
        &[],
    );
    let proxy = mesh.proxy;
    // Four requests fail together after a second; one retry may be in flight at a time, so one
    // request is retried (twice, one after the other) and three answer after their first try.
    let failing = move || {
        Client::new().via_proxy(
            proxy,
            "GET",
            "http://retry.test/",
            &[("x-echo-status", "503"), ("x-echo-delay-ms", "1000")],
            "",
        )
    };
    let replies: Vec<_> = (0..4).map(|_| std::thread::spawn(failing)).collect();
    for r in replies {
        assert_eq!(r.join().unwrap().status, 503);
    }
    let overflow = stat(
        &mesh,
        "cluster.outbound|80||retry.test.upstream_rq_retry_overflow",
    );
    let retried = stat(&mesh, "cluster.outbound|80||retry.test.upstream_rq_retry");
    assert_eq!(
        (retried, overflow),
        (2, 3),
        "retries made, refused by the breaker"
    );
}

#[test]
fn outlier_detection_ejects_the_failing_instance_and_lets_it_back_after_its_time() {
    let (_a, a) = echo("good-a");
    let (_b, b) = echo("good-b");
    let (_c, bad) = failing_echo("bad", 500);
    let svc = http_service("od.test", 80, "od", &[("a", a), ("b", b), ("bad", bad)]);
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: od}\nspec:\n  host: od.test\n  trafficPolicy:\n    outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 3s, maxEjectionPercent: 100}\n";
    let mesh = Mesh::start("outlier", &[("svc.yaml", &svc), ("dr.yaml", dr)], &[]);
    let mut failures = 0;
    for _ in 0..30 {
        let r = mesh.get("http://od.test/", &[]);
        if r.status == 500 {
            assert_eq!(r.server(), Some("bad"));
            failures += 1;
        }
    }
    assert_eq!(failures, 3, "three consecutive 5xx eject the instance");
    let ejected_at = Instant::now();
    let clusters = mesh.admin("/clusters").body;
    let flag = format!("outbound|80||od.test::{bad}::health_flags::/failed_outlier_check");
    assert!(clusters.contains(&flag), "{clusters}");
    assert_eq!(
        stat(
            &mesh,
            "cluster.outbound|80||od.test.outlier_detection.ejections_enforced_consecutive_5xx"
        ),
        1
    );
    assert_eq!(
        stat(
            &mesh,
            "cluster.outbound|80||od.test.outlier_detection.ejections_active"
        ),
        1
    );
    // While ejected, the others take everything.
    while ejected_at.elapsed() < Duration::from_secs(2) {
        let r = mesh.get("http://od.test/", &[]);
        assert_eq!(r.status, 200, "{r:?}");
    }
    // After the ejection time (reviewed at the next interval) it is tried again.
    mesh.eventually("the ejected instance is back", || {
        (0..6).any(|_| mesh.get("http://od.test/", &[]).server() == Some("bad"))
    });
    assert!(ejected_at.elapsed() >= Duration::from_secs(3));
}

fn mirror_config() -> String {
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: main}\nspec:\n  hosts: [main.test]\n  http:\n  - match: [{uri: {prefix: /half}}]\n    route: [{destination: {host: main.test}}]\n    mirror: {host: shadow.test}\n    mirrorPercentage: {value: 50}\n  - route: [{destination: {host: main.test}}]\n    mirror: {host: shadow.test}\n    mirrorPercentage: {value: 100}\n";
    vs.to_string()
}

#[test]
fn mirrored_traffic_reaches_the_mirror_and_its_answers_never_reach_the_client() {
    let (_m, main) = echo("main");
    let (_s, shadow) = failing_echo("shadow", 500);
    let svc = format!(
        "{}---\n{}",
        http_service("main.test", 80, "main", &[("v1", main)]),
        http_service("shadow.test", 80, "shadow", &[("v1", shadow)])
    );
    let mesh = Mesh::start(
        "mirror",
        &[("svc.yaml", &svc), ("vs.yaml", &mirror_config())],
        &[],
    );
    let client = Client::new();
    for i in 0..10 {
        let body = format!("payload-{i}");
        let r = client.via_proxy(mesh.proxy, "POST", "http://main.test/orders", &[], &body);
        assert_eq!((r.status, r.server()), (200, Some("main")), "{r:?}");
        assert_eq!(r.json()["body_bytes"], body.len());
    }
    let seen = || -> Vec<serde_json::Value> {
        client
            .direct(shadow, "GET", "/__requests", &[], "")
            .json()
            .as_array()
            .unwrap()
            .clone()
    };
    eventually("the mirror saw all ten", Duration::from_secs(10), &mut || {
        seen().len() == 10
    });
    for r in seen() {
        assert_eq!(r["authority"], "main.test-shadow", "{r}");
        assert_eq!(
            (r["method"].as_str(), r["path"].as_str()),
            (Some("POST"), Some("/orders"))
        );
    }
    // 50%: a binomial(200, 0.5) count, within ±4.2 standard deviations.
    for _ in 0..200 {
        assert_eq!(mesh.get("http://main.test/half", &[]).status, 200);
    }
    std::thread::sleep(Duration::from_millis(500));
    let half = seen().iter().filter(|r| r["path"] == "/half").count();
    assert!((70..=130).contains(&half), "{half} of 200 mirrored");
    // The mirror down: the client does not notice.
    drop(_s);
    for _ in 0..5 {
        assert_eq!(mesh.get("http://main.test/", &[]).status, 200);
    }
}

#[test]
fn faults_delay_one_user_and_abort_a_share_of_requests() {
    let (_e, a) = echo("ratings");
    let svc = http_service("ratings.test", 80, "ratings", &[("v1", a)]);
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ratings}\nspec:\n  hosts: [ratings.test]\n  http:\n  - match: [{headers: {end-user: {exact: jason}}}]\n    fault: {delay: {fixedDelay: 0.7s, percentage: {value: 100}}}\n    timeout: 0.5s\n    route: [{destination: {host: ratings.test}}]\n  - match: [{uri: {prefix: /half}}]\n    fault: {abort: {httpStatus: 500, percentage: {value: 50}}}\n    route: [{destination: {host: ratings.test}}]\n  - route: [{destination: {host: ratings.test}}]\n";
    let mesh = Mesh::start("faults", &[("svc.yaml", &svc), ("vs.yaml", vs)], &[]);
    let jason = mesh.get("http://ratings.test/", &[("end-user", "jason")]);
    assert_eq!(jason.status, 200);
    assert!(jason.elapsed >= Duration::from_millis(700), "{jason:?}");
    // The route's 0.5 s timeout starts after the delay, as in Envoy (the fault filter comes
    // before the router): an upstream answering in 0.1 s is in time, one taking 0.8 s is not.
    let slow = |ms: &str| {
        mesh.get(
            "http://ratings.test/",
            &[("end-user", "jason"), ("x-echo-delay-ms", ms)],
        )
    };
    let in_time = slow("100");
    assert_eq!(in_time.status, 200, "{in_time:?}");
    let late = slow("800");
    assert_eq!(
        (late.status, late.body.as_str()),
        (504, "upstream request timeout"),
        "{late:?}"
    );
    assert!(late.elapsed >= Duration::from_millis(1200), "{late:?}");
    let other = mesh.get("http://ratings.test/", &[("end-user", "alice")]);
    assert!(other.elapsed < Duration::from_millis(500), "{other:?}");
    let n = 400;
    let aborted = (0..n)
        .filter(|_| {
            let r = mesh.get("http://ratings.test/half", &[]);
            assert!(matches!(r.status, 200 | 500), "{r:?}");
            r.status == 500 && r.body == "fault filter abort"
        })
        .count();
    // binomial(400, 0.5): mean 200, standard deviation 10.
    assert!((160..=240).contains(&aborted), "{aborted} of {n} aborted");
}

/// `geo.test` (HTTP on port 80) served by WorkloadEntries `(name, address, locality)`, with
/// `dr` as its DestinationRule, behind a control plane and a proxy at `proxy_locality`; the
/// proxy is ready.
fn geo_service(
    name: &str,
    entries: &[(&str, SocketAddr, &str)],
    dr: &str,
    proxy_locality: &str,
) -> Standalone {
    let dir = folder(name);
    let mut svc = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: geo}\nspec:\n  hosts: [geo.test]\n  location: MESH_INTERNAL\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n  workloadSelector: {labels: {app: geo}}\n".to_string();
    for (name, address, locality) in entries {
        svc.push_str(&format!(
            "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: {name}}}\nspec:\n  address: {ip}\n  ports: {{http: {port}}}\n  labels: {{app: geo}}\n  locality: {locality}\n",
            ip = address.ip(),
            port = address.port()
        ));
    }
    std::fs::write(dir.join("svc.yaml"), svc).unwrap();
    std::fs::write(dir.join("dr.yaml"), dr).unwrap();
    let mesh = standalone(&dir, &["--locality", proxy_locality]);
    wait_ready(&mesh.client, mesh.admin);
    mesh
}

#[test]
fn locality_failover_moves_traffic_to_the_configured_region_when_the_local_one_fails() {
    let (mut east_proc, east) = echo("us-east");
    let (_w, west) = echo("us-west");
    let (_eu, eu) = echo("eu-central");
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: geo}\nspec:\n  host: geo.test\n  trafficPolicy:\n    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 1m}\n    loadBalancer:\n      simple: ROUND_ROBIN\n      localityLbSetting:\n        enabled: true\n        failover: [{from: us-east, to: us-west}]\n";
    let Standalone {
        control_plane: _cp,
        proxy: _p,
        admin,
        http,
        client,
        ..
    } = geo_service(
        "failover",
        &[
            ("east", east, "us-east/zone-a"),
            ("west", west, "us-west/zone-a"),
            ("eu", eu, "eu-central/zone-a"),
        ],
        dr,
        "us-east/zone-a",
    );
    let server = || {
        client
            .via_proxy(http, "GET", "http://geo.test/", &[], "")
            .server()
            .map(str::to_string)
    };
    for _ in 0..20 {
        assert_eq!(
            server().as_deref(),
            Some("us-east"),
            "the local locality takes everything"
        );
    }
    east_proc.kill();
    // The first failure ejects the local instance; the retry and everything after go to the
    // failover region, never to the farther one.
    for _ in 0..20 {
        assert_eq!(server().as_deref(), Some("us-west"));
    }
    let clusters = client.direct(admin, "GET", "/clusters", &[], "").body;
    assert!(
        clusters.contains(&format!(
            "outbound|80||geo.test::{east}::health_flags::/failed_outlier_check"
        )),
        "{clusters}"
    );
}

#[test]
fn locality_weights_from_distribute_split_the_traffic_between_regions() {
    let (_e1, east_a) = echo("east-a");
    let (_e2, east_b) = echo("east-b");
    let (_w, west) = echo("west");
    // From us-east: 80% to us-east/zone-a, 20% to us-west (us-east/zone-b gets none).
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: geo}\nspec:\n  host: geo.test\n  trafficPolicy:\n    loadBalancer:\n      simple: ROUND_ROBIN\n      localityLbSetting:\n        enabled: true\n        distribute:\n        - from: us-east/*\n          to: {\"us-east/zone-a\": 80, \"us-west/*\": 20}\n";
    let Standalone {
        control_plane: _cp,
        proxy: _p,
        http,
        client,
        ..
    } = geo_service(
        "distribute",
        &[
            ("east-a", east_a, "us-east/zone-a"),
            ("east-b", east_b, "us-east/zone-b"),
            ("west", west, "us-west/zone-a"),
        ],
        dr,
        "us-east/zone-b",
    );
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    let n = 400;
    for _ in 0..n {
        let r = client.via_proxy(http, "GET", "http://geo.test/", &[], "");
        assert_eq!(r.status, 200, "{r:?}");
        *counts.entry(r.server().unwrap_or("?").to_string()).or_default() += 1;
    }
    // Locality-weighted picks are random per request: binomial(400, 0.2) for us-west, mean 80,
    // standard deviation 8; within ±4 of them.
    let west_share = counts.get("west").copied().unwrap_or(0);
    assert!((48..=112).contains(&west_share), "{counts:?}");
    assert_eq!(counts.get("east-b"), None, "{counts:?}");
    assert_eq!(counts.values().sum::<usize>(), n, "{counts:?}");
}

#[test]
fn workload_entries_under_health_checks_take_traffic_only_while_their_probe_passes() {
    let (_a, a) = echo("probed-http");
    let (_b, b) = echo("probed-exec");
    let (_c, c) = echo("probed-503");
    let (_d, d) = echo("probed-tcp");
    let flag = folder("health-flag").join("ready");
    let group = |name: &str, probe: &str| {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata: {{name: {name}}}\nspec:\n  metadata: {{labels: {{app: hc}}}}\n  template: {{ports: {{http: 80}}}}\n  probe:\n    periodSeconds: 1\n    failureThreshold: 1\n    {probe}\n"
        )
    };
    let entry = |name: &str, address: SocketAddr| {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: {name}\n  annotations: {{proxy.istio.io/health-checks-enabled: \"true\", istio.io/autoRegistrationGroup: {name}}}\nspec:\n  address: {ip}\n  ports: {{http: {port}}}\n  labels: {{app: hc}}\n",
            ip = address.ip(),
            port = address.port()
        )
    };
    let config = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: hc}}\nspec:\n  hosts: [hc.test]\n  location: MESH_INTERNAL\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  workloadSelector: {{labels: {{app: hc}}}}\n{}{}{}{}{}{}{}{}",
        entry("http-probed", a),
        group(
            "http-probed",
            &format!("httpGet: {{path: /status/204, port: {}}}", a.port())
        ),
        entry("exec-probed", b),
        group(
            "exec-probed",
            &format!("exec: {{command: [test, -e, {}]}}", flag.display())
        ),
        entry("unavailable", c),
        group(
            "unavailable",
            &format!("httpGet: {{path: /status/503, port: {}}}", c.port())
        ),
        entry("tcp-probed", d),
        group("tcp-probed", &format!("tcpSocket: {{port: {}}}", d.port())),
    );
    let mesh = Mesh::start("health", &[("svc.yaml", &config)], &[]);
    let servers = |n: usize| -> std::collections::BTreeSet<String> {
        (0..n)
            .filter_map(|_| mesh.get("http://hc.test/", &[]).server().map(str::to_string))
            .collect()
    };
    // One HTTP probe passes, the other is answered 503; the TCP probe passes; the exec probe's
    // file does not exist yet. Two of four healthy keeps the cluster out of Envoy's panic mode
    // (below 50% every endpoint would take traffic).
    let passing: std::collections::BTreeSet<String> =
        ["probed-http".to_string(), "probed-tcp".to_string()].into();
    mesh.eventually("the passing entries take traffic", || servers(8) == passing);
    assert_eq!(servers(20), passing, "the failing entries take none");
    let clusters = mesh.admin("/clusters").body;
    for failing in [b, c] {
        assert!(
            clusters.contains(&format!(
                "outbound|80||hc.test::{failing}::health_flags::/failed_eds_health"
            )),
            "{clusters}"
        );
    }
    std::fs::write(&flag, "").unwrap();
    mesh.eventually("the exec-probed entry takes traffic once ready", || {
        servers(8).contains("probed-exec")
    });
    std::fs::remove_file(&flag).unwrap();
    mesh.eventually("the exec-probed entry is drained again", || {
        servers(20) == passing
    });
}

//! The ADS server under load, measured from the outside: `N` simulated proxies (real gRPC
//! streams that ACK every response) connect to `weir discovery` running as its own process on a
//! generated mesh; then one ServiceEntry file is edited and the time from the edit to each
//! proxy's ACK of the new configuration is measured, and the server's memory is read from
//! `/proc/<pid>/status`.
//!
//! ```text
//! cargo build --release -p weir
//! cargo run --release -p weir-xds --example ads_load -- --proxies 100 --services 100
//! ```
//!
//! The edit-to-ACK time includes the watcher's deliberate debounce (the folder must be quiet for
//! 100 ms, after a 50 ms settle) and is also reported without it: from the log line in which
//! the server applies the batch (`configuration changed`) to the last ACK.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use weir_xds::generator::TYPE_URLS;

#[path = "../../weir-model/benches/support/generate.rs"]
mod mesh;

struct Args {
    proxies: usize,
    services: usize,
    /// Proxies are spread over this many namespaces; proxies of one namespace share their
    /// resources (replicas), so `--namespaces` equal to `--proxies` is the worst case.
    namespaces: usize,
    weir: PathBuf,
}

fn args() -> Args {
    let mut a = Args {
        proxies: 100,
        services: 100,
        namespaces: 10,
        weir: PathBuf::from("target/release/weir"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--proxies" => a.proxies = value.parse().expect("--proxies N"),
            "--services" => a.services = value.parse().expect("--services N"),
            "--namespaces" => a.namespaces = value.parse().expect("--namespaces N"),
            "--weir" => a.weir = PathBuf::from(value),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Per proxy: when it ACKed each response.
type Acks = Arc<Mutex<Vec<Vec<Instant>>>>;

async fn proxy(addr: String, i: usize, namespaces: usize, acks: Acks) {
    let mut client = AggregatedDiscoveryServiceClient::connect(addr)
        .await
        .expect("connect");
    let (tx, rx) = mpsc::channel(16);
    let node = Node {
        id: format!(
            "sidecar~10.200.{}.{}~app-{i}.team-{ns}~team-{ns}.svc.cluster.local",
            i / 250,
            i % 250,
            ns = i % namespaces
        ),
        ..Default::default()
    };
    for type_url in TYPE_URLS {
        tx.send(DiscoveryRequest {
            node: Some(node.clone()),
            type_url: type_url.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let mut stream = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    while let Ok(Some(r)) = stream.message().await {
        let ack = DiscoveryRequest {
            type_url: r.type_url.clone(),
            version_info: r.version_info.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        };
        if tx.send(ack).await.is_err() {
            break;
        }
        acks.lock().unwrap()[i].push(Instant::now());
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let a = args();
    let dir = std::env::temp_dir().join(format!("weir-ads-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (file, text) in mesh::mesh(a.services, a.services / 10, a.services / 10) {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(&a.weir)
        .args(["discovery", "--config"])
        .arg(&dir)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--monitoring",
            "127.0.0.1:0",
        ])
        .env("WEIR_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run weir discovery (build it with `cargo build --release -p weir`)");
    let pid = child.id();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    for line in stdout.lines() {
        if line.unwrap().contains("serving ADS") {
            break;
        }
    }
    // The server logs "configuration changed" when it applies a batch: note when.
    let applied: Arc<Mutex<Vec<Instant>>> = Arc::default();
    {
        let applied = applied.clone();
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if line.contains("configuration changed") {
                    applied.lock().unwrap().push(Instant::now());
                }
            }
        });
    }
    let rss_idle = status_kb(pid, "VmRSS:");
    let acks: Acks = Arc::new(Mutex::new(vec![Vec::new(); a.proxies]));
    let started = Instant::now();
    for i in 0..a.proxies {
        tokio::spawn(proxy(
            format!("http://127.0.0.1:{port}"),
            i,
            a.namespaces,
            acks.clone(),
        ));
    }
    // Wait until every proxy ACKed its four types.
    loop {
        let done = acks.lock().unwrap().iter().filter(|v| v.len() >= 4).count();
        if done == a.proxies {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "only {done} proxies configured"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_all = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_connected = status_kb(pid, "VmRSS:");
    let before: Vec<usize> = acks.lock().unwrap().iter().map(Vec::len).collect();

    // Edit one ServiceEntry that every proxy sees.
    let edit_at = Instant::now();
    std::fs::write(dir.join("se/00001.yaml"), mesh::service_entry(1, 7)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let last: Vec<Instant> = loop {
        let snapshot = acks.lock().unwrap().clone();
        if snapshot.iter().zip(&before).all(|(v, b)| v.len() > *b) {
            // Let a proxy with more than one changed type finish.
            tokio::time::sleep(Duration::from_millis(300)).await;
            break acks.lock().unwrap().iter().map(|v| *v.last().unwrap()).collect();
        }
        assert!(Instant::now() < deadline, "not every proxy received the change");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let applied_at = applied.lock().unwrap().first().copied().unwrap_or(edit_at);
    let mut from_edit: Vec<Duration> = last.iter().map(|t| t.duration_since(edit_at)).collect();
    let mut from_apply: Vec<Duration> = last
        .iter()
        .map(|t| t.saturating_duration_since(applied_at))
        .collect();
    from_edit.sort();
    from_apply.sort();
    let rss_peak = status_kb(pid, "VmHWM:");
    println!(
        "proxies: {} in {} namespaces, services: {} (+{} VirtualServices, +{} DestinationRules)",
        a.proxies,
        a.namespaces.min(a.proxies),
        a.services,
        a.services / 10,
        a.services / 10
    );
    println!(
        "all proxies connected and ACKed CDS/EDS/LDS/RDS in {:.0} ms",
        connect_all.as_secs_f64() * 1e3
    );
    println!(
        "edit -> ACK (incl. 100 ms debounce): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&from_edit, 0.5).as_secs_f64() * 1e3,
        percentile(&from_edit, 0.99).as_secs_f64() * 1e3,
        from_edit.last().unwrap().as_secs_f64() * 1e3
    );
    println!(
        "apply -> ACK (push only):        p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&from_apply, 0.5).as_secs_f64() * 1e3,
        percentile(&from_apply, 0.99).as_secs_f64() * 1e3,
        from_apply.last().unwrap().as_secs_f64() * 1e3
    );
    println!(
        "server RSS: idle {:.1} MB, with {} proxies {:.1} MB ({:.1} KB per proxy), peak {:.1} MB",
        rss_idle as f64 / 1024.0,
        a.proxies,
        rss_connected as f64 / 1024.0,
        (rss_connected.saturating_sub(rss_idle)) as f64 / a.proxies as f64,
        rss_peak as f64 / 1024.0
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

//! `weir proxy`: the data plane alone, against a control plane (`--discovery`) or from an Envoy
//! v3 bootstrap (`--bootstrap`).

use std::net::SocketAddr;
use std::process::ExitCode;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use weir_proxy::admin::AdminConnections;
use weir_proxy::run::{ProxyOptions, RunningProxy};
use weir_proxy::serve::BindPolicy;
use weir_proxy::stats::Identity;
use weir_proxy::xds::XdsProtocol;

/// How the proxy gives freed memory back to the system (the overload manager's `shrink_heap`):
/// through the binary's allocator, mimalloc.
const HEAP: weir_proxy::overload::HeapControl = weir_proxy::overload::HeapControl {
    release: weir_alloc::release_free_memory,
};

/// `weir proxy` arguments.
#[derive(clap::Args)]
pub struct Args {
    /// The control plane's ADS address (`host:port` or `http://host:port`).
    #[arg(long, value_name = "ADDR", conflicts_with = "bootstrap")]
    discovery: Option<String>,
    /// The node id (Istio's form `sidecar~<ip>~<name>.<namespace>~<namespace>.svc.cluster.local`).
    #[arg(
        long,
        value_name = "ID",
        default_value = "sidecar~127.0.0.1~weir-proxy.default~default.svc.cluster.local"
    )]
    node: String,
    /// The proxy's locality, `region[/zone[/subzone]]` (sent as the node's locality; locality
    /// load balancing and failover are computed from it).
    #[arg(long, value_name = "LOCALITY")]
    locality: Option<String>,
    /// An Envoy v3 bootstrap (YAML or JSON): static listeners and clusters, and/or
    /// `dynamic_resources` pointing at an ADS server.
    #[arg(long, value_name = "FILE")]
    bootstrap: Option<String>,
    /// The admin endpoint (overrides the bootstrap's).
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// Also serve an HTTP forward-proxy port (for `HTTP_PROXY`).
    #[arg(long, value_name = "ADDR")]
    http_proxy: Option<SocketAddr>,
    /// Print the bootstrap FILE as an encoded protobuf and exit (used internally: reading
    /// Envoy-style JSON needs the descriptors of the whole Envoy API, which a long-running
    /// proxy should not keep in memory, so a short-lived child process does it).
    #[arg(long, value_name = "FILE", hide = true)]
    encode_bootstrap: Option<String>,
    /// Run as on a developer machine (like `weir run`'s proxies): no iptables redirection is
    /// assumed, so original-destination listeners (`virtualOutbound`, `virtualInbound`) are
    /// not bound, and listeners on the wildcard address bind 127.0.0.1.
    #[arg(long)]
    local: bool,
    /// ADS protocol: `delta` (falling back to the state of the world when the server lacks
    /// it), `delta-only` or `sotw`.
    #[arg(long, value_name = "PROTOCOL", default_value = "delta", value_parser = ["delta", "delta-only", "sotw"])]
    xds_protocol: String,
    /// Worker threads of the data path (default: one per core).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
}

/// A node for an Istio-style id, with the metadata Istio's proxies send.
pub fn node(id: &str, labels: &[(String, String)]) -> Node {
    let namespace = id
        .split('~')
        .nth(2)
        .and_then(|n| n.split_once('.'))
        .map_or("default", |(_, ns)| ns)
        .to_string();
    let string = |s: &str| Value {
        kind: Some(Kind::StringValue(s.to_string())),
    };
    let mut metadata = Struct::default();
    metadata.fields.insert("NAMESPACE".into(), string(&namespace));
    let label_struct = Struct {
        fields: labels.iter().map(|(k, v)| (k.clone(), string(v))).collect(),
    };
    metadata.fields.insert(
        "LABELS".into(),
        Value {
            kind: Some(Kind::StructValue(label_struct)),
        },
    );
    Node {
        id: id.to_string(),
        cluster: namespace,
        metadata: Some(metadata),
        ..Default::default()
    }
}

/// A node locality from `region/zone/subzone`.
pub fn locality(text: &str) -> envoy_types::pb::envoy::config::core::v3::Locality {
    let mut parts = text.splitn(3, '/').map(str::to_string);
    envoy_types::pb::envoy::config::core::v3::Locality {
        region: parts.next().unwrap_or_default(),
        zone: parts.next().unwrap_or_default(),
        sub_zone: parts.next().unwrap_or_default(),
    }
}

/// The identity for metrics from a node id.
pub fn identity(id: &str) -> Identity {
    let name = id.split('~').nth(2).unwrap_or("unknown");
    let (workload, namespace) = name.split_once('.').unwrap_or((name, "default"));
    Identity {
        workload: workload.to_string(),
        namespace: namespace.to_string(),
        app: workload.to_string(),
        version: "unknown".into(),
        cluster: "Kubernetes".into(),
    }
}

/// The bootstrap file as an encoded `Bootstrap`.
fn encode_bootstrap(path: &str) -> Result<Vec<u8>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let json: serde_json::Value = if path.ends_with(".json") {
        serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?
    } else {
        let docs = weir_api::yaml::parse_documents(&text);
        let doc = docs
            .into_iter()
            .next()
            .ok_or_else(|| format!("{path}: empty file"))?;
        if let Some(e) = doc.errors.first() {
            return Err(format!("{path}:{e}"));
        }
        doc.root
            .map(|r| r.to_json())
            .ok_or_else(|| format!("{path}: empty document"))?
    };
    let encoded = weir_xds::json::from_json("envoy.config.bootstrap.v3.Bootstrap", &json)
        .map_err(|e| format!("{path}: {e}"))?;
    weir_proxy::bootstrap::check_known(&encoded).map_err(|e| format!("{path}: {e}"))?;
    Ok(encoded)
}

/// Reads a bootstrap through a child process (see `--encode-bootstrap`).
fn read_bootstrap(path: &str) -> Result<weir_proxy::bootstrap::BootstrapConfig, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the weir executable: {e}"))?;
    let out = std::process::Command::new(exe)
        .args(["proxy", "--encode-bootstrap", path])
        .output()
        .map_err(|e| format!("cannot read {path}: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr)
            .trim()
            .trim_start_matches("weir proxy: ")
            .to_string());
    }
    weir_proxy::bootstrap::from_encoded(&out.stdout).map_err(|e| format!("{path}: {e}"))
}

/// Normalises a discovery address to a URL.
pub fn discovery_url(address: &str) -> String {
    if address.starts_with("http://") || address.starts_with("https://") {
        address.to_string()
    } else {
        format!("http://{address}")
    }
}

/// Runs the command.
pub fn run(args: &Args) -> ExitCode {
    if let Some(path) = &args.encode_bootstrap {
        use std::io::Write;
        return match encode_bootstrap(path) {
            Ok(bytes) => match std::io::stdout().write_all(&bytes) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("weir proxy: {e}");
                    ExitCode::FAILURE
                }
            },
            Err(e) => {
                eprintln!("weir proxy: {e}");
                ExitCode::from(2)
            }
        };
    }
    crate::logging::init();
    let bootstrap = match args.bootstrap.as_deref().map(read_bootstrap).transpose() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("weir proxy: {e}");
            return ExitCode::from(2);
        }
    };
    if args.discovery.is_none() && bootstrap.is_none() {
        eprintln!("weir proxy: give --discovery ADDR or --bootstrap FILE");
        return ExitCode::from(2);
    }
    // One worker: a current-thread runtime (no work stealing, no cross-thread wake-ups).
    let mut builder = match args.workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.max(1));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("weir proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let mut node = match &bootstrap {
            Some(b) if !b.node.id.is_empty() => b.node.clone(),
            _ => node(&args.node, &[]),
        };
        if let Some(l) = &args.locality {
            node.locality = Some(locality(l));
        }
        let options = ProxyOptions {
            discovery: args
                .discovery
                .as_deref()
                .map(discovery_url)
                .or_else(|| bootstrap.as_ref().and_then(|b| b.ads.clone())),
            identity: identity(&node.id),
            node,
            admin: args
                .admin
                .or_else(|| bootstrap.as_ref().and_then(|b| b.admin))
                .or(Some(SocketAddr::from(([127, 0, 0, 1], 15000)))),
            // The bootstrap's admin endpoint is under the global connection limit as Envoy's is;
            // one given with --admin is Weir's own, and not counted.
            admin_connections: match (&args.admin, &bootstrap) {
                (None, Some(b)) => b.admin_connections,
                _ => AdminConnections::Uncounted,
            },
            http_proxy: args.http_proxy,
            bind: if args.local {
                BindPolicy::Local {
                    ip: std::net::IpAddr::from([127, 0, 0, 1]),
                    port_offset: 0,
                }
            } else {
                BindPolicy::AsConfigured
            },
            xds_protocol: match args.xds_protocol.as_str() {
                "sotw" => XdsProtocol::Sotw,
                "delta-only" => XdsProtocol::Delta,
                _ => XdsProtocol::Auto,
            },
            overload: bootstrap.as_ref().and_then(|b| b.overload.clone()),
            runtime: bootstrap.as_ref().map(|b| b.runtime.clone()).unwrap_or_default(),
            heap: Some(HEAP),
        };
        let has_ads = options.discovery.is_some();
        let proxy = match RunningProxy::start(options).await {
            Ok(p) => p,
            Err(e) => {
                eprintln!("weir proxy: {e}");
                return ExitCode::from(2);
            }
        };
        if let Some(a) = proxy.admin {
            println!("weir proxy: admin on http://{a}");
        }
        if let Some(a) = proxy.http_proxy {
            println!("weir proxy: HTTP proxy on {a}");
        }
        if let Some(b) = bootstrap {
            let errors = proxy.agent.install_static(b.listeners, b.clusters).await;
            if !errors.is_empty() {
                for e in errors {
                    eprintln!("weir proxy: {e}");
                }
                return ExitCode::from(2);
            }
            if !has_ads {
                proxy.agent.set_ready();
            }
            for (name, address) in proxy.listeners.bound() {
                println!("weir proxy: listener {name} on {address}");
            }
        }
        let _ = tokio::signal::ctrl_c().await;
        println!("weir proxy: draining");
        proxy.shutdown();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        ExitCode::SUCCESS
    })
}

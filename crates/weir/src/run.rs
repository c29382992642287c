//! `weir run DIR`: the embedded default — the control plane on a watched folder, a local sidecar
//! proxy (an HTTP forward-proxy port, the services' addresses on the loopback range, an admin
//! port) and one gateway proxy per Gateway selector, in one process.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use tokio::sync::mpsc;
use weir_api::resource::Resource;
use weir_api::types::OrEmpty;
use weir_model::registry::ServiceAddress;
use weir_proxy::run::{ProxyOptions, RunningProxy};
use weir_proxy::serve::BindPolicy;
use weir_xds::server::DiscoveryServer;

use crate::load::{FolderArgs, load, warn_rejected};
use crate::proxy::{discovery_url, identity, node};

/// `weir run` arguments.
#[derive(clap::Args)]
pub struct Args {
    /// The configuration folder, watched for changes.
    #[arg(value_name = "DIR")]
    config: String,
    /// Namespace of the local sidecar, and of resources without metadata.namespace.
    #[arg(short = 'n', long = "namespace", default_value = "default")]
    namespace: String,
    /// The HTTP forward-proxy port (`HTTP_PROXY` / `https_proxy`).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15080")]
    http_proxy: SocketAddr,
    /// The sidecar's admin endpoint.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15000")]
    admin: SocketAddr,
    /// Where the embedded control plane serves ADS (other proxies may connect too).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15010")]
    discovery: SocketAddr,
    /// Added to every gateway listener port (gateway servers bind on 127.0.0.1).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    gateway_port_offset: i32,
    /// Range for addresses allocated to ServiceEntries without `addresses`; on the loopback
    /// range the local sidecar listens on them.
    #[arg(long, value_name = "CIDR", default_value = "127.240.0.0/16")]
    allocation_range: String,
}

/// Gateway selectors of the configuration, with a namespace to run each gateway in.
fn gateway_selectors(server: &DiscoveryServer) -> BTreeMap<Vec<(String, String)>, String> {
    server.with_model(|m| {
        m.store
            .of_kind("Gateway")
            .filter_map(|o| match o.resource.as_ref() {
                Resource::Gateway(g) => {
                    let selector: Vec<(String, String)> = g
                        .spec
                        .as_ref()
                        .map(|s| {
                            s.selector
                                .or_empty()
                                .iter()
                                .map(|(k, v)| (k.clone(), v.clone()))
                                .collect()
                        })
                        .unwrap_or_default();
                    Some((selector, o.key.namespace.clone()))
                }
                _ => None,
            })
            .collect()
    })
}

/// Service addresses on the loopback range, with their ports.
fn local_service_addresses(server: &DiscoveryServer) -> Vec<(SocketAddr, String)> {
    server.with_model(|m| {
        let mut out = Vec::new();
        for s in m.registry.services() {
            let ip = match (&s.address, s.auto_address) {
                (Some(ServiceAddress::Ip(ip)), _) => Some(*ip),
                (None, Some(v4)) => Some(IpAddr::V4(v4)),
                _ => None,
            };
            let Some(ip) = ip.filter(IpAddr::is_loopback) else {
                continue;
            };
            for p in &s.ports {
                if let Ok(port) = u16::try_from(p.number) {
                    out.push((SocketAddr::new(ip, port), s.hostname.clone()));
                }
            }
        }
        out.sort();
        out.dedup_by(|a, b| a.0 == b.0);
        out
    })
}

fn gateway_name(selector: &[(String, String)]) -> String {
    let values: Vec<&str> = selector.iter().map(|(_, v)| v.as_str()).collect();
    if values.is_empty() {
        "gateway".into()
    } else {
        values.join("-")
    }
}

async fn start_gateway(
    discovery: &str,
    selector: &[(String, String)],
    namespace: &str,
    offset: i32,
) -> Result<RunningProxy, String> {
    let name = gateway_name(selector);
    let id = format!("router~127.0.0.1~{name}.{namespace}~{namespace}.svc.cluster.local");
    let options = ProxyOptions {
        discovery: Some(discovery.to_string()),
        node: node(&id, selector),
        identity: identity(&id),
        admin: None,
        http_proxy: None,
        bind: BindPolicy::Local {
            ip: IpAddr::from([127, 0, 0, 1]),
            port_offset: offset,
        },
        ..ProxyOptions::default()
    };
    RunningProxy::start(options).await.map_err(|e| e.to_string())
}

/// Runs the command.
pub fn run(args: &Args) -> ExitCode {
    crate::logging::init();
    let folder_args = FolderArgs {
        namespace: args.namespace.clone(),
        allocation_range: args.allocation_range.clone(),
    };
    let (source, model) = match load(&args.config, &folder_args) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("weir run: {e}");
            return ExitCode::from(2);
        }
    };
    warn_rejected(&args.config, &model);
    let watch = match source.watch() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("weir run: {e}");
            return ExitCode::from(2);
        }
    };
    let server = DiscoveryServer::new(model);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("weir run: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (changed_tx, mut changed_rx) = mpsc::unbounded_channel::<()>();
    {
        let server = server.clone();
        std::thread::spawn(move || {
            crate::discovery::watch_loop(&source, &watch, &server, &|| {
                let _ = changed_tx.send(());
            })
        });
    }
    runtime.block_on(async move {
        // Readiness probes of health-checked WorkloadEntries.
        tokio::spawn(crate::health::run(server.clone()));
        let listener = match tokio::net::TcpListener::bind(args.discovery).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "weir run: cannot serve ADS on {}: {e} (choose another with --discovery)",
                    args.discovery
                );
                return ExitCode::from(2);
            }
        };
        let discovery_addr = listener.local_addr().map_or(args.discovery, |a| a);
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let service = server.service();
        tokio::spawn(async move {
            if let Err(e) = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await
            {
                eprintln!("weir run: the control plane stopped: {e}");
            }
        });
        println!(
            "weir run: control plane (ADS) on {discovery_addr} for {}",
            args.config
        );
        let discovery = discovery_url(&discovery_addr.to_string());

        // The local sidecar stands for this machine as a client; it is given an address no
        // workload uses (TEST-NET-1), so that backends on 127.0.0.1 are not taken for its own.
        let sidecar_id = format!(
            "sidecar~192.0.2.1~weir-local.{ns}~{ns}.svc.cluster.local",
            ns = args.namespace
        );
        let sidecar = match RunningProxy::start(ProxyOptions {
            discovery: Some(discovery.clone()),
            node: node(&sidecar_id, &[]),
            identity: identity(&sidecar_id),
            admin: Some(args.admin),
            http_proxy: Some(args.http_proxy),
            bind: BindPolicy::Local {
                ip: IpAddr::from([127, 0, 0, 1]),
                port_offset: 0,
            },
            ..ProxyOptions::default()
        })
        .await
        {
            Ok(p) => p,
            Err(e) => {
                eprintln!("weir run: {e}");
                return ExitCode::from(2);
            }
        };
        if let Some(a) = sidecar.http_proxy {
            println!("weir run: HTTP proxy on {a} (export http_proxy=http://{a})");
        }
        if let Some(a) = sidecar.admin {
            println!("weir run: admin on http://{a}");
        }
        let mut gateways: BTreeMap<Vec<(String, String)>, RunningProxy> = BTreeMap::new();
        let mut announced = std::collections::BTreeSet::new();
        loop {
            // Match the gateways and local service addresses to the configuration.
            let selectors = gateway_selectors(&server);
            gateways.retain(|s, _| selectors.contains_key(s));
            for (selector, namespace) in &selectors {
                if gateways.contains_key(selector) {
                    continue;
                }
                match start_gateway(&discovery, selector, namespace, args.gateway_port_offset).await {
                    Ok(p) => {
                        gateways.insert(selector.clone(), p);
                    }
                    Err(e) => eprintln!("weir run: gateway {}: {e}", gateway_name(selector)),
                }
            }
            let services = local_service_addresses(&server);
            let addresses: Vec<SocketAddr> = services.iter().map(|(a, _)| *a).collect();
            for (address, e) in sidecar.listeners.set_redirected(&addresses).await {
                eprintln!("weir run: cannot listen on service address {address}: {e}");
            }
            // Wait for the proxies to have their configuration, then say where they listen.
            let mut ready = sidecar.agent.ready();
            let _ = tokio::time::timeout(Duration::from_secs(5), ready.wait_for(|r| *r)).await;
            for p in gateways.values() {
                let mut ready = p.agent.ready();
                let _ = tokio::time::timeout(Duration::from_secs(5), ready.wait_for(|r| *r)).await;
            }
            for (address, host) in &services {
                if announced.insert(format!("svc {address}")) {
                    println!("weir run: {host} on {address}");
                }
            }
            for (selector, p) in &gateways {
                for (name, address) in p.listeners.bound() {
                    if announced.insert(format!("gw {name} {address}")) {
                        println!(
                            "weir run: gateway {} listener {name} on {address}",
                            gateway_name(selector)
                        );
                    }
                }
            }
            println!("weir run: ready");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                changed = changed_rx.recv() => {
                    if changed.is_none() {
                        break;
                    }
                    // Gateway listeners follow their ADS updates; wait briefly so the summary
                    // above reflects this change.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
        println!("weir run: draining");
        sidecar.shutdown();
        for p in gateways.values() {
            p.shutdown();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        ExitCode::SUCCESS
    })
}

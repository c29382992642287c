//! Sidecar listeners (reference §4.5): one outbound listener per bind address and port (service
//! VIP for TCP/TLS, `0.0.0.0` for HTTP, CIDR prefix ranges, SNI chains for TLS, protocol sniffing
//! where HTTP and TCP meet), `virtualOutbound` on 15001 and `virtualInbound` on 15006.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter,
};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, VirtualHost, route, route_action, route_match,
};
use envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, Rds, http_connection_manager,
};
use weir_api::Resource;
use weir_api::host;
use weir_api::types::OrEmpty;
use weir_api::types::mesh::PathNormalizationType;
use weir_api::types::networking::OutboundMode;
use weir_model::ProxyView;
use weir_model::registry::{Port, Protocol, Resolution, Service, ServiceAddress};

use super::Inputs;
use super::cluster::{BLACK_HOLE, ClusterName, INBOUND_PASSTHROUGH, PASSTHROUGH, inbound_targets, is_http};
use super::route::{
    MeshRoutes, destination_cluster, http_filters, labels_apply, match_gateways_include, port_applies,
    weighted_clusters,
};
use super::util::{
    HTTP_CONNECTION_MANAGER, boolv, cidr, duration, listener_filter, network_filter, socket, tcp_proxy,
    tcp_proxy_to, u32v,
};

/// Protocols sniffed as HTTP on auto-detect chains.
const SNIFFED_PROTOCOLS: [&str; 3] = ["http/1.0", "http/1.1", "h2c"];

/// An HTTP connection manager fetching route configuration `route_name` over ADS. Proxies
/// allow WebSocket upgrades, as Istio configures them; gRPC clients have no use for them.
pub fn hcm_rds(stat_prefix: &str, route_name: &str, grpc: bool) -> HttpConnectionManager {
    HttpConnectionManager {
        stat_prefix: stat_prefix.into(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(super::util::ads()),
            route_config_name: route_name.into(),
        })),
        http_filters: http_filters(grpc),
        upgrade_configs: if grpc { Vec::new() } else { websocket() },
        ..Default::default()
    }
}

/// The HTTP connection manager of a proxy (sidecar or gateway) fetching route configuration
/// `route_name`: [`hcm_rds`] with what Istio sets on a proxy's connection managers.
pub fn proxy_hcm_rds(inputs: &Inputs<'_>, stat_prefix: &str, route_name: &str) -> HttpConnectionManager {
    let mut hcm = hcm_rds(stat_prefix, route_name, false);
    set_proxy_settings(&mut hcm, inputs);
    hcm
}

/// What Istio sets on every connection manager of a proxy, inbound and outbound: the mesh's
/// path normalisation, and no stream idle timeout (`0s`; Envoy's default would end a stream
/// quiet for 5 minutes, such as a gRPC watch waiting for its next message).
fn set_proxy_settings(hcm: &mut HttpConnectionManager, inputs: &Inputs<'_>) {
    set_path_normalization(hcm, inputs.mesh.path_normalization);
    hcm.stream_idle_timeout = Some(duration(std::time::Duration::ZERO));
}

/// MeshConfig's `pathNormalization` in a connection manager, as Istio translates it: `NONE`
/// nothing, `BASE` (the default) `normalize_path`, `MERGE_SLASHES` also `merge_slashes`,
/// `DECODE_AND_MERGE_SLASHES` also decoding escaped slashes (`UNESCAPE_AND_FORWARD`); escaped
/// slashes are otherwise kept (`KEEP_UNCHANGED`).
fn set_path_normalization(hcm: &mut HttpConnectionManager, level: PathNormalizationType) {
    use http_connection_manager::PathWithEscapedSlashesAction as Action;
    let (normalize, merge, decode) = match level {
        PathNormalizationType::None => (false, false, false),
        PathNormalizationType::Default | PathNormalizationType::Base => (true, false, false),
        PathNormalizationType::MergeSlashes => (true, true, false),
        PathNormalizationType::DecodeAndMergeSlashes => (true, true, true),
    };
    hcm.normalize_path = Some(boolv(normalize));
    hcm.merge_slashes = merge;
    hcm.path_with_escaped_slashes_action = if decode {
        Action::UnescapeAndForward
    } else {
        Action::KeepUnchanged
    } as i32;
}

/// Istio's upgrade configuration: WebSocket.
fn websocket() -> Vec<http_connection_manager::UpgradeConfig> {
    vec![http_connection_manager::UpgradeConfig {
        upgrade_type: "websocket".into(),
        ..Default::default()
    }]
}

/// The catch-all cluster of the proxy: PassthroughCluster (or the Sidecar's egress proxy) in
/// ALLOW_ANY, BlackHoleCluster in REGISTRY_ONLY.
pub fn catch_all_cluster(inputs: &Inputs<'_>, view: &ProxyView) -> String {
    match view.outbound_mode {
        OutboundMode::RegistryOnly => BLACK_HOLE.into(),
        OutboundMode::AllowAny | OutboundMode::AllowAnyDynamicDns => match &view.egress_proxy {
            Some(d) => {
                let ns = view
                    .sidecar
                    .as_ref()
                    .map_or(view.proxy.namespace.as_str(), |k| k.namespace.as_str());
                destination_cluster(inputs, view, d, ns, 0)
            }
            None => PASSTHROUGH.into(),
        },
    }
}

fn passthrough_chain(inputs: &Inputs<'_>, view: &ProxyView) -> FilterChain {
    let cluster = catch_all_cluster(inputs, view);
    FilterChain {
        name: "PassthroughFilterChain".into(),
        filters: vec![tcp_proxy_to(&cluster)],
        ..Default::default()
    }
}

/// The TLS inspector (reads the SNI and ALPN of a ClientHello).
pub fn tls_inspector() -> ListenerFilter {
    listener_filter("envoy.filters.listener.tls_inspector", &TlsInspector::default())
}

/// The HTTP inspector (detects HTTP/1 and h2c on plaintext connections).
pub fn http_inspector() -> ListenerFilter {
    listener_filter("envoy.filters.listener.http_inspector", &HttpInspector::default())
}

/// One filter chain being assembled for an outbound listener.
struct Chain {
    chain: FilterChain,
    /// An HTTP chain (sniffed when the listener also has TCP chains).
    http: bool,
}

/// A TCP chain proxying what `fcm` matches to `clusters`.
fn tcp_chain(fcm: FilterChainMatch, clusters: &[(String, u32)]) -> Chain {
    Chain {
        chain: FilterChain {
            filter_chain_match: Some(fcm),
            filters: vec![tcp_proxy(clusters)],
            ..Default::default()
        },
        http: false,
    }
}

#[derive(Default)]
struct OutboundListener {
    chains: Vec<Chain>,
    /// Matches taken, encoded, with the HTTP flag.
    taken: std::collections::HashSet<(bool, Vec<u8>)>,
}

impl OutboundListener {
    /// Adds a chain unless one with the same match exists: the first wins (Istio's
    /// `pilot_conflict_outbound_listener_tcp_over_current_tcp`).
    fn add(&mut self, chain: Chain) {
        let key = chain
            .chain
            .filter_chain_match
            .as_ref()
            .map(prost::Message::encode_to_vec)
            .unwrap_or_default();
        if self.taken.insert((chain.http, key)) {
            self.chains.push(chain);
        }
    }
}

fn is_tls(protocol: Protocol) -> bool {
    matches!(protocol, Protocol::Tls | Protocol::Https)
}

/// Where a TCP-ish port of a service listens: its VIP, or `0.0.0.0` (with the CIDR as a prefix
/// range when the address is a block).
fn bind_of(service: &Service) -> (String, Option<String>) {
    match &service.address {
        Some(ServiceAddress::Ip(ip)) => (ip.to_string(), None),
        Some(ServiceAddress::Cidr(c)) => ("0.0.0.0".into(), Some(c.clone())),
        None => ("0.0.0.0".into(), None),
    }
}

/// The sidecar's listeners.
pub fn sidecar_listeners(inputs: &Inputs<'_>, view: &ProxyView) -> Vec<Listener> {
    let mut outbound: BTreeMap<(String, u32), OutboundListener> = BTreeMap::new();
    let index = MeshRoutes::new(view);
    for service in &view.services {
        for port in &service.ports {
            add_service_port(inputs, view, &index, service, port, &mut outbound);
        }
    }
    let mut out: Vec<Listener> = outbound
        .into_iter()
        .map(|((bind, port), l)| finish_outbound(inputs, view, &bind, port, l))
        .collect();
    out.push(virtual_outbound(inputs, view));
    out.push(virtual_inbound(inputs, view));
    out
}

fn add_service_port(
    inputs: &Inputs<'_>,
    view: &ProxyView,
    index: &MeshRoutes<'_>,
    service: &Service,
    port: &Port,
    outbound: &mut BTreeMap<(String, u32), OutboundListener>,
) {
    if port.protocol == Protocol::Udp {
        return;
    }
    let http_chain = || Chain {
        chain: FilterChain {
            filters: vec![network_filter(
                HTTP_CONNECTION_MANAGER,
                &proxy_hcm_rds(
                    inputs,
                    &format!("outbound_0.0.0.0_{}", port.number),
                    &port.number.to_string(),
                ),
            )],
            ..Default::default()
        },
        http: true,
    };
    if is_http(port.protocol) {
        outbound
            .entry(("0.0.0.0".into(), port.number))
            .or_default()
            .add(http_chain());
        return;
    }
    if service.resolution == Resolution::DynamicDns && !is_tls(port.protocol) {
        // Dynamic DNS is HTTP or TLS only (reference §4.4).
        return;
    }
    let (bind, range) = bind_of(service);
    let listener = outbound.entry((bind.clone(), port.number)).or_default();
    let base_match = FilterChainMatch {
        prefix_ranges: range.as_deref().and_then(cidr).into_iter().collect(),
        ..Default::default()
    };
    let vs = index.for_host(&service.hostname);
    let vs_spec = vs.and_then(|vs| match vs.resource.as_ref() {
        Resource::VirtualService(o) => o.spec.as_ref().map(|s| (vs, s)),
        _ => None,
    });
    let default_cluster = ClusterName::outbound(port.number, "", &service.hostname).to_string();
    let weighted = |routes: &[weir_api::types::networking::RouteDestination], ns: &str| {
        weighted_clusters(inputs, view, routes, ns, port.number)
    };
    if is_tls(port.protocol) {
        let mut routed = false;
        if let Some((vs, spec)) = vs_spec {
            for tls in spec.tls.or_empty() {
                for m in tls.r#match.or_empty() {
                    if !port_applies(m.port, port.number)
                        || !match_gateways_include(m.gateways.as_ref(), &vs.key.namespace, "mesh")
                    {
                        continue;
                    }
                    let server_names: Vec<String> = m
                        .sni_hosts
                        .or_empty()
                        .iter()
                        .filter(|h| {
                            host::matches(h, &service.hostname) || host::is_wildcard(&service.hostname)
                        })
                        .cloned()
                        .collect();
                    if server_names.is_empty() {
                        continue;
                    }
                    let clusters = weighted(tls.route.or_empty(), &vs.key.namespace);
                    if clusters.is_empty() {
                        continue;
                    }
                    let mut fcm = base_match.clone();
                    fcm.server_names = server_names;
                    fcm.prefix_ranges
                        .extend(m.destination_subnets.or_empty().iter().filter_map(|s| cidr(s)));
                    listener.add(tcp_chain(fcm, &clusters));
                    routed = true;
                }
            }
        }
        if !routed {
            let mut fcm = base_match;
            if bind == "0.0.0.0" || service.resolution == Resolution::DynamicDns {
                fcm.server_names = vec![service.hostname.clone()];
            }
            listener.add(tcp_chain(fcm, &[(default_cluster, 1)]));
        }
        return;
    }
    // TCP (or auto-detected): the first applicable TCP route, else the service's cluster.
    let mut clusters = vec![(default_cluster.clone(), 1)];
    let mut fcm = base_match;
    if let Some((vs, spec)) = vs_spec {
        let route = spec.tcp.or_empty().iter().find(|r| {
            r.r#match.or_empty().is_empty()
                || r.r#match.or_empty().iter().any(|m| {
                    port_applies(m.port, port.number)
                        && match_gateways_include(m.gateways.as_ref(), &vs.key.namespace, "mesh")
                        && labels_apply(m.source_labels.as_ref(), &view.proxy.labels)
                })
        });
        if let Some(r) = route {
            let w = weighted(r.route.or_empty(), &vs.key.namespace);
            if !w.is_empty() {
                clusters = w;
            }
            if let Some(m) = r.r#match.or_empty().first() {
                fcm.prefix_ranges
                    .extend(m.destination_subnets.or_empty().iter().filter_map(|s| cidr(s)));
            }
        }
    }
    listener.add(tcp_chain(fcm, &clusters));
    if port.protocol == Protocol::Auto {
        // Sniff: HTTP goes to the routes of this port, the rest to the TCP chain.
        let l = outbound.entry((bind, port.number)).or_default();
        l.add(http_chain());
    }
}

fn finish_outbound(
    inputs: &Inputs<'_>,
    view: &ProxyView,
    bind: &str,
    port: u32,
    l: OutboundListener,
) -> Listener {
    let sniff = l.chains.iter().any(|c| c.http) && l.chains.iter().any(|c| !c.http);
    let uses_sni = l.chains.iter().any(|c| {
        c.chain
            .filter_chain_match
            .as_ref()
            .is_some_and(|m| !m.server_names.is_empty())
    });
    let chains: Vec<FilterChain> = l
        .chains
        .into_iter()
        .map(|mut c| {
            if sniff && c.http {
                let m = c.chain.filter_chain_match.get_or_insert_with(Default::default);
                m.application_protocols = SNIFFED_PROTOCOLS.iter().map(|s| (*s).to_string()).collect();
            }
            c.chain
        })
        .collect();
    let mut listener_filters = Vec::new();
    if uses_sni {
        listener_filters.push(tls_inspector());
    }
    if sniff {
        listener_filters.push(http_inspector());
    }
    Listener {
        name: format!("{bind}_{port}"),
        address: Some(socket(bind, port)),
        filter_chains: chains,
        default_filter_chain: Some(passthrough_chain(inputs, view)),
        listener_filters,
        listener_filters_timeout: (uses_sni || sniff).then(|| duration(std::time::Duration::from_secs(0))),
        continue_on_listener_filters_timeout: uses_sni || sniff,
        bind_to_port: Some(boolv(false)),
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Default::default()
    }
}

fn virtual_outbound(inputs: &Inputs<'_>, view: &ProxyView) -> Listener {
    let port = u32::from(inputs.mesh.proxy_listen_port);
    let catch_all = catch_all_cluster(inputs, view);
    Listener {
        name: "virtualOutbound".into(),
        address: Some(socket("0.0.0.0", port)),
        use_original_dst: Some(boolv(true)),
        filter_chains: vec![
            FilterChain {
                name: "virtualOutbound-blackhole".into(),
                filter_chain_match: Some(FilterChainMatch {
                    destination_port: Some(u32v(port)),
                    ..Default::default()
                }),
                filters: vec![tcp_proxy_to(BLACK_HOLE)],
                ..Default::default()
            },
            FilterChain {
                name: "virtualOutbound-catchall-tcp".into(),
                filters: vec![tcp_proxy_to(&catch_all)],
                ..Default::default()
            },
        ],
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Default::default()
    }
}

fn inbound_http(inputs: &Inputs<'_>, port: u32) -> Filter {
    let cluster = format!("inbound|{port}||");
    let config = RouteConfiguration {
        name: cluster.clone(),
        virtual_hosts: vec![VirtualHost {
            name: format!("inbound|http|{port}"),
            domains: vec!["*".into()],
            routes: vec![Route {
                name: "default".into(),
                r#match: Some(envoy_types::pb::envoy::config::route::v3::RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster)),
                    timeout: Some(duration(std::time::Duration::ZERO)),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        validate_clusters: Some(boolv(false)),
        ..Default::default()
    };
    let mut hcm = HttpConnectionManager {
        stat_prefix: format!("inbound_0.0.0.0_{port}"),
        route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(config)),
        http_filters: http_filters(false),
        upgrade_configs: websocket(),
        ..Default::default()
    };
    set_proxy_settings(&mut hcm, inputs);
    network_filter(HTTP_CONNECTION_MANAGER, &hcm)
}

fn virtual_inbound(inputs: &Inputs<'_>, view: &ProxyView) -> Listener {
    let port = u32::from(inputs.mesh.proxy_inbound_listen_port);
    let mut chains = vec![FilterChain {
        name: "virtualInbound-blackhole".into(),
        filter_chain_match: Some(FilterChainMatch {
            destination_port: Some(u32v(port)),
            ..Default::default()
        }),
        filters: vec![tcp_proxy_to(BLACK_HOLE)],
        ..Default::default()
    }];
    let mut sniff = false;
    for (_, target) in inbound_targets(inputs, view) {
        let cluster = format!("inbound|{}||", target.target);
        let dest = |apps: Vec<String>| FilterChainMatch {
            destination_port: Some(u32v(target.target)),
            application_protocols: apps,
            ..Default::default()
        };
        let http = is_http(target.protocol) || target.protocol == Protocol::Auto;
        let tcp = !is_http(target.protocol);
        if http {
            let apps = if tcp {
                SNIFFED_PROTOCOLS.iter().map(|s| (*s).to_string()).collect()
            } else {
                Vec::new()
            };
            chains.push(FilterChain {
                name: format!("0.0.0.0_{}", target.target),
                filter_chain_match: Some(dest(apps)),
                filters: vec![inbound_http(inputs, target.target)],
                ..Default::default()
            });
        }
        if tcp {
            chains.push(FilterChain {
                name: format!("0.0.0.0_{}", target.target),
                filter_chain_match: Some(dest(Vec::new())),
                filters: vec![tcp_proxy_to(&cluster)],
                ..Default::default()
            });
        }
        sniff |= http && tcp;
    }
    let mut listener_filters = vec![listener_filter(
        "envoy.filters.listener.original_dst",
        &OriginalDst::default(),
    )];
    if sniff {
        listener_filters.push(http_inspector());
    }
    Listener {
        name: "virtualInbound".into(),
        address: Some(socket("0.0.0.0", port)),
        use_original_dst: Some(boolv(true)),
        filter_chains: chains,
        default_filter_chain: Some(FilterChain {
            name: "InboundPassthroughFilterChain".into(),
            filters: vec![tcp_proxy_to(INBOUND_PASSTHROUGH)],
            ..Default::default()
        }),
        listener_filters,
        traffic_direction: TrafficDirection::Inbound as i32,
        ..Default::default()
    }
}

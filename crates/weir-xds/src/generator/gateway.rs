//! Router (gateway) listeners and routes (`gateway.go`): one listener per Gateway server port;
//! plain HTTP servers share route configuration `http.<port>`; terminated HTTPS servers get a
//! filter chain per server with its certificate and route configuration
//! `https.<port>.<portName>.<gateway>.<namespace>`; PASSTHROUGH servers route by SNI from TLS
//! routes; AUTO_PASSTHROUGH servers route by the SNI `outbound_.<port>_.<subset>_.<host>`; TCP
//! servers use TCP routes.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, FilterChainMatch, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, Route, RouteConfiguration, RouteMatch, VirtualHost, route, route_match,
    virtual_host,
};
use envoy_types::pb::envoy::extensions::filters::network::sni_cluster::v3::SniCluster;
use weir_api::Resource;
use weir_api::host;
use weir_api::types::OrEmpty;
use weir_api::types::networking::{Gateway, Server, ServerTlsMode};
use weir_model::registry::Protocol;
use weir_model::view::BoundVirtualService;
use weir_model::{ObjectKey, ProxyView};

use super::Inputs;
use super::cluster::BLACK_HOLE;
use super::listener::proxy_hcm_rds;
use super::route::{
    RouteContext, match_gateways_include, port_applies, virtual_service_routes, weighted_clusters,
};
use super::util::{HTTP_CONNECTION_MANAGER, cidr, network_filter, socket, tcp_proxy, tcp_proxy_to};

/// A Gateway server with the gateway it belongs to.
pub struct GatewayServer<'a> {
    /// The Gateway.
    pub gateway: &'a ObjectKey,
    /// The server.
    pub server: &'a Server,
    /// Its protocol.
    pub protocol: Protocol,
    /// Its port number.
    pub port: u32,
}

impl GatewayServer<'_> {
    fn tls_mode(&self) -> Option<ServerTlsMode> {
        self.server.tls.as_ref().map(|t| t.mode.unwrap_or_default())
    }

    fn terminates(&self) -> bool {
        matches!(
            self.tls_mode(),
            Some(
                ServerTlsMode::Simple
                    | ServerTlsMode::Mutual
                    | ServerTlsMode::OptionalMutual
                    | ServerTlsMode::IstioMutual
            )
        )
    }

    fn gateway_name(&self) -> String {
        format!("{}/{}", self.gateway.namespace, self.gateway.name)
    }

    /// Server hosts without their `namespace/` prefix, with the namespace rule.
    fn hosts(&self) -> impl Iterator<Item = (&str, &str)> {
        self.server
            .hosts
            .or_empty()
            .iter()
            .map(|h| match h.split_once('/') {
                Some((ns, host)) => (ns, host),
                None => ("*", h.as_str()),
            })
    }

    /// Whether a VirtualService host in `vs_namespace` is served by this server.
    fn serves(&self, vs_namespace: &str, vs_host: &str) -> bool {
        self.hosts().any(|(ns, h)| {
            let ns_ok = match ns {
                "*" => true,
                "." => vs_namespace == self.gateway.namespace,
                ns => ns == vs_namespace,
            };
            ns_ok && host::matches(h, vs_host)
        })
    }
}

/// The servers of the Gateways selecting the proxy, in Gateway order.
pub fn servers<'a>(inputs: &Inputs<'a>, view: &'a ProxyView) -> Vec<GatewayServer<'a>> {
    let mut out = Vec::new();
    for key in &view.gateways {
        let Some(object) = inputs.store.get(key) else {
            continue;
        };
        let Resource::Gateway(g) = object.resource.as_ref() else {
            continue;
        };
        let Some(spec): Option<&Gateway> = g.spec.as_ref() else {
            continue;
        };
        for server in spec.servers.or_empty() {
            let Some(port) = server.port.as_ref() else {
                continue;
            };
            out.push(GatewayServer {
                gateway: key,
                server,
                protocol: Protocol::parse(port.protocol.or_empty()).unwrap_or(Protocol::Tcp),
                port: port.target_port.filter(|p| *p > 0).or(port.number).unwrap_or(0),
            });
        }
    }
    out
}

/// Whether any server of the proxy's Gateways is AUTO_PASSTHROUGH (its clusters then also get
/// SNI-named copies).
pub fn has_auto_passthrough(inputs: &Inputs<'_>, view: &ProxyView) -> bool {
    servers(inputs, view)
        .iter()
        .any(|s| s.tls_mode() == Some(ServerTlsMode::AutoPassthrough))
}

fn gateway_vs<'v>(
    view: &'v ProxyView,
    s: &GatewayServer<'_>,
) -> impl Iterator<Item = &'v BoundVirtualService> {
    let name = s.gateway_name();
    view.virtual_services
        .iter()
        .filter(move |vs| vs.gateways.contains(&name))
}

fn is_http_server(s: &GatewayServer<'_>) -> bool {
    matches!(
        s.protocol,
        Protocol::Http | Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb
    ) || (s.protocol == Protocol::Https && s.terminates())
}

fn https_route_name(s: &GatewayServer<'_>) -> String {
    let port_name = s
        .server
        .port
        .as_ref()
        .and_then(|p| p.name.clone())
        .unwrap_or_default();
    format!(
        "https.{}.{}.{}.{}",
        s.port, port_name, s.gateway.name, s.gateway.namespace
    )
}

/// Listeners and route configurations of a router proxy.
pub fn gateway_listeners_and_routes(
    inputs: &Inputs<'_>,
    view: &ProxyView,
    problems: &mut Vec<String>,
) -> (Vec<Listener>, Vec<RouteConfiguration>) {
    let servers = servers(inputs, view);
    let mut by_port: BTreeMap<u32, Vec<&GatewayServer<'_>>> = BTreeMap::new();
    for s in &servers {
        by_port.entry(s.port).or_default().push(s);
    }
    let mut listeners = Vec::new();
    let mut routes = Vec::new();
    for (port, servers) in by_port {
        let mut chains: Vec<FilterChain> = Vec::new();
        let mut tls_inspector = false;
        let plain_http: Vec<&GatewayServer<'_>> = servers
            .iter()
            .copied()
            .filter(|s| is_http_server(s) && !s.terminates())
            .collect();
        if !plain_http.is_empty() {
            let name = format!("http.{port}");
            chains.push(FilterChain {
                filters: vec![network_filter(
                    HTTP_CONNECTION_MANAGER,
                    &proxy_hcm_rds(inputs, &format!("outbound_0.0.0.0_{port}"), &name),
                )],
                ..Default::default()
            });
            routes.push(route_config(inputs, view, &name, port, &plain_http));
        }
        for s in servers
            .iter()
            .copied()
            .filter(|s| !is_http_server(s) || s.terminates())
        {
            let server_names: Vec<String> = s
                .hosts()
                .map(|(_, h)| h)
                .filter(|h| *h != "*")
                .map(str::to_string)
                .collect();
            if s.terminates() {
                let Some(tls) = s.server.tls.as_ref() else {
                    continue;
                };
                let alpn: &[&str] = if is_http_server(s) {
                    &["h2", "http/1.1"]
                } else {
                    &[]
                };
                // A server whose certificate cannot be found gets no chain: clients see a TLS
                // failure on it instead of another server's certificate.
                let context = match super::tls::downstream(inputs.store, &s.gateway.namespace, tls, alpn) {
                    Ok(c) => c,
                    Err(e) => {
                        problems.push(format!(
                            "Gateway {} server {:?} on port {port}: {e}; the server is not served",
                            s.gateway_name(),
                            s.server
                                .port
                                .as_ref()
                                .and_then(|p| p.name.clone())
                                .unwrap_or_default()
                        ));
                        continue;
                    }
                };
                tls_inspector = true;
                let filters = if is_http_server(s) {
                    let name = https_route_name(s);
                    routes.push(route_config(inputs, view, &name, port, &[s]));
                    vec![network_filter(
                        HTTP_CONNECTION_MANAGER,
                        &proxy_hcm_rds(inputs, &format!("outbound_0.0.0.0_{port}"), &name),
                    )]
                } else {
                    match tcp_clusters(inputs, view, s) {
                        Some(c) => vec![tcp_proxy(&c)],
                        None => continue,
                    }
                };
                chains.push(FilterChain {
                    filter_chain_match: Some(FilterChainMatch {
                        server_names,
                        ..Default::default()
                    }),
                    filters,
                    transport_socket: Some(super::tls::transport_socket(&context)),
                    ..Default::default()
                });
            } else if s.tls_mode() == Some(ServerTlsMode::AutoPassthrough) {
                tls_inspector = true;
                chains.push(FilterChain {
                    filter_chain_match: Some(FilterChainMatch {
                        server_names: s
                            .hosts()
                            .map(|(_, h)| format!("outbound_.{port}_._.{h}"))
                            .filter(|h| !h.ends_with("_.*"))
                            .collect(),
                        ..Default::default()
                    }),
                    filters: vec![
                        network_filter("envoy.filters.network.sni_cluster", &SniCluster {}),
                        tcp_proxy_to(BLACK_HOLE),
                    ],
                    ..Default::default()
                });
            } else if matches!(s.protocol, Protocol::Tls | Protocol::Https) {
                tls_inspector = true;
                chains.extend(passthrough_chains(inputs, view, s));
            } else if let Some(c) = tcp_clusters(inputs, view, s) {
                chains.push(FilterChain {
                    filters: vec![tcp_proxy(&c)],
                    ..Default::default()
                });
            }
        }
        // Envoy rejects two chains with the same match; keep the first (oldest Gateway).
        let mut unique: Vec<FilterChain> = Vec::new();
        for c in chains {
            if !unique
                .iter()
                .any(|u| u.filter_chain_match == c.filter_chain_match)
            {
                unique.push(c);
            }
        }
        if unique.is_empty() {
            continue;
        }
        listeners.push(Listener {
            name: format!("0.0.0.0_{port}"),
            address: Some(socket("0.0.0.0", port)),
            filter_chains: unique,
            listener_filters: if tls_inspector {
                vec![super::listener::tls_inspector()]
            } else {
                Vec::new()
            },
            traffic_direction: TrafficDirection::Outbound as i32,
            ..Default::default()
        });
    }
    (listeners, routes)
}

fn tcp_clusters(inputs: &Inputs<'_>, view: &ProxyView, s: &GatewayServer<'_>) -> Option<Vec<(String, u32)>> {
    let gw = s.gateway_name();
    for vs in gateway_vs(view, s) {
        if !vs.hosts.iter().any(|h| s.serves(&vs.key.namespace, h)) {
            continue;
        }
        let Resource::VirtualService(o) = vs.resource.as_ref() else {
            continue;
        };
        for tcp in o.spec.as_ref().map(|s| s.tcp.or_empty()).unwrap_or_default() {
            let applies = tcp.r#match.or_empty().is_empty()
                || tcp.r#match.or_empty().iter().any(|m| {
                    port_applies(m.port, s.port)
                        && match_gateways_include(m.gateways.as_ref(), &vs.key.namespace, &gw)
                });
            if applies {
                let c = weighted_clusters(inputs, view, tcp.route.or_empty(), &vs.key.namespace, s.port);
                if !c.is_empty() {
                    return Some(c);
                }
            }
        }
    }
    None
}

fn passthrough_chains(inputs: &Inputs<'_>, view: &ProxyView, s: &GatewayServer<'_>) -> Vec<FilterChain> {
    let gw = s.gateway_name();
    let mut out = Vec::new();
    for vs in gateway_vs(view, s) {
        let Resource::VirtualService(o) = vs.resource.as_ref() else {
            continue;
        };
        for tls in o.spec.as_ref().map(|s| s.tls.or_empty()).unwrap_or_default() {
            for m in tls.r#match.or_empty() {
                if !port_applies(m.port, s.port)
                    || !match_gateways_include(m.gateways.as_ref(), &vs.key.namespace, &gw)
                {
                    continue;
                }
                let names: Vec<String> = m
                    .sni_hosts
                    .or_empty()
                    .iter()
                    .filter(|h| s.serves(&vs.key.namespace, h))
                    .cloned()
                    .collect();
                if names.is_empty() {
                    continue;
                }
                let clusters =
                    weighted_clusters(inputs, view, tls.route.or_empty(), &vs.key.namespace, s.port);
                if clusters.is_empty() {
                    continue;
                }
                out.push(FilterChain {
                    filter_chain_match: Some(FilterChainMatch {
                        server_names: names,
                        prefix_ranges: m
                            .destination_subnets
                            .or_empty()
                            .iter()
                            .filter_map(|c| cidr(c))
                            .collect(),
                        ..Default::default()
                    }),
                    filters: vec![tcp_proxy(&clusters)],
                    ..Default::default()
                });
            }
        }
    }
    out
}

fn route_config(
    inputs: &Inputs<'_>,
    view: &ProxyView,
    name: &str,
    port: u32,
    servers: &[&GatewayServer<'_>],
) -> RouteConfiguration {
    // Virtual hosts by host, in VirtualService age order; VirtualServices for the same host merge.
    let mut vhosts: BTreeMap<String, VirtualHost> = BTreeMap::new();
    for s in servers {
        let gw = s.gateway_name();
        let redirect = s
            .server
            .tls
            .as_ref()
            .and_then(|t| t.https_redirect)
            .unwrap_or(false);
        for vs in gateway_vs(view, s) {
            let hosts: Vec<&String> = vs
                .hosts
                .iter()
                .filter(|h| s.serves(&vs.key.namespace, h))
                .collect();
            if hosts.is_empty() {
                continue;
            }
            let ctx = RouteContext {
                proxy: &view.proxy,
                gateway: Some(&gw),
                port,
                grpc: false,
            };
            let routes = virtual_service_routes(inputs, view, vs, &ctx);
            for h in hosts {
                let vh = vhosts.entry(h.clone()).or_insert_with(|| VirtualHost {
                    name: format!("{h}:{port}"),
                    domains: if h == "*" {
                        vec![h.clone()]
                    } else {
                        vec![h.clone(), format!("{h}:*")]
                    },
                    include_request_attempt_count: true,
                    ..Default::default()
                });
                vh.routes.extend(routes.iter().cloned());
                if redirect {
                    vh.require_tls = virtual_host::TlsRequirementType::All as i32;
                }
            }
        }
    }
    let mut virtual_hosts: Vec<VirtualHost> = vhosts.into_values().collect();
    if virtual_hosts.is_empty() {
        virtual_hosts.push(VirtualHost {
            name: format!("blackhole:{port}"),
            domains: vec!["*".into()],
            routes: vec![Route {
                name: "default".into(),
                r#match: Some(RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(route::Action::DirectResponse(DirectResponseAction {
                    status: 404,
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    RouteConfiguration {
        name: name.into(),
        virtual_hosts,
        validate_clusters: Some(super::util::boolv(false)),
        ..Default::default()
    }
}

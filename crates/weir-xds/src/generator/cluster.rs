//! Clusters (reference §4.4): `outbound|<port>|<subset>|<host>` per visible service port and
//! DestinationRule subset, with the discovery type of the service's resolution and the
//! DestinationRule's traffic policy; the static `BlackHoleCluster`, `PassthroughCluster` and
//! `InboundPassthroughCluster`; `inbound|<port>||` for the proxy's own workload.

use std::collections::HashMap;
use std::fmt;

use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, OutlierDetection as EnvoyOutlier, UpstreamConnectionOptions, circuit_breakers,
    cluster,
};
use envoy_types::pb::envoy::config::core::v3::{
    BindConfig, Http1ProtocolOptions, Http2ProtocolOptions, HttpProtocolOptions as CommonHttpOptions,
    SocketAddress, TcpKeepalive, socket_address,
};
use envoy_types::pb::envoy::extensions::clusters::dynamic_forward_proxy::v3::{
    ClusterConfig as DfpClusterConfig, cluster_config,
};
use envoy_types::pb::envoy::extensions::common::dynamic_forward_proxy::v3::DnsCacheConfig;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{HttpProtocolOptions, http_protocol_options};
use envoy_types::pb::envoy::r#type::v3::Percent;
use weir_api::types::OrEmpty;
use weir_api::types::networking::{
    ClientTlsSettings, ConnectionPoolSettings, H2UpgradePolicy, LoadBalancerSettings, OutlierDetection,
    SimpleLb, TrafficPolicy,
};
use weir_model::registry::{Port, Protocol, Resolution, Service};
use weir_model::view::AppliedDestinationRule;
use weir_model::{ProxyKind, ProxyView};

use super::Inputs;
use super::util::{any, api_duration, duration, u32v};

/// The cluster that drops everything.
pub const BLACK_HOLE: &str = "BlackHoleCluster";
/// The cluster that forwards to the original destination.
pub const PASSTHROUGH: &str = "PassthroughCluster";
/// The inbound cluster for ports the proxy has no service for.
pub const INBOUND_PASSTHROUGH: &str = "InboundPassthroughCluster";
/// Key of the upstream HTTP protocol options in `typed_extension_protocol_options`.
pub const HTTP_OPTIONS_KEY: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
/// Name of the DNS cache shared by dynamic forward proxy clusters and filters.
pub const DFP_CACHE: &str = "dynamic_forward_proxy_cache_config";

/// Direction of a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// To a service.
    Outbound,
    /// To the proxy's own workload.
    Inbound,
}

/// The parts of a cluster name `outbound|<port>|<subset>|<host>` (`model.BuildSubsetKey`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterName<'a> {
    /// Outbound or inbound.
    pub direction: Direction,
    /// Port number.
    pub port: u32,
    /// Subset name ("" for none).
    pub subset: &'a str,
    /// Host name ("" for inbound).
    pub host: &'a str,
}

impl<'a> ClusterName<'a> {
    /// An outbound cluster name.
    pub fn outbound(port: u32, subset: &'a str, host: &'a str) -> Self {
        ClusterName {
            direction: Direction::Outbound,
            port,
            subset,
            host,
        }
    }

    /// Reads a name, also in the SNI form `outbound_.<port>_.<subset>_.<host>` of
    /// AUTO_PASSTHROUGH gateways; `None` for names of another form (`PassthroughCluster`…).
    pub fn parse(name: &'a str) -> Option<Self> {
        if let Some(rest) = name.strip_prefix("outbound_.") {
            let mut parts = rest.splitn(3, "_.");
            return Some(ClusterName {
                direction: Direction::Outbound,
                port: parts.next()?.parse().ok()?,
                subset: parts.next()?,
                host: parts.next()?,
            });
        }
        let mut parts = name.splitn(4, '|');
        let direction = match parts.next()? {
            "outbound" => Direction::Outbound,
            "inbound" => Direction::Inbound,
            _ => return None,
        };
        Some(ClusterName {
            direction,
            port: parts.next()?.parse().ok()?,
            subset: parts.next()?,
            host: parts.next()?,
        })
    }
}

impl fmt::Display for ClusterName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = match self.direction {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        };
        write!(f, "{dir}|{}|{}|{}", self.port, self.subset, self.host)
    }
}

/// The policy in force for one cluster: the DestinationRule's top-level policy, overridden by
/// its port-level settings, then by the subset's policy (and the subset's port-level settings),
/// field by field as Istio's `MergeTrafficPolicy` does.
#[derive(Clone, Copy, Debug, Default)]
pub struct Policy<'a> {
    /// Load balancing.
    pub load_balancer: Option<&'a LoadBalancerSettings>,
    /// Connection pool.
    pub connection_pool: Option<&'a ConnectionPoolSettings>,
    /// Outlier detection.
    pub outlier_detection: Option<&'a OutlierDetection>,
    /// Upstream TLS.
    pub tls: Option<&'a ClientTlsSettings>,
}

impl<'a> Policy<'a> {
    fn overlay(mut self, policy: Option<&'a TrafficPolicy>, port: u32) -> Self {
        let Some(p) = policy else { return self };
        self.load_balancer = p.load_balancer.as_ref().or(self.load_balancer);
        self.connection_pool = p.connection_pool.as_ref().or(self.connection_pool);
        self.outlier_detection = p.outlier_detection.as_ref().or(self.outlier_detection);
        self.tls = p.tls.as_ref().or(self.tls);
        if let Some(pl) = p
            .port_level_settings
            .or_empty()
            .iter()
            .find(|pl| pl.port.as_ref().and_then(|s| s.number) == Some(port))
        {
            self.load_balancer = pl.load_balancer.as_ref().or(self.load_balancer);
            self.connection_pool = pl.connection_pool.as_ref().or(self.connection_pool);
            self.outlier_detection = pl.outlier_detection.as_ref().or(self.outlier_detection);
            self.tls = pl.tls.as_ref().or(self.tls);
        }
        self
    }

    /// The policy of `rule` for `port`, and `subset` when not empty.
    pub fn of(rule: Option<&'a AppliedDestinationRule>, port: u32, subset: &str) -> Self {
        let Some(rule) = rule else {
            return Policy::default();
        };
        let top = Policy::default().overlay(rule.rule.traffic_policy.as_ref(), port);
        match rule.subset(subset) {
            Some(s) if !subset.is_empty() => top.overlay(s.traffic_policy.as_ref(), port),
            _ => top,
        }
    }
}

/// Whether a port carries HTTP (so its cluster gets HTTP protocol options).
pub fn is_http(protocol: Protocol) -> bool {
    matches!(
        protocol,
        Protocol::Http | Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb | Protocol::HttpProxy
    )
}

/// Whether a port is HTTP/2 upstream.
fn is_http2(protocol: Protocol) -> bool {
    matches!(protocol, Protocol::Http2 | Protocol::Grpc)
}

/// Every cluster of the proxy.
pub fn clusters(inputs: &Inputs<'_>, view: &ProxyView, problems: &mut Vec<String>) -> Vec<Cluster> {
    let mut out = Vec::new();
    for service in &view.services {
        let rule = view.destination_rules.get(&service.hostname);
        for port in &service.ports {
            if port.protocol == Protocol::Udp {
                continue;
            }
            let subsets = std::iter::once("").chain(
                rule.map(|r| r.rule.subsets.or_empty())
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|s| s.name.as_deref()),
            );
            for subset in subsets {
                if let Some(c) = outbound_cluster(inputs, view, service, port, subset, rule, problems) {
                    out.push(c);
                }
            }
        }
    }
    if view.proxy.kind == ProxyKind::Proxyless {
        return out;
    }
    if view.proxy.kind == ProxyKind::Router && super::gateway::has_auto_passthrough(inputs, view) {
        // AUTO_PASSTHROUGH routes by SNI to clusters named like the SNI.
        let sni: Vec<Cluster> = out
            .iter()
            .filter_map(|c| {
                let n = ClusterName::parse(&c.name)?;
                let mut copy = c.clone();
                copy.name = format!("outbound_.{}_.{}_.{}", n.port, n.subset, n.host);
                if let Some(la) = copy.load_assignment.as_mut() {
                    la.cluster_name = copy.name.clone();
                }
                Some(copy)
            })
            .collect();
        out.extend(sni);
    }
    out.push(black_hole(inputs));
    out.push(passthrough(inputs, PASSTHROUGH, None));
    if view.proxy.kind == ProxyKind::Sidecar {
        out.push(passthrough(inputs, INBOUND_PASSTHROUGH, Some("127.0.0.6")));
        for port in inbound_ports(inputs, view) {
            let mut c = passthrough(
                inputs,
                &ClusterName {
                    direction: Direction::Inbound,
                    port,
                    subset: "",
                    host: "",
                }
                .to_string(),
                Some("127.0.0.6"),
            );
            c.alt_stat_name = String::new();
            out.push(c);
        }
    }
    out
}

/// The service ports of the proxy's own workload (`GetProxyServiceTargets`): services in its
/// namespace whose selector matches its labels, or with an endpoint at one of its addresses.
/// Returns the target (container) ports.
pub fn inbound_ports(inputs: &Inputs<'_>, view: &ProxyView) -> Vec<u32> {
    inbound_targets(inputs, view)
        .into_iter()
        .map(|(_, p)| p.target)
        .collect()
}

/// A port the proxy's workload serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundPort {
    /// The port the workload listens on.
    pub target: u32,
    /// The service port's protocol.
    pub protocol: Protocol,
}

/// The services and ports of the proxy's own workload, one entry per target port (the first
/// service by host name wins a port two services share).
pub fn inbound_targets<'v>(inputs: &Inputs<'_>, view: &'v ProxyView) -> Vec<(&'v Service, InboundPort)> {
    let proxy = &view.proxy;
    let mut by_port: std::collections::BTreeMap<u32, (&Service, InboundPort)> = Default::default();
    for service in &view.services {
        if service.namespace != proxy.namespace {
            continue;
        }
        let selected = service
            .selector
            .as_ref()
            .is_some_and(|sel| !sel.is_empty() && sel.iter().all(|(k, v)| proxy.labels.get(k) == Some(v)));
        let endpoints = inputs.registry.endpoints(&service.key());
        let by_ip = |port: &Port| {
            endpoints.iter().find(|e| {
                e.service_port == port.name
                    && matches!(&e.address, weir_model::registry::EndpointAddress::Ip(ip) if proxy.ips.contains(ip))
            })
        };
        for port in &service.ports {
            let target = match by_ip(port) {
                Some(e) if e.port > 0 => e.port,
                _ if selected => port.target_port.unwrap_or(port.number),
                _ => continue,
            };
            by_port.entry(target).or_insert((
                service,
                InboundPort {
                    target,
                    protocol: port.protocol,
                },
            ));
        }
    }
    by_port.into_values().collect()
}

fn base(inputs: &Inputs<'_>, name: String) -> Cluster {
    Cluster {
        name,
        connect_timeout: Some(duration(inputs.mesh.connect_timeout)),
        ..Default::default()
    }
}

fn discovery(kind: cluster::DiscoveryType) -> Option<cluster::ClusterDiscoveryType> {
    Some(cluster::ClusterDiscoveryType::Type(kind as i32))
}

fn black_hole(inputs: &Inputs<'_>) -> Cluster {
    Cluster {
        cluster_discovery_type: discovery(cluster::DiscoveryType::Static),
        ..base(inputs, BLACK_HOLE.into())
    }
}

fn passthrough(inputs: &Inputs<'_>, name: &str, bind: Option<&str>) -> Cluster {
    Cluster {
        cluster_discovery_type: discovery(cluster::DiscoveryType::OriginalDst),
        lb_policy: cluster::LbPolicy::ClusterProvided as i32,
        circuit_breakers: Some(default_circuit_breakers()),
        typed_extension_protocol_options: http_options(None, Protocol::Auto),
        upstream_bind_config: bind.map(|address| BindConfig {
            source_address: Some(SocketAddress {
                address: address.into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(0)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..base(inputs, name.into())
    }
}

fn default_circuit_breakers() -> CircuitBreakers {
    CircuitBreakers {
        thresholds: vec![circuit_breakers::Thresholds {
            max_connections: Some(u32v(u32::MAX)),
            max_pending_requests: Some(u32v(u32::MAX)),
            max_requests: Some(u32v(u32::MAX)),
            max_retries: Some(u32v(u32::MAX)),
            track_remaining: true,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A positive limit from the API (`0` and negatives mean "not set").
fn limit(value: Option<i32>) -> Option<u32> {
    value.and_then(|v| u32::try_from(v).ok()).filter(|v| *v > 0)
}

fn http_options(
    pool: Option<&ConnectionPoolSettings>,
    protocol: Protocol,
) -> HashMap<String, envoy_types::pb::google::protobuf::Any> {
    let http = pool.and_then(|p| p.http.as_ref());
    let tcp = pool.and_then(|p| p.tcp.as_ref());
    let upgrade = http.and_then(|h| h.h2_upgrade_policy) == Some(H2UpgradePolicy::Upgrade);
    let use_client = http.and_then(|h| h.use_client_protocol).unwrap_or(false);
    let protocol_options = if use_client || protocol == Protocol::Auto {
        http_protocol_options::UpstreamProtocolOptions::UseDownstreamProtocolConfig(
            http_protocol_options::UseDownstreamHttpConfig {
                http_protocol_options: Some(Http1ProtocolOptions::default()),
                http2_protocol_options: Some(Http2ProtocolOptions::default()),
                ..Default::default()
            },
        )
    } else {
        let config = if is_http2(protocol) || upgrade {
            http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                Http2ProtocolOptions {
                    max_concurrent_streams: limit(http.and_then(|h| h.max_concurrent_streams)).map(u32v),
                    ..Default::default()
                },
            )
        } else {
            http_protocol_options::explicit_http_config::ProtocolConfig::HttpProtocolOptions(
                Http1ProtocolOptions::default(),
            )
        };
        http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
            http_protocol_options::ExplicitHttpConfig {
                protocol_config: Some(config),
            },
        )
    };
    let common = CommonHttpOptions {
        idle_timeout: api_duration(http.and_then(|h| h.idle_timeout.as_ref())),
        max_requests_per_connection: limit(http.and_then(|h| h.max_requests_per_connection)).map(u32v),
        max_connection_duration: api_duration(tcp.and_then(|t| t.max_connection_duration.as_ref())),
        ..Default::default()
    };
    let options = HttpProtocolOptions {
        common_http_protocol_options: (common != CommonHttpOptions::default()).then_some(common),
        upstream_protocol_options: Some(protocol_options),
        ..Default::default()
    };
    HashMap::from([(HTTP_OPTIONS_KEY.to_string(), any(&options))])
}

fn outbound_cluster(
    inputs: &Inputs<'_>,
    view: &ProxyView,
    service: &Service,
    port: &Port,
    subset: &str,
    rule: Option<&AppliedDestinationRule>,
    problems: &mut Vec<String>,
) -> Option<Cluster> {
    let name = ClusterName::outbound(port.number, subset, &service.hostname).to_string();
    let policy = Policy::of(rule, port.number, subset);
    let mut c = base(inputs, name);
    let sidecar = view.proxy.kind == ProxyKind::Sidecar;
    let proxyless = view.proxy.kind == ProxyKind::Proxyless;
    let passthrough_lb = policy
        .load_balancer
        .and_then(|lb| lb.simple)
        .is_some_and(|s| s == SimpleLb::Passthrough);
    let resolution = if proxyless {
        Resolution::ClientSideLb
    } else {
        service.resolution
    };
    match resolution {
        Resolution::ClientSideLb => {
            c.cluster_discovery_type = discovery(cluster::DiscoveryType::Eds);
            c.eds_cluster_config = Some(cluster::EdsClusterConfig {
                eds_config: Some(super::util::ads()),
                service_name: String::new(),
            });
        }
        Resolution::Passthrough if sidecar => {
            c.cluster_discovery_type = discovery(cluster::DiscoveryType::OriginalDst);
            if let Some(target) = port.target_port {
                c.lb_config = Some(cluster::LbConfig::OriginalDstLbConfig(
                    cluster::OriginalDstLbConfig {
                        upstream_port_override: Some(u32v(target)),
                        ..Default::default()
                    },
                ));
            }
        }
        Resolution::Passthrough => {
            c.cluster_discovery_type = discovery(cluster::DiscoveryType::Eds);
            c.eds_cluster_config = Some(cluster::EdsClusterConfig {
                eds_config: Some(super::util::ads()),
                service_name: String::new(),
            });
        }
        Resolution::DnsLb | Resolution::DnsRoundRobinLb => {
            let kind = if resolution == Resolution::DnsLb {
                cluster::DiscoveryType::StrictDns
            } else {
                cluster::DiscoveryType::LogicalDns
            };
            c.cluster_discovery_type = discovery(kind);
            // Istio still sets these (deprecated in favour of the `envoy.clusters.dns` extension,
            // which gRPC and older Envoys do not read).
            #[allow(deprecated)]
            {
                c.dns_refresh_rate = Some(duration(inputs.mesh.dns_refresh_rate));
                c.respect_dns_ttl = true;
            }
            c.dns_lookup_family = cluster::DnsLookupFamily::V4Only as i32;
            let assignment = super::endpoint::dns_load_assignment(
                inputs,
                &super::endpoint::Target {
                    service,
                    port,
                    subset,
                    rule,
                    cluster_name: &c.name,
                },
                &view.proxy,
            )?;
            c.load_assignment = Some(assignment);
        }
        Resolution::DynamicDns => {
            if !(is_http(port.protocol) || matches!(port.protocol, Protocol::Tls | Protocol::Https)) {
                return None;
            }
            let config = DfpClusterConfig {
                cluster_implementation_specifier: Some(
                    cluster_config::ClusterImplementationSpecifier::DnsCacheConfig(dfp_cache(inputs)),
                ),
                ..Default::default()
            };
            c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::ClusterType(
                cluster::CustomClusterType {
                    name: "envoy.clusters.dynamic_forward_proxy".into(),
                    typed_config: Some(any(&config)),
                },
            ));
            c.lb_policy = cluster::LbPolicy::ClusterProvided as i32;
        }
    }
    if passthrough_lb && sidecar {
        c.cluster_discovery_type = discovery(cluster::DiscoveryType::OriginalDst);
        c.eds_cluster_config = None;
        c.load_assignment = None;
    }
    let original_dst = c.cluster_discovery_type == discovery(cluster::DiscoveryType::OriginalDst);
    let custom = matches!(
        c.cluster_discovery_type,
        Some(cluster::ClusterDiscoveryType::ClusterType(_))
    );
    if original_dst || custom {
        c.lb_policy = cluster::LbPolicy::ClusterProvided as i32;
    } else {
        apply_load_balancer(&mut c, policy.load_balancer, proxyless);
    }
    if proxyless {
        // gRPC reads only what it supports; keep the cluster to what it documents (gRFC A27/A28).
        apply_outlier(&mut c, policy.outlier_detection);
        return Some(c);
    }
    if super::locality::distributes(&policy, view.proxy.locality.as_deref()) {
        let common = c.common_lb_config.get_or_insert_with(Default::default);
        common.locality_config_specifier = Some(
            cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(
                cluster::common_lb_config::LocalityWeightedLbConfig {},
            ),
        );
    }
    apply_connection_pool(&mut c, policy.connection_pool, port.protocol);
    apply_outlier(&mut c, policy.outlier_detection);
    if let Some(tls) = policy.tls
        && tls.mode == Some(weir_api::types::networking::ClientTlsMode::IstioMutual)
    {
        problems.push(format!(
            "cluster {}: DestinationRule tls mode ISTIO_MUTUAL needs the mesh CA, which Weir does not run yet; \
             traffic goes in plaintext",
            c.name
        ));
    }
    if let Some(tls) = policy.tls
        && let Some(context) = super::tls::upstream(
            inputs.store,
            &view.proxy.namespace,
            tls,
            &service.hostname,
            &service.subject_alt_names,
        )
    {
        c.transport_socket = Some(super::tls::transport_socket(&context));
    }
    Some(c)
}

/// The DNS cache of dynamic forward proxy clusters and filters.
pub fn dfp_cache(inputs: &Inputs<'_>) -> DnsCacheConfig {
    DnsCacheConfig {
        name: DFP_CACHE.into(),
        dns_lookup_family: cluster::DnsLookupFamily::V4Only as i32,
        dns_refresh_rate: Some(duration(inputs.mesh.dns_refresh_rate)),
        ..Default::default()
    }
}

fn apply_load_balancer(c: &mut Cluster, lb: Option<&LoadBalancerSettings>, proxyless: bool) {
    let default_policy = if proxyless {
        cluster::LbPolicy::RoundRobin
    } else {
        // Istio's default since 1.14.
        cluster::LbPolicy::LeastRequest
    };
    let Some(lb) = lb else {
        c.lb_policy = default_policy as i32;
        return;
    };
    if let Some(hash) = &lb.consistent_hash {
        if let Some(maglev) = &hash.maglev {
            c.lb_policy = cluster::LbPolicy::Maglev as i32;
            c.lb_config = Some(cluster::LbConfig::MaglevLbConfig(cluster::MaglevLbConfig {
                table_size: maglev
                    .table_size
                    .filter(|t| *t > 0)
                    .map(|value| envoy_types::pb::google::protobuf::UInt64Value { value }),
            }));
        } else {
            c.lb_policy = cluster::LbPolicy::RingHash as i32;
            let min = hash
                .ring_hash
                .as_ref()
                .and_then(|r| r.minimum_ring_size)
                .or(hash.minimum_ring_size)
                .filter(|m| *m > 0)
                .unwrap_or(1024);
            c.lb_config = Some(cluster::LbConfig::RingHashLbConfig(cluster::RingHashLbConfig {
                minimum_ring_size: Some(envoy_types::pb::google::protobuf::UInt64Value { value: min }),
                ..Default::default()
            }));
        }
        return;
    }
    c.lb_policy = match lb.simple.unwrap_or_default() {
        SimpleLb::RoundRobin => cluster::LbPolicy::RoundRobin,
        SimpleLb::Random => cluster::LbPolicy::Random,
        SimpleLb::LeastConn | SimpleLb::LeastRequest => cluster::LbPolicy::LeastRequest,
        SimpleLb::Unspecified | SimpleLb::Passthrough => default_policy,
    } as i32;
}

fn apply_connection_pool(c: &mut Cluster, pool: Option<&ConnectionPoolSettings>, protocol: Protocol) {
    let mut thresholds = default_circuit_breakers();
    let tcp = pool.and_then(|p| p.tcp.as_ref());
    let http = pool.and_then(|p| p.http.as_ref());
    if let Some(t) = thresholds.thresholds.first_mut() {
        if let Some(v) = limit(tcp.and_then(|t| t.max_connections)) {
            t.max_connections = Some(u32v(v));
        }
        if let Some(v) = limit(http.and_then(|h| h.http1_max_pending_requests)) {
            t.max_pending_requests = Some(u32v(v));
        }
        if let Some(v) = limit(http.and_then(|h| h.http2_max_requests)) {
            t.max_requests = Some(u32v(v));
        }
        if let Some(v) = limit(http.and_then(|h| h.max_retries)) {
            t.max_retries = Some(u32v(v));
        }
    }
    c.circuit_breakers = Some(thresholds);
    if let Some(timeout) = api_duration(tcp.and_then(|t| t.connect_timeout.as_ref())) {
        c.connect_timeout = Some(timeout);
    }
    if let Some(k) = tcp.and_then(|t| t.tcp_keepalive.as_ref()) {
        let secs = |d: Option<&weir_api::types::Duration>| {
            d.and_then(weir_api::types::Duration::get)
                .map(|d| u32v(u32::try_from(d.as_secs()).unwrap_or(u32::MAX)))
        };
        c.upstream_connection_options = Some(UpstreamConnectionOptions {
            tcp_keepalive: Some(TcpKeepalive {
                keepalive_probes: k.probes.filter(|p| *p > 0).map(u32v),
                keepalive_time: secs(k.time.as_ref()),
                keepalive_interval: secs(k.interval.as_ref()),
            }),
            ..Default::default()
        });
    }
    if is_http(protocol) || protocol == Protocol::Auto {
        c.typed_extension_protocol_options = http_options(pool, protocol);
    }
}

fn apply_outlier(c: &mut Cluster, outlier: Option<&OutlierDetection>) {
    let Some(o) = outlier else { return };
    let mut out = EnvoyOutlier {
        interval: api_duration(o.interval.as_ref()),
        base_ejection_time: api_duration(o.base_ejection_time.as_ref()),
        split_external_local_origin_errors: o.split_external_local_origin_errors.unwrap_or(false),
        ..Default::default()
    };
    if let Some(p) = o.max_ejection_percent.and_then(|p| u32::try_from(p).ok()) {
        out.max_ejection_percent = Some(u32v(p));
    }
    if let Some(n) = o.consecutive_local_origin_failures.filter(|n| *n > 0) {
        out.consecutive_local_origin_failure = Some(u32v(n));
        out.enforcing_consecutive_local_origin_failure = Some(u32v(100));
    }
    // Istio: `consecutive5xxErrors` (or the deprecated `consecutiveErrors`) enforces 5xx
    // ejection; an explicit 0 turns it off; gateway errors are separate.
    let five_xx = o
        .consecutive5xx_errors
        .or_else(|| o.consecutive_errors.and_then(|e| u32::try_from(e).ok()));
    match five_xx {
        Some(0) => out.enforcing_consecutive_5xx = Some(u32v(0)),
        Some(n) => {
            out.consecutive_5xx = Some(u32v(n));
            out.enforcing_consecutive_5xx = Some(u32v(100));
        }
        None if o.consecutive_gateway_errors.is_some() => out.enforcing_consecutive_5xx = Some(u32v(0)),
        None => {}
    }
    if let Some(n) = o.consecutive_gateway_errors.filter(|n| *n > 0) {
        out.consecutive_gateway_failure = Some(u32v(n));
        out.enforcing_consecutive_gateway_failure = Some(u32v(100));
    }
    // Envoy's success-rate ejection is on by default; Istio turns it off.
    out.enforcing_success_rate = Some(u32v(0));
    c.outlier_detection = Some(out);
    if let Some(min) = o.min_health_percent.filter(|m| *m >= 0) {
        let common = c.common_lb_config.get_or_insert_with(Default::default);
        common.healthy_panic_threshold = Some(Percent {
            value: f64::from(min),
        });
    }
}

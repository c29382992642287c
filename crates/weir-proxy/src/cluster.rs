//! Clusters compiled from CDS: how endpoints are discovered, how one is picked, and how to
//! talk to it. What Envoy would do and Weir cannot is a compile error (the cluster is NACKed).

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::HealthStatus;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options, http_protocol_options::explicit_http_config,
};

use envoy_types::pb::envoy::extensions::clusters::dynamic_forward_proxy::v3::{
    ClusterConfig as DfpClusterConfig, cluster_config as dfp_cluster_config,
};

use crate::convert::{decode_any, opt_duration};
use crate::endpoints::{EndpointSet, compile_assignment};

/// Why a cluster cannot be compiled; the text is the NACK reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cluster {name:?}: {problem}")]
pub struct ClusterError {
    /// The cluster.
    pub name: String,
    /// What is wrong.
    pub problem: String,
}

/// How a cluster finds its endpoints.
#[derive(Clone, Debug)]
pub enum Discovery {
    /// From EDS, by service name.
    Eds(String),
    /// Listed in the cluster.
    Static(EndpointSet),
    /// Names resolved with DNS: every address of every name (`strict`) or the first address
    /// of the one name (logical).
    Dns {
        /// STRICT_DNS rather than LOGICAL_DNS.
        strict: bool,
        /// The names as listed, with their ports and weights (locality structure kept).
        names: EndpointSet,
        /// How often to resolve again.
        refresh: Duration,
        /// Use the records' TTL instead of `refresh` when shorter.
        respect_ttl: bool,
        /// Address family wanted.
        family: Family,
    },
    /// The connection's original destination (optionally with the port replaced).
    OriginalDst {
        /// `original_dst_lb_config.upstream_port_override`.
        port_override: Option<u16>,
    },
    /// `envoy.clusters.dynamic_forward_proxy`: the request's authority, resolved when used.
    DynamicForwardProxy {
        /// Address family wanted.
        family: Family,
    },
}

/// DNS address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// IPv4 and IPv6 (IPv6 first when both, as Envoy's AUTO).
    Auto,
    /// IPv4 only.
    V4,
    /// IPv6 only.
    V6,
    /// IPv4 first.
    V4Preferred,
}

impl Family {
    /// The addresses of the family, in its order of preference (AUTO prefers IPv6,
    /// V4_PREFERRED IPv4), otherwise in the resolver's order.
    pub fn order(self, mut addrs: Vec<std::net::SocketAddr>) -> Vec<std::net::SocketAddr> {
        match self {
            Family::V4 => addrs.retain(std::net::SocketAddr::is_ipv4),
            Family::V6 => addrs.retain(std::net::SocketAddr::is_ipv6),
            Family::Auto => addrs.sort_by_key(std::net::SocketAddr::is_ipv4),
            Family::V4Preferred => addrs.sort_by_key(std::net::SocketAddr::is_ipv6),
        }
        addrs
    }

    /// Envoy's `dns_lookup_family` (ALL, every address at once, is not supported).
    fn from_envoy(value: i32) -> Result<Self, String> {
        match cluster::DnsLookupFamily::try_from(value) {
            Ok(cluster::DnsLookupFamily::Auto) => Ok(Family::Auto),
            Ok(cluster::DnsLookupFamily::V4Only) => Ok(Family::V4),
            Ok(cluster::DnsLookupFamily::V6Only) => Ok(Family::V6),
            Ok(cluster::DnsLookupFamily::V4Preferred) => Ok(Family::V4Preferred),
            Ok(cluster::DnsLookupFamily::All) => {
                Err("dns_lookup_family ALL (every address at once) is not supported".into())
            }
            Err(_) => Err(format!("dns_lookup_family {value} is unknown")),
        }
    }
}

/// Load-balancing policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LbPolicy {
    /// Weighted round robin.
    RoundRobin,
    /// Weighted random.
    Random,
    /// Power of `choice_count` choices on active requests.
    LeastRequest {
        /// Hosts sampled per pick (Envoy's default 2).
        choice_count: u32,
    },
    /// Consistent hashing on a ring.
    RingHash {
        /// Minimum entries in the ring.
        min_ring_size: u64,
        /// Maximum entries in the ring.
        max_ring_size: u64,
    },
    /// Maglev consistent hashing.
    Maglev {
        /// Table size (prime).
        table_size: u64,
    },
    /// The cluster picks (ORIGINAL_DST, dynamic forward proxy).
    ClusterProvided,
}

/// Upstream HTTP protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 (prior knowledge, h2c in clear text).
    Http2,
    /// The same as the downstream request.
    Downstream,
}

/// Upstream HTTP connection options (`HttpProtocolOptions`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpOptions {
    /// Idle timeout of upstream connections (Envoy's default 1 h).
    pub idle_timeout: Duration,
    /// Requests per connection before it is closed (`None`: unlimited).
    pub max_requests_per_connection: Option<u32>,
    /// A connection takes no new request after this long.
    pub max_connection_duration: Option<Duration>,
    /// HTTP/2 settings: `max_concurrent_streams` is also the streams per connection before
    /// another connection is opened.
    pub h2: crate::h2_settings::Http2Settings,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            idle_timeout: Duration::from_secs(3600),
            max_requests_per_connection: None,
            max_connection_duration: None,
            h2: crate::h2_settings::Http2Settings::default(),
        }
    }
}

/// A compiled cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The cluster's name.
    pub name: String,
    /// Endpoint discovery.
    pub discovery: Discovery,
    /// Load balancing.
    pub lb: LbPolicy,
    /// Connect timeout (Envoy's default 5 s).
    pub connect_timeout: Duration,
    /// Upstream HTTP protocol.
    pub protocol: UpstreamProtocol,
    /// How upstream HTTP connections are kept.
    pub http: HttpOptions,
    /// Below this share of healthy hosts, all hosts are used (Envoy's default 50%).
    pub panic_threshold: f64,
    /// Locality weights apply (`locality_weighted_lb_config`).
    pub locality_weighted: bool,
    /// TLS origination (`envoy.transport_sockets.tls`).
    pub tls: Option<crate::tls::UpstreamTls>,
    /// Source address for upstream connections (`upstream_bind_config`).
    pub source_address: Option<std::net::SocketAddr>,
    /// TCP keepalive on upstream connections (`upstream_connection_options`).
    pub keepalive: Option<crate::io::Keepalive>,
    /// Circuit breakers (DEFAULT priority).
    pub limits: crate::breaker::Limits,
    /// Outlier detection.
    pub outlier: Option<crate::outlier::OutlierConfig>,
    /// How much of an upstream connection's data the proxy reads ahead of its writes
    /// (`per_connection_buffer_limit_bytes`; see [`crate::tcp::read_buffer`]).
    pub read_buffer: usize,
    /// The cluster as received (for `/config_dump`).
    pub source: Cluster,
}

impl ClusterConfig {
    /// Compiles a cluster.
    pub fn compile(c: &Cluster) -> Result<Self, ClusterError> {
        compile(c).map_err(|problem| ClusterError {
            name: c.name.clone(),
            problem,
        })
    }

    /// Whether endpoints come from EDS under this name.
    pub fn eds_name(&self) -> Option<&str> {
        match &self.discovery {
            Discovery::Eds(n) => Some(n),
            _ => None,
        }
    }
}

#[allow(deprecated)]
fn unsupported(c: &Cluster) -> Option<&'static str> {
    let checks = [
        (!c.transport_socket_matches.is_empty(), "transport_socket_matches"),
        (c.transport_socket_matcher.is_some(), "transport_socket_matcher"),
        (!c.health_checks.is_empty(), "health_checks"),
        (c.lb_subset_config.is_some(), "lb_subset_config"),
        (!c.filters.is_empty(), "filters"),
        (c.load_balancing_policy.is_some(), "load_balancing_policy"),
        (c.upstream_config.is_some(), "upstream_config"),
        (c.lrs_server.is_some(), "lrs_server"),
        (!c.dns_resolvers.is_empty(), "dns_resolvers"),
        (c.typed_dns_resolver_config.is_some(), "typed_dns_resolver_config"),
        (c.dns_resolution_config.is_some(), "dns_resolution_config"),
        (c.protocol_selection != 0, "protocol_selection"),
        (c.preconnect_policy.is_some(), "preconnect_policy"),
        (
            c.connection_pool_per_downstream_connection,
            "connection_pool_per_downstream_connection",
        ),
        (!c.alt_stat_name.is_empty(), "alt_stat_name"),
        (c.track_timeout_budgets, "track_timeout_budgets"),
        (c.track_cluster_stats.is_some(), "track_cluster_stats"),
        (c.stats_matcher.is_some(), "stats_matcher"),
        (c.queuing_policies.is_some(), "queuing_policies"),
        (
            c.per_connection_buffer_high_watermark_timeout.is_some(),
            "per_connection_buffer_high_watermark_timeout",
        ),
        (
            c.close_connections_on_host_health_failure,
            "close_connections_on_host_health_failure",
        ),
        (c.dns_failure_refresh_rate.is_some(), "dns_failure_refresh_rate"),
        (c.dns_jitter.is_some(), "dns_jitter"),
        (c.use_tcp_for_dns_lookups, "use_tcp_for_dns_lookups"),
        (
            !c.lrs_report_endpoint_metrics.is_empty(),
            "lrs_report_endpoint_metrics",
        ),
        // Weir always waits for a cluster's first endpoints (Envoy's default).
        (
            c.wait_for_warm_on_init.is_some_and(|b| !b.value),
            "wait_for_warm_on_init false",
        ),
        (
            matches!(&c.lb_config, Some(cluster::LbConfig::RoundRobinLbConfig(r)) if *r != Default::default()),
            "round_robin_lb_config (slow start, locality settings)",
        ),
    ];
    checks.into_iter().find(|(set, _)| *set).map(|(_, f)| f)
}

fn compile(c: &Cluster) -> Result<ClusterConfig, String> {
    if let Some(field) = unsupported(c) {
        return Err(format!("{field} is not supported"));
    }
    let tls = c
        .transport_socket
        .as_ref()
        .map(transport_socket)
        .transpose()?
        .flatten();
    let limits = crate::breaker::Limits::compile(c.circuit_breakers.as_ref())?;
    let outlier = c
        .outlier_detection
        .as_ref()
        .map(crate::outlier::OutlierConfig::compile)
        .transpose()?;
    let keepalive = keepalive(c)?;
    let family = Family::from_envoy(c.dns_lookup_family)?;
    let discovery = discovery(c, family)?;
    let lb = lb_policy(c, &discovery)?;
    let connect_timeout =
        opt_duration(c.connect_timeout.as_ref(), "connect_timeout")?.unwrap_or(Duration::from_secs(5));
    let (protocol, http) = protocol_options(c)?;
    let common = c.common_lb_config.as_ref();
    let panic_threshold = common
        .and_then(|l| l.healthy_panic_threshold.as_ref())
        .map_or(50.0, |p| p.value);
    let locality_weighted = common.is_some_and(|l| {
        matches!(
            l.locality_config_specifier,
            Some(cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(_))
        )
    });
    if common.is_some_and(|l| l.locality_config_specifier.is_some()) && !locality_weighted {
        return Err("zone_aware_lb_config (zone-aware load balancing) is not supported".into());
    }
    if let Some(l) = common {
        let unsupported = [
            (
                l.update_merge_window
                    .as_ref()
                    .is_some_and(|d| d.seconds != 0 || d.nanos != 0),
                "update_merge_window (host updates apply at once)",
            ),
            (
                l.close_connections_on_host_set_change,
                "close_connections_on_host_set_change",
            ),
            (
                l.consistent_hashing_lb_config.is_some(),
                "consistent_hashing_lb_config",
            ),
            (l.override_host_status.is_some(), "override_host_status"),
        ];
        if let Some((_, field)) = unsupported.iter().find(|(set, _)| *set) {
            return Err(format!("common_lb_config.{field} is not supported"));
        }
    }
    let source_address = match &c.upstream_bind_config {
        None => None,
        Some(b) => {
            #[allow(deprecated)]
            let extra = b.freebind.is_some()
                || !b.socket_options.is_empty()
                || !b.extra_source_addresses.is_empty()
                || !b.additional_source_addresses.is_empty()
                || b.local_address_selector.is_some();
            if extra {
                return Err("upstream_bind_config: only source_address is supported".into());
            }
            b.source_address
                .as_ref()
                .map(|a| {
                    crate::convert::socket_address(a)
                        .map_err(|e| format!("upstream_bind_config.source_address: {e}"))
                })
                .transpose()?
        }
    };
    Ok(ClusterConfig {
        name: c.name.clone(),
        tls,
        source_address,
        discovery,
        lb,
        connect_timeout,
        protocol,
        http,
        panic_threshold,
        locality_weighted,
        keepalive,
        limits,
        outlier,
        read_buffer: crate::tcp::read_buffer(c.per_connection_buffer_limit_bytes.as_ref().map(|l| l.value)),
        source: c.clone(),
    })
}

fn keepalive(c: &Cluster) -> Result<Option<crate::io::Keepalive>, String> {
    let Some(o) = &c.upstream_connection_options else {
        return Ok(None);
    };
    if o.set_local_interface_name_on_upstream_connections || o.happy_eyeballs_config.is_some() {
        return Err(
            "upstream_connection_options: only tcp_keepalive is supported (not happy_eyeballs_config or set_local_interface_name_on_upstream_connections)"
                .into(),
        );
    }
    Ok(o.tcp_keepalive.as_ref().map(|k| {
        let secs = |v: Option<&envoy_types::pb::google::protobuf::UInt32Value>| {
            v.map(|v| Duration::from_secs(u64::from(v.value)))
        };
        crate::io::Keepalive {
            time: secs(k.keepalive_time.as_ref()),
            interval: secs(k.keepalive_interval.as_ref()),
            probes: k.keepalive_probes.as_ref().map(|v| v.value),
        }
    }))
}

/// A transport socket: raw buffer (`None`) or TLS.
pub(crate) fn transport_socket(
    t: &envoy_types::pb::envoy::config::core::v3::TransportSocket,
) -> Result<Option<crate::tls::UpstreamTls>, String> {
    use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
    match &t.config_type {
        Some(ConfigType::TypedConfig(a)) if a.type_url.ends_with(".RawBuffer") => Ok(None),
        Some(ConfigType::TypedConfig(a)) if a.type_url.ends_with(".UpstreamTlsContext") => {
            crate::tls::upstream(a).map(Some).map_err(|e| format!("TLS: {e}"))
        }
        None if t.name == "envoy.transport_sockets.raw_buffer" => Ok(None),
        _ => Err(format!("transport socket {:?} is not supported", t.name)),
    }
}

/// A dynamic forward proxy cluster's settings: the address family of its DNS cache. Weir keeps
/// no cache: a host is resolved for each new connection, so what bounds a cached answer's age
/// (`dns_refresh_rate`, `dns_min_refresh_rate`, `host_ttl`) holds by construction, and the
/// cache's `name` names nothing else; what asks for more is refused by name.
#[allow(deprecated)]
fn dynamic_forward_proxy_family(c: &DfpClusterConfig) -> Result<Family, String> {
    use dfp_cluster_config::ClusterImplementationSpecifier as Specifier;
    if c.allow_coalesced_connections {
        return Err("dynamic_forward_proxy: allow_coalesced_connections is not supported".into());
    }
    // `allow_insecure_cluster_options` only permits turning off auto_sni and
    // auto_san_validation, which Weir refuses anyway.
    let cache = match &c.cluster_implementation_specifier {
        Some(Specifier::DnsCacheConfig(cache)) => cache,
        Some(Specifier::SubClustersConfig(_)) => {
            return Err("dynamic_forward_proxy: sub_clusters_config is not supported".into());
        }
        None => return Err("dynamic_forward_proxy: a dns_cache_config is required".into()),
    };
    let unsupported = [
        (cache.max_hosts.is_some(), "max_hosts"),
        (
            cache.disable_dns_refresh_on_failure,
            "disable_dns_refresh_on_failure",
        ),
        (
            cache.dns_failure_refresh_rate.is_some(),
            "dns_failure_refresh_rate",
        ),
        (
            cache.dns_cache_circuit_breaker.is_some(),
            "dns_cache_circuit_breaker",
        ),
        (cache.use_tcp_for_dns_lookups, "use_tcp_for_dns_lookups"),
        (cache.dns_resolution_config.is_some(), "dns_resolution_config"),
        (
            cache.typed_dns_resolver_config.is_some(),
            "typed_dns_resolver_config",
        ),
        (!cache.preresolve_hostnames.is_empty(), "preresolve_hostnames"),
        (cache.dns_query_timeout.is_some(), "dns_query_timeout"),
        (cache.key_value_config.is_some(), "key_value_config"),
        (cache.resolved_address_filter.is_some(), "resolved_address_filter"),
    ];
    if let Some((_, field)) = unsupported.iter().find(|(set, _)| *set) {
        return Err(format!(
            "dynamic_forward_proxy: dns_cache_config.{field} is not supported"
        ));
    }
    Family::from_envoy(cache.dns_lookup_family)
        .map_err(|e| format!("dynamic_forward_proxy: dns_cache_config.{e}"))
}

#[allow(deprecated)]
fn discovery(c: &Cluster, family: Family) -> Result<Discovery, String> {
    use cluster::{ClusterDiscoveryType as T, DiscoveryType as D};
    let kind = match &c.cluster_discovery_type {
        Some(T::Type(t)) => D::try_from(*t).map_err(|_| format!("discovery type {t} is unknown"))?,
        None => D::Static,
        Some(T::ClusterType(custom)) => {
            if custom.name == "envoy.clusters.dynamic_forward_proxy" {
                let family = match &custom.typed_config {
                    // As in Envoy, the DNS cache's family, not the cluster's.
                    Some(any) => dynamic_forward_proxy_family(&decode_any(
                        any,
                        "envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig",
                        &custom.name,
                    )?)?,
                    None => family,
                };
                return Ok(Discovery::DynamicForwardProxy { family });
            }
            return Err(format!("cluster type {:?} is not supported", custom.name));
        }
    };
    let assignment = |allow_names: bool| -> Result<EndpointSet, String> {
        let set = c
            .load_assignment
            .as_ref()
            .map(|a| compile_assignment(a, allow_names))
            .transpose()?
            .unwrap_or_default();
        Ok(set)
    };
    Ok(match kind {
        D::Static => Discovery::Static(assignment(false)?),
        D::Eds => {
            let name = c
                .eds_cluster_config
                .as_ref()
                .map(|e| e.service_name.clone())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| c.name.clone());
            Discovery::Eds(name)
        }
        D::StrictDns | D::LogicalDns => {
            let names = assignment(true)?;
            if kind == D::LogicalDns && names.len() != 1 {
                return Err("a LOGICAL_DNS cluster must have exactly one endpoint".into());
            }
            let refresh = opt_duration(c.dns_refresh_rate.as_ref(), "dns_refresh_rate")?
                .unwrap_or(Duration::from_secs(5));
            Discovery::Dns {
                strict: kind == D::StrictDns,
                names,
                refresh: refresh.max(Duration::from_millis(1)),
                respect_ttl: c.respect_dns_ttl,
                family,
            }
        }
        D::OriginalDst => {
            let port_override = match &c.lb_config {
                Some(cluster::LbConfig::OriginalDstLbConfig(o)) => {
                    if o.use_http_header || !o.http_header_name.is_empty() || o.metadata_key.is_some() {
                        return Err("original_dst_lb_config: only upstream_port_override is supported".into());
                    }
                    o.upstream_port_override
                        .as_ref()
                        .map(|p| {
                            u16::try_from(p.value)
                                .map_err(|_| format!("upstream_port_override {} is out of range", p.value))
                        })
                        .transpose()?
                }
                _ => None,
            };
            Discovery::OriginalDst { port_override }
        }
    })
}

fn lb_policy(c: &Cluster, discovery: &Discovery) -> Result<LbPolicy, String> {
    use cluster::LbPolicy as P;
    let policy = P::try_from(c.lb_policy).map_err(|_| format!("lb_policy {} is unknown", c.lb_policy))?;
    let provided = matches!(
        discovery,
        Discovery::OriginalDst { .. } | Discovery::DynamicForwardProxy { .. }
    );
    if provided {
        return match policy {
            P::ClusterProvided | P::RoundRobin => Ok(LbPolicy::ClusterProvided),
            other => Err(format!(
                "lb_policy {} does not apply to this cluster type",
                other.as_str_name()
            )),
        };
    }
    Ok(match policy {
        P::RoundRobin => LbPolicy::RoundRobin,
        P::Random => LbPolicy::Random,
        P::LeastRequest => {
            let choice_count = match &c.lb_config {
                Some(cluster::LbConfig::LeastRequestLbConfig(l)) => {
                    if l.active_request_bias.is_some() || l.slow_start_config.is_some() {
                        return Err("least_request_lb_config: only choice_count is supported".into());
                    }
                    l.choice_count.as_ref().map_or(2, |c| c.value)
                }
                _ => 2,
            };
            if choice_count < 2 {
                return Err(format!(
                    "least request choice_count {choice_count} must be at least 2"
                ));
            }
            LbPolicy::LeastRequest { choice_count }
        }
        P::RingHash => {
            let (min, max) = match &c.lb_config {
                Some(cluster::LbConfig::RingHashLbConfig(r)) => {
                    if r.hash_function != 0 {
                        return Err("ring_hash_lb_config: only the XX_HASH hash function is supported".into());
                    }
                    (
                        r.minimum_ring_size.as_ref().map_or(1024, |v| v.value),
                        r.maximum_ring_size.as_ref().map_or(8 * 1024 * 1024, |v| v.value),
                    )
                }
                _ => (1024, 8 * 1024 * 1024),
            };
            if min > max || max > 8 * 1024 * 1024 {
                return Err(format!(
                    "ring size bounds {min}..{max} are invalid (at most 8M, minimum ≤ maximum)"
                ));
            }
            LbPolicy::RingHash {
                min_ring_size: min,
                max_ring_size: max,
            }
        }
        P::Maglev => {
            let table_size = match &c.lb_config {
                Some(cluster::LbConfig::MaglevLbConfig(m)) => {
                    m.table_size.as_ref().map_or(65537, |v| v.value)
                }
                _ => 65537,
            };
            if !is_prime(table_size) || table_size > 5_000_011 {
                return Err(format!(
                    "maglev table_size {table_size} must be a prime of at most 5000011"
                ));
            }
            LbPolicy::Maglev { table_size }
        }
        P::ClusterProvided => return Err("lb_policy CLUSTER_PROVIDED needs an ORIGINAL_DST cluster".into()),
        P::LoadBalancingPolicyConfig => return Err("load_balancing_policy is not supported".into()),
    })
}

fn is_prime(n: u64) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| !n.is_multiple_of(d))
}

#[allow(deprecated)]
fn protocol_options(c: &Cluster) -> Result<(UpstreamProtocol, HttpOptions), String> {
    const KEY: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
    let mut protocol = UpstreamProtocol::Http1;
    let mut http = HttpOptions {
        max_requests_per_connection: c.max_requests_per_connection.as_ref().map(|v| v.value),
        ..HttpOptions::default()
    };
    if let Some(h2) = &c.http2_protocol_options {
        protocol = UpstreamProtocol::Http2;
        http2_options(h2, &mut http)?;
    }
    if c.http_protocol_options.is_some()
        || c.common_http_protocol_options.is_some()
        || c.upstream_http_protocol_options.is_some()
    {
        return Err("http_protocol_options / common_http_protocol_options / upstream_http_protocol_options on the cluster are not supported (use typed_extension_protocol_options)".into());
    }
    for (key, any) in &c.typed_extension_protocol_options {
        if key != KEY {
            return Err(format!(
                "typed_extension_protocol_options {key:?} is not supported"
            ));
        }
        let o: HttpProtocolOptions = decode_any(any, KEY, key)?;
        if let Some(common) = &o.common_http_protocol_options {
            common_options(common, &mut http)?;
        }
        use http_protocol_options::UpstreamProtocolOptions as U;
        protocol = match &o.upstream_protocol_options {
            Some(U::ExplicitHttpConfig(e)) => match &e.protocol_config {
                Some(explicit_http_config::ProtocolConfig::Http2ProtocolOptions(h2)) => {
                    http2_options(h2, &mut http)?;
                    UpstreamProtocol::Http2
                }
                Some(explicit_http_config::ProtocolConfig::Http3ProtocolOptions(_)) => {
                    return Err("HTTP/3 upstreams are not supported".into());
                }
                Some(explicit_http_config::ProtocolConfig::HttpProtocolOptions(h1)) => {
                    http1_options(h1)?;
                    UpstreamProtocol::Http1
                }
                None => UpstreamProtocol::Http1,
            },
            Some(U::UseDownstreamProtocolConfig(d)) => {
                if let Some(h1) = &d.http_protocol_options {
                    http1_options(h1)?;
                }
                if let Some(h2) = &d.http2_protocol_options {
                    http2_options(h2, &mut http)?;
                }
                if d.http3_protocol_options.is_some() {
                    return Err("HTTP/3 upstreams are not supported".into());
                }
                UpstreamProtocol::Downstream
            }
            Some(U::AutoConfig(_)) => {
                return Err("auto_config (ALPN) upstream protocol is not supported".into());
            }
            None => protocol,
        };
        let unsupported = [
            (!o.http_filters.is_empty(), "http_filters"),
            (
                o.upstream_http_protocol_options.is_some(),
                "upstream_http_protocol_options",
            ),
            (o.header_validation_config.is_some(), "header_validation_config"),
            (o.outlier_detection.is_some(), "outlier_detection"),
            (!o.request_mirror_policies.is_empty(), "request_mirror_policies"),
            (!o.hash_policy.is_empty(), "hash_policy"),
            (o.retry_policy.is_some(), "retry_policy"),
        ];
        if let Some((_, field)) = unsupported.iter().find(|(set, _)| *set) {
            return Err(format!("HttpProtocolOptions.{field} is not supported"));
        }
    }
    // Idle timeout 0 disables it (Envoy).
    if http.idle_timeout.is_zero() {
        http.idle_timeout = Duration::MAX;
    }
    http.max_requests_per_connection = http.max_requests_per_connection.filter(|m| *m > 0);
    Ok((protocol, http))
}

fn common_options(
    common: &envoy_types::pb::envoy::config::core::v3::HttpProtocolOptions,
    http: &mut HttpOptions,
) -> Result<(), String> {
    let unsupported = [
        (common.max_headers_count.is_some(), "max_headers_count"),
        (
            common.max_response_headers_kb.is_some(),
            "max_response_headers_kb",
        ),
        (common.max_stream_duration.is_some(), "max_stream_duration"),
        (
            common.headers_with_underscores_action != 0,
            "headers_with_underscores_action",
        ),
        (
            common.max_connection_duration_jitter.is_some(),
            "max_connection_duration_jitter",
        ),
    ];
    if let Some((_, field)) = unsupported.iter().find(|(set, _)| *set) {
        return Err(format!("common_http_protocol_options.{field} is not supported"));
    }
    if let Some(t) = opt_duration(common.idle_timeout.as_ref(), "idle_timeout")? {
        http.idle_timeout = t;
    }
    if let Some(m) = &common.max_requests_per_connection {
        http.max_requests_per_connection = Some(m.value);
    }
    http.max_connection_duration =
        opt_duration(common.max_connection_duration.as_ref(), "max_connection_duration")?
            .filter(|d| !d.is_zero());
    Ok(())
}

fn http1_options(h1: &envoy_types::pb::envoy::config::core::v3::Http1ProtocolOptions) -> Result<(), String> {
    if *h1 != envoy_types::pb::envoy::config::core::v3::Http1ProtocolOptions::default() {
        return Err("upstream http_protocol_options (HTTP/1.1 settings) are not supported".into());
    }
    Ok(())
}

fn http2_options(
    h2: &envoy_types::pb::envoy::config::core::v3::Http2ProtocolOptions,
    http: &mut HttpOptions,
) -> Result<(), String> {
    http.h2 = crate::h2_settings::Http2Settings::compile(h2, "http2_protocol_options")?;
    Ok(())
}

/// The health of an endpoint as EDS reports it, reduced to what load balancing uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// HEALTHY or UNKNOWN.
    Healthy,
    /// DEGRADED: used only when no healthy host is left.
    Degraded,
    /// UNHEALTHY, DRAINING or TIMEOUT: not used.
    Unhealthy,
}

impl Health {
    /// From EDS's `health_status`.
    pub fn from_status(status: i32) -> Self {
        match HealthStatus::try_from(status) {
            Ok(HealthStatus::Unknown | HealthStatus::Healthy) | Err(_) => Health::Healthy,
            Ok(HealthStatus::Degraded) => Health::Degraded,
            Ok(HealthStatus::Unhealthy | HealthStatus::Draining | HealthStatus::Timeout) => Health::Unhealthy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::{Http2ProtocolOptions, KeepaliveSettings};
    use envoy_types::pb::envoy::extensions::common::dynamic_forward_proxy::v3::DnsCacheConfig;
    use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value};

    fn dynamic_forward_proxy(cache: DnsCacheConfig) -> Result<Discovery, ClusterError> {
        use prost::Message;
        let config = DfpClusterConfig {
            cluster_implementation_specifier: Some(
                dfp_cluster_config::ClusterImplementationSpecifier::DnsCacheConfig(cache),
            ),
            ..Default::default()
        };
        let c = Cluster {
            name: "dfp".into(),
            lb_policy: cluster::LbPolicy::ClusterProvided as i32,
            // Not what a dynamic forward proxy resolves with: its cache says.
            dns_lookup_family: cluster::DnsLookupFamily::V4Only as i32,
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::ClusterType(
                cluster::CustomClusterType {
                    name: "envoy.clusters.dynamic_forward_proxy".into(),
                    typed_config: Some(envoy_types::pb::google::protobuf::Any {
                        type_url: "type.googleapis.com/envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig".into(),
                        value: config.encode_to_vec(),
                    }),
                },
            )),
            ..Default::default()
        };
        ClusterConfig::compile(&c).map(|c| c.discovery)
    }

    #[test]
    fn a_dynamic_forward_proxy_resolves_in_the_family_of_its_dns_cache() {
        let cache = |family: cluster::DnsLookupFamily| DnsCacheConfig {
            name: "cache".into(),
            dns_lookup_family: family as i32,
            ..Default::default()
        };
        assert!(matches!(
            dynamic_forward_proxy(cache(cluster::DnsLookupFamily::V6Only)),
            Ok(Discovery::DynamicForwardProxy { family: Family::V6 })
        ));
        let e = dynamic_forward_proxy(DnsCacheConfig {
            max_hosts: Some(UInt32Value { value: 10 }),
            ..cache(cluster::DnsLookupFamily::Auto)
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("dns_cache_config.max_hosts is not supported"), "{e}");
        let e = dynamic_forward_proxy(cache(cluster::DnsLookupFamily::All))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("dns_cache_config.dns_lookup_family ALL (every address at once) is not supported"),
            "{e}"
        );
    }

    fn with_options(common: HttpCommon, h2: Http2ProtocolOptions) -> Cluster {
        let options = HttpProtocolOptions {
            common_http_protocol_options: Some(common),
            upstream_protocol_options: Some(
                http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                    http_protocol_options::ExplicitHttpConfig {
                        protocol_config: Some(explicit_http_config::ProtocolConfig::Http2ProtocolOptions(h2)),
                    },
                ),
            ),
            ..Default::default()
        };
        Cluster {
            name: "c".into(),
            typed_extension_protocol_options: [(
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
                envoy_types::pb::google::protobuf::Any {
                    type_url: "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
                        .into(),
                    value: prost::Message::encode_to_vec(&options),
                },
            )]
            .into(),
            ..Default::default()
        }
    }

    type HttpCommon = envoy_types::pb::envoy::config::core::v3::HttpProtocolOptions;

    #[test]
    fn connection_pool_options_are_honoured_or_refused_by_name() {
        let secs = |s| Some(PbDuration { seconds: s, nanos: 0 });
        let c = with_options(
            HttpCommon {
                idle_timeout: secs(30),
                max_connection_duration: secs(60),
                max_requests_per_connection: Some(UInt32Value { value: 10 }),
                ..Default::default()
            },
            Http2ProtocolOptions {
                max_concurrent_streams: Some(UInt32Value { value: 100 }),
                connection_keepalive: Some(KeepaliveSettings {
                    interval: secs(20),
                    timeout: secs(5),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        let compiled = ClusterConfig::compile(&c).unwrap();
        assert_eq!(compiled.protocol, UpstreamProtocol::Http2);
        assert_eq!(
            compiled.http,
            HttpOptions {
                idle_timeout: Duration::from_secs(30),
                max_requests_per_connection: Some(10),
                max_connection_duration: Some(Duration::from_secs(60)),
                h2: crate::h2_settings::Http2Settings {
                    max_concurrent_streams: Some(100),
                    keepalive: Some((Duration::from_secs(20), Duration::from_secs(5))),
                    ..Default::default()
                },
            }
        );
        let refused = with_options(
            HttpCommon {
                max_headers_count: Some(UInt32Value { value: 10 }),
                ..Default::default()
            },
            Http2ProtocolOptions::default(),
        );
        let e = ClusterConfig::compile(&refused).unwrap_err();
        assert!(e.problem.contains("max_headers_count"), "{e}");
        let refused = with_options(
            HttpCommon::default(),
            Http2ProtocolOptions {
                hpack_table_size: Some(UInt32Value { value: 1 }),
                ..Default::default()
            },
        );
        assert!(ClusterConfig::compile(&refused).is_err());
    }
}

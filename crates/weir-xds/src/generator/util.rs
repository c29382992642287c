//! Small builders shared by the generators.

use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, CidrRange, ConfigSource, SocketAddress, address,
    config_source, socket_address,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, ListenerFilter, filter, listener_filter};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent};
use envoy_types::pb::google::protobuf::{Any, BoolValue, Duration, UInt32Value};
use prost::{Message, Name};
use weir_api::types::StringMatch;

/// Packs a message into an `Any`.
pub fn any<M: Message + Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

/// A protobuf duration.
pub fn duration(d: std::time::Duration) -> Duration {
    Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// A protobuf duration from an API duration, if it parses.
pub fn api_duration(d: Option<&weir_api::types::Duration>) -> Option<Duration> {
    d.and_then(weir_api::types::Duration::get).map(duration)
}

/// A `UInt32Value`.
pub fn u32v(value: u32) -> UInt32Value {
    UInt32Value { value }
}

/// A `BoolValue`.
pub fn boolv(value: bool) -> BoolValue {
    BoolValue { value }
}

/// "Fetch this over the ADS stream."
pub fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

/// A TCP socket address.
pub fn socket(address: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: address.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

/// A CIDR range from `a.b.c.d/n` or a bare IP.
pub fn cidr(text: &str) -> Option<CidrRange> {
    let (ip, len) = match text.split_once('/') {
        Some((ip, len)) => (ip.parse::<IpAddr>().ok()?, len.parse::<u32>().ok()?),
        None => {
            let ip = text.parse::<IpAddr>().ok()?;
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        }
    };
    Some(CidrRange {
        address_prefix: ip.to_string(),
        prefix_len: Some(u32v(len)),
    })
}

/// A network filter with a typed config.
pub fn network_filter<M: Message + Name>(name: &str, config: &M) -> Filter {
    Filter {
        name: name.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(any(config))),
    }
}

/// A listener filter with a typed config.
pub fn listener_filter<M: Message + Name>(name: &str, config: &M) -> ListenerFilter {
    ListenerFilter {
        name: name.to_string(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(any(config))),
        ..Default::default()
    }
}

/// A TCP proxy to `cluster`.
pub fn tcp_proxy_to(cluster: &str) -> Filter {
    tcp_proxy(&[(cluster.to_string(), 1)])
}

/// Name of Envoy's TCP proxy network filter.
pub const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";
/// Name of Envoy's HTTP connection manager network filter.
pub const HTTP_CONNECTION_MANAGER: &str = "envoy.filters.network.http_connection_manager";

/// A TCP proxy to one cluster, or to several by weight; its stats are named after the first.
pub fn tcp_proxy(clusters: &[(String, u32)]) -> Filter {
    let stat_prefix = clusters.first().map_or("", |(name, _)| name.as_str());
    let cluster_specifier = match clusters {
        [(one, _)] => tcp_proxy::ClusterSpecifier::Cluster(one.clone()),
        many => tcp_proxy::ClusterSpecifier::WeightedClusters(tcp_proxy::WeightedCluster {
            clusters: many
                .iter()
                .map(|(name, weight)| tcp_proxy::weighted_cluster::ClusterWeight {
                    name: name.clone(),
                    weight: *weight,
                    ..Default::default()
                })
                .collect(),
        }),
    };
    let config = TcpProxy {
        stat_prefix: stat_prefix.to_string(),
        cluster_specifier: Some(cluster_specifier),
        ..Default::default()
    };
    network_filter(TCP_PROXY, &config)
}

/// A regex matcher (RE2 syntax, Envoy's default engine).
pub fn regex(pattern: &str) -> RegexMatcher {
    RegexMatcher {
        regex: pattern.to_string(),
        engine_type: None,
    }
}

/// An Istio `StringMatch` as an Envoy `StringMatcher`; `None` when it sets nothing.
pub fn string_matcher(m: &StringMatch, ignore_case: bool) -> Option<StringMatcher> {
    let pattern = if let Some(e) = &m.exact {
        string_matcher::MatchPattern::Exact(e.clone())
    } else if let Some(p) = &m.prefix {
        string_matcher::MatchPattern::Prefix(p.clone())
    } else if let Some(r) = &m.regex {
        string_matcher::MatchPattern::SafeRegex(regex(r))
    } else {
        return None;
    };
    Some(StringMatcher {
        ignore_case,
        match_pattern: Some(pattern),
    })
}

/// A percentage (0–100, fractional) as parts per million, Istio's translation.
pub fn percent(value: f64) -> FractionalPercent {
    let clamped = value.clamp(0.0, 100.0);
    // In range 0..=1_000_000 after clamping, so the cast cannot truncate.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let numerator = (clamped * 10_000.0).round() as u32;
    FractionalPercent {
        numerator,
        denominator: fractional_percent::DenominatorType::Million as i32,
    }
}

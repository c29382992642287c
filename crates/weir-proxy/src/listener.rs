//! Listeners compiled from LDS: the address, whether to bind it, the listener filters
//! (original destination, TLS and HTTP inspectors), and filter chains with Envoy's matching
//! order: destination port, destination IP (longest prefix), server name (exact, then longest
//! wildcard), transport protocol, application protocol; the most specific match at each level
//! wins, a chain with no condition at a level catches what matches nothing more specific.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{CidrRange, HttpProtocolOptions as CoreHttpProtocolOptions};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter, listener_filter};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::google::protobuf::Any;

use crate::action::{Clusters, Fault, WeightedTarget, compile_fault};
use crate::convert::{decode_any, opt_duration, socket};
use crate::headers::HeaderOps;
use crate::routes::CompiledRoutes;

/// Why a listener cannot be compiled; the text is the NACK reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("listener {name:?}: {problem}")]
pub struct ListenerError {
    /// The listener.
    pub name: String,
    /// What is wrong.
    pub problem: String,
}

/// An IP prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    len: u8,
}

impl Cidr {
    fn compile(c: &CidrRange) -> Result<Self, String> {
        let network: IpAddr = c
            .address_prefix
            .parse()
            .map_err(|_| format!("prefix {:?} is not an IP address", c.address_prefix))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let len = c.prefix_len.as_ref().map_or(max, |l| l.value);
        let len = u8::try_from(len)
            .ok()
            .filter(|l| u32::from(*l) <= max)
            .ok_or_else(|| format!("prefix length {len} is out of range for {}", c.address_prefix))?;
        Ok(Cidr { network, len })
    }

    /// Whether the prefix holds an address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                mask_eq(u128::from(u32::from(n)), u128::from(u32::from(a)), self.len, 32)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => mask_eq(u128::from(n), u128::from(a), self.len, 128),
            (IpAddr::V4(n), IpAddr::V6(a)) => a
                .to_ipv4_mapped()
                .is_some_and(|a| mask_eq(u128::from(u32::from(n)), u128::from(u32::from(a)), self.len, 32)),
            _ => false,
        }
    }
}

fn mask_eq(a: u128, b: u128, len: u8, bits: u8) -> bool {
    if len == 0 {
        return true;
    }
    let shift = u32::from(bits - len);
    (a >> shift) == (b >> shift)
}

/// What a connection looks like to filter-chain matching.
#[derive(Clone, Debug, Default)]
pub struct ConnectionFacts {
    /// Its (original) destination.
    pub destination: Option<SocketAddr>,
    /// SNI from the TLS ClientHello.
    pub server_name: Option<String>,
    /// `tls` or `raw_buffer`.
    pub transport: &'static str,
    /// ALPN offered in the ClientHello, or what the HTTP inspector saw.
    pub application_protocols: Vec<String>,
}

/// A filter chain's conditions.
#[derive(Clone, Debug, Default)]
pub struct ChainMatch {
    destination_port: Option<u16>,
    prefix_ranges: Vec<Cidr>,
    server_names: Vec<String>,
    transport_protocol: Option<String>,
    application_protocols: Vec<String>,
}

/// A TCP proxy.
#[derive(Clone, Debug)]
pub struct TcpProxyConfig {
    /// Statistics prefix.
    pub stat_prefix: String,
    /// Target clusters.
    pub clusters: Clusters,
    /// Idle timeout (Envoy's default 1 h; `None`: disabled).
    pub idle_timeout: Option<Duration>,
    /// Connect attempts (Envoy's default 1).
    pub max_connect_attempts: u32,
    /// The cluster is the connection's SNI (`sni_cluster` before the TCP proxy).
    pub cluster_from_sni: bool,
    /// How much of the downstream connection is read ahead of the upstream's writes (the
    /// listener's `per_connection_buffer_limit_bytes`; see [`crate::tcp::read_buffer`]).
    pub read_buffer: usize,
}

/// Where an HTTP connection manager gets its routes.
#[derive(Clone, Debug)]
pub enum RouteSource {
    /// RDS, by name.
    Rds(String),
    /// Inline.
    Inline(Arc<CompiledRoutes>),
}

/// An HTTP connection manager.
#[derive(Clone, Debug)]
pub struct HttpManagerConfig {
    /// Statistics prefix.
    pub stat_prefix: String,
    /// Routes.
    pub routes: RouteSource,
    /// Filter-level fault configuration (routes may override).
    pub fault: Option<Fault>,
    /// The fault filter is installed.
    pub fault_filter: bool,
    /// The CORS filter is installed.
    pub cors_filter: bool,
    /// Use the connection's address as the client address and append it to XFF.
    pub use_remote_address: bool,
    /// Do not append to `x-forwarded-for`.
    pub skip_xff_append: bool,
    /// Generate `x-request-id` when missing (default true).
    pub generate_request_id: bool,
    /// Keep an external `x-request-id` (with `use_remote_address`).
    pub preserve_external_request_id: bool,
    /// Return `x-request-id` in responses.
    pub always_set_request_id_in_response: bool,
    /// `server` header value (default `envoy`).
    pub server_name: http::HeaderValue,
    /// What becomes of a response's own `server` header (`server_header_transformation`).
    pub server_header: ServerHeader,
    /// `via` header to append.
    pub via: Option<http::HeaderValue>,
    /// Remove `x-forwarded-client-cert` from requests (SANITIZE, SANITIZE_SET).
    pub sanitize_xfcc: bool,
    /// Stream idle timeout (default 5 min; a route's `idle_timeout` replaces it).
    pub stream_idle_timeout: Option<Duration>,
    /// How long the whole request may take to arrive, from its start (`request_timeout`; off
    /// by default): past it, a request whose response has not started is answered `408`.
    pub request_timeout: Option<Duration>,
    /// Connection idle timeout (default 1 h).
    pub idle_timeout: Option<Duration>,
    /// How long an HTTP/2 connection closing for its idle timeout may take to say goodbye
    /// (Envoy's `drain_timeout`, default 5 s): a client that never answers the GOAWAY's PING is
    /// then disconnected if it has no stream open.
    pub drain_timeout: Duration,
    /// Up to how much longer, as a share of `drain_timeout` (0 to 1), one connection's drain
    /// timeout runs (`drain_timeout_jitter`): drawn per connection, so connections that start
    /// closing together do not all end at once.
    pub drain_timeout_jitter: f64,
    /// The router adds none of its own `x-envoy-` headers (`x-envoy-upstream-service-time`,
    /// `x-envoy-expected-rq-timeout-ms`, `x-envoy-overloaded`): its `suppress_envoy_headers`.
    pub suppress_envoy_headers: bool,
    /// Upgrades allowed (`websocket`…).
    pub upgrades: Vec<String>,
    /// Downstream codec.
    pub codec: Codec,
    /// Strip the port from the authority before virtual host matching.
    pub strip_any_host_port: bool,
    /// What is done to request headers whose name has an underscore
    /// (`common_http_protocol_options.headers_with_underscores_action`).
    pub headers_with_underscores: HeadersWithUnderscores,
    /// What is done to a request's path before it is routed (`normalize_path`,
    /// `merge_slashes`, `path_with_escaped_slashes_action`).
    pub path: crate::path_normalization::PathNormalization,
    /// Header limit in bytes (default 60 KiB).
    pub max_request_headers: usize,
    /// The overload manager's actions do not apply (the listener's `bypass_overload_manager`).
    pub bypass_overload_manager: bool,
    /// Answers refused by `stop_accepting_requests` carry `x-envoy-local-overloaded: true`
    /// (`append_local_overload`).
    pub append_local_overload: bool,
    /// A request body up to this many bytes is kept for retries and shadow copies when
    /// neither its route nor its virtual host sets a limit: the listener's
    /// `per_connection_buffer_limit_bytes` (Envoy's stream buffer limit is its connection's);
    /// `None`: [`crate::action::DEFAULT_BUFFER_LIMIT`].
    pub connection_buffer_limit: Option<usize>,
    /// Downstream HTTP/2 settings (`http2_protocol_options`); unset ones keep hyper's
    /// defaults (200 streams, 1 MiB windows, no PINGs).
    pub h2: crate::h2_settings::Http2Settings,
    /// Response headers added by the configuration of this manager (none today; kept for
    /// symmetry with routes).
    pub response_headers: HeaderOps,
}

/// What becomes of a request header whose name has an underscore (Envoy's
/// `headers_with_underscores_action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadersWithUnderscores {
    /// Kept (the default).
    Allow,
    /// The request is refused: `400` for HTTP/1 (and the connection closed), a stream reset
    /// for HTTP/2.
    Reject,
    /// The header is removed.
    Drop,
}

/// What becomes of the `server` header of a response (Envoy's `server_header_transformation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerHeader {
    /// Set to `server_name`, whatever the upstream said (the default).
    Overwrite,
    /// Set to `server_name` when the response has none.
    AppendIfAbsent,
    /// Left as it is: the upstream's, or none.
    PassThrough,
}

impl HttpManagerConfig {
    /// One connection's drain timeout: `drain_timeout`, lengthened by `draw` (in `0..1`) of
    /// its jitter.
    pub fn drain_grace(&self, draw: f64) -> Duration {
        self.drain_timeout
            .mul_f64(1.0 + self.drain_timeout_jitter * draw.clamp(0.0, 1.0))
    }

    /// A connection manager with Envoy's defaults and these routes.
    pub fn with_routes(routes: RouteSource) -> Self {
        HttpManagerConfig {
            stat_prefix: String::new(),
            routes,
            fault: None,
            fault_filter: false,
            cors_filter: false,
            use_remote_address: false,
            skip_xff_append: false,
            generate_request_id: true,
            preserve_external_request_id: false,
            always_set_request_id_in_response: false,
            server_name: http::HeaderValue::from_static("envoy"),
            server_header: ServerHeader::Overwrite,
            via: None,
            sanitize_xfcc: true,
            stream_idle_timeout: Some(Duration::from_secs(300)),
            request_timeout: None,
            idle_timeout: Some(Duration::from_secs(3600)),
            drain_timeout: Duration::from_secs(5),
            drain_timeout_jitter: 0.0,
            suppress_envoy_headers: false,
            upgrades: Vec::new(),
            codec: Codec::Auto,
            strip_any_host_port: false,
            path: crate::path_normalization::PathNormalization::default(),
            headers_with_underscores: HeadersWithUnderscores::Allow,
            max_request_headers: 60 * 1024,
            connection_buffer_limit: None,
            bypass_overload_manager: false,
            append_local_overload: false,
            h2: crate::h2_settings::Http2Settings::default(),
            response_headers: HeaderOps::default(),
        }
    }
}

/// Downstream HTTP codec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// HTTP/1.1 or HTTP/2 by preface.
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only.
    Http2,
}

/// What a filter chain does with the connection.
#[derive(Clone, Debug)]
pub enum ChainKind {
    /// Proxy bytes.
    Tcp(TcpProxyConfig),
    /// Terminate HTTP (shared by every connection of the chain).
    Http(Arc<HttpManagerConfig>),
}

/// A compiled filter chain.
#[derive(Clone, Debug)]
pub struct Chain {
    /// Its name (may be empty).
    pub name: String,
    /// Its conditions.
    pub matcher: ChainMatch,
    /// What it does.
    pub kind: ChainKind,
    /// TLS termination.
    pub tls: Option<crate::tls::DownstreamTls>,
}

/// The options of a listener's socket, set when it is bound: a socket is replaced when they
/// change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenSocket {
    /// An IPv6 address bound dual-stack, accepting IPv4 too (`ipv4_compat`; see
    /// [`crate::convert::ipv4_alias`]). Otherwise an IPv6 address is bound IPv6-only, as Envoy
    /// binds it.
    pub ipv4_compat: bool,
    /// The accept queue's length (`tcp_backlog_size`; the kernel caps it at
    /// `net.core.somaxconn`).
    pub backlog: u32,
    /// `SO_REUSEPORT` (`enable_reuse_port`, on by default as in Envoy): another process — a new
    /// version of the proxy taking over — may bind the same address and share its connections.
    pub reuse_port: bool,
}

impl ListenSocket {
    /// Without `tcp_backlog_size`, Envoy uses `net.core.somaxconn`: asking for more gets that.
    pub const DEFAULT_BACKLOG: u32 = 65535;
}

impl Default for ListenSocket {
    /// A socket of the proxy's own (not a listener resource's): IPv6-only, not shared.
    fn default() -> Self {
        ListenSocket {
            ipv4_compat: false,
            backlog: Self::DEFAULT_BACKLOG,
            reuse_port: false,
        }
    }
}

/// A compiled listener.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    /// Its name.
    pub name: String,
    /// Its address.
    pub address: SocketAddr,
    /// How its socket is set up.
    pub socket: ListenSocket,
    /// At most this many connections are accepted before other work runs
    /// (`max_connections_to_accept_per_socket_event`; none: all that are pending, as in Envoy).
    pub accepts_per_event: Option<u32>,
    /// Its connections count toward the global connection limit but are never refused by it
    /// (`ignore_global_conn_limit`).
    pub ignore_global_conn_limit: bool,
    /// The overload manager's actions do not apply to it (`bypass_overload_manager`).
    pub bypass_overload_manager: bool,
    /// Whether Weir binds the address (false: reached by original-destination hand-off).
    pub bind_to_port: bool,
    /// Hand connections to the listener of their original destination.
    pub use_original_dst: bool,
    /// Read SNI and ALPN from a TLS ClientHello.
    pub tls_inspector: bool,
    /// How the TLS inspector reads a ClientHello.
    pub tls_inspection: TlsInspection,
    /// Detect HTTP/1.x and h2c.
    pub http_inspector: bool,
    /// How long inspectors may wait for bytes (Envoy's default 15 s; zero: no limit).
    pub inspect_timeout: Duration,
    /// Go on with what was seen when inspection times out.
    pub continue_on_timeout: bool,
    /// Filter chains.
    pub chains: Vec<Chain>,
    /// The chain for connections no chain matches.
    pub default_chain: Option<Chain>,
    /// The listener as received.
    pub source: Listener,
}

impl ListenerConfig {
    /// Compiles a listener. Listeners for gRPC clients (`api_listener`) are not for a proxy and
    /// are refused.
    pub fn compile(l: &Listener) -> Result<Self, ListenerError> {
        compile(l).map_err(|problem| ListenerError {
            name: l.name.clone(),
            problem,
        })
    }

    /// The route configurations this listener needs from RDS.
    pub fn rds_names(&self) -> impl Iterator<Item = &str> {
        self.chains
            .iter()
            .chain(&self.default_chain)
            .filter_map(|c| match &c.kind {
                ChainKind::Http(h) => match &h.routes {
                    RouteSource::Rds(name) => Some(name.as_str()),
                    RouteSource::Inline(_) => None,
                },
                ChainKind::Tcp(_) => None,
            })
    }

    /// Whether matching needs to look at the first bytes (SNI, ALPN, HTTP detection).
    pub fn inspects(&self) -> bool {
        self.tls_inspector || self.http_inspector
    }

    /// The filter chain for a connection (Envoy's order), or the default chain.
    pub fn select(&self, facts: &ConnectionFacts) -> Option<&Chain> {
        select(&self.chains, facts).or(self.default_chain.as_ref())
    }
}

#[allow(deprecated)]
fn compile(l: &Listener) -> Result<ListenerConfig, String> {
    if l.api_listener.is_some() {
        return Err("api_listener is for gRPC clients, not a proxy".into());
    }
    let unsupported = [
        (!l.additional_addresses.is_empty(), "additional_addresses"),
        (l.filter_chain_matcher.is_some(), "filter_chain_matcher"),
        (l.transparent.is_some_and(|b| b.value), "transparent"),
        (l.freebind.is_some_and(|b| b.value), "freebind"),
        (!l.socket_options.is_empty(), "socket_options"),
        (l.connection_balance_config.is_some(), "connection_balance_config"),
        (l.reuse_port, "reuse_port"),
        (!l.access_log.is_empty(), "access_log"),
        (l.udp_listener_config.is_some(), "udp_listener_config"),
        (l.listener_specifier.is_some(), "internal_listener"),
        (l.deprecated_v1.is_some(), "deprecated_v1"),
        (l.fcds_config.is_some(), "fcds_config"),
        (
            l.tcp_fast_open_queue_length.is_some(),
            "tcp_fast_open_queue_length",
        ),
        (l.enable_mptcp, "enable_mptcp"),
        (
            l.per_connection_buffer_high_watermark_timeout.is_some(),
            "per_connection_buffer_high_watermark_timeout",
        ),
        (l.stats_matcher.is_some(), "stats_matcher"),
        (l.tcp_keepalive.is_some(), "tcp_keepalive"),
    ];
    if let Some((_, field)) = unsupported.iter().find(|(set, _)| *set) {
        return Err(format!("{field} is not supported"));
    }
    let proto_address = l.address.as_ref().ok_or("listener without an address")?;
    let address = socket(proto_address)?;
    let socket = ListenSocket {
        ipv4_compat: crate::convert::listener_ipv4_compat(proto_address, address)?,
        backlog: l
            .tcp_backlog_size
            .as_ref()
            .map_or(ListenSocket::DEFAULT_BACKLOG, |b| b.value),
        reuse_port: l.enable_reuse_port.as_ref().is_none_or(|b| b.value),
    };
    if l.drain_type != 0 {
        // MODIFY_ONLY: Weir drains every listener when it stops, as DEFAULT does.
        return Err("drain_type MODIFY_ONLY is not supported".into());
    }
    let accepts_per_event = match &l.max_connections_to_accept_per_socket_event {
        Some(n) if n.value == 0 => {
            return Err("max_connections_to_accept_per_socket_event must be above 0".into());
        }
        n => n.as_ref().map(|n| n.value),
    };
    let mut tls_inspector = false;
    let mut tls_inspection = TlsInspection::default();
    let mut http_inspector = false;
    for f in &l.listener_filters {
        if f.filter_disabled.is_some() {
            return Err(format!(
                "listener filter {:?}: filter_disabled is not supported",
                f.name
            ));
        }
        let kind = match &f.config_type {
            Some(listener_filter::ConfigType::TypedConfig(a)) => {
                a.type_url.rsplit('/').next().unwrap_or_default()
            }
            Some(listener_filter::ConfigType::ConfigDiscovery(_)) => {
                return Err(format!(
                    "listener filter {:?}: config_discovery is not supported",
                    f.name
                ));
            }
            None => f.name.as_str(),
        };
        match kind {
            "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
            | "envoy.filters.listener.tls_inspector" => {
                tls_inspector = true;
                if let Some(listener_filter::ConfigType::TypedConfig(a)) = &f.config_type {
                    let config: TlsInspector = decode_any(
                        a,
                        "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
                        &f.name,
                    )?;
                    tls_inspection = TlsInspection::compile(&config)?;
                }
            }
            "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"
            | "envoy.filters.listener.http_inspector" => http_inspector = true,
            // Original destination: how Weir reads it is the listener's business (the
            // hand-off or SO_ORIGINAL_DST); nothing more to configure.
            "envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
            | "envoy.filters.listener.original_dst" => {}
            other => return Err(format!("listener filter {other:?} is not supported")),
        }
    }
    let wide = ListenerWide {
        buffer_limit: l.per_connection_buffer_limit_bytes.as_ref().map(|l| l.value),
        bypass_overload_manager: l.bypass_overload_manager,
    };
    let inspect_timeout = opt_duration(l.listener_filters_timeout.as_ref(), "listener_filters_timeout")?
        .unwrap_or(Duration::from_secs(15));
    let chains = l
        .filter_chains
        .iter()
        .enumerate()
        .map(|(i, c)| compile_chain(c, wide).map_err(|e| format!("filter chain #{i} {:?}: {e}", c.name)))
        .collect::<Result<Vec<_>, _>>()?;
    let default_chain = l
        .default_filter_chain
        .as_ref()
        .map(|c| compile_chain(c, wide).map_err(|e| format!("default filter chain {:?}: {e}", c.name)))
        .transpose()?;
    check_duplicate_matches(&chains)?;
    Ok(ListenerConfig {
        name: l.name.clone(),
        address,
        socket,
        accepts_per_event,
        ignore_global_conn_limit: l.ignore_global_conn_limit,
        bypass_overload_manager: l.bypass_overload_manager,
        bind_to_port: l.bind_to_port.as_ref().is_none_or(|b| b.value),
        use_original_dst: l.use_original_dst.as_ref().is_some_and(|b| b.value),
        tls_inspector,
        tls_inspection,
        http_inspector,
        inspect_timeout,
        continue_on_timeout: l.continue_on_listener_filters_timeout,
        chains,
        default_chain,
        source: l.clone(),
    })
}

/// Envoy rejects two chains with identical conditions.
fn check_duplicate_matches(chains: &[Chain]) -> Result<(), String> {
    for (i, a) in chains.iter().enumerate() {
        for b in &chains[..i] {
            let (x, y) = (&a.matcher, &b.matcher);
            if x.destination_port == y.destination_port
                && x.prefix_ranges == y.prefix_ranges
                && x.server_names == y.server_names
                && x.transport_protocol == y.transport_protocol
                && x.application_protocols == y.application_protocols
            {
                return Err(format!(
                    "filter chains {:?} and {:?} have the same match conditions",
                    b.name, a.name
                ));
            }
        }
    }
    Ok(())
}

/// How the TLS inspector reads a ClientHello (its `TlsInspector` settings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsInspection {
    /// The most bytes read for a ClientHello (`max_client_hello_size`, Envoy's 16 KiB by
    /// default and at most): a ClientHello not whole within them is not TLS to the inspector.
    pub max_hello: usize,
    /// Close a connection whose first bytes are not a ClientHello the inspector can read
    /// (`close_connection_on_client_hello_parsing_errors`; otherwise it goes on as plain text).
    pub close_on_error: bool,
}

impl TlsInspection {
    /// Envoy's limit for a ClientHello, and its default.
    pub const MAX_HELLO: usize = 16 * 1024;

    /// Reads the inspector's settings. The fingerprints (`enable_ja3_fingerprinting`,
    /// `enable_ja4_fingerprinting`) are only read by access logs, which Weir refuses, and
    /// `initial_read_buffer_size` changes how the bytes are read, not what is seen.
    fn compile(c: &TlsInspector) -> Result<Self, String> {
        let max_hello = match c.max_client_hello_size.as_ref().map(|n| n.value) {
            None => Self::MAX_HELLO,
            Some(n) if usize::try_from(n).is_ok_and(|n| n <= Self::MAX_HELLO) => n as usize,
            Some(n) => {
                return Err(format!(
                    "tls_inspector: max_client_hello_size of {n} is greater than maximum of {}.",
                    Self::MAX_HELLO
                ));
            }
        };
        Ok(TlsInspection {
            max_hello,
            close_on_error: c.close_connection_on_client_hello_parsing_errors,
        })
    }
}

impl Default for TlsInspection {
    fn default() -> Self {
        TlsInspection {
            max_hello: Self::MAX_HELLO,
            close_on_error: false,
        }
    }
}

/// What a listener sets for every one of its filter chains.
#[derive(Clone, Copy, Debug, Default)]
struct ListenerWide {
    /// `per_connection_buffer_limit_bytes`.
    buffer_limit: Option<u32>,
    /// `bypass_overload_manager`.
    bypass_overload_manager: bool,
}

/// Compiles a filter chain of a listener.
#[allow(deprecated)]
fn compile_chain(c: &FilterChain, wide: ListenerWide) -> Result<Chain, String> {
    let tls = match c.transport_socket.as_ref().map(|t| &t.config_type) {
        None => None,
        Some(Some(envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
            a,
        ))) if a.type_url.ends_with(".DownstreamTlsContext") => {
            Some(crate::tls::downstream(a).map_err(|e| format!("TLS: {e}"))?)
        }
        Some(Some(envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
            a,
        ))) if a.type_url.ends_with(".RawBuffer") => None,
        Some(_) => return Err("downstream transport socket: only TLS and raw buffer are supported".into()),
    };
    if c.use_proxy_proto.is_some_and(|b| b.value) {
        return Err("use_proxy_proto is not supported".into());
    }
    if c.transport_socket_connect_timeout.is_some() {
        return Err("transport_socket_connect_timeout is not supported".into());
    }
    let matcher = match &c.filter_chain_match {
        None => ChainMatch::default(),
        Some(m) => {
            let unsupported = [
                (!m.address_suffix.is_empty(), "address_suffix"),
                (m.suffix_len.is_some(), "suffix_len"),
                (
                    !m.direct_source_prefix_ranges.is_empty(),
                    "direct_source_prefix_ranges",
                ),
                (m.source_type != 0, "source_type"),
                (!m.source_prefix_ranges.is_empty(), "source_prefix_ranges"),
                (!m.source_ports.is_empty(), "source_ports"),
            ];
            if let Some((_, field)) = unsupported.iter().find(|(set, _)| *set) {
                return Err(format!(
                    "filter_chain_match.{field} is not supported (source and suffix conditions)"
                ));
            }
            let destination_port = m
                .destination_port
                .as_ref()
                .map(|p| {
                    u16::try_from(p.value)
                        .map_err(|_| format!("destination_port {} is out of range", p.value))
                })
                .transpose()?;
            ChainMatch {
                destination_port,
                prefix_ranges: m
                    .prefix_ranges
                    .iter()
                    .map(Cidr::compile)
                    .collect::<Result<_, _>>()?,
                server_names: m.server_names.iter().map(|s| s.to_ascii_lowercase()).collect(),
                transport_protocol: (!m.transport_protocol.is_empty()).then(|| m.transport_protocol.clone()),
                application_protocols: m.application_protocols.clone(),
            }
        }
    };
    // `envoy.filters.network.sni_cluster` may come before a TCP proxy: the cluster is then
    // named by the SNI (Istio's AUTO_PASSTHROUGH gateways).
    let (sni_cluster, terminal) = match c.filters.as_slice() {
        [only] => (false, only),
        [first, second] if is_sni_cluster(first) => (true, second),
        filters => {
            return Err(format!(
                "expected one network filter (tcp_proxy or http_connection_manager), optionally after sni_cluster; found {}",
                filters
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    };
    let mut kind = compile_network_filter(terminal, wide)?;
    if sni_cluster {
        match &mut kind {
            ChainKind::Tcp(t) => t.cluster_from_sni = true,
            ChainKind::Http(_) => return Err("sni_cluster must come before a tcp_proxy".into()),
        }
    }
    Ok(Chain {
        name: c.name.clone(),
        matcher,
        kind,
        tls,
    })
}

fn is_sni_cluster(f: &Filter) -> bool {
    f.name == "envoy.filters.network.sni_cluster"
        || matches!(&f.config_type, Some(filter::ConfigType::TypedConfig(a)) if a.type_url.ends_with("envoy.extensions.filters.network.sni_cluster.v3.SniCluster"))
}

fn typed(f: &Filter) -> Result<&Any, String> {
    match &f.config_type {
        Some(filter::ConfigType::TypedConfig(a)) => Ok(a),
        Some(filter::ConfigType::ConfigDiscovery(_)) => Err(format!(
            "network filter {:?}: config_discovery is not supported",
            f.name
        )),
        None => Err(format!("network filter {:?} has no typed_config", f.name)),
    }
}

/// Compiles the terminal network filter of a chain of a listener.
fn compile_network_filter(f: &Filter, wide: ListenerWide) -> Result<ChainKind, String> {
    let any = typed(f)?;
    match any.type_url.rsplit('/').next().unwrap_or_default() {
        "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy" => {
            let t: TcpProxy = decode_any(
                any,
                "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                &f.name,
            )?;
            Ok(ChainKind::Tcp(compile_tcp_proxy(&t, wide)?))
        }
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager" => {
            let h: HttpConnectionManager = decode_any(
                any,
                "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                &f.name,
            )?;
            Ok(ChainKind::Http(Arc::new(compile_hcm(&h, wide)?)))
        }
        other => Err(format!("network filter {other:?} is not supported")),
    }
}

fn compile_tcp_proxy(t: &TcpProxy, wide: ListenerWide) -> Result<TcpProxyConfig, String> {
    let unsupported = [
        (t.on_demand.is_some(), "on_demand"),
        (t.metadata_match.is_some(), "metadata_match"),
        (!t.access_log.is_empty(), "access_log"),
        (!t.hash_policy.is_empty(), "hash_policy"),
        (t.tunneling_config.is_some(), "tunneling_config"),
        (
            t.max_downstream_connection_duration.is_some(),
            "max_downstream_connection_duration",
        ),
        (!t.proxy_protocol_tlvs.is_empty(), "proxy_protocol_tlvs"),
        (
            t.proxy_protocol_tlv_merge_policy != 0,
            "proxy_protocol_tlv_merge_policy",
        ),
        (
            t.check_drain_close.as_ref().is_some_and(|b| b.value),
            "check_drain_close",
        ),
        (t.backoff_options.is_some(), "backoff_options"),
        (t.downstream_idle_timeout.is_some(), "downstream_idle_timeout"),
        (t.upstream_idle_timeout.is_some(), "upstream_idle_timeout"),
        (t.upstream_connect_mode != 0, "upstream_connect_mode"),
        (t.max_early_data_bytes.is_some(), "max_early_data_bytes"),
    ];
    if let Some((_, field)) = unsupported.iter().find(|(set, _)| *set) {
        return Err(format!("tcp_proxy.{field} is not supported"));
    }
    let clusters = match &t.cluster_specifier {
        Some(tcp_proxy::ClusterSpecifier::Cluster(c)) => Clusters::One(c.clone()),
        Some(tcp_proxy::ClusterSpecifier::WeightedClusters(w)) => {
            let targets: Vec<WeightedTarget> = w
                .clusters
                .iter()
                .map(|c| {
                    if c.metadata_match.is_some() {
                        return Err("tcp_proxy weighted cluster metadata_match is not supported".to_string());
                    }
                    Ok(WeightedTarget {
                        cluster: c.name.clone(),
                        weight: u64::from(c.weight),
                        request_headers: HeaderOps::default(),
                        response_headers: HeaderOps::default(),
                        host_rewrite: None,
                    })
                })
                .collect::<Result<_, _>>()?;
            let total = targets.iter().map(|t| t.weight).sum();
            if total == 0 {
                return Err("tcp_proxy weighted clusters have no weight".into());
            }
            Clusters::Weighted(targets, total)
        }
        None => return Err("tcp_proxy without a cluster".into()),
    };
    let idle_timeout = match opt_duration(t.idle_timeout.as_ref(), "idle_timeout")? {
        None => Some(Duration::from_secs(3600)),
        Some(d) if d.is_zero() => None,
        Some(d) => Some(d),
    };
    Ok(TcpProxyConfig {
        stat_prefix: t.stat_prefix.clone(),
        clusters,
        idle_timeout,
        max_connect_attempts: t.max_connect_attempts.as_ref().map_or(1, |m| m.value.max(1)),
        cluster_from_sni: false,
        read_buffer: crate::tcp::read_buffer(wide.buffer_limit),
    })
}

#[allow(deprecated)]
/// The router filter's settings: whether it suppresses its `x-envoy-` headers. What Weir does
/// not do is refused by name.
fn compile_router(r: &Router) -> Result<bool, String> {
    let unsupported = [
        (!r.upstream_log.is_empty(), "upstream_log"),
        (r.upstream_log_options.is_some(), "upstream_log_options"),
        (!r.strict_check_headers.is_empty(), "strict_check_headers"),
        (r.respect_expected_rq_timeout, "respect_expected_rq_timeout"),
        (!r.upstream_http_filters.is_empty(), "upstream_http_filters"),
        (
            r.reject_connect_request_early_data
                .as_ref()
                .is_some_and(|b| b.value),
            "reject_connect_request_early_data",
        ),
    ];
    if let Some((_, field)) = unsupported.iter().find(|(set, _)| *set) {
        return Err(format!("router.{field} is not supported"));
    }
    // `dynamic_stats` and `suppress_grpc_request_failure_code_stats` change nothing here: Weir
    // keeps no per-status-code or timing statistics per cluster. `start_child_span` neither:
    // tracing is refused where it is configured.
    Ok(r.suppress_envoy_headers)
}

fn compile_hcm(h: &HttpConnectionManager, wide: ListenerWide) -> Result<HttpManagerConfig, String> {
    use http_connection_manager::{CodecType, ForwardClientCertDetails as Fcc, RouteSpecifier as R};
    let unsupported = [
        (h.add_user_agent.is_some_and(|b| b.value), "add_user_agent"),
        (h.tracing.is_some(), "tracing"),
        (h.http3_protocol_options.is_some(), "http3_protocol_options"),
        (!h.access_log.is_empty(), "access_log"),
        (
            !h.original_ip_detection_extensions.is_empty(),
            "original_ip_detection_extensions",
        ),
        (
            !h.early_header_mutation_extensions.is_empty(),
            "early_header_mutation_extensions",
        ),
        (
            h.set_current_client_cert_details.is_some(),
            "set_current_client_cert_details",
        ),
        (
            h.forward_client_cert_matcher.is_some(),
            "forward_client_cert_matcher",
        ),
        (h.request_id_extension.is_some(), "request_id_extension"),
        (h.local_reply_config.is_some(), "local_reply_config"),
        (
            h.path_normalization_options.is_some(),
            "path_normalization_options",
        ),
        (h.proxy_status_config.is_some(), "proxy_status_config"),
        (
            h.typed_header_validation_config.is_some(),
            "typed_header_validation_config",
        ),
        (h.xff_num_trusted_hops > 0, "xff_num_trusted_hops"),
        (h.internal_address_config.is_some(), "internal_address_config"),
        (
            h.scheme_header_transformation.is_some(),
            "scheme_header_transformation",
        ),
        (h.strip_matching_host_port, "strip_matching_host_port"),
        (h.forward_proto_config.is_some(), "forward_proto_config"),
        (
            h.http_protocol_options
                .as_ref()
                .is_some_and(|o| *o != Default::default()),
            "http_protocol_options",
        ),
        (h.proxy_100_continue, "proxy_100_continue"),
        (
            h.represent_ipv4_remote_address_as_ipv4_mapped_ipv6,
            "represent_ipv4_remote_address_as_ipv4_mapped_ipv6",
        ),
        (h.delayed_close_timeout.is_some(), "delayed_close_timeout"),
        (
            h.stream_error_on_invalid_http_message.is_some(),
            "stream_error_on_invalid_http_message",
        ),
        (
            h.request_headers_timeout
                .as_ref()
                .is_some_and(|d| d.seconds != 0 || d.nanos != 0),
            "request_headers_timeout",
        ),
        (h.strip_trailing_host_dot, "strip_trailing_host_dot"),
        (h.append_x_forwarded_port, "append_x_forwarded_port"),
        (
            h.http1_safe_max_connection_duration,
            "http1_safe_max_connection_duration",
        ),
        (h.stream_flush_timeout.is_some(), "stream_flush_timeout"),
    ];
    if let Some((_, field)) = unsupported.iter().find(|(set, _)| *set) {
        return Err(format!("http_connection_manager.{field} is not supported"));
    }
    if let Some(common) = &h.common_http_protocol_options {
        refuse_unhonoured_common_options(common)?;
    }
    let routes = match &h.route_specifier {
        Some(R::Rds(rds)) => RouteSource::Rds(rds.route_config_name.clone()),
        Some(R::RouteConfig(rc)) => {
            RouteSource::Inline(Arc::new(CompiledRoutes::compile(rc).map_err(|e| e.to_string())?))
        }
        Some(R::ScopedRoutes(_)) => return Err("scoped_routes are not supported".into()),
        None => return Err("http_connection_manager without routes".into()),
    };
    let mut fault = None;
    let mut fault_filter = false;
    let mut cors_filter = false;
    let mut suppress_envoy_headers = false;
    let mut router = false;
    for (i, f) in h.http_filters.iter().enumerate() {
        if router {
            return Err(format!("http filter {:?} comes after the router", f.name));
        }
        use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType;
        if f.disabled {
            return Err(format!(
                "http filter #{i} {:?}: disabled (enabled per route) is not supported",
                f.name
            ));
        }
        let any = match &f.config_type {
            Some(ConfigType::TypedConfig(a)) => Some(a),
            Some(ConfigType::ConfigDiscovery(_)) => {
                return Err(format!(
                    "http filter #{i} {:?}: config_discovery is not supported",
                    f.name
                ));
            }
            None => None,
        };
        let kind = any.map_or(f.name.as_str(), |a| {
            a.type_url.rsplit('/').next().unwrap_or_default()
        });
        match kind {
            "envoy.extensions.filters.http.router.v3.Router" | "envoy.filters.http.router" => {
                router = true;
                if let Some(a) = any {
                    let r: Router = decode_any(a, "envoy.extensions.filters.http.router.v3.Router", &f.name)?;
                    suppress_envoy_headers = compile_router(&r)?;
                }
            }
            "envoy.extensions.filters.http.cors.v3.Cors" | "envoy.filters.http.cors" => cors_filter = true,
            "envoy.extensions.filters.http.fault.v3.HTTPFault" | "envoy.filters.http.fault" => {
                fault_filter = true;
                if let Some(a) = any {
                    let f = decode_any(a, "envoy.extensions.filters.http.fault.v3.HTTPFault", &f.name)?;
                    let compiled = compile_fault(&f)?;
                    if compiled.delay.is_some()
                        || compiled.abort.is_some()
                        || compiled.header_abort.is_some()
                        || compiled.header_delay.is_some()
                    {
                        fault = Some(compiled);
                    }
                }
            }
            _ if f.is_optional => {}
            other => return Err(format!("http filter #{i} {other:?} is not supported")),
        }
    }
    if !router {
        return Err("http filters must end with the router".into());
    }
    let codec = match CodecType::try_from(h.codec_type) {
        Ok(CodecType::Auto) => Codec::Auto,
        Ok(CodecType::Http1) => Codec::Http1,
        Ok(CodecType::Http2) => Codec::Http2,
        _ => return Err(format!("codec_type {} is not supported", h.codec_type)),
    };
    let timeout_or =
        |d: Option<&envoy_types::pb::google::protobuf::Duration>, field: &str, default: Option<Duration>| {
            opt_duration(d, field).map(|t| match t {
                None => default,
                Some(t) if t.is_zero() => None,
                Some(t) => Some(t),
            })
        };
    let upgrades = h
        .upgrade_configs
        .iter()
        .filter(|u| u.enabled.as_ref().is_none_or(|b| b.value))
        .map(|u| {
            if !u.filters.is_empty() {
                return Err("upgrade_configs with filters are not supported".to_string());
            }
            Ok(u.upgrade_type.to_ascii_lowercase())
        })
        .collect::<Result<_, _>>()?;
    let common = h.common_http_protocol_options.as_ref();
    Ok(HttpManagerConfig {
        stat_prefix: h.stat_prefix.clone(),
        routes,
        fault,
        fault_filter,
        cors_filter,
        use_remote_address: h.use_remote_address.as_ref().is_some_and(|b| b.value),
        skip_xff_append: h.skip_xff_append,
        generate_request_id: h.generate_request_id.as_ref().is_none_or(|b| b.value),
        preserve_external_request_id: h.preserve_external_request_id,
        always_set_request_id_in_response: h.always_set_request_id_in_response,
        server_name: if h.server_name.is_empty() {
            http::HeaderValue::from_static("envoy")
        } else {
            http::HeaderValue::from_str(&h.server_name)
                .map_err(|_| format!("server_name {:?} is not a header value", h.server_name))?
        },
        server_header: {
            use http_connection_manager::ServerHeaderTransformation as T;
            match T::try_from(h.server_header_transformation) {
                Ok(T::Overwrite) => ServerHeader::Overwrite,
                Ok(T::AppendIfAbsent) => ServerHeader::AppendIfAbsent,
                Ok(T::PassThrough) => ServerHeader::PassThrough,
                Err(_) => {
                    return Err(format!(
                        "server_header_transformation {} is unknown",
                        h.server_header_transformation
                    ));
                }
            }
        },
        via: (!h.via.is_empty())
            .then(|| {
                http::HeaderValue::from_str(&h.via)
                    .map_err(|_| format!("via {:?} is not a header value", h.via))
            })
            .transpose()?,
        sanitize_xfcc: matches!(
            Fcc::try_from(h.forward_client_cert_details),
            Ok(Fcc::Sanitize | Fcc::SanitizeSet) | Err(_)
        ),
        stream_idle_timeout: timeout_or(
            h.stream_idle_timeout.as_ref(),
            "stream_idle_timeout",
            Some(Duration::from_secs(300)),
        )?,
        request_timeout: timeout_or(h.request_timeout.as_ref(), "request_timeout", None)?,
        idle_timeout: timeout_or(
            common.and_then(|c| c.idle_timeout.as_ref()),
            "idle_timeout",
            Some(Duration::from_secs(3600)),
        )?,
        drain_timeout: opt_duration(h.drain_timeout.as_ref(), "drain_timeout")?
            .unwrap_or(Duration::from_secs(5)),
        drain_timeout_jitter: match h.drain_timeout_jitter.as_ref().map(|p| p.value) {
            None => 0.0,
            Some(percent) if (0.0..=100.0).contains(&percent) => percent / 100.0,
            Some(percent) => {
                return Err(format!(
                    "http_connection_manager.drain_timeout_jitter: {percent} is not a percentage in [0, 100]"
                ));
            }
        },
        suppress_envoy_headers,
        upgrades,
        codec,
        strip_any_host_port: matches!(
            h.strip_port_mode,
            Some(http_connection_manager::StripPortMode::StripAnyHostPort(true))
        ),
        path: compile_path_normalization(h)?,
        headers_with_underscores: {
            use envoy_types::pb::envoy::config::core::v3::http_protocol_options::HeadersWithUnderscoresAction as A;
            let action = common.map_or(0, |c| c.headers_with_underscores_action);
            match A::try_from(action) {
                Ok(A::Allow) => HeadersWithUnderscores::Allow,
                Ok(A::RejectRequest) => HeadersWithUnderscores::Reject,
                Ok(A::DropHeader) => HeadersWithUnderscores::Drop,
                Err(_) => {
                    return Err(format!(
                        "common_http_protocol_options.headers_with_underscores_action {action} is unknown"
                    ));
                }
            }
        },
        max_request_headers: h.max_request_headers_kb.as_ref().map_or(60, |k| k.value as usize) * 1024,
        // 0 turns Envoy's limit off: Weir's default applies then.
        connection_buffer_limit: wide
            .buffer_limit
            .filter(|l| *l > 0)
            .and_then(|l| usize::try_from(l).ok()),
        bypass_overload_manager: wide.bypass_overload_manager,
        append_local_overload: h.append_local_overload,
        h2: h
            .http2_protocol_options
            .as_ref()
            .map(|o| {
                crate::h2_settings::Http2Settings::compile(
                    o,
                    "http_connection_manager.http2_protocol_options",
                )
            })
            .transpose()?
            .unwrap_or_default(),
        response_headers: HeaderOps::default(),
    })
}

/// The downstream `common_http_protocol_options` Weir does not honour, refused by name (it
/// honours `idle_timeout` and `headers_with_underscores_action`).
fn refuse_unhonoured_common_options(common: &CoreHttpProtocolOptions) -> Result<(), String> {
    let unsupported = [
        (common.max_headers_count.is_some(), "max_headers_count"),
        (
            common.max_response_headers_kb.is_some(),
            "max_response_headers_kb",
        ),
        (common.max_stream_duration.is_some(), "max_stream_duration"),
        (
            common.max_connection_duration.is_some(),
            "max_connection_duration",
        ),
        (
            common.max_connection_duration_jitter.is_some(),
            "max_connection_duration_jitter",
        ),
        (
            common.max_requests_per_connection.is_some(),
            "max_requests_per_connection",
        ),
    ];
    match unsupported.iter().find(|(set, _)| *set) {
        Some((_, field)) => Err(format!(
            "http_connection_manager.common_http_protocol_options.{field} is not supported"
        )),
        None => Ok(()),
    }
}

/// The connection manager's path handling: `normalize_path` (Envoy's runtime default, off,
/// when unset), `merge_slashes` and `path_with_escaped_slashes_action`.
fn compile_path_normalization(
    h: &HttpConnectionManager,
) -> Result<crate::path_normalization::PathNormalization, String> {
    use crate::path_normalization::{EscapedSlashes, PathNormalization};
    use http_connection_manager::PathWithEscapedSlashesAction as A;
    let escaped_slashes = match A::try_from(h.path_with_escaped_slashes_action) {
        Ok(A::ImplementationSpecificDefault | A::KeepUnchanged) => EscapedSlashes::KeepUnchanged,
        Ok(A::RejectRequest) => EscapedSlashes::RejectRequest,
        Ok(A::UnescapeAndRedirect) => EscapedSlashes::UnescapeAndRedirect,
        Ok(A::UnescapeAndForward) => EscapedSlashes::UnescapeAndForward,
        Err(_) => {
            return Err(format!(
                "http_connection_manager.path_with_escaped_slashes_action {} is unknown",
                h.path_with_escaped_slashes_action
            ));
        }
    };
    Ok(PathNormalization {
        normalize: h.normalize_path.is_some_and(|b| b.value),
        merge_slashes: h.merge_slashes,
        escaped_slashes,
    })
}

/// Envoy's level-by-level selection.
fn select<'a>(chains: &'a [Chain], facts: &ConnectionFacts) -> Option<&'a Chain> {
    let mut candidates: Vec<&Chain> = chains.iter().collect();
    // Destination port.
    let port = facts.destination.map(|d| d.port());
    candidates = narrow(candidates, |m| {
        m.destination_port.map(|p| (Some(p) == port).then_some(0))
    });
    // Destination IP: the longest prefix containing it.
    let ip = facts.destination.map(|d| d.ip());
    candidates = narrow(candidates, |m| {
        if m.prefix_ranges.is_empty() {
            return None;
        }
        Some(ip.and_then(|ip| {
            m.prefix_ranges
                .iter()
                .filter(|c| c.contains(ip))
                .map(|c| u32::from(128 - c.len))
                .min()
        }))
    });
    // Server name: exact, then the longest wildcard.
    let sni = facts.server_name.as_deref().map(str::to_ascii_lowercase);
    candidates = narrow(candidates, |m| {
        if m.server_names.is_empty() {
            return None;
        }
        Some(sni.as_deref().and_then(|name| {
            m.server_names
                .iter()
                .filter_map(|n| server_name_rank(n, name))
                .min()
        }))
    });
    candidates = narrow(candidates, |m| {
        m.transport_protocol
            .as_deref()
            .map(|t| (t == facts.transport).then_some(0))
    });
    candidates = narrow(candidates, |m| {
        if m.application_protocols.is_empty() {
            return None;
        }
        Some(
            m.application_protocols
                .iter()
                .any(|p| facts.application_protocols.iter().any(|a| a == p))
                .then_some(0),
        )
    });
    candidates.first().copied()
}

/// Lower is more specific; `None` when the pattern does not match.
fn server_name_rank(pattern: &str, name: &str) -> Option<u32> {
    if pattern == name {
        return Some(0);
    }
    let suffix = pattern.strip_prefix('*')?;
    (name.len() > suffix.len() && name.ends_with(suffix))
        .then(|| 1_000_000 - u32::try_from(suffix.len()).unwrap_or(0))
}

/// Keeps the candidates whose condition at this level matches best; if none specify a matching
/// condition, those with no condition at this level. `rank` returns `None` for "no condition",
/// `Some(None)` for "condition not met", `Some(Some(r))` for "met with specificity r" (lower is
/// more specific).
fn narrow(candidates: Vec<&Chain>, rank: impl Fn(&ChainMatch) -> Option<Option<u32>>) -> Vec<&Chain> {
    let ranked: Vec<(Option<Option<u32>>, &Chain)> =
        candidates.into_iter().map(|c| (rank(&c.matcher), c)).collect();
    let best = ranked.iter().filter_map(|(r, _)| r.flatten()).min();
    match best {
        Some(best) => ranked
            .into_iter()
            .filter(|(r, _)| *r == Some(Some(best)))
            .map(|(_, c)| c)
            .collect(),
        None => ranked
            .into_iter()
            .filter(|(r, _)| r.is_none())
            .map(|(_, c)| c)
            .collect(),
    }
}

/// A listener with no filter chains on `address` (bound dual-stack with `ipv4_compat`), for tests.
#[cfg(test)]
pub(crate) fn bare_listener(
    name: &str,
    address: SocketAddr,
    ipv4_compat: bool,
    bind_to_port: bool,
) -> ListenerConfig {
    use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address, socket_address};
    let source = Listener {
        name: name.into(),
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: address.ip().to_string(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(address.port().into())),
                ipv4_compat,
                ..Default::default()
            })),
        }),
        bind_to_port: Some(envoy_types::pb::google::protobuf::BoolValue { value: bind_to_port }),
        ..Default::default()
    };
    match ListenerConfig::compile(&source) {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
    use envoy_types::pb::envoy::r#type::v3::Percent;
    use envoy_types::pb::google::protobuf::Duration as PbDuration;

    fn manager(jitter: Option<f64>) -> Result<HttpManagerConfig, String> {
        let h = HttpConnectionManager {
            route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(
                RouteConfiguration::default(),
            )),
            drain_timeout: Some(PbDuration {
                seconds: 10,
                nanos: 0,
            }),
            drain_timeout_jitter: jitter.map(|value| Percent { value }),
            http_filters: vec![HttpFilter {
                name: "envoy.filters.http.router".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        compile_hcm(&h, ListenerWide::default())
    }

    #[test]
    fn the_drain_timeout_is_lengthened_by_up_to_its_jitter_per_connection() {
        let m = manager(Some(50.0)).unwrap();
        assert_eq!(m.drain_grace(0.0), Duration::from_secs(10));
        assert_eq!(m.drain_grace(0.5), Duration::from_millis(12_500));
        assert_eq!(m.drain_grace(1.0), Duration::from_secs(15));
        let m = manager(None).unwrap();
        assert_eq!(
            m.drain_grace(0.9),
            Duration::from_secs(10),
            "no jitter unless set"
        );
        for bad in [100.5, -1.0, f64::NAN] {
            let e = manager(Some(bad)).unwrap_err();
            assert!(e.contains("drain_timeout_jitter"), "{e}");
        }
    }
}

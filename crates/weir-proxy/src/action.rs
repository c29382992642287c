//! What a matched route does: forward (clusters, rewrites, timeout, retries, hashing), redirect,
//! or answer directly; plus its per-route CORS and fault settings. Compiled once per
//! RouteConfiguration; anything Envoy would do that Weir cannot is an error.

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::data_source;
use envoy_types::pb::envoy::config::route::v3::{
    RedirectAction, Route, RouteAction, redirect_action, route, route_action, route_action::hash_policy,
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{HttpFault, fault_abort};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent::DenominatorType};
use envoy_types::pb::google::protobuf::Any;
use http::{HeaderName, HeaderValue, StatusCode};
use regex::Regex;

use crate::convert::{decode_any, opt_duration};
use crate::headers::{HeaderOps, header_name};
use crate::retry::RetryPolicy;

/// Where a forwarded request goes.
#[derive(Clone, Debug)]
pub enum Clusters {
    /// One cluster.
    One(String),
    /// Weighted clusters (name, weight, per-cluster request and response header operations);
    /// the total is the sum of weights (or `total_weight`).
    Weighted(Vec<WeightedTarget>, u64),
    /// The cluster named by a request header.
    FromHeader(HeaderName),
}

/// One weighted target.
#[derive(Clone, Debug)]
pub struct WeightedTarget {
    /// The cluster.
    pub cluster: String,
    /// Its weight.
    pub weight: u64,
    /// Request header operations for requests sent there.
    pub request_headers: HeaderOps,
    /// Response header operations for responses from there.
    pub response_headers: HeaderOps,
    /// Replace the authority of requests sent there (before the route's own rewrite).
    pub host_rewrite: Option<String>,
}

impl Clusters {
    /// Picks a target with `random` in `0..u64::MAX` (weighted clusters), returning the
    /// cluster name and the target's header operations.
    pub fn pick(
        &self,
        random: u64,
        headers: &http::HeaderMap,
    ) -> Option<(Cow<'_, str>, Option<&WeightedTarget>)> {
        match self {
            Clusters::One(c) => Some((Cow::Borrowed(c), None)),
            Clusters::Weighted(targets, total) => {
                let mut point = random % (*total).max(1);
                for t in targets {
                    if point < t.weight {
                        return Some((Cow::Borrowed(&t.cluster), Some(t)));
                    }
                    point -= t.weight;
                }
                targets
                    .last()
                    .map(|t| (Cow::Borrowed(t.cluster.as_str()), Some(t)))
            }
            Clusters::FromHeader(h) => headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(|c| (Cow::Owned(c.to_string()), None)),
        }
    }
}

/// A consistent-hash policy.
#[derive(Clone, Debug)]
pub enum HashPolicy {
    /// A request header's value.
    Header(HeaderName),
    /// A cookie's value.
    Cookie(String),
    /// The downstream source IP.
    SourceIp,
    /// A query parameter's value.
    QueryParameter(String),
}

/// A compiled hash policy list (first value found wins unless `terminal` semantics matter;
/// Envoy combines all, stopping at the first terminal one that produced a hash).
#[derive(Clone, Debug)]
pub struct HashPolicyEntry {
    /// The source of the hash.
    pub policy: HashPolicy,
    /// Stop at this policy when it yields a value.
    pub terminal: bool,
}

/// A forwarding action.
#[derive(Clone, Debug)]
pub struct Forward {
    /// The target clusters.
    pub clusters: Clusters,
    /// Replace the matched prefix (prefix and path-separated-prefix routes).
    pub prefix_rewrite: Option<String>,
    /// Replace regex matches in the path.
    pub regex_rewrite: Option<(Regex, String)>,
    /// Replace the authority.
    pub host_rewrite: Option<String>,
    /// Request timeout (`None`: disabled). Envoy's default is 15 s.
    pub timeout: Option<Duration>,
    /// The timeout as `x-envoy-expected-rq-timeout-ms` sends it (made once, not per request).
    pub timeout_header: Option<http::HeaderValue>,
    /// Use `grpc-timeout` when present, capped by this (`Some(None)`: uncapped).
    pub grpc_timeout_max: Option<Option<Duration>>,
    /// Retries.
    pub retry: Option<RetryPolicy>,
    /// Hash policies for consistent hashing.
    pub hash_policies: Vec<HashPolicyEntry>,
    /// Upgrades allowed (`websocket`…), besides the connection manager's.
    pub upgrades: Vec<(String, bool)>,
    /// Shadow copies of the request (`request_mirror_policies`).
    pub mirrors: Vec<Mirror>,
    /// The route's `idle_timeout`, which replaces the connection manager's stream idle timeout
    /// for its requests: `None` keeps that one, `Some(None)` (0s) turns it off.
    pub idle_timeout: Option<Option<Duration>>,
    /// A request body up to this many bytes is kept for retries and shadow copies (the route's
    /// `request_body_buffer_limit` or `per_request_buffer_limit_bytes`, else its virtual
    /// host's); `None`: [`DEFAULT_BUFFER_LIMIT`].
    pub buffer_limit: Option<usize>,
}

/// Bodies up to this size are kept so the request can be retried or mirrored when neither the
/// route nor its virtual host sets a limit (Envoy's default is its 1 MiB connection buffer
/// limit; a larger request is streamed, and neither retried nor mirrored).
pub const DEFAULT_BUFFER_LIMIT: usize = 64 * 1024;

impl Forward {
    /// How much of a request body is kept for retries and shadow copies: the route's (or its
    /// virtual host's) limit, else the connection's (the listener's
    /// `per_connection_buffer_limit_bytes`), else [`DEFAULT_BUFFER_LIMIT`].
    pub fn buffer_limit(&self, connection: Option<usize>) -> usize {
        self.buffer_limit.or(connection).unwrap_or(DEFAULT_BUFFER_LIMIT)
    }

    /// The stream idle timeout of this route's requests: its own `idle_timeout`, else the
    /// connection manager's.
    pub fn stream_idle_timeout(&self, manager: Option<Duration>) -> Option<Duration> {
        self.idle_timeout.unwrap_or(manager)
    }
}

/// A route's or virtual host's request buffer limit: `request_body_buffer_limit`, which
/// supersedes `per_request_buffer_limit_bytes`.
pub fn request_buffer_limit(
    request_body_buffer_limit: Option<&envoy_types::pb::google::protobuf::UInt64Value>,
    per_request_buffer_limit_bytes: Option<&envoy_types::pb::google::protobuf::UInt32Value>,
) -> Option<usize> {
    match (request_body_buffer_limit, per_request_buffer_limit_bytes) {
        (Some(l), _) => Some(usize::try_from(l.value).unwrap_or(usize::MAX)),
        (None, Some(l)) => Some(usize::try_from(l.value).unwrap_or(usize::MAX)),
        (None, None) => None,
    }
}

/// A request mirror: a fire-and-forget copy to another cluster.
#[derive(Clone, Debug)]
pub struct Mirror {
    /// The cluster the copy goes to.
    pub cluster: String,
    /// Share of requests copied.
    pub fraction: Fraction,
    /// Append `-shadow` to the authority (Envoy's default).
    pub shadow_suffix: bool,
    /// Replace the authority of the copy.
    pub host_rewrite: Option<String>,
}

fn mirror(m: &route_action::RequestMirrorPolicy) -> Result<Mirror, String> {
    if !m.cluster_header.is_empty() || !m.request_headers_mutations.is_empty() {
        return Err(
            "request_mirror_policies: cluster_header and request_headers_mutations are not supported".into(),
        );
    }
    if m.cluster.is_empty() {
        return Err("request_mirror_policies: a cluster is required".into());
    }
    Ok(Mirror {
        cluster: m.cluster.clone(),
        // Without a runtime, the runtime key's default value applies (as in Envoy when the key
        // is not set).
        fraction: Fraction::from_pb(m.runtime_fraction.as_ref().and_then(|f| f.default_value.as_ref())),
        shadow_suffix: !m.disable_shadow_host_suffix_append,
        host_rewrite: (!m.host_rewrite_literal.is_empty()).then(|| m.host_rewrite_literal.clone()),
    })
}

/// A redirect.
#[derive(Clone, Debug)]
pub struct Redirect {
    /// New scheme (`https_redirect` or `scheme_redirect`).
    pub scheme: Option<String>,
    /// New host.
    pub host: Option<String>,
    /// New port (0: unchanged).
    pub port: u16,
    /// New path, or prefix replacement.
    pub path: Option<RedirectPath>,
    /// Status code.
    pub status: StatusCode,
    /// Drop the query string.
    pub strip_query: bool,
}

/// How a redirect changes the path.
#[derive(Clone, Debug)]
pub enum RedirectPath {
    /// The whole path (and query, if it has one).
    Path(String),
    /// The matched prefix.
    Prefix(String),
    /// Regex substitution.
    Regex(Regex, String),
}

/// What a route does.
#[derive(Clone, Debug)]
pub enum Action {
    /// Forward upstream.
    Forward(Box<Forward>),
    /// Redirect.
    Redirect(Box<Redirect>),
    /// Answer with a status and body.
    Direct(StatusCode, Bytes),
}

/// A fraction of requests.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fraction {
    numerator: u64,
    denominator: u64,
}

impl Fraction {
    /// From Envoy's FractionalPercent (absent: 100%).
    pub fn from_pb(p: Option<&FractionalPercent>) -> Self {
        let Some(p) = p else {
            return Fraction {
                numerator: 1,
                denominator: 1,
            };
        };
        let denominator = match DenominatorType::try_from(p.denominator) {
            Ok(DenominatorType::Hundred) | Err(_) => 100,
            Ok(DenominatorType::TenThousand) => 10_000,
            Ok(DenominatorType::Million) => 1_000_000,
        };
        Fraction {
            numerator: u64::from(p.numerator).min(denominator),
            denominator,
        }
    }

    /// Whether a draw in `0..u64::MAX` falls inside the fraction.
    pub fn hit(&self, random: u64) -> bool {
        random % self.denominator < self.numerator
    }
}

/// An injected fault.
#[derive(Clone, Debug, Default)]
pub struct Fault {
    /// A fixed delay and the share of requests it applies to.
    pub delay: Option<(Duration, Fraction)>,
    /// An abort and the share of requests it applies to.
    pub abort: Option<(Abort, Fraction)>,
    /// Delay taken from `x-envoy-fault-delay-request` (header_delay).
    pub header_delay: Option<Fraction>,
    /// Abort taken from `x-envoy-fault-abort-request` / `-grpc-request` (header_abort).
    pub header_abort: Option<Fraction>,
    /// What an abort answers with: the body of an HTTP abort, the `grpc-message` of a gRPC
    /// one (`abort.response_body`; Envoy's "fault filter abort" when unset).
    pub abort_message: AbortMessage,
}

/// The text an injected abort answers with.
#[derive(Clone, Debug)]
pub struct AbortMessage {
    /// The HTTP response body.
    pub text: Box<str>,
    /// The same text as a `grpc-message` value (percent-encoded as gRPC requires).
    pub grpc_message: HeaderValue,
}

impl AbortMessage {
    /// Envoy's text when `response_body` is unset.
    pub const DEFAULT: &'static str = "fault filter abort";

    /// The message for `text`.
    pub fn new(text: &str) -> Self {
        // gRPC's rule: bytes outside printable ASCII, and `%` itself, are percent-encoded.
        const GRPC_MESSAGE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');
        let encoded = percent_encoding::utf8_percent_encode(text, GRPC_MESSAGE).to_string();
        AbortMessage {
            text: text.into(),
            // Percent-encoded text is printable ASCII, which is always a valid header value.
            grpc_message: HeaderValue::try_from(encoded)
                .unwrap_or_else(|_| HeaderValue::from_static(Self::DEFAULT)),
        }
    }
}

impl Default for AbortMessage {
    fn default() -> Self {
        AbortMessage::new(Self::DEFAULT)
    }
}

/// How an abort answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abort {
    /// With an HTTP status.
    Http(StatusCode),
    /// With a gRPC status (HTTP 200, trailers-only).
    Grpc(u32),
}

/// Per-route settings of HTTP filters (`typed_per_filter_config`).
#[derive(Clone, Debug, Default)]
pub struct FilterSettings {
    /// CORS policy.
    pub cors: Option<Cors>,
    /// Fault injection.
    pub fault: Option<Fault>,
}

/// A compiled CORS policy.
#[derive(Clone, Debug)]
pub struct Cors {
    /// Share of requests the policy applies to (`filter_enabled`).
    pub enabled: Fraction,
    /// Allowed origins.
    pub origins: Vec<crate::routes::Text>,
    /// `access-control-allow-methods`.
    pub allow_methods: String,
    /// `access-control-allow-headers`.
    pub allow_headers: String,
    /// `access-control-expose-headers`.
    pub expose_headers: String,
    /// `access-control-max-age`.
    pub max_age: String,
    /// `access-control-allow-credentials: true`.
    pub allow_credentials: bool,
    /// Preflights that match no origin go upstream.
    pub forward_not_matching_preflights: bool,
}

impl Cors {
    /// Whether an origin is allowed.
    pub fn allows(&self, origin: &str) -> bool {
        self.origins.iter().any(|t| t.matches(origin))
    }

    /// Whether the policy applies to this request (its `filter_enabled` share).
    pub fn applies(&self) -> bool {
        self.enabled.hit(fastrand::u64(..))
    }
}

/// Compiles a route's action.
#[allow(deprecated)] // per_request_buffer_limit_bytes, still honoured
pub fn compile_action(r: &Route) -> Result<Action, String> {
    match &r.action {
        Some(route::Action::Route(a)) => {
            let mut forward = compile_forward(a)?;
            forward.buffer_limit = request_buffer_limit(
                r.request_body_buffer_limit.as_ref(),
                r.per_request_buffer_limit_bytes.as_ref(),
            );
            Ok(Action::Forward(Box::new(forward)))
        }
        Some(route::Action::Redirect(a)) => Ok(Action::Redirect(Box::new(compile_redirect(a)?))),
        Some(route::Action::DirectResponse(d)) => {
            let status = u16::try_from(d.status)
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
                .filter(|s| (200..600).contains(&s.as_u16()))
                .ok_or_else(|| format!("direct_response status {} is not an HTTP status", d.status))?;
            let body = match d.body.as_ref().and_then(|b| b.specifier.as_ref()) {
                None => Bytes::new(),
                Some(data_source::Specifier::InlineString(s)) => Bytes::from(s.clone()),
                Some(data_source::Specifier::InlineBytes(b)) => Bytes::from(b.clone()),
                Some(data_source::Specifier::Filename(f)) => Bytes::from(
                    std::fs::read(f).map_err(|e| format!("direct_response body file {f:?}: {e}"))?,
                ),
                Some(data_source::Specifier::EnvironmentVariable(v)) => Bytes::from(
                    std::env::var(v)
                        .map_err(|_| format!("direct_response body variable {v:?} is not set"))?,
                ),
            };
            Ok(Action::Direct(status, body))
        }
        Some(route::Action::FilterAction(_)) => Err("filter_action is not supported".into()),
        Some(route::Action::NonForwardingAction(_)) => Err("non_forwarding_action is not supported".into()),
        None => Err("route without an action".into()),
    }
}

#[allow(deprecated)]
fn compile_forward(a: &RouteAction) -> Result<Forward, String> {
    let unsupported = [
        (
            a.cluster_not_found_response_code != 0,
            "cluster_not_found_response_code",
        ),
        (a.metadata_match.is_some(), "metadata_match"),
        (a.path_rewrite_policy.is_some(), "path_rewrite_policy"),
        (!a.path_rewrite.is_empty(), "path_rewrite"),
        (a.append_x_forwarded_host, "append_x_forwarded_host"),
        (a.flush_timeout.is_some(), "flush_timeout"),
        (a.early_data_policy.is_some(), "early_data_policy"),
        (a.retry_policy_typed_config.is_some(), "retry_policy_typed_config"),
        (a.priority != 0, "priority"),
        (!a.rate_limits.is_empty(), "rate_limits"),
        (a.cors.is_some(), "cors (use typed_per_filter_config)"),
        (a.grpc_timeout_offset.is_some(), "grpc_timeout_offset"),
        (a.internal_redirect_policy.is_some(), "internal_redirect_policy"),
        (a.internal_redirect_action != 0, "internal_redirect_action"),
        (a.hedge_policy.is_some(), "hedge_policy"),
        (a.max_internal_redirects.is_some(), "max_internal_redirects"),
    ];
    if let Some((_, field)) = unsupported.iter().find(|(set, _)| *set) {
        return Err(format!("route.{field} is not supported"));
    }
    use route_action::ClusterSpecifier as C;
    let clusters = match &a.cluster_specifier {
        Some(C::Cluster(c)) => Clusters::One(c.clone()),
        Some(C::ClusterHeader(h)) => Clusters::FromHeader(header_name(h)?),
        Some(C::WeightedClusters(w)) => {
            if !w.runtime_key_prefix.is_empty() || w.random_value_specifier.is_some() {
                return Err(
                    "weighted_clusters: runtime_key_prefix, header_name and use_hash_policy are not supported"
                        .into(),
                );
            }
            let mut targets = Vec::with_capacity(w.clusters.len());
            for c in &w.clusters {
                if !c.cluster_header.is_empty()
                    || c.metadata_match.is_some()
                    || !c.typed_per_filter_config.is_empty()
                {
                    return Err(format!(
                        "weighted cluster {:?}: cluster_header, metadata_match and typed_per_filter_config are not supported",
                        c.name
                    ));
                }
                targets.push(WeightedTarget {
                    cluster: c.name.clone(),
                    weight: u64::from(c.weight.as_ref().map_or(0, |w| w.value)),
                    request_headers: HeaderOps::compile(
                        &c.request_headers_to_add,
                        &c.request_headers_to_remove,
                    )?,
                    response_headers: HeaderOps::compile(
                        &c.response_headers_to_add,
                        &c.response_headers_to_remove,
                    )?,
                    host_rewrite: c.host_rewrite_specifier.as_ref().map(|h| {
                        use envoy_types::pb::envoy::config::route::v3::weighted_cluster::cluster_weight::HostRewriteSpecifier;
                        let HostRewriteSpecifier::HostRewriteLiteral(h) = h;
                        h.clone()
                    }),
                });
            }
            let sum: u64 = targets.iter().map(|t| t.weight).sum();
            let total = w.total_weight.as_ref().map_or(sum, |t| u64::from(t.value));
            if sum == 0 || total != sum {
                return Err(format!(
                    "weighted_clusters: weights sum to {sum}, total_weight says {total}"
                ));
            }
            Clusters::Weighted(targets, total)
        }
        Some(C::ClusterSpecifierPlugin(_)) | Some(C::InlineClusterSpecifierPlugin(_)) => {
            return Err(
                "cluster specifier plugins (cluster_specifier_plugin, inline_cluster_specifier_plugin) are not supported"
                    .into(),
            );
        }
        None => return Err("route action without a cluster".into()),
    };
    use route_action::HostRewriteSpecifier as H;
    let host_rewrite = match &a.host_rewrite_specifier {
        None => None,
        Some(H::HostRewriteLiteral(h)) => Some(h.clone()),
        Some(H::AutoHostRewrite(b)) if !b.value => None,
        Some(other) => {
            let field = match other {
                H::AutoHostRewrite(_) => "auto_host_rewrite",
                H::HostRewriteHeader(_) => "host_rewrite_header",
                _ => "host_rewrite_path_regex",
            };
            return Err(format!(
                "{field} is not supported (only host_rewrite_literal rewrites the host)"
            ));
        }
    };
    let regex_rewrite = a
        .regex_rewrite
        .as_ref()
        .map(|r| {
            let pattern = r.pattern.as_ref().ok_or("regex_rewrite without a pattern")?;
            let re =
                Regex::new(&pattern.regex).map_err(|e| format!("regex_rewrite {:?}: {e}", pattern.regex))?;
            Ok::<_, String>((re, envoy_substitution(&r.substitution)))
        })
        .transpose()?;
    let timeout = match opt_duration(a.timeout.as_ref(), "timeout")? {
        None => Some(Duration::from_secs(15)),
        Some(t) if t.is_zero() => None,
        Some(t) => Some(t),
    };
    let mut grpc_timeout_max = None;
    let mut timeout = timeout;
    if let Some(m) = &a.max_stream_duration {
        if m.grpc_timeout_header_offset.is_some() {
            return Err("max_stream_duration.grpc_timeout_header_offset is not supported".into());
        }
        if let Some(d) = opt_duration(m.max_stream_duration.as_ref(), "max_stream_duration")?
            && !d.is_zero()
        {
            timeout = Some(timeout.map_or(d, |t| t.min(d)));
        }
        if let Some(max) = opt_duration(m.grpc_timeout_header_max.as_ref(), "grpc_timeout_header_max")? {
            grpc_timeout_max = Some((!max.is_zero()).then_some(max));
        }
    }
    if let Some(max) = opt_duration(a.max_grpc_timeout.as_ref(), "max_grpc_timeout")? {
        grpc_timeout_max = Some((!max.is_zero()).then_some(max));
    }
    let retry = a.retry_policy.as_ref().map(RetryPolicy::compile).transpose()?;
    let hash_policies = a
        .hash_policy
        .iter()
        .map(|h| {
            use hash_policy::PolicySpecifier as P;
            let policy = match &h.policy_specifier {
                Some(P::Header(hd)) => {
                    if hd.regex_rewrite.is_some() {
                        return Err("hash_policy header regex_rewrite is not supported".to_string());
                    }
                    HashPolicy::Header(header_name(&hd.header_name)?)
                }
                Some(P::Cookie(c)) => {
                    if c.ttl.is_some() {
                        return Err(
                            "hash_policy cookie with a ttl (generated cookies) is not supported".into(),
                        );
                    }
                    HashPolicy::Cookie(c.name.clone())
                }
                Some(P::ConnectionProperties(c)) if c.source_ip => HashPolicy::SourceIp,
                Some(P::QueryParameter(q)) => HashPolicy::QueryParameter(q.name.clone()),
                Some(P::ConnectionProperties(_)) => {
                    return Err("hash_policy connection_properties without source_ip hashes nothing".into());
                }
                Some(P::FilterState(_)) => return Err("hash_policy filter_state is not supported".into()),
                None => return Err("hash_policy without a policy".into()),
            };
            Ok(HashPolicyEntry {
                policy,
                terminal: h.terminal,
            })
        })
        .collect::<Result<_, _>>()?;
    let upgrades = a
        .upgrade_configs
        .iter()
        .map(|u| {
            if u.connect_config.is_some() {
                return Err("upgrade connect_config is not supported".to_string());
            }
            Ok((
                u.upgrade_type.to_ascii_lowercase(),
                u.enabled.as_ref().is_none_or(|b| b.value),
            ))
        })
        .collect::<Result<_, _>>()?;
    Ok(Forward {
        clusters,
        prefix_rewrite: (!a.prefix_rewrite.is_empty()).then(|| a.prefix_rewrite.clone()),
        regex_rewrite,
        host_rewrite,
        timeout_header: timeout.map(|t| http::HeaderValue::from(t.as_millis() as u64)),
        timeout,
        grpc_timeout_max,
        retry,
        hash_policies,
        upgrades,
        mirrors: a
            .request_mirror_policies
            .iter()
            .map(mirror)
            .collect::<Result<_, _>>()?,
        idle_timeout: opt_duration(a.idle_timeout.as_ref(), "idle_timeout")?
            .map(|t| (!t.is_zero()).then_some(t)),
        buffer_limit: None,
    })
}

/// Envoy's substitutions use `\1`; the regex crate uses `${1}`.
fn envoy_substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(char::is_ascii_digit) => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                out.push_str(&format!("${{{digits}}}"));
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

fn compile_redirect(a: &RedirectAction) -> Result<Redirect, String> {
    use redirect_action::{
        PathRewriteSpecifier as P, RedirectResponseCode as R, SchemeRewriteSpecifier as S,
    };
    let scheme = match &a.scheme_rewrite_specifier {
        Some(S::HttpsRedirect(true)) => Some("https".to_string()),
        Some(S::HttpsRedirect(false)) | None => None,
        Some(S::SchemeRedirect(s)) => Some(s.to_ascii_lowercase()),
    };
    let path = match &a.path_rewrite_specifier {
        None => None,
        Some(P::PathRedirect(p)) => Some(RedirectPath::Path(p.clone())),
        Some(P::PrefixRewrite(p)) => Some(RedirectPath::Prefix(p.clone())),
        Some(P::RegexRewrite(r)) => {
            let pattern = r.pattern.as_ref().ok_or("regex_rewrite without a pattern")?;
            let re =
                Regex::new(&pattern.regex).map_err(|e| format!("regex_rewrite {:?}: {e}", pattern.regex))?;
            Some(RedirectPath::Regex(re, envoy_substitution(&r.substitution)))
        }
        Some(P::PathRewrite(_)) => return Err("redirect path_rewrite templates are not supported".into()),
    };
    let status = match R::try_from(a.response_code) {
        Ok(R::MovedPermanently) => StatusCode::MOVED_PERMANENTLY,
        Ok(R::Found) => StatusCode::FOUND,
        Ok(R::SeeOther) => StatusCode::SEE_OTHER,
        Ok(R::TemporaryRedirect) => StatusCode::TEMPORARY_REDIRECT,
        Ok(R::PermanentRedirect) => StatusCode::PERMANENT_REDIRECT,
        Err(_) => return Err(format!("redirect response_code {} is unknown", a.response_code)),
    };
    Ok(Redirect {
        scheme,
        host: (!a.host_redirect.is_empty()).then(|| a.host_redirect.clone()),
        port: u16::try_from(a.port_redirect)
            .map_err(|_| format!("port_redirect {} is out of range", a.port_redirect))?,
        path,
        status,
        strip_query: a.strip_query,
    })
}

/// Compiles `typed_per_filter_config` of a route, virtual host or route configuration.
pub fn compile_filter_settings(
    configs: &std::collections::HashMap<String, Any>,
) -> Result<FilterSettings, String> {
    let mut out = FilterSettings::default();
    for (name, any) in configs {
        match name.as_str() {
            "envoy.filters.http.cors" => {
                let p: CorsPolicy =
                    decode_any(any, "envoy.extensions.filters.http.cors.v3.CorsPolicy", name)?;
                out.cors = Some(compile_cors(&p)?);
            }
            "envoy.filters.http.fault" => {
                let f: HttpFault = decode_any(any, "envoy.extensions.filters.http.fault.v3.HTTPFault", name)?;
                out.fault = Some(compile_fault(&f)?);
            }
            other => return Err(format!("typed_per_filter_config {other:?} is not supported")),
        }
    }
    Ok(out)
}

fn compile_cors(p: &CorsPolicy) -> Result<Cors, String> {
    if p.shadow_enabled.is_some() || p.allow_private_network_access.is_some() {
        return Err("cors: shadow_enabled and allow_private_network_access are not supported".into());
    }
    // `filter_enabled` is a runtime fraction; Weir has no runtime, so its default applies.
    let enabled = p.filter_enabled.as_ref().map_or(Fraction::from_pb(None), |f| {
        Fraction::from_pb(f.default_value.as_ref())
    });
    Ok(Cors {
        enabled,
        origins: p
            .allow_origin_string_match
            .iter()
            .map(|m| crate::routes::compile_text(m).map(|(t, _)| t))
            .collect::<Result<_, _>>()?,
        allow_methods: p.allow_methods.clone(),
        allow_headers: p.allow_headers.clone(),
        expose_headers: p.expose_headers.clone(),
        max_age: p.max_age.clone(),
        allow_credentials: p.allow_credentials.as_ref().is_some_and(|b| b.value),
        forward_not_matching_preflights: p.forward_not_matching_preflights.as_ref().is_none_or(|b| b.value),
    })
}

/// Compiles an HTTP fault configuration.
pub fn compile_fault(f: &HttpFault) -> Result<Fault, String> {
    let unsupported = [
        (!f.upstream_cluster.is_empty(), "upstream_cluster"),
        (!f.downstream_nodes.is_empty(), "downstream_nodes"),
        (f.max_active_faults.is_some(), "max_active_faults"),
        (f.response_rate_limit.is_some(), "response_rate_limit"),
        (!f.headers.is_empty(), "headers"),
    ];
    if let Some((_, field)) = unsupported.iter().find(|(set, _)| *set) {
        return Err(format!("fault.{field} is not supported"));
    }
    let mut out = Fault::default();
    if let Some(d) = &f.delay {
        let fraction = Fraction::from_pb(d.percentage.as_ref());
        match &d.fault_delay_secifier {
            Some(fault_delay::FaultDelaySecifier::FixedDelay(t)) => {
                let t = opt_duration(Some(t), "fault.delay.fixed_delay")?.unwrap_or_default();
                out.delay = Some((t, fraction));
            }
            Some(fault_delay::FaultDelaySecifier::HeaderDelay(_)) => out.header_delay = Some(fraction),
            None => return Err("fault.delay without a delay".into()),
        }
    }
    if let Some(a) = &f.abort {
        if !a.response_body.is_empty() {
            out.abort_message = AbortMessage::new(&a.response_body);
        }
        let fraction = Fraction::from_pb(a.percentage.as_ref());
        match &a.error_type {
            Some(fault_abort::ErrorType::HttpStatus(s)) => {
                let status = u16::try_from(*s)
                    .ok()
                    .filter(|s| (200..600).contains(s))
                    .and_then(|s| StatusCode::from_u16(s).ok())
                    .ok_or_else(|| format!("fault.abort.http_status {s} is not in 200..599"))?;
                out.abort = Some((Abort::Http(status), fraction));
            }
            Some(fault_abort::ErrorType::GrpcStatus(s)) => out.abort = Some((Abort::Grpc(*s), fraction)),
            Some(fault_abort::ErrorType::HeaderAbort(_)) => out.header_abort = Some(fraction),
            None => return Err("fault.abort without an error type".into()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutions_become_regex_crate_syntax() {
        assert_eq!(envoy_substitution(r"/v2/\1/x$"), "/v2/${1}/x$$");
        let re = Regex::new("^/v1/(.*)$").unwrap();
        assert_eq!(
            re.replace("/v1/abc", envoy_substitution(r"/v2/\1").as_str()),
            "/v2/abc"
        );
    }

    #[test]
    fn fractions_follow_denominators() {
        let f = Fraction::from_pb(Some(&FractionalPercent {
            numerator: 50,
            denominator: DenominatorType::Hundred as i32,
        }));
        let hits = (0..1000u64).filter(|i| f.hit(*i)).count();
        assert_eq!(hits, 500);
        assert!(Fraction::from_pb(None).hit(12345));
    }
}

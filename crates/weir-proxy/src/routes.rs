//! Route configurations compiled for matching, with Envoy's semantics:
//!
//! - **Virtual host**: by the request's authority, case-insensitively: an exact domain first,
//!   then the longest suffix wildcard (`*.example.com`, which needs at least one character before
//!   the suffix), then the longest prefix wildcard (`example.*`), then `*`. The authority is matched
//!   as sent, port included (Envoy strips no port unless told to; Istio lists `host:port` domains).
//! - **Route**: the first, in order, whose path condition (prefix, exact path, full-match regex,
//!   path-separated prefix; case-insensitive when `case_sensitive: false`), header conditions
//!   (exact, prefix, suffix, contains, regex, range, presence; inverted; absent headers fail)
//!   and query-parameter conditions all hold. The path is matched without its query string.
//!
//! What Envoy would do differently from what is written here is a compile error, never a silent
//! approximation: unsupported matchers (CONNECT, path-match policies, cookies, gRPC, TLS,
//! metadata, runtime fractions) and invalid regexes are rejected.

use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, QueryParameterMatcher, Route, RouteConfiguration, RouteMatch, VirtualHost, header_matcher,
    query_parameter_matcher, route_match,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use regex::Regex;

use crate::action::{Action, FilterSettings, compile_action, compile_filter_settings};
use crate::headers::HeaderOps;

/// Where route matching reads request headers from.
pub trait Headers {
    /// The value of a header (lowercase name); several values are joined with `,` as Envoy
    /// does for matching.
    fn value(&self, name: &str) -> Option<std::borrow::Cow<'_, str>>;
}

impl Headers for [(&str, &str)] {
    fn value(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        let mut values = self
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v);
        let first = values.next()?;
        match values.next() {
            None => Some(std::borrow::Cow::Borrowed(first)),
            Some(second) => {
                let mut joined = format!("{first},{second}");
                for v in values {
                    joined.push(',');
                    joined.push_str(v);
                }
                Some(std::borrow::Cow::Owned(joined))
            }
        }
    }
}

impl Headers for http::HeaderMap {
    fn value(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        if name.starts_with(':') {
            return None;
        }
        let mut values = self.get_all(name).iter().filter_map(|v| v.to_str().ok());
        let first = values.next()?;
        match values.next() {
            None => Some(std::borrow::Cow::Borrowed(first)),
            Some(second) => {
                let mut joined = format!("{first},{second}");
                for v in values {
                    joined.push(',');
                    joined.push_str(v);
                }
                Some(std::borrow::Cow::Owned(joined))
            }
        }
    }
}

#[allow(deprecated)]
fn compile_vhost(vh: &VirtualHost, routes: Vec<CompiledRoute>) -> Result<CompiledVirtualHost, String> {
    use envoy_types::pb::envoy::config::route::v3::virtual_host::TlsRequirementType as Tls;
    let unsupported = [
        (!vh.virtual_clusters.is_empty(), "virtual_clusters"),
        (!vh.rate_limits.is_empty(), "rate_limits"),
        (vh.cors.is_some(), "cors (use typed_per_filter_config)"),
        (vh.hedge_policy.is_some(), "hedge_policy"),
        (
            vh.retry_policy_typed_config.is_some(),
            "retry_policy_typed_config",
        ),
        (vh.matcher.is_some(), "matcher"),
        (!vh.request_mirror_policies.is_empty(), "request_mirror_policies"),
        (!vh.route_specifiers.is_empty(), "route_specifiers"),
    ];
    if let Some((_, field)) = unsupported.iter().find(|(set, _)| *set) {
        return Err(format!("virtual host {field} is not supported"));
    }
    Ok(CompiledVirtualHost {
        name: vh.name.clone(),
        routes,
        filters: compile_filter_settings(&vh.typed_per_filter_config)?,
        request_headers: HeaderOps::compile(&vh.request_headers_to_add, &vh.request_headers_to_remove)?,
        response_headers: HeaderOps::compile(&vh.response_headers_to_add, &vh.response_headers_to_remove)?,
        require_tls: matches!(Tls::try_from(vh.require_tls), Ok(Tls::All | Tls::ExternalOnly)),
        include_attempt_count: vh.include_request_attempt_count,
        attempt_count_in_response: vh.include_attempt_count_in_response,
        timeout_retry_header: vh.include_is_timeout_retry_header,
        retry: vh
            .retry_policy
            .as_ref()
            .map(crate::retry::RetryPolicy::compile)
            .transpose()?,
    })
}

/// Why a RouteConfiguration cannot be compiled; the text is the NACK reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("route configuration {config:?}, virtual host {vhost:?}, route {route}: {problem}")]
pub struct RouteError {
    /// The RouteConfiguration.
    pub config: String,
    /// The virtual host.
    pub vhost: String,
    /// The route, by index (and name when it has one).
    pub route: String,
    /// What is wrong.
    pub problem: String,
}

/// A string condition.
#[derive(Debug, Clone)]
pub enum Text {
    /// Equal.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// Ends with.
    Suffix(String),
    /// Contains.
    Contains(String),
    /// Matches entirely.
    Regex(Regex),
}

impl Text {
    /// Compiles for matching: with `ignore_case`, the literal is lowercased once here and only
    /// the request's value is folded at match time (Envoy's ASCII case folding).
    fn prepared(self, ignore_case: bool) -> Self {
        if !ignore_case {
            return self;
        }
        match self {
            Text::Exact(e) => Text::Exact(e.to_ascii_lowercase()),
            Text::Prefix(p) => Text::Prefix(p.to_ascii_lowercase()),
            Text::Suffix(s) => Text::Suffix(s.to_ascii_lowercase()),
            Text::Contains(c) => Text::Contains(c.to_ascii_lowercase()),
            Text::Regex(r) => Text::Regex(r),
        }
    }

    /// Whether a value matches (literals compiled with `ignore_case` are already lowercase).
    pub fn matches(&self, value: &str) -> bool {
        self.matches_exactly(value)
    }

    fn matches_folded(&self, value: &str, ignore_case: bool) -> bool {
        if ignore_case && !matches!(self, Text::Regex(_)) {
            return self.matches_exactly(&value.to_ascii_lowercase());
        }
        self.matches_exactly(value)
    }

    fn matches_exactly(&self, value: &str) -> bool {
        match self {
            Text::Exact(e) => value == e,
            Text::Prefix(p) => value.starts_with(p.as_str()),
            Text::Suffix(s) => value.ends_with(s.as_str()),
            Text::Contains(c) => value.contains(c.as_str()),
            Text::Regex(r) => r.is_match(value),
        }
    }
}

/// A regex that must match the whole input (Envoy's `safe_regex` semantics).
fn full_regex(pattern: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| format!("invalid regex {pattern:?}: {e}"))
}

/// Compiles a string matcher; the flag says whether values must be lowercased before matching.
pub fn compile_text(m: &StringMatcher) -> Result<(Text, bool), String> {
    let t = match &m.match_pattern {
        Some(string_matcher::MatchPattern::Exact(e)) => Text::Exact(e.clone()),
        Some(string_matcher::MatchPattern::Prefix(p)) => Text::Prefix(p.clone()),
        Some(string_matcher::MatchPattern::Suffix(s)) => Text::Suffix(s.clone()),
        Some(string_matcher::MatchPattern::Contains(c)) => Text::Contains(c.clone()),
        Some(string_matcher::MatchPattern::SafeRegex(r)) => Text::Regex(full_regex(&r.regex)?),
        Some(string_matcher::MatchPattern::Custom(c)) => {
            return Err(format!("custom string matcher {:?} is not supported", c.name));
        }
        None => return Err("string matcher without a pattern".into()),
    };
    Ok((t.prepared(m.ignore_case), m.ignore_case))
}

#[derive(Debug, Clone)]
enum HeaderCondition {
    Text(Text, bool),
    Range(i64, i64),
    Present(bool),
}

#[derive(Debug, Clone)]
struct HeaderRule {
    name: String,
    condition: HeaderCondition,
    invert: bool,
    missing_as_empty: bool,
}

impl HeaderRule {
    // The deprecated specifiers (`exact_match`, `prefix_match`…) are still valid xDS that Envoy
    // accepts, so they are honoured here too.
    #[allow(deprecated)]
    fn compile(h: &HeaderMatcher) -> Result<Self, String> {
        use header_matcher::HeaderMatchSpecifier as S;
        let condition = match &h.header_match_specifier {
            Some(S::ExactMatch(e)) => HeaderCondition::Text(Text::Exact(e.clone()), false),
            Some(S::PrefixMatch(p)) => HeaderCondition::Text(Text::Prefix(p.clone()), false),
            Some(S::SuffixMatch(s)) => HeaderCondition::Text(Text::Suffix(s.clone()), false),
            Some(S::ContainsMatch(c)) => HeaderCondition::Text(Text::Contains(c.clone()), false),
            Some(S::SafeRegexMatch(r)) => HeaderCondition::Text(Text::Regex(full_regex(&r.regex)?), false),
            Some(S::StringMatch(m)) => {
                let (t, ignore_case) = compile_text(m)?;
                HeaderCondition::Text(t, ignore_case)
            }
            Some(S::RangeMatch(r)) => HeaderCondition::Range(r.start, r.end),
            Some(S::PresentMatch(p)) => HeaderCondition::Present(*p),
            // No specifier: the header must be present (Envoy).
            None => HeaderCondition::Present(true),
        };
        Ok(HeaderRule {
            name: h.name.to_ascii_lowercase(),
            condition,
            invert: h.invert_match,
            missing_as_empty: h.treat_missing_header_as_empty,
        })
    }

    fn holds<H: Headers + ?Sized>(&self, headers: &H) -> bool {
        let found = headers.value(&self.name);
        let value = found.as_deref().or(self.missing_as_empty.then_some(""));
        let result = match (&self.condition, value) {
            (HeaderCondition::Present(want), v) => v.is_some() == *want,
            (_, None) => false,
            (HeaderCondition::Text(t, ignore_case), Some(v)) => t.matches_folded(v, *ignore_case),
            (HeaderCondition::Range(start, end), Some(v)) => {
                v.parse::<i64>().is_ok_and(|n| n >= *start && n < *end)
            }
        };
        result != self.invert
    }
}

#[derive(Debug, Clone)]
struct QueryRule {
    name: String,
    condition: Option<(Text, bool)>,
}

impl QueryRule {
    fn compile(q: &QueryParameterMatcher) -> Result<Self, String> {
        use query_parameter_matcher::QueryParameterMatchSpecifier as S;
        let condition = match &q.query_parameter_match_specifier {
            Some(S::StringMatch(m)) => Some(compile_text(m)?),
            Some(S::PresentMatch(true)) | None => None,
            Some(S::PresentMatch(false)) => {
                return Err(format!(
                    "query parameter {:?}: present_match false is not supported",
                    q.name
                ));
            }
        };
        Ok(QueryRule {
            name: q.name.clone(),
            condition,
        })
    }

    fn holds(&self, query: &[(&str, &str)]) -> bool {
        query.iter().find(|(n, _)| *n == self.name).is_some_and(|(_, v)| {
            self.condition
                .as_ref()
                .is_none_or(|(t, ic)| t.matches_folded(v, *ic))
        })
    }
}

#[derive(Debug, Clone)]
enum PathRule {
    Prefix(String),
    Exact(String),
    Regex(Regex),
    SeparatedPrefix(String),
}

/// One compiled route: its conditions and the route as received (for its action).
#[derive(Debug, Clone)]
pub struct CompiledRoute {
    path: PathRule,
    case_sensitive: bool,
    headers: Vec<HeaderRule>,
    query: Vec<QueryRule>,
    /// What the route does.
    pub action: Action,
    /// Per-route filter settings (CORS, fault).
    pub filters: FilterSettings,
    /// Request header operations of the route.
    pub request_headers: HeaderOps,
    /// Response header operations of the route.
    pub response_headers: HeaderOps,
    /// The route's name.
    pub name: String,
}

impl CompiledRoute {
    fn compile(r: &Route) -> Result<Self, String> {
        let m: &RouteMatch = r.r#match.as_ref().ok_or("route without a match")?;
        let unsupported = [
            (m.runtime_fraction.is_some(), "runtime_fraction"),
            (!m.cookies.is_empty(), "cookies"),
            (m.grpc.is_some(), "grpc"),
            (m.tls_context.is_some(), "tls_context"),
            (!m.dynamic_metadata.is_empty(), "dynamic_metadata"),
            (!m.filter_state.is_empty(), "filter_state"),
        ];
        if let Some((_, field)) = unsupported.iter().find(|(set, _)| *set) {
            return Err(format!("match.{field} is not supported"));
        }
        if !r.stat_prefix.is_empty() {
            return Err("route stat_prefix (per-route statistics) is not supported".into());
        }
        if !r.route_specifiers.is_empty() {
            return Err("route route_specifiers are not supported".into());
        }
        let action = compile_action(r)?;
        let case_sensitive = m.case_sensitive.as_ref().is_none_or(|b| b.value);
        let fold = |s: &str| {
            if case_sensitive {
                s.to_string()
            } else {
                s.to_ascii_lowercase()
            }
        };
        use route_match::PathSpecifier as P;
        let path = match &m.path_specifier {
            Some(P::Prefix(p)) => PathRule::Prefix(fold(p)),
            Some(P::Path(p)) => PathRule::Exact(fold(p)),
            Some(P::SafeRegex(r)) => PathRule::Regex(full_regex(&r.regex)?),
            Some(P::PathSeparatedPrefix(p)) => {
                if p.contains(['?', '#']) || p.ends_with('/') {
                    return Err(format!(
                        "path_separated_prefix {p:?} must not end in / or contain ? or #"
                    ));
                }
                PathRule::SeparatedPrefix(fold(p))
            }
            Some(P::ConnectMatcher(_)) => {
                return Err("match.connect_matcher (CONNECT matching) is not supported".into());
            }
            Some(P::PathMatchPolicy(p)) => {
                return Err(format!("path_match_policy {:?} is not supported", p.name));
            }
            None => return Err("match without a path specifier".into()),
        };
        Ok(CompiledRoute {
            path,
            case_sensitive,
            headers: m
                .headers
                .iter()
                .map(HeaderRule::compile)
                .collect::<Result<_, _>>()?,
            query: m
                .query_parameters
                .iter()
                .map(QueryRule::compile)
                .collect::<Result<_, _>>()?,
            action,
            filters: compile_filter_settings(&r.typed_per_filter_config)?,
            request_headers: HeaderOps::compile(&r.request_headers_to_add, &r.request_headers_to_remove)?,
            response_headers: HeaderOps::compile(&r.response_headers_to_add, &r.response_headers_to_remove)?,
            name: r.name.clone(),
        })
    }

    /// The literal prefix a prefix or path-separated-prefix route matched (for
    /// `prefix_rewrite`).
    pub fn matched_prefix(&self) -> Option<&str> {
        match &self.path {
            PathRule::Prefix(p) | PathRule::SeparatedPrefix(p) => Some(p),
            PathRule::Exact(p) => Some(p),
            PathRule::Regex(_) => None,
        }
    }

    /// Whether the request matches (path without its query string).
    pub fn matches<H: Headers + ?Sized>(&self, path: &str, headers: &H, query: &[(&str, &str)]) -> bool {
        let folded;
        let p = if self.case_sensitive {
            path
        } else {
            folded = path.to_ascii_lowercase();
            &folded
        };
        let path_ok = match &self.path {
            PathRule::Prefix(prefix) => p.starts_with(prefix.as_str()),
            PathRule::Exact(exact) => p == exact,
            // Envoy matches regexes against the path as sent.
            PathRule::Regex(r) => r.is_match(path),
            PathRule::SeparatedPrefix(prefix) => {
                p == prefix
                    || p.strip_prefix(prefix.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            }
        };
        path_ok && self.headers.iter().all(|h| h.holds(headers)) && self.query.iter().all(|q| q.holds(query))
    }
}

/// A compiled virtual host.
#[derive(Debug, Clone)]
pub struct CompiledVirtualHost {
    /// Its name.
    pub name: String,
    routes: Vec<CompiledRoute>,
    /// Per-virtual-host filter settings.
    pub filters: FilterSettings,
    /// Request header operations of the virtual host.
    pub request_headers: HeaderOps,
    /// Response header operations of the virtual host.
    pub response_headers: HeaderOps,
    /// Requests must arrive over TLS (others are redirected to https).
    pub require_tls: bool,
    /// Add `x-envoy-attempt-count` to upstream requests.
    pub include_attempt_count: bool,
    /// Add `x-envoy-attempt-count` to responses of requests tried upstream (Envoy's
    /// `include_attempt_count_in_response`).
    pub attempt_count_in_response: bool,
    /// Add `x-envoy-is-timeout-retry` (`true` after a per-try timeout, else `false`) to retried
    /// requests (Envoy's `include_is_timeout_retry_header`).
    pub timeout_retry_header: bool,
    /// The virtual host's retry policy (used by routes without their own).
    pub retry: Option<crate::retry::RetryPolicy>,
}

impl CompiledVirtualHost {
    /// The first route matching the request.
    pub fn route<H: Headers + ?Sized>(
        &self,
        path: &str,
        headers: &H,
        query: &[(&str, &str)],
    ) -> Option<&CompiledRoute> {
        self.routes.iter().find(|r| r.matches(path, headers, query))
    }
}

/// A RouteConfiguration compiled for matching.
#[derive(Debug, Clone, Default)]
pub struct CompiledRoutes {
    /// Its name.
    pub name: String,
    vhosts: Vec<CompiledVirtualHost>,
    /// Exact domains (lowercase) → virtual host index.
    exact: std::collections::HashMap<String, usize>,
    /// Suffix wildcards (`*.example.com` stored as `.example.com`), longest first.
    suffixes: Vec<(String, usize)>,
    /// Prefix wildcards (`example.*` stored as `example.`), longest first.
    prefixes: Vec<(String, usize)>,
    any: Option<usize>,
    /// Request header operations of the configuration.
    pub request_headers: HeaderOps,
    /// Response header operations of the configuration.
    pub response_headers: HeaderOps,
    /// Virtual hosts are chosen by the authority without its port
    /// (`ignore_port_in_host_matching`).
    pub ignore_port_in_host_matching: bool,
}

/// Envoy's default for `max_direct_response_body_size_bytes`.
const MAX_DIRECT_RESPONSE_BODY: u32 = 4096;

impl CompiledRoutes {
    /// Compiles a route configuration; the error names the virtual host, the route and the problem.
    #[allow(deprecated)] // per_request_buffer_limit_bytes, still honoured
    pub fn compile(config: &RouteConfiguration) -> Result<Self, RouteError> {
        let config_err = |problem: String| RouteError {
            config: config.name.clone(),
            vhost: "-".into(),
            route: "-".into(),
            problem,
        };
        let mut out = CompiledRoutes {
            name: config.name.clone(),
            request_headers: HeaderOps::compile(
                &config.request_headers_to_add,
                &config.request_headers_to_remove,
            )
            .map_err(config_err)?,
            response_headers: HeaderOps::compile(
                &config.response_headers_to_add,
                &config.response_headers_to_remove,
            )
            .map_err(config_err)?,
            ignore_port_in_host_matching: config.ignore_port_in_host_matching,
            ..Default::default()
        };
        let unsupported = [
            (
                !config.typed_per_filter_config.is_empty(),
                "typed_per_filter_config",
            ),
            (config.vhds.is_some(), "vhds"),
            (
                !config.cluster_specifier_plugins.is_empty(),
                "cluster_specifier_plugins",
            ),
            (!config.internal_only_headers.is_empty(), "internal_only_headers"),
            // Weir does not check that the clusters routed to exist (Envoy's RDS default).
            (
                config.validate_clusters.is_some_and(|b| b.value),
                "validate_clusters true",
            ),
            (
                config.most_specific_header_mutations_wins,
                "most_specific_header_mutations_wins",
            ),
            (
                !config.request_mirror_policies.is_empty(),
                "request_mirror_policies",
            ),
            (
                config.ignore_path_parameters_in_path_matching,
                "ignore_path_parameters_in_path_matching",
            ),
            (!config.vhost_header.is_empty(), "vhost_header"),
            (!config.route_specifiers.is_empty(), "route_specifiers"),
        ];
        if let Some((_, field)) = unsupported.iter().find(|(set, _)| *set) {
            return Err(config_err(format!("{field} is not supported")));
        }
        let max_direct_body = config
            .max_direct_response_body_size_bytes
            .as_ref()
            .map_or(MAX_DIRECT_RESPONSE_BODY, |m| m.value);
        for (i, vh) in config.virtual_hosts.iter().enumerate() {
            let routes = vh
                .routes
                .iter()
                .enumerate()
                .map(|(j, r)| {
                    CompiledRoute::compile(r).map_err(|problem| RouteError {
                        config: config.name.clone(),
                        vhost: vh.name.clone(),
                        route: if r.name.is_empty() {
                            format!("#{j}")
                        } else {
                            format!("#{j} {:?}", r.name)
                        },
                        problem,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let vhost_buffer_limit = crate::action::request_buffer_limit(
                vh.request_body_buffer_limit.as_ref(),
                vh.per_request_buffer_limit_bytes.as_ref(),
            );
            let mut routes = routes;
            for r in &mut routes {
                if let Action::Forward(f) = &mut r.action {
                    f.buffer_limit = f.buffer_limit.or(vhost_buffer_limit);
                }
            }
            for (j, r) in routes.iter().enumerate() {
                if let Action::Direct(_, body) = &r.action
                    && u32::try_from(body.len()).map_or(true, |n| n > max_direct_body)
                {
                    // Envoy's words; the limit is `max_direct_response_body_size_bytes`.
                    return Err(RouteError {
                        config: config.name.clone(),
                        vhost: vh.name.clone(),
                        route: format!("#{j}"),
                        problem: format!(
                            "response body size is {} bytes; maximum is {max_direct_body} (max_direct_response_body_size_bytes)",
                            body.len()
                        ),
                    });
                }
            }
            for domain in &vh.domains {
                let d = domain.to_ascii_lowercase();
                let err = |problem: String| RouteError {
                    config: config.name.clone(),
                    vhost: vh.name.clone(),
                    route: "-".into(),
                    problem,
                };
                // Envoy's rules: `*` alone, a leading `*` (suffix wildcard, the rest literal),
                // a trailing `*` (prefix wildcard); any other `*` is a literal character.
                let taken = if d == "*" {
                    out.any.replace(i).is_some()
                } else if let Some(suffix) = d.strip_prefix('*') {
                    let dup = out.suffixes.iter().any(|(s, _)| s == suffix);
                    out.suffixes.push((suffix.to_string(), i));
                    dup
                } else if let Some(prefix) = d.strip_suffix('*') {
                    let dup = out.prefixes.iter().any(|(p, _)| p == prefix);
                    out.prefixes.push((prefix.to_string(), i));
                    dup
                } else {
                    out.exact.insert(d, i).is_some()
                };
                if taken {
                    // Envoy rejects a configuration with a domain in two virtual hosts.
                    return Err(err(format!(
                        "domain {domain:?} is also in an earlier virtual host"
                    )));
                }
            }
            let vhost_err = |problem: String| RouteError {
                config: config.name.clone(),
                vhost: vh.name.clone(),
                route: "-".into(),
                problem,
            };
            out.vhosts.push(compile_vhost(vh, routes).map_err(vhost_err)?);
        }
        out.suffixes.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
        out.prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        Ok(out)
    }

    fn lookup(&self, authority: &str) -> Option<usize> {
        if let Some(i) = self.exact.get(authority) {
            return Some(*i);
        }
        if let Some((_, i)) = self
            .suffixes
            .iter()
            .find(|(s, _)| authority.len() > s.len() && authority.ends_with(s.as_str()))
        {
            return Some(*i);
        }
        self.prefixes
            .iter()
            .find(|(p, _)| authority.len() > p.len() && authority.starts_with(p.as_str()))
            .map(|(_, i)| *i)
    }

    /// The virtual host for a request's authority (`host` or `host:port`, as sent).
    pub fn virtual_host(&self, authority: &str) -> Option<&CompiledVirtualHost> {
        // Lowercased (a copy) only when it has an uppercase letter; most are sent lowercase.
        let found = if authority.bytes().any(|b| b.is_ascii_uppercase()) {
            self.lookup(&authority.to_ascii_lowercase())
        } else {
            self.lookup(authority)
        };
        found.or(self.any).and_then(|i| self.vhosts.get(i))
    }
}

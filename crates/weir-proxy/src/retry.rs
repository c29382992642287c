//! Retry policies as Envoy's router applies them: which outcomes are retried (`retry_on`),
//! how many times, the per-try timeout, the jittered back-off, and whether to avoid hosts
//! already tried. Request headers (`x-envoy-retry-on`, `x-envoy-max-retries`) override.

use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3::RetryPolicy as PbRetryPolicy;
use http::HeaderMap;

use crate::convert::opt_duration;
use crate::names;

/// Retry conditions (`retry_on`), as a bit set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryOn(u32);

impl RetryOn {
    /// Any 5xx, a reset, a connect failure or a refused stream.
    pub const FIVE_XX: RetryOn = RetryOn(1);
    /// 502, 503, 504 (and connect failures / resets, as `gateway-error` implies).
    pub const GATEWAY_ERROR: RetryOn = RetryOn(1 << 1);
    /// The connection could not be made.
    pub const CONNECT_FAILURE: RetryOn = RetryOn(1 << 2);
    /// The upstream reset the stream before responding.
    pub const RESET: RetryOn = RetryOn(1 << 3);
    /// HTTP/2 REFUSED_STREAM.
    pub const REFUSED_STREAM: RetryOn = RetryOn(1 << 4);
    /// The statuses in `retriable_status_codes`.
    pub const RETRIABLE_STATUS_CODES: RetryOn = RetryOn(1 << 5);
    /// 409.
    pub const RETRIABLE_4XX: RetryOn = RetryOn(1 << 6);
    /// gRPC CANCELLED.
    pub const GRPC_CANCELLED: RetryOn = RetryOn(1 << 7);
    /// gRPC DEADLINE_EXCEEDED.
    pub const GRPC_DEADLINE_EXCEEDED: RetryOn = RetryOn(1 << 8);
    /// gRPC INTERNAL.
    pub const GRPC_INTERNAL: RetryOn = RetryOn(1 << 9);
    /// gRPC RESOURCE_EXHAUSTED.
    pub const GRPC_RESOURCE_EXHAUSTED: RetryOn = RetryOn(1 << 10);
    /// gRPC UNAVAILABLE.
    pub const GRPC_UNAVAILABLE: RetryOn = RetryOn(1 << 11);
    /// Envoy's `envoy-ratelimited` (429 with the rate-limited header).
    pub const ENVOY_RATELIMITED: RetryOn = RetryOn(1 << 12);
    /// Header-driven (`retriable-headers`).
    pub const RETRIABLE_HEADERS: RetryOn = RetryOn(1 << 13);
    /// A reset before any byte of the response (`reset-before-request`).
    pub const RESET_BEFORE_REQUEST: RetryOn = RetryOn(1 << 14);
    /// A 5xx from a connect failure etc. and `http3-post-connect-failure`: accepted, never fires here.
    pub const HTTP3_POST_CONNECT_FAILURE: RetryOn = RetryOn(1 << 15);

    /// Parses Envoy's comma-separated list; unknown names are an error.
    pub fn parse(s: &str) -> Result<RetryOn, String> {
        let mut on = RetryOn::default();
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            on.0 |= match name {
                "5xx" => Self::FIVE_XX.0,
                "gateway-error" => Self::GATEWAY_ERROR.0,
                "connect-failure" => Self::CONNECT_FAILURE.0,
                "reset" => Self::RESET.0,
                "reset-before-request" => Self::RESET_BEFORE_REQUEST.0,
                "refused-stream" => Self::REFUSED_STREAM.0,
                "retriable-status-codes" => Self::RETRIABLE_STATUS_CODES.0,
                "retriable-4xx" => Self::RETRIABLE_4XX.0,
                "retriable-headers" => Self::RETRIABLE_HEADERS.0,
                "envoy-ratelimited" => Self::ENVOY_RATELIMITED.0,
                "http3-post-connect-failure" => Self::HTTP3_POST_CONNECT_FAILURE.0,
                "cancelled" => Self::GRPC_CANCELLED.0,
                "deadline-exceeded" => Self::GRPC_DEADLINE_EXCEEDED.0,
                "internal" => Self::GRPC_INTERNAL.0,
                "resource-exhausted" => Self::GRPC_RESOURCE_EXHAUSTED.0,
                "unavailable" => Self::GRPC_UNAVAILABLE.0,
                other => return Err(format!("retry_on {other:?} is not a retry condition")),
            };
        }
        Ok(on)
    }

    /// Whether any condition of `other` is set.
    pub fn has(self, other: RetryOn) -> bool {
        self.0 & other.0 != 0
    }

    /// Both sets.
    pub fn union(self, other: RetryOn) -> RetryOn {
        RetryOn(self.0 | other.0)
    }
}

/// How an attempt ended, as far as retrying is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response with this status and, for gRPC, this `grpc-status` in its headers.
    Response(u16, Option<u32>),
    /// The connection could not be made.
    ConnectFailure,
    /// The stream was reset (or the connection closed) before a response.
    Reset,
    /// HTTP/2 REFUSED_STREAM.
    RefusedStream,
    /// The per-try timeout fired.
    PerTryTimeout,
}

/// A compiled retry policy.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Conditions.
    pub on: RetryOn,
    /// Maximum retries (Envoy's default 1).
    pub num_retries: u32,
    /// Timeout of each try.
    pub per_try_timeout: Option<Duration>,
    /// Statuses retried under `retriable-status-codes`.
    /// Shared, so that a request's copy of its route's policy costs no allocation.
    pub retriable_status_codes: std::sync::Arc<[u16]>,
    /// Avoid hosts tried before (`envoy.retry_host_predicates.previous_hosts`).
    pub avoid_previous_hosts: bool,
    /// Host picks per retry when avoiding previous hosts.
    pub host_selection_max_attempts: u32,
    /// Back-off base interval (Envoy's default 25 ms).
    pub base_interval: Duration,
    /// Back-off cap (default 10 × base).
    pub max_interval: Duration,
    /// `envoy.retry_priorities.previous_priorities`: after this many attempts, the priorities
    /// already tried are left out when picking (Istio's `retryRemoteLocalities`).
    pub previous_priorities: Option<u32>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            on: RetryOn::default(),
            num_retries: 1,
            per_try_timeout: None,
            retriable_status_codes: Vec::new().into(),
            avoid_previous_hosts: false,
            host_selection_max_attempts: 1,
            base_interval: Duration::from_millis(25),
            max_interval: Duration::from_millis(250),
            previous_priorities: None,
        }
    }
}

fn previous_priorities(
    p: &envoy_types::pb::envoy::config::route::v3::retry_policy::RetryPriority,
) -> Result<u32, String> {
    use envoy_types::pb::envoy::config::route::v3::retry_policy::retry_priority::ConfigType;
    use envoy_types::pb::envoy::extensions::retry::priority::previous_priorities::v3::PreviousPrioritiesConfig;
    const TYPE: &str = "envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig";
    if p.name != "envoy.retry_priorities.previous_priorities" {
        return Err(format!("retry priority {:?} is not supported", p.name));
    }
    let config: PreviousPrioritiesConfig = match &p.config_type {
        Some(ConfigType::TypedConfig(any)) => crate::convert::decode_any(any, TYPE, "retry_priority")?,
        None => PreviousPrioritiesConfig::default(),
    };
    if config.update_frequency <= 0 {
        return Err("retry_priority previous_priorities: update_frequency must be above zero".into());
    }
    u32::try_from(config.update_frequency)
        .map_err(|_| "retry_priority update_frequency is out of range".into())
}

impl RetryPolicy {
    /// Compiles a route's retry policy.
    pub fn compile(p: &PbRetryPolicy) -> Result<Self, String> {
        let unsupported = [
            (!p.retry_options_predicates.is_empty(), "retry_options_predicates"),
            (
                p.rate_limited_retry_back_off.is_some(),
                "rate_limited_retry_back_off",
            ),
            (!p.retriable_headers.is_empty(), "retriable_headers"),
            (
                !p.retriable_request_headers.is_empty(),
                "retriable_request_headers",
            ),
            (p.per_try_idle_timeout.is_some(), "per_try_idle_timeout"),
        ];
        if let Some((_, field)) = unsupported.iter().find(|(set, _)| *set) {
            return Err(format!("retry_policy.{field} is not supported"));
        }
        let mut avoid_previous_hosts = false;
        for predicate in &p.retry_host_predicate {
            if predicate.name == "envoy.retry_host_predicates.previous_hosts" {
                avoid_previous_hosts = true;
            } else {
                return Err(format!(
                    "retry host predicate {:?} is not supported",
                    predicate.name
                ));
            }
        }
        let previous_priorities = p.retry_priority.as_ref().map(previous_priorities).transpose()?;
        let base_interval = p
            .retry_back_off
            .as_ref()
            .map(|b| opt_duration(b.base_interval.as_ref(), "retry_back_off.base_interval"))
            .transpose()?
            .flatten()
            .unwrap_or(Duration::from_millis(25));
        if base_interval.is_zero() {
            return Err("retry_back_off.base_interval must be greater than zero".into());
        }
        let max_interval = p
            .retry_back_off
            .as_ref()
            .map(|b| opt_duration(b.max_interval.as_ref(), "retry_back_off.max_interval"))
            .transpose()?
            .flatten()
            .unwrap_or(base_interval * 10);
        if max_interval < base_interval {
            return Err("retry_back_off.max_interval is below base_interval".into());
        }
        Ok(RetryPolicy {
            on: RetryOn::parse(&p.retry_on)?,
            num_retries: p.num_retries.as_ref().map_or(1, |n| n.value),
            per_try_timeout: opt_duration(p.per_try_timeout.as_ref(), "per_try_timeout")?
                .filter(|d| !d.is_zero()),
            retriable_status_codes: p
                .retriable_status_codes
                .iter()
                .map(|c| u16::try_from(*c).map_err(|_| format!("retriable status code {c} is out of range")))
                .collect::<Result<_, _>>()?,
            avoid_previous_hosts,
            previous_priorities,
            host_selection_max_attempts: u32::try_from(p.host_selection_retry_max_attempts.max(1))
                .unwrap_or(u32::MAX),
            base_interval,
            max_interval,
        })
    }

    /// The policy for one request: the route's, with `x-envoy-retry-on`,
    /// `x-envoy-retry-grpc-on`, `x-envoy-max-retries` and
    /// `x-envoy-upstream-rq-per-try-timeout-ms` applied (Envoy honours them on requests it
    /// treats as internal, which every sidecar request is).
    /// `envoy_headers`: whether the request carries any `x-envoy-*` header (most carry none,
    /// and the overrides are not looked up then; see `HeaderFacts`).
    pub fn for_request(
        route: Option<&RetryPolicy>,
        headers: &HeaderMap,
        envoy_headers: bool,
    ) -> Option<RetryPolicy> {
        if !envoy_headers {
            return route
                .filter(|p| p.on != RetryOn::default() && p.num_retries > 0)
                .cloned();
        }
        let text = |name: http::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        let header_on = [text(names::X_ENVOY_RETRY_ON), text(names::X_ENVOY_RETRY_GRPC_ON)]
            .into_iter()
            .flatten()
            // Envoy ignores unknown names in the header rather than failing the request.
            .map(|s| {
                s.split(',')
                    .filter_map(|n| RetryOn::parse(n).ok())
                    .fold(RetryOn::default(), RetryOn::union)
            })
            .fold(RetryOn::default(), RetryOn::union);
        let max = text(names::X_ENVOY_MAX_RETRIES).and_then(|v| v.trim().parse::<u32>().ok());
        let per_try =
            text(names::X_ENVOY_UPSTREAM_RQ_PER_TRY_TIMEOUT_MS).and_then(|v| v.trim().parse::<u64>().ok());
        if route.is_none() && header_on == RetryOn::default() {
            return None;
        }
        let mut policy = route.cloned().unwrap_or_default();
        policy.on = policy.on.union(header_on);
        if let Some(max) = max {
            policy.num_retries = max;
        }
        if let Some(ms) = per_try {
            policy.per_try_timeout = (ms > 0).then(|| Duration::from_millis(ms));
        }
        (policy.on != RetryOn::default() && policy.num_retries > 0).then_some(policy)
    }

    /// Whether an outcome is retried under this policy.
    pub fn retries(&self, outcome: Outcome) -> bool {
        let on = self.on;
        match outcome {
            Outcome::ConnectFailure => {
                on.has(RetryOn::CONNECT_FAILURE) || on.has(RetryOn::FIVE_XX) || on.has(RetryOn::GATEWAY_ERROR)
            }
            Outcome::Reset => {
                on.has(RetryOn::RESET) || on.has(RetryOn::FIVE_XX) || on.has(RetryOn::GATEWAY_ERROR)
            }
            Outcome::RefusedStream => on.has(RetryOn::REFUSED_STREAM) || on.has(RetryOn::FIVE_XX),
            // A per-try timeout counts as a 504 (Envoy retries it under 5xx and gateway-error).
            Outcome::PerTryTimeout => on.has(RetryOn::FIVE_XX) || on.has(RetryOn::GATEWAY_ERROR),
            Outcome::Response(status, grpc) => {
                (on.has(RetryOn::FIVE_XX) && status >= 500)
                    || (on.has(RetryOn::GATEWAY_ERROR) && matches!(status, 502..=504))
                    || (on.has(RetryOn::RETRIABLE_4XX) && status == 409)
                    || (on.has(RetryOn::RETRIABLE_STATUS_CODES)
                        && self.retriable_status_codes.contains(&status))
                    || grpc.is_some_and(|g| self.retries_grpc(g))
            }
        }
    }

    fn retries_grpc(&self, code: u32) -> bool {
        let on = self.on;
        match code {
            1 => on.has(RetryOn::GRPC_CANCELLED),
            4 => on.has(RetryOn::GRPC_DEADLINE_EXCEEDED),
            8 => on.has(RetryOn::GRPC_RESOURCE_EXHAUSTED),
            13 => on.has(RetryOn::GRPC_INTERNAL),
            14 => on.has(RetryOn::GRPC_UNAVAILABLE),
            _ => false,
        }
    }

    /// The wait before retry number `attempt` (1-based): Envoy's fully jittered exponential
    /// back-off, `random` in `[0, 1)`.
    pub fn backoff(&self, attempt: u32, random: f64) -> Duration {
        let ceiling = self
            .base_interval
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.max_interval);
        ceiling.mul_f64(random.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header_facts::HeaderFacts;

    #[test]
    fn conditions_follow_envoy() {
        let p = RetryPolicy {
            on: RetryOn::parse("gateway-error,connect-failure,refused-stream").unwrap(),
            ..Default::default()
        };
        assert!(p.retries(Outcome::Response(503, None)));
        assert!(!p.retries(Outcome::Response(500, None)));
        assert!(p.retries(Outcome::ConnectFailure));
        let p = RetryPolicy {
            on: RetryOn::parse("retriable-status-codes,unavailable").unwrap(),
            retriable_status_codes: vec![418].into(),
            ..Default::default()
        };
        assert!(p.retries(Outcome::Response(418, None)));
        assert!(p.retries(Outcome::Response(200, Some(14))));
        assert!(!p.retries(Outcome::Response(200, Some(13))));
        assert!(!p.retries(Outcome::Reset));
        assert!(RetryOn::parse("5xx,bogus").is_err());
    }

    #[test]
    fn headers_override_the_route() {
        let mut h = HeaderMap::new();
        assert_eq!(
            RetryPolicy::for_request(None, &h, HeaderFacts::of(&h).envoy),
            None
        );
        h.insert("x-envoy-retry-on", "5xx".parse().unwrap());
        h.insert("x-envoy-max-retries", "3".parse().unwrap());
        let p = RetryPolicy::for_request(None, &h, HeaderFacts::of(&h).envoy).unwrap();
        assert_eq!(p.num_retries, 3);
        assert!(p.retries(Outcome::Response(500, None)));
    }

    #[test]
    fn backoff_is_bounded_and_grows() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.backoff(1, 0.999_999),
            Duration::from_millis(25).mul_f64(0.999_999)
        );
        assert!(p.backoff(10, 0.999_999) <= Duration::from_millis(250));
        assert_eq!(p.backoff(3, 0.0), Duration::ZERO);
    }
}

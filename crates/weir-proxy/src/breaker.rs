//! Circuit breakers of a cluster, as Envoy keeps them: limits on upstream connections, requests
//! waiting for a connection, requests in flight and retries in flight (or a retry budget), each
//! taken with a guard that gives the slot back when dropped. What overflows is refused at once
//! (Envoy answers 503 with `x-envoy-overloaded: true`) and counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use envoy_types::pb::envoy::config::cluster::v3::{CircuitBreakers, circuit_breakers};

/// Envoy's defaults when a cluster sets no thresholds.
const DEFAULT_MAX_CONNECTIONS: u32 = 1024;
const DEFAULT_MAX_PENDING: u32 = 1024;
const DEFAULT_MAX_REQUESTS: u32 = 1024;
const DEFAULT_MAX_RETRIES: u32 = 3;
/// Envoy's retry-budget defaults.
const DEFAULT_BUDGET_PERCENT: f64 = 20.0;
const DEFAULT_MIN_RETRY_CONCURRENCY: u32 = 3;

/// A retry budget: retries in flight may be this share of the requests in flight.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryBudget {
    /// Percent of active and pending requests.
    pub percent: f64,
    /// Retries always allowed regardless of the budget.
    pub min_concurrency: u32,
}

/// The limits of the DEFAULT routing priority (routes of other priorities are refused).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// `max_connections`.
    pub max_connections: u32,
    /// `max_pending_requests`.
    pub max_pending_requests: u32,
    /// `max_requests`.
    pub max_requests: u32,
    /// `max_retries` (unused when a budget is set).
    pub max_retries: u32,
    /// `retry_budget`.
    pub retry_budget: Option<RetryBudget>,
    /// Publish what is left under each limit (`track_remaining`: the
    /// `circuit_breakers.default.remaining_*` gauges).
    pub track_remaining: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_pending_requests: DEFAULT_MAX_PENDING,
            max_requests: DEFAULT_MAX_REQUESTS,
            max_retries: DEFAULT_MAX_RETRIES,
            retry_budget: None,
            track_remaining: false,
        }
    }
}

impl Limits {
    /// Compiles a cluster's `circuit_breakers`: the DEFAULT priority's thresholds, Envoy's
    /// defaults for what is not set. HIGH-priority thresholds are accepted (no route of this
    /// proxy runs at HIGH priority; routes asking for it are refused).
    pub fn compile(cb: Option<&CircuitBreakers>) -> Result<Self, String> {
        let mut limits = Limits::default();
        let Some(cb) = cb else { return Ok(limits) };
        if !cb.per_host_thresholds.is_empty() {
            return Err("circuit_breakers.per_host_thresholds is not supported".into());
        }
        let default = cb.thresholds.iter().find(|t| {
            t.priority == envoy_types::pb::envoy::config::core::v3::RoutingPriority::Default as i32
        });
        let Some(t) = default else { return Ok(limits) };
        if t.max_connection_pools.is_some() {
            return Err("circuit_breakers.max_connection_pools is not supported".into());
        }
        let value =
            |v: Option<&envoy_types::pb::google::protobuf::UInt32Value>, d: u32| v.map_or(d, |v| v.value);
        limits.max_connections = value(t.max_connections.as_ref(), DEFAULT_MAX_CONNECTIONS);
        limits.max_pending_requests = value(t.max_pending_requests.as_ref(), DEFAULT_MAX_PENDING);
        limits.max_requests = value(t.max_requests.as_ref(), DEFAULT_MAX_REQUESTS);
        limits.max_retries = value(t.max_retries.as_ref(), DEFAULT_MAX_RETRIES);
        limits.track_remaining = t.track_remaining;
        limits.retry_budget = t
            .retry_budget
            .as_ref()
            .map(|b: &circuit_breakers::thresholds::RetryBudget| RetryBudget {
                percent: b
                    .budget_percent
                    .as_ref()
                    .map_or(DEFAULT_BUDGET_PERCENT, |p| p.value),
                min_concurrency: value(b.min_retry_concurrency.as_ref(), DEFAULT_MIN_RETRY_CONCURRENCY),
            });
        if let Some(b) = &limits.retry_budget
            && !(0.0..=100.0).contains(&b.percent)
        {
            return Err(format!(
                "circuit_breakers retry_budget.budget_percent {} is outside 0–100",
                b.percent
            ));
        }
        Ok(limits)
    }
}

/// Counters of the breakers (Envoy's names without `cluster.<name>.`).
#[derive(Debug, Default)]
pub struct BreakerStats {
    /// `upstream_cx_overflow`: a connection was wanted beyond `max_connections`.
    pub upstream_cx_overflow: AtomicU64,
    /// `upstream_rq_pending_overflow`: refused beyond `max_pending_requests` or `max_requests`.
    pub upstream_rq_pending_overflow: AtomicU64,
    /// `upstream_rq_retry_overflow`: a retry not made because of `max_retries` or the budget.
    pub upstream_rq_retry_overflow: AtomicU64,
}

/// A resource that was refused because its breaker is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Overflow {
    /// `max_connections`.
    #[error("the cluster's maximum connections are in use")]
    Connections,
    /// `max_pending_requests`.
    #[error("the cluster's maximum pending requests are waiting")]
    Pending,
    /// `max_requests`.
    #[error("the cluster's maximum requests are in flight")]
    Requests,
}

/// The breakers of one cluster: limits and what is in use.
#[derive(Debug, Default)]
pub struct Breakers {
    /// The limits.
    pub limits: Limits,
    connections: AtomicU32,
    pending: AtomicU32,
    requests: AtomicU32,
    retries: AtomicU32,
    /// Counters.
    pub stats: BreakerStats,
}

/// A slot held until dropped.
#[derive(Debug)]
#[must_use = "the slot is given back when the guard is dropped"]
pub struct Slot {
    breakers: Arc<Breakers>,
    kind: Kind,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Connection,
    Pending,
    Request,
    Retry,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.breakers.counter(self.kind).fetch_sub(1, Ordering::AcqRel);
    }
}

/// What is in use, for `/clusters` and `/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InUse {
    /// Upstream connections open.
    pub connections: u32,
    /// Requests waiting for a connection.
    pub pending: u32,
    /// Requests in flight.
    pub requests: u32,
    /// Retries in flight.
    pub retries: u32,
}

impl Breakers {
    /// Breakers with these limits.
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Breakers {
            limits,
            ..Breakers::default()
        })
    }

    fn counter(&self, kind: Kind) -> &AtomicU32 {
        match kind {
            Kind::Connection => &self.connections,
            Kind::Pending => &self.pending,
            Kind::Request => &self.requests,
            Kind::Retry => &self.retries,
        }
    }

    /// Takes a slot if fewer than `limit` are in use.
    fn take(self: &Arc<Self>, kind: Kind, limit: u32) -> Option<Slot> {
        let counter = self.counter(kind);
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot {
                breakers: self.clone(),
                kind,
            })
    }

    /// A new upstream connection (`max_connections`).
    pub fn connection(self: &Arc<Self>) -> Result<Slot, Overflow> {
        self.take(Kind::Connection, self.limits.max_connections)
            .ok_or_else(|| {
                self.stats.upstream_cx_overflow.fetch_add(1, Ordering::Relaxed);
                Overflow::Connections
            })
    }

    /// A request waiting for a connection (`max_pending_requests`).
    pub fn pending(self: &Arc<Self>) -> Result<Slot, Overflow> {
        self.take(Kind::Pending, self.limits.max_pending_requests)
            .ok_or_else(|| {
                self.stats
                    .upstream_rq_pending_overflow
                    .fetch_add(1, Ordering::Relaxed);
                Overflow::Pending
            })
    }

    /// A request in flight (`max_requests`).
    pub fn request(self: &Arc<Self>) -> Result<Slot, Overflow> {
        self.take(Kind::Request, self.limits.max_requests).ok_or_else(|| {
            self.stats
                .upstream_rq_pending_overflow
                .fetch_add(1, Ordering::Relaxed);
            Overflow::Requests
        })
    }

    /// A retry in flight: `max_retries`, or with a budget the larger of its share of the
    /// requests in flight and waiting and its minimum concurrency. `None` when the retry must
    /// not be made (counted as `upstream_rq_retry_overflow`).
    pub fn retry(self: &Arc<Self>) -> Option<Slot> {
        let slot = self.take(Kind::Retry, self.retry_limit());
        if slot.is_none() {
            self.stats
                .upstream_rq_retry_overflow
                .fetch_add(1, Ordering::Relaxed);
        }
        slot
    }

    /// How many retries may be in flight now: `max_retries`, or with a budget the larger of
    /// its share of the requests in flight and waiting and its minimum concurrency.
    pub fn retry_limit(&self) -> u32 {
        match self.limits.retry_budget {
            Some(b) => {
                let active = self.requests.load(Ordering::Acquire) + self.pending.load(Ordering::Acquire);
                let share = (f64::from(active) * b.percent / 100.0) as u32;
                share.max(b.min_concurrency)
            }
            None => self.limits.max_retries,
        }
    }

    /// What is in use now.
    pub fn in_use(&self) -> InUse {
        InUse {
            connections: self.connections.load(Ordering::Acquire),
            pending: self.pending.load(Ordering::Acquire),
            requests: self.requests.load(Ordering::Acquire),
            retries: self.retries.load(Ordering::Acquire),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::RoutingPriority;
    use envoy_types::pb::google::protobuf::UInt32Value;

    fn thresholds(priority: RoutingPriority, max: u32) -> circuit_breakers::Thresholds {
        circuit_breakers::Thresholds {
            priority: priority as i32,
            max_connections: Some(UInt32Value { value: max }),
            max_pending_requests: Some(UInt32Value { value: max }),
            ..Default::default()
        }
    }

    #[test]
    fn envoy_defaults_apply_to_what_is_not_set() {
        assert_eq!(Limits::compile(None).unwrap(), Limits::default());
        let cb = CircuitBreakers {
            thresholds: vec![
                thresholds(RoutingPriority::High, 1),
                thresholds(RoutingPriority::Default, 7),
            ],
            ..Default::default()
        };
        let l = Limits::compile(Some(&cb)).unwrap();
        assert_eq!((l.max_connections, l.max_pending_requests), (7, 7));
        assert_eq!((l.max_requests, l.max_retries), (1024, 3));
        let bad = CircuitBreakers {
            per_host_thresholds: vec![thresholds(RoutingPriority::Default, 1)],
            ..Default::default()
        };
        assert!(
            Limits::compile(Some(&bad))
                .unwrap_err()
                .contains("per_host_thresholds")
        );
    }

    #[test]
    fn slots_are_refused_at_the_limit_and_given_back_when_dropped() {
        let b = Breakers::new(Limits {
            max_pending_requests: 2,
            ..Limits::default()
        });
        let first = b.pending().unwrap();
        let _second = b.pending().unwrap();
        assert_eq!(b.pending().unwrap_err(), Overflow::Pending);
        assert_eq!(b.stats.upstream_rq_pending_overflow.load(Ordering::Relaxed), 1);
        drop(first);
        assert!(b.pending().is_ok());
        assert_eq!(b.in_use().pending, 1, "the temporary slot was given back");
    }

    #[test]
    fn a_retry_budget_follows_the_requests_in_flight() {
        let b = Breakers::new(Limits {
            retry_budget: Some(RetryBudget {
                percent: 25.0,
                min_concurrency: 1,
            }),
            ..Limits::default()
        });
        let _r = b.retry().unwrap();
        assert!(
            b.retry().is_none(),
            "minimum concurrency 1 with nothing in flight"
        );
        let requests: Vec<Slot> = (0..12).map(|_| b.request().unwrap()).collect();
        let more: Vec<Slot> = (0..2).filter_map(|_| b.retry()).collect();
        assert_eq!(more.len(), 2, "25% of 12 = 3 retries in flight");
        assert!(b.retry().is_none());
        assert_eq!(b.stats.upstream_rq_retry_overflow.load(Ordering::Relaxed), 2);
        drop(requests);
    }
}

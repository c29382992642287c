//! Outlier detection, as Envoy does it: every attempt's result is reported for its host;
//! consecutive 5xx, consecutive gateway errors (502/503/504) and, with
//! `split_external_local_origin_errors`, consecutive locally originated failures (connect
//! failure, timeout) eject the host as soon as the count is reached; success rate and failure
//! percentage are judged once per interval. An ejected host is unhealthy for load balancing
//! for `base_ejection_time × ejections` (capped by `max_ejection_time`); at each interval it
//! returns when its time is up, and a host that stays in decrements its ejection count.
//! Never more than `max_ejection_percent` of the hosts are ejected (but at least one may be).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3::OutlierDetection;

use crate::convert::opt_duration;

/// A compiled `outlier_detection`.
#[derive(Clone, Debug, PartialEq)]
pub struct OutlierConfig {
    /// Consecutive 5xx before ejection, and the enforcement percentage.
    pub consecutive_5xx: (u32, u32),
    /// Consecutive gateway errors before ejection, and the enforcement percentage.
    pub consecutive_gateway: (u32, u32),
    /// Consecutive local-origin failures (only with `split`), and the enforcement percentage.
    pub consecutive_local: (u32, u32),
    /// Local-origin failures are counted apart from the upstream's answers.
    pub split: bool,
    /// How often ejections are reviewed and rates judged.
    pub interval: Duration,
    /// Ejection time per ejection.
    pub base_ejection_time: Duration,
    /// Longest ejection.
    pub max_ejection_time: Duration,
    /// At most this share of hosts ejected (percent).
    pub max_ejection_percent: u32,
    /// Success-rate ejection.
    pub success_rate: RateRule,
    /// Failure-percentage ejection.
    pub failure_percentage: RateRule,
    /// With the split: enforcement of the same two rules on local-origin results.
    pub local_enforcing: (u32, u32),
    /// Random time added to each ejection, up to this.
    pub jitter: Duration,
}

/// A rule judged over an interval's requests.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateRule {
    /// Percentage of ejections enforced (0: off).
    pub enforcing: u32,
    /// Hosts with at least `request_volume` requests needed to judge.
    pub minimum_hosts: u32,
    /// Requests a host needs in the interval to be judged.
    pub request_volume: u32,
    /// Success rate: stdev factor / 1000; failure percentage: the threshold percent.
    pub threshold: f64,
}

/// The longest interval accepted (the interval drives a timer).
const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);

fn value(v: Option<&envoy_types::pb::google::protobuf::UInt32Value>, default: u32) -> u32 {
    v.map_or(default, |v| v.value)
}

impl OutlierConfig {
    /// Compiles with Envoy's defaults.
    pub fn compile(o: &OutlierDetection) -> Result<Self, String> {
        let unsupported = [
            (
                o.successful_active_health_check_uneject_host.is_some(),
                "successful_active_health_check_uneject_host",
            ),
            (!o.monitors.is_empty(), "monitors"),
            (
                o.always_eject_one_host.is_some_and(|v| v.value),
                "always_eject_one_host",
            ),
            (
                o.detect_degraded_hosts.is_some_and(|v| v.value),
                "detect_degraded_hosts",
            ),
        ];
        if let Some((_, field)) = unsupported.iter().find(|(set, _)| *set) {
            return Err(format!("outlier_detection.{field} is not supported"));
        }
        let percent = |v: Option<&envoy_types::pb::google::protobuf::UInt32Value>, d: u32, field: &str| {
            let p = value(v, d);
            if p > 100 {
                Err(format!("outlier_detection.{field} {p} is above 100"))
            } else {
                Ok(p)
            }
        };
        let interval = opt_duration(o.interval.as_ref(), "outlier_detection.interval")?
            .unwrap_or(Duration::from_secs(10));
        if interval.is_zero() || interval > MAX_INTERVAL {
            return Err("outlier_detection.interval must be above zero and at most a day".into());
        }
        let base_ejection_time = opt_duration(
            o.base_ejection_time.as_ref(),
            "outlier_detection.base_ejection_time",
        )?
        .unwrap_or(Duration::from_secs(30));
        let jitter = opt_duration(
            o.max_ejection_time_jitter.as_ref(),
            "outlier_detection.max_ejection_time_jitter",
        )?
        .unwrap_or_default();
        let max_ejection_time = opt_duration(
            o.max_ejection_time.as_ref(),
            "outlier_detection.max_ejection_time",
        )?
        .unwrap_or(Duration::from_secs(300))
        .max(base_ejection_time);
        Ok(OutlierConfig {
            consecutive_5xx: (
                value(o.consecutive_5xx.as_ref(), 5),
                percent(
                    o.enforcing_consecutive_5xx.as_ref(),
                    100,
                    "enforcing_consecutive_5xx",
                )?,
            ),
            consecutive_gateway: (
                value(o.consecutive_gateway_failure.as_ref(), 5),
                percent(
                    o.enforcing_consecutive_gateway_failure.as_ref(),
                    0,
                    "enforcing_consecutive_gateway_failure",
                )?,
            ),
            consecutive_local: (
                value(o.consecutive_local_origin_failure.as_ref(), 5),
                percent(
                    o.enforcing_consecutive_local_origin_failure.as_ref(),
                    100,
                    "enforcing_consecutive_local_origin_failure",
                )?,
            ),
            split: o.split_external_local_origin_errors,
            local_enforcing: (
                percent(
                    o.enforcing_local_origin_success_rate.as_ref(),
                    100,
                    "enforcing_local_origin_success_rate",
                )?,
                percent(
                    o.enforcing_failure_percentage_local_origin.as_ref(),
                    0,
                    "enforcing_failure_percentage_local_origin",
                )?,
            ),
            jitter,
            interval,
            base_ejection_time,
            max_ejection_time,
            max_ejection_percent: percent(o.max_ejection_percent.as_ref(), 10, "max_ejection_percent")?,
            success_rate: RateRule {
                enforcing: percent(o.enforcing_success_rate.as_ref(), 100, "enforcing_success_rate")?,
                minimum_hosts: value(o.success_rate_minimum_hosts.as_ref(), 5),
                request_volume: value(o.success_rate_request_volume.as_ref(), 100),
                threshold: f64::from(value(o.success_rate_stdev_factor.as_ref(), 1900)) / 1000.0,
            },
            failure_percentage: RateRule {
                enforcing: percent(
                    o.enforcing_failure_percentage.as_ref(),
                    0,
                    "enforcing_failure_percentage",
                )?,
                minimum_hosts: value(o.failure_percentage_minimum_hosts.as_ref(), 5),
                request_volume: value(o.failure_percentage_request_volume.as_ref(), 50),
                threshold: f64::from(percent(
                    o.failure_percentage_threshold.as_ref(),
                    85,
                    "failure_percentage_threshold",
                )?),
            },
        })
    }

    /// How long an ejection lasts after `ejections` ejections (before jitter).
    pub fn ejection_time(&self, ejections: u32) -> Duration {
        self.base_ejection_time
            .saturating_mul(ejections.max(1))
            .min(self.max_ejection_time)
    }

    fn jitter(&self) -> Duration {
        if self.jitter.is_zero() {
            Duration::ZERO
        } else {
            self.jitter.mul_f64(fastrand::f64())
        }
    }
}

/// What an attempt came to, as the outlier detector sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with this status (or the TCP connection was made).
    Status(u16),
    /// No connection could be made.
    ConnectFailed,
    /// The attempt timed out.
    Timeout,
    /// The connection was reset after it was made, before a response.
    Reset,
}

/// Why a host was ejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Consecutive 5xx.
    Consecutive5xx,
    /// Consecutive gateway errors.
    ConsecutiveGateway,
    /// Consecutive local-origin failures.
    ConsecutiveLocal,
    /// Success rate below the others'.
    SuccessRate,
    /// Failure percentage above the threshold.
    FailurePercentage,
}

/// The outlier state of one host.
#[derive(Debug, Default)]
pub struct HostOutlier {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    consecutive_local: AtomicU32,
    ejected: AtomicBool,
    /// Requests and successes in the current interval (external origin).
    interval_total: AtomicU64,
    interval_success: AtomicU64,
    /// Connection attempts and successes in the current interval (local origin, split only).
    local_total: AtomicU64,
    local_success: AtomicU64,
    bookkeeping: Mutex<Ejection>,
}

#[derive(Debug, Default)]
struct Ejection {
    since: Option<Instant>,
    length: Duration,
    ejections: u32,
}

impl HostOutlier {
    /// Whether the host is ejected now.
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Acquire)
    }

    /// Records an attempt; returns a reason when a consecutive-failure count was reached.
    pub fn record(&self, config: &OutlierConfig, outcome: Outcome) -> Option<Reason> {
        // Without the split, Envoy turns local failures into the status it would answer.
        let status = match (outcome, config.split) {
            (Outcome::Status(s), _) => {
                if config.split {
                    self.consecutive_local.store(0, Ordering::Relaxed);
                    self.local_total.fetch_add(1, Ordering::Relaxed);
                    self.local_success.fetch_add(1, Ordering::Relaxed);
                }
                s
            }
            (Outcome::ConnectFailed | Outcome::Timeout, true) => {
                self.local_total.fetch_add(1, Ordering::Relaxed);
                let n = self.consecutive_local.fetch_add(1, Ordering::AcqRel) + 1;
                if n == config.consecutive_local.0 {
                    self.consecutive_local.store(0, Ordering::Relaxed);
                    return Some(Reason::ConsecutiveLocal);
                }
                return None;
            }
            (Outcome::Timeout, false) => 504,
            (Outcome::ConnectFailed | Outcome::Reset, _) => 503,
        };
        self.interval_total.fetch_add(1, Ordering::Relaxed);
        if !(500..600).contains(&status) {
            self.interval_success.fetch_add(1, Ordering::Relaxed);
            self.consecutive_5xx.store(0, Ordering::Relaxed);
            self.consecutive_gateway.store(0, Ordering::Relaxed);
            return None;
        }
        let mut reason = None;
        if (502..=504).contains(&status) {
            let n = self.consecutive_gateway.fetch_add(1, Ordering::AcqRel) + 1;
            if n == config.consecutive_gateway.0 {
                self.consecutive_gateway.store(0, Ordering::Relaxed);
                reason = Some(Reason::ConsecutiveGateway);
            }
        } else {
            self.consecutive_gateway.store(0, Ordering::Relaxed);
        }
        let n = self.consecutive_5xx.fetch_add(1, Ordering::AcqRel) + 1;
        if n == config.consecutive_5xx.0 {
            self.consecutive_5xx.store(0, Ordering::Relaxed);
            // The 5xx rule wins when both are reached and enforced (Envoy checks it second but
            // either ejects the host once).
            reason = match reason {
                Some(r) if config.consecutive_gateway.1 > 0 => Some(r),
                _ => Some(Reason::Consecutive5xx),
            };
        }
        reason
    }

    /// Marks the host ejected; returns the ejection's duration.
    pub fn eject(&self, config: &OutlierConfig, now: Instant) -> Duration {
        let mut e = self
            .bookkeeping
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        e.ejections = e.ejections.saturating_add(1);
        e.since = Some(now);
        e.length = config.ejection_time(e.ejections).saturating_add(config.jitter());
        self.ejected.store(true, Ordering::Release);
        e.length
    }

    /// At an interval: brings the host back when its time is up (returns true), or lowers
    /// the ejection count of a host that stayed in.
    pub fn review(&self, now: Instant) -> bool {
        let mut e = self
            .bookkeeping
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match e.since {
            Some(since) if now.duration_since(since) >= e.length => {
                e.since = None;
                self.ejected.store(false, Ordering::Release);
                self.consecutive_5xx.store(0, Ordering::Relaxed);
                self.consecutive_gateway.store(0, Ordering::Relaxed);
                self.consecutive_local.store(0, Ordering::Relaxed);
                true
            }
            Some(_) => false,
            None => {
                e.ejections = e.ejections.saturating_sub(1);
                false
            }
        }
    }

    /// Takes the interval's (requests, successes), external and local origin, and starts a
    /// new interval.
    pub fn take_interval(&self) -> [(u64, u64); 2] {
        [
            (
                self.interval_total.swap(0, Ordering::AcqRel),
                self.interval_success.swap(0, Ordering::AcqRel),
            ),
            (
                self.local_total.swap(0, Ordering::AcqRel),
                self.local_success.swap(0, Ordering::AcqRel),
            ),
        ]
    }

    /// Seconds the current ejection has lasted (for `/clusters`).
    pub fn ejected_for(&self) -> Option<Duration> {
        let e = self
            .bookkeeping
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        e.since.map(|s| s.elapsed())
    }
}

/// Counters (Envoy's `outlier_detection.*`).
#[derive(Debug, Default)]
pub struct OutlierStats {
    /// `ejections_enforced_total`.
    pub ejections_enforced_total: AtomicU64,
    /// `ejections_enforced_consecutive_5xx`.
    pub ejections_enforced_consecutive_5xx: AtomicU64,
    /// `ejections_enforced_consecutive_gateway_failure`.
    pub ejections_enforced_consecutive_gateway_failure: AtomicU64,
    /// `ejections_enforced_consecutive_local_origin_failure`.
    pub ejections_enforced_consecutive_local_origin_failure: AtomicU64,
    /// `ejections_enforced_success_rate`.
    pub ejections_enforced_success_rate: AtomicU64,
    /// `ejections_enforced_failure_percentage`.
    pub ejections_enforced_failure_percentage: AtomicU64,
    /// `ejections_overflow`: not ejected because of `max_ejection_percent`.
    pub ejections_overflow: AtomicU64,
    /// `ejections_active` (gauge).
    pub ejections_active: AtomicU64,
}

impl OutlierStats {
    /// Counts an enforced ejection.
    pub fn enforced(&self, reason: Reason) {
        self.ejections_enforced_total.fetch_add(1, Ordering::Relaxed);
        let counter = match reason {
            Reason::Consecutive5xx => &self.ejections_enforced_consecutive_5xx,
            Reason::ConsecutiveGateway => &self.ejections_enforced_consecutive_gateway_failure,
            Reason::ConsecutiveLocal => &self.ejections_enforced_consecutive_local_origin_failure,
            Reason::SuccessRate => &self.ejections_enforced_success_rate,
            Reason::FailurePercentage => &self.ejections_enforced_failure_percentage,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters with Envoy's names.
    pub fn entries(&self) -> [(&'static str, u64); 8] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("outlier_detection.ejections_active", get(&self.ejections_active)),
            (
                "outlier_detection.ejections_enforced_total",
                get(&self.ejections_enforced_total),
            ),
            (
                "outlier_detection.ejections_enforced_consecutive_5xx",
                get(&self.ejections_enforced_consecutive_5xx),
            ),
            (
                "ejections_enforced_consecutive_gateway_failure",
                get(&self.ejections_enforced_consecutive_gateway_failure),
            ),
            (
                "ejections_enforced_consecutive_local_origin_failure",
                get(&self.ejections_enforced_consecutive_local_origin_failure),
            ),
            (
                "outlier_detection.ejections_enforced_success_rate",
                get(&self.ejections_enforced_success_rate),
            ),
            (
                "ejections_enforced_failure_percentage",
                get(&self.ejections_enforced_failure_percentage),
            ),
            (
                "outlier_detection.ejections_overflow",
                get(&self.ejections_overflow),
            ),
        ]
    }
}

/// Whether a consecutive-failure ejection is enforced this time (its enforcement
/// percentage); rate ejections are rolled for in [`judge_rates`].
pub fn enforced(config: &OutlierConfig, reason: Reason) -> bool {
    let percent = match reason {
        Reason::Consecutive5xx => config.consecutive_5xx.1,
        Reason::ConsecutiveGateway => config.consecutive_gateway.1,
        Reason::ConsecutiveLocal => config.consecutive_local.1,
        Reason::SuccessRate | Reason::FailurePercentage => 100,
    };
    roll(percent)
}

fn roll(percent: u32) -> bool {
    percent >= 100 || fastrand::u32(..100) < percent
}

/// The hosts (by index) an interval's rates single out: success rate below
/// `mean − factor × stdev`, or failure percentage at or above the threshold. `local` judges
/// local-origin results (with the split) under their own enforcement.
pub fn judge_rates(config: &OutlierConfig, intervals: &[(u64, u64)], local: bool) -> Vec<(usize, Reason)> {
    let (sr_enforcing, fp_enforcing) = if local {
        config.local_enforcing
    } else {
        (config.success_rate.enforcing, config.failure_percentage.enforcing)
    };
    let mut out = Vec::new();
    let rates = |rule: &RateRule| -> Vec<(usize, f64)> {
        intervals
            .iter()
            .enumerate()
            .filter(|(_, (total, _))| *total >= u64::from(rule.request_volume) && *total > 0)
            .map(|(i, (total, ok))| (i, *ok as f64 * 100.0 / *total as f64))
            .collect()
    };
    let sr = &config.success_rate;
    if sr_enforcing > 0 {
        let judged = rates(sr);
        if judged.len() >= sr.minimum_hosts as usize && !judged.is_empty() {
            let n = judged.len() as f64;
            let mean = judged.iter().map(|(_, r)| r).sum::<f64>() / n;
            let variance = judged.iter().map(|(_, r)| (r - mean).powi(2)).sum::<f64>() / n;
            let threshold = mean - sr.threshold * variance.sqrt();
            out.extend(
                judged
                    .iter()
                    .filter(|(_, r)| *r < threshold && roll(sr_enforcing))
                    .map(|(i, _)| (*i, Reason::SuccessRate)),
            );
        }
    }
    let fp = &config.failure_percentage;
    if fp_enforcing > 0 {
        let judged = rates(fp);
        if judged.len() >= fp.minimum_hosts as usize {
            out.extend(
                judged
                    .iter()
                    .filter(|(_, r)| 100.0 - r >= fp.threshold && roll(fp_enforcing))
                    .filter(|(i, _)| !out.iter().any(|(j, _)| j == i))
                    .map(|(i, _)| (*i, Reason::FailurePercentage))
                    .collect::<Vec<_>>(),
            );
        }
    }
    out
}

/// How many hosts may be ejected at once: `max_ejection_percent` of them, at least one.
pub fn ejection_limit(config: &OutlierConfig, hosts: usize) -> usize {
    (hosts * config.max_ejection_percent as usize / 100).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value};

    fn config(o: OutlierDetection) -> OutlierConfig {
        OutlierConfig::compile(&o).unwrap()
    }

    #[test]
    fn envoy_defaults() {
        let c = config(OutlierDetection::default());
        assert_eq!(c.consecutive_5xx, (5, 100));
        assert_eq!(c.consecutive_gateway, (5, 0));
        assert_eq!(c.interval, Duration::from_secs(10));
        assert_eq!(c.ejection_time(1), Duration::from_secs(30));
        assert_eq!(c.ejection_time(3), Duration::from_secs(90));
        assert_eq!(c.ejection_time(50), Duration::from_secs(300), "capped");
        assert_eq!(ejection_limit(&c, 3), 1, "10% of 3 rounds to at least one");
        assert_eq!(ejection_limit(&c, 30), 3);
        let bad = OutlierDetection {
            max_ejection_percent: Some(UInt32Value { value: 101 }),
            ..Default::default()
        };
        assert!(
            OutlierConfig::compile(&bad)
                .unwrap_err()
                .contains("max_ejection_percent")
        );
    }

    #[test]
    fn consecutive_5xx_and_gateway_errors_eject_and_a_success_resets() {
        let c = config(OutlierDetection {
            consecutive_5xx: Some(UInt32Value { value: 3 }),
            ..Default::default()
        });
        let h = HostOutlier::default();
        assert_eq!(h.record(&c, Outcome::Status(500)), None);
        assert_eq!(h.record(&c, Outcome::Status(500)), None);
        assert_eq!(
            h.record(&c, Outcome::Status(200)),
            None,
            "a success resets the count"
        );
        assert_eq!(h.record(&c, Outcome::Status(500)), None);
        assert_eq!(
            h.record(&c, Outcome::ConnectFailed),
            None,
            "counts as 503 without the split"
        );
        assert_eq!(h.record(&c, Outcome::Timeout), Some(Reason::Consecutive5xx));
        assert_eq!(h.record(&c, Outcome::Status(500)), None, "the count starts again");
    }

    #[test]
    fn split_local_origin_failures_are_counted_apart() {
        let c = config(OutlierDetection {
            split_external_local_origin_errors: true,
            consecutive_local_origin_failure: Some(UInt32Value { value: 2 }),
            consecutive_5xx: Some(UInt32Value { value: 2 }),
            ..Default::default()
        });
        let h = HostOutlier::default();
        assert_eq!(h.record(&c, Outcome::Status(500)), None);
        assert_eq!(
            h.record(&c, Outcome::ConnectFailed),
            None,
            "not a 5xx with the split"
        );
        assert_eq!(h.record(&c, Outcome::Timeout), Some(Reason::ConsecutiveLocal));
        assert_eq!(h.record(&c, Outcome::Status(503)), Some(Reason::Consecutive5xx));
    }

    #[test]
    fn ejection_time_grows_and_hosts_return_at_the_interval_after_it() {
        let c = config(OutlierDetection {
            base_ejection_time: Some(PbDuration {
                seconds: 10,
                nanos: 0,
            }),
            ..Default::default()
        });
        let h = HostOutlier::default();
        let t0 = Instant::now();
        assert_eq!(h.eject(&c, t0), Duration::from_secs(10));
        assert!(h.is_ejected());
        assert!(!h.review(t0 + Duration::from_secs(9)));
        assert!(h.review(t0 + Duration::from_secs(10)));
        assert!(!h.is_ejected());
        assert_eq!(
            h.eject(&c, t0),
            Duration::from_secs(20),
            "second ejection lasts twice as long"
        );
        assert!(h.review(t0 + Duration::from_secs(20)));
        assert!(
            !h.review(t0 + Duration::from_secs(30)),
            "an interval in: one ejection forgiven"
        );
        assert_eq!(h.eject(&c, t0), Duration::from_secs(20));
    }

    #[test]
    fn success_rate_singles_out_the_host_far_below_the_others() {
        let c = config(OutlierDetection::default());
        let mut intervals = vec![(200, 200); 5];
        intervals.push((200, 40));
        let judged = judge_rates(&c, &intervals, false);
        assert_eq!(judged, vec![(5, Reason::SuccessRate)]);
        assert!(
            judge_rates(&c, &intervals[..4], false).is_empty(),
            "fewer than 5 hosts: not judged"
        );
        assert!(
            judge_rates(&c, &[(50, 0); 6], false).is_empty(),
            "below the request volume"
        );
        let failing = config(OutlierDetection {
            enforcing_success_rate: Some(UInt32Value { value: 0 }),
            enforcing_failure_percentage: Some(UInt32Value { value: 100 }),
            ..Default::default()
        });
        assert!(
            judge_rates(&failing, &intervals, false).is_empty(),
            "80% failures: below 85%"
        );
        intervals[5] = (200, 20);
        assert_eq!(
            judge_rates(&failing, &intervals, false),
            vec![(5, Reason::FailurePercentage)]
        );
    }
}

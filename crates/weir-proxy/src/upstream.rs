//! Clusters at run time: the compiled configuration, the current host set (swapped whole when
//! EDS or DNS changes it, so routes are never recompiled for endpoint changes), the connection
//! pool and the counters `/clusters` and `/stats` show.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::cluster::{ClusterConfig, Discovery, Family, UpstreamProtocol};
use crate::convert::Target;
use crate::endpoints::{EndpointSet, EndpointSpec, LocalityGroup};
use crate::io::resolve_with_ttl;
use crate::lb::{Host, HostSet, PickContext};
use crate::outlier::{self, OutlierStats};
use crate::pool::{Pool, Protocol};
use crate::stats::Destination;

/// Counters of a cluster (Envoy's names without the `cluster.<name>.` prefix).
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// `upstream_rq_total`.
    pub upstream_rq_total: AtomicU64,
    /// `upstream_rq_2xx` … `upstream_rq_5xx` (index 0 = 1xx).
    pub upstream_rq_class: [AtomicU64; 5],
    /// `upstream_rq_timeout`.
    pub upstream_rq_timeout: AtomicU64,
    /// `upstream_rq_per_try_timeout`.
    pub upstream_rq_per_try_timeout: AtomicU64,
    /// `upstream_rq_retry`.
    pub upstream_rq_retry: AtomicU64,
    /// `upstream_rq_retry_success`.
    pub upstream_rq_retry_success: AtomicU64,
    /// `upstream_rq_retry_limit_exceeded`.
    pub upstream_rq_retry_limit_exceeded: AtomicU64,
    /// `upstream_cx_none_healthy`.
    pub upstream_cx_none_healthy: AtomicU64,
    /// `upstream_rq_reset` (reset before a response).
    pub upstream_rq_reset: AtomicU64,
    /// `upstream_cx_tx_bytes_total` (TCP proxy).
    pub upstream_cx_tx_bytes_total: AtomicU64,
    /// `upstream_cx_rx_bytes_total` (TCP proxy).
    pub upstream_cx_rx_bytes_total: AtomicU64,
    /// `update_success` (endpoint updates applied).
    pub update_success: AtomicU64,
    /// `update_failure` (DNS resolutions that failed).
    pub update_failure: AtomicU64,
}

impl ClusterStats {
    /// Counts a response status.
    pub fn count_status(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.upstream_rq_class[class].fetch_add(1, Ordering::Relaxed);
    }
}

/// Why no host could be picked.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum NoHost {
    /// The cluster has no usable endpoint.
    #[error("no healthy upstream")]
    NoneHealthy,
    /// An original-destination cluster without a destination.
    #[error("no original destination for cluster {0}")]
    NoOriginalDestination(String),
}

/// A cluster at run time.
pub struct ClusterRuntime {
    /// Its configuration.
    pub config: ClusterConfig,
    /// The resource's version (unchanged resource → same runtime object).
    pub version: String,
    /// The destination labels of Istio's metrics, from the cluster's name.
    pub destination: Arc<Destination>,
    hosts: ArcSwap<HostSet>,
    /// The endpoints the host set was built from (rebuilt when outlier detection ejects or
    /// brings back a host).
    endpoints: std::sync::Mutex<EndpointSet>,
    /// Outlier-detection counters.
    pub outlier_stats: OutlierStats,
    /// Whether endpoints have been received or resolved once.
    warmed: watch::Sender<bool>,
    /// Connections.
    pub pool: Pool,
    /// Counters.
    pub stats: ClusterStats,
    /// Background tasks (DNS refresh, outlier-detection interval), stopped with the cluster.
    tasks: std::sync::Mutex<Vec<tokio::task::AbortHandle>>,
}

impl std::fmt::Debug for ClusterRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterRuntime")
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

impl Drop for ClusterRuntime {
    fn drop(&mut self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.drain(..).for_each(|t| t.abort());
        }
    }
}

impl ClusterRuntime {
    /// Starts a cluster: static endpoints are placed now, DNS names are resolved in the
    /// background (needs a Tokio runtime), EDS endpoints arrive with [`Self::set_endpoints`].
    pub fn start(config: ClusterConfig, version: String) -> Arc<Self> {
        let pool = Pool::new(
            crate::io::ConnectSettings {
                timeout: config.connect_timeout,
                source: config.source_address,
                tls: config.tls.clone(),
                keepalive: config.keepalive,
                family: match &config.discovery {
                    Discovery::Dns { family, .. } | Discovery::DynamicForwardProxy { family } => *family,
                    _ => crate::cluster::Family::Auto,
                },
            },
            crate::breaker::Breakers::new(config.limits),
            config.http,
        );
        let warm = !matches!(config.discovery, Discovery::Eds(_) | Discovery::Dns { .. });
        let runtime = Arc::new(ClusterRuntime {
            hosts: ArcSwap::from_pointee(HostSet::empty(config.lb)),
            warmed: watch::channel(warm).0,
            pool,
            stats: ClusterStats::default(),
            endpoints: std::sync::Mutex::new(EndpointSet::default()),
            outlier_stats: OutlierStats::default(),
            tasks: std::sync::Mutex::new(Vec::new()),
            version,
            destination: Arc::new(Destination::from_cluster(&config.name)),
            config,
        });
        match &runtime.config.discovery {
            Discovery::Static(set) => runtime.set_endpoints(set),
            Discovery::Dns {
                strict,
                names,
                refresh,
                family,
                respect_ttl,
            } => {
                let task = tokio::spawn(refresh_dns(
                    Arc::downgrade(&runtime),
                    *strict,
                    names.clone(),
                    DnsTiming {
                        refresh: *refresh,
                        respect_ttl: *respect_ttl,
                    },
                    *family,
                ));
                runtime.add_task(task.abort_handle());
            }
            _ => {}
        }
        if let Some(config) = &runtime.config.outlier {
            let task = tokio::spawn(outlier_intervals(Arc::downgrade(&runtime), config.interval));
            runtime.add_task(task.abort_handle());
        }
        runtime
    }

    fn add_task(&self, task: tokio::task::AbortHandle) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(task);
        }
    }

    /// Replaces the endpoints (EDS, DNS); routes and listeners are untouched.
    pub fn set_endpoints(&self, set: &EndpointSet) {
        let mut endpoints = self
            .endpoints
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *endpoints = set.clone();
        self.rebuild(&endpoints);
        drop(endpoints);
        self.stats.update_success.fetch_add(1, Ordering::Relaxed);
        self.warmed.send_replace(true);
    }

    /// Builds the host set again from `endpoints` (hosts carry over with their state).
    fn rebuild(&self, endpoints: &EndpointSet) {
        let previous = self.hosts.load();
        let next = HostSet::build(
            endpoints,
            self.config.lb,
            self.config.panic_threshold,
            self.config.locality_weighted,
            Some(&previous),
        );
        let ejected = next.hosts.iter().filter(|h| h.outlier.is_ejected()).count();
        self.outlier_stats
            .ejections_active
            .store(ejected as u64, Ordering::Relaxed);
        self.hosts.store(Arc::new(next));
    }

    /// Reports an attempt's outcome for outlier detection (a no-op without it).
    pub fn report(&self, host: &Arc<Host>, outcome: outlier::Outcome) {
        let Some(config) = &self.config.outlier else {
            return;
        };
        if let Some(reason) = host.outlier.record(config, outcome) {
            self.eject(host, reason);
        }
    }

    /// Ejects a host if the reason is enforced and the ejection limit allows.
    fn eject(&self, host: &Arc<Host>, reason: outlier::Reason) {
        let Some(config) = &self.config.outlier else {
            return;
        };
        if host.outlier.is_ejected() || !outlier::enforced(config, reason) {
            return;
        }
        let endpoints = self
            .endpoints
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let hosts = self.hosts.load();
        if !hosts.hosts.iter().any(|h| Arc::ptr_eq(h, host)) {
            return;
        }
        let ejected = hosts.hosts.iter().filter(|h| h.outlier.is_ejected()).count();
        if ejected >= outlier::ejection_limit(config, hosts.hosts.len()) {
            self.outlier_stats
                .ejections_overflow
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        let length = host.outlier.eject(config, std::time::Instant::now());
        self.outlier_stats.enforced(reason);
        tracing::info!(cluster = %self.config.name, host = %host.target, ?reason, ?length, "outlier detection ejected a host");
        self.rebuild(&endpoints);
    }

    /// One outlier-detection interval: ejected hosts whose time is up come back, rates are
    /// judged and the interval's counts start again.
    fn outlier_interval(&self) {
        let Some(config) = &self.config.outlier else {
            return;
        };
        let hosts = self.hosts.load_full();
        let now = std::time::Instant::now();
        let mut returned = false;
        for h in &hosts.hosts {
            if h.outlier.review(now) {
                tracing::info!(cluster = %self.config.name, host = %h.target, "outlier detection brought a host back");
                returned = true;
            }
        }
        if returned {
            let endpoints = self
                .endpoints
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.rebuild(&endpoints);
        }
        let intervals: Vec<[(u64, u64); 2]> = hosts.hosts.iter().map(|h| h.outlier.take_interval()).collect();
        for local in [false, true] {
            if local && !config.split {
                break;
            }
            let counts: Vec<(u64, u64)> = intervals.iter().map(|i| i[usize::from(local)]).collect();
            for (i, reason) in outlier::judge_rates(config, &counts, local) {
                if let Some(h) = hosts.hosts.get(i) {
                    self.eject(h, reason);
                }
            }
        }
    }

    /// The current hosts.
    pub fn hosts(&self) -> Arc<HostSet> {
        self.hosts.load_full()
    }

    /// Waits (at most `limit`) for the first endpoints, as Envoy waits for a cluster to warm.
    pub async fn warmed(&self, limit: Duration) {
        // Once warm, a cluster stays warm: no receiver or timer for every request after that.
        if *self.warmed.borrow() {
            return;
        }
        let mut rx = self.warmed.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|w| *w)).await;
    }

    /// Picks a host for a request or connection.
    pub fn pick(
        &self,
        ctx: &PickContext<'_>,
        attempts: u32,
        original_dst: Option<&Target>,
    ) -> Result<Arc<Host>, NoHost> {
        match &self.config.discovery {
            Discovery::OriginalDst { port_override } => {
                let target = match (original_dst, port_override) {
                    (Some(Target::Socket(a)), Some(p)) => {
                        Target::Socket(std::net::SocketAddr::new(a.ip(), *p))
                    }
                    (Some(Target::Name(h, _)), Some(p)) => Target::Name(h.clone(), *p),
                    (Some(t), _) => t.clone(),
                    (None, _) => return Err(NoHost::NoOriginalDestination(self.config.name.clone())),
                };
                Ok(Host::ad_hoc(target))
            }
            Discovery::DynamicForwardProxy { .. } => match original_dst {
                Some(t) => Ok(Host::ad_hoc(t.clone())),
                None => Err(NoHost::NoOriginalDestination(self.config.name.clone())),
            },
            _ => {
                let hosts = self.hosts.load();
                hosts.pick(ctx, attempts).ok_or(NoHost::NoneHealthy)
            }
        }
    }

    /// The upstream protocol for a request that arrived as `downstream`.
    pub fn protocol(&self, downstream_http2: bool) -> Protocol {
        match self.config.protocol {
            UpstreamProtocol::Http1 => Protocol::Http1,
            UpstreamProtocol::Http2 => Protocol::Http2,
            UpstreamProtocol::Downstream if downstream_http2 => Protocol::Http2,
            UpstreamProtocol::Downstream => Protocol::Http1,
        }
    }
}

/// Runs outlier-detection intervals while the cluster exists.
async fn outlier_intervals(cluster: Weak<ClusterRuntime>, interval: Duration) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        ticks.tick().await;
        let Some(c) = cluster.upgrade() else { return };
        c.outlier_interval();
    }
}

/// When a DNS cluster resolves again.
#[derive(Clone, Copy, Debug)]
struct DnsTiming {
    refresh: Duration,
    respect_ttl: bool,
}

/// Envoy's `dns_min_refresh_rate` default: TTLs shorter than this are not followed.
const DNS_MIN_REFRESH: Duration = Duration::from_secs(5);

impl DnsTiming {
    /// The wait before the next resolution: the refresh rate, or with `respect_dns_ttl` the
    /// shortest TTL seen (bounded below by Envoy's 5 s minimum).
    fn next(&self, shortest_ttl: Option<Duration>) -> Duration {
        match (self.respect_ttl, shortest_ttl) {
            (true, Some(ttl)) => ttl.max(DNS_MIN_REFRESH),
            _ => self.refresh,
        }
    }
}

/// Resolves a DNS cluster's names again and again (see [`DnsTiming`]). Failures keep the
/// previous hosts (as Envoy does) and are counted.
async fn refresh_dns(
    cluster: Weak<ClusterRuntime>,
    strict: bool,
    names: EndpointSet,
    timing: DnsTiming,
    family: Family,
) {
    loop {
        let mut shortest_ttl: Option<Duration> = None;
        let mut resolved = EndpointSet {
            overprovisioning_factor: names.overprovisioning_factor,
            ..EndpointSet::default()
        };
        let mut failed = false;
        for (priority, groups) in names.priorities.iter().enumerate() {
            if resolved.priorities.len() <= priority {
                resolved.priorities.resize_with(priority + 1, Vec::new);
            }
            for g in groups {
                let mut endpoints = Vec::new();
                for e in &g.endpoints {
                    let addrs = match &e.target {
                        Target::Name(host, port) => match resolve_with_ttl(host, *port).await {
                            Ok(r) => {
                                let ttl = r.valid_until.saturating_duration_since(std::time::Instant::now());
                                shortest_ttl = Some(shortest_ttl.map_or(ttl, |s| s.min(ttl)));
                                family.order(r.addrs)
                            }
                            Err(err) => {
                                tracing::warn!(host = %host, error = %err, "DNS resolution failed; keeping the previous addresses");
                                failed = true;
                                Vec::new()
                            }
                        },
                        other => vec![match other {
                            Target::Socket(s) => *s,
                            _ => continue,
                        }],
                    };
                    let take = if strict { addrs.len() } else { addrs.len().min(1) };
                    endpoints.extend(addrs.into_iter().take(take).map(|a| EndpointSpec {
                        target: Target::Socket(a),
                        weight: e.weight,
                        health: e.health,
                    }));
                }
                resolved.priorities[priority].push(LocalityGroup {
                    locality: g.locality.clone(),
                    weight: g.weight,
                    endpoints,
                });
            }
        }
        let Some(c) = cluster.upgrade() else { return };
        if failed {
            c.stats.update_failure.fetch_add(1, Ordering::Relaxed);
        }
        if !failed || !*c.warmed.borrow() {
            // The first resolution is applied even when partial, so what resolved can be used
            // and the rest fails fast; later failures keep the previous addresses.
            c.set_endpoints(&resolved);
        }
        drop(c);
        tokio::time::sleep(timing.next(shortest_ttl)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_refresh_follows_ttls_only_when_asked_and_not_below_envoys_minimum() {
        let fixed = DnsTiming {
            refresh: Duration::from_secs(60),
            respect_ttl: false,
        };
        assert_eq!(fixed.next(Some(Duration::from_secs(10))), Duration::from_secs(60));
        let ttl = DnsTiming {
            refresh: Duration::from_secs(60),
            respect_ttl: true,
        };
        assert_eq!(ttl.next(Some(Duration::from_secs(30))), Duration::from_secs(30));
        assert_eq!(ttl.next(Some(Duration::from_secs(300))), Duration::from_secs(300));
        assert_eq!(ttl.next(Some(Duration::from_secs(1))), DNS_MIN_REFRESH);
        assert_eq!(
            ttl.next(None),
            Duration::from_secs(60),
            "nothing resolved: the refresh rate"
        );
    }

    #[tokio::test]
    async fn names_from_the_hosts_file_resolve_with_a_ttl() {
        let r = resolve_with_ttl("localhost", 8080).await.unwrap();
        assert!(
            r.addrs.iter().any(|a| a.ip().is_loopback() && a.port() == 8080),
            "{r:?}"
        );
        assert!(r.valid_until > std::time::Instant::now());
        assert!(resolve_with_ttl("no-such-host.invalid", 80).await.is_err());
    }
}

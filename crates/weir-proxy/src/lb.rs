//! Load balancing over a cluster's hosts, as Envoy does it: a priority level is chosen by
//! health (the overprovisioning factor, 1.4 by default, spilling to lower priorities), a level below the panic
//! threshold uses all its hosts, degraded hosts only when no healthy one is left; then, within
//! the level (and the locality, with locality-weighted balancing), weighted round robin,
//! weighted random, least request (power of two choices), ring hash or Maglev.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::cluster::{Health, LbPolicy};
use crate::convert::Target;
use crate::endpoints::EndpointSet;

/// Counters of one host.
#[derive(Debug, Default)]
pub struct HostStats {
    /// Requests sent.
    pub rq_total: AtomicU64,
    /// Requests that ended in a 5xx or a local failure.
    pub rq_error: AtomicU64,
    /// Connections that could not be made.
    pub cx_connect_fail: AtomicU64,
    /// Connections made.
    pub cx_total: AtomicU64,
}

/// One upstream host.
#[derive(Debug)]
pub struct Host {
    /// Where it is.
    pub target: Target,
    /// Its weight.
    pub weight: u32,
    /// Its health as reported by EDS.
    pub health: Health,
    /// Its locality (`region/zone/subzone`).
    pub locality: String,
    /// Its priority.
    pub priority: usize,
    /// Requests in flight (least request).
    pub active_requests: AtomicU32,
    /// Counters.
    pub stats: HostStats,
    /// Outlier detection state.
    pub outlier: crate::outlier::HostOutlier,
}

impl Host {
    /// A healthy host with weight 1 (original destination and dynamic forward proxy).
    pub fn ad_hoc(target: Target) -> Arc<Host> {
        Arc::new(Host {
            target,
            weight: 1,
            health: Health::Healthy,
            locality: String::new(),
            priority: 0,
            active_requests: AtomicU32::new(0),
            stats: HostStats::default(),
            outlier: crate::outlier::HostOutlier::default(),
        })
    }

    /// Health for load balancing: EDS's, or unhealthy while ejected by outlier detection.
    pub fn lb_health(&self) -> Health {
        if self.outlier.is_ejected() {
            Health::Unhealthy
        } else {
            self.health
        }
    }
}

/// What a pick may use.
#[derive(Debug, Default)]
pub struct PickContext<'a> {
    /// The request's hash (consistent hashing).
    pub hash: Option<u64>,
    /// Hosts to avoid (retries with `previous_hosts`).
    pub avoid: &'a [Arc<Host>],
    /// Priorities left out (retries with `previous_priorities`), unless every level would be.
    pub exclude_priorities: &'a [usize],
}

/// Picks among a fixed candidate list with one policy.
#[derive(Debug)]
struct Picker {
    hosts: Vec<Arc<Host>>,
    /// Cumulative weights (random and least-request sampling).
    cumulative: Vec<u64>,
    uniform: bool,
    /// Weighted round-robin order (smooth WRR, one cycle).
    schedule: Vec<u32>,
    cursor: AtomicUsize,
    /// Ring hash: (hash, host index), sorted.
    ring: Vec<(u64, u32)>,
    /// Maglev lookup table.
    maglev: Vec<u32>,
}

impl Picker {
    fn new(hosts: Vec<Arc<Host>>, policy: LbPolicy) -> Self {
        let mut total = 0u64;
        let cumulative = hosts
            .iter()
            .map(|h| {
                total += u64::from(h.weight);
                total
            })
            .collect();
        let uniform = hosts.windows(2).all(|w| w[0].weight == w[1].weight);
        let mut picker = Picker {
            cumulative,
            uniform,
            schedule: Vec::new(),
            // Start round robin at a random offset, as Envoy does, so that many proxies do
            // not all send their first request to the same host.
            cursor: AtomicUsize::new(if hosts.is_empty() {
                0
            } else {
                fastrand::usize(..hosts.len())
            }),
            ring: Vec::new(),
            maglev: Vec::new(),
            hosts,
        };
        match policy {
            LbPolicy::RoundRobin if !picker.uniform => picker.schedule = smooth_wrr(&picker.hosts),
            LbPolicy::RingHash {
                min_ring_size,
                max_ring_size,
            } => picker.ring = build_ring(&picker.hosts, min_ring_size, max_ring_size),
            LbPolicy::Maglev { table_size } => picker.maglev = build_maglev(&picker.hosts, table_size),
            _ => {}
        }
        picker
    }

    fn weighted_random(&self) -> Option<&Arc<Host>> {
        if self.uniform {
            return self.hosts.get(fastrand::usize(..self.hosts.len().max(1)));
        }
        let total = *self.cumulative.last()?;
        let point = fastrand::u64(..total.max(1));
        let i = self.cumulative.partition_point(|c| *c <= point);
        self.hosts.get(i)
    }

    fn pick(&self, policy: LbPolicy, ctx: &PickContext<'_>) -> Option<Arc<Host>> {
        if self.hosts.is_empty() {
            return None;
        }
        let host = match policy {
            LbPolicy::RoundRobin | LbPolicy::ClusterProvided => {
                let n = self.cursor.fetch_add(1, Ordering::Relaxed);
                if self.schedule.is_empty() {
                    self.hosts.get(n % self.hosts.len())
                } else {
                    let i = self.schedule[n % self.schedule.len()] as usize;
                    self.hosts.get(i)
                }
            }
            LbPolicy::Random => self.weighted_random(),
            LbPolicy::LeastRequest { choice_count } => {
                let mut best: Option<&Arc<Host>> = None;
                for _ in 0..choice_count {
                    let candidate = self.weighted_random();
                    best = match (best, candidate) {
                        (Some(b), Some(c))
                            if c.active_requests.load(Ordering::Relaxed)
                                < b.active_requests.load(Ordering::Relaxed) =>
                        {
                            Some(c)
                        }
                        (None, c) => c,
                        (b, _) => b,
                    };
                }
                best
            }
            LbPolicy::RingHash { .. } => match ctx.hash {
                Some(h) if !self.ring.is_empty() => {
                    let i = self.ring.partition_point(|(p, _)| *p < h) % self.ring.len();
                    self.hosts.get(self.ring[i].1 as usize)
                }
                _ => self.weighted_random(),
            },
            LbPolicy::Maglev { .. } => match ctx.hash {
                Some(h) if !self.maglev.is_empty() => {
                    let slot = usize::try_from(h % self.maglev.len() as u64).unwrap_or(0);
                    self.hosts.get(self.maglev[slot] as usize)
                }
                _ => self.weighted_random(),
            },
        };
        host.cloned()
    }
}

/// One cycle of smooth weighted round robin (nginx's), capped at 64k entries by scaling.
fn smooth_wrr(hosts: &[Arc<Host>]) -> Vec<u32> {
    let gcd = hosts.iter().fold(0u64, |g, h| gcd(g, u64::from(h.weight))).max(1);
    let mut weights: Vec<u64> = hosts.iter().map(|h| u64::from(h.weight) / gcd).collect();
    let mut total: u64 = weights.iter().sum();
    if total > 65_536 {
        let scale = total as f64 / 65_536.0;
        weights = weights
            .iter()
            .map(|w| ((*w as f64 / scale).round() as u64).max(1))
            .collect();
        total = weights.iter().sum();
    }
    let mut current = vec![0i64; hosts.len()];
    let mut schedule = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        for (c, w) in current.iter_mut().zip(&weights) {
            *c += i64::try_from(*w).unwrap_or(i64::MAX);
        }
        let Some((best, _)) = current
            .iter()
            .enumerate()
            .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
        else {
            break;
        };
        current[best] -= i64::try_from(total).unwrap_or(i64::MAX);
        schedule.push(u32::try_from(best).unwrap_or(0));
    }
    schedule
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Envoy's ring: each host gets entries in proportion to its weight, each at the xxHash64 of
/// `address_i`.
fn build_ring(hosts: &[Arc<Host>], min: u64, max: u64) -> Vec<(u64, u32)> {
    let total: u64 = hosts.iter().map(|h| u64::from(h.weight)).sum();
    if total == 0 {
        return Vec::new();
    }
    let min_weight = hosts.iter().map(|h| u64::from(h.weight)).min().unwrap_or(1) as f64 / total as f64;
    let scale = ((min as f64 * min_weight).ceil() / min_weight).min(max as f64) / total as f64;
    let mut ring = Vec::new();
    let mut target = 0.0;
    let mut placed = 0u64;
    for (i, h) in hosts.iter().enumerate() {
        target += scale * f64::from(h.weight);
        let address = h.target.to_string();
        while (placed as f64) < target && placed < max {
            let key = format!("{address}_{placed}");
            ring.push((
                xxhash_rust::xxh64::xxh64(key.as_bytes(), 0),
                u32::try_from(i).unwrap_or(0),
            ));
            placed += 1;
        }
    }
    ring.sort_unstable();
    ring
}

/// The Maglev table (Eisenbud et al.), weighted as Envoy does.
fn build_maglev(hosts: &[Arc<Host>], size: u64) -> Vec<u32> {
    if hosts.is_empty() {
        return Vec::new();
    }
    let size_usize = usize::try_from(size).unwrap_or(65537);
    let max_weight = hosts.iter().map(|h| h.weight).max().unwrap_or(1);
    let prefs: Vec<(u64, u64)> = hosts
        .iter()
        .map(|h| {
            let name = h.target.to_string();
            let offset = xxhash_rust::xxh64::xxh64(name.as_bytes(), 0) % size;
            let skip = xxhash_rust::xxh64::xxh64(name.as_bytes(), 1) % (size - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; hosts.len()];
    let mut table = vec![u32::MAX; size_usize];
    let mut filled = 0usize;
    let mut iteration = 1u64;
    while filled < size_usize {
        for (i, h) in hosts.iter().enumerate() {
            // Weighted: a host takes its turn when its share of the iterations is due.
            if u64::from(h.weight) * iteration < u64::from(max_weight) * (next[i] + 1)
                && h.weight != max_weight
            {
                continue;
            }
            let (offset, skip) = prefs[i];
            loop {
                let slot = usize::try_from((offset + next[i] * skip) % size).unwrap_or(0);
                next[i] += 1;
                if table[slot] == u32::MAX {
                    table[slot] = u32::try_from(i).unwrap_or(0);
                    filled += 1;
                    break;
                }
            }
            if filled == size_usize {
                break;
            }
        }
        iteration += 1;
    }
    table
}

#[derive(Debug)]
struct Level {
    /// Share of healthy weight (0..=1) before the overprovisioning factor.
    health: f64,
    /// Pickers: one, or one per locality with its weight.
    pickers: Vec<(u64, Picker)>,
}

/// The hosts of a cluster, ready for picking.
#[derive(Debug)]
pub struct HostSet {
    /// Every host.
    pub hosts: Vec<Arc<Host>>,
    policy: LbPolicy,
    levels: Vec<Level>,
    /// Cumulative priority loads (percent, out of 100).
    loads: Vec<f64>,
    /// The overprovisioning factor as a multiplier (1.4 for Envoy's default 140%).
    overprovisioning: f64,
}

impl HostSet {
    /// An empty set.
    pub fn empty(policy: LbPolicy) -> Self {
        HostSet {
            hosts: Vec::new(),
            policy,
            levels: Vec::new(),
            loads: Vec::new(),
            overprovisioning: f64::from(crate::endpoints::DEFAULT_OVERPROVISIONING_FACTOR) / 100.0,
        }
    }

    /// Builds from endpoints (names already resolved), reusing `previous` hosts with the same
    /// target, weight and health so their counters carry over.
    pub fn build(
        endpoints: &EndpointSet,
        policy: LbPolicy,
        panic_threshold: f64,
        locality_weighted: bool,
        previous: Option<&HostSet>,
    ) -> Self {
        let overprovisioning = f64::from(endpoints.overprovisioning_factor) / 100.0;
        let mut hosts = Vec::with_capacity(endpoints.len());
        let mut levels = Vec::with_capacity(endpoints.priorities.len());
        for (priority, groups) in endpoints.priorities.iter().enumerate() {
            let mut level_hosts: Vec<Vec<Arc<Host>>> = Vec::with_capacity(groups.len());
            for g in groups {
                let mut group_hosts = Vec::with_capacity(g.endpoints.len());
                for e in &g.endpoints {
                    let reused = previous.and_then(|p| {
                        p.hosts
                            .iter()
                            .find(|h| {
                                h.target == e.target
                                    && h.weight == e.weight
                                    && h.health == e.health
                                    && h.priority == priority
                            })
                            .cloned()
                    });
                    let host = reused.unwrap_or_else(|| {
                        Arc::new(Host {
                            target: e.target.clone(),
                            weight: e.weight,
                            health: e.health,
                            locality: g.locality.clone(),
                            priority,
                            active_requests: AtomicU32::new(0),
                            stats: HostStats::default(),
                            outlier: crate::outlier::HostOutlier::default(),
                        })
                    });
                    hosts.push(host.clone());
                    group_hosts.push(host);
                }
                level_hosts.push(group_hosts);
            }
            levels.push(build_level(
                groups,
                level_hosts,
                policy,
                panic_threshold,
                locality_weighted,
                overprovisioning,
            ));
        }
        let loads = priority_loads(&levels, overprovisioning);
        HostSet {
            hosts,
            policy,
            levels,
            loads,
            overprovisioning,
        }
    }

    /// Whether any host can take traffic.
    pub fn has_usable(&self) -> bool {
        self.levels
            .iter()
            .any(|l| l.pickers.iter().any(|(_, p)| !p.hosts.is_empty()))
    }

    /// Picks a host; `None` when there is none to use ("no healthy upstream").
    pub fn pick(&self, ctx: &PickContext<'_>, attempts: u32) -> Option<Arc<Host>> {
        let mut last = None;
        for _ in 0..attempts.max(1) {
            let host = self.pick_once(ctx)?;
            if !ctx.avoid.iter().any(|a| Arc::ptr_eq(a, &host)) {
                return Some(host);
            }
            last = Some(host);
        }
        last
    }

    fn pick_once(&self, ctx: &PickContext<'_>) -> Option<Arc<Host>> {
        let level = if self.levels.len() <= 1 {
            self.levels.first()?
        } else {
            // Consistent hashing keeps the level choice stable for a hash.
            let point = match ctx.hash {
                Some(h) => (h % 10_000) as f64 / 100.0,
                None => fastrand::f64() * 100.0,
            };
            let excluded;
            let loads = if ctx.exclude_priorities.is_empty() {
                &self.loads
            } else {
                excluded = loads_without(&self.levels, ctx.exclude_priorities, self.overprovisioning);
                excluded.as_ref().unwrap_or(&self.loads)
            };
            let i = loads.partition_point(|l| *l <= point).min(self.levels.len() - 1);
            &self.levels[i]
        };
        let picker = if level.pickers.len() == 1 {
            &level.pickers[0].1
        } else {
            let total: u64 = level.pickers.iter().map(|(w, _)| *w).sum();
            let mut point = fastrand::u64(..total.max(1));
            let mut chosen = level.pickers.first().map(|(_, p)| p)?;
            for (w, p) in &level.pickers {
                if point < *w {
                    chosen = p;
                    break;
                }
                point -= w;
            }
            chosen
        };
        picker.pick(self.policy, ctx)
    }
}

fn build_level(
    groups: &[crate::endpoints::LocalityGroup],
    level_hosts: Vec<Vec<Arc<Host>>>,
    policy: LbPolicy,
    panic_threshold: f64,
    locality_weighted: bool,
    overprovisioning: f64,
) -> Level {
    let all: Vec<&Arc<Host>> = level_hosts.iter().flatten().collect();
    let total_weight: u64 = all.iter().map(|h| u64::from(h.weight)).sum();
    let healthy_weight: u64 = all
        .iter()
        .filter(|h| h.lb_health() == Health::Healthy)
        .map(|h| u64::from(h.weight))
        .sum();
    let degraded_weight: u64 = all
        .iter()
        .filter(|h| h.lb_health() == Health::Degraded)
        .map(|h| u64::from(h.weight))
        .sum();
    let count = all.len();
    let healthy_count = all.iter().filter(|h| h.lb_health() == Health::Healthy).count();
    let health = if total_weight == 0 {
        0.0
    } else {
        (healthy_weight + degraded_weight) as f64 / total_weight as f64
    };
    // Panic: below the threshold, every host of the level is used.
    let panic = count > 0 && (healthy_count as f64 * 100.0 / count as f64) < panic_threshold;
    let usable = |hosts: &[Arc<Host>]| -> Vec<Arc<Host>> {
        if panic {
            return hosts.to_vec();
        }
        let healthy: Vec<Arc<Host>> = hosts
            .iter()
            .filter(|h| h.lb_health() == Health::Healthy)
            .cloned()
            .collect();
        if healthy.is_empty() {
            hosts
                .iter()
                .filter(|h| h.lb_health() == Health::Degraded)
                .cloned()
                .collect()
        } else {
            healthy
        }
    };
    let pickers = if locality_weighted && groups.len() > 1 {
        groups
            .iter()
            .zip(&level_hosts)
            .map(|(g, hosts)| {
                let use_hosts = usable(hosts);
                let share = if hosts.is_empty() {
                    0.0
                } else {
                    use_hosts.len() as f64 / hosts.len() as f64
                };
                // Envoy scales a locality's weight by its availability.
                let weight = (f64::from(g.weight) * (share * overprovisioning).min(1.0) * 1000.0) as u64;
                (weight, Picker::new(use_hosts, policy))
            })
            .filter(|(w, p)| *w > 0 && !p.hosts.is_empty())
            .collect()
    } else {
        let flat: Vec<Arc<Host>> = level_hosts.into_iter().flatten().collect();
        vec![(1, Picker::new(usable(&flat), policy))]
    };
    Level { health, pickers }
}

/// Priority loads as if the excluded levels had no healthy host (`None` when nothing would be
/// left, as Envoy then resets the exclusion).
fn loads_without(levels: &[Level], excluded: &[usize], overprovisioning: f64) -> Option<Vec<f64>> {
    let healths: Vec<f64> = levels
        .iter()
        .enumerate()
        .map(|(i, l)| if excluded.contains(&i) { 0.0 } else { l.health })
        .collect();
    healths
        .iter()
        .any(|h| *h > 0.0)
        .then(|| loads_from(&healths, overprovisioning))
}

/// Envoy's priority loads: each level takes `min(100, health × overprovisioning factor)` of
/// what is left; when all levels together are below 100%, the loads are normalized. Returned
/// cumulatively.
fn priority_loads(levels: &[Level], overprovisioning: f64) -> Vec<f64> {
    loads_from(
        &levels.iter().map(|l| l.health).collect::<Vec<_>>(),
        overprovisioning,
    )
}

fn loads_from(health: &[f64], overprovisioning: f64) -> Vec<f64> {
    let healths: Vec<f64> = health
        .iter()
        .map(|h| (h * overprovisioning * 100.0).min(100.0))
        .collect();
    let total: f64 = healths.iter().sum::<f64>().min(100.0);
    let mut remaining = 100.0;
    let mut cumulative = 0.0;
    let mut out = Vec::with_capacity(healths.len());
    for h in &healths {
        let load = if total <= 0.0 {
            0.0
        } else if total < 100.0 {
            h * 100.0 / total
        } else {
            h.min(remaining)
        };
        remaining -= load.min(remaining);
        cumulative += load;
        out.push(cumulative);
    }
    if total <= 0.0 {
        // Nothing healthy anywhere: the first level takes everything (it will be in panic).
        out.iter_mut().for_each(|l| *l = 100.0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::{EndpointSpec, LocalityGroup};
    use std::collections::HashMap;

    fn set(weights: &[(u32, Health)], priority_of: impl Fn(usize) -> usize) -> EndpointSet {
        let mut s = EndpointSet::default();
        for (i, (w, h)) in weights.iter().enumerate() {
            let p = priority_of(i);
            if s.priorities.len() <= p {
                s.priorities.resize_with(p + 1, Vec::new);
            }
            if s.priorities[p].is_empty() {
                s.priorities[p].push(LocalityGroup {
                    locality: String::new(),
                    weight: 1,
                    endpoints: Vec::new(),
                });
            }
            s.priorities[p][0].endpoints.push(EndpointSpec {
                target: Target::Socket(format!("10.0.0.{i}:80").parse().unwrap()),
                weight: *w,
                health: *h,
            });
        }
        s
    }

    fn counts(hs: &HostSet, n: usize, hash: impl Fn(usize) -> Option<u64>) -> HashMap<String, usize> {
        let mut c = HashMap::new();
        for i in 0..n {
            let h = hs
                .pick(
                    &PickContext {
                        hash: hash(i),
                        avoid: &[],
                        exclude_priorities: &[],
                    },
                    1,
                )
                .unwrap();
            *c.entry(h.target.to_string()).or_default() += 1;
        }
        c
    }

    #[test]
    fn weighted_round_robin_is_exact_per_cycle() {
        let s = set(&[(1, Health::Healthy), (3, Health::Healthy)], |_| 0);
        let hs = HostSet::build(&s, LbPolicy::RoundRobin, 50.0, false, None);
        let c = counts(&hs, 400, |_| None);
        assert_eq!(c["10.0.0.0:80"], 100);
        assert_eq!(c["10.0.0.1:80"], 300);
    }

    #[test]
    fn unhealthy_hosts_are_skipped_until_panic() {
        let s = set(
            &[(1, Health::Healthy), (1, Health::Unhealthy), (1, Health::Healthy)],
            |_| 0,
        );
        let hs = HostSet::build(&s, LbPolicy::Random, 50.0, false, None);
        assert!(!counts(&hs, 300, |_| None).contains_key("10.0.0.1:80"));
        // Two of three unhealthy: below 50%, every host is used.
        let s = set(
            &[
                (1, Health::Healthy),
                (1, Health::Unhealthy),
                (1, Health::Unhealthy),
            ],
            |_| 0,
        );
        let hs = HostSet::build(&s, LbPolicy::Random, 50.0, false, None);
        assert_eq!(counts(&hs, 600, |_| None).len(), 3);
    }

    #[test]
    fn lower_priorities_take_traffic_only_when_needed() {
        let s = set(
            &[(1, Health::Healthy), (1, Health::Healthy), (1, Health::Healthy)],
            |i| usize::from(i == 2),
        );
        let hs = HostSet::build(&s, LbPolicy::RoundRobin, 50.0, false, None);
        assert!(!counts(&hs, 300, |_| None).contains_key("10.0.0.2:80"));
        // Priority 0 at 50% health → 70% load, 30% spills to priority 1.
        let s = set(
            &[(1, Health::Healthy), (1, Health::Unhealthy), (1, Health::Healthy)],
            |i| usize::from(i == 2),
        );
        let hs = HostSet::build(&s, LbPolicy::RoundRobin, 0.0, false, None);
        let c = counts(&hs, 10_000, |_| None);
        let spilled = c["10.0.0.2:80"] as f64 / 10_000.0;
        assert!((0.25..0.35).contains(&spilled), "{spilled}");
    }

    #[test]
    fn the_overprovisioning_factor_sets_how_much_a_degraded_level_keeps() {
        // Priority 0: 4 of 5 hosts healthy (80%); priority 1: one host.
        let mut s = set(
            &[
                (1, Health::Healthy),
                (1, Health::Healthy),
                (1, Health::Healthy),
                (1, Health::Healthy),
                (1, Health::Unhealthy),
                (1, Health::Healthy),
            ],
            |i| usize::from(i == 5),
        );
        let spilled = |s: &EndpointSet| {
            let hs = HostSet::build(s, LbPolicy::RoundRobin, 0.0, false, None);
            counts(&hs, 10_000, |_| None)
                .get("10.0.0.5:80")
                .map_or(0.0, |n| *n as f64 / 10_000.0)
        };
        // 140%: 80% × 1.4 ≥ 100%, nothing spills.
        assert_eq!(spilled(&s), 0.0);
        // 100%: priority 0 keeps 80%, 20% spills.
        s.overprovisioning_factor = 100;
        let share = spilled(&s);
        assert!((0.16..0.24).contains(&share), "{share}");
        // 200%: a level at 60% health keeps everything.
        s.priorities[0][0].endpoints[1].health = Health::Unhealthy;
        s.overprovisioning_factor = 200;
        let hs = HostSet::build(&s, LbPolicy::RoundRobin, 0.0, false, None);
        assert_eq!(hs.loads, [100.0, 100.0]);
    }

    #[test]
    fn excluded_priorities_send_retries_to_the_next_and_ejected_hosts_are_unhealthy() {
        let s = set(
            &[(1, Health::Healthy), (1, Health::Healthy), (1, Health::Healthy)],
            |i| i.min(1),
        );
        let hs = HostSet::build(&s, LbPolicy::RoundRobin, 50.0, false, None);
        let pick = |exclude: &[usize]| {
            hs.pick(
                &PickContext {
                    hash: None,
                    avoid: &[],
                    exclude_priorities: exclude,
                },
                1,
            )
            .unwrap()
            .priority
        };
        assert!((0..50).all(|_| pick(&[]) == 0));
        assert!(
            (0..50).all(|_| pick(&[0]) == 1),
            "retry_priority leaves priority 0 out"
        );
        assert!(
            (0..50).all(|_| pick(&[0, 1]) == 0),
            "nothing left: the exclusion is dropped"
        );
        // An ejected host counts as unhealthy when the set is built again.
        let config = crate::outlier::OutlierConfig::compile(&Default::default()).unwrap();
        let _ = hs.hosts[0].outlier.eject(&config, std::time::Instant::now());
        assert_eq!(hs.hosts[0].lb_health(), Health::Unhealthy);
        let rebuilt = HostSet::build(&s, LbPolicy::RoundRobin, 0.0, false, Some(&hs));
        assert!(Arc::ptr_eq(&rebuilt.hosts[0], &hs.hosts[0]), "hosts carry over");
        let c = counts(&rebuilt, 300, |_| None);
        assert!(!c.contains_key("10.0.0.0:80"), "{c:?}");
    }

    #[test]
    fn consistent_hashing_is_stable_and_spreads() {
        for policy in [
            LbPolicy::RingHash {
                min_ring_size: 1024,
                max_ring_size: 8 << 20,
            },
            LbPolicy::Maglev { table_size: 65537 },
        ] {
            let s = set(
                &[(1, Health::Healthy), (1, Health::Healthy), (1, Health::Healthy)],
                |_| 0,
            );
            let hs = HostSet::build(&s, policy, 50.0, false, None);
            for k in 0..50u64 {
                let h = xxhash_rust::xxh64::xxh64(&k.to_le_bytes(), 0);
                let a = hs
                    .pick(
                        &PickContext {
                            hash: Some(h),
                            avoid: &[],
                            exclude_priorities: &[],
                        },
                        1,
                    )
                    .unwrap();
                let b = hs
                    .pick(
                        &PickContext {
                            hash: Some(h),
                            avoid: &[],
                            exclude_priorities: &[],
                        },
                        1,
                    )
                    .unwrap();
                assert!(Arc::ptr_eq(&a, &b));
            }
            let c = counts(&hs, 3000, |i| {
                Some(xxhash_rust::xxh64::xxh64(&i.to_le_bytes(), 7))
            });
            assert_eq!(c.len(), 3, "{policy:?}");
            assert!(c.values().all(|n| *n > 600), "{policy:?} {c:?}");
        }
    }

    #[test]
    fn least_request_prefers_idle_hosts_and_retries_avoid_previous() {
        let s = set(&[(1, Health::Healthy), (1, Health::Healthy)], |_| 0);
        let hs = HostSet::build(&s, LbPolicy::LeastRequest { choice_count: 2 }, 50.0, false, None);
        hs.hosts[0].active_requests.store(10, Ordering::Relaxed);
        let c = counts(&hs, 1000, |_| None);
        assert!(c["10.0.0.1:80"] > 700, "{c:?}");
        let avoid = [hs.hosts[1].clone()];
        let picked = hs
            .pick(
                &PickContext {
                    hash: None,
                    avoid: &avoid,
                    exclude_priorities: &[],
                },
                // Least request favours the avoided idle host 3 times in 4: enough attempts
                // that the other is found (0.75^50 ≈ 6e-7).
                50,
            )
            .unwrap();
        assert!(Arc::ptr_eq(&picked, &hs.hosts[0]));
    }
}

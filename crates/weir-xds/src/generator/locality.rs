//! Locality-aware load balancing (Istio's `loadbalancer.go`): `distribute` rewrites locality
//! weights for proxies in a matching locality; otherwise, when outlier detection is configured
//! (which is what lets a locality fail), endpoints get priorities by proximity to the proxy —
//! same zone and subzone first, then same zone, same region, a `failover` region, the rest.

use envoy_types::pb::envoy::config::core::v3::Locality;
use envoy_types::pb::envoy::config::endpoint::v3::LocalityLbEndpoints;
use weir_api::types::OrEmpty;
use weir_api::types::networking::LocalityLbSetting;

use super::cluster::Policy;
use super::util::u32v;

/// Whether `pattern` (`region/zone/subzone`, `*` for any part, trailing parts optional) matches
/// `locality`.
pub fn matches(pattern: &str, locality: &str) -> bool {
    let have: Vec<&str> = locality.split('/').collect();
    for (i, want) in pattern.split('/').enumerate() {
        if want == "*" {
            return true;
        }
        if have.get(i).copied().unwrap_or("") != want {
            return false;
        }
    }
    true
}

fn text(l: Option<&Locality>) -> String {
    l.map(|l| format!("{}/{}/{}", l.region, l.zone, l.sub_zone))
        .unwrap_or_default()
}

/// The setting in force, if locality load balancing is on for this policy.
fn setting<'a>(policy: &Policy<'a>) -> Option<&'a LocalityLbSetting> {
    policy
        .load_balancer
        .and_then(|lb| lb.locality_lb_setting.as_ref())
        .filter(|s| s.enabled != Some(false))
}

/// Whether the policy distributes traffic by explicit locality weights for a proxy at
/// `proxy_locality` (the cluster then needs `locality_weighted_lb_config`).
pub fn distributes(policy: &Policy<'_>, proxy_locality: Option<&str>) -> bool {
    let (Some(s), Some(at)) = (setting(policy), proxy_locality) else {
        return false;
    };
    s.distribute
        .or_empty()
        .iter()
        .any(|d| matches(d.from.or_empty(), at))
}

/// Whether failover applies: outlier detection is configured (Istio: without it no locality is
/// ever seen failing) and locality load balancing is not turned off.
fn failover_enabled(policy: &Policy<'_>) -> bool {
    policy.outlier_detection.is_some()
        && policy
            .load_balancer
            .and_then(|lb| lb.locality_lb_setting.as_ref())
            .is_none_or(|s| s.enabled != Some(false))
}

/// Labels with Istio's topology labels added from a locality and network.
fn with_topology(
    labels: &weir_api::types::Labels,
    locality: Option<&str>,
    network: Option<&str>,
) -> weir_api::types::Labels {
    let mut out = labels.clone();
    let mut parts = locality.unwrap_or_default().split('/');
    for key in [
        "topology.kubernetes.io/region",
        "topology.kubernetes.io/zone",
        "topology.istio.io/subzone",
    ] {
        if let Some(v) = parts.next().filter(|v| !v.is_empty()) {
            out.entry(key.to_string()).or_insert_with(|| v.to_string());
        }
    }
    if let Some(n) = network {
        out.entry("topology.istio.io/network".to_string())
            .or_insert_with(|| n.to_string());
    }
    out
}

/// Istio's `failoverPriority`: an endpoint's priority is the number of the listed labels, in
/// order, it does not share with the proxy (counting stops at the first difference; a
/// `key=value` entry compares the endpoint with that value). 0 when the rule does not apply.
pub fn label_priority(
    policy: &Policy<'_>,
    proxy: &weir_model::Proxy,
    endpoint: &weir_model::registry::Endpoint,
) -> u32 {
    let Some(s) = setting(policy) else { return 0 };
    let keys = s.failover_priority.or_empty();
    if keys.is_empty() || !failover_enabled(policy) || !s.distribute.or_empty().is_empty() {
        return 0;
    }
    let proxy_labels = with_topology(&proxy.labels, proxy.locality.as_deref(), None);
    let endpoint_labels = with_topology(
        &endpoint.labels,
        endpoint.locality.as_deref(),
        endpoint.network.as_deref(),
    );
    let matched = keys
        .iter()
        .take_while(|key| match key.split_once('=') {
            Some((k, v)) => endpoint_labels.get(k).map(String::as_str) == Some(v),
            None => proxy_labels
                .get(key.as_str())
                .is_some_and(|v| endpoint_labels.get(key.as_str()) == Some(v)),
        })
        .count();
    u32::try_from(keys.len() - matched).unwrap_or(u32::MAX)
}

/// Applies the policy's locality rules for a proxy at `proxy_locality` to a load assignment
/// whose groups carry their `failoverPriority` priority (0 without it).
pub fn apply(groups: &mut [LocalityLbEndpoints], policy: &Policy<'_>, proxy_locality: Option<&str>) {
    let explicit = setting(policy);
    let by_labels = explicit.is_some_and(|s| !s.failover_priority.or_empty().is_empty());
    let Some(at) = proxy_locality else {
        if by_labels && failover_enabled(policy) {
            compact(groups, groups.iter().map(|g| g.priority).collect());
        }
        return;
    };
    if let Some(rule) = explicit
        .into_iter()
        .flat_map(|s| s.distribute.or_empty())
        .find(|d| matches(d.from.or_empty(), at))
    {
        // Istio's applyLocalityWeights: each locality takes the weight of the first `to` entry
        // it matches, shared among the localities that entry matches in proportion to their
        // own weights (rounded up); a locality no entry matches gets no traffic — its
        // endpoints are removed (Envoy refuses a locality weight of 0).
        let localities: Vec<String> = groups.iter().map(|g| text(g.locality.as_ref())).collect();
        let mut matched = vec![false; groups.len()];
        for (pattern, weight) in rule.to.iter().flatten() {
            let hit: Vec<usize> = (0..groups.len())
                .filter(|i| !matched[*i] && matches(pattern, &localities[*i]))
                .collect();
            let own =
                |g: &LocalityLbEndpoints| u64::from(g.load_balancing_weight.as_ref().map_or(1, |w| w.value));
            let total: u64 = hit.iter().map(|i| own(&groups[*i])).sum();
            for i in hit {
                matched[i] = true;
                let share = (own(&groups[i]) * u64::from(*weight)).div_ceil(total.max(1));
                if share > 0 {
                    groups[i].load_balancing_weight = Some(u32v(u32::try_from(share).unwrap_or(u32::MAX)));
                }
            }
        }
        for (g, matched) in groups.iter_mut().zip(matched) {
            if !matched {
                g.lb_endpoints.clear();
            }
        }
        return;
    }
    // Failover needs outlier detection, and is on by default (MeshConfig's localityLbSetting
    // is enabled unless a rule says otherwise).
    if !failover_enabled(policy) {
        return;
    }
    let has_failover = explicit.is_some_and(|s| !s.failover.or_empty().is_empty());
    if by_labels && !has_failover {
        // Istio: failoverPriority alone orders by labels only.
        compact(groups, groups.iter().map(|g| g.priority).collect());
        return;
    }
    let mut parts = at.split('/');
    let (region, zone, subzone) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let failover_to: Vec<&str> = explicit
        .into_iter()
        .flat_map(|s| s.failover.or_empty())
        .filter(|f| f.from.as_deref() == Some(region))
        .filter_map(|f| f.to.as_deref())
        .collect();
    let raw: Vec<u32> = groups
        .iter()
        .map(|g| {
            let l = g.locality.clone().unwrap_or_default();
            let proximity = if l.region == region && l.zone == zone && l.sub_zone == subzone {
                0
            } else if l.region == region && l.zone == zone {
                1
            } else if l.region == region {
                2
            } else if failover_to.is_empty() || failover_to.contains(&l.region.as_str()) {
                3
            } else {
                4
            };
            // With failoverPriority as well, labels order first, then proximity.
            g.priority.saturating_mul(5).saturating_add(proximity)
        })
        .collect();
    compact(groups, raw);
}

/// Sets the groups' priorities to the ranks of `raw` (Envoy wants priorities without gaps).
fn compact(groups: &mut [LocalityLbEndpoints], raw: Vec<u32>) {
    let mut used: Vec<u32> = raw.clone();
    used.sort_unstable();
    used.dedup();
    for (g, p) in groups.iter_mut().zip(raw) {
        g.priority = u32::try_from(used.iter().position(|u| *u == p).unwrap_or(0)).unwrap_or(0);
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::endpoint::v3::LbEndpoint;
    use weir_api::types::networking::{
        LoadBalancerSettings, LocalityDistribute, LocalityFailover, OutlierDetection,
    };

    use super::*;

    fn group(l: &str) -> LocalityLbEndpoints {
        let mut p = l.split('/');
        LocalityLbEndpoints {
            locality: Some(Locality {
                region: p.next().unwrap_or("").into(),
                zone: p.next().unwrap_or("").into(),
                sub_zone: p.next().unwrap_or("").into(),
            }),
            load_balancing_weight: Some(u32v(1)),
            lb_endpoints: vec![LbEndpoint::default()],
            ..Default::default()
        }
    }

    #[test]
    fn patterns() {
        assert!(matches("us-east/*", "us-east/a/1"));
        assert!(matches("us-east", "us-east/a/1"));
        assert!(matches("*", "eu/b"));
        assert!(!matches("us-east/b/*", "us-east/a/1"));
    }

    #[test]
    fn distribute_sets_weights_and_failover_sets_priorities() {
        let lb = LoadBalancerSettings {
            locality_lb_setting: Some(LocalityLbSetting {
                distribute: Some(vec![LocalityDistribute {
                    from: Some("us-east/a/*".into()),
                    to: Some([("us-east/a/*".to_string(), 80), ("us-west/*".to_string(), 20)].into()),
                }]),
                failover: Some(vec![LocalityFailover {
                    from: Some("us-east".into()),
                    to: Some("eu".into()),
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let outlier = OutlierDetection::default();
        let policy = Policy {
            load_balancer: Some(&lb),
            outlier_detection: Some(&outlier),
            ..Default::default()
        };
        let mut groups = vec![
            group("us-east/a/1"),
            group("us-west/b/1"),
            group("us-west/c/1"),
            group("eu/x/1"),
        ];
        assert!(distributes(&policy, Some("us-east/a/1")));
        apply(&mut groups, &policy, Some("us-east/a/1"));
        let w: Vec<(u32, usize)> = groups
            .iter()
            .map(|g| {
                (
                    g.load_balancing_weight.as_ref().map_or(0, |w| w.value),
                    g.lb_endpoints.len(),
                )
            })
            .collect();
        // The locality no entry names keeps its weight but loses its endpoints.
        assert_eq!(w, vec![(80, 1), (10, 1), (10, 1), (1, 0)]);
        // Shares follow the localities' own weights, rounded up.
        let mut groups = vec![group("us-east/a/1"), group("us-west/b/1"), group("us-west/c/1")];
        groups[1].load_balancing_weight = Some(u32v(2));
        apply(&mut groups, &policy, Some("us-east/a/1"));
        let w: Vec<u32> = groups
            .iter()
            .map(|g| g.load_balancing_weight.as_ref().map_or(0, |w| w.value))
            .collect();
        assert_eq!(w, vec![80, 14, 7]);

        // A proxy elsewhere: no distribute rule, so failover priorities.
        let mut groups = vec![
            group("us-east/b/1"),
            group("us-east/a/1"),
            group("eu/x/1"),
            group("ap/y/1"),
        ];
        apply(&mut groups, &policy, Some("us-east/b/1"));
        let p: Vec<u32> = groups.iter().map(|g| g.priority).collect();
        assert_eq!(
            p,
            vec![0, 1, 2, 3],
            "same zone, same region, the failover region, the rest"
        );
    }

    #[test]
    fn failover_priority_orders_endpoints_by_the_labels_they_share_with_the_proxy() {
        let lb = LoadBalancerSettings {
            locality_lb_setting: Some(LocalityLbSetting {
                failover_priority: Some(vec![
                    "topology.istio.io/network".into(),
                    "topology.kubernetes.io/region".into(),
                    "version=v2".into(),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let outlier = OutlierDetection::default();
        let policy = Policy {
            load_balancer: Some(&lb),
            outlier_detection: Some(&outlier),
            ..Default::default()
        };
        let proxy = weir_model::Proxy {
            kind: weir_model::ProxyKind::Sidecar,
            namespace: "default".into(),
            name: "client".into(),
            labels: [("topology.istio.io/network".to_string(), "n1".to_string())].into(),
            ips: vec![],
            locality: Some("us-east/a".into()),
        };
        let endpoint = |network: &str, locality: &str, version: &str| {
            let mut e = weir_model::registry::Endpoint::plain(
                weir_model::registry::EndpointAddress::Ip([10, 0, 0, 1].into()),
                80,
                "http",
                true,
            );
            e.network = Some(network.into());
            e.locality = Some(locality.into());
            e.labels = [("version".to_string(), version.to_string())].into();
            e
        };
        let p = |e| label_priority(&policy, &proxy, &e);
        assert_eq!(p(endpoint("n1", "us-east/b", "v2")), 0, "all three match");
        assert_eq!(p(endpoint("n1", "us-east/b", "v1")), 1);
        assert_eq!(
            p(endpoint("n1", "eu/x", "v2")),
            2,
            "counting stops at the first difference"
        );
        assert_eq!(p(endpoint("n2", "us-east/a", "v2")), 3);
        // Without outlier detection there is no failover.
        let off = Policy {
            outlier_detection: None,
            ..policy
        };
        assert_eq!(label_priority(&off, &proxy, &endpoint("n2", "eu/x", "v1")), 0);
        // Alone, failoverPriority's order is the groups' order, without gaps.
        let mut groups = vec![group("us-east/b"), group("eu/x")];
        groups[0].priority = 1;
        groups[1].priority = 3;
        apply(&mut groups, &policy, Some("us-east/a"));
        assert_eq!(groups.iter().map(|g| g.priority).collect::<Vec<_>>(), vec![0, 1]);
    }
}

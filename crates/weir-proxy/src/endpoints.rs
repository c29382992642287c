//! Endpoint sets from ClusterLoadAssignments (EDS, or inline in STATIC and DNS clusters):
//! priorities, localities with their weights, endpoints with weights and health.

use envoy_types::pb::envoy::config::core::v3::Locality;
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};

use crate::cluster::Health;
use crate::convert::{Target, target};

/// One endpoint as listed.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointSpec {
    /// Where it is (a name for DNS clusters).
    pub target: Target,
    /// Its load-balancing weight (≥ 1).
    pub weight: u32,
    /// Its health as reported.
    pub health: Health,
}

/// The endpoints of one locality.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LocalityGroup {
    /// `region/zone/subzone`.
    pub locality: String,
    /// Locality weight (used with locality-weighted load balancing; ≥ 1).
    pub weight: u32,
    /// Its endpoints.
    pub endpoints: Vec<EndpointSpec>,
}

/// Endpoints by priority (index 0 is the highest), then locality.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointSet {
    /// Priority levels.
    pub priorities: Vec<Vec<LocalityGroup>>,
    /// The assignment policy's `overprovisioning_factor`, in percent (Envoy's default 140): a
    /// priority level or locality counts as fully healthy while its healthy share times this
    /// factor is at least 100%.
    pub overprovisioning_factor: u32,
}

/// Envoy's default overprovisioning factor, in percent.
pub const DEFAULT_OVERPROVISIONING_FACTOR: u32 = 140;

impl Default for EndpointSet {
    fn default() -> Self {
        EndpointSet {
            priorities: Vec::new(),
            overprovisioning_factor: DEFAULT_OVERPROVISIONING_FACTOR,
        }
    }
}

impl EndpointSet {
    /// How many endpoints in all.
    pub fn len(&self) -> usize {
        self.priorities.iter().flatten().map(|g| g.endpoints.len()).sum()
    }

    /// Whether there is no endpoint.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every endpoint with its priority and locality.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &LocalityGroup, &EndpointSpec)> {
        self.priorities.iter().enumerate().flat_map(|(p, groups)| {
            groups
                .iter()
                .flat_map(move |g| g.endpoints.iter().map(move |e| (p, g, e)))
        })
    }
}

/// The `region/zone/subzone` form of a locality.
pub fn locality_name(l: Option<&Locality>) -> String {
    l.map(|l| {
        if l.sub_zone.is_empty() && l.zone.is_empty() {
            l.region.clone()
        } else if l.sub_zone.is_empty() {
            format!("{}/{}", l.region, l.zone)
        } else {
            format!("{}/{}/{}", l.region, l.zone, l.sub_zone)
        }
    })
    .unwrap_or_default()
}

/// Compiles an assignment; names (not IPs) are allowed only for DNS clusters.
pub fn compile_assignment(cla: &ClusterLoadAssignment, allow_names: bool) -> Result<EndpointSet, String> {
    if let Some(policy) = &cla.policy {
        let unsupported = [
            (!policy.drop_overloads.is_empty(), "drop_overloads"),
            (policy.endpoint_stale_after.is_some(), "endpoint_stale_after"),
            (policy.weighted_priority_health, "weighted_priority_health"),
        ];
        if let Some((_, field)) = unsupported.iter().find(|(set, _)| *set) {
            return Err(format!("load assignment policy.{field} is not supported"));
        }
    }
    if !cla.named_endpoints.is_empty() {
        return Err("load assignment named_endpoints are not supported".into());
    }
    let mut set = EndpointSet::default();
    if let Some(factor) = cla
        .policy
        .as_ref()
        .and_then(|p| p.overprovisioning_factor.as_ref())
    {
        if factor.value == 0 {
            return Err(
                "load assignment policy.overprovisioning_factor: value must be greater than 0".into(),
            );
        }
        set.overprovisioning_factor = factor.value;
    }
    for group in &cla.endpoints {
        if group.lb_config.is_some() {
            return Err("load_balancer_endpoints and leds_cluster_locality_config (LEDS) are not supported; use lb_endpoints".into());
        }
        let priority = usize::try_from(group.priority).map_err(|_| "priority out of range".to_string())?;
        if priority > 127 {
            return Err(format!("priority {priority} is above Envoy's maximum 127"));
        }
        if set.priorities.len() <= priority {
            set.priorities.resize_with(priority + 1, Vec::new);
        }
        let mut endpoints = Vec::with_capacity(group.lb_endpoints.len());
        for lb in &group.lb_endpoints {
            let endpoint = match &lb.host_identifier {
                Some(lb_endpoint::HostIdentifier::Endpoint(e)) => e,
                Some(lb_endpoint::HostIdentifier::EndpointName(n)) => {
                    return Err(format!("named endpoint {n:?} is not supported"));
                }
                None => return Err("an endpoint has no address".into()),
            };
            if !endpoint.additional_addresses.is_empty() {
                return Err("endpoint additional_addresses are not supported".into());
            }
            // Envoy's per-endpoint statistics name: Weir keeps no per-endpoint statistics
            // under any name, so one given would be a promise it does not keep.
            if !endpoint.observability_name.is_empty() {
                return Err("endpoint observability_name is not supported".into());
            }
            let address = endpoint.address.as_ref().ok_or("an endpoint has no address")?;
            let t = target(address)?;
            if matches!(t, Target::Name(..)) && !allow_names {
                return Err(format!(
                    "endpoint {t}: the address must be an IP (names are for DNS clusters)"
                ));
            }
            let weight = lb.load_balancing_weight.as_ref().map_or(1, |w| w.value);
            if weight == 0 {
                return Err(format!("endpoint {t}: load_balancing_weight must be at least 1"));
            }
            endpoints.push(EndpointSpec {
                target: t,
                weight,
                health: Health::from_status(lb.health_status),
            });
        }
        let weight = group.load_balancing_weight.as_ref().map_or(1, |w| w.value);
        if weight == 0 {
            return Err("locality load_balancing_weight must be at least 1".into());
        }
        set.priorities[priority].push(LocalityGroup {
            locality: locality_name(group.locality.as_ref()),
            weight,
            endpoints,
        });
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::endpoint::v3::cluster_load_assignment::Policy;
    use envoy_types::pb::google::protobuf::UInt32Value;

    fn with_factor(factor: Option<u32>) -> ClusterLoadAssignment {
        ClusterLoadAssignment {
            cluster_name: "c".into(),
            policy: Some(Policy {
                overprovisioning_factor: factor.map(|value| UInt32Value { value }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_overprovisioning_factor_is_read_and_zero_refused() {
        assert_eq!(
            compile_assignment(&with_factor(None), false).map(|s| s.overprovisioning_factor),
            Ok(140)
        );
        assert_eq!(
            compile_assignment(&with_factor(Some(100)), false).map(|s| s.overprovisioning_factor),
            Ok(100)
        );
        assert_eq!(
            compile_assignment(&with_factor(Some(0)), false),
            Err("load assignment policy.overprovisioning_factor: value must be greater than 0".into())
        );
    }
}

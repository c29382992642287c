//! Endpoints: a ClusterLoadAssignment per EDS cluster, grouped by locality, with load-balancing
//! weight, health status and the subset's label filter applied; the same for the inline
//! endpoints of DNS clusters.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{Address, HealthStatus, Locality, Metadata, Pipe, address};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint as EnvoyEndpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::google::protobuf::{Struct, Value, value};
use weir_api::types::{Labels, OrEmpty};
use weir_model::ProxyView;
use weir_model::registry::{Endpoint, EndpointAddress, Port, Service, TlsMode};
use weir_model::view::AppliedDestinationRule;

use super::Inputs;
use super::cluster::ClusterName;
use super::util::{socket, u32v};

/// The load assignment of an EDS cluster; `None` for clusters of other types.
pub fn load_assignment(inputs: &Inputs<'_>, view: &ProxyView, c: &Cluster) -> Option<ClusterLoadAssignment> {
    if c.cluster_discovery_type
        != Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        ))
    {
        return None;
    }
    load_assignment_by_name(inputs, view, &c.name)
}

/// The load assignment of the EDS cluster called `cluster_name` (the caller knows it is EDS).
pub fn load_assignment_by_name(
    inputs: &Inputs<'_>,
    view: &ProxyView,
    cluster_name: &str,
) -> Option<ClusterLoadAssignment> {
    let name = ClusterName::parse(cluster_name)?;
    let service = view.service(name.host)?;
    let port = service.ports.iter().find(|p| p.number == name.port)?;
    let rule = view.destination_rules.get(name.host);
    let target = Target {
        service,
        port,
        subset: name.subset,
        rule,
        cluster_name,
    };
    Some(assignment(inputs, &target, false, &view.proxy))
}

/// The endpoints of one cluster: a service port, a subset, the rule defining the subset.
pub struct Target<'a> {
    /// The service.
    pub service: &'a Service,
    /// The port.
    pub port: &'a Port,
    /// The subset ("" for all endpoints).
    pub subset: &'a str,
    /// The DestinationRule in force.
    pub rule: Option<&'a AppliedDestinationRule>,
    /// The cluster's name.
    pub cluster_name: &'a str,
}

/// The inline load assignment of a DNS cluster: endpoints are host names (or IPs) resolved by the
/// proxy. `None` when the service has no endpoints for the port (Istio drops such clusters).
pub fn dns_load_assignment(
    inputs: &Inputs<'_>,
    target: &Target<'_>,
    proxy: &weir_model::Proxy,
) -> Option<ClusterLoadAssignment> {
    let cla = assignment(inputs, target, true, proxy);
    (!cla.endpoints.is_empty()).then_some(cla)
}

fn subset_labels<'a>(rule: Option<&'a AppliedDestinationRule>, subset: &str) -> Option<&'a Labels> {
    if subset.is_empty() {
        return None;
    }
    rule.and_then(|r| r.subset(subset)).map(|s| s.labels.or_empty())
}

fn assignment(
    inputs: &Inputs<'_>,
    target: &Target<'_>,
    dns: bool,
    proxy: &weir_model::Proxy,
) -> ClusterLoadAssignment {
    let Target {
        service,
        port,
        subset,
        rule,
        cluster_name,
    } = *target;
    let labels = subset_labels(rule, subset);
    // A subset that names no subset of the rule selects nothing (Envoy would see an empty cluster).
    let unknown_subset = !subset.is_empty() && labels.is_none();
    let policy = super::cluster::Policy::of(rule, port.number, subset);
    // Grouped by failoverPriority priority (0 without it), then locality.
    let mut by_locality: BTreeMap<(u32, String), Vec<LbEndpoint>> = BTreeMap::new();
    let key = service.key();
    for e in inputs.registry.endpoints_for_port(&key, &port.name) {
        if unknown_subset || labels.is_some_and(|l| !l.iter().all(|(k, v)| e.labels.get(k) == Some(v))) {
            continue;
        }
        if !dns && matches!(e.address, EndpointAddress::Host(_)) {
            // A host name cannot be an EDS endpoint; DNS services use DNS clusters.
            continue;
        }
        let priority = super::locality::label_priority(&policy, proxy, e);
        by_locality
            .entry((priority, e.locality.clone().unwrap_or_default()))
            .or_default()
            .push(lb_endpoint(e));
    }
    let endpoints = by_locality
        .into_iter()
        .map(|((priority, locality), lb_endpoints)| {
            let weight: u32 = lb_endpoints
                .iter()
                .map(|e| e.load_balancing_weight.as_ref().map_or(1, |w| w.value))
                .fold(0u32, u32::saturating_add);
            let mut parts = locality.splitn(3, '/').map(str::to_string);
            LocalityLbEndpoints {
                // Always present, even empty: gRPC rejects a locality group without one.
                locality: Some(Locality {
                    region: parts.next().unwrap_or_default(),
                    zone: parts.next().unwrap_or_default(),
                    sub_zone: parts.next().unwrap_or_default(),
                }),
                lb_endpoints,
                load_balancing_weight: Some(u32v(weight.max(1))),
                priority,
                ..Default::default()
            }
        })
        .collect();
    let mut endpoints: Vec<LocalityLbEndpoints> = endpoints;
    super::locality::apply(&mut endpoints, &policy, proxy.locality.as_deref());
    ClusterLoadAssignment {
        cluster_name: cluster_name.to_string(),
        endpoints,
        ..Default::default()
    }
}

fn string(s: &str) -> Value {
    Value {
        kind: Some(value::Kind::StringValue(s.to_string())),
    }
}

fn lb_endpoint(e: &Endpoint) -> LbEndpoint {
    let address = match &e.address {
        EndpointAddress::Ip(ip) => socket(&ip.to_string(), e.port),
        EndpointAddress::Host(h) => socket(h, e.port),
        EndpointAddress::Unix(path) => Address {
            address: Some(address::Address::Pipe(Pipe {
                path: path.clone(),
                mode: 0,
            })),
        },
    };
    let mut metadata = Metadata::default();
    if e.tls_mode == TlsMode::Istio {
        metadata.filter_metadata.insert(
            "envoy.transport_socket_match".into(),
            Struct {
                fields: [("tlsMode".to_string(), string("istio"))].into_iter().collect(),
            },
        );
    }
    if let Some(w) = &e.workload {
        metadata.filter_metadata.insert(
            "istio".into(),
            Struct {
                fields: [(
                    "workload".to_string(),
                    string(&format!("{};{}", w.name, w.namespace)),
                )]
                .into_iter()
                .collect(),
            },
        );
    }
    LbEndpoint {
        health_status: if e.healthy {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unhealthy
        } as i32,
        metadata: (metadata != Metadata::default()).then_some(metadata),
        load_balancing_weight: Some(u32v(e.weight.max(1))),
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(EnvoyEndpoint {
            address: Some(address),
            ..Default::default()
        })),
    }
}

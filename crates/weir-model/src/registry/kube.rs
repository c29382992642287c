//! Kubernetes Services → services and endpoints (`pilot/pkg/serviceregistry/kube`).

use std::net::IpAddr;

use weir_api::Resource;
use weir_api::types::OrEmpty;
use weir_api::types::kube::{EndpointPort, IntOrString, KubeServicePort};

use super::workload::Workload;
use super::{
    Endpoint, EndpointAddress, Port, Protocol, RegistryKind, RegistryOptions, Resolution, Service,
    ServiceAddress,
};
use crate::store::{ConfigStore, ObjectKey, StoredObject};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Converts one Kubernetes Service; `workloads` are the workloads of its namespace.
pub fn convert_one<'w>(
    store: &ConfigStore,
    stored: &StoredObject,
    workloads: impl Iterator<Item = &'w Workload> + Clone,
    options: &RegistryOptions,
) -> Option<(Service, Vec<Endpoint>)> {
    {
        let Resource::Service(obj) = stored.resource.as_ref() else {
            return None;
        };
        let spec = obj.spec.clone().unwrap_or_default();
        let kube_ports = spec.ports.or_empty().to_vec();
        let ports: Vec<Port> = kube_ports
            .iter()
            .map(|p| {
                let name = p.name.clone().unwrap_or_default();
                Port {
                    protocol: Protocol::of_kubernetes_port(&name, p.app_protocol.as_deref()),
                    name,
                    number: p.port.and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
                    target_port: None,
                }
            })
            .collect();
        let external_name = (spec.r#type.as_deref() == Some("ExternalName"))
            .then(|| spec.external_name.clone().unwrap_or_default());
        let cluster_ip = spec.cluster_ip.clone().unwrap_or_default();
        let (resolution, address) = match (&external_name, cluster_ip.as_str()) {
            (Some(_), _) => (Resolution::DnsLb, None),
            (None, "None") => (Resolution::Passthrough, None),
            (None, ip) => (
                Resolution::ClientSideLb,
                ip.parse::<IpAddr>().ok().map(ServiceAddress::Ip),
            ),
        };
        let selector = spec.selector.clone().filter(|s| !s.is_empty());
        let service = Service {
            hostname: format!(
                "{}.{}.svc.{}",
                stored.key.name, stored.key.namespace, options.domain_suffix
            ),
            namespace: stored.key.namespace.clone(),
            registry: RegistryKind::Kubernetes,
            origin: stored.key.clone(),
            address,
            auto_address: None,
            ports,
            resolution,
            mesh_external: false,
            export_to: export_to(stored),
            labels: stored.labels().clone(),
            selector: selector.clone(),
            subject_alt_names: Vec::new(),
            creation_time: stored.creation_time,
            external_name: external_name.clone(),
        };
        let endpoints = match (&external_name, &selector) {
            (Some(name), _) => service
                .ports
                .iter()
                .map(|p| Endpoint::plain(EndpointAddress::Host(name.clone()), p.number, &p.name, true))
                .collect(),
            (None, Some(sel)) => selected_endpoints(&service, &kube_ports, sel, workloads),
            (None, None) => listed_endpoints(store, stored, &service, workloads),
        };
        Some((service, endpoints))
    }
}

/// `networking.istio.io/exportTo` annotation: a comma-separated list.
fn export_to(stored: &StoredObject) -> Vec<String> {
    stored
        .annotations()
        .get("networking.istio.io/exportTo")
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Pods and WorkloadEntries of the Service's namespace picked by its selector.
fn selected_endpoints<'w>(
    service: &Service,
    kube_ports: &[KubeServicePort],
    selector: &weir_api::types::Labels,
    workloads: impl Iterator<Item = &'w Workload>,
) -> Vec<Endpoint> {
    let mut out = Vec::new();
    let picked =
        workloads.filter(|w| w.namespace == service.namespace && !w.dns_only() && w.matches(selector));
    for w in picked {
        for (port, kube) in service.ports.iter().zip(kube_ports) {
            let target = match &kube.target_port {
                Some(IntOrString::Int(n)) if *n > 0 => u32::try_from(*n).ok(),
                Some(IntOrString::Str(name)) => match w.ports.get(name) {
                    Some(p) => Some(*p),
                    None => continue, // this workload does not expose the named port
                },
                _ => Some(port.number),
            };
            if let Some(target) = target {
                out.push(Endpoint::of_workload(
                    w,
                    EndpointAddress::parse(&w.address),
                    target,
                    &port.name,
                ));
            }
        }
    }
    out
}

/// The service port an endpoint port serves: same name, or the only one.
fn service_port_for<'a>(service: &'a Service, ep_port: &EndpointPort) -> Option<&'a Port> {
    let name = ep_port.name.as_deref().unwrap_or("");
    service
        .port_named(name)
        .or_else(|| (service.ports.len() == 1).then(|| &service.ports[0]))
}

/// Endpoints listed by `v1/Endpoints` and EndpointSlices (selector-less Services).
fn listed_endpoints<'w>(
    store: &ConfigStore,
    stored: &StoredObject,
    service: &Service,
    workloads: impl Iterator<Item = &'w Workload> + Clone,
) -> Vec<Endpoint> {
    let mut out = Vec::new();
    // The object an address names (`targetRef`), whether or not it is known yet: recording it
    // lets a later change of that Pod update this Service.
    let target_key = |target: Option<&weir_api::types::kube::ObjectReference>| {
        let t = target?;
        Some(ObjectKey::new(
            t.kind.clone()?,
            t.namespace.clone().unwrap_or_else(|| service.namespace.clone()),
            t.name.clone()?,
        ))
    };
    let find_workload = |key: Option<&ObjectKey>| key.and_then(|k| workloads.clone().find(|w| &w.key == k));
    let mut push = |address: EndpointAddress,
                    target: Option<&weir_api::types::kube::ObjectReference>,
                    ports: &[EndpointPort],
                    healthy: bool| {
        for ep_port in ports {
            let Some(port) = service_port_for(service, ep_port) else {
                continue;
            };
            let number = ep_port
                .port
                .and_then(|p| u32::try_from(p).ok())
                .unwrap_or(port.number);
            // The listed address and readiness win over the workload's own.
            let key = target_key(target);
            out.push(match find_workload(key.as_ref()) {
                Some(w) => Endpoint {
                    healthy,
                    ..Endpoint::of_workload(w, address.clone(), number, &port.name)
                },
                None => Endpoint {
                    workload: key,
                    ..Endpoint::plain(address.clone(), number, &port.name, healthy)
                },
            });
        }
    };
    let endpoints_key = ObjectKey::new("Endpoints", &stored.key.namespace, &stored.key.name);
    if let Some(Resource::Endpoints(eps)) = store.get(&endpoints_key).map(|o| o.resource.as_ref()) {
        for subset in &eps.subsets {
            let ports = subset.ports.or_empty();
            for (list, healthy) in [(&subset.addresses, true), (&subset.not_ready_addresses, false)] {
                for addr in list.or_empty() {
                    let ip = addr.ip.clone().unwrap_or_default();
                    push(
                        EndpointAddress::parse(&ip),
                        addr.target_ref.as_ref(),
                        ports,
                        healthy,
                    );
                }
            }
        }
    }
    for slice_obj in store
        .of_kind("EndpointSlice")
        .filter(|o| o.key.namespace == stored.key.namespace)
    {
        let Resource::EndpointSlice(slice) = slice_obj.resource.as_ref() else {
            continue;
        };
        if slice_obj.labels().get(SERVICE_NAME_LABEL) != Some(&stored.key.name) {
            continue;
        }
        for ep in &slice.endpoints {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            for a in ep.addresses.or_empty() {
                let address = if slice.address_type == "FQDN" {
                    EndpointAddress::Host(a.clone())
                } else {
                    EndpointAddress::parse(a)
                };
                push(address, ep.target_ref.as_ref(), &slice.ports, ready);
            }
        }
    }
    out
}

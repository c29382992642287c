//! ServiceEntry → services and endpoints (`pilot/pkg/serviceregistry/serviceentry/conversion.go`).

use std::net::IpAddr;

use weir_api::Resource;
use weir_api::types::OrEmpty;
use weir_api::types::networking::{self as net, Location};

use super::workload::{TlsMode, Workload};
use super::{Endpoint, EndpointAddress, Port, Protocol, RegistryKind, Resolution, Service, ServiceAddress};
use crate::store::StoredObject;

/// Label that opts a ServiceEntry out of address auto-allocation.
pub const AUTOALLOCATE_LABEL: &str = "networking.istio.io/enable-autoallocate-ip";

/// Converts one ServiceEntry; `workloads` are the workloads of its namespace.
pub fn convert_one<'w>(
    stored: &StoredObject,
    workloads: impl Iterator<Item = &'w Workload> + Clone,
) -> Vec<(Service, Vec<Endpoint>)> {
    let Resource::ServiceEntry(obj) = stored.resource.as_ref() else {
        return Vec::new();
    };
    let Some(spec) = &obj.spec else { return Vec::new() };
    convert(stored, spec, workloads)
}

fn resolution(r: net::Resolution) -> Resolution {
    match r {
        net::Resolution::None => Resolution::Passthrough,
        net::Resolution::Static => Resolution::ClientSideLb,
        net::Resolution::Dns => Resolution::DnsLb,
        net::Resolution::DnsRoundRobin => Resolution::DnsRoundRobinLb,
        net::Resolution::DynamicDns => Resolution::DynamicDns,
    }
}

/// `/32` and `/128` CIDRs are plain IPs.
fn service_address(address: &str) -> Option<ServiceAddress> {
    if let Some(ip) = address
        .strip_suffix("/32")
        .or_else(|| address.strip_suffix("/128"))
        && let Ok(ip) = ip.parse::<IpAddr>()
    {
        return Some(ServiceAddress::Ip(ip));
    }
    if address.contains('/') {
        return Some(ServiceAddress::Cidr(address.to_string()));
    }
    address.parse::<IpAddr>().ok().map(ServiceAddress::Ip)
}

fn convert<'w>(
    stored: &StoredObject,
    spec: &net::ServiceEntry,
    workloads: impl Iterator<Item = &'w Workload> + Clone,
) -> Vec<(Service, Vec<Endpoint>)> {
    let ports: Vec<Port> = spec
        .ports
        .or_empty()
        .iter()
        .map(|p| Port {
            name: p.name.clone().unwrap_or_default(),
            number: p.number.unwrap_or(0),
            protocol: Protocol::parse(p.protocol.as_deref().unwrap_or("")).unwrap_or(Protocol::Auto),
            target_port: p.target_port,
        })
        .collect();
    let resolution = resolution(spec.resolution());
    let base = Service {
        hostname: String::new(),
        namespace: stored.key.namespace.clone(),
        registry: RegistryKind::ServiceEntry,
        origin: stored.key.clone(),
        address: None,
        auto_address: None,
        ports,
        resolution,
        mesh_external: spec.location() == Location::MeshExternal,
        export_to: spec.export_to.or_empty().to_vec(),
        labels: stored.labels().clone(),
        selector: spec
            .workload_selector
            .as_ref()
            .map(|s| s.labels.or_empty().clone()),
        subject_alt_names: spec.subject_alt_names.or_empty().to_vec(),
        creation_time: stored.creation_time,
        external_name: None,
    };
    let addresses: Vec<Option<ServiceAddress>> = match spec.addresses.or_empty() {
        [] => vec![None],
        list => list.iter().map(|a| service_address(a)).collect(),
    };
    let mut out = Vec::new();
    for host in spec.hosts.or_empty() {
        for address in &addresses {
            let service = Service {
                hostname: host.clone(),
                address: address.clone(),
                ..base.clone()
            };
            let endpoints = endpoints(&service, spec, workloads.clone());
            out.push((service, endpoints));
        }
    }
    out
}

/// Endpoint port for one service port: unix (0) > the endpoint's named port > targetPort > number.
fn endpoint_port(address: &EndpointAddress, named: Option<u32>, port: &Port) -> u32 {
    if matches!(address, EndpointAddress::Unix(_)) {
        return 0;
    }
    named.or(port.target_port).unwrap_or(port.number)
}

fn endpoints<'w>(
    service: &Service,
    spec: &net::ServiceEntry,
    workloads: impl Iterator<Item = &'w Workload>,
) -> Vec<Endpoint> {
    let mut out = Vec::new();
    if let Some(list) = &spec.endpoints {
        for we in list {
            let address = EndpointAddress::parse(we.address.as_deref().unwrap_or(""));
            let sa = we.service_account.clone().filter(|s| !s.is_empty());
            let labels = we.labels.or_empty().clone();
            for port in &service.ports {
                let named = we.ports.as_ref().and_then(|p| p.get(&port.name)).copied();
                out.push(Endpoint {
                    port: endpoint_port(&address, named, port),
                    address: address.clone(),
                    service_port: port.name.clone(),
                    tls_mode: TlsMode::from_labels(&labels, sa.as_deref()),
                    labels: labels.clone(),
                    locality: we.locality.clone().filter(|l| !l.is_empty()),
                    network: we.network.clone().filter(|n| !n.is_empty()),
                    weight: we.weight.unwrap_or(0),
                    service_account: sa.clone(),
                    healthy: true,
                    workload: None,
                });
            }
        }
        return out;
    }
    if let Some(selector) = &service.selector {
        let dns = matches!(
            service.resolution,
            Resolution::DnsLb | Resolution::DnsRoundRobinLb
        );
        let selected = workloads
            .filter(|w| w.namespace == service.namespace && w.matches(selector) && (dns || !w.dns_only()));
        for w in selected {
            let address = EndpointAddress::parse(&w.address);
            for port in &service.ports {
                let number = endpoint_port(&address, w.ports.get(&port.name).copied(), port);
                out.push(Endpoint::of_workload(w, address.clone(), number, &port.name));
            }
        }
        return out;
    }
    // DNS without endpoints or selector: the host itself, once per port.
    if matches!(
        service.resolution,
        Resolution::DnsLb | Resolution::DnsRoundRobinLb
    ) && !service.hostname.starts_with('*')
    {
        for port in &service.ports {
            let address = EndpointAddress::Host(service.hostname.clone());
            out.push(Endpoint::plain(
                address,
                port.target_port.unwrap_or(port.number),
                &port.name,
                true,
            ));
        }
    }
    out
}

/// Whether a service gets an auto-allocated address (Istio's v2 allocator rules): a ServiceEntry
/// service without `addresses`, resolution other than NONE, not a wildcard host (unless
/// DYNAMIC_DNS), and not opted out with `networking.istio.io/enable-autoallocate-ip: "false"`.
pub fn wants_auto_address(s: &Service) -> bool {
    s.registry == RegistryKind::ServiceEntry
        && s.address.is_none()
        && s.resolution != Resolution::Passthrough
        && (!s.hostname.starts_with('*') || s.resolution == Resolution::DynamicDns)
        && s.labels.get(AUTOALLOCATE_LABEL).map(String::as_str) != Some("false")
}

//! The service registry: every service of the mesh, from Kubernetes Services and ServiceEntries,
//! with its endpoints (reference §4.1–4.3).
//!
//! - A ServiceEntry becomes one service per host (× address); a Kubernetes Service becomes
//!   `<name>.<namespace>.svc.<domain>`.
//! - Endpoints come from ServiceEntry `endpoints`, from WorkloadEntries and Pods picked by a
//!   selector (same namespace), from `v1/Endpoints` and EndpointSlices of selector-less Services,
//!   or, for DNS ServiceEntries without any, from the host name itself.
//! - Services with the same namespace and host merge their endpoints, oldest first;
//!   DNS_ROUND_ROBIN keeps one endpoint per port.
//! - ServiceEntries without addresses get one from the auto-allocation range
//!   ([`alloc::AddressAllocator`]).

pub mod alloc;
mod kube;
pub mod protocol;
mod service_entry;
pub mod workload;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::SystemTime;

use weir_api::types::Labels;

pub use protocol::Protocol;
pub use workload::{TlsMode, Workload};

use crate::store::{ConfigStore, ObjectKey};

/// The default DNS domain of Kubernetes Services.
pub const DEFAULT_DOMAIN_SUFFIX: &str = "cluster.local";

/// Which registry a service comes from. Kubernetes Services win host conflicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RegistryKind {
    /// A Kubernetes Service.
    Kubernetes,
    /// A ServiceEntry.
    ServiceEntry,
}

/// How a service's endpoints are found (Istio's model names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resolution {
    /// Forward to the original destination (SE `NONE`, headless Services).
    Passthrough,
    /// Endpoints are known and load-balanced by the client (SE `STATIC`, ClusterIP Services).
    ClientSideLb,
    /// Endpoints are resolved by DNS, all addresses used (SE `DNS`, ExternalName Services).
    DnsLb,
    /// Endpoints are resolved by DNS, one address per connection (SE `DNS_ROUND_ROBIN`).
    DnsRoundRobinLb,
    /// The request's host is resolved at request time (SE `DYNAMIC_DNS`).
    DynamicDns,
}

/// A service's address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceAddress {
    /// One IP (a `/32` or `/128` CIDR becomes a plain IP).
    Ip(IpAddr),
    /// A CIDR block.
    Cidr(String),
}

impl fmt::Display for ServiceAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceAddress::Ip(ip) => write!(f, "{ip}"),
            ServiceAddress::Cidr(c) => f.write_str(c),
        }
    }
}

/// A service port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Port {
    /// Name.
    pub name: String,
    /// Number.
    pub number: u32,
    /// Protocol.
    pub protocol: Protocol,
    /// Where endpoints listen when no endpoint says otherwise (SE `targetPort`).
    pub target_port: Option<u32>,
}

/// One service of the registry.
#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    /// Host name (FQDN, wildcard, or a ServiceEntry's literal host).
    pub hostname: String,
    /// Namespace of the defining object.
    pub namespace: String,
    /// Kubernetes or ServiceEntry.
    pub registry: RegistryKind,
    /// The Service or ServiceEntry defining it.
    pub origin: ObjectKey,
    /// Address given by the user (ServiceEntry `addresses`, Service cluster IP).
    pub address: Option<ServiceAddress>,
    /// Address allocated by Weir for a ServiceEntry without one.
    pub auto_address: Option<Ipv4Addr>,
    /// Ports.
    pub ports: Vec<Port>,
    /// Endpoint resolution.
    pub resolution: Resolution,
    /// Outside the mesh (ServiceEntry `MESH_EXTERNAL`).
    pub mesh_external: bool,
    /// `exportTo` as written (empty: the mesh default).
    pub export_to: Vec<String>,
    /// Labels of the defining object.
    pub labels: Labels,
    /// Workload selector (ServiceEntry `workloadSelector`, Service `selector`).
    pub selector: Option<Labels>,
    /// SANs to verify (ServiceEntry `subjectAltNames`).
    pub subject_alt_names: Vec<String>,
    /// Creation time of the defining object.
    pub creation_time: SystemTime,
    /// The DNS name of an ExternalName Service.
    pub external_name: Option<String>,
}

impl Service {
    /// The key of this service: namespace and host.
    pub fn key(&self) -> ServiceKey {
        ServiceKey {
            namespace: self.namespace.clone(),
            hostname: self.hostname.clone(),
        }
    }

    /// The port named `name`.
    pub fn port_named(&self, name: &str) -> Option<&Port> {
        self.ports.iter().find(|p| p.name == name)
    }
}

/// Namespace and host: services with the same key merge their endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// Namespace.
    pub namespace: String,
    /// Host.
    pub hostname: String,
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.hostname)
    }
}

/// Where an endpoint is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndpointAddress {
    /// An IP.
    Ip(IpAddr),
    /// A DNS name (DNS resolution).
    Host(String),
    /// A unix socket path (`/path` or `@abstract`).
    Unix(String),
}

impl EndpointAddress {
    /// Reads an address as written in a WorkloadEntry.
    pub fn parse(address: &str) -> EndpointAddress {
        if let Some(path) = address.strip_prefix("unix://") {
            return EndpointAddress::Unix(path.to_string());
        }
        match address.parse::<IpAddr>() {
            Ok(ip) => EndpointAddress::Ip(ip),
            Err(_) => EndpointAddress::Host(address.to_string()),
        }
    }
}

impl fmt::Display for EndpointAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointAddress::Ip(ip) => write!(f, "{ip}"),
            EndpointAddress::Host(h) => f.write_str(h),
            EndpointAddress::Unix(p) => write!(f, "unix://{p}"),
        }
    }
}

/// One endpoint of one service port.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    /// Address.
    pub address: EndpointAddress,
    /// Port the endpoint listens on (0 for unix sockets).
    pub port: u32,
    /// The service port (by name) this endpoint serves.
    pub service_port: String,
    /// Labels (subsets select on them).
    pub labels: Labels,
    /// `region/zone/subzone`.
    pub locality: Option<String>,
    /// Network.
    pub network: Option<String>,
    /// Load-balancing weight (0 = unset).
    pub weight: u32,
    /// Service account.
    pub service_account: Option<String>,
    /// TLS mode.
    pub tls_mode: TlsMode,
    /// Ready to receive traffic.
    pub healthy: bool,
    /// The WorkloadEntry or Pod behind it, if any.
    pub workload: Option<ObjectKey>,
}

/// Registry settings.
#[derive(Clone, Debug)]
pub struct RegistryOptions {
    /// DNS domain of Kubernetes Services (`cluster.local`).
    pub domain_suffix: String,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            domain_suffix: DEFAULT_DOMAIN_SUFFIX.into(),
        }
    }
}

/// The services and endpoints of the mesh.
#[derive(Clone, Debug, Default)]
pub struct ServiceRegistry {
    services: Vec<Arc<Service>>,
    endpoints: BTreeMap<ServiceKey, Vec<Endpoint>>,
}

impl ServiceRegistry {
    /// Builds the registry from the store. `allocator` assigns addresses to ServiceEntries
    /// without any; its assignments persist between builds, so they never move.
    pub fn build(
        store: &ConfigStore,
        options: &RegistryOptions,
        allocator: &mut alloc::AddressAllocator,
    ) -> Self {
        let workloads = workload::workloads(store);
        let mut converted: Vec<(Service, Vec<Endpoint>)> = Vec::new();
        converted.extend(service_entry::convert_all(store, &workloads));
        converted.extend(kube::convert_all(store, &workloads, options));

        // Allocate addresses (oldest first) for ServiceEntry services that qualify.
        let reserved = converted.iter().filter_map(|(s, _)| match s.address {
            Some(ServiceAddress::Ip(IpAddr::V4(ip))) => Some(ip),
            _ => None,
        });
        let reserved: std::collections::BTreeSet<Ipv4Addr> = reserved.collect();
        let wanted: Vec<(ServiceKey, SystemTime)> = converted
            .iter()
            .filter(|(s, _)| service_entry::wants_auto_address(s))
            .map(|(s, _)| (s.key(), s.creation_time))
            .collect();
        let assigned = allocator.allocate(&wanted, &reserved);
        for (service, _) in &mut converted {
            if service_entry::wants_auto_address(service) {
                service.auto_address = assigned.get(&service.key()).copied();
            }
        }

        // Oldest first; ties by registry (Kubernetes first), then origin.
        converted.sort_by(|(a, _), (b, _)| {
            (&a.namespace, &a.hostname, a.creation_time, a.registry, &a.origin).cmp(&(
                &b.namespace,
                &b.hostname,
                b.creation_time,
                b.registry,
                &b.origin,
            ))
        });
        let mut endpoints: BTreeMap<ServiceKey, Vec<Endpoint>> = BTreeMap::new();
        let mut services = Vec::with_capacity(converted.len());
        for (service, eps) in converted {
            let merged = endpoints.entry(service.key()).or_default();
            if service.resolution == Resolution::DnsRoundRobinLb {
                // "Only one locality lb end point is allowed for DnsRoundRobinLB services."
                for ep in eps {
                    if !merged.iter().any(|m| m.service_port == ep.service_port) {
                        merged.push(ep);
                    }
                }
            } else {
                merged.extend(eps);
            }
            services.push(Arc::new(service));
        }
        ServiceRegistry { services, endpoints }
    }

    /// Every service, ordered by namespace, host and age.
    pub fn services(&self) -> &[Arc<Service>] {
        &self.services
    }

    /// The services with `hostname`, in any namespace, oldest first.
    pub fn services_for_host<'a>(&'a self, hostname: &'a str) -> impl Iterator<Item = &'a Arc<Service>> + 'a {
        self.services.iter().filter(move |s| s.hostname == hostname)
    }

    /// The service with `key` (the oldest when several objects define it).
    pub fn service(&self, key: &ServiceKey) -> Option<&Arc<Service>> {
        self.services
            .iter()
            .find(|s| s.namespace == key.namespace && s.hostname == key.hostname)
    }

    /// The merged endpoints of a namespace/host.
    pub fn endpoints(&self, key: &ServiceKey) -> &[Endpoint] {
        self.endpoints.get(key).map_or(&[], Vec::as_slice)
    }

    /// The endpoints of one port of a namespace/host.
    pub fn endpoints_for_port<'a>(
        &'a self,
        key: &ServiceKey,
        port_name: &'a str,
    ) -> impl Iterator<Item = &'a Endpoint> + 'a {
        self.endpoints(key)
            .iter()
            .filter(move |e| e.service_port == port_name)
    }
}

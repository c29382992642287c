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

use std::collections::{BTreeMap, BTreeSet};
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
    /// The WorkloadEntry or Pod behind it, if any. For an address listed by `v1/Endpoints` or an
    /// EndpointSlice, the object its `targetRef` names, even before that object is known.
    pub workload: Option<ObjectKey>,
}

impl Endpoint {
    /// An endpoint with no workload behind it (a host name, an address from `v1/Endpoints`).
    pub fn plain(address: EndpointAddress, port: u32, service_port: &str, healthy: bool) -> Endpoint {
        Endpoint {
            address,
            port,
            service_port: service_port.to_string(),
            labels: Labels::new(),
            locality: None,
            network: None,
            weight: 0,
            service_account: None,
            tls_mode: TlsMode::Disabled,
            healthy,
            workload: None,
        }
    }

    /// An endpoint of a WorkloadEntry or Pod, carrying its labels, locality and identity.
    pub fn of_workload(w: &Workload, address: EndpointAddress, port: u32, service_port: &str) -> Endpoint {
        Endpoint {
            address,
            port,
            service_port: service_port.to_string(),
            labels: w.labels.clone(),
            locality: w.locality.clone(),
            network: w.network.clone(),
            weight: w.weight,
            service_account: w.service_account.clone(),
            tls_mode: w.tls_mode,
            healthy: w.healthy,
            workload: Some(w.key.clone()),
        }
    }
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

/// What an update changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistryDelta {
    /// Hosts whose services were added, removed or changed (ports, addresses, resolution, …).
    pub services: BTreeSet<ServiceKey>,
    /// Hosts whose services are unchanged but whose endpoints changed (EDS-only).
    pub endpoints: BTreeSet<ServiceKey>,
}

impl RegistryDelta {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.endpoints.is_empty()
    }
}

/// The services and endpoints of the mesh, kept up to date change by change: an update
/// reconverts only the objects a change touches (a ServiceEntry, a Service, or the ones whose
/// selector picks a changed workload) and re-merges only the hosts they define.
#[derive(Clone, Debug)]
pub struct ServiceRegistry {
    options: RegistryOptions,
    allocator: alloc::AddressAllocator,
    /// Workloads by namespace.
    workloads: BTreeMap<String, BTreeMap<ObjectKey, Workload>>,
    /// What each ServiceEntry or Service converts to (before address allocation).
    converted: BTreeMap<ObjectKey, Vec<(Service, Vec<Endpoint>)>>,
    /// The objects defining each namespace/host.
    contributors: BTreeMap<ServiceKey, BTreeSet<ObjectKey>>,
    /// The Service each EndpointSlice belongs to.
    slice_owner: BTreeMap<ObjectKey, String>,
    /// User-given IPv4 addresses, counted (they are never allocated).
    reserved: BTreeMap<Ipv4Addr, usize>,
    /// Services by namespace/host, oldest first within a host.
    services: BTreeMap<ServiceKey, Vec<Arc<Service>>>,
    /// Merged endpoints by namespace/host.
    endpoints: BTreeMap<ServiceKey, Vec<Endpoint>>,
}

impl ServiceRegistry {
    /// An empty registry.
    pub fn new(options: RegistryOptions, allocator: alloc::AddressAllocator) -> Self {
        ServiceRegistry {
            options,
            allocator,
            workloads: BTreeMap::new(),
            converted: BTreeMap::new(),
            contributors: BTreeMap::new(),
            slice_owner: BTreeMap::new(),
            reserved: BTreeMap::new(),
            services: BTreeMap::new(),
            endpoints: BTreeMap::new(),
        }
    }

    /// Builds the registry from everything in the store. `allocator` carries address
    /// assignments in and out, so that they never move between builds.
    pub fn build(
        store: &ConfigStore,
        options: &RegistryOptions,
        allocator: &mut alloc::AddressAllocator,
    ) -> Self {
        let mut registry = ServiceRegistry::new(options.clone(), allocator.clone());
        let all: Vec<crate::store::Change> = store
            .objects()
            .map(|o| crate::store::Change::Added(o.key.clone()))
            .collect();
        registry.update(store, &all);
        *allocator = registry.allocator.clone();
        registry
    }

    /// The allocator, for saving its assignments.
    pub fn allocator(&self) -> &alloc::AddressAllocator {
        &self.allocator
    }

    /// Applies store changes; returns the hosts whose services or endpoints changed.
    pub fn update(&mut self, store: &ConfigStore, changes: &[crate::store::Change]) -> RegistryDelta {
        use crate::store::Change;
        let mut dirty: BTreeSet<ObjectKey> = BTreeSet::new();
        for change in changes {
            let key = match change {
                Change::Added(k) | Change::Updated(k) | Change::Deleted(k) => k,
                Change::MeshConfig => continue,
            };
            match key.kind.as_str() {
                "ServiceEntry" | "Service" => {
                    dirty.insert(key.clone());
                }
                "WorkloadEntry" | "Pod" => {
                    let ns = self.workloads.entry(key.namespace.clone()).or_default();
                    let old = ns.remove(key);
                    let new = store.get(key).and_then(workload::from_object);
                    if let Some(w) = &new {
                        ns.insert(key.clone(), w.clone());
                    }
                    for w in old.iter().chain(new.iter()) {
                        dirty.extend(self.origins_using(key, &w.labels));
                    }
                }
                "Endpoints" => {
                    dirty.insert(ObjectKey::new("Service", &key.namespace, &key.name));
                }
                "EndpointSlice" => {
                    let old = self.slice_owner.remove(key);
                    let new = store
                        .get(key)
                        .and_then(|o| o.labels().get(kube::SERVICE_NAME_LABEL).cloned());
                    for name in old.iter().chain(new.iter()) {
                        dirty.insert(ObjectKey::new("Service", &key.namespace, name));
                    }
                    if let Some(name) = new {
                        self.slice_owner.insert(key.clone(), name);
                    }
                }
                _ => {}
            }
        }
        let mut affected: BTreeSet<ServiceKey> = BTreeSet::new();
        for origin in dirty {
            self.reconvert(store, &origin, &mut affected);
        }
        self.remerge(affected)
    }

    /// ServiceEntries and Services of the workload's namespace that use it: their selector matches
    /// `labels`, or one of their endpoints (from `v1/Endpoints` or an EndpointSlice) refers to it.
    fn origins_using(&self, workload: &ObjectKey, labels: &Labels) -> Vec<ObjectKey> {
        let namespace = workload.namespace.as_str();
        let mut out = Vec::new();
        for kind in ["ServiceEntry", "Service"] {
            let start = ObjectKey::new(kind, namespace, "");
            for (origin, conversions) in self.converted.range(start..) {
                if origin.kind != kind || origin.namespace != namespace {
                    break;
                }
                let selects = conversions.iter().any(|(s, eps)| {
                    s.selector
                        .as_ref()
                        .is_some_and(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
                        || eps.iter().any(|e| e.workload.as_ref() == Some(workload))
                });
                if selects {
                    out.push(origin.clone());
                }
            }
        }
        out
    }

    fn reconvert(&mut self, store: &ConfigStore, origin: &ObjectKey, affected: &mut BTreeSet<ServiceKey>) {
        let old = self.converted.remove(origin).unwrap_or_default();
        let empty = BTreeMap::new();
        let workloads = self.workloads.get(&origin.namespace).unwrap_or(&empty).values();
        let new: Vec<(Service, Vec<Endpoint>)> = match store.get(origin) {
            Some(stored) if origin.kind == "ServiceEntry" => service_entry::convert_one(stored, workloads),
            Some(stored) => kube::convert_one(store, stored, workloads, &self.options)
                .into_iter()
                .collect(),
            None => Vec::new(),
        };
        for (s, _) in &old {
            affected.insert(s.key());
            if let Some(set) = self.contributors.get_mut(&s.key()) {
                set.remove(origin);
            }
            if let Some(ServiceAddress::Ip(IpAddr::V4(ip))) = s.address
                && let Some(count) = self.reserved.get_mut(&ip)
            {
                *count -= 1;
                if *count == 0 {
                    self.reserved.remove(&ip);
                }
            }
        }
        for (s, _) in &new {
            affected.insert(s.key());
            self.contributors
                .entry(s.key())
                .or_default()
                .insert(origin.clone());
            if let Some(ServiceAddress::Ip(IpAddr::V4(ip))) = s.address {
                *self.reserved.entry(ip).or_default() += 1;
                // A user address now claims an allocated one: its holder moves.
                if let Some(holder) = self.allocator.holder(ip) {
                    affected.insert(holder.clone());
                }
            }
        }
        if !new.is_empty() {
            self.converted.insert(origin.clone(), new);
        }
    }

    fn remerge(&mut self, affected: BTreeSet<ServiceKey>) -> RegistryDelta {
        let mut delta = RegistryDelta::default();
        // Gather each host's definitions, oldest first; allocate for hosts oldest first.
        let mut merged: Vec<(ServiceKey, Vec<Service>, Vec<Vec<Endpoint>>)> = Vec::new();
        for key in affected {
            let origins = self.contributors.get(&key).cloned().unwrap_or_default();
            let mut defs: Vec<(Service, Vec<Endpoint>)> = origins
                .iter()
                .filter_map(|o| self.converted.get(o))
                .flatten()
                .filter(|(s, _)| s.key() == key)
                .cloned()
                .collect();
            defs.sort_by(|(a, _), (b, _)| {
                (a.creation_time, a.registry, &a.origin).cmp(&(b.creation_time, b.registry, &b.origin))
            });
            let (services, endpoints): (Vec<Service>, Vec<Vec<Endpoint>>) = defs.into_iter().unzip();
            merged.push((key, services, endpoints));
        }
        merged.sort_by(|a, b| {
            let age =
                |m: &(ServiceKey, Vec<Service>, Vec<Vec<Endpoint>>)| m.1.first().map(|s| s.creation_time);
            (age(a), &a.0).cmp(&(age(b), &b.0))
        });
        for (key, mut services, endpoint_lists) in merged {
            let wants = services.iter().any(service_entry::wants_auto_address);
            let address = if wants {
                let reserved = &self.reserved;
                self.allocator.assign(&key, &|ip| reserved.contains_key(&ip))
            } else {
                self.allocator.release(&key);
                None
            };
            for s in services
                .iter_mut()
                .filter(|s| service_entry::wants_auto_address(s))
            {
                s.auto_address = address;
            }
            let mut endpoints: Vec<Endpoint> = Vec::new();
            for (service, eps) in services.iter().zip(endpoint_lists) {
                if service.resolution == Resolution::DnsRoundRobinLb {
                    // "Only one locality lb end point is allowed for DnsRoundRobinLB services."
                    for ep in eps {
                        if !endpoints.iter().any(|m| m.service_port == ep.service_port) {
                            endpoints.push(ep);
                        }
                    }
                } else {
                    endpoints.extend(eps);
                }
            }
            let old_services = self
                .services
                .get(&key)
                .map(|v| v.iter().map(|s| s.as_ref().clone()).collect::<Vec<_>>())
                .unwrap_or_default();
            let old_endpoints = self.endpoints.get(&key).cloned().unwrap_or_default();
            if old_services != services {
                delta.services.insert(key.clone());
            } else if old_endpoints != endpoints {
                delta.endpoints.insert(key.clone());
            }
            if services.is_empty() {
                self.services.remove(&key);
                self.endpoints.remove(&key);
                self.contributors.remove(&key);
            } else {
                self.services
                    .insert(key.clone(), services.into_iter().map(Arc::new).collect());
                self.endpoints.insert(key, endpoints);
            }
        }
        delta
    }

    /// Every service, ordered by namespace, host and age.
    pub fn services(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.services.values().flatten()
    }

    /// Number of services.
    pub fn len(&self) -> usize {
        self.services.values().map(Vec::len).sum()
    }

    /// Whether there are no services.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// The services with `hostname`, in any namespace, oldest first within a namespace.
    pub fn services_for_host<'a>(&'a self, hostname: &'a str) -> impl Iterator<Item = &'a Arc<Service>> + 'a {
        self.services().filter(move |s| s.hostname == hostname)
    }

    /// The service with `key` (the oldest when several objects define it).
    pub fn service(&self, key: &ServiceKey) -> Option<&Arc<Service>> {
        self.services.get(key).and_then(|v| v.first())
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

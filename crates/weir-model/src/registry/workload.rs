//! Workload instances: WorkloadEntries and Pods, which ServiceEntry and Service selectors pick.

use std::collections::BTreeMap;

use weir_api::Resource;
use weir_api::types::{Labels, OrEmpty};

use crate::store::{ConfigStore, ObjectKey, StoredObject};

/// Label that carries a workload's TLS mode (`istio` when it has a sidecar).
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

/// Whether a workload accepts Istio mutual TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlsMode {
    /// The workload has a proxy that accepts Istio mTLS.
    Istio,
    /// Plain traffic.
    Disabled,
}

impl TlsMode {
    /// Istio's rule: the `security.istio.io/tlsMode` label, else `istio` when a service account
    /// is set, else disabled.
    pub fn from_labels(labels: &Labels, service_account: Option<&str>) -> TlsMode {
        match labels.get(TLS_MODE_LABEL).map(String::as_str) {
            Some("istio") => TlsMode::Istio,
            Some(_) => TlsMode::Disabled,
            None if service_account.is_some_and(|s| !s.is_empty()) => TlsMode::Istio,
            None => TlsMode::Disabled,
        }
    }
}

/// One workload a selector can pick.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// The WorkloadEntry or Pod.
    pub key: ObjectKey,
    /// Its namespace.
    pub namespace: String,
    /// IP, host name, or `unix://` path.
    pub address: String,
    /// Labels (for a WorkloadEntry, metadata labels over spec labels).
    pub labels: Labels,
    /// Named ports (WorkloadEntry `ports`, Pod container ports).
    pub ports: BTreeMap<String, u32>,
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
}

impl Workload {
    /// Host-name and unix-socket workloads can only back DNS ServiceEntries.
    pub fn dns_only(&self) -> bool {
        self.address.starts_with("unix://") || self.address.parse::<std::net::IpAddr>().is_err()
    }

    /// Whether `selector` (all its labels) matches this workload.
    pub fn matches(&self, selector: &Labels) -> bool {
        selector.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }
}

/// The topology labels Istio reads locality from when a workload does not set it.
const REGION_LABEL: &str = "topology.kubernetes.io/region";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
const SUBZONE_LABEL: &str = "topology.istio.io/subzone";

fn locality_from_labels(labels: &Labels) -> Option<String> {
    let region = labels.get(REGION_LABEL)?;
    let mut locality = region.clone();
    if let Some(zone) = labels.get(ZONE_LABEL) {
        locality.push('/');
        locality.push_str(zone);
        if let Some(sub) = labels.get(SUBZONE_LABEL) {
            locality.push('/');
            locality.push_str(sub);
        }
    }
    Some(locality)
}

/// Every WorkloadEntry and Pod of the store, in key order.
pub fn workloads(store: &ConfigStore) -> Vec<Workload> {
    store
        .of_kind("WorkloadEntry")
        .chain(store.of_kind("Pod"))
        .filter_map(from_object)
        .collect()
}

/// The workload of a WorkloadEntry, or of a Pod that has an IP.
pub fn from_object(stored: &StoredObject) -> Option<Workload> {
    match stored.resource.as_ref() {
        Resource::WorkloadEntry(obj) => {
            let spec = obj.spec.as_ref()?;
            let mut labels = spec.labels.or_empty().clone();
            labels.extend(obj.metadata.labels.or_empty().clone());
            let sa = spec.service_account.clone().filter(|s| !s.is_empty());
            Some(Workload {
                key: stored.key.clone(),
                namespace: stored.key.namespace.clone(),
                address: spec.address.clone().unwrap_or_default(),
                tls_mode: TlsMode::from_labels(&labels, sa.as_deref()),
                locality: spec
                    .locality
                    .clone()
                    .filter(|l| !l.is_empty())
                    .or_else(|| locality_from_labels(&labels)),
                labels,
                ports: spec.ports.clone().unwrap_or_default(),
                network: spec.network.clone().filter(|n| !n.is_empty()),
                weight: spec.weight.unwrap_or(0),
                service_account: sa,
                // Istio: a WorkloadEntry under health checks takes traffic only while its
                // probe says it is healthy.
                healthy: !stored.health_checked() || stored.health == Some(true),
            })
        }
        Resource::Pod(pod) => {
            let status = pod.status.clone().unwrap_or_default();
            let ip = status.pod_ip.clone().filter(|ip| !ip.is_empty())?;
            let spec = pod.spec.clone().unwrap_or_default();
            let labels = pod.metadata.labels.or_empty().clone();
            let mut ports = BTreeMap::new();
            for container in spec.containers.or_empty() {
                for p in container.ports.or_empty() {
                    if let (Some(name), Some(port)) = (
                        p.name.clone(),
                        p.container_port.and_then(|p| u32::try_from(p).ok()),
                    ) {
                        ports.insert(name, port);
                    }
                }
            }
            let ready = status
                .conditions
                .or_empty()
                .iter()
                .find(|c| c.r#type.as_deref() == Some("Ready"))
                .is_none_or(|c| c.status.as_deref() == Some("True"));
            let running = status.phase.as_deref().is_none_or(|p| p == "Running");
            let sa = spec
                .service_account_name
                .clone()
                .or(spec.service_account.clone())
                .filter(|s| !s.is_empty());
            Some(Workload {
                key: stored.key.clone(),
                namespace: stored.key.namespace.clone(),
                address: ip,
                tls_mode: TlsMode::from_labels(&labels, None),
                locality: locality_from_labels(&labels),
                labels,
                ports,
                network: None,
                weight: 0,
                service_account: sa.or_else(|| Some("default".into())),
                healthy: ready && running,
            })
        }
        _ => None,
    }
}

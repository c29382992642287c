//! The control plane's model: the config store, the registry built from it and the mesh
//! defaults, updated change by change, with what each change means for the proxies.

use std::collections::BTreeSet;

use weir_api::types::mesh::MeshDefaults;
use weir_model::registry::alloc::AddressAllocator;
use weir_model::registry::{RegistryOptions, Resolution};
use weir_model::{Change, ConfigStore, Proxy, ProxyView, ServiceRegistry};

use crate::generator::{self, Inputs, Resources};

/// Kinds whose changes only move endpoints (when no service changed with them).
const ENDPOINT_KINDS: [&str; 4] = ["WorkloadEntry", "Pod", "Endpoints", "EndpointSlice"];

/// The store, the registry and the mesh defaults.
pub struct Model {
    /// Every accepted object.
    pub store: ConfigStore,
    /// Services and endpoints.
    pub registry: ServiceRegistry,
    /// MeshConfig with defaults.
    pub mesh: MeshDefaults,
    /// Registry settings (domain suffix).
    pub options: RegistryOptions,
}

/// What one applied batch of changes means for proxies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeSummary {
    /// Only endpoints of EDS services moved: proxies need new EDS for these hosts only.
    pub endpoints_only: bool,
    /// Hosts whose endpoints changed.
    pub endpoint_hosts: BTreeSet<String>,
    /// Kinds of the objects that changed (`MeshConfig` for the mesh config).
    pub kinds: BTreeSet<String>,
}

impl ChangeSummary {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty() && self.endpoint_hosts.is_empty()
    }
}

impl Model {
    /// Builds the registry of `store`.
    pub fn new(store: ConfigStore, mut allocator: AddressAllocator, options: RegistryOptions) -> Model {
        let registry = ServiceRegistry::build(&store, &options, &mut allocator);
        let mesh = store.mesh_defaults();
        Model {
            store,
            registry,
            mesh,
            options,
        }
    }

    /// What the generators read.
    pub fn inputs(&self) -> Inputs<'_> {
        Inputs {
            store: &self.store,
            registry: &self.registry,
            mesh: &self.mesh,
            domain_suffix: &self.options.domain_suffix,
        }
    }

    /// The view of `proxy`.
    pub fn view(&self, proxy: &Proxy) -> ProxyView {
        ProxyView::build(
            &self.store,
            &self.registry,
            &self.mesh,
            &self.options.domain_suffix,
            proxy,
        )
    }

    /// The view of `proxy` and everything generated for it.
    pub fn generate(&self, proxy: &Proxy) -> (ProxyView, Resources) {
        let view = self.view(proxy);
        let resources = generator::generate(&self.inputs(), &view);
        (view, resources)
    }

    /// Updates the registry after `changes` were applied to the store.
    pub fn apply(&mut self, changes: &[Change]) -> ChangeSummary {
        let delta = self.registry.update(&self.store, changes);
        let mut kinds: BTreeSet<String> = BTreeSet::new();
        for c in changes {
            match c {
                Change::Added(k) | Change::Updated(k) | Change::Deleted(k) => {
                    kinds.insert(k.kind.clone());
                }
                Change::MeshConfig => {
                    kinds.insert("MeshConfig".into());
                    self.mesh = self.store.mesh_defaults();
                }
            }
        }
        let endpoint_hosts: BTreeSet<String> = delta.endpoints.iter().map(|k| k.hostname.clone()).collect();
        // DNS services carry their endpoints in CDS, so their moves are full changes.
        let dns = delta.endpoints.iter().any(|k| {
            self.registry
                .service(k)
                .is_some_and(|s| matches!(s.resolution, Resolution::DnsLb | Resolution::DnsRoundRobinLb))
        });
        let endpoints_only = delta.services.is_empty()
            && !dns
            && !kinds.is_empty()
            && kinds.iter().all(|k| ENDPOINT_KINDS.contains(&k.as_str()));
        ChangeSummary {
            endpoints_only,
            endpoint_hosts,
            kinds,
        }
    }
}

//! The compiled resources a proxy holds, and how an xDS update changes them: every resource of
//! the update is compiled; those that compile are applied whole, those that do not keep their
//! previous version and are reported (the update is NACKed with their errors). Endpoint updates
//! only swap host sets; routes and listeners are not recompiled for them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use prost::Message;
use weir_xds::client::{HeldResource, Pending};
use weir_xds::generator::{CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE};

use crate::cluster::ClusterConfig;
use crate::endpoints::{EndpointSet, compile_assignment};
use crate::listener::ListenerConfig;
use crate::routes::CompiledRoutes;
use crate::state::Snapshot;
use crate::upstream::ClusterRuntime;

/// Everything compiled so far.
#[derive(Debug, Default)]
pub struct Resources {
    listeners: BTreeMap<String, (String, Arc<ListenerConfig>)>,
    routes: HashMap<String, (String, Arc<CompiledRoutes>)>,
    clusters: HashMap<String, Arc<ClusterRuntime>>,
    endpoints: HashMap<String, (String, EndpointSet)>,
}

/// The outcome of applying an update.
#[derive(Debug)]
pub struct Applied {
    /// The part of the update that was applied.
    pub accepted: Pending,
    /// One line per rejected resource.
    pub errors: Vec<String>,
}

/// A resource compiled but not applied yet.
enum Compiled {
    Listener(Arc<ListenerConfig>),
    Route(Arc<CompiledRoutes>),
    Cluster(Box<ClusterConfig>),
    Endpoints(EndpointSet),
}

fn compile_one(type_url: &str, name: &str, body: &[u8]) -> Result<Compiled, String> {
    let decode_error = |e: prost::DecodeError| format!("{name:?} does not decode: {e}");
    match type_url {
        LISTENER_TYPE => {
            let l = Listener::decode(body).map_err(decode_error)?;
            Ok(Compiled::Listener(Arc::new(
                ListenerConfig::compile(&l).map_err(|e| e.to_string())?,
            )))
        }
        ROUTE_TYPE => {
            let r = RouteConfiguration::decode(body).map_err(decode_error)?;
            Ok(Compiled::Route(Arc::new(
                CompiledRoutes::compile(&r).map_err(|e| e.to_string())?,
            )))
        }
        CLUSTER_TYPE => {
            let c = Cluster::decode(body).map_err(decode_error)?;
            Ok(Compiled::Cluster(Box::new(
                ClusterConfig::compile(&c).map_err(|e| e.to_string())?,
            )))
        }
        ENDPOINT_TYPE => {
            let a = ClusterLoadAssignment::decode(body).map_err(decode_error)?;
            Ok(Compiled::Endpoints(
                compile_assignment(&a, false).map_err(|e| format!("endpoints {name:?}: {e}"))?,
            ))
        }
        other => Err(format!("resource type {other} is not supported")),
    }
}

/// Compiles resources without applying them (what the control plane can run before a push):
/// the errors, one per resource that would be NACKed.
pub fn check(type_url: &str, resources: &BTreeMap<String, HeldResource>) -> Vec<String> {
    resources
        .iter()
        .filter_map(|(name, r)| compile_one(type_url, name, &r.body.value).err())
        .collect()
}

/// What Weir's proxy would refuse of generated resources (one line per resource, naming it and
/// saying why) — what `weir config-dump` warns about before anything is pushed. Resources are
/// compiled, not started: nothing resolves or binds.
pub fn refusals(r: &weir_xds::generator::Resources) -> Vec<String> {
    let mut out = Vec::new();
    out.extend(
        r.listeners
            .values()
            .filter_map(|l| ListenerConfig::compile(l).err().map(|e| e.to_string())),
    );
    out.extend(
        r.clusters
            .values()
            .filter_map(|c| ClusterConfig::compile(c).err().map(|e| e.to_string())),
    );
    out.extend(
        r.routes
            .values()
            .filter_map(|rc| CompiledRoutes::compile(rc).err().map(|e| e.to_string())),
    );
    out.extend(r.endpoints.iter().filter_map(|(name, cla)| {
        compile_assignment(cla, false)
            .err()
            .map(|e| format!("endpoints {name:?}: {e}"))
    }));
    out
}

/// How many resources of each type compile (for reports).
pub fn compiled_counts(r: &weir_xds::generator::Resources) -> [(&'static str, usize); 4] {
    [
        (
            "listeners",
            r.listeners
                .values()
                .filter(|l| ListenerConfig::compile(l).is_ok())
                .count(),
        ),
        (
            "clusters",
            r.clusters
                .values()
                .filter(|c| ClusterConfig::compile(c).is_ok())
                .count(),
        ),
        (
            "routes",
            r.routes
                .values()
                .filter(|rc| CompiledRoutes::compile(rc).is_ok())
                .count(),
        ),
        (
            "endpoints",
            r.endpoints
                .values()
                .filter(|e| compile_assignment(e, false).is_ok())
                .count(),
        ),
    ]
}

impl Resources {
    /// Applies an update (needs a Tokio runtime: clusters start their DNS resolution).
    pub fn apply(&mut self, pending: &Pending) -> Applied {
        let mut accepted = Pending {
            type_url: pending.type_url.clone(),
            nonce: pending.nonce.clone(),
            version: pending.version.clone(),
            updated: BTreeMap::new(),
            removed: pending.removed.clone(),
        };
        let mut errors = Vec::new();
        for name in &pending.removed {
            match pending.type_url.as_str() {
                LISTENER_TYPE => {
                    self.listeners.remove(name);
                }
                ROUTE_TYPE => {
                    self.routes.remove(name);
                }
                CLUSTER_TYPE => {
                    self.clusters.remove(name);
                }
                ENDPOINT_TYPE => {
                    self.endpoints.remove(name);
                    self.set_cluster_endpoints(name, &EndpointSet::default());
                }
                _ => {}
            }
        }
        for (name, resource) in &pending.updated {
            if self.unchanged(&pending.type_url, name, &resource.version) {
                accepted.updated.insert(name.clone(), resource.clone());
                continue;
            }
            match compile_one(&pending.type_url, name, &resource.body.value) {
                Err(e) => errors.push(e),
                Ok(compiled) => {
                    let version = resource.version.clone();
                    match compiled {
                        Compiled::Listener(l) => {
                            self.listeners.insert(name.clone(), (version, l));
                        }
                        Compiled::Route(r) => {
                            self.routes.insert(name.clone(), (version, r));
                        }
                        Compiled::Cluster(c) => {
                            let runtime = ClusterRuntime::start(*c, version);
                            if let Some(eds) = runtime.config.eds_name()
                                && let Some((_, set)) = self.endpoints.get(eds)
                            {
                                runtime.set_endpoints(set);
                            }
                            self.clusters.insert(name.clone(), runtime);
                        }
                        Compiled::Endpoints(set) => {
                            self.set_cluster_endpoints(name, &set);
                            self.endpoints.insert(name.clone(), (version, set));
                        }
                    }
                    accepted.updated.insert(name.clone(), resource.clone());
                }
            }
        }
        Applied { accepted, errors }
    }

    fn unchanged(&self, type_url: &str, name: &str, version: &str) -> bool {
        if version.is_empty() {
            return false;
        }
        match type_url {
            LISTENER_TYPE => self.listeners.get(name).is_some_and(|(v, _)| v == version),
            ROUTE_TYPE => self.routes.get(name).is_some_and(|(v, _)| v == version),
            CLUSTER_TYPE => self.clusters.get(name).is_some_and(|c| c.version == version),
            ENDPOINT_TYPE => self.endpoints.get(name).is_some_and(|(v, _)| v == version),
            _ => false,
        }
    }

    fn set_cluster_endpoints(&self, eds_name: &str, set: &EndpointSet) {
        for c in self.clusters.values() {
            if c.config.eds_name() == Some(eds_name) {
                c.set_endpoints(set);
            }
        }
    }

    /// Adds static listeners and clusters (a bootstrap's `static_resources`).
    pub fn add_static(&mut self, listeners: Vec<ListenerConfig>, clusters: Vec<ClusterConfig>) {
        for l in listeners {
            self.listeners
                .insert(l.name.clone(), ("static".into(), Arc::new(l)));
        }
        for c in clusters {
            self.clusters
                .insert(c.name.clone(), ClusterRuntime::start(c, "static".into()));
        }
    }

    /// The configuration to install.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::new(
            self.listeners
                .iter()
                .map(|(n, (_, l))| (n.clone(), l.clone()))
                .collect(),
            self.routes
                .iter()
                .map(|(n, (_, r))| (n.clone(), r.clone()))
                .collect(),
            self.clusters.clone(),
        )
    }

    /// The EDS names the clusters need.
    pub fn eds_names(&self) -> BTreeSet<String> {
        self.clusters
            .values()
            .filter_map(|c| c.config.eds_name().map(str::to_string))
            .collect()
    }

    /// The route configurations the listeners need from RDS.
    pub fn rds_names(&self) -> BTreeSet<String> {
        self.listeners
            .values()
            .flat_map(|(_, l)| l.rds_names().map(str::to_string).collect::<Vec<_>>())
            .collect()
    }
}

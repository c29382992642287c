//! Generators: pure functions from a proxy's view to Envoy v3 resources (reference §4.4–4.5).
//!
//! Structure and names follow Istio so that `istioctl proxy-config` users recognise them:
//! clusters `outbound|<port>|<subset>|<host>`, listeners `<bind>_<port>`, route configurations
//! `"<port>"`, `PassthroughCluster`, `BlackHoleCluster`, `allow_any`, `block_all`.
//!
//! - [`cluster`]: outbound, inbound and the static clusters, with DestinationRule policies.
//! - [`endpoint`]: ClusterLoadAssignments for EDS clusters (and DNS clusters' inline endpoints).
//! - [`listener`]: sidecar outbound listeners, `virtualOutbound`, `virtualInbound`.
//! - [`route`]: VirtualService HTTP routes as Envoy routes; default and catch-all virtual hosts.
//! - [`gateway`]: listeners and routes of a router (gateway) proxy.
//! - [`grpc`]: the `host:port` API listeners a proxyless gRPC client asks for.

pub mod cluster;
pub mod endpoint;
pub mod gateway;
pub mod grpc;
pub mod listener;
pub mod locality;
pub mod route;
mod tls;
mod util;

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use prost::{Message, Name};
use weir_api::types::mesh::MeshDefaults;
use weir_model::{ConfigStore, ProxyKind, ProxyView, ServiceRegistry};

/// Type URL of clusters (CDS).
pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// Type URL of endpoints (EDS).
pub const ENDPOINT_TYPE: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
/// Type URL of listeners (LDS).
pub const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// Type URL of route configurations (RDS).
pub const ROUTE_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

/// The four resource types, in the order a client should apply them (CDS, EDS, LDS, RDS).
pub const TYPE_URLS: [&str; 4] = [CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE];

/// What every generator reads besides the view.
#[derive(Clone, Copy)]
pub struct Inputs<'a> {
    /// Every accepted object.
    pub store: &'a ConfigStore,
    /// Services and endpoints.
    pub registry: &'a ServiceRegistry,
    /// MeshConfig with defaults.
    pub mesh: &'a MeshDefaults,
    /// DNS suffix of Kubernetes services.
    pub domain_suffix: &'a str,
}

/// The resources generated for one proxy, by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resources {
    /// Clusters (CDS). Boxed: a `Cluster` is large, and sorting thousands by name moved them
    /// around more than generating them cost.
    pub clusters: BTreeMap<String, Box<Cluster>>,
    /// Cluster load assignments (EDS), by cluster name.
    pub endpoints: BTreeMap<String, ClusterLoadAssignment>,
    /// Listeners (LDS).
    pub listeners: BTreeMap<String, Listener>,
    /// Route configurations (RDS).
    pub routes: BTreeMap<String, RouteConfiguration>,
    /// Configuration that could not be honoured, in words for an operator (a Gateway server
    /// whose certificate is missing, a TLS mode Weir cannot originate yet). Not sent to proxies.
    pub problems: Vec<String>,
}

/// One resource ready to send: its encoded bytes and a version derived from them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// The encoded message (shared: copies of a set cost no bytes).
    pub bytes: std::sync::Arc<[u8]>,
    /// A hash of the bytes (stable across processes, so a reconnecting delta client's versions
    /// still mean something).
    pub version: String,
}

impl Encoded {
    /// Encodes a message.
    pub fn of<M: Message>(message: &M) -> Encoded {
        Encoded::of_bytes(&message.encode_to_vec())
    }

    /// Wraps encoded bytes. The version is their XXH3 hash: fast, and the same in every process.
    pub fn of_bytes(bytes: &[u8]) -> Encoded {
        let version = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(bytes));
        Encoded {
            bytes: bytes.into(),
            version,
        }
    }
}

/// Encoded resources of one type, by name.
pub type EncodedSet = BTreeMap<String, Encoded>;

fn encode_all<M: Message>(map: &BTreeMap<String, M>) -> EncodedSet {
    map.iter().map(|(k, v)| (k.clone(), Encoded::of(v))).collect()
}

impl Resources {
    /// The resources of one type, encoded, by name (`None` for a type URL not generated here).
    pub fn encoded(&self, type_url: &str) -> Option<EncodedSet> {
        Some(match type_url {
            CLUSTER_TYPE => encode_all(&self.clusters),
            ENDPOINT_TYPE => encode_all(&self.endpoints),
            LISTENER_TYPE => encode_all(&self.listeners),
            ROUTE_TYPE => encode_all(&self.routes),
            _ => return None,
        })
    }

    /// Every type's resources, encoded, by type URL.
    pub fn encoded_all(&self) -> BTreeMap<&'static str, EncodedSet> {
        TYPE_URLS
            .iter()
            .map(|t| (*t, self.encoded(t).unwrap_or_default()))
            .collect()
    }

    /// Every resource as `(type URL, name, Envoy-style JSON)`, clusters first.
    pub fn to_json(&self) -> Result<Vec<(&'static str, String, serde_json::Value)>, crate::json::JsonError> {
        fn each<'m, M: Message + Name + 'm>(
            out: &mut Vec<(&'static str, String, serde_json::Value)>,
            type_url: &'static str,
            map: impl Iterator<Item = (&'m String, &'m M)>,
        ) -> Result<(), crate::json::JsonError> {
            for (name, message) in map {
                let mut json = crate::json::to_json(message)?;
                if let serde_json::Value::Object(o) = json {
                    let mut typed = serde_json::Map::new();
                    typed.insert("@type".into(), serde_json::Value::String(M::type_url()));
                    typed.extend(o);
                    json = serde_json::Value::Object(typed);
                }
                out.push((type_url, name.clone(), json));
            }
            Ok(())
        }
        let mut out = Vec::new();
        each(
            &mut out,
            CLUSTER_TYPE,
            self.clusters.iter().map(|(k, v)| (k, v.as_ref())),
        )?;
        each(&mut out, ENDPOINT_TYPE, self.endpoints.iter())?;
        each(&mut out, LISTENER_TYPE, self.listeners.iter())?;
        each(&mut out, ROUTE_TYPE, self.routes.iter())?;
        Ok(out)
    }
}

/// Generates everything `view` calls for.
pub fn generate(inputs: &Inputs<'_>, view: &ProxyView) -> Resources {
    let mut out = Resources::default();
    let clusters = cluster::clusters(inputs, view, &mut out.problems);
    for c in &clusters {
        if let Some(cla) = endpoint::load_assignment(inputs, view, c) {
            out.endpoints.insert(c.name.clone(), cla);
        }
    }
    out.clusters = clusters
        .into_iter()
        .map(|c| (c.name.clone(), Box::new(c)))
        .collect();
    let (listeners, routes) = match view.proxy.kind {
        ProxyKind::Sidecar => (
            listener::sidecar_listeners(inputs, view),
            route::sidecar_routes(inputs, view),
        ),
        ProxyKind::Router => gateway::gateway_listeners_and_routes(inputs, view, &mut out.problems),
        ProxyKind::Proxyless => (grpc::listeners(inputs, view), grpc::routes(inputs, view)),
    };
    out.listeners = listeners.into_iter().map(|l| (l.name.clone(), l)).collect();
    out.routes = routes.into_iter().map(|r| (r.name.clone(), r)).collect();
    out
}

/// Regenerates only the load assignments among `eds_clusters` whose host is in `hosts` (an
/// endpoint-only change): `None` for one that no longer resolves.
pub fn regenerate_endpoints<'n>(
    inputs: &Inputs<'_>,
    view: &ProxyView,
    eds_clusters: impl Iterator<Item = &'n String>,
    hosts: &std::collections::BTreeSet<String>,
) -> BTreeMap<String, Option<ClusterLoadAssignment>> {
    eds_clusters
        .filter(|name| cluster::ClusterName::parse(name).is_some_and(|n| hosts.contains(n.host)))
        .map(|name| {
            (
                name.clone(),
                endpoint::load_assignment_by_name(inputs, view, name),
            )
        })
        .collect()
}

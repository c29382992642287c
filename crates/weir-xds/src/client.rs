//! The client side of ADS (what a proxy runs), as state machines without I/O.
//!
//! [`DeltaClient`] speaks the incremental protocol, [`SotwClient`] the state of the world for
//! servers without delta. Both turn each response into a [`Pending`] update that the caller
//! checks and compiles, then either [`DeltaClient::ack`]s — the update becomes the held
//! configuration — or [`DeltaClient::nack`]s with a reason — the previous configuration stays, so
//! nothing is ever half-applied. On (re)connect, [`DeltaClient::on_connect`] re-sends every
//! subscription with the versions held, so a server that already sent them sends nothing again;
//! the held configuration keeps serving while the control plane is away. [`Backoff`] spaces the
//! reconnects.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status;
use prost::Message;

use crate::generator::{CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE};

/// A response the client cannot even stage (it is NACKed with this text).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClientError {
    /// A response for a type nobody subscribed to.
    #[error("response for {0}, which this client did not subscribe to")]
    NotSubscribed(String),
    /// A resource whose `Any` holds another type than the response's.
    #[error("resource {name:?} is a {found} in a response of {expected}")]
    WrongType {
        /// The resource.
        name: String,
        /// Its type.
        found: String,
        /// The response's type.
        expected: String,
    },
    /// A resource without a body or a name.
    #[error("a resource in a {0} response has no name or no body")]
    Incomplete(String),
    /// A state-of-the-world resource that does not decode (its name cannot be read).
    #[error("a {type_url} resource does not decode: {reason}")]
    Undecodable {
        /// The type.
        type_url: String,
        /// The decoder's message.
        reason: String,
    },
}

/// One held (or incoming) resource.
#[derive(Clone, Debug, PartialEq)]
pub struct HeldResource {
    /// Its version.
    pub version: String,
    /// The resource.
    pub body: Any,
}

/// A response staged for checking: apply it with `ack`, or keep the previous configuration with
/// `nack`.
#[derive(Clone, Debug, PartialEq)]
pub struct Pending {
    /// The resource type.
    pub type_url: String,
    /// The response's nonce.
    pub nonce: String,
    /// The response's version (SotW `version_info`, delta `system_version_info`).
    pub version: String,
    /// New or changed resources by name (SotW: every resource of the response).
    pub updated: BTreeMap<String, HeldResource>,
    /// Resources to drop (delta: `removed_resources`; SotW: held ones the response left out).
    pub removed: BTreeSet<String>,
}

#[derive(Clone, Debug, Default)]
struct Subscription {
    wildcard: bool,
    names: BTreeSet<String>,
    held: BTreeMap<String, HeldResource>,
    /// A response of this type has been applied (readiness).
    applied: bool,
    /// SotW: the version and nonce of the last applied (or answered) response.
    version: String,
    nonce: String,
}

impl Subscription {
    fn new(names: &[String]) -> Self {
        Subscription {
            wildcard: names.is_empty(),
            names: names.iter().cloned().collect(),
            ..Subscription::default()
        }
    }

    fn named(mut self, named: bool) -> Self {
        self.wildcard = !named;
        self
    }

    fn apply(&mut self, pending: Pending) {
        for name in &pending.removed {
            self.held.remove(name);
        }
        self.held.extend(pending.updated);
        self.applied = true;
    }
}

fn nack_status(reason: &str) -> Option<Status> {
    Some(Status {
        code: 3, // INVALID_ARGUMENT, as Envoy sends
        message: reason.to_string(),
        ..Default::default()
    })
}

/// The incremental (delta) ADS client.
#[derive(Clone, Debug)]
pub struct DeltaClient {
    node: Node,
    types: BTreeMap<String, Subscription>,
    node_sent: bool,
}

impl DeltaClient {
    /// A client identifying as `node`.
    pub fn new(node: Node) -> Self {
        DeltaClient {
            node,
            types: BTreeMap::new(),
            node_sent: false,
        }
    }

    fn node_once(&mut self) -> Option<Node> {
        (!std::mem::replace(&mut self.node_sent, true)).then(|| self.node.clone())
    }

    /// Subscribes to `names` of a type (none: everything, the wildcard); returns the request.
    pub fn subscribe(&mut self, type_url: &str, names: &[String]) -> DeltaDiscoveryRequest {
        let node = self.node_once();
        // A first subscription with names is not a wildcard; the names are added below so
        // that they are all sent.
        let sub = self
            .types
            .entry(type_url.to_string())
            .or_insert_with(|| Subscription::new(&[]).named(!names.is_empty()));
        let new_names: Vec<String> = names
            .iter()
            .filter(|n| sub.names.insert((*n).clone()))
            .cloned()
            .collect();
        DeltaDiscoveryRequest {
            node,
            type_url: type_url.to_string(),
            resource_names_subscribe: new_names,
            ..Default::default()
        }
    }

    /// Drops `names` of a type; what was held of them is forgotten.
    pub fn unsubscribe(&mut self, type_url: &str, names: &[String]) -> DeltaDiscoveryRequest {
        let node = self.node_once();
        if let Some(sub) = self.types.get_mut(type_url) {
            for n in names {
                sub.names.remove(n);
                sub.held.remove(n);
            }
        }
        DeltaDiscoveryRequest {
            node,
            type_url: type_url.to_string(),
            resource_names_unsubscribe: names.to_vec(),
            ..Default::default()
        }
    }

    /// The requests that open a new stream: every subscription, with the versions held.
    pub fn on_connect(&mut self) -> Vec<DeltaDiscoveryRequest> {
        self.node_sent = false;
        let types: Vec<(String, Subscription)> =
            self.types.iter().map(|(t, s)| (t.clone(), s.clone())).collect();
        types
            .into_iter()
            .map(|(type_url, sub)| DeltaDiscoveryRequest {
                node: self.node_once(),
                type_url,
                resource_names_subscribe: if sub.wildcard {
                    let mut all = vec!["*".to_string()];
                    all.extend(sub.names.iter().cloned());
                    all
                } else {
                    sub.names.iter().cloned().collect()
                },
                initial_resource_versions: sub
                    .held
                    .iter()
                    .map(|(n, r)| (n.clone(), r.version.clone()))
                    .collect(),
                ..Default::default()
            })
            .collect()
    }

    /// Stages a response.
    pub fn on_response(&self, r: &DeltaDiscoveryResponse) -> Result<Pending, ClientError> {
        if !self.types.contains_key(&r.type_url) {
            return Err(ClientError::NotSubscribed(r.type_url.clone()));
        }
        let mut updated = BTreeMap::new();
        for resource in &r.resources {
            let Some(body) = resource.resource.clone().filter(|_| !resource.name.is_empty()) else {
                return Err(ClientError::Incomplete(r.type_url.clone()));
            };
            if body.type_url != r.type_url {
                return Err(ClientError::WrongType {
                    name: resource.name.clone(),
                    found: body.type_url,
                    expected: r.type_url.clone(),
                });
            }
            updated.insert(
                resource.name.clone(),
                HeldResource {
                    version: resource.version.clone(),
                    body,
                },
            );
        }
        Ok(Pending {
            type_url: r.type_url.clone(),
            nonce: r.nonce.clone(),
            version: r.system_version_info.clone(),
            updated,
            removed: r.removed_resources.iter().cloned().collect(),
        })
    }

    /// Applies a staged response and acknowledges it.
    pub fn ack(&mut self, pending: Pending) -> DeltaDiscoveryRequest {
        let request = DeltaDiscoveryRequest {
            node: self.node_once(),
            type_url: pending.type_url.clone(),
            response_nonce: pending.nonce.clone(),
            ..Default::default()
        };
        if let Some(sub) = self.types.get_mut(&pending.type_url) {
            sub.apply(pending);
        }
        request
    }

    /// Applies the part of a staged response that could be honoured (`accepted`, a subset of
    /// it) and rejects the response with `reason`, as Envoy does for listeners and clusters:
    /// each resource is applied whole or not at all, the rejected ones keep their previous
    /// version (and are sent again after a reconnect, since their versions did not change).
    pub fn partial(&mut self, accepted: Pending, reason: &str) -> DeltaDiscoveryRequest {
        let request = self.nack(&accepted, reason);
        if let Some(sub) = self.types.get_mut(&accepted.type_url) {
            sub.apply(accepted);
        }
        request
    }

    /// Whether a response of this type has been applied (ACKed, or partly applied).
    pub fn applied(&self, type_url: &str) -> bool {
        self.types.get(type_url).is_some_and(|s| s.applied)
    }

    /// The names subscribed to for a type (empty for none or the wildcard alone).
    pub fn subscribed(&self, type_url: &str) -> BTreeSet<String> {
        self.types
            .get(type_url)
            .map(|s| s.names.clone())
            .unwrap_or_default()
    }

    /// Rejects a staged response: the held configuration stays.
    pub fn nack(&mut self, pending: &Pending, reason: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            node: self.node_once(),
            type_url: pending.type_url.clone(),
            response_nonce: pending.nonce.clone(),
            error_detail: nack_status(reason),
            ..Default::default()
        }
    }

    /// The resources held for a type.
    pub fn held(&self, type_url: &str) -> Option<&BTreeMap<String, HeldResource>> {
        self.types.get(type_url).map(|s| &s.held)
    }

    /// Whether every subscribed type has had a response applied: the proxy may report ready.
    pub fn is_ready(&self) -> bool {
        !self.types.is_empty() && self.types.values().all(|s| s.applied)
    }
}

/// The name of a state-of-the-world resource, read from its body.
fn resource_name(type_url: &str, body: &[u8]) -> Result<String, ClientError> {
    let undecodable = |e: prost::DecodeError| ClientError::Undecodable {
        type_url: type_url.to_string(),
        reason: e.to_string(),
    };
    Ok(match type_url {
        CLUSTER_TYPE => Cluster::decode(body).map_err(undecodable)?.name,
        LISTENER_TYPE => Listener::decode(body).map_err(undecodable)?.name,
        ROUTE_TYPE => RouteConfiguration::decode(body).map_err(undecodable)?.name,
        ENDPOINT_TYPE => {
            ClusterLoadAssignment::decode(body)
                .map_err(undecodable)?
                .cluster_name
        }
        other => return Err(ClientError::NotSubscribed(other.to_string())),
    })
}

/// The state-of-the-world ADS client.
#[derive(Clone, Debug)]
pub struct SotwClient {
    node: Node,
    types: BTreeMap<String, Subscription>,
    node_sent: bool,
}

impl SotwClient {
    /// A client identifying as `node`.
    pub fn new(node: Node) -> Self {
        SotwClient {
            node,
            types: BTreeMap::new(),
            node_sent: false,
        }
    }

    fn request(&mut self, type_url: &str) -> DiscoveryRequest {
        let node = (!std::mem::replace(&mut self.node_sent, true)).then(|| self.node.clone());
        let sub = self.types.get(type_url).cloned().unwrap_or_default();
        DiscoveryRequest {
            node,
            type_url: type_url.to_string(),
            version_info: sub.version,
            response_nonce: sub.nonce,
            resource_names: sub.names.into_iter().collect(),
            ..Default::default()
        }
    }

    /// Subscribes to (adds) `names` of a type (none: everything); returns the request.
    pub fn subscribe(&mut self, type_url: &str, names: &[String]) -> DiscoveryRequest {
        let sub = self
            .types
            .entry(type_url.to_string())
            .or_insert_with(|| Subscription::new(names));
        sub.names.extend(names.iter().cloned());
        self.request(type_url)
    }

    /// The requests that open a new stream: every subscription, with the version held.
    pub fn on_connect(&mut self) -> Vec<DiscoveryRequest> {
        self.node_sent = false;
        let types: Vec<String> = self.types.keys().cloned().collect();
        types
            .iter()
            .map(|t| {
                if let Some(sub) = self.types.get_mut(t) {
                    sub.nonce.clear();
                }
                self.request(t)
            })
            .collect()
    }

    /// Stages a response: its resources are the complete set for the subscription.
    pub fn on_response(&self, r: &DiscoveryResponse) -> Result<Pending, ClientError> {
        let sub = self
            .types
            .get(&r.type_url)
            .ok_or_else(|| ClientError::NotSubscribed(r.type_url.clone()))?;
        let mut updated = BTreeMap::new();
        for body in &r.resources {
            if body.type_url != r.type_url {
                return Err(ClientError::WrongType {
                    name: String::new(),
                    found: body.type_url.clone(),
                    expected: r.type_url.clone(),
                });
            }
            let name = resource_name(&r.type_url, &body.value)?;
            updated.insert(
                name,
                HeldResource {
                    version: r.version_info.clone(),
                    body: body.clone(),
                },
            );
        }
        let removed = sub
            .held
            .keys()
            .filter(|n| !updated.contains_key(*n))
            .cloned()
            .collect();
        Ok(Pending {
            type_url: r.type_url.clone(),
            nonce: r.nonce.clone(),
            version: r.version_info.clone(),
            updated,
            removed,
        })
    }

    /// Applies a staged response and acknowledges it.
    pub fn ack(&mut self, pending: Pending) -> DiscoveryRequest {
        if let Some(sub) = self.types.get_mut(&pending.type_url) {
            sub.version = pending.version.clone();
            sub.nonce = pending.nonce.clone();
            let type_url = pending.type_url.clone();
            sub.apply(pending);
            return self.request(&type_url);
        }
        self.request(&pending.type_url)
    }

    /// Replaces the names of a named subscription (state-of-the-world requests always carry
    /// the whole list); what is held of names dropped is forgotten.
    pub fn set_names(&mut self, type_url: &str, names: &[String]) -> DiscoveryRequest {
        let sub = self
            .types
            .entry(type_url.to_string())
            .or_insert_with(|| Subscription::new(&[]).named(true));
        sub.wildcard = false;
        sub.names = names.iter().cloned().collect();
        let keep = sub.names.clone();
        sub.held.retain(|n, _| keep.contains(n));
        self.request(type_url)
    }

    /// The names subscribed to for a type (empty for none or the wildcard).
    pub fn subscribed(&self, type_url: &str) -> BTreeSet<String> {
        self.types
            .get(type_url)
            .map(|s| s.names.clone())
            .unwrap_or_default()
    }

    /// Whether a response of this type has been applied.
    pub fn applied(&self, type_url: &str) -> bool {
        self.types.get(type_url).is_some_and(|s| s.applied)
    }

    /// Applies what could be honoured of a response (`accepted`) and rejects it with `reason`:
    /// the version stays the previous one, so the server knows the response was not taken
    /// whole.
    pub fn partial(&mut self, accepted: Pending, reason: &str) -> DiscoveryRequest {
        let request = self.nack(&accepted, reason);
        if let Some(sub) = self.types.get_mut(&accepted.type_url) {
            sub.apply(accepted);
        }
        request
    }

    /// Rejects a staged response: the held configuration and its version stay.
    pub fn nack(&mut self, pending: &Pending, reason: &str) -> DiscoveryRequest {
        if let Some(sub) = self.types.get_mut(&pending.type_url) {
            sub.nonce = pending.nonce.clone();
        }
        DiscoveryRequest {
            error_detail: nack_status(reason),
            ..self.request(&pending.type_url)
        }
    }

    /// The resources held for a type.
    pub fn held(&self, type_url: &str) -> Option<&BTreeMap<String, HeldResource>> {
        self.types.get(type_url).map(|s| &s.held)
    }

    /// Whether every subscribed type has had a response applied.
    pub fn is_ready(&self) -> bool {
        !self.types.is_empty() && self.types.values().all(|s| s.applied)
    }
}

/// Exponential backoff with full jitter between reconnects (Envoy's defaults: 500 ms base, 30 s
/// cap). The caller supplies the randomness, so the sequence is testable.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(500), Duration::from_secs(30))
    }
}

impl Backoff {
    /// Backoff from `base`, doubling per failed attempt, never above `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            attempt: 0,
        }
    }

    /// The wait before the next attempt; `random` is uniform in `[0, 1)`.
    pub fn next(&mut self, random: f64) -> Duration {
        let ceiling = self
            .base
            .checked_mul(1u32.checked_shl(self.attempt).unwrap_or(u32::MAX))
            .unwrap_or(self.max)
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        ceiling.mul_f64(random.clamp(0.0, 1.0))
    }

    /// After a successful connection.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::service::discovery::v3::Resource;

    use super::*;

    fn node() -> Node {
        Node {
            id: "sidecar~10.0.0.1~a.default~default.svc.cluster.local".into(),
            ..Default::default()
        }
    }

    fn cluster(name: &str) -> Any {
        Any {
            type_url: CLUSTER_TYPE.into(),
            value: Cluster {
                name: name.into(),
                ..Default::default()
            }
            .encode_to_vec(),
        }
    }

    fn delta_response(nonce: &str, updated: &[(&str, &str)], removed: &[&str]) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse {
            type_url: CLUSTER_TYPE.into(),
            nonce: nonce.into(),
            resources: updated
                .iter()
                .map(|(n, v)| Resource {
                    name: (*n).into(),
                    version: (*v).into(),
                    resource: Some(cluster(n)),
                    ..Default::default()
                })
                .collect(),
            removed_resources: removed.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn named_subscriptions_send_their_names_and_partial_applies_what_was_accepted() {
        let mut c = DeltaClient::new(node());
        let first = c.subscribe(CLUSTER_TYPE, &["a".into(), "b".into()]);
        assert_eq!(
            first.resource_names_subscribe,
            vec!["a".to_string(), "b".to_string()]
        );
        let more = c.subscribe(CLUSTER_TYPE, &["b".into(), "c".into()]);
        assert_eq!(more.resource_names_subscribe, vec!["c".to_string()]);
        assert_eq!(c.subscribed(CLUSTER_TYPE).len(), 3);
        let reconnect = c.on_connect();
        assert_eq!(
            reconnect[0].resource_names_subscribe.len(),
            3,
            "no wildcard for named subscriptions"
        );
        let mut p = c
            .on_response(&delta_response("1", &[("a", "v1"), ("b", "v1")], &[]))
            .unwrap();
        p.updated.remove("b");
        let nack = c.partial(p, "b is bad");
        assert!(nack.error_detail.is_some());
        let held = c.held(CLUSTER_TYPE).unwrap();
        assert!(held.contains_key("a") && !held.contains_key("b"));
    }

    #[test]
    fn delta_applies_on_ack_keeps_on_nack_and_resumes_with_versions() {
        let mut c = DeltaClient::new(node());
        let first = c.subscribe(CLUSTER_TYPE, &[]);
        assert!(first.node.is_some(), "the first request identifies the node");
        assert!(!c.is_ready());
        let p = c
            .on_response(&delta_response("1", &[("a", "v1"), ("b", "v1")], &[]))
            .unwrap();
        let ack = c.ack(p);
        assert_eq!(
            (
                ack.response_nonce.as_str(),
                ack.error_detail.is_none(),
                ack.node.is_none()
            ),
            ("1", true, true)
        );
        assert!(c.is_ready());

        // A rejected update changes nothing.
        let bad = c
            .on_response(&delta_response("2", &[("a", "v2")], &["b"]))
            .unwrap();
        let nack = c.nack(&bad, "cluster a: unsupported lb policy");
        assert_eq!(
            nack.error_detail.unwrap().message,
            "cluster a: unsupported lb policy"
        );
        let held = c.held(CLUSTER_TYPE).unwrap();
        assert_eq!(held["a"].version, "v1");
        assert!(held.contains_key("b"));

        // Reconnecting: the wildcard and the versions held, so nothing is re-sent needlessly.
        let again = c.on_connect();
        assert_eq!(again.len(), 1);
        assert!(again[0].node.is_some());
        assert_eq!(again[0].resource_names_subscribe, vec!["*".to_string()]);
        assert_eq!(
            again[0].initial_resource_versions.get("a").map(String::as_str),
            Some("v1")
        );

        let removal = c.on_response(&delta_response("3", &[], &["b"])).unwrap();
        c.ack(removal);
        assert!(!c.held(CLUSTER_TYPE).unwrap().contains_key("b"));
    }

    #[test]
    fn delta_rejects_what_it_cannot_stage() {
        let mut c = DeltaClient::new(node());
        let mut r = delta_response("1", &[("a", "v1")], &[]);
        assert_eq!(
            c.on_response(&r),
            Err(ClientError::NotSubscribed(CLUSTER_TYPE.into()))
        );
        c.subscribe(CLUSTER_TYPE, &[]);
        r.resources[0].resource.as_mut().unwrap().type_url = LISTENER_TYPE.into();
        assert!(matches!(c.on_response(&r), Err(ClientError::WrongType { .. })));
        r.resources[0].resource = None;
        assert_eq!(
            c.on_response(&r),
            Err(ClientError::Incomplete(CLUSTER_TYPE.into()))
        );
    }

    #[test]
    fn sotw_replaces_the_set_and_nacks_with_the_old_version() {
        let mut c = SotwClient::new(node());
        let req = c.subscribe(CLUSTER_TYPE, &[]);
        assert!(req.node.is_some() && req.version_info.is_empty());
        let response = |version: &str, nonce: &str, names: &[&str]| DiscoveryResponse {
            type_url: CLUSTER_TYPE.into(),
            version_info: version.into(),
            nonce: nonce.into(),
            resources: names.iter().map(|n| cluster(n)).collect(),
            ..Default::default()
        };
        let p = c.on_response(&response("v1", "n1", &["a", "b"])).unwrap();
        let ack = c.ack(p);
        assert_eq!(
            (ack.version_info.as_str(), ack.response_nonce.as_str()),
            ("v1", "n1")
        );
        assert!(c.is_ready());

        let p = c.on_response(&response("v2", "n2", &["a"])).unwrap();
        assert_eq!(p.removed, ["b".to_string()].into_iter().collect());
        let nack = c.nack(&p, "bad");
        assert_eq!(
            (nack.version_info.as_str(), nack.response_nonce.as_str()),
            ("v1", "n2")
        );
        assert_eq!(c.held(CLUSTER_TYPE).unwrap().len(), 2, "the old set stays");

        let reconnect = c.on_connect();
        assert_eq!(reconnect[0].version_info, "v1");
        assert!(reconnect[0].response_nonce.is_empty());

        let garbage = DiscoveryResponse {
            type_url: CLUSTER_TYPE.into(),
            resources: vec![Any {
                type_url: CLUSTER_TYPE.into(),
                value: vec![0xff, 0xff],
            }],
            ..Default::default()
        };
        assert!(matches!(
            c.on_response(&garbage),
            Err(ClientError::Undecodable { .. })
        ));
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let full: Vec<Duration> = (0..10).map(|_| b.next(0.999_999)).collect();
        assert!(full[0] < Duration::from_millis(501));
        assert!(full[1] > Duration::from_millis(900) && full[1] < Duration::from_millis(1001));
        assert!(full[9] <= Duration::from_secs(30) && full[9] > Duration::from_secs(29));
        assert_eq!(b.next(0.0), Duration::ZERO, "full jitter reaches zero");
        b.reset();
        assert!(b.next(0.5) <= Duration::from_millis(250));
        let mut forever = Backoff::default();
        for _ in 0..100 {
            assert!(forever.next(1.0) <= Duration::from_secs(30));
        }
    }
}

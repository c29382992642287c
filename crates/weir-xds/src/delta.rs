//! The incremental (delta) xDS protocol, server side, as a state machine without I/O.
//!
//! One [`DeltaStream`] per delta ADS stream. The server knows, per type and resource, which
//! version the client holds: from `initial_resource_versions` when it (re)connects, and from each
//! response it ACKs. [`DeltaStream::plan`] compares that with the current resources and says what
//! to send and what to remove; [`DeltaStream::sent`] records a response until its ACK or NACK
//! arrives. A resource version the client rejected is not sent again until it changes.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;

/// What a request means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeltaMeaning {
    /// The subscription grew (or the stream is new): plan and send.
    Subscribe,
    /// The client applied the response with this nonce.
    Ack,
    /// The client rejected the response with this nonce, for this reason.
    Nack {
        /// The client's reason.
        reason: String,
    },
    /// Only names were dropped, or the nonce is unknown: nothing to send.
    Nothing,
}

/// What to send for one type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeltaPlan {
    /// Resources to send (new or changed), with their versions.
    pub updated: BTreeMap<String, String>,
    /// Names to report as removed.
    pub removed: BTreeSet<String>,
}

impl DeltaPlan {
    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.updated.is_empty() && self.removed.is_empty()
    }
}

/// The protocol state of one type on one delta stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeltaTypeState {
    /// Subscribed to everything of the type.
    pub wildcard: bool,
    /// Names subscribed explicitly.
    pub names: BTreeSet<String>,
    /// Versions the client holds.
    pub client_has: BTreeMap<String, String>,
    /// Versions the client rejected, not to be sent again.
    pub rejected: BTreeMap<String, String>,
    in_flight: BTreeMap<String, DeltaPlan>,
}

impl DeltaTypeState {
    fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

/// Per-stream delta protocol state.
#[derive(Clone, Debug, Default)]
pub struct DeltaStream {
    node: Option<Node>,
    types: BTreeMap<String, DeltaTypeState>,
    next_nonce: u64,
}

impl DeltaStream {
    /// A new stream.
    pub fn new() -> Self {
        DeltaStream::default()
    }

    /// The node identity, from the first request that carried one.
    pub fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }

    /// The state of one type.
    pub fn state(&self, type_url: &str) -> Option<&DeltaTypeState> {
        self.types.get(type_url)
    }

    /// Interprets a request from the client.
    pub fn on_request(&mut self, request: &DeltaDiscoveryRequest) -> DeltaMeaning {
        if self.node.is_none() {
            self.node = request.node.clone();
        }
        let new_type = !self.types.contains_key(&request.type_url);
        let state = self.types.entry(request.type_url.clone()).or_default();
        if new_type {
            // A first request with no names is a wildcard subscription (the legacy form).
            state.wildcard =
                request.resource_names_subscribe.is_empty() && request.resource_names_unsubscribe.is_empty();
            state.client_has = request.initial_resource_versions.clone().into_iter().collect();
        }
        let mut grew = new_type;
        for name in &request.resource_names_subscribe {
            if name == "*" {
                grew |= !state.wildcard;
                state.wildcard = true;
            } else {
                grew |= state.names.insert(name.clone()) && !state.wildcard;
            }
        }
        for name in &request.resource_names_unsubscribe {
            if name == "*" {
                state.wildcard = false;
            } else {
                state.names.remove(name);
            }
        }
        // The client forgets what it no longer wants.
        let wanted: BTreeSet<String> = state
            .client_has
            .keys()
            .filter(|n| state.wants(n))
            .cloned()
            .collect();
        state.client_has.retain(|n, _| wanted.contains(n));

        let meaning = if request.response_nonce.is_empty() {
            DeltaMeaning::Nothing
        } else {
            match state.in_flight.remove(&request.response_nonce) {
                None => DeltaMeaning::Nothing,
                Some(plan) => match &request.error_detail {
                    Some(error) => {
                        state.rejected.extend(plan.updated);
                        DeltaMeaning::Nack {
                            reason: error.message.clone(),
                        }
                    }
                    None => {
                        for name in &plan.removed {
                            state.client_has.remove(name);
                        }
                        for (name, version) in plan.updated {
                            if state.wants(&name) {
                                state.rejected.remove(&name);
                                state.client_has.insert(name, version);
                            }
                        }
                        DeltaMeaning::Ack
                    }
                },
            }
        };
        if grew { DeltaMeaning::Subscribe } else { meaning }
    }

    /// What to send for `type_url` given the `current` resources (name → version): what the
    /// client wants and does not hold at that version (nor rejected, nor already in flight), and
    /// what it holds that no longer exists.
    pub fn plan(&self, type_url: &str, current: &BTreeMap<String, String>) -> DeltaPlan {
        let Some(state) = self.types.get(type_url) else {
            return DeltaPlan::default();
        };
        // What the client will hold once in-flight responses are applied.
        let mut expected = state.client_has.clone();
        for plan in state.in_flight.values() {
            for name in &plan.removed {
                expected.remove(name);
            }
            expected.extend(plan.updated.iter().map(|(n, v)| (n.clone(), v.clone())));
        }
        let updated = current
            .iter()
            .filter(|(name, version)| {
                state.wants(name)
                    && expected.get(*name) != Some(version)
                    && state.rejected.get(*name) != Some(version)
            })
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        let removed = expected
            .keys()
            .filter(|name| !current.contains_key(*name))
            .cloned()
            .collect();
        DeltaPlan { updated, removed }
    }

    /// Records that `plan` was sent for `type_url`, and returns the response's nonce.
    pub fn sent(&mut self, type_url: &str, plan: DeltaPlan) -> String {
        self.next_nonce += 1;
        let nonce = self.next_nonce.to_string();
        self.types
            .entry(type_url.to_string())
            .or_default()
            .in_flight
            .insert(nonce.clone(), plan);
        nonce
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::google::rpc::Status;

    use super::*;

    const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

    fn resources(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn ack(type_url: &str, nonce: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: type_url.into(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_reconnecting_wildcard_client_gets_only_what_changed() {
        let mut s = DeltaStream::new();
        let first = DeltaDiscoveryRequest {
            type_url: CDS.into(),
            initial_resource_versions: [
                ("a".to_string(), "1".to_string()),
                ("gone".to_string(), "1".to_string()),
            ]
            .into_iter()
            .collect(),
            node: Some(Node {
                id: "router~10.0.0.1~gw.istio-system~istio-system.svc.cluster.local".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(s.on_request(&first), DeltaMeaning::Subscribe);
        assert!(s.state(CDS).unwrap().wildcard);
        let plan = s.plan(CDS, &resources(&[("a", "1"), ("b", "1")]));
        assert_eq!(plan.updated, resources(&[("b", "1")]));
        assert_eq!(plan.removed, BTreeSet::from(["gone".to_string()]));
        let nonce = s.sent(CDS, plan);
        assert!(
            s.plan(CDS, &resources(&[("a", "1"), ("b", "1")])).is_empty(),
            "nothing while in flight"
        );
        assert_eq!(s.on_request(&ack(CDS, &nonce)), DeltaMeaning::Ack);
        assert_eq!(
            s.state(CDS).unwrap().client_has,
            resources(&[("a", "1"), ("b", "1")])
        );
        // A change of one resource sends that one only.
        assert_eq!(
            s.plan(CDS, &resources(&[("a", "2"), ("b", "1")])).updated,
            resources(&[("a", "2")])
        );
    }

    #[test]
    fn named_subscriptions_grow_and_shrink() {
        let mut s = DeltaStream::new();
        let sub = |names: &[&str], unsub: &[&str]| DeltaDiscoveryRequest {
            type_url: EDS.into(),
            resource_names_subscribe: names.iter().map(|n| n.to_string()).collect(),
            resource_names_unsubscribe: unsub.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        };
        assert_eq!(s.on_request(&sub(&["x"], &[])), DeltaMeaning::Subscribe);
        assert!(!s.state(EDS).unwrap().wildcard);
        let current = resources(&[("x", "1"), ("y", "1")]);
        let nonce = s.sent(EDS, s.plan(EDS, &current));
        s.on_request(&ack(EDS, &nonce));
        assert_eq!(s.on_request(&sub(&["y"], &[])), DeltaMeaning::Subscribe);
        assert_eq!(s.plan(EDS, &current).updated, resources(&[("y", "1")]));
        assert_eq!(s.on_request(&sub(&[], &["x"])), DeltaMeaning::Nothing);
        assert!(
            !s.state(EDS).unwrap().client_has.contains_key("x"),
            "an unsubscribed resource is forgotten"
        );
        assert!(
            s.plan(EDS, &resources(&[("x", "2")])).is_empty(),
            "and no longer sent"
        );
    }

    #[test]
    fn a_rejected_version_is_not_resent_until_it_changes() {
        let mut s = DeltaStream::new();
        s.on_request(&DeltaDiscoveryRequest {
            type_url: CDS.into(),
            ..Default::default()
        });
        let current = resources(&[("a", "1")]);
        let nonce = s.sent(CDS, s.plan(CDS, &current));
        let mut nack = ack(CDS, &nonce);
        nack.error_detail = Some(Status {
            code: 3,
            message: "bad cluster a".into(),
            details: vec![],
        });
        assert_eq!(
            s.on_request(&nack),
            DeltaMeaning::Nack {
                reason: "bad cluster a".into()
            }
        );
        assert!(s.state(CDS).unwrap().client_has.is_empty());
        assert!(s.plan(CDS, &current).is_empty());
        assert_eq!(
            s.plan(CDS, &resources(&[("a", "2")])).updated,
            resources(&[("a", "2")])
        );
    }

    #[test]
    fn unknown_nonces_mean_nothing() {
        let mut s = DeltaStream::new();
        s.on_request(&DeltaDiscoveryRequest {
            type_url: CDS.into(),
            ..Default::default()
        });
        assert_eq!(s.on_request(&ack(CDS, "999")), DeltaMeaning::Nothing);
    }
}

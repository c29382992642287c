//! The state-of-the-world xDS protocol, server side, as a state machine without I/O.
//!
//! One [`SotwStream`] per ADS stream. Every `DiscoveryRequest` the client sends goes through
//! [`SotwStream::on_request`], which says what it means (Envoy's xDS protocol):
//!
//! - a request without a `response_nonce` opens (or reopens, after a reconnect) a subscription:
//!   the server sends what the client subscribed to;
//! - a request whose nonce is the one of the last response for its type is an ACK, or a NACK when
//!   it carries `error_detail` (the client keeps its previous version); if it also changes the
//!   subscribed names, the server sends again;
//! - a request with an older nonce answers a response that has been superseded, and is ignored.
//!
//! The server calls [`SotwStream::sent`] for each response it sends, which hands out the nonce.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;

/// What a client subscribed to for one type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subscription {
    /// Everything of the type (an empty name list: LDS and CDS).
    Wildcard,
    /// These names (RDS, EDS).
    Names(BTreeSet<String>),
}

impl Subscription {
    fn from_names(names: &[String]) -> Subscription {
        if names.is_empty() || names.iter().any(|n| n == "*") {
            Subscription::Wildcard
        } else {
            Subscription::Names(names.iter().cloned().collect())
        }
    }

    /// Whether `name` is subscribed.
    pub fn contains(&self, name: &str) -> bool {
        match self {
            Subscription::Wildcard => true,
            Subscription::Names(names) => names.contains(name),
        }
    }
}

/// What a request means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestMeaning {
    /// A new or changed subscription: send the resources now.
    Subscribe,
    /// The client applied `version`. `resubscribed` when it also changed its names: send again.
    Ack {
        /// The version the client now runs.
        version: String,
        /// Whether the subscribed names changed.
        resubscribed: bool,
    },
    /// The client rejected `rejected`, keeps `kept`, and says why.
    Nack {
        /// The version it rejected.
        rejected: String,
        /// The version it still runs.
        kept: String,
        /// The client's reason.
        reason: String,
    },
    /// An answer to a superseded response: ignored.
    Stale,
}

/// A response sent and not yet answered.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Sent {
    nonce: String,
    version: String,
}

/// The protocol state of one type on one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeState {
    /// What the client wants.
    pub subscription: Subscription,
    /// The version the client last ACKed.
    pub acked: Option<String>,
    /// The last rejection, until a later version is ACKed.
    pub nacked: Option<(String, String)>,
    last: Option<Sent>,
}

/// Per-stream protocol state.
#[derive(Clone, Debug, Default)]
pub struct SotwStream {
    node: Option<Node>,
    types: BTreeMap<String, TypeState>,
    next_nonce: u64,
}

impl SotwStream {
    /// A new stream.
    pub fn new() -> Self {
        SotwStream::default()
    }

    /// The node identity, from the first request that carried one.
    pub fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }

    /// The state of one type.
    pub fn state(&self, type_url: &str) -> Option<&TypeState> {
        self.types.get(type_url)
    }

    /// Types the client subscribed to.
    pub fn type_urls(&self) -> impl Iterator<Item = &str> {
        self.types.keys().map(String::as_str)
    }

    /// Interprets a request from the client.
    pub fn on_request(&mut self, request: &DiscoveryRequest) -> RequestMeaning {
        if self.node.is_none() {
            self.node = request.node.clone();
        }
        let subscription = Subscription::from_names(&request.resource_names);
        let Some(state) = self.types.get_mut(&request.type_url) else {
            let acked = (!request.version_info.is_empty()).then(|| request.version_info.clone());
            self.types.insert(
                request.type_url.clone(),
                TypeState {
                    subscription,
                    acked,
                    nacked: None,
                    last: None,
                },
            );
            return RequestMeaning::Subscribe;
        };
        if request.response_nonce.is_empty() {
            // A reconnecting client says which version it still has.
            state.subscription = subscription;
            if !request.version_info.is_empty() {
                state.acked = Some(request.version_info.clone());
            }
            return RequestMeaning::Subscribe;
        }
        let Some(last) = state.last.as_ref().filter(|l| l.nonce == request.response_nonce) else {
            return RequestMeaning::Stale;
        };
        if let Some(error) = &request.error_detail {
            let meaning = RequestMeaning::Nack {
                rejected: last.version.clone(),
                kept: request.version_info.clone(),
                reason: error.message.clone(),
            };
            state.nacked = Some((last.version.clone(), error.message.clone()));
            return meaning;
        }
        // The client took the latest response: any earlier rejection is over.
        state.acked = Some(request.version_info.clone());
        state.nacked = None;
        let resubscribed = state.subscription != subscription;
        state.subscription = subscription;
        RequestMeaning::Ack {
            version: request.version_info.clone(),
            resubscribed,
        }
    }

    /// Records a response of `version` for `type_url` and returns its nonce.
    pub fn sent(&mut self, type_url: &str, version: &str) -> String {
        self.next_nonce += 1;
        let nonce = self.next_nonce.to_string();
        let state = self
            .types
            .entry(type_url.to_string())
            .or_insert_with(|| TypeState {
                subscription: Subscription::Wildcard,
                acked: None,
                nacked: None,
                last: None,
            });
        state.last = Some(Sent {
            nonce: nonce.clone(),
            version: version.to_string(),
        });
        nonce
    }

    /// Whether a response for `type_url` awaits its ACK or NACK.
    pub fn awaiting_answer(&self, type_url: &str) -> bool {
        self.types.get(type_url).is_some_and(|s| match &s.last {
            Some(last) => {
                s.acked.as_deref() != Some(last.version.as_str())
                    && s.nacked.as_ref().is_none_or(|(v, _)| *v != last.version)
            }
            None => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::google::rpc::Status;

    use super::*;

    const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

    fn request(type_url: &str, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: type_url.into(),
            resource_names: names.iter().map(|n| n.to_string()).collect(),
            version_info: version.into(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    #[test]
    fn subscribe_send_ack() {
        let mut s = SotwStream::new();
        let mut first = request(CDS, &[], "", "");
        first.node = Some(Node {
            id: "sidecar~10.1.1.1~reviews-v1.bookinfo~bookinfo.svc.cluster.local".into(),
            ..Default::default()
        });
        assert_eq!(s.on_request(&first), RequestMeaning::Subscribe);
        assert_eq!(
            s.node().unwrap().id,
            "sidecar~10.1.1.1~reviews-v1.bookinfo~bookinfo.svc.cluster.local"
        );
        assert_eq!(s.state(CDS).unwrap().subscription, Subscription::Wildcard);
        let nonce = s.sent(CDS, "v1");
        assert!(s.awaiting_answer(CDS));
        assert_eq!(
            s.on_request(&request(CDS, &[], "v1", &nonce)),
            RequestMeaning::Ack {
                version: "v1".into(),
                resubscribed: false
            }
        );
        assert!(!s.awaiting_answer(CDS));
        assert_eq!(s.state(CDS).unwrap().acked.as_deref(), Some("v1"));
    }

    #[test]
    fn nack_keeps_the_previous_version_and_a_later_ack_clears_it() {
        let mut s = SotwStream::new();
        s.on_request(&request(CDS, &[], "", ""));
        let n1 = s.sent(CDS, "v1");
        s.on_request(&request(CDS, &[], "v1", &n1));
        let n2 = s.sent(CDS, "v2");
        let mut nack = request(CDS, &[], "v1", &n2);
        nack.error_detail = Some(Status {
            code: 3,
            message: "cluster outbound|80||a: unsupported field".into(),
            details: vec![],
        });
        assert_eq!(
            s.on_request(&nack),
            RequestMeaning::Nack {
                rejected: "v2".into(),
                kept: "v1".into(),
                reason: "cluster outbound|80||a: unsupported field".into()
            }
        );
        assert_eq!(s.state(CDS).unwrap().acked.as_deref(), Some("v1"));
        assert!(s.state(CDS).unwrap().nacked.is_some());
        assert!(!s.awaiting_answer(CDS), "a NACK is an answer");
        let n3 = s.sent(CDS, "v3");
        assert_eq!(
            s.on_request(&request(CDS, &[], "v3", &n3)),
            RequestMeaning::Ack {
                version: "v3".into(),
                resubscribed: false
            }
        );
        assert_eq!(s.state(CDS).unwrap().nacked, None);
    }

    #[test]
    fn answers_to_superseded_responses_are_ignored() {
        let mut s = SotwStream::new();
        s.on_request(&request(EDS, &["outbound|80||a"], "", ""));
        let old = s.sent(EDS, "v1");
        let _new = s.sent(EDS, "v2");
        assert_eq!(
            s.on_request(&request(EDS, &["outbound|80||a"], "v1", &old)),
            RequestMeaning::Stale
        );
        assert_eq!(s.state(EDS).unwrap().acked, None);
    }

    #[test]
    fn changing_names_with_an_ack_resubscribes() {
        let mut s = SotwStream::new();
        s.on_request(&request(EDS, &["outbound|80||a"], "", ""));
        assert!(s.state(EDS).unwrap().subscription.contains("outbound|80||a"));
        assert!(!s.state(EDS).unwrap().subscription.contains("outbound|80||b"));
        let n = s.sent(EDS, "v1");
        assert_eq!(
            s.on_request(&request(EDS, &["outbound|80||a", "outbound|80||b"], "v1", &n)),
            RequestMeaning::Ack {
                version: "v1".into(),
                resubscribed: true
            }
        );
        assert!(s.state(EDS).unwrap().subscription.contains("outbound|80||b"));
    }

    #[test]
    fn a_reconnecting_client_says_what_it_has() {
        let mut s = SotwStream::new();
        assert_eq!(
            s.on_request(&request(CDS, &[], "v7", "")),
            RequestMeaning::Subscribe
        );
        assert_eq!(s.state(CDS).unwrap().acked.as_deref(), Some("v7"));
        assert_eq!(
            s.on_request(&request(CDS, &["*"], "v7", "")),
            RequestMeaning::Subscribe
        );
        assert_eq!(s.state(CDS).unwrap().subscription, Subscription::Wildcard);
    }
}

//! The proxy's xDS transport: delta ADS over gRPC driven by the I/O-free
//! [`weir_xds::client::DeltaClient`]. Clusters and listeners are subscribed to as wildcards;
//! the endpoints and route configurations they name are subscribed to as they appear. Each
//! response is compiled and applied (per resource, whole or not at all) before it is ACKed; a
//! response with resources that cannot be honoured is NACKed with their errors. While the
//! control plane is away the last good configuration keeps serving, and reconnects back off
//! exponentially with jitter (500 ms to 30 s); a reconnect re-sends every subscription with the
//! versions held, so nothing is sent twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status;
use tokio::sync::{mpsc, watch};
use weir_xds::client::{Backoff, ClientError, DeltaClient, HeldResource, Pending, SotwClient};
use weir_xds::generator::{CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE};

use crate::resources::Resources;
use crate::serve::Listeners;
use crate::state::ProxyState;

/// What the agent reports (admin endpoint).
#[derive(Debug, Default)]
pub struct AgentStatus {
    /// Resources held, by type and name (what `/config_dump` shows).
    pub held: BTreeMap<String, BTreeMap<String, HeldResource>>,
    /// The last rejection, if the latest update of some type was NACKed.
    pub last_rejection: Option<String>,
    /// Whether the stream is up.
    pub connected: bool,
}

/// The xDS side of a proxy.
pub struct Agent {
    state: Arc<ProxyState>,
    listeners: Arc<Listeners>,
    resources: Mutex<Resources>,
    /// Status for the admin endpoint.
    pub status: Mutex<AgentStatus>,
    ready: watch::Sender<bool>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").finish_non_exhaustive()
    }
}

impl Agent {
    /// An agent that installs configuration into `state` and binds through `listeners`.
    pub fn new(state: Arc<ProxyState>, listeners: Arc<Listeners>) -> Arc<Self> {
        Arc::new(Agent {
            state,
            listeners,
            resources: Mutex::new(Resources::default()),
            status: Mutex::new(AgentStatus::default()),
            ready: watch::channel(false).0,
        })
    }

    /// Becomes true once the first complete configuration is applied.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Marks the proxy ready (static configuration).
    pub fn set_ready(&self) {
        self.ready.send_replace(true);
    }

    /// Adds a bootstrap's static listeners and clusters and installs them.
    pub async fn install_static(
        &self,
        listeners: Vec<crate::listener::ListenerConfig>,
        clusters: Vec<crate::cluster::ClusterConfig>,
    ) -> Vec<String> {
        let snapshot = {
            let Ok(mut r) = self.resources.lock() else {
                return vec!["state poisoned".into()];
            };
            r.add_static(listeners, clusters);
            r.snapshot()
        };
        self.state.install(snapshot.clone());
        self.listeners
            .reconcile(&snapshot)
            .await
            .into_iter()
            .map(|e| e.to_string())
            .collect()
    }

    /// Runs the ADS stream against `address` (`http://host:port`) as `node`, forever: delta
    /// ADS, or the state of the world when `protocol` says so or the server does not implement
    /// delta.
    pub async fn run(self: Arc<Self>, address: String, node: Node, protocol: XdsProtocol) {
        let mut delta = DeltaClient::new(node.clone());
        let mut sotw = SotwClient::new(node);
        delta.start();
        sotw.start();
        let mut use_sotw = protocol == XdsProtocol::Sotw;
        let mut backoff = Backoff::default();
        loop {
            let result = match self.channel(&address).await {
                Err(e) => Err(e),
                Ok(channel) if use_sotw => self.clone().stream(channel, &mut sotw, &mut backoff).await,
                Ok(channel) => match self.clone().stream(channel, &mut delta, &mut backoff).await {
                    Err(StreamError::Unimplemented(m)) if protocol == XdsProtocol::Auto => {
                        tracing::warn!(%address, reason = %m, "the control plane does not serve delta ADS; using the state of the world");
                        use_sotw = true;
                        continue;
                    }
                    other => other,
                },
            };
            match result {
                Ok(()) => tracing::warn!(%address, "the control plane closed the ADS stream; reconnecting"),
                Err(e) => {
                    tracing::warn!(%address, error = %e, "ADS stream failed; serving the last good configuration")
                }
            }
            if let Ok(mut s) = self.status.lock() {
                s.connected = false;
            }
            tokio::time::sleep(backoff.next(fastrand::f64())).await;
        }
    }

    async fn channel(&self, address: &str) -> Result<tonic::transport::Channel, StreamError> {
        tonic::transport::Endpoint::from_shared(address.to_string())
            .map_err(|e| StreamError::Other(format!("discovery address {address:?}: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| StreamError::Other(format!("cannot connect to the control plane at {address}: {e}")))
    }

    fn connected(&self) -> std::time::Instant {
        if let Ok(mut s) = self.status.lock() {
            s.connected = true;
        }
        tracing::info!("connected to the control plane");
        std::time::Instant::now()
    }

    /// One ADS stream, whatever the protocol: every subscription sent with the versions held,
    /// then each response applied and answered.
    async fn stream<C: Ads>(
        self: Arc<Self>,
        channel: tonic::transport::Channel,
        client: &mut C,
        backoff: &mut Backoff,
    ) -> Result<(), StreamError> {
        let mut grpc = AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(256 << 20);
        let (tx, rx) = mpsc::unbounded_channel::<C::Request>();
        for request in client.connect_requests() {
            let _ = tx.send(request);
        }
        let mut responses = C::open(&mut grpc, tokio_stream_from(rx))
            .await
            .map_err(StreamError::from_status)?;
        let connected_at = self.connected();
        while let Some(response) = responses.message().await.map_err(StreamError::from_status)? {
            backoff.reset();
            let (staged, type_url, nonce) = client.stage(&response);
            for request in self
                .process(client, staged, &type_url, &nonce, connected_at)
                .await?
            {
                let _ = tx.send(request);
            }
        }
        Ok(())
    }

    /// Applies one staged response; returns the requests to send (ACK or NACK, then
    /// subscription changes).
    async fn process<C: Ads>(
        &self,
        client: &mut C,
        staged: Result<Pending, ClientError>,
        type_url: &str,
        nonce: &str,
        connected_at: std::time::Instant,
    ) -> Result<Vec<C::Request>, StreamError> {
        let pending = match staged {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "rejecting an ADS response");
                return Ok(vec![client.reject(type_url, nonce, &e.to_string())]);
            }
        };
        let (applied, snapshot, eds, rds) = {
            let Ok(mut resources) = self.resources.lock() else {
                return Err(StreamError::Other("resource state poisoned".into()));
            };
            let applied = resources.apply(&pending);
            (
                applied,
                resources.snapshot(),
                resources.eds_names(),
                resources.rds_names(),
            )
        };
        let mut errors = applied.errors;
        self.state.install(snapshot.clone());
        if type_url == LISTENER_TYPE {
            errors.extend(
                self.listeners
                    .reconcile(&snapshot)
                    .await
                    .into_iter()
                    .map(|e| e.to_string()),
            );
        }
        let mut out = Vec::new();
        if errors.is_empty() {
            out.push(client.accept(applied.accepted));
        } else {
            let reason = errors.join("; ");
            tracing::warn!(type_url = %type_url, %reason, "NACK");
            if let Ok(mut s) = self.status.lock() {
                s.last_rejection = Some(reason.clone());
            }
            out.push(client.accept_part(applied.accepted, &reason));
        }
        // Follow what clusters and listeners name.
        out.extend(client.follow(ENDPOINT_TYPE, &eds));
        out.extend(client.follow(ROUTE_TYPE, &rds));
        if let Ok(mut s) = self.status.lock() {
            for t in [CLUSTER_TYPE, LISTENER_TYPE, ENDPOINT_TYPE, ROUTE_TYPE] {
                if let Some(held) = client.held_of(t) {
                    s.held.insert(t.to_string(), held.clone());
                }
            }
        }
        if is_complete(client, connected_at) {
            self.ready.send_replace(true);
        }
        Ok(out)
    }
}

/// How the proxy speaks ADS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XdsProtocol {
    /// Delta, falling back to the state of the world when the server does not implement delta.
    #[default]
    Auto,
    /// Delta only.
    Delta,
    /// State of the world only.
    Sotw,
}

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    /// The server does not implement this protocol.
    #[error("not implemented by the server: {0}")]
    Unimplemented(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl StreamError {
    fn from_status(s: tonic::Status) -> Self {
        if s.code() == tonic::Code::Unimplemented {
            StreamError::Unimplemented(s.message().to_string())
        } else {
            StreamError::Other(format!("{} ({:?})", s.message(), s.code()))
        }
    }
}

/// What the transport needs of a protocol state machine.
trait Ads: Send {
    /// A request of this protocol.
    type Request: Send + 'static;
    /// A response of this protocol.
    type Response: Send + 'static;
    /// Opens the protocol's stream.
    fn open(
        grpc: &mut AggregatedDiscoveryServiceClient<tonic::transport::Channel>,
        requests: impl futures_util::Stream<Item = Self::Request> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<tonic::Streaming<Self::Response>, tonic::Status>> + Send;
    /// The requests that open a stream.
    fn connect_requests(&mut self) -> Vec<Self::Request>;
    /// Stages a response: the update, its type and its nonce.
    fn stage(&self, r: &Self::Response) -> (Result<Pending, ClientError>, String, String);
    /// Subscribes to every resource of a type.
    fn wildcard(&mut self, type_url: &str);
    /// Subscribes to clusters and listeners (wildcards).
    fn start(&mut self) {
        self.wildcard(CLUSTER_TYPE);
        self.wildcard(LISTENER_TYPE);
    }
    /// Applies an update and acknowledges it.
    fn accept(&mut self, p: Pending) -> Self::Request;
    /// Applies the honoured part of an update and rejects it.
    fn accept_part(&mut self, p: Pending, reason: &str) -> Self::Request;
    /// Rejects a response that could not even be staged.
    fn reject(&mut self, type_url: &str, nonce: &str, reason: &str) -> Self::Request;
    /// Requests that make the named subscription of a type equal to `wanted`.
    fn follow(&mut self, type_url: &str, wanted: &BTreeSet<String>) -> Vec<Self::Request>;
    /// Whether a response of a type has been applied.
    fn applied_type(&self, type_url: &str) -> bool;
    /// Names subscribed to.
    fn names(&self, type_url: &str) -> BTreeSet<String>;
    /// What is held of a type.
    fn held_of(&self, type_url: &str) -> Option<&BTreeMap<String, HeldResource>>;
}

fn nack_status(reason: &str) -> Option<Status> {
    Some(Status {
        code: 3,
        message: reason.to_string(),
        ..Default::default()
    })
}

impl Ads for DeltaClient {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    async fn open(
        grpc: &mut AggregatedDiscoveryServiceClient<tonic::transport::Channel>,
        requests: impl futures_util::Stream<Item = DeltaDiscoveryRequest> + Send + 'static,
    ) -> Result<tonic::Streaming<DeltaDiscoveryResponse>, tonic::Status> {
        Ok(grpc.delta_aggregated_resources(requests).await?.into_inner())
    }
    fn connect_requests(&mut self) -> Vec<DeltaDiscoveryRequest> {
        self.on_connect()
    }
    fn stage(&self, r: &DeltaDiscoveryResponse) -> (Result<Pending, ClientError>, String, String) {
        (self.on_response(r), r.type_url.clone(), r.nonce.clone())
    }
    fn wildcard(&mut self, type_url: &str) {
        self.subscribe(type_url, &[]);
    }
    fn accept(&mut self, p: Pending) -> DeltaDiscoveryRequest {
        self.ack(p)
    }
    fn accept_part(&mut self, p: Pending, reason: &str) -> DeltaDiscoveryRequest {
        self.partial(p, reason)
    }
    fn reject(&mut self, type_url: &str, nonce: &str, reason: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: type_url.to_string(),
            response_nonce: nonce.to_string(),
            error_detail: nack_status(reason),
            ..Default::default()
        }
    }
    fn follow(&mut self, type_url: &str, wanted: &BTreeSet<String>) -> Vec<DeltaDiscoveryRequest> {
        let current = self.subscribed(type_url);
        let add: Vec<String> = wanted.difference(&current).cloned().collect();
        let drop: Vec<String> = current.difference(wanted).cloned().collect();
        let mut out = Vec::new();
        if !add.is_empty() {
            out.push(self.subscribe(type_url, &add));
        }
        if !drop.is_empty() {
            out.push(self.unsubscribe(type_url, &drop));
        }
        out
    }
    fn applied_type(&self, type_url: &str) -> bool {
        self.applied(type_url)
    }
    fn names(&self, type_url: &str) -> BTreeSet<String> {
        self.subscribed(type_url)
    }
    fn held_of(&self, type_url: &str) -> Option<&BTreeMap<String, HeldResource>> {
        self.held(type_url)
    }
}

impl Ads for SotwClient {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;
    async fn open(
        grpc: &mut AggregatedDiscoveryServiceClient<tonic::transport::Channel>,
        requests: impl futures_util::Stream<Item = DiscoveryRequest> + Send + 'static,
    ) -> Result<tonic::Streaming<DiscoveryResponse>, tonic::Status> {
        Ok(grpc.stream_aggregated_resources(requests).await?.into_inner())
    }
    fn connect_requests(&mut self) -> Vec<DiscoveryRequest> {
        self.on_connect()
    }
    fn stage(&self, r: &DiscoveryResponse) -> (Result<Pending, ClientError>, String, String) {
        (self.on_response(r), r.type_url.clone(), r.nonce.clone())
    }
    fn wildcard(&mut self, type_url: &str) {
        self.subscribe(type_url, &[]);
    }
    fn accept(&mut self, p: Pending) -> DiscoveryRequest {
        self.ack(p)
    }
    fn accept_part(&mut self, p: Pending, reason: &str) -> DiscoveryRequest {
        self.partial(p, reason)
    }
    fn reject(&mut self, type_url: &str, nonce: &str, reason: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: type_url.to_string(),
            response_nonce: nonce.to_string(),
            error_detail: nack_status(reason),
            ..Default::default()
        }
    }
    fn follow(&mut self, type_url: &str, wanted: &BTreeSet<String>) -> Vec<DiscoveryRequest> {
        if self.subscribed(type_url) == *wanted {
            return Vec::new();
        }
        let names: Vec<String> = wanted.iter().cloned().collect();
        vec![self.set_names(type_url, &names)]
    }
    fn applied_type(&self, type_url: &str) -> bool {
        self.applied(type_url)
    }
    fn names(&self, type_url: &str) -> BTreeSet<String> {
        self.subscribed(type_url)
    }
    fn held_of(&self, type_url: &str) -> Option<&BTreeMap<String, HeldResource>> {
        self.held(type_url)
    }
}

/// Clusters and listeners applied, and whatever they name received at least once. Like Envoy's
/// `initial_fetch_timeout` (15 s), endpoints or routes that never arrive do not hold readiness
/// back forever.
fn is_complete<C: Ads>(client: &C, since: std::time::Instant) -> bool {
    if !client.applied_type(CLUSTER_TYPE) || !client.applied_type(LISTENER_TYPE) {
        return false;
    }
    if since.elapsed() > Duration::from_secs(15) {
        return true;
    }
    [ENDPOINT_TYPE, ROUTE_TYPE].into_iter().all(|t| {
        let wanted = client.names(t);
        wanted.is_empty()
            || (client.applied_type(t)
                && client
                    .held_of(t)
                    .is_some_and(|h| wanted.iter().all(|n| h.contains_key(n))))
    })
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

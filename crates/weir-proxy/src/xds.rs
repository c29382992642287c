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
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::google::rpc::Status;
use tokio::sync::{mpsc, watch};
use weir_xds::client::{Backoff, DeltaClient, HeldResource};
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

    /// Runs the ADS stream against `address` (`http://host:port`) as `node`, forever.
    pub async fn run(self: Arc<Self>, address: String, node: Node) {
        let mut client = DeltaClient::new(node);
        client.subscribe(CLUSTER_TYPE, &[]);
        client.subscribe(LISTENER_TYPE, &[]);
        let mut backoff = Backoff::default();
        loop {
            match self.clone().stream(&address, &mut client, &mut backoff).await {
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

    async fn stream(
        self: Arc<Self>,
        address: &str,
        client: &mut DeltaClient,
        backoff: &mut Backoff,
    ) -> Result<(), String> {
        let channel = tonic::transport::Endpoint::from_shared(address.to_string())
            .map_err(|e| format!("discovery address {address:?}: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| format!("cannot connect to the control plane at {address}: {e}"))?;
        let mut grpc = AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(256 << 20);
        let (tx, rx) = mpsc::unbounded_channel::<DeltaDiscoveryRequest>();
        for request in client.on_connect() {
            let _ = tx.send(request);
        }
        let requests = tokio_stream_from(rx);
        let mut responses = grpc
            .delta_aggregated_resources(requests)
            .await
            .map_err(|s| format!("ADS stream refused: {} ({:?})", s.message(), s.code()))?
            .into_inner();
        if let Ok(mut s) = self.status.lock() {
            s.connected = true;
        }
        tracing::info!(%address, "connected to the control plane");
        let connected_at = std::time::Instant::now();
        while let Some(response) = responses
            .message()
            .await
            .map_err(|s| format!("{} ({:?})", s.message(), s.code()))?
        {
            backoff.reset();
            let pending = match client.on_response(&response) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "rejecting an ADS response");
                    let _ = tx.send(DeltaDiscoveryRequest {
                        type_url: response.type_url.clone(),
                        response_nonce: response.nonce.clone(),
                        error_detail: Some(Status {
                            code: 3,
                            message: e.to_string(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    });
                    continue;
                }
            };
            let type_url = pending.type_url.clone();
            let (applied, snapshot, eds, rds) = {
                let Ok(mut resources) = self.resources.lock() else {
                    return Err("resource state poisoned".into());
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
            let request = if errors.is_empty() {
                client.ack(applied.accepted)
            } else {
                let reason = errors.join("; ");
                tracing::warn!(type_url = %type_url, %reason, "NACK");
                if let Ok(mut s) = self.status.lock() {
                    s.last_rejection = Some(reason.clone());
                }
                client.partial(applied.accepted, &reason)
            };
            let _ = tx.send(request);
            // Follow what clusters and listeners name.
            for (t, wanted) in [(ENDPOINT_TYPE, eds), (ROUTE_TYPE, rds)] {
                for request in subscription_changes(client, t, &wanted) {
                    let _ = tx.send(request);
                }
            }
            if let Ok(mut s) = self.status.lock() {
                for t in [CLUSTER_TYPE, LISTENER_TYPE, ENDPOINT_TYPE, ROUTE_TYPE] {
                    if let Some(held) = client.held(t) {
                        s.held.insert(t.to_string(), held.clone());
                    }
                }
            }
            if self.is_complete(client, connected_at) {
                self.ready.send_replace(true);
            }
        }
        Ok(())
    }

    /// Clusters and listeners applied, and whatever they name received at least once.
    /// Like Envoy's `initial_fetch_timeout` (15 s), endpoints or routes that never arrive do
    /// not hold readiness back forever.
    fn is_complete(&self, client: &DeltaClient, since: std::time::Instant) -> bool {
        if !client.applied(CLUSTER_TYPE) || !client.applied(LISTENER_TYPE) {
            return false;
        }
        if since.elapsed() > Duration::from_secs(15) {
            return true;
        }
        [ENDPOINT_TYPE, ROUTE_TYPE].into_iter().all(|t| {
            let wanted = client.subscribed(t);
            wanted.is_empty()
                || (client.applied(t)
                    && client
                        .held(t)
                        .is_some_and(|h| wanted.iter().all(|n| h.contains_key(n))))
        })
    }
}

fn subscription_changes(
    client: &mut DeltaClient,
    type_url: &str,
    wanted: &BTreeSet<String>,
) -> Vec<DeltaDiscoveryRequest> {
    let current = client.subscribed(type_url);
    let add: Vec<String> = wanted.difference(&current).cloned().collect();
    let drop: Vec<String> = current.difference(wanted).cloned().collect();
    let mut out = Vec::new();
    if !add.is_empty() {
        out.push(client.subscribe(type_url, &add));
    }
    if !drop.is_empty() {
        out.push(client.unsubscribe(type_url, &drop));
    }
    out
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

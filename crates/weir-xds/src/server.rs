//! The ADS server: `StreamAggregatedResources` (state of the world) and
//! `DeltaAggregatedResources` (incremental) over tonic, on top of the protocol state machines in
//! [`crate::sotw`] and [`crate::delta`].
//!
//! Each stream identifies its proxy from the node ([`crate::node`]), computes the proxy's view and
//! resources, and sends what the client subscribed to. When the model changes
//! ([`DiscoveryServer::apply`]), every stream recomputes its proxy: an endpoint-only change
//! regenerates only the affected ClusterLoadAssignments (EDS push only); a change that leaves the
//! proxy's view as it was costs no generation; otherwise the proxy's resources are regenerated
//! and only types (SotW) or resources (delta) whose bytes changed are sent. A NACK is logged with
//! the proxy and reason, counted, and kept as a [`Rejection`] until the proxy ACKs a later version.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::Any;
use futures_util::Stream;
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, Streaming};
use weir_model::{Change, ConfigStore, Proxy, ProxyView};

use crate::delta::{DeltaMeaning, DeltaStream};
use crate::generator::{self, ENDPOINT_TYPE, EncodedSet, Resources, TYPE_URLS};
use crate::model::{ChangeSummary, Model};
use crate::sotw::{RequestMeaning, SotwStream};

/// A change of the model, as streams see it.
#[derive(Clone, Debug, Default)]
pub struct Update {
    /// Increases by one per applied batch.
    pub generation: u64,
    /// What the batch changed.
    pub summary: Arc<ChangeSummary>,
}

/// A NACK that stands: the proxy rejected a version and runs an older one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The proxy's node id.
    pub proxy: String,
    /// The resource type.
    pub type_url: String,
    /// The version rejected.
    pub version: String,
    /// The proxy's reason.
    pub reason: String,
    /// The resources in the rejected response.
    pub resources: Vec<String>,
}

/// Counters of the server.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Streams open now.
    pub connected: AtomicU64,
    /// Responses sent.
    pub pushes: AtomicU64,
    /// Responses that were EDS-only pushes after an endpoint change.
    pub eds_pushes: AtomicU64,
    /// NACKs received.
    pub rejects: AtomicU64,
    /// Proxy recomputations that found the view unchanged and skipped generation.
    pub skipped: AtomicU64,
    /// Proxy resource generations.
    pub generations: AtomicU64,
}

impl Metrics {
    /// The counters in Prometheus text format (names after Istio's `pilot_*` metrics).
    pub fn prometheus(&self) -> String {
        let rows = [
            ("pilot_xds", "gauge", "Connected xDS streams.", &self.connected),
            ("pilot_xds_pushes", "counter", "xDS responses sent.", &self.pushes),
            (
                "pilot_xds_eds_only_pushes",
                "counter",
                "EDS-only responses after endpoint changes.",
                &self.eds_pushes,
            ),
            (
                "pilot_total_xds_rejects",
                "counter",
                "xDS responses rejected (NACKed) by proxies.",
                &self.rejects,
            ),
            (
                "weir_xds_generations_skipped",
                "counter",
                "Recomputations skipped because the view was unchanged.",
                &self.skipped,
            ),
            (
                "weir_xds_generations",
                "counter",
                "Per-proxy resource generations.",
                &self.generations,
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}\n",
                value.load(Ordering::Relaxed)
            ));
        }
        out
    }
}

struct Shared {
    model: RwLock<Model>,
    updates: watch::Sender<Update>,
    metrics: Metrics,
    rejections: Mutex<BTreeMap<(String, String), Rejection>>,
}

impl Shared {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Model> {
        // A panic while holding the lock would be a bug; the model itself is still consistent
        // at every lock release, so keep serving.
        self.model
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn reject(&self, r: Rejection) {
        tracing::warn!(
            proxy = %r.proxy, type_url = %r.type_url, version = %r.version,
            "proxy rejected configuration: {}", r.reason
        );
        self.metrics.rejects.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut map) = self.rejections.lock() {
            map.insert((r.proxy.clone(), r.type_url.clone()), r);
        }
    }

    fn accepted(&self, proxy: &str, type_url: &str) {
        if let Ok(mut map) = self.rejections.lock() {
            map.remove(&(proxy.to_string(), type_url.to_string()));
        }
    }
}

/// The ADS server; clone it freely (it is a handle).
#[derive(Clone)]
pub struct DiscoveryServer {
    shared: Arc<Shared>,
}

impl DiscoveryServer {
    /// A server for `model`.
    pub fn new(model: Model) -> Self {
        let (updates, _) = watch::channel(Update::default());
        DiscoveryServer {
            shared: Arc::new(Shared {
                model: RwLock::new(model),
                updates,
                metrics: Metrics::default(),
                rejections: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// Changes the store with `change` (which returns what changed), updates the registry, and
    /// tells every stream.
    pub fn apply(&self, change: impl FnOnce(&mut ConfigStore) -> Vec<Change>) -> ChangeSummary {
        let summary = {
            let mut model = self
                .shared
                .model
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let changes = change(&mut model.store);
            if changes.is_empty() {
                return ChangeSummary::default();
            }
            model.apply(&changes)
        };
        if !summary.is_empty() {
            let summary_arc = Arc::new(summary.clone());
            self.shared.updates.send_modify(|u| {
                u.generation += 1;
                u.summary = summary_arc;
            });
        }
        summary
    }

    /// Runs `f` on the model.
    pub fn with_model<T>(&self, f: impl FnOnce(&Model) -> T) -> T {
        f(&self.shared.read())
    }

    /// The counters.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The NACKs that stand now.
    pub fn rejections(&self) -> Vec<Rejection> {
        self.shared
            .rejections
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The tonic service.
    pub fn service(&self) -> AggregatedDiscoveryServiceServer<DiscoveryServer> {
        AggregatedDiscoveryServiceServer::new(self.clone())
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(256 * 1024 * 1024)
    }
}

/// One proxy's resources as last computed for a stream.
struct ProxyState {
    id: String,
    proxy: Proxy,
    view: ProxyView,
    resources: Resources,
    encoded: BTreeMap<&'static str, EncodedSet>,
    generation: u64,
}

fn encode_all(resources: &Resources) -> BTreeMap<&'static str, EncodedSet> {
    TYPE_URLS
        .iter()
        .map(|t| (*t, resources.encoded(t).unwrap_or_default()))
        .collect()
}

/// Kinds that change generated resources without changing any proxy's view.
const VIEWLESS_KINDS: [&str; 3] = ["Gateway", "Secret", "MeshConfig"];

fn same_view(a: &ProxyView, b: &ProxyView) -> bool {
    let same_vs = |x: &weir_model::view::BoundVirtualService, y: &weir_model::view::BoundVirtualService| {
        x.key == y.key
            && Arc::ptr_eq(&x.resource, &y.resource)
            && x.hosts == y.hosts
            && x.gateways == y.gateways
    };
    a.proxy == b.proxy
        && a.sidecar == b.sidecar
        && a.outbound_mode == b.outbound_mode
        && a.egress_proxy == b.egress_proxy
        && a.gateways == b.gateways
        && a.services.len() == b.services.len()
        && a.services
            .iter()
            .zip(&b.services)
            .all(|(x, y)| Arc::ptr_eq(x, y) || x == y)
        && a.virtual_services.len() == b.virtual_services.len()
        && a.virtual_services
            .iter()
            .zip(&b.virtual_services)
            .all(|(x, y)| same_vs(x, y))
        && a.delegates.len() == b.delegates.len()
        && a.delegates
            .iter()
            .zip(&b.delegates)
            .all(|((k1, x), (k2, y))| k1 == k2 && same_vs(x, y))
        && a.destination_rules.len() == b.destination_rules.len()
        && a.destination_rules
            .iter()
            .zip(&b.destination_rules)
            .all(|((k1, x), (k2, y))| {
                k1 == k2 && x.namespace == y.namespace && x.sources == y.sources && x.rule == y.rule
            })
}

impl ProxyState {
    fn new(shared: &Shared, id: String, proxy: Proxy) -> Self {
        let generation = shared.updates.borrow().generation;
        let (view, resources) = shared.read().generate(&proxy);
        shared.metrics.generations.fetch_add(1, Ordering::Relaxed);
        report_problems(&id, &[], &resources.problems);
        let encoded = encode_all(&resources);
        ProxyState {
            id,
            proxy,
            view,
            resources,
            encoded,
            generation,
        }
    }

    /// Brings the state to `update`; returns the types whose resources changed.
    fn refresh(&mut self, shared: &Shared, update: &Update) -> BTreeSet<&'static str> {
        if update.generation == self.generation {
            return BTreeSet::new();
        }
        let missed = update.generation != self.generation + 1;
        self.generation = update.generation;
        let summary = &update.summary;
        let model = shared.read();
        let visible_moved: BTreeSet<String> = self
            .view
            .services
            .iter()
            .filter(|s| summary.endpoint_hosts.contains(&s.hostname))
            .map(|s| s.hostname.clone())
            .collect();
        if !missed && summary.endpoints_only {
            if visible_moved.is_empty() {
                return BTreeSet::new();
            }
            let fresh = generator::regenerate_endpoints(
                &model.inputs(),
                &self.view,
                &self.resources.clusters,
                &visible_moved,
            );
            let set = self.encoded.entry(ENDPOINT_TYPE).or_default();
            let mut changed = false;
            for (name, cla) in fresh {
                match cla {
                    Some(cla) => {
                        let enc = generator::Encoded::of(&cla);
                        if set.get(&name) != Some(&enc) {
                            set.insert(name.clone(), enc);
                            changed = true;
                        }
                        self.resources.endpoints.insert(name, cla);
                    }
                    None => {
                        changed |= set.remove(&name).is_some();
                        self.resources.endpoints.remove(&name);
                    }
                }
            }
            return if changed {
                BTreeSet::from([ENDPOINT_TYPE])
            } else {
                BTreeSet::new()
            };
        }
        let view = model.view(&self.proxy);
        if !missed
            && visible_moved.is_empty()
            && !summary.kinds.iter().any(|k| VIEWLESS_KINDS.contains(&k.as_str()))
            && same_view(&self.view, &view)
        {
            shared.metrics.skipped.fetch_add(1, Ordering::Relaxed);
            self.view = view;
            return BTreeSet::new();
        }
        let resources = generator::generate(&model.inputs(), &view);
        drop(model);
        shared.metrics.generations.fetch_add(1, Ordering::Relaxed);
        report_problems(&self.id, &self.resources.problems, &resources.problems);
        let encoded = encode_all(&resources);
        let changed = TYPE_URLS
            .iter()
            .copied()
            .filter(|t| self.encoded.get(t) != encoded.get(t))
            .collect();
        self.view = view;
        self.resources = resources;
        self.encoded = encoded;
        changed
    }
}

/// Logs the configuration a proxy's resources could not honour, when it is new.
fn report_problems(proxy: &str, before: &[String], now: &[String]) {
    for p in now.iter().filter(|p| !before.contains(p)) {
        tracing::warn!(proxy = %proxy, "{p}");
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn version_of<'a>(
    set: &'a EncodedSet,
    wanted: &crate::sotw::Subscription,
) -> (String, Vec<(&'a String, &'a generator::Encoded)>) {
    let chosen: Vec<(&String, &generator::Encoded)> =
        set.iter().filter(|(n, _)| wanted.contains(n)).collect();
    let mut text = String::new();
    for (n, e) in &chosen {
        text.push_str(n);
        text.push('=');
        text.push_str(&e.version);
        text.push(';');
    }
    (generator::Encoded::of_bytes(text.as_bytes()).version, chosen)
}

fn node_error(e: crate::node::NodeError) -> Status {
    Status::invalid_argument(e.to_string())
}

async fn sotw_stream(
    shared: Arc<Shared>,
    mut inbound: Streaming<DiscoveryRequest>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
) {
    let mut protocol = SotwStream::new();
    let mut updates = shared.updates.subscribe();
    let mut state: Option<ProxyState> = None;
    // Per type: the version last sent.
    let mut sent: BTreeMap<String, String> = BTreeMap::new();
    shared.metrics.connected.fetch_add(1, Ordering::Relaxed);
    loop {
        let mut to_send: Vec<String> = Vec::new();
        tokio::select! {
            message = inbound.message() => {
                let request = match message {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!("ADS stream ended: {e}");
                        break;
                    }
                };
                let meaning = protocol.on_request(&request);
                if state.is_none() {
                    let proxy = match crate::node::proxy_from_node(protocol.node()) {
                        Ok(p) => p,
                        Err(e) => {
                            let _ = tx.send(Err(node_error(e))).await;
                            break;
                        }
                    };
                    let id = protocol.node().map(|n| n.id.clone()).unwrap_or_default();
                    tracing::info!(proxy = %id, "ADS stream opened (state of the world)");
                    state = Some(ProxyState::new(&shared, id, proxy));
                }
                let Some(st) = state.as_ref() else { break };
                match meaning {
                    RequestMeaning::Subscribe => to_send.push(request.type_url.clone()),
                    RequestMeaning::Ack { resubscribed, .. } => {
                        shared.accepted(&st.id, &request.type_url);
                        if resubscribed {
                            to_send.push(request.type_url.clone());
                        }
                    }
                    RequestMeaning::Nack { rejected, reason, .. } => {
                        let names = st.encoded.get(request.type_url.as_str()).map(|s| s.keys().cloned().collect()).unwrap_or_default();
                        shared.reject(Rejection { proxy: st.id.clone(), type_url: request.type_url.clone(), version: rejected, reason, resources: names });
                    }
                    RequestMeaning::Stale => {}
                }
                // Forced sends always go out, even when unchanged.
                for t in &to_send {
                    sent.remove(t);
                }
            }
            changed = updates.changed() => {
                if changed.is_err() {
                    break;
                }
                let update = updates.borrow_and_update().clone();
                if let Some(st) = state.as_mut() {
                    let types = st.refresh(&shared, &update);
                    to_send.extend(types.iter().map(|t| (*t).to_string()));
                }
            }
        }
        let Some(st) = state.as_ref() else { continue };
        // Send in CDS, EDS, LDS, RDS order.
        for type_url in TYPE_URLS
            .iter()
            .copied()
            .filter(|t| to_send.iter().any(|s| s == t))
            .map(str::to_string)
            .chain(
                to_send
                    .iter()
                    .filter(|t| !TYPE_URLS.contains(&t.as_str()))
                    .cloned(),
            )
            .collect::<Vec<_>>()
        {
            let Some(sub) = protocol.state(&type_url).map(|s| s.subscription.clone()) else {
                continue;
            };
            let empty = EncodedSet::new();
            let set = st.encoded.get(type_url.as_str()).unwrap_or(&empty);
            let (version, chosen) = version_of(set, &sub);
            if sent.get(&type_url) == Some(&version) {
                continue;
            }
            let resources: Vec<Any> = chosen
                .iter()
                .map(|(_, e)| Any {
                    type_url: type_url.clone(),
                    value: e.bytes.clone(),
                })
                .collect();
            let nonce = protocol.sent(&type_url, &version);
            sent.insert(type_url.clone(), version.clone());
            let response = DiscoveryResponse {
                version_info: version,
                resources,
                type_url: type_url.clone(),
                nonce,
                ..Default::default()
            };
            shared.metrics.pushes.fetch_add(1, Ordering::Relaxed);
            if type_url == ENDPOINT_TYPE && to_send.len() == 1 {
                shared.metrics.eds_pushes.fetch_add(1, Ordering::Relaxed);
            }
            if tx.send(Ok(response)).await.is_err() {
                break;
            }
        }
    }
    shared.metrics.connected.fetch_sub(1, Ordering::Relaxed);
    if let Some(st) = state {
        tracing::info!(proxy = %st.id, "ADS stream closed");
    }
}

async fn delta_stream(
    shared: Arc<Shared>,
    mut inbound: Streaming<DeltaDiscoveryRequest>,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
) {
    let mut protocol = DeltaStream::new();
    let mut updates = shared.updates.subscribe();
    let mut state: Option<ProxyState> = None;
    // Types that have had their first response (a first subscription is always answered).
    let mut answered: BTreeSet<String> = BTreeSet::new();
    // Per nonce: the type and names sent, to name them in a NACK.
    let mut in_flight: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    shared.metrics.connected.fetch_add(1, Ordering::Relaxed);
    loop {
        let mut types: Vec<String> = Vec::new();
        tokio::select! {
            message = inbound.message() => {
                let request = match message {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!("delta ADS stream ended: {e}");
                        break;
                    }
                };
                let meaning = protocol.on_request(&request);
                if state.is_none() {
                    let proxy = match crate::node::proxy_from_node(protocol.node()) {
                        Ok(p) => p,
                        Err(e) => {
                            let _ = tx.send(Err(node_error(e))).await;
                            break;
                        }
                    };
                    let id = protocol.node().map(|n| n.id.clone()).unwrap_or_default();
                    tracing::info!(proxy = %id, "ADS stream opened (delta)");
                    state = Some(ProxyState::new(&shared, id, proxy));
                }
                let Some(st) = state.as_ref() else { break };
                let names = in_flight.remove(&request.response_nonce);
                match meaning {
                    DeltaMeaning::Subscribe => types.push(request.type_url.clone()),
                    DeltaMeaning::Ack => shared.accepted(&st.id, &request.type_url),
                    DeltaMeaning::Nack { reason } => shared.reject(Rejection {
                        proxy: st.id.clone(),
                        type_url: request.type_url.clone(),
                        version: request.response_nonce.clone(),
                        reason,
                        resources: names.map(|(_, n)| n).unwrap_or_default(),
                    }),
                    DeltaMeaning::Nothing => {}
                }
            }
            changed = updates.changed() => {
                if changed.is_err() {
                    break;
                }
                let update = updates.borrow_and_update().clone();
                if let Some(st) = state.as_mut() {
                    types.extend(st.refresh(&shared, &update).iter().map(|t| (*t).to_string()));
                }
            }
        }
        let Some(st) = state.as_ref() else { continue };
        for type_url in TYPE_URLS
            .iter()
            .map(|t| (*t).to_string())
            .filter(|t| types.contains(t))
            .chain(types.iter().filter(|t| !TYPE_URLS.contains(&t.as_str())).cloned())
            .collect::<Vec<_>>()
        {
            let empty = EncodedSet::new();
            let set = st.encoded.get(type_url.as_str()).unwrap_or(&empty);
            let versions: BTreeMap<String, String> =
                set.iter().map(|(n, e)| (n.clone(), e.version.clone())).collect();
            let plan = protocol.plan(&type_url, &versions);
            let first = answered.insert(type_url.clone());
            if plan.is_empty() && !first {
                continue;
            }
            let resources: Vec<Resource> = plan
                .updated
                .iter()
                .filter_map(|(name, version)| {
                    set.get(name).map(|e| Resource {
                        name: name.clone(),
                        version: version.clone(),
                        resource: Some(Any {
                            type_url: type_url.clone(),
                            value: e.bytes.clone(),
                        }),
                        ..Default::default()
                    })
                })
                .collect();
            let removed: Vec<String> = plan.removed.iter().cloned().collect();
            let names: Vec<String> = plan.updated.keys().cloned().collect();
            let nonce = protocol.sent(&type_url, plan);
            in_flight.insert(nonce.clone(), (type_url.clone(), names));
            let response = DeltaDiscoveryResponse {
                system_version_info: st.generation.to_string(),
                resources,
                type_url: type_url.clone(),
                removed_resources: removed,
                nonce,
                ..Default::default()
            };
            shared.metrics.pushes.fetch_add(1, Ordering::Relaxed);
            if tx.send(Ok(response)).await.is_err() {
                break;
            }
        }
    }
    shared.metrics.connected.fetch_sub(1, Ordering::Relaxed);
    if let Some(st) = state {
        tracing::info!(proxy = %st.id, "delta ADS stream closed");
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for DiscoveryServer {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(sotw_stream(self.shared.clone(), request.into_inner(), tx));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(delta_stream(self.shared.clone(), request.into_inner(), tx));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

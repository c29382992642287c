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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use envoy_types::pb::envoy::config::core::v3::Node;
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
use crate::generator::{self, ENDPOINT_TYPE, EncodedSet, TYPE_URLS};
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
    /// What was rejected: the version (state of the world) or the response nonce (delta).
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
    /// Proxies that received an EDS-only push after an endpoint change.
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
                "Proxies given an EDS-only push after an endpoint change.",
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
    cache: Mutex<OutputCache>,
    endpoint_ips: RwLock<HashSet<std::net::IpAddr>>,
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
                endpoint_ips: RwLock::new(endpoint_ips(&model)),
                cache: Mutex::new(HashMap::new()),
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
            let summary = model.apply(&changes);
            if !summary.endpoint_hosts.is_empty()
                && let Ok(mut ips) = self.shared.endpoint_ips.write()
            {
                *ips = endpoint_ips(&model);
            }
            if let Ok(mut cache) = self.shared.cache.lock() {
                // Outputs of older generations are never read again.
                cache.clear();
            }
            summary
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

/// What one proxy is sent: its view and its encoded resources. Proxies whose resources cannot
/// differ (same [`CacheKey`]) share one, so the replicas of a workload cost one generation and
/// one copy of the bytes.
struct Output {
    view: ProxyView,
    encoded: BTreeMap<&'static str, EncodedSet>,
    problems: Vec<String>,
}

/// What a proxy's resources depend on besides the model: its kind, namespace, labels and
/// locality, and those of its addresses at which the registry has endpoints (they select
/// inbound clusters).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct CacheKey {
    kind: weir_model::ProxyKind,
    namespace: String,
    labels: weir_api::types::Labels,
    ips: Vec<std::net::IpAddr>,
    locality: Option<String>,
}

impl CacheKey {
    fn of(proxy: &Proxy, endpoint_ips: &HashSet<std::net::IpAddr>) -> Self {
        CacheKey {
            kind: proxy.kind,
            namespace: proxy.namespace.clone(),
            labels: proxy.labels.clone(),
            ips: proxy
                .ips
                .iter()
                .filter(|ip| endpoint_ips.contains(ip))
                .copied()
                .collect(),
            locality: proxy.locality.clone(),
        }
    }
}

/// Outputs by key, for the generation they were computed at.
type OutputCache = HashMap<CacheKey, (u64, Arc<Output>)>;

/// Every endpoint address of the registry.
fn endpoint_ips(model: &Model) -> HashSet<std::net::IpAddr> {
    model
        .registry
        .services()
        .flat_map(|s| model.registry.endpoints(&s.key()))
        .filter_map(|e| match &e.address {
            weir_model::registry::EndpointAddress::Ip(ip) => Some(*ip),
            _ => None,
        })
        .collect()
}

/// One proxy's state on a stream.
struct ProxyState {
    id: String,
    proxy: Proxy,
    output: Arc<Output>,
    generation: u64,
}

/// Kinds that change generated resources without changing any proxy's view.
const VIEWLESS_KINDS: [&str; 3] = ["Gateway", "Secret", "MeshConfig"];

/// Whether two views of the same proxy key lead to the same resources.
fn same_view(a: &ProxyView, b: &ProxyView) -> bool {
    let same_vs = |x: &weir_model::view::BoundVirtualService, y: &weir_model::view::BoundVirtualService| {
        x.key == y.key
            && Arc::ptr_eq(&x.resource, &y.resource)
            && x.hosts == y.hosts
            && x.gateways == y.gateways
    };
    a.sidecar == b.sidecar
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

impl Shared {
    fn cached(&self, key: &CacheKey, generation: u64) -> Option<Arc<Output>> {
        let cache = self.cache.lock().ok()?;
        cache
            .get(key)
            .filter(|(g, _)| *g == generation)
            .map(|(_, o)| o.clone())
    }

    fn remember(&self, key: CacheKey, generation: u64, output: &Arc<Output>) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(key, (generation, output.clone()));
        }
    }

    fn key(&self, proxy: &Proxy) -> CacheKey {
        let ips = self
            .endpoint_ips
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        CacheKey::of(proxy, &ips)
    }

    fn generate(&self, model: &Model, view: ProxyView) -> Arc<Output> {
        let resources = generator::generate(&model.inputs(), &view);
        self.metrics.generations.fetch_add(1, Ordering::Relaxed);
        Arc::new(Output {
            encoded: resources.encoded_all(),
            problems: resources.problems,
            view,
        })
    }
}

impl ProxyState {
    fn new(shared: &Shared, id: String, proxy: Proxy) -> Self {
        let model = shared.read();
        let generation = shared.updates.borrow().generation;
        let key = shared.key(&proxy);
        let output = match shared.cached(&key, generation) {
            Some(o) => o,
            None => {
                let o = shared.generate(&model, model.view(&proxy));
                shared.remember(key, generation, &o);
                o
            }
        };
        drop(model);
        report_problems(&id, &[], &output.problems);
        ProxyState {
            id,
            proxy,
            output,
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
        let model = shared.read();
        let key = shared.key(&self.proxy);
        let output = match shared.cached(&key, update.generation) {
            Some(o) => o,
            None => {
                let o = self.next_output(shared, &model, &update.summary, missed);
                shared.remember(key, update.generation, &o);
                o
            }
        };
        drop(model);
        report_problems(&self.id, &self.output.problems, &output.problems);
        let changed: BTreeSet<&'static str> = TYPE_URLS
            .iter()
            .copied()
            .filter(|t| self.output.encoded.get(t) != output.encoded.get(t))
            .collect();
        self.output = output;
        if update.summary.endpoints_only && !changed.is_empty() {
            shared.metrics.eds_pushes.fetch_add(1, Ordering::Relaxed);
        }
        changed
    }

    fn next_output(
        &self,
        shared: &Shared,
        model: &Model,
        summary: &ChangeSummary,
        missed: bool,
    ) -> Arc<Output> {
        let old = &self.output;
        let moved: BTreeSet<String> = old
            .view
            .services
            .iter()
            .filter(|s| summary.endpoint_hosts.contains(&s.hostname))
            .map(|s| s.hostname.clone())
            .collect();
        if !missed && summary.endpoints_only {
            if moved.is_empty() {
                return old.clone();
            }
            let mut encoded = old.encoded.clone();
            let set = encoded.entry(ENDPOINT_TYPE).or_default();
            let names: Vec<String> = set.keys().cloned().collect();
            for (name, cla) in
                generator::regenerate_endpoints(&model.inputs(), &old.view, names.iter(), &moved)
            {
                match cla {
                    Some(cla) => set.insert(name, generator::Encoded::of(&cla)),
                    None => set.remove(&name),
                };
            }
            return Arc::new(Output {
                view: old.view.clone(),
                encoded,
                problems: old.problems.clone(),
            });
        }
        let view = model.view(&self.proxy);
        if !missed
            && moved.is_empty()
            && !summary.kinds.iter().any(|k| VIEWLESS_KINDS.contains(&k.as_str()))
            && same_view(&old.view, &view)
        {
            shared.metrics.skipped.fetch_add(1, Ordering::Relaxed);
            return old.clone();
        }
        shared.generate(model, view)
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

/// The types to send, deduplicated, in the order a client applies them: CDS, EDS, LDS, RDS, then
/// any other type asked for.
fn push_order(types: &[String]) -> Vec<String> {
    let mut out: Vec<String> = TYPE_URLS
        .iter()
        .filter(|t| types.iter().any(|s| s == *t))
        .map(|t| (*t).to_string())
        .collect();
    for t in types {
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    out
}

/// The proxy behind a stream's first node, with its resources computed.
fn identify(shared: &Shared, node: Option<&Node>, protocol: &str) -> Result<ProxyState, Status> {
    let proxy = crate::node::proxy_from_node(node).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let id = node.map(|n| n.id.clone()).unwrap_or_default();
    tracing::info!(proxy = %id, "ADS stream opened ({protocol})");
    Ok(ProxyState::new(shared, id, proxy))
}

/// What a stream waits for: the client's next request, or a change of the model.
enum StreamEvent<R> {
    Request(R),
    Changed(Update),
    Closed,
}

async fn next_event<R>(inbound: &mut Streaming<R>, updates: &mut watch::Receiver<Update>) -> StreamEvent<R> {
    tokio::select! {
        message = inbound.message() => match message {
            Ok(Some(r)) => StreamEvent::Request(r),
            Ok(None) => StreamEvent::Closed,
            Err(e) => {
                tracing::debug!("ADS stream ended: {e}");
                StreamEvent::Closed
            }
        },
        changed = updates.changed() => match changed {
            Ok(()) => StreamEvent::Changed(updates.borrow_and_update().clone()),
            Err(_) => StreamEvent::Closed,
        },
    }
}

/// Counts an open stream for as long as it lives.
struct Connected<'a>(&'a Metrics);

impl<'a> Connected<'a> {
    fn new(metrics: &'a Metrics) -> Self {
        metrics.connected.fetch_add(1, Ordering::Relaxed);
        Connected(metrics)
    }
}

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.0.connected.fetch_sub(1, Ordering::Relaxed);
    }
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
    let _connected = Connected::new(&shared.metrics);
    loop {
        let mut to_send: Vec<String> = Vec::new();
        match next_event(&mut inbound, &mut updates).await {
            StreamEvent::Closed => break,
            StreamEvent::Request(request) => {
                let meaning = protocol.on_request(&request);
                if state.is_none() {
                    match identify(&shared, protocol.node(), "state of the world") {
                        Ok(st) => state = Some(st),
                        Err(status) => {
                            let _ = tx.send(Err(status)).await;
                            break;
                        }
                    }
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
                        let names = st
                            .output
                            .encoded
                            .get(request.type_url.as_str())
                            .map(|s| s.keys().cloned().collect())
                            .unwrap_or_default();
                        shared.reject(Rejection {
                            proxy: st.id.clone(),
                            type_url: request.type_url.clone(),
                            version: rejected,
                            reason,
                            resources: names,
                        });
                    }
                    RequestMeaning::Stale => {}
                }
                // Forced sends always go out, even when unchanged.
                for t in &to_send {
                    sent.remove(t);
                }
            }
            StreamEvent::Changed(update) => {
                if let Some(st) = state.as_mut() {
                    to_send.extend(st.refresh(&shared, &update).iter().map(|t| (*t).to_string()));
                }
            }
        }
        let Some(st) = state.as_ref() else { continue };
        for type_url in push_order(&to_send) {
            let Some(sub) = protocol.state(&type_url).map(|s| s.subscription.clone()) else {
                continue;
            };
            let empty = EncodedSet::new();
            let set = st.output.encoded.get(type_url.as_str()).unwrap_or(&empty);
            let (version, chosen) = version_of(set, &sub);
            if sent.get(&type_url) == Some(&version) {
                continue;
            }
            let resources: Vec<Any> = chosen
                .iter()
                .map(|(_, e)| Any {
                    type_url: type_url.clone(),
                    value: e.bytes.to_vec(),
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
            if tx.send(Ok(response)).await.is_err() {
                break;
            }
        }
    }
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
    let _connected = Connected::new(&shared.metrics);
    loop {
        let mut types: Vec<String> = Vec::new();
        match next_event(&mut inbound, &mut updates).await {
            StreamEvent::Closed => break,
            StreamEvent::Request(request) => {
                let meaning = protocol.on_request(&request);
                if state.is_none() {
                    match identify(&shared, protocol.node(), "delta") {
                        Ok(st) => state = Some(st),
                        Err(status) => {
                            let _ = tx.send(Err(status)).await;
                            break;
                        }
                    }
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
            StreamEvent::Changed(update) => {
                if let Some(st) = state.as_mut() {
                    types.extend(st.refresh(&shared, &update).iter().map(|t| (*t).to_string()));
                }
            }
        }
        let Some(st) = state.as_ref() else { continue };
        for type_url in push_order(&types) {
            let empty = EncodedSet::new();
            let set = st.output.encoded.get(type_url.as_str()).unwrap_or(&empty);
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
                            value: e.bytes.to_vec(),
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

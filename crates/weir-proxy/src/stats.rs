//! Istio's standard metrics (`istio_requests_total`, `istio_request_duration_milliseconds`,
//! `istio_request_bytes`, `istio_response_bytes`, `istio_tcp_*`) with their labels, reported
//! by this proxy as the source (outbound) or destination (inbound) of traffic.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Who this proxy is, for the `source_*` (or `destination_*`) labels.
#[derive(Clone, Debug, Default)]
pub struct Identity {
    /// Workload name.
    pub workload: String,
    /// Namespace.
    pub namespace: String,
    /// `app` label.
    pub app: String,
    /// `version` label.
    pub version: String,
    /// Cluster id (Istio's `Kubernetes` by default).
    pub cluster: String,
}

/// The labels of Istio's request metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `source` or `destination`.
    pub reporter: &'static str,
    /// Source workload.
    pub source_workload: String,
    /// Source namespace.
    pub source_workload_namespace: String,
    /// Source principal (`unknown` without mTLS).
    pub source_principal: String,
    /// Source app.
    pub source_app: String,
    /// Source version.
    pub source_version: String,
    /// Source cluster.
    pub source_cluster: String,
    /// Destination workload (`unknown` without peer metadata).
    pub destination_workload: String,
    /// Destination namespace.
    pub destination_workload_namespace: String,
    /// Destination principal.
    pub destination_principal: String,
    /// Destination app.
    pub destination_app: String,
    /// Destination version.
    pub destination_version: String,
    /// Destination service host.
    pub destination_service: String,
    /// Destination service short name.
    pub destination_service_name: String,
    /// Destination service namespace.
    pub destination_service_namespace: String,
    /// Destination cluster.
    pub destination_cluster: String,
    /// `http`, `grpc`, `tcp`.
    pub request_protocol: &'static str,
    /// Status code (`0` when none).
    pub response_code: String,
    /// gRPC status (`-` when none).
    pub grpc_response_status: String,
    /// Envoy response flags (`-` when none).
    pub response_flags: &'static str,
    /// `none` or `mutual_tls`.
    pub connection_security_policy: &'static str,
}

/// The labels of Istio's TCP metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    /// `source` or `destination`.
    pub reporter: &'static str,
    /// Source workload.
    pub source_workload: String,
    /// Source namespace.
    pub source_workload_namespace: String,
    /// Source app.
    pub source_app: String,
    /// Destination service host.
    pub destination_service: String,
    /// Destination service short name.
    pub destination_service_name: String,
    /// Destination service namespace.
    pub destination_service_namespace: String,
    /// Destination workload.
    pub destination_workload: String,
    /// `tcp`.
    pub request_protocol: &'static str,
    /// Envoy response flags.
    pub response_flags: &'static str,
    /// `none` or `mutual_tls`.
    pub connection_security_policy: &'static str,
}

/// What distinguishes one series of request metrics, as owned values.
#[derive(Debug)]
struct SeriesKey {
    service: String,
    subset: String,
    protocol: &'static str,
    status: u16,
    grpc: Option<String>,
    flags: &'static str,
    inbound: bool,
}

impl SeriesKey {
    fn matches(&self, r: &RequestRecord<'_>) -> bool {
        self.service == r.destination.service
            && self.subset == r.destination.subset
            && self.protocol == r.protocol
            && self.status == r.status
            && self.grpc.as_deref() == r.grpc_status
            && self.flags == r.flags
            && self.inbound == r.inbound
    }

    /// foldhash, not a streaming xxh3: xxh3's hasher sets up a few hundred bytes of state
    /// before it hashes anything, which for these few short strings cost more than the hashing.
    fn hash(r: &RequestRecord<'_>) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = foldhash::fast::FixedState::with_seed(0x5eed).build_hasher();
        h.write(r.destination.service.as_bytes());
        h.write_u8(0);
        h.write(r.destination.subset.as_bytes());
        h.write_u8(0);
        h.write(r.protocol.as_bytes());
        h.write_u16(r.status);
        h.write(r.grpc_status.unwrap_or("-").as_bytes());
        h.write(r.flags.as_bytes());
        h.write_u8(u8::from(r.inbound));
        h.finish()
    }
}

/// The metric handles of one series (each an `Arc` inside).
#[derive(Debug, Clone)]
struct Series {
    requests: Counter,
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

impl Series {
    /// Counts one request.
    fn observe(&self, r: &RequestRecord<'_>) {
        self.requests.inc();
        self.duration.observe(r.duration_ms);
        self.request_bytes.observe(r.request_bytes as f64);
        self.response_bytes.observe(r.response_bytes as f64);
    }
}

/// Request series by the hash of their labels (collisions kept side by side), hashed again
/// with foldhash: this map is read on every request.
type SeriesByHash = std::collections::HashMap<u64, Vec<(SeriesKey, Series)>, foldhash::fast::RandomState>;

/// The proxy's Istio metrics.
#[derive(Debug)]
pub struct IstioMetrics {
    /// Series already created, so a request costs a hash and a read lock, not a label set.
    series: std::sync::RwLock<SeriesByHash>,
    /// This proxy.
    pub identity: Identity,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RequestLabels, Histogram>,
    request_bytes: Family<RequestLabels, Histogram>,
    response_bytes: Family<RequestLabels, Histogram>,
    tcp_opened: Family<TcpLabels, Counter>,
    tcp_closed: Family<TcpLabels, Counter>,
    tcp_sent: Family<TcpLabels, Counter>,
    tcp_received: Family<TcpLabels, Counter>,
    registry: Registry,
}

/// Istio's duration buckets (ms).
const DURATION_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0,
    300000.0, 600000.0, 1800000.0, 3600000.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

fn size_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        1.0, 10.0, 9,
    ))
}

/// What is known about the destination of a request from its cluster name
/// (`outbound|port|subset|host`).
#[derive(Clone, Debug, Default)]
pub struct Destination {
    /// The service host.
    pub service: String,
    /// Its short name.
    pub name: String,
    /// Its namespace (Kubernetes-style hosts), or `unknown`.
    pub namespace: String,
    /// The subset (`version` in practice).
    pub subset: String,
}

impl Destination {
    /// From an Istio cluster name; passthrough and other clusters keep their name as service.
    pub fn from_cluster(cluster: &str) -> Self {
        let parts: Vec<&str> = cluster.split('|').collect();
        match parts.as_slice() {
            [_, _, subset, host] => {
                let mut labels = host.split('.');
                let name = labels.next().unwrap_or_default().to_string();
                let namespace = if host.contains(".svc.") {
                    labels.next().unwrap_or("unknown").to_string()
                } else {
                    "unknown".to_string()
                };
                Destination {
                    service: host.to_string(),
                    name,
                    namespace,
                    subset: subset.to_string(),
                }
            }
            _ => Destination {
                service: cluster.to_string(),
                name: cluster.to_string(),
                namespace: "unknown".into(),
                subset: String::new(),
            },
        }
    }
}

/// One finished request, for the metrics.
#[derive(Debug)]
pub struct RequestRecord<'a> {
    /// Where it went.
    pub destination: &'a Destination,
    /// `http` or `grpc`.
    pub protocol: &'static str,
    /// Status (0 when none).
    pub status: u16,
    /// gRPC status.
    pub grpc_status: Option<&'a str>,
    /// Response flags.
    pub flags: &'static str,
    /// Duration in ms.
    pub duration_ms: f64,
    /// Request body bytes (when known).
    pub request_bytes: u64,
    /// Response body bytes (when known).
    pub response_bytes: u64,
    /// Inbound (destination reporter) rather than outbound.
    pub inbound: bool,
}

impl IstioMetrics {
    /// Metrics for a proxy with this identity.
    pub fn new(identity: Identity) -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let duration =
            Family::<RequestLabels, Histogram>::new_with_constructor(duration_histogram as fn() -> Histogram);
        let request_bytes =
            Family::<RequestLabels, Histogram>::new_with_constructor(size_histogram as fn() -> Histogram);
        let response_bytes =
            Family::<RequestLabels, Histogram>::new_with_constructor(size_histogram as fn() -> Histogram);
        let tcp_opened = Family::<TcpLabels, Counter>::default();
        let tcp_closed = Family::<TcpLabels, Counter>::default();
        let tcp_sent = Family::<TcpLabels, Counter>::default();
        let tcp_received = Family::<TcpLabels, Counter>::default();
        let mut registry = Registry::default();
        registry.register(
            "istio_requests",
            "Requests handled by the proxy",
            requests.clone(),
        );
        registry.register(
            "istio_request_duration_milliseconds",
            "Request durations",
            duration.clone(),
        );
        registry.register("istio_request_bytes", "Request body sizes", request_bytes.clone());
        registry.register(
            "istio_response_bytes",
            "Response body sizes",
            response_bytes.clone(),
        );
        registry.register(
            "istio_tcp_connections_opened",
            "TCP connections opened",
            tcp_opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "TCP connections closed",
            tcp_closed.clone(),
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "Bytes sent to the peer (TCP)",
            tcp_sent.clone(),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "Bytes received from the peer (TCP)",
            tcp_received.clone(),
        );
        IstioMetrics {
            series: std::sync::RwLock::new(std::collections::HashMap::default()),
            identity,
            requests,
            duration,
            request_bytes,
            response_bytes,
            tcp_opened,
            tcp_closed,
            tcp_sent,
            tcp_received,
            registry,
        }
    }

    fn request_labels(&self, r: &RequestRecord<'_>) -> RequestLabels {
        let me = &self.identity;
        let d = r.destination;
        let (source, destination_workload, destination_namespace, destination_app, destination_version) =
            if r.inbound {
                (
                    None,
                    me.workload.clone(),
                    me.namespace.clone(),
                    me.app.clone(),
                    me.version.clone(),
                )
            } else {
                (
                    Some(me),
                    "unknown".to_string(),
                    d.namespace.clone(),
                    "unknown".to_string(),
                    if d.subset.is_empty() {
                        "unknown".to_string()
                    } else {
                        d.subset.clone()
                    },
                )
            };
        let unknown = || "unknown".to_string();
        RequestLabels {
            reporter: if r.inbound { "destination" } else { "source" },
            source_workload: source.map_or_else(unknown, |s| s.workload.clone()),
            source_workload_namespace: source.map_or_else(unknown, |s| s.namespace.clone()),
            source_principal: unknown(),
            source_app: source.map_or_else(unknown, |s| s.app.clone()),
            source_version: source.map_or_else(unknown, |s| s.version.clone()),
            source_cluster: source.map_or_else(unknown, |s| s.cluster.clone()),
            destination_workload,
            destination_workload_namespace: destination_namespace,
            destination_principal: unknown(),
            destination_app,
            destination_version,
            destination_service: d.service.clone(),
            destination_service_name: d.name.clone(),
            destination_service_namespace: d.namespace.clone(),
            destination_cluster: if r.inbound { me.cluster.clone() } else { unknown() },
            request_protocol: r.protocol,
            response_code: r.status.to_string(),
            grpc_response_status: r.grpc_status.unwrap_or("").to_string(),
            response_flags: r.flags,
            connection_security_policy: if r.inbound { "none" } else { "unknown" },
        }
    }

    /// Records a finished request.
    pub fn record_request(&self, r: &RequestRecord<'_>) {
        let hash = SeriesKey::hash(r);
        // The usual case: the series exists, and is updated under the read lock (no handles
        // cloned and dropped).
        if let Ok(m) = self.series.read()
            && let Some((_, series)) = m
                .get(&hash)
                .and_then(|list| list.iter().find(|(k, _)| k.matches(r)))
        {
            series.observe(r);
            return;
        }
        // The first request of its kind: the series is made (the metrics family keeps one per
        // label set, so a series made twice by two threads counts into the same place).
        let labels = self.request_labels(r);
        let series = Series {
            requests: self.requests.get_or_create(&labels).clone(),
            duration: self.duration.get_or_create(&labels).clone(),
            request_bytes: self.request_bytes.get_or_create(&labels).clone(),
            response_bytes: self.response_bytes.get_or_create(&labels).clone(),
        };
        series.observe(r);
        if let Ok(mut m) = self.series.write() {
            m.entry(hash).or_default().push((
                SeriesKey {
                    service: r.destination.service.clone(),
                    subset: r.destination.subset.clone(),
                    protocol: r.protocol,
                    status: r.status,
                    grpc: r.grpc_status.map(str::to_string),
                    flags: r.flags,
                    inbound: r.inbound,
                },
                series,
            ));
        }
    }

    /// Labels for a TCP connection to a cluster.
    pub fn tcp_labels(&self, destination: &Destination, flags: &'static str) -> TcpLabels {
        TcpLabels {
            reporter: "source",
            source_workload: self.identity.workload.clone(),
            source_workload_namespace: self.identity.namespace.clone(),
            source_app: self.identity.app.clone(),
            destination_service: destination.service.clone(),
            destination_service_name: destination.name.clone(),
            destination_service_namespace: destination.namespace.clone(),
            destination_workload: "unknown".into(),
            request_protocol: "tcp",
            response_flags: flags,
            connection_security_policy: "unknown",
        }
    }

    /// Records an opened TCP connection.
    pub fn tcp_opened(&self, labels: &TcpLabels) {
        self.tcp_opened.get_or_create(labels).inc();
    }

    /// Records a closed TCP connection and its byte counts.
    pub fn tcp_closed(&self, labels: &TcpLabels, sent: u64, received: u64) {
        self.tcp_closed.get_or_create(labels).inc();
        self.tcp_sent.get_or_create(labels).inc_by(sent);
        self.tcp_received.get_or_create(labels).inc_by(received);
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode_registry(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_come_from_cluster_names() {
        let d = Destination::from_cluster("outbound|9080|v2|reviews.shop.svc.cluster.local");
        assert_eq!(
            (d.name.as_str(), d.namespace.as_str(), d.subset.as_str()),
            ("reviews", "shop", "v2")
        );
        let d = Destination::from_cluster("outbound|443||api.example.com");
        assert_eq!(d.namespace, "unknown");
        assert_eq!(
            Destination::from_cluster("PassthroughCluster").service,
            "PassthroughCluster"
        );
    }

    #[test]
    fn requests_are_exposed_with_istio_names() {
        let m = IstioMetrics::new(Identity {
            workload: "sleep".into(),
            namespace: "default".into(),
            ..Default::default()
        });
        let d = Destination::from_cluster("outbound|80||httpbin.default.svc.cluster.local");
        m.record_request(&RequestRecord {
            destination: &d,
            protocol: "http",
            status: 200,
            grpc_status: None,
            flags: "-",
            duration_ms: 3.0,
            request_bytes: 0,
            response_bytes: 10,
            inbound: false,
        });
        let text = m.encode();
        assert!(
            text.contains("istio_requests_total{reporter=\"source\",source_workload=\"sleep\""),
            "{text}"
        );
        assert!(text.contains("destination_service_name=\"httpbin\""), "{text}");
        assert!(
            text.contains("istio_request_duration_milliseconds_bucket"),
            "{text}"
        );
    }
}

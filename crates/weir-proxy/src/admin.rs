//! The admin endpoint (Envoy's, default `127.0.0.1:15000`): `/ready`, `/config_dump`
//! (Envoy-style JSON), `/clusters` (hosts with health and counters), `/listeners`,
//! `/stats/prometheus` (Istio's metrics and Envoy's cluster counters) and `/stats`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use weir_xds::generator::{CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE};

use crate::body;
use crate::cluster::Health;
use crate::pool::Body;
use crate::serve::Listeners;
use crate::state::ProxyState;
use crate::xds::Agent;

/// What the admin endpoint reads.
#[derive(Clone, Debug)]
pub struct Admin {
    /// The data path's state.
    pub state: Arc<ProxyState>,
    /// The xDS agent.
    pub agent: Arc<Agent>,
    /// The listeners.
    pub listeners: Arc<Listeners>,
    /// How its connections stand under the global connection limit.
    pub connections: AdminConnections,
}

/// How the admin endpoint's connections stand under the global connection limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AdminConnections {
    /// Not counted: Weir's own admin endpoint (`--admin`, `weir run`).
    #[default]
    Uncounted,
    /// Counted, never refused: a bootstrap's admin with `ignore_global_conn_limit`.
    Counted,
    /// Counted and refused over the limit, as Envoy's admin listener by default.
    Limited,
}

impl AdminConnections {
    /// Whether its connections are counted and, if so, whether they ignore the global limit.
    fn counted(self) -> Option<bool> {
        match self {
            AdminConnections::Uncounted => None,
            AdminConnections::Counted => Some(true),
            AdminConnections::Limited => Some(false),
        }
    }
}

fn text(status: StatusCode, kind: &str, body_text: String) -> Response<Body> {
    let mut resp = Response::new(body::full(body_text));
    *resp.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(kind) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}

/// The Prometheus name of an Envoy statistic: `envoy_`, then its name with underscores for dots
/// (`http.no_route` is `envoy_http_no_route`).
fn prometheus_name(stat: &str) -> String {
    format!("envoy_{}", stat.replace('.', "_"))
}

impl Admin {
    /// Answers one admin request.
    pub fn respond(&self, req: &Request<Incoming>) -> Response<Body> {
        let query = req.uri().query().unwrap_or_default();
        match req.uri().path() {
            "/ready" => {
                if *self.agent.ready().borrow() {
                    text(StatusCode::OK, "text/plain", "LIVE\n".into())
                } else {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        "PRE_INITIALIZING\n".into(),
                    )
                }
            }
            "/config_dump" => {
                let dump = self.config_dump(query.contains("include_eds"));
                text(
                    StatusCode::OK,
                    "application/json",
                    serde_json::to_string_pretty(&dump).unwrap_or_default(),
                )
            }
            "/clusters" => text(StatusCode::OK, "text/plain", self.clusters()),
            "/listeners" => {
                let mut out = String::new();
                for (name, address) in self.listeners.bound() {
                    let _ = writeln!(out, "{name}::{address}");
                }
                text(StatusCode::OK, "text/plain", out)
            }
            "/stats/prometheus" => text(StatusCode::OK, "text/plain; version=0.0.4", self.prometheus()),
            "/stats" => text(StatusCode::OK, "text/plain", self.stats()),
            _ => text(
                StatusCode::NOT_FOUND,
                "text/plain",
                "admin endpoints: /ready /config_dump /clusters /listeners /stats /stats/prometheus\n".into(),
            ),
        }
    }

    fn config_dump(&self, include_eds: bool) -> Value {
        let held = self
            .agent
            .status
            .lock()
            .map(|s| s.held.clone())
            .unwrap_or_default();
        let render = |t: &str| -> Vec<(String, String, Value)> {
            held.get(t)
                .map(|m| {
                    m.iter()
                        .map(|(name, r)| {
                            let v = weir_xds::json::any_to_json(&r.body.type_url, &r.body.value)
                                .unwrap_or_else(|e| json!({ "error": e.to_string() }));
                            (name.clone(), r.version.clone(), v)
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let snapshot = self.state.snapshot();
        let static_clusters: Vec<Value> = snapshot
            .clusters
            .values()
            .filter(|c| c.version == "static")
            .filter_map(|c| weir_xds::json::to_json(&c.config.source).ok())
            .map(|c| json!({ "cluster": c }))
            .collect();
        let static_listeners: Vec<Value> = snapshot
            .listeners
            .values()
            .filter(|l| !held.get(LISTENER_TYPE).is_some_and(|h| h.contains_key(&l.name)))
            .filter_map(|l| weir_xds::json::to_json(&l.source).ok())
            .map(|l| json!({ "listener": l }))
            .collect();
        let mut configs = vec![
            json!({
                "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
                "static_clusters": static_clusters,
                "dynamic_active_clusters": render(CLUSTER_TYPE).into_iter().map(|(_, v, c)| json!({"version_info": v, "cluster": c})).collect::<Vec<_>>(),
            }),
            json!({
                "@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
                "static_listeners": static_listeners,
                "dynamic_listeners": render(LISTENER_TYPE).into_iter().map(|(n, v, l)| json!({"name": n, "active_state": {"version_info": v, "listener": l}})).collect::<Vec<_>>(),
            }),
            json!({
                "@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
                "dynamic_route_configs": render(ROUTE_TYPE).into_iter().map(|(_, v, r)| json!({"version_info": v, "route_config": r})).collect::<Vec<_>>(),
            }),
        ];
        if include_eds {
            configs.push(json!({
                "@type": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
                "dynamic_endpoint_configs": render(ENDPOINT_TYPE).into_iter().map(|(_, v, e)| json!({"version_info": v, "endpoint_config": e})).collect::<Vec<_>>(),
            }));
        }
        json!({ "configs": configs })
    }

    fn clusters(&self) -> String {
        let snapshot = self.state.snapshot();
        let mut names: Vec<&String> = snapshot.clusters.keys().collect();
        names.sort();
        let mut out = String::new();
        for name in names {
            let c = &snapshot.clusters[name];
            let l = &c.config.limits;
            let _ = writeln!(
                out,
                "{name}::default_priority::max_connections::{}",
                l.max_connections
            );
            let _ = writeln!(
                out,
                "{name}::default_priority::max_pending_requests::{}",
                l.max_pending_requests
            );
            let _ = writeln!(out, "{name}::default_priority::max_requests::{}", l.max_requests);
            let _ = writeln!(out, "{name}::default_priority::max_retries::{}", l.max_retries);
            let _ = writeln!(out, "{name}::added_via_api::{}", c.version != "static");
            for h in &c.hosts().hosts {
                let eds = match h.health {
                    Health::Healthy => "",
                    Health::Degraded => "/degraded",
                    Health::Unhealthy => "/failed_eds_health",
                };
                let outlier = if h.outlier.is_ejected() {
                    "/failed_outlier_check"
                } else {
                    ""
                };
                let flag = match format!("{eds}{outlier}") {
                    f if f.is_empty() => "healthy".to_string(),
                    f => f,
                };
                let t = &h.target;
                let _ = writeln!(
                    out,
                    "{name}::{t}::cx_total::{}",
                    h.stats.cx_total.load(Ordering::Relaxed)
                );
                let _ = writeln!(
                    out,
                    "{name}::{t}::cx_connect_fail::{}",
                    h.stats.cx_connect_fail.load(Ordering::Relaxed)
                );
                let _ = writeln!(
                    out,
                    "{name}::{t}::rq_active::{}",
                    h.active_requests.load(Ordering::Relaxed)
                );
                let _ = writeln!(
                    out,
                    "{name}::{t}::rq_error::{}",
                    h.stats.rq_error.load(Ordering::Relaxed)
                );
                let _ = writeln!(
                    out,
                    "{name}::{t}::rq_total::{}",
                    h.stats.rq_total.load(Ordering::Relaxed)
                );
                let _ = writeln!(out, "{name}::{t}::weight::{}", h.weight);
                let _ = writeln!(out, "{name}::{t}::region::{}", h.locality);
                let _ = writeln!(out, "{name}::{t}::priority::{}", h.priority);
                let _ = writeln!(out, "{name}::{t}::health_flags::{flag}");
            }
        }
        out
    }

    #[allow(clippy::too_many_lines)]
    fn cluster_counters(&self) -> Vec<(String, &'static str, u64)> {
        let snapshot = self.state.snapshot();
        let mut out = Vec::new();
        for (name, c) in &snapshot.clusters {
            let s = &c.stats;
            let b = &c.pool.breakers().stats;
            let in_use = c.pool.breakers().in_use();
            let l = &c.config.limits;
            let open = |used: u32, limit: u32| u64::from(used >= limit);
            let breakers: [(&'static str, u64); 7] = [
                (
                    "upstream_cx_overflow",
                    b.upstream_cx_overflow.load(Ordering::Relaxed),
                ),
                (
                    "upstream_rq_pending_overflow",
                    b.upstream_rq_pending_overflow.load(Ordering::Relaxed),
                ),
                (
                    "upstream_rq_retry_overflow",
                    b.upstream_rq_retry_overflow.load(Ordering::Relaxed),
                ),
                (
                    "circuit_breakers.default.cx_open",
                    open(in_use.connections, l.max_connections),
                ),
                (
                    "circuit_breakers.default.rq_pending_open",
                    open(in_use.pending, l.max_pending_requests),
                ),
                (
                    "circuit_breakers.default.rq_open",
                    open(in_use.requests, l.max_requests),
                ),
                ("upstream_rq_pending_active", u64::from(in_use.pending)),
            ];
            out.extend(breakers.into_iter().map(|(k, v)| (name.clone(), k, v)));
            if l.track_remaining {
                let left = |used: u32, limit: u32| u64::from(limit.saturating_sub(used));
                let retry_limit = c.pool.breakers().retry_limit();
                let remaining: [(&'static str, u64); 4] = [
                    (
                        "circuit_breakers.default.remaining_cx",
                        left(in_use.connections, l.max_connections),
                    ),
                    (
                        "circuit_breakers.default.remaining_pending",
                        left(in_use.pending, l.max_pending_requests),
                    ),
                    (
                        "circuit_breakers.default.remaining_rq",
                        left(in_use.requests, l.max_requests),
                    ),
                    (
                        "circuit_breakers.default.remaining_retries",
                        left(in_use.retries, retry_limit),
                    ),
                ];
                out.extend(remaining.into_iter().map(|(k, v)| (name.clone(), k, v)));
            }
            if c.config.outlier.is_some() {
                out.extend(
                    c.outlier_stats
                        .entries()
                        .into_iter()
                        .map(|(k, v)| (name.clone(), k, v)),
                );
            }
            let counters: [(&'static str, u64); 16] = [
                ("upstream_rq_total", s.upstream_rq_total.load(Ordering::Relaxed)),
                ("upstream_rq_1xx", s.upstream_rq_class[0].load(Ordering::Relaxed)),
                ("upstream_rq_2xx", s.upstream_rq_class[1].load(Ordering::Relaxed)),
                ("upstream_rq_3xx", s.upstream_rq_class[2].load(Ordering::Relaxed)),
                ("upstream_rq_4xx", s.upstream_rq_class[3].load(Ordering::Relaxed)),
                ("upstream_rq_5xx", s.upstream_rq_class[4].load(Ordering::Relaxed)),
                (
                    "upstream_rq_timeout",
                    s.upstream_rq_timeout.load(Ordering::Relaxed),
                ),
                (
                    "upstream_rq_per_try_timeout",
                    s.upstream_rq_per_try_timeout.load(Ordering::Relaxed),
                ),
                ("upstream_rq_retry", s.upstream_rq_retry.load(Ordering::Relaxed)),
                (
                    "upstream_rq_retry_success",
                    s.upstream_rq_retry_success.load(Ordering::Relaxed),
                ),
                (
                    "upstream_rq_retry_limit_exceeded",
                    s.upstream_rq_retry_limit_exceeded.load(Ordering::Relaxed),
                ),
                (
                    "upstream_cx_none_healthy",
                    s.upstream_cx_none_healthy.load(Ordering::Relaxed),
                ),
                ("upstream_cx_total", c.pool.stats.cx_total.load(Ordering::Relaxed)),
                (
                    "upstream_cx_connect_fail",
                    c.pool.stats.cx_connect_fail.load(Ordering::Relaxed),
                ),
                ("update_success", s.update_success.load(Ordering::Relaxed)),
                ("update_failure", s.update_failure.load(Ordering::Relaxed)),
            ];
            out.extend(counters.into_iter().map(|(k, v)| (name.clone(), k, v)));
        }
        out.sort();
        out
    }

    /// Proxy-wide counters and gauges: (`/stats` name, value).
    fn proxy_counters(&self) -> [(&'static str, u64); 19] {
        let c = &self.state.counters;
        [
            ("http.downstream_rq_total", &c.downstream_rq_total),
            ("listener.downstream_cx_total", &c.downstream_cx_total),
            ("listener.downstream_cx_active", &c.downstream_cx_active),
            ("listener.no_filter_chain_match", &c.no_filter_chain_match),
            ("http.no_route", &c.no_route),
            ("http.downstream_rq_idle_timeout", &c.downstream_rq_idle_timeout),
            ("http.no_cluster", &c.no_cluster),
            ("listener.downstream_cx_overflow", &c.downstream_cx_overflow),
            (
                "listener.downstream_global_cx_overflow",
                &c.downstream_global_cx_overflow,
            ),
            (
                "listener.downstream_cx_overload_reject",
                &c.downstream_cx_overload_reject,
            ),
            (
                "http.downstream_rq_overload_close",
                &c.downstream_rq_overload_close,
            ),
            ("http.downstream_rq_timeout", &c.downstream_rq_timeout),
            (
                "http.downstream_cx_overload_disable_keepalive",
                &c.downstream_cx_overload_disable_keepalive,
            ),
            (
                "http.downstream_rq_failed_path_normalization",
                &c.downstream_rq_failed_path_normalization,
            ),
            (
                "http.downstream_rq_redirected_with_normalized_path",
                &c.downstream_rq_redirected_with_normalized_path,
            ),
            (
                "http1.requests_rejected_with_underscores_in_headers",
                &c.requests_rejected_with_underscores_in_headers[0],
            ),
            (
                "http2.requests_rejected_with_underscores_in_headers",
                &c.requests_rejected_with_underscores_in_headers[1],
            ),
            (
                "http1.dropped_headers_with_underscores",
                &c.dropped_headers_with_underscores[0],
            ),
            (
                "http2.dropped_headers_with_underscores",
                &c.dropped_headers_with_underscores[1],
            ),
        ]
        .map(|(name, counter): (&'static str, &std::sync::atomic::AtomicU64)| {
            (name, counter.load(Ordering::Relaxed))
        })
    }

    fn stats(&self) -> String {
        let mut out = String::new();
        for (cluster, key, value) in self.cluster_counters() {
            let _ = writeln!(out, "cluster.{cluster}.{key}: {value}");
        }
        for (name, value) in self.proxy_counters() {
            let _ = writeln!(out, "{name}: {value}");
        }
        for (name, value) in self.state.overload.stats() {
            let _ = writeln!(out, "{name}: {value}");
        }
        out
    }

    fn prometheus(&self) -> String {
        let mut out = String::new();
        for (cluster, key, value) in self.cluster_counters() {
            let escaped = cluster.replace('\\', "\\\\").replace('"', "\\\"");
            let key = key.replace('.', "_");
            let _ = writeln!(out, "envoy_cluster_{key}{{cluster_name=\"{escaped}\"}} {value}");
        }
        for (name, value) in self.proxy_counters() {
            let _ = writeln!(out, "{} {value}", prometheus_name(name));
        }
        for (name, value) in self.state.overload.stats() {
            let _ = writeln!(out, "{} {value}", prometheus_name(&name));
        }
        let _ = writeln!(
            out,
            "envoy_server_live {}",
            u8::from(*self.agent.ready().borrow())
        );
        // Istio's metrics (OpenMetrics text; the trailing EOF marker is dropped so both parts
        // form one exposition).
        let istio = self.state.metrics.encode();
        out.push_str(istio.trim_end().trim_end_matches("# EOF").trim_end());
        out.push('\n');
        out
    }
}

/// Serves the admin endpoint on an already bound socket.
pub async fn serve(admin: Admin, socket: TcpListener) {
    loop {
        let Ok((stream, _)) = socket.accept().await else {
            continue;
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            // A place under the global connection limit, held while the connection lasts.
            let state = admin.state.clone();
            let admitted = admin.connections.counted().map(|ignore| {
                state
                    .connection_limits
                    .admit_global(ignore, &state.counters.downstream_cx_active)
            });
            if let Some(Err(_)) = admitted {
                state
                    .counters
                    .downstream_global_cx_overflow
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!("admin connection refused: over the global connection limit");
                return;
            }
            let service = service_fn(move |req| {
                let resp = admin.respond(&req);
                async move { Ok::<_, std::convert::Infallible>(resp) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Binds the admin address.
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

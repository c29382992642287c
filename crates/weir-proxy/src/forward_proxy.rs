//! The HTTP forward-proxy port (`HTTP_PROXY` / `https_proxy`): each request or CONNECT tunnel
//! is handled as if it had been redirected to the proxy by its destination — the listener that
//! owns the destination port (or the original-destination listener's own chains) decides,
//! exactly as for a redirected connection. Plain requests (`GET http://host/…`) go through that
//! listener's HTTP connection manager; `CONNECT host:port` tunnels go through its listener
//! inspectors and filter chains (TLS by SNI, TCP proxy, or HTTP inside the tunnel).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::body::{self, RequestBody};
use crate::convert::Target;
use crate::http::{Downstream, HttpContext, handle};
use crate::listener::{ChainKind, ConnectionFacts, HttpManagerConfig, ListenerConfig, RouteSource};
use crate::pool::Body;
use crate::serve::dispatch;
use crate::state::ProxyState;

/// Where a request or tunnel goes: host, port, and the address used to find its listener.
fn destination(host: &str, port: u16) -> (Target, SocketAddr) {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => (
            Target::Socket(SocketAddr::new(ip, port)),
            SocketAddr::new(ip, port),
        ),
        // A name: its listener is the wildcard one for the port.
        Err(_) => (
            Target::Name(bare.to_string(), port),
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
        ),
    }
}

fn bad_gateway(text: &str) -> Response<Body> {
    let mut resp = Response::new(body::full(text.to_string()));
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    resp
}

/// Runs the forward-proxy port until the task is dropped.
pub async fn run(state: Arc<ProxyState>, socket: TcpListener) {
    loop {
        let Ok((stream, peer)) = socket.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| serve(state.clone(), peer, req));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "forward-proxy connection ended with an error");
            }
        });
    }
}

async fn serve(
    state: Arc<ProxyState>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, crate::http::StreamReset> {
    if req.method() == Method::CONNECT {
        return Ok(connect(state, peer, req));
    }
    let Some(authority) = crate::http::authority(&req) else {
        return Ok(bad_gateway(
            "a proxied request needs an absolute URI or a host header",
        ));
    };
    let (host, port) = split_authority(&authority, 80);
    let (target, address) = destination(&host, port);
    let snapshot = state.snapshot();
    let Some(listener) = snapshot.listener_for_redirected(address) else {
        return Ok(bad_gateway(&format!("no listener takes traffic for {authority}")));
    };
    let facts = ConnectionFacts {
        destination: Some(address),
        transport: "raw_buffer",
        application_protocols: vec!["http/1.1".into()],
        ..Default::default()
    };
    let manager: Arc<HttpManagerConfig> = match listener.select(&facts).map(|c| &c.kind) {
        Some(ChainKind::Http(m)) => m.clone(),
        Some(ChainKind::Tcp(tcp)) => {
            // A TCP chain for this port: send the request as it is to that chain's cluster.
            let cluster = match &tcp.clusters {
                crate::action::Clusters::One(c) => c.clone(),
                crate::action::Clusters::Weighted(t, _) => {
                    t.first().map(|t| t.cluster.clone()).unwrap_or_default()
                }
                crate::action::Clusters::FromHeader(_) => String::new(),
            };
            match HttpManagerConfig::forward_to(&cluster) {
                Ok(m) => Arc::new(m),
                Err(e) => return Ok(bad_gateway(&e)),
            }
        }
        None => {
            return Ok(bad_gateway(&format!(
                "no filter chain of listener {} takes {authority}",
                listener.name
            )));
        }
    };
    let ctx = Arc::new(HttpContext {
        state,
        manager,
        downstream: Downstream {
            peer,
            local: address,
            tls: false,
            original_dst: Some(target),
        },
        inbound: false,
        streams: None,
        request_timer: crate::request_timer::RequestTimer::new(),
    });
    let mut resp = handle(ctx.clone(), req.map(RequestBody::Hyper)).await?;
    crate::http::keepalive_under_overload(&ctx, false, &mut resp);
    Ok(resp)
}

fn split_authority(authority: &str, default_port: u16) -> (String, u16) {
    if let Some(rest) = authority.strip_prefix('[') {
        if let Some((host, port)) = rest.split_once("]:") {
            return (format!("[{host}]"), port.parse().unwrap_or(default_port));
        }
        return (authority.to_string(), default_port);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h.to_string(), p.parse().unwrap_or(default_port)),
        _ => (authority.to_string(), default_port),
    }
}

fn connect(state: Arc<ProxyState>, peer: SocketAddr, mut req: Request<Incoming>) -> Response<Body> {
    let Some(authority) = req.uri().authority().map(|a| a.as_str().to_string()) else {
        return bad_gateway("CONNECT needs host:port");
    };
    let (host, port) = split_authority(&authority, 443);
    let (target, address) = destination(&host, port);
    let snapshot = state.snapshot();
    let Some(listener) = snapshot.listener_for_redirected(address) else {
        return bad_gateway(&format!("no listener takes traffic for {authority}"));
    };
    let upgrade = hyper::upgrade::on(&mut req);
    // Boxed, as `serve` boxes a connection's task (its future is large).
    tokio::spawn(Box::pin(async move {
        match upgrade.await {
            Ok(upgraded) => {
                dispatch(
                    state,
                    listener,
                    TokioIo::new(upgraded),
                    peer,
                    address,
                    Some(target),
                )
                .await;
            }
            Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
        }
    }));
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::OK;
    resp
}

impl ListenerConfig {
    /// Whether the listener is for outbound traffic (Envoy's `traffic_direction`, or named so
    /// by Istio).
    pub fn traffic_direction_outbound(&self) -> bool {
        self.source.traffic_direction == 2 || self.name == "virtualOutbound"
    }
}

impl HttpManagerConfig {
    /// A connection manager that sends every request to one cluster (plain HTTP through the
    /// forward proxy to a port whose listener only proxies TCP).
    pub fn forward_to(cluster: &str) -> Result<Self, String> {
        use envoy_types::pb::envoy::config::route::v3::{
            Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action, route_match,
        };
        let config = RouteConfiguration {
            name: format!("forward:{cluster}"),
            virtual_hosts: vec![VirtualHost {
                name: cluster.to_string(),
                domains: vec!["*".into()],
                routes: vec![Route {
                    r#match: Some(RouteMatch {
                        path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                        ..Default::default()
                    }),
                    action: Some(route::Action::Route(RouteAction {
                        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.to_string())),
                        timeout: Some(envoy_types::pb::google::protobuf::Duration { seconds: 0, nanos: 0 }),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let routes = crate::routes::CompiledRoutes::compile(&config).map_err(|e| e.to_string())?;
        Ok(HttpManagerConfig::with_routes(RouteSource::Inline(Arc::new(
            routes,
        ))))
    }
}

//! The control plane's monitoring endpoint: `/metrics` (Prometheus text) and
//! `/debug/rejections` (the NACKs that stand, as JSON), like istiod's port 15014.

use std::net::SocketAddr;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use weir_xds::server::DiscoveryServer;

fn respond(server: &DiscoveryServer, path: &str) -> Response<Full<Bytes>> {
    let (status, kind, body) = match path {
        "/metrics" | "/stats/prometheus" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            server.metrics().prometheus(),
        ),
        "/debug/rejections" => {
            let list: Vec<_> = server
                .rejections()
                .into_iter()
                .map(|r| {
                    json!({
                        "proxy": r.proxy, "typeUrl": r.type_url, "version": r.version,
                        "reason": r.reason, "resources": r.resources,
                    })
                })
                .collect();
            (
                StatusCode::OK,
                "application/json",
                serde_json::to_string_pretty(&list).unwrap_or_default(),
            )
        }
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics or /debug/rejections\n".into(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(kind) {
        response.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    response
}

/// Serves the endpoint on `addr` in the background; returns the bound address.
pub async fn serve(addr: SocketAddr, server: DiscoveryServer) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let server = server.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let response = respond(&server, req.uri().path());
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(bound)
}

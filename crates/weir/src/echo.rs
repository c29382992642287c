//! `weir echo`: a small HTTP/1.1 and h2c backend for demos and tests. It answers every request
//! with what it received (method, path, headers, its own name), and has a few controls:
//! `/status/<code>` answers with that status, `/delay/<ms>` waits first, `/flaky/<key>/<n>`
//! answers 503 to the first `n` requests for `key` and 200 afterwards, a request with `Upgrade` is
//! switched (101) and its bytes echoed back, and the headers
//! `x-echo-status` / `x-echo-delay-ms` do the same as the first two on any path;
//! `/stream/<n>/<ms>` sends `n` chunks `ms` milliseconds apart. `--status`
//! changes the answer to everything else (a failing instance), and `GET /__requests` lists
//! the requests received (method, authority, path), newest last.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;

/// `weir echo` arguments.
#[derive(clap::Args)]
pub struct Args {
    /// Where to listen (port 0 picks a free port; the address is printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Also listen on this unix-domain socket (plain HTTP).
    #[arg(long, value_name = "PATH")]
    unix: Option<String>,
    /// The name this backend reports (e.g. `reviews-v2`).
    #[arg(long, default_value = "echo")]
    name: String,
    /// The status of answers that ask for nothing else (e.g. 500 for a failing instance).
    #[arg(long, value_name = "CODE", default_value_t = 200, value_parser = clap::value_parser!(u16).range(200..600))]
    status: u16,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<String>,
    /// The private key (PEM) for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<String>,
}

fn tls_acceptor(cert: &str, key: &str) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| format!("{cert}: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{key}: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}

/// The bodies this backend answers with.
type EchoBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(bytes: impl Into<Bytes>) -> EchoBody {
    Full::new(bytes.into()).boxed()
}

/// `/stream/<n>/<ms>`: `n` chunks of `chunk <i>\n`, one every `ms` milliseconds, without a
/// length (a body still streaming when a proxy's timeout expires).
fn stream(path: &str) -> Option<EchoBody> {
    let rest = path.strip_prefix("/stream/")?;
    let (n, ms) = rest.split_once('/')?;
    let (n, ms): (u32, u64) = (n.parse().ok()?, ms.parse().ok()?);
    let chunks = futures_util::stream::unfold(0u32, move |i| async move {
        if i == n {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let frame = hyper::body::Frame::data(Bytes::from(format!("chunk {i}\n")));
        Some((Ok::<_, Infallible>(frame), i + 1))
    });
    Some(http_body_util::StreamBody::new(chunks).boxed())
}

/// Requests seen per `/flaky/<key>` key.
static FLAKY: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, u64>>> =
    std::sync::LazyLock::new(Default::default);

fn flaky(path: &str) -> Option<StatusCode> {
    let rest = path.strip_prefix("/flaky/")?;
    let (key, n) = rest.rsplit_once('/')?;
    let failures: u64 = n.parse().ok()?;
    let mut seen = FLAKY.lock().ok()?;
    let count = seen.entry(key.to_string()).or_insert(0);
    *count += 1;
    Some(if *count <= failures {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    })
}

/// What one backend is and has seen.
struct Backend {
    name: String,
    status: StatusCode,
    seen: std::sync::Mutex<std::collections::VecDeque<serde_json::Value>>,
}

/// Requests kept for `/__requests`.
const SEEN_LIMIT: usize = 1000;

impl Backend {
    fn record(&self, req: &Request<Incoming>) {
        let authority = req
            .headers()
            .get(hyper::header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri().authority().map(hyper::http::uri::Authority::as_str))
            .unwrap_or_default();
        let entry =
            json!({"method": req.method().as_str(), "authority": authority, "path": req.uri().path()});
        if let Ok(mut seen) = self.seen.lock() {
            if seen.len() == SEEN_LIMIT {
                seen.pop_front();
            }
            seen.push_back(entry);
        }
    }

    fn seen(&self) -> Response<EchoBody> {
        let list: Vec<serde_json::Value> = self
            .seen
            .lock()
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        let mut resp = Response::new(full(json!(list).to_string()));
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        resp
    }
}

fn control(req: &Request<Incoming>, default_status: StatusCode) -> (StatusCode, Duration) {
    if let Some(status) = flaky(req.uri().path()) {
        return (status, Duration::ZERO);
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let mut segments = req.uri().path().trim_start_matches('/').split('/');
    let (first, second) = (segments.next().unwrap_or_default(), segments.next());
    let path_number = second.and_then(|s| s.parse::<u64>().ok());
    let status = match (first, path_number) {
        ("status", Some(code)) => Some(code),
        _ => header("x-echo-status"),
    }
    .and_then(|c| u16::try_from(c).ok())
    .and_then(|c| StatusCode::from_u16(c).ok())
    .unwrap_or(default_status);
    let delay = match (first, path_number) {
        ("delay", Some(ms)) => Some(ms),
        _ => header("x-echo-delay-ms"),
    }
    .map_or(Duration::ZERO, Duration::from_millis);
    (status, delay)
}

/// Answers an `Upgrade` request with 101 and then echoes every byte on the upgraded
/// connection (enough to see an upgrade pass through a proxy; no WebSocket framing).
fn upgrade(name: &str, mut req: Request<Incoming>) -> Response<EchoBody> {
    let protocol = req.headers().get(hyper::header::UPGRADE).cloned();
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
            let _ = tokio::io::copy(&mut r, &mut w).await;
        }
    });
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("upgrade"),
    );
    if let Some(p) = protocol {
        h.insert(hyper::header::UPGRADE, p);
    }
    if let Ok(v) = hyper::header::HeaderValue::from_str(name) {
        h.insert("x-echo-server", v);
    }
    resp
}

async fn answer(
    backend: std::sync::Arc<Backend>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<EchoBody>, Infallible> {
    if req.uri().path() == "/__requests" {
        return Ok(backend.seen());
    }
    backend.record(&req);
    let name = &backend.name;
    if req.headers().contains_key(hyper::header::UPGRADE) {
        return Ok(upgrade(name, req));
    }
    if let Some(body) = stream(req.uri().path()) {
        let mut resp = Response::new(body);
        if let Ok(v) = hyper::header::HeaderValue::from_str(name) {
            resp.headers_mut().insert("x-echo-server", v);
        }
        return Ok(resp);
    }
    let (status, delay) = control(&req, backend.status);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                json!(String::from_utf8_lossy(v.as_bytes())),
            )
        })
        .collect();
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let version = format!("{:?}", req.version());
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let reply = json!({
        "server": name,
        "method": method,
        "uri": uri,
        "protocol": version,
        "peer": peer.to_string(),
        "headers": headers,
        "body_bytes": body.len(),
    });
    let mut resp = Response::new(full(format!("{reply:#}\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = hyper::header::HeaderValue::from_str(name) {
        resp.headers_mut().insert("x-echo-server", v);
    }
    Ok(resp)
}

/// Runs the command.
pub fn run(args: &Args) -> ExitCode {
    crate::logging::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("weir echo: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => match tls_acceptor(c, k) {
            Ok(a) => Some(a),
            Err(e) => {
                eprintln!("weir echo: {e}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    let backend = std::sync::Arc::new(Backend {
        name: args.name.clone(),
        status: StatusCode::from_u16(args.status).unwrap_or(StatusCode::OK),
        seen: std::sync::Mutex::default(),
    });
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("weir echo: cannot listen on {}: {e}", args.listen);
                return ExitCode::from(2);
            }
        };
        let local = listener.local_addr().map_or(args.listen, |a| a);
        println!("weir echo: {} listening on {local}", args.name);
        if let Some(path) = &args.unix {
            let _ = std::fs::remove_file(path);
            match tokio::net::UnixListener::bind(path) {
                Ok(unix) => {
                    println!("weir echo: {} listening on unix:{path}", args.name);
                    let backend = backend.clone();
                    tokio::spawn(async move {
                        let peer = SocketAddr::from(([0, 0, 0, 0], 0));
                        loop {
                            let Ok((stream, _)) = unix.accept().await else { continue };
                            let backend = backend.clone();
                            tokio::spawn(async move {
                                let service = service_fn(move |req| answer(backend.clone(), peer, req));
                                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                    .await;
                            });
                        }
                    });
                }
                Err(e) => {
                    eprintln!("weir echo: cannot listen on unix:{path}: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, peer)) = accepted else { continue };
                    let backend = backend.clone();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req| answer(backend.clone(), peer, req));
                        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                        match tls {
                            None => {
                                let _ = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await;
                            }
                            Some(acceptor) => {
                                if let Ok(stream) = acceptor.accept(stream).await {
                                    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                                }
                            }
                        }
                    });
                }
                _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
            }
        }
    })
}

//! The HTTP connection manager: for each request, the route configuration's virtual host and
//! route, then what Envoy's filters do in order — CORS, fault injection, and the router
//! ([`crate::router`]) — with Envoy's header handling (`x-request-id`, `x-forwarded-*`,
//! `x-envoy-*`) and its local replies (404 without a route, 503 without a healthy upstream,
//! 504 on timeout), each with a response flag for the metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::header::{HOST, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};

use crate::action::{Abort, Action, Cors, Fault, Redirect, RedirectPath};
use crate::body::{self, RequestBody};
use crate::convert::Target;
use crate::listener::{HeadersWithUnderscores, HttpManagerConfig, RouteSource, ServerHeader};
use crate::names;
use crate::pool::Body;
use crate::routes::{CompiledRoute, CompiledRoutes, CompiledVirtualHost};
use crate::state::ProxyState;
use crate::stats::{Destination, RequestRecord};

/// The downstream side of a request.
#[derive(Clone, Debug)]
pub struct Downstream {
    /// The client.
    pub peer: SocketAddr,
    /// The address the client connected to (its original destination).
    pub local: SocketAddr,
    /// Whether the downstream connection is TLS.
    pub tls: bool,
    /// The destination for ORIGINAL_DST and dynamic-forward-proxy clusters.
    pub original_dst: Option<Target>,
}

/// Everything a request needs besides itself.
#[derive(Clone, Debug)]
pub struct HttpContext {
    /// The proxy.
    pub state: Arc<ProxyState>,
    /// The connection manager that took the request.
    pub manager: Arc<HttpManagerConfig>,
    /// The downstream connection.
    pub downstream: Downstream,
    /// Traffic to this proxy's own workload (metrics report as destination).
    pub inbound: bool,
    /// What the downstream connection has carried (its HTTP/2 streams counted), for its idle
    /// timeout (none for a request taken through the forward-proxy port).
    pub streams: Option<Arc<crate::idle::Streams>>,
    /// The timer the connection's requests share for their route timeouts.
    pub request_timer: crate::request_timer::RequestTimer,
}

/// Envoy's response flags (for metrics and `x-weir-flags`).
pub mod flags {
    /// No route.
    pub const NO_ROUTE: &str = "NR";
    /// No healthy upstream.
    pub const NO_HEALTHY_UPSTREAM: &str = "UH";
    /// Upstream connection failure.
    pub const UPSTREAM_CONNECTION_FAILURE: &str = "UF";
    /// Upstream request timeout.
    pub const UPSTREAM_TIMEOUT: &str = "UT";
    /// Stream idle timeout.
    pub const STREAM_IDLE_TIMEOUT: &str = "SI";
    /// Upstream overflow (circuit breaking).
    pub const UPSTREAM_OVERFLOW: &str = "UO";
    /// Retry limit exceeded / upstream reset.
    pub const UPSTREAM_RESET: &str = "UR";
    /// Retry limit exceeded.
    pub const RETRY_LIMIT: &str = "URX";
    /// The route's cluster does not exist.
    pub const NO_CLUSTER: &str = "NC";
    /// Delay injected.
    pub const DELAY_INJECTED: &str = "DI";
    /// Fault injected.
    pub const FAULT_INJECTED: &str = "FI";
    /// Downstream connection termination.
    pub const DOWNSTREAM_TERMINATION: &str = "DC";
    /// Refused by the overload manager.
    pub const OVERLOAD_MANAGER: &str = "OM";
    /// Upgrade refused / invalid request.
    pub const INVALID: &str = "DPE";
    /// No flag.
    pub const NONE: &str = "-";
}

/// Envoy's answer to a request refused by `stop_accepting_requests`: `503 envoy overloaded`
/// (flag `OM`), with `x-envoy-local-overloaded: true` when the connection manager's
/// `append_local_overload` asks for it; counted in `http.downstream_rq_overload_close`.
fn overloaded(ctx: &HttpContext, started: Instant) -> Response<Body> {
    ctx.state
        .counters
        .downstream_rq_overload_close
        .fetch_add(1, Ordering::Relaxed);
    let mut resp = finish_local(
        ctx,
        started,
        StatusCode::SERVICE_UNAVAILABLE,
        "envoy overloaded",
        flags::OVERLOAD_MANAGER,
        None,
    );
    if ctx.manager.append_local_overload {
        resp.headers_mut()
            .insert(names::X_ENVOY_LOCAL_OVERLOADED, HeaderValue::from_static("true"));
    }
    resp
}

/// The connection manager's `headers_with_underscores_action` on a request whose headers name
/// has an underscore (some servers read `_` as `-`): `DROP_HEADER` removes them, each counted;
/// `REJECT_REQUEST` answers an HTTP/1 request `400` and closes the connection, and resets an
/// HTTP/2 stream, as Envoy's codecs do.
fn screen_underscores(
    ctx: &HttpContext,
    req: &mut Request<RequestBody>,
    started: Instant,
) -> Result<Option<Response<Body>>, StreamReset> {
    let underscored = |name: &http::header::HeaderName| name.as_str().contains('_');
    if !req.headers().keys().any(underscored) {
        return Ok(None);
    }
    let http2 = req.version() == http::Version::HTTP_2;
    let counters = &ctx.state.counters;
    match ctx.manager.headers_with_underscores {
        HeadersWithUnderscores::Allow => Ok(None),
        HeadersWithUnderscores::Drop => {
            let names: Vec<_> = req.headers().keys().filter(|n| underscored(n)).cloned().collect();
            let dropped = &counters.dropped_headers_with_underscores[usize::from(http2)];
            for name in names {
                // Each value is a header of its own, as Envoy counts them.
                let values = req.headers().get_all(&name).iter().count();
                req.headers_mut().remove(&name);
                dropped.fetch_add(values as u64, Ordering::Relaxed);
            }
            Ok(None)
        }
        HeadersWithUnderscores::Reject => {
            counters.requests_rejected_with_underscores_in_headers[usize::from(http2)]
                .fetch_add(1, Ordering::Relaxed);
            if http2 {
                return Err(StreamReset("a header name has an underscore"));
            }
            let mut resp = finish_local(ctx, started, StatusCode::BAD_REQUEST, "", flags::INVALID, None);
            resp.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            Ok(Some(resp))
        }
    }
}

/// Applies the connection manager's path normalisation to a request: rewrites its path, or
/// answers for it — 400 when the path is refused (or a gRPC request would be redirected:
/// gRPC clients do not follow redirects), 307 to the path with its escaped slashes decoded.
fn normalize_path(
    ctx: &HttpContext,
    req: &mut Request<RequestBody>,
    started: Instant,
) -> Option<Response<Body>> {
    use crate::path_normalization::Outcome;
    let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let counters = &ctx.state.counters;
    let refuse = || {
        counters
            .downstream_rq_failed_path_normalization
            .fetch_add(1, Ordering::Relaxed);
        Some(finish_local(
            ctx,
            started,
            StatusCode::BAD_REQUEST,
            "",
            flags::NONE,
            None,
        ))
    };
    match ctx.manager.path.apply(path_and_query) {
        Outcome::Unchanged => None,
        Outcome::Reject => refuse(),
        Outcome::Redirect(_) if is_grpc(req.headers()) => refuse(),
        Outcome::Redirect(location) => {
            counters
                .downstream_rq_redirected_with_normalized_path
                .fetch_add(1, Ordering::Relaxed);
            let mut resp = finish_local(
                ctx,
                started,
                StatusCode::TEMPORARY_REDIRECT,
                "",
                flags::NONE,
                None,
            );
            match HeaderValue::from_str(&location) {
                Ok(v) => {
                    resp.headers_mut().insert(http::header::LOCATION, v);
                    Some(resp)
                }
                Err(_) => refuse(),
            }
        }
        Outcome::Rewritten(path) => match with_path(req.uri(), &path) {
            Some(uri) => {
                *req.uri_mut() = uri;
                None
            }
            None => refuse(),
        },
    }
}

/// The URI with another path and query (scheme and authority kept).
fn with_path(uri: &Uri, path_and_query: &str) -> Option<Uri> {
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(http::uri::PathAndQuery::try_from(path_and_query).ok()?);
    Uri::from_parts(parts).ok()
}

/// Whether a request is gRPC: its content type is `application/grpc` or `application/grpc+…`
/// (Envoy's `Grpc::Common::hasGrpcContentType`).
fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("application/grpc"))
        .is_some_and(|rest| rest.is_empty() || rest.len() > 1 && rest.starts_with('+'))
}

/// A reply generated by the proxy itself.
pub fn local_reply(manager: &HttpManagerConfig, status: StatusCode, text: &str) -> Response<Body> {
    let mut resp = Response::new(if text.is_empty() {
        body::empty()
    } else {
        body::full(text.to_string())
    });
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if !text.is_empty() {
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    set_server_header(manager, h);
    resp
}

/// The `server` header of a response, as the connection manager's
/// `server_header_transformation` wants it.
pub fn set_server_header(manager: &HttpManagerConfig, headers: &mut http::HeaderMap) {
    match manager.server_header {
        ServerHeader::Overwrite => {
            headers.insert(http::header::SERVER, manager.server_name.clone());
        }
        ServerHeader::AppendIfAbsent => {
            if !headers.contains_key(http::header::SERVER) {
                headers.insert(http::header::SERVER, manager.server_name.clone());
            }
        }
        ServerHeader::PassThrough => {}
    }
}

/// The authority of a request: the URI's (HTTP/2, absolute form), else `Host`.
pub fn authority<B>(req: &Request<B>) -> Option<String> {
    req.uri().authority().map(|a| a.as_str().to_string()).or_else(|| {
        req.headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
    })
}

fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .rsplit_once("]:")
            .map_or(authority, |(h, _)| &authority[..h.len() + 1]);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !host.contains(':') => host,
        _ => authority,
    }
}

/// Query parameters as sent (not decoded), for matching.
pub fn query_pairs(query: Option<&str>) -> Vec<(&str, &str)> {
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return Vec::new();
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect()
}

/// Headers that end at this hop (besides `connection` and `upgrade`, handled with upgrades).
/// A `static`, not a `const`: a const array of names is built and dropped at every use.
static HOP_BY_HOP: [http::header::HeaderName; 5] = [
    names::KEEP_ALIVE,
    names::PROXY_CONNECTION,
    http::header::TRANSFER_ENCODING,
    http::header::PROXY_AUTHENTICATE,
    http::header::PROXY_AUTHORIZATION,
];

/// Whether a header may end at this hop: a hop-by-hop name, `connection` (which may name more),
/// `upgrade` or `te`.
pub fn is_hop_by_hop(name: &http::header::HeaderName) -> bool {
    // One match on the (lowercase) text instead of eight name comparisons: it runs for every
    // header of every request and response. The names are `HOP_BY_HOP`'s and the three above.
    matches!(
        name.as_str(),
        "connection"
            | "upgrade"
            | "te"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "proxy-authenticate"
            | "proxy-authorization"
    )
}

/// Removes hop-by-hop headers (and those `connection` names), except `upgrade` when upgrading.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One look at the names first: most messages carry none of these, and a removal costs a
    // hash and a probe each.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if headers.contains_key(http::header::CONNECTION) {
        strip_connection_named(headers, keep_upgrade);
    }
    strip_fixed(headers, keep_upgrade);
}

fn strip_connection_named(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<String> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !(n.is_empty() || keep_upgrade && n == "upgrade"))
        .collect();
    for n in named {
        headers.remove(n.as_str());
    }
}

fn strip_fixed(headers: &mut HeaderMap, keep_upgrade: bool) {
    for n in &HOP_BY_HOP {
        headers.remove(n);
    }
    if !keep_upgrade {
        headers.remove(http::header::CONNECTION);
        headers.remove(http::header::UPGRADE);
    }
    if headers.get(http::header::TE).is_some_and(|v| v != "trailers") {
        headers.remove(http::header::TE);
    }
}

/// A random UUID v4 in its text form, as Envoy generates for `x-request-id` (written digit by
/// digit: this runs for every request, and `format!` with padding cost more than the rest of
/// the header handling).
pub fn uuid4() -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let a = (fastrand::u64(..) & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
    let b = (fastrand::u64(..) & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_be_bytes());
    bytes[8..].copy_from_slice(&b.to_be_bytes());
    let mut out = [b'-'; 36];
    // Where each byte's two digits go: 4, 2, 2, 2 and 6 bytes between the dashes.
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    for (byte, at) in bytes.iter().zip(AT) {
        out[at] = HEX[usize::from(byte >> 4)];
        out[at + 1] = HEX[usize::from(byte & 0xf)];
    }
    out
}

/// The route a request matched, with the virtual host and configuration it belongs to.
#[derive(Debug)]
pub struct Matched<'a> {
    /// The route configuration.
    pub routes: &'a CompiledRoutes,
    /// The virtual host.
    pub vhost: &'a CompiledVirtualHost,
    /// The route.
    pub route: &'a CompiledRoute,
}

/// A request refused by resetting its HTTP/2 stream rather than answering it, as Envoy's codec
/// refuses one (hyper's server resets the stream when its service fails).
#[derive(Debug, thiserror::Error)]
#[error("stream reset: {0}")]
pub struct StreamReset(pub &'static str);

/// The overload manager's `disable_http_keepalive` on an answer about to be sent (Envoy's place
/// for it: the response head): for that share of answers, the connection closes after it —
/// `connection: close` for HTTP/1 (not on an upgrade's `101`), a GOAWAY for HTTP/2, its open
/// streams finishing; counted in `http.downstream_cx_overload_disable_keepalive`.
pub fn keepalive_under_overload(ctx: &HttpContext, http2: bool, resp: &mut Response<Body>) {
    if !ctx
        .state
        .overload
        .sheds(crate::overload::Action::DisableHttpKeepalive)
        || ctx.manager.bypass_overload_manager
        || resp.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        return;
    }
    ctx.state
        .counters
        .downstream_cx_overload_disable_keepalive
        .fetch_add(1, Ordering::Relaxed);
    if !http2 {
        resp.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    } else if let Some(streams) = &ctx.streams {
        streams.close_gracefully();
    }
}

/// Handles one request. Errors are local replies, but for the rare request Envoy refuses by
/// resetting its HTTP/2 stream ([`StreamReset`]). The servers that hand requests here apply
/// [`keepalive_under_overload`] to what comes back.
pub async fn handle(
    ctx: Arc<HttpContext>,
    mut req: Request<RequestBody>,
) -> Result<Response<Body>, StreamReset> {
    let ctx = &ctx;
    let started = Instant::now();
    // An HTTP/2 stream stays open (for the idle timeout) until its response body is done.
    let stream = match &ctx.streams {
        Some(streams) if req.version() == http::Version::HTTP_2 => Some(streams.open()),
        Some(streams) => {
            streams.http1_request();
            None
        }
        None => None,
    };
    ctx.state
        .counters
        .downstream_rq_total
        .fetch_add(1, Ordering::Relaxed);
    if ctx.manager.headers_with_underscores != HeadersWithUnderscores::Allow
        && let Some(reply) = screen_underscores(ctx, &mut req, started)?
    {
        return Ok(reply);
    }
    // The overload manager's `stop_accepting_requests`, as soon as the head is read (Envoy's
    // place for it).
    if !ctx.manager.bypass_overload_manager && ctx.state.overload.sheds_request() {
        return Ok(overloaded(ctx, started));
    }
    let snapshot = ctx.state.snapshot();
    let routes = match &ctx.manager.routes {
        RouteSource::Inline(r) => Some(r.clone()),
        RouteSource::Rds(name) => snapshot.routes.get(name).cloned(),
    };
    let Some(routes) = routes else {
        return Ok(finish_local(
            ctx,
            started,
            StatusCode::NOT_FOUND,
            "",
            flags::NO_ROUTE,
            None,
        ));
    };
    let Some(authority) = authority(&req) else {
        return Ok(finish_local(
            ctx,
            started,
            StatusCode::BAD_REQUEST,
            "missing host header",
            flags::INVALID,
            None,
        ));
    };
    // The path as the connection manager wants it, before anything reads it (Envoy's
    // `maybeNormalizePath`, after the host check).
    if ctx.manager.path.is_active()
        && let Some(resp) = normalize_path(ctx, &mut req, started)
    {
        return Ok(resp);
    }
    let match_authority = if ctx.manager.strip_any_host_port || routes.ignore_port_in_host_matching {
        strip_port(&authority)
    } else {
        authority.as_str()
    };
    let Some(vhost) = routes.virtual_host(match_authority) else {
        ctx.state.counters.no_route.fetch_add(1, Ordering::Relaxed);
        return Ok(finish_local(
            ctx,
            started,
            StatusCode::NOT_FOUND,
            "",
            flags::NO_ROUTE,
            None,
        ));
    };
    let route = {
        let query = query_pairs(req.uri().query());
        vhost.route(req.uri().path(), req.headers(), &query)
    };
    let Some(route) = route else {
        ctx.state.counters.no_route.fetch_add(1, Ordering::Relaxed);
        return Ok(finish_local(
            ctx,
            started,
            StatusCode::NOT_FOUND,
            "",
            flags::NO_ROUTE,
            None,
        ));
    };
    let matched = Matched {
        routes: &routes,
        vhost,
        route,
    };
    if vhost.require_tls && !ctx.downstream.tls {
        let location = format!(
            "https://{}{}",
            authority,
            req.uri().path_and_query().map_or("/", |p| p.as_str())
        );
        let mut resp = local_reply(&ctx.manager, StatusCode::MOVED_PERMANENTLY, "");
        if let Ok(v) = HeaderValue::from_str(&location) {
            resp.headers_mut().insert(http::header::LOCATION, v);
        }
        return Ok(resp);
    }
    // CORS.
    let cors = ctx
        .manager
        .cors_filter
        .then(|| route.filters.cors.as_ref().or(vhost.filters.cors.as_ref()))
        .flatten()
        .filter(|c| c.applies());
    let origin = cors
        .and_then(|_| req.headers().get(http::header::ORIGIN))
        .and_then(|o| o.to_str().ok())
        .map(str::to_string);
    if let (Some(cors), Some(origin)) = (cors, origin.as_deref())
        && let Some(resp) = preflight(&ctx.manager, cors, &req, origin)
    {
        return Ok(resp);
    }
    // Fault injection.
    let fault = ctx
        .manager
        .fault_filter
        .then(|| {
            route
                .filters
                .fault
                .as_ref()
                .or(vhost.filters.fault.as_ref())
                .or(ctx.manager.fault.as_ref())
        })
        .flatten();
    let mut injected = flags::NONE;
    if let Some(fault) = fault {
        match apply_fault(&ctx.manager, fault, req.headers()).await {
            FaultOutcome::Pass => {}
            FaultOutcome::Delayed => injected = flags::DELAY_INJECTED,
            FaultOutcome::Abort(resp) => {
                let status = resp.status().as_u16();
                record(
                    ctx,
                    started,
                    &Destination::from_cluster(&route_cluster_hint(route)),
                    status,
                    None,
                    flags::FAULT_INJECTED,
                    0,
                );
                return Ok(*resp);
            }
        }
    }
    // Upstream attempts made, for Envoy's `x-envoy-attempt-count` response header.
    let mut attempts = 0;
    let mut resp = match &route.action {
        Action::Direct(status, text) => {
            let mut resp = Response::new(body::full(text.clone()));
            *resp.status_mut() = *status;
            if !text.is_empty() {
                resp.headers_mut()
                    .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            }
            record(
                ctx,
                started,
                &Destination::from_cluster("direct_response"),
                status.as_u16(),
                None,
                injected,
                0,
            );
            resp
        }
        Action::Redirect(r) => {
            let resp = redirect(ctx, r, &req, &authority, route);
            record(
                ctx,
                started,
                &Destination::from_cluster("redirect"),
                resp.status().as_u16(),
                None,
                injected,
                0,
            );
            resp
        }
        Action::Forward(forward) => {
            let (resp, tries) =
                crate::router::forward(ctx, &matched, forward, req, &authority, started, injected).await;
            attempts = tries;
            resp
        }
    };
    // Response headers: route, virtual host, configuration (weighted-cluster ones are applied
    // by the router), then Envoy's attempt count, CORS and the server header.
    route.response_headers.apply(resp.headers_mut());
    matched.vhost.response_headers.apply(resp.headers_mut());
    matched.routes.response_headers.apply(resp.headers_mut());
    if matched.vhost.attempt_count_in_response && attempts > 0 {
        resp.headers_mut()
            .insert(names::X_ENVOY_ATTEMPT_COUNT, HeaderValue::from(attempts));
    }
    if let (Some(cors), Some(origin)) = (cors, origin.as_deref()) {
        decorate_cors(cors, origin, resp.headers_mut());
    }
    set_server_header(&ctx.manager, resp.headers_mut());
    Ok(match stream {
        Some(stream) => resp.map(|body| crate::idle::hold(body, stream)),
        None => resp,
    })
}

fn route_cluster_hint(route: &CompiledRoute) -> String {
    match &route.action {
        Action::Forward(f) => match &f.clusters {
            crate::action::Clusters::One(c) => c.clone(),
            crate::action::Clusters::Weighted(t, _) => {
                t.first().map(|t| t.cluster.clone()).unwrap_or_default()
            }
            crate::action::Clusters::FromHeader(_) => String::new(),
        },
        _ => String::new(),
    }
}

/// Records a finished request in Istio's metrics.
pub fn record(
    ctx: &HttpContext,
    started: Instant,
    destination: &Destination,
    status: u16,
    grpc_status: Option<&str>,
    flag: &'static str,
    response_bytes: u64,
) {
    ctx.state.metrics.record_request(&RequestRecord {
        destination,
        protocol: "http",
        status,
        grpc_status,
        flags: flag,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        request_bytes: 0,
        response_bytes,
        inbound: ctx.inbound,
    });
}

/// A local reply, recorded.
pub fn finish_local(
    ctx: &HttpContext,
    started: Instant,
    status: StatusCode,
    text: &str,
    flag: &'static str,
    cluster: Option<&str>,
) -> Response<Body> {
    let destination = Destination::from_cluster(cluster.unwrap_or("unknown"));
    record(
        ctx,
        started,
        &destination,
        status.as_u16(),
        None,
        flag,
        text.len() as u64,
    );
    local_reply(&ctx.manager, status, text)
}

fn preflight(
    manager: &HttpManagerConfig,
    cors: &Cors,
    req: &Request<RequestBody>,
    origin: &str,
) -> Option<Response<Body>> {
    if req.method() != Method::OPTIONS
        || !req
            .headers()
            .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return None;
    }
    if !cors.allows(origin) {
        return (!cors.forward_not_matching_preflights).then(|| local_reply(manager, StatusCode::OK, ""));
    }
    let mut resp = local_reply(manager, StatusCode::OK, "");
    let h = resp.headers_mut();
    let mut set = |name: http::header::HeaderName, value: &str| {
        if !value.is_empty()
            && let Ok(v) = HeaderValue::from_str(value)
        {
            h.insert(name, v);
        }
    };
    set(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    set(http::header::ACCESS_CONTROL_ALLOW_METHODS, &cors.allow_methods);
    set(http::header::ACCESS_CONTROL_ALLOW_HEADERS, &cors.allow_headers);
    set(http::header::ACCESS_CONTROL_MAX_AGE, &cors.max_age);
    if cors.allow_credentials {
        set(http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
    }
    Some(resp)
}

fn decorate_cors(cors: &Cors, origin: &str, headers: &mut HeaderMap) {
    if !cors.allows(origin) {
        return;
    }
    if let Ok(v) = HeaderValue::from_str(origin) {
        headers.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    if cors.allow_credentials {
        headers.insert(
            http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if !cors.expose_headers.is_empty()
        && let Ok(v) = HeaderValue::from_str(&cors.expose_headers)
    {
        headers.insert(http::header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
    }
}

enum FaultOutcome {
    Pass,
    Delayed,
    Abort(Box<Response<Body>>),
}

fn header_number(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

async fn apply_fault(manager: &HttpManagerConfig, fault: &Fault, headers: &HeaderMap) -> FaultOutcome {
    let mut outcome = FaultOutcome::Pass;
    let delay = match (&fault.delay, &fault.header_delay) {
        (Some((d, fraction)), _) if fraction.hit(fastrand::u64(..)) => Some(*d),
        (_, Some(fraction)) if fraction.hit(fastrand::u64(..)) => {
            header_number(headers, "x-envoy-fault-delay-request").map(Duration::from_millis)
        }
        _ => None,
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
        outcome = FaultOutcome::Delayed;
    }
    let abort = match (&fault.abort, &fault.header_abort) {
        (Some((a, fraction)), _) if fraction.hit(fastrand::u64(..)) => Some(*a),
        (_, Some(fraction)) if fraction.hit(fastrand::u64(..)) => {
            header_number(headers, "x-envoy-fault-abort-request")
                .and_then(|s| u16::try_from(s).ok())
                .and_then(|s| StatusCode::from_u16(s).ok())
                .filter(|s| (200..600).contains(&s.as_u16()))
                .map(Abort::Http)
                .or_else(|| {
                    header_number(headers, "x-envoy-fault-abort-grpc-request")
                        .and_then(|g| u32::try_from(g).ok())
                        .map(Abort::Grpc)
                })
        }
        _ => None,
    };
    let message = &fault.abort_message;
    match abort {
        Some(Abort::Http(status)) => {
            FaultOutcome::Abort(Box::new(local_reply(manager, status, &message.text)))
        }
        Some(Abort::Grpc(code)) => {
            let mut resp = local_reply(manager, StatusCode::OK, "");
            let h = resp.headers_mut();
            h.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            h.insert(names::GRPC_STATUS, HeaderValue::from(code));
            h.insert(names::GRPC_MESSAGE, message.grpc_message.clone());
            FaultOutcome::Abort(Box::new(resp))
        }
        None => outcome,
    }
}

fn redirect(
    ctx: &HttpContext,
    r: &Redirect,
    req: &Request<RequestBody>,
    authority: &str,
    route: &CompiledRoute,
) -> Response<Body> {
    let request_scheme = if ctx.downstream.tls { "https" } else { "http" };
    let scheme = r.scheme.as_deref().unwrap_or(request_scheme);
    let (host, port) = match strip_port(authority) {
        h if h.len() == authority.len() => (h.to_string(), None),
        h => (h.to_string(), authority[h.len() + 1..].parse::<u16>().ok()),
    };
    let host = r.host.clone().unwrap_or(host);
    let port = if r.port != 0 {
        Some(r.port)
    } else if r.host.is_some() || (scheme != request_scheme) {
        // A new host or scheme drops the old port, unless it was explicit in host_redirect.
        None
    } else {
        port
    };
    let port = port.filter(|p| !((scheme == "http" && *p == 80) || (scheme == "https" && *p == 443)));
    let original_path = req.uri().path();
    let query = req.uri().query();
    let (path, keep_query) = match &r.path {
        None => (original_path.to_string(), true),
        Some(RedirectPath::Path(p)) => (p.clone(), !p.contains('?')),
        Some(RedirectPath::Prefix(p)) => {
            let matched = route
                .matched_prefix()
                .map_or(0, str::len)
                .min(original_path.len());
            (format!("{p}{}", &original_path[matched..]), true)
        }
        Some(RedirectPath::Regex(re, sub)) => {
            (re.replace_all(original_path, sub.as_str()).into_owned(), true)
        }
    };
    let mut location = format!("{scheme}://{host}");
    if let Some(p) = port {
        location.push_str(&format!(":{p}"));
    }
    location.push_str(&path);
    if keep_query
        && !r.strip_query
        && let Some(q) = query
    {
        location.push('?');
        location.push_str(q);
    }
    let mut resp = local_reply(&ctx.manager, r.status, "");
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(http::header::LOCATION, v);
    }
    resp
}

/// Rewrites a request's path per the route (prefix or regex), returning the new URI path and
/// query.
pub fn rewritten_path(uri: &Uri, route: &CompiledRoute, forward: &crate::action::Forward) -> Option<String> {
    let path = uri.path();
    let new_path = if let Some(prefix) = &forward.prefix_rewrite {
        let matched = route.matched_prefix().map_or(0, str::len).min(path.len());
        let mut p = format!("{prefix}{}", &path[matched..]);
        // Envoy: a rewrite that produces `//x` from prefix "/" keeps a single slash.
        if p.starts_with("//") && !prefix.starts_with("//") {
            p.remove(0);
        }
        if p.is_empty() {
            p.push('/');
        }
        p
    } else if let Some((re, sub)) = &forward.regex_rewrite {
        re.replace_all(path, sub.as_str()).into_owned()
    } else {
        return None;
    };
    Some(match uri.query() {
        Some(q) => format!("{new_path}?{q}"),
        None => new_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The quick test and the list the headers are removed by name the same headers.
    #[test]
    fn every_header_stripped_is_one_the_quick_test_notices() {
        let three = [http::header::CONNECTION, http::header::UPGRADE, http::header::TE];
        for name in HOP_BY_HOP.iter().chain(three.iter()) {
            assert!(is_hop_by_hop(name), "{name}");
        }
        for name in ["host", "content-length", "x-connection", "trailer", "date"] {
            assert!(
                !is_hop_by_hop(&http::header::HeaderName::from_static(name)),
                "{name}"
            );
        }
    }

    #[test]
    fn uuids_are_version_4() {
        let u = String::from_utf8(uuid4().to_vec()).unwrap();
        assert_eq!(u.len(), 36);
        let digits: String = u.split('-').collect();
        assert_eq!(u.split('-').map(str::len).collect::<Vec<_>>(), [8, 4, 4, 4, 12]);
        assert!(u128::from_str_radix(&digits, 16).is_ok(), "{u}");
        assert_ne!(uuid4(), uuid4());
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
    }

    #[test]
    fn ports_are_stripped_only_when_numeric() {
        assert_eq!(strip_port("a.com:8080"), "a.com");
        assert_eq!(strip_port("a.com"), "a.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(
            query_pairs(Some("a=1&b&c=")),
            vec![("a", "1"), ("b", ""), ("c", "")]
        );
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("5"));
        h.insert("te", HeaderValue::from_static("gzip"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
    }
}

//! Listeners at run time: sockets bound for the listeners that ask for it, accept loops, the
//! original-destination hand-off, listener inspectors, filter-chain selection, and the chain's
//! work (TCP proxy or HTTP). A listener whose configuration changes keeps its socket; the HTTP
//! connections it handles — accepted on its socket or handed to it as their original
//! destination — are drained gracefully (HTTP/1.1 `connection: close` after the current request,
//! HTTP/2 GOAWAY; see [`crate::drain`]) and new connections use the new configuration.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use crate::body::RequestBody;
use crate::connection_limits::Refusal;
use crate::convert::Target;
use crate::drain::DrainSignal;
use crate::http::{Downstream, HttpContext, handle};
use crate::inspect::{HttpGuess, MAX_HELLO, Rewind, Tls, guess_http, parse_client_hello};
use crate::listener::{ChainKind, Codec, ConnectionFacts, HttpManagerConfig, ListenSocket, ListenerConfig};
use crate::overload::Action;
use crate::state::{ProxyState, Snapshot};
use crate::wake_gate::Gated;

/// Where listeners are bound.
#[derive(Clone, Debug, Default)]
pub enum BindPolicy {
    /// As configured (Envoy): listeners with `bind_to_port` are bound at their address.
    #[default]
    AsConfigured,
    /// For a proxy on a developer machine: original-destination listeners (`virtualOutbound`,
    /// `virtualInbound`) are not bound (nothing redirects to them), and wildcard addresses are
    /// replaced by `ip`, ports shifted by `port_offset`.
    Local {
        /// The address to bind instead of the wildcard.
        ip: IpAddr,
        /// Added to every port.
        port_offset: i32,
    },
}

impl BindPolicy {
    /// The options of a listener's socket: as configured, except that a proxy on a developer
    /// machine shares no port with another process (two `weir run` would split the traffic).
    pub fn socket(&self, l: &ListenerConfig) -> ListenSocket {
        match self {
            BindPolicy::AsConfigured => l.socket,
            BindPolicy::Local { .. } => ListenSocket {
                reuse_port: false,
                ..l.socket
            },
        }
    }

    /// The address a listener binds, if any.
    pub fn address(&self, l: &ListenerConfig) -> Option<SocketAddr> {
        if !l.bind_to_port {
            return None;
        }
        match self {
            BindPolicy::AsConfigured => Some(l.address),
            BindPolicy::Local { ip, port_offset } => {
                if l.use_original_dst {
                    return None;
                }
                let port = u16::try_from(i32::from(l.address.port()) + port_offset).ok()?;
                let address = if l.address.ip().is_unspecified() {
                    *ip
                } else {
                    l.address.ip()
                };
                Some(SocketAddr::new(address, port))
            }
        }
    }
}

struct Running {
    address: SocketAddr,
    socket: ListenSocket,
    version: String,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // Its connections are drained by the listener's removal or change (`ListenerDrains`).
        self.accept.abort();
    }
}

/// The bound listeners.
pub struct Listeners {
    state: Arc<ProxyState>,
    policy: BindPolicy,
    running: Mutex<HashMap<String, Running>>,
    redirected: Mutex<HashMap<SocketAddr, tokio::task::AbortHandle>>,
    extra_own: Mutex<Vec<SocketAddr>>,
}

impl std::fmt::Debug for Listeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listeners")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// A listener that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("listener {name:?}: cannot bind {address}: {error}")]
pub struct BindError {
    /// The listener.
    pub name: String,
    /// The address.
    pub address: SocketAddr,
    /// Why.
    pub error: io::Error,
}

impl Listeners {
    /// A listener manager for a proxy.
    pub fn new(state: Arc<ProxyState>, policy: BindPolicy) -> Arc<Self> {
        Arc::new(Listeners {
            state,
            policy,
            running: Mutex::new(HashMap::new()),
            redirected: Mutex::new(HashMap::new()),
            extra_own: Mutex::new(Vec::new()),
        })
    }

    /// The addresses bound, by listener name.
    pub fn bound(&self) -> Vec<(String, SocketAddr)> {
        let mut out: Vec<(String, SocketAddr)> = self
            .running
            .lock()
            .map(|r| r.iter().map(|(n, r)| (n.clone(), r.address)).collect())
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Binds, keeps or closes sockets to match a snapshot; returns the listeners that could not
    /// be bound (they are left out, the rest applies).
    pub async fn reconcile(&self, snapshot: &Snapshot) -> Vec<BindError> {
        let mut errors = Vec::new();
        let wanted: HashMap<&str, (SocketAddr, ListenSocket, &Arc<ListenerConfig>)> = snapshot
            .listeners
            .iter()
            .filter_map(|(n, l)| {
                let address = self.policy.address(l)?;
                Some((n.as_str(), (address, self.policy.socket(l), l)))
            })
            .collect();
        let mut to_bind = Vec::new();
        let mut replaced = Vec::new();
        if let Ok(mut running) = self.running.lock() {
            // A socket is kept while its address and its options stay.
            let gone: Vec<String> = running
                .iter()
                .filter(|(name, r)| {
                    !wanted
                        .get(name.as_str())
                        .is_some_and(|(a, socket, _)| (*a, *socket) == (r.address, r.socket))
                })
                .map(|(name, _)| name.clone())
                .collect();
            replaced.extend(gone.iter().filter_map(|name| running.remove(name)));
            for (name, (address, socket, l)) in &wanted {
                let version = format!("{:?}", l.source);
                match running.get_mut(*name) {
                    Some(r) if r.version != version => {
                        // Same socket, new configuration (the installed snapshot drained the
                        // old one's connections).
                        r.version = version;
                    }
                    Some(_) => {}
                    None => to_bind.push(((*name).to_string(), *address, *socket, version)),
                }
            }
        }
        // A socket being replaced is closed before its address is bound again.
        for mut r in replaced {
            r.accept.abort();
            let _ = (&mut r.accept).await;
        }
        for (name, address, socket, version) in to_bind {
            match bind(address, socket).await {
                Ok(listener) => {
                    let accept = tokio::spawn(accept_loop(self.state.clone(), name.clone(), listener));
                    tracing::info!(listener = %name, %address, "listening");
                    if let Ok(mut running) = self.running.lock() {
                        running.insert(
                            name,
                            Running {
                                address,
                                socket,
                                version,
                                accept,
                            },
                        );
                    }
                }
                Err(error) => errors.push(BindError { name, address, error }),
            }
        }
        self.publish_own_addresses();
        errors
    }

    fn publish_own_addresses(&self) {
        // A dual-stack socket accepts on its IPv4 address too.
        let mut own: Vec<SocketAddr> = self
            .running
            .lock()
            .map(|running| {
                running
                    .values()
                    .flat_map(|r| {
                        let alias = r
                            .socket
                            .ipv4_compat
                            .then(|| crate::convert::ipv4_alias(r.address));
                        std::iter::once(r.address).chain(alias.flatten())
                    })
                    .collect()
            })
            .unwrap_or_default();
        own.extend(self.redirected());
        own.extend(self.extra_own.lock().map(|e| e.clone()).unwrap_or_default());
        self.state.set_own_addresses(own);
    }

    /// Adds addresses that belong to this proxy besides its listeners (admin, forward proxy).
    pub fn add_own_addresses(&self, addresses: &[SocketAddr]) {
        if let Ok(mut extra) = self.extra_own.lock() {
            extra.extend_from_slice(addresses);
        }
        self.publish_own_addresses();
    }

    /// Stops accepting and drains every connection.
    pub fn shutdown(&self) {
        if let Ok(mut running) = self.running.lock() {
            running.clear();
        }
        if let Ok(mut redirected) = self.redirected.lock() {
            for (_, task) in redirected.drain() {
                task.abort();
            }
        }
        self.state.drains.drain_all();
    }

    /// Accepts connections on these addresses as if they had been redirected to the proxy with
    /// that original destination (what iptables does for a sidecar; `weir run` binds service
    /// addresses on the loopback range instead). Returns the addresses that could not be bound.
    pub async fn set_redirected(&self, addresses: &[SocketAddr]) -> Vec<(SocketAddr, io::Error)> {
        let wanted: std::collections::HashSet<SocketAddr> = addresses.iter().copied().collect();
        let to_bind: Vec<SocketAddr> = match self.redirected.lock() {
            Ok(mut current) => {
                current.retain(|a, task| {
                    let keep = wanted.contains(a);
                    if !keep {
                        task.abort();
                    }
                    keep
                });
                wanted
                    .iter()
                    .filter(|a| !current.contains_key(a))
                    .copied()
                    .collect()
            }
            Err(_) => return Vec::new(),
        };
        let mut errors = Vec::new();
        for address in to_bind {
            match bind(address, ListenSocket::default()).await {
                Ok(socket) => {
                    let task = tokio::spawn(redirect_loop(self.state.clone(), socket, address));
                    if let Ok(mut current) = self.redirected.lock() {
                        current.insert(address, task.abort_handle());
                    }
                }
                Err(e) => errors.push((address, e)),
            }
        }
        self.publish_own_addresses();
        errors
    }

    /// The addresses accepted as redirected.
    pub fn redirected(&self) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = self
            .redirected
            .lock()
            .map(|r| r.keys().copied().collect())
            .unwrap_or_default();
        out.sort();
        out
    }
}

/// A listening socket on `address` with the options of `socket`. An IPv6 one is IPv6-only
/// unless `ipv4_compat`, whatever the host's `net.ipv6.bindv6only` (Envoy sets the option either
/// way).
async fn bind(address: SocketAddr, socket: ListenSocket) -> io::Result<TcpListener> {
    let listener = match address {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => {
            let listener = tokio::net::TcpSocket::new_v6()?;
            socket2::SockRef::from(&listener).set_only_v6(!socket.ipv4_compat)?;
            listener
        }
    };
    listener.set_reuseaddr(true)?;
    listener.set_reuseport(socket.reuse_port)?;
    listener.bind(address)?;
    listener.listen(socket.backlog)
}

async fn accept_loop(state: Arc<ProxyState>, name: String, socket: TcpListener) {
    let mut accepted_in_a_row = 0u32;
    loop {
        // The overload manager's `stop_accepting_connections`: while it is saturated, what
        // arrives waits in the kernel's accept queue (unless the listener bypasses it).
        if state.overload.state(Action::StopAcceptingConnections) >= 1.0
            && !state
                .snapshot()
                .listeners
                .get(&name)
                .is_some_and(|l| l.bypass_overload_manager)
        {
            state.overload.accepting().await;
        }
        let (stream, peer) = match socket.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // `max_connections_to_accept_per_socket_event`: the connections still pending wait
        // until other work has run.
        accepted_in_a_row += 1;
        let limit = state
            .snapshot()
            .listeners
            .get(&name)
            .and_then(|l| l.accepts_per_event);
        if limit.is_some_and(|limit| accepted_in_a_row >= limit) {
            accepted_in_a_row = 0;
            tokio::task::yield_now().await;
        }
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let name = name.clone();
        // Boxed (see `redirect_loop`).
        tokio::spawn(Box::pin(async move {
            accept_connection(state, &name, stream, peer).await
        }));
    }
}

async fn redirect_loop(state: Arc<ProxyState>, socket: TcpListener, destination: SocketAddr) {
    loop {
        state.overload.accepting().await;
        let Ok((stream, peer)) = socket.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        // A connection's future holds the state of every layer inline (about 16 KiB: the
        // listener's chain, the HTTP server, router and upstream exchange), so that a request
        // allocates none of it. Boxed, it is written to the heap once; by value it would be
        // copied on every step of the way into the task, and again when the task ends.
        tokio::spawn(Box::pin(async move {
            let snapshot = state.snapshot();
            let Some(listener) = snapshot.listener_for_redirected(destination) else {
                return;
            };
            dispatch(
                state,
                listener,
                stream,
                peer,
                destination,
                Some(Target::Socket(destination)),
            )
            .await;
        }));
    }
}

/// The original destination of a redirected connection (SO_ORIGINAL_DST), if any.
fn original_destination(stream: &TcpStream) -> Option<SocketAddr> {
    let sock = socket2::SockRef::from(stream);
    let local = stream.local_addr().ok()?;
    let addr = if local.is_ipv4() {
        sock.original_dst_v4().ok()?
    } else {
        sock.original_dst_v6().ok()?
    };
    addr.as_socket()
}

async fn accept_connection(state: Arc<ProxyState>, name: &str, stream: TcpStream, peer: SocketAddr) {
    let snapshot = state.snapshot();
    let Some(listener) = snapshot.listeners.get(name).cloned() else {
        return;
    };
    let Ok(local) = stream.local_addr() else { return };
    let (listener, destination) = if listener.use_original_dst {
        let destination = original_destination(&stream).unwrap_or(local);
        let owner = snapshot.listener_for(destination).cloned();
        (owner.unwrap_or(listener), destination)
    } else {
        (listener, local)
    };
    dispatch(
        state,
        listener,
        stream,
        peer,
        destination,
        Some(Target::Socket(destination)),
    )
    .await;
}

/// Handles a connection on a listener: inspectors, chain selection, then the chain. The
/// connection is drained when that listener changes.
pub async fn dispatch<S>(
    state: Arc<ProxyState>,
    listener: Arc<ListenerConfig>,
    mut stream: S,
    peer: SocketAddr,
    destination: SocketAddr,
    original_dst: Option<Target>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use std::sync::atomic::Ordering;
    // Envoy's checks as a connection is accepted: the global connection limit, the overload
    // manager's `reject_incoming_connections`, then the listener's connection limit. A
    // connection refused is closed before any of its bytes are read.
    let counters = &state.counters;
    let limits = &state.connection_limits;
    let admitted = limits.admit(
        &listener.name,
        listener.ignore_global_conn_limit,
        &counters.downstream_cx_active,
    );
    let refused = match &admitted {
        Err(Refusal::Global) => Some(&counters.downstream_global_cx_overflow),
        _ if !listener.bypass_overload_manager && state.overload.sheds_connection() => {
            Some(&counters.downstream_cx_overload_reject)
        }
        Err(Refusal::Listener) => Some(&counters.downstream_cx_overflow),
        Ok(_) => None,
    };
    if let Some(counter) = refused {
        counter.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(listener = %listener.name, %peer, "connection refused: over a connection limit or overloaded");
        return;
    }
    // Held until the connection ends: its place under the limits (and in
    // `downstream_cx_active`).
    let _admitted = admitted;
    let (listener, drain) = state.drains.join(listener);
    counters.downstream_cx_total.fetch_add(1, Ordering::Relaxed);
    let mut facts = ConnectionFacts {
        destination: Some(destination),
        transport: "raw_buffer",
        ..Default::default()
    };
    let mut seen = BytesMut::new();
    if listener.inspects() {
        let inspection = inspect(&listener, &mut stream, &mut seen, &mut facts);
        let verdict = if listener.inspect_timeout.is_zero() {
            Some(inspection.await)
        } else {
            tokio::time::timeout(listener.inspect_timeout, inspection)
                .await
                .ok()
        };
        match verdict {
            Some(Inspected::Refused) => {
                tracing::debug!(listener = %listener.name, %peer, "no readable TLS ClientHello; closing, as the TLS inspector says");
                return;
            }
            None if !listener.continue_on_timeout => return,
            Some(Inspected::Done) | None => {}
        }
    }
    let Some(chain) = listener.select(&facts) else {
        tracing::debug!(listener = %listener.name, ?facts, "no filter chain matches; closing");
        state
            .counters
            .no_filter_chain_match
            .fetch_add(1, Ordering::Relaxed);
        return;
    };
    let stream = Rewind::new(seen.freeze(), stream);
    let sni = facts.server_name.clone();
    match &chain.tls {
        None => {
            run_chain(
                &state,
                &listener,
                chain,
                stream,
                peer,
                destination,
                original_dst,
                sni,
                false,
                drain,
            )
            .await
        }
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
            match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                Ok(Ok(tls_stream)) => {
                    run_chain(
                        &state,
                        &listener,
                        chain,
                        tls_stream,
                        peer,
                        destination,
                        original_dst,
                        sni,
                        true,
                        drain,
                    )
                    .await
                }
                Ok(Err(e)) => {
                    tracing::debug!(listener = %listener.name, %peer, error = %e, "downstream TLS handshake failed")
                }
                Err(_) => {
                    tracing::debug!(listener = %listener.name, %peer, "downstream TLS handshake timed out")
                }
            }
        }
    }
}

/// Runs a filter chain's work on a (possibly decrypted) stream.
#[allow(clippy::too_many_arguments)]
async fn run_chain<S>(
    state: &Arc<ProxyState>,
    listener: &ListenerConfig,
    chain: &crate::listener::Chain,
    stream: S,
    peer: SocketAddr,
    destination: SocketAddr,
    original_dst: Option<Target>,
    sni: Option<String>,
    tls: bool,
    drain: DrainSignal,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match &chain.kind {
        ChainKind::Tcp(tcp) => crate::tcp::proxy(state, tcp, stream, original_dst, sni.as_deref()).await,
        ChainKind::Http(manager) => {
            let ctx = Arc::new(HttpContext {
                state: state.clone(),
                manager: manager.clone(),
                downstream: Downstream {
                    peer,
                    local: destination,
                    tls,
                    original_dst,
                },
                inbound: listener.name == "virtualInbound" || listener.source.traffic_direction == 1,
                streams: Some(crate::idle::Streams::new()),
                request_timer: crate::request_timer::RequestTimer::new(),
            });
            serve_http(ctx, stream, drain).await;
        }
    }
}

/// What the inspectors made of a connection's first bytes.
enum Inspected {
    /// They have decided, or the peer stopped sending.
    Done,
    /// The TLS inspector found no ClientHello it could read, and closes such connections.
    Refused,
}

/// Reads until the inspectors have decided (or the peer stops sending).
async fn inspect<S: AsyncRead + Unpin>(
    listener: &ListenerConfig,
    stream: &mut S,
    seen: &mut BytesMut,
    facts: &mut ConnectionFacts,
) -> Inspected {
    let tls = listener.tls_inspection;
    let mut tls_pending = listener.tls_inspector;
    let mut http_pending = listener.http_inspector;
    while tls_pending || http_pending {
        if seen.len() >= MAX_HELLO {
            break;
        }
        match stream.read_buf(seen).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if tls_pending {
            // The inspector reads at most `max_hello` bytes for a ClientHello.
            let within = &seen[..seen.len().min(tls.max_hello)];
            match parse_client_hello(within) {
                Tls::NeedMore if within.len() < tls.max_hello => {}
                Tls::NeedMore | Tls::NotTls if tls.close_on_error => return Inspected::Refused,
                Tls::NeedMore | Tls::NotTls => tls_pending = false,
                Tls::Hello(h) => {
                    tls_pending = false;
                    http_pending = false;
                    facts.transport = "tls";
                    facts.server_name = h.server_name;
                    facts.application_protocols = h.alpn;
                }
            }
        }
        if http_pending && !tls_pending {
            match guess_http(seen) {
                HttpGuess::NeedMore => {}
                HttpGuess::NotHttp => http_pending = false,
                guess => {
                    http_pending = false;
                    if let Some(p) = guess.protocol() {
                        facts.application_protocols = vec![p.to_string()];
                    }
                }
            }
        }
    }
    Inspected::Done
}

/// Serves HTTP on a connection until it ends or is drained: HTTP/1.1 requests without a body
/// with Weir's own server (`lean_server`), which hands the connection to hyper's at the first
/// request it does not take; HTTP/2 with hyper's.
pub async fn serve_http<S>(ctx: Arc<HttpContext>, stream: S, drain: DrainSignal)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match ctx.manager.codec {
        Codec::Http2 => serve_with_hyper(ctx, stream, drain).await,
        Codec::Auto | Codec::Http1 => crate::lean_server::serve(ctx, stream, drain).await,
    }
}

/// Serves HTTP on a connection with hyper's server (HTTP/1.1 and HTTP/2, as the connection
/// manager's codec allows) until it ends or is drained.
pub async fn serve_with_hyper<S>(ctx: Arc<HttpContext>, stream: S, mut drain: DrainSignal)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let manager: &HttpManagerConfig = &ctx.manager;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Hyper's timer runs from when the connection waits for a request head, so it closes an
        // HTTP/1.1 connection idle for the connection manager's `idle_timeout` (Envoy's 1 h
        // default) — or one slow to send its head for as long.
        .header_read_timeout(manager.idle_timeout)
        .max_buf_size(manager.max_request_headers.max(8192) * 2);
    let h2 = &manager.h2;
    let mut http2 = builder.http2();
    http2
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(manager.max_request_headers).unwrap_or(u32::MAX));
    // The connection manager's `http2_protocol_options`; hyper's defaults where unset.
    if let Some(streams) = h2.max_concurrent_streams {
        http2.max_concurrent_streams(streams);
    }
    if let Some(window) = h2.initial_stream_window {
        http2.initial_stream_window_size(window);
    }
    if let Some(window) = h2.initial_connection_window {
        http2.initial_connection_window_size(window);
    }
    if let Some((interval, timeout)) = h2.keepalive {
        http2.keep_alive_interval(interval).keep_alive_timeout(timeout);
    }
    let builder = match manager.codec {
        Codec::Auto => builder,
        Codec::Http1 => builder.http1_only(),
        Codec::Http2 => builder.http2_only(),
    };
    let service_ctx = ctx.clone();
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let ctx = service_ctx.clone();
        async move {
            let http2 = req.version() == http::Version::HTTP_2;
            let mut resp = handle(ctx.clone(), req.map(RequestBody::Hyper)).await?;
            crate::http::keepalive_under_overload(&ctx, http2, &mut resp);
            Ok::<_, crate::http::StreamReset>(resp)
        }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    // HTTP/2 streams are counted by `handle` for the idle timeout (HTTP/1.1 connections get it
    // from hyper's header-read timer).
    let streams = ctx.streams.clone();
    let idle = manager.idle_timeout.filter(|_| streams.is_some());
    // The drain and idle signals are polled only when they fire, not each time a request wakes
    // this task (see `wake_gate`).
    let drained = Gated::new(drain.drained());
    let idle_for = Gated::new(async {
        if let (Some(streams), Some(idle)) = (&streams, idle) {
            streams.idle_for(idle).await;
        }
    });
    let closing = Gated::new(async {
        match &streams {
            Some(streams) => streams.closing().await,
            None => std::future::pending().await,
        }
    });
    tokio::select! {
        biased;
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "downstream HTTP connection ended with an error");
            }
        }
        _ = drained => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
        // The overload manager's `disable_http_keepalive` on an HTTP/2 connection: a GOAWAY,
        // and the streams open finish.
        _ = closing => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
        _ = idle_for, if idle.is_some() => {
            // Envoy's idle timeout: GOAWAY, then the connection ends. Hyper's HTTP/2 server
            // waits for the client to answer the GOAWAY's PING; one that never does is
            // disconnected after the drain timeout, unless a stream opened meanwhile.
            conn.as_mut().graceful_shutdown();
            let grace = manager.drain_grace(fastrand::f64());
            let goodbye = tokio::time::timeout(grace, conn.as_mut()).await;
            let stream_opened = streams.as_ref().is_some_and(|s| s.open_streams() > 0);
            if goodbye.is_err() && stream_opened {
                let _ = conn.await;
            }
        }
    }
}

//! Upstream HTTP connection pools, one per cluster: HTTP/1.1 connections reused one request at
//! a time, HTTP/2 connections multiplexed, both keyed by endpoint. A request that could not
//! even be written to a reused connection (the upstream closed it while idle) is sent again on
//! a new connection, as Envoy does; anything else is reported to the router with its kind so
//! that retry policies can act on it.
//!
//! An HTTP/1.1 connection stays in its endpoint's list while it carries a request, and a request
//! takes the most recently used connection that is ready for another (hyper marks it so once the
//! previous response has been read): no task per response to give the connection back. Only
//! when requests wait for a connection (at `max_connections`) are busy connections handed to
//! tasks that give them back when ready and wake the waiting requests.

pub mod codec;
mod lean;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

use tokio::sync::Notify;

use crate::breaker::{Breakers, Overflow, Slot};
use crate::cluster::HttpOptions;
use crate::convert::Target;
use crate::io::{ConnectError, ConnectSettings, connect_with};

use self::lean::{Failed, LeanConn, LeanIdle};
pub use self::lean::{LeanBody, ResponseBody};

/// Errors inside bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type requests and responses are carried in.
pub type Body = BoxBody<Bytes, BoxError>;

/// Protocol of one upstream request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 with prior knowledge.
    Http2,
}

/// Why an upstream request failed before a response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The HTTP/2 upstream refused the stream.
    #[error("the upstream refused the stream")]
    RefusedStream,
    /// The connection closed or the stream was reset before a response.
    #[error("the upstream reset the connection before responding: {0}")]
    Reset(String),
    /// The connection handshake failed.
    #[error("HTTP handshake with the upstream failed: {0}")]
    Handshake(String),
    /// A circuit breaker is open.
    #[error(transparent)]
    Overflow(#[from] Overflow),
}

/// A pooled HTTP/1.1 connection, busy or ready.
struct Http1Conn {
    sender: http1::SendRequest<Body>,
    /// When its latest request was sent (its idle time is counted from then: a connection may
    /// be closed early, never kept past its idle timeout).
    last_sent: Instant,
    created: Instant,
    /// Requests sent on it.
    used: u32,
}

/// The HTTP/1.1 connections of a pool.
#[derive(Default)]
struct Http1Conns {
    // Hashed with foldhash: looked up on every request (SipHash showed in profiles). Most
    // recently used first.
    by_endpoint: HashMap<Target, VecDeque<Http1Conn>, FastHash>,
    /// Requests waiting for a connection at `max_connections`.
    waiting: usize,
}

/// An HTTP/2 connection and the streams it carries now.
struct H2Conn {
    sender: http2::SendRequest<Body>,
    created: Instant,
    active: Arc<std::sync::atomic::AtomicU32>,
}

/// A stream counted on its connection until dropped.
struct StreamCount(Arc<std::sync::atomic::AtomicU32>);

impl Drop for StreamCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Connection counters of a pool.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Connections opened.
    pub cx_total: AtomicU64,
    /// Connections that failed to open.
    pub cx_connect_fail: AtomicU64,
    /// Requests that reused a connection.
    pub rq_reused: AtomicU64,
}

/// The connection pool of one cluster.
pub struct Pool {
    /// Connections of Weir's own client (requests without a body).
    lean: Arc<LeanIdle>,
    /// Connections of hyper's client (requests with a body, upgrades).
    http1: Arc<Mutex<Http1Conns>>,
    /// Woken when an HTTP/1.1 connection is returned or closed (requests waiting for one).
    released: Arc<Notify>,
    http2: Mutex<HashMap<Target, Vec<H2Conn>, FastHash>>,
    settings: ConnectSettings,
    breakers: Arc<Breakers>,
    options: HttpOptions,
    /// Counters.
    pub stats: PoolStats,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("connect_timeout", &self.settings.timeout)
            .finish_non_exhaustive()
    }
}

/// The hasher of maps looked up on every request.
type FastHash = foldhash::fast::RandomState;

/// At most this many HTTP/1.1 connections are kept per endpoint (more are closed after their
/// request).
const MAX_POOLED_PER_ENDPOINT: usize = 128;

/// A request for [`Pool::send`]: its head owned, or lent by a caller that keeps it to send it
/// again (a retry). Weir's own HTTP/1.1 client only writes the head out, so a lent head is
/// copied only for hyper's clients, which take requests by value.
// Passed by value once per attempt; boxing the head would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
pub enum Outgoing<'a> {
    /// The head and body, owned.
    Owned(http::request::Parts, Body),
    /// A lent head, and the body.
    Lent(&'a http::request::Parts, Body),
}

impl Outgoing<'_> {
    /// The request's head.
    pub fn head(&self) -> &http::request::Parts {
        match self {
            Outgoing::Owned(head, _) => head,
            Outgoing::Lent(head, _) => head,
        }
    }

    /// The request's body.
    pub fn body(&self) -> &Body {
        match self {
            Outgoing::Owned(_, body) | Outgoing::Lent(_, body) => body,
        }
    }

    /// The request, owned (a lent head copied).
    pub fn into_request(self) -> Request<Body> {
        match self {
            Outgoing::Owned(head, body) => Request::from_parts(head, body),
            Outgoing::Lent(head, body) => Request::from_parts(head.clone(), body),
        }
    }
}

impl From<Request<Body>> for Outgoing<'_> {
    fn from(req: Request<Body>) -> Self {
        let (head, body) = req.into_parts();
        Outgoing::Owned(head, body)
    }
}

impl Pool {
    /// A pool with the cluster's connection settings and circuit breakers.
    pub fn new(settings: ConnectSettings, breakers: Arc<Breakers>, options: HttpOptions) -> Self {
        let released = Arc::new(Notify::new());
        Pool {
            lean: Arc::new(LeanIdle::new(options, released.clone())),
            settings,
            breakers,
            http1: Arc::new(Mutex::new(Http1Conns::default())),
            released,
            http2: Mutex::new(HashMap::default()),
            options,
            stats: PoolStats::default(),
        }
    }

    /// How this pool connects (the TCP proxy connects the same way).
    pub fn settings(&self) -> &ConnectSettings {
        &self.settings
    }

    /// The cluster's circuit breakers.
    pub fn breakers(&self) -> &Arc<Breakers> {
        &self.breakers
    }

    async fn open(&self, target: &Target) -> Result<crate::io::Io, SendError> {
        match connect_with(target, &self.settings).await {
            Ok(io) => {
                self.stats.cx_total.fetch_add(1, Ordering::Relaxed);
                Ok(io)
            }
            Err(e) => {
                self.stats.cx_connect_fail.fetch_add(1, Ordering::Relaxed);
                Err(SendError::Connect(e))
            }
        }
    }

    /// Sends a request to an endpoint.
    pub async fn send<'a>(
        &self,
        target: &Target,
        protocol: Protocol,
        req: impl Into<Outgoing<'a>>,
    ) -> Result<Response<ResponseBody>, SendError> {
        let req = req.into();
        let hyper = |resp: Response<Incoming>| resp.map(ResponseBody::Hyper);
        match protocol {
            Protocol::Http1 if lean::eligible(req.head(), req.body()) => self.send_lean(target, req).await,
            Protocol::Http1 => self.send_http1(target, req.into_request()).await.map(hyper),
            Protocol::Http2 => self.send_http2(target, req.into_request()).await.map(hyper),
        }
    }

    /// A request without a body, through Weir's own HTTP/1.1 client. A reused connection the
    /// upstream had closed is replaced by another for a request that may be sent again.
    async fn send_lean(
        &self,
        target: &Target,
        req: Outgoing<'_>,
    ) -> Result<Response<ResponseBody>, SendError> {
        let mut req = req;
        for _ in 0..3 {
            let now = Instant::now();
            let Some(conn) = self.lean.take(target, now) else {
                break;
            };
            match lean::exchange(&self.lean, target, conn, req, now).await {
                Ok(resp) => {
                    self.stats.rq_reused.fetch_add(1, Ordering::Relaxed);
                    return Ok(resp);
                }
                Err(Failed {
                    retry: Some(back), ..
                }) => req = back,
                Err(Failed { error, .. }) => return Err(error),
            }
        }
        let conn = self.wait_for_lean(target).await?;
        lean::exchange(&self.lean, target, conn, req, Instant::now())
            .await
            .map_err(|failed| failed.error)
    }

    /// No idle connection of Weir's client: the request is pending (`max_pending_requests`)
    /// until a new connection is open or, at `max_connections`, one is given back (an idle
    /// connection of hyper's client is closed to make room).
    async fn wait_for_lean(&self, target: &Target) -> Result<Box<LeanConn>, SendError> {
        let _pending = self.breakers.pending()?;
        if let Ok(slot) = self.breakers.connection() {
            return self.connect_lean(target, slot).await;
        }
        let _waiting = self.lean.wait();
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Some(conn) = self.lean.take(target, Instant::now()) {
                self.stats.rq_reused.fetch_add(1, Ordering::Relaxed);
                return Ok(conn);
            }
            if let Ok(slot) = self.breakers.connection() {
                return self.connect_lean(target, slot).await;
            }
            self.evict_idle_http1(target);
            released.await;
        }
    }

    async fn connect_lean(&self, target: &Target, slot: Slot) -> Result<Box<LeanConn>, SendError> {
        match self.open(target).await {
            Ok(io) => Ok(LeanConn::new(io, slot, &self.lean)),
            Err(e) => {
                drop(slot);
                self.released.notify_waiters();
                Err(e)
            }
        }
    }

    /// Closes one idle connection of hyper's client to `target` (its slot comes back when its
    /// task ends).
    fn evict_idle_http1(&self, target: &Target) {
        if let Ok(mut conns) = self.http1.lock()
            && let Some(list) = conns.by_endpoint.get_mut(target)
            && let Some(i) = list.iter().rposition(|c| c.sender.is_ready())
        {
            list.remove(i);
        }
    }

    /// Whether a connection is too old to take another request: idle for the idle timeout,
    /// or past `max_connection_duration`.
    fn stale(&self, conn: &Http1Conn, now: Instant) -> bool {
        now.saturating_duration_since(conn.last_sent) >= self.options.idle_timeout
            || self.expired(conn.created, now)
    }

    /// Whether a connection made at `created` is past `max_connection_duration` at `now`.
    fn expired(&self, created: Instant, now: Instant) -> bool {
        expired(&self.options, created, now)
    }

    /// Takes the most recently used ready connection to `target` out of the pool (closed and
    /// stale ones are dropped on the way).
    fn take_ready(&self, conns: &mut Http1Conns, target: &Target, now: Instant) -> Option<Http1Conn> {
        let list = conns.by_endpoint.get_mut(target)?;
        let mut i = 0;
        while let Some(conn) = list.get(i) {
            if conn.sender.is_closed() {
                list.remove(i);
            } else if !conn.sender.is_ready() {
                i += 1;
            } else if self.stale(conn, now) {
                list.remove(i);
            } else {
                return list.remove(i);
            }
        }
        None
    }

    /// Puts a connection that has just been given a request back in the pool: in the list
    /// (it is taken again once ready) unless it has served `max_requests_per_connection`, or, while
    /// requests wait for a connection, to a task that returns it when ready and wakes them.
    fn keep(&self, conns: &mut Http1Conns, target: &Target, conn: Http1Conn) {
        if self
            .options
            .max_requests_per_connection
            .is_some_and(|m| conn.used >= m)
        {
            return;
        }
        if conns.waiting > 0 {
            self.return_when_ready(target.clone(), conn);
            return;
        }
        let list = conns.by_endpoint.entry(target.clone()).or_default();
        if list.len() < MAX_POOLED_PER_ENDPOINT {
            list.push_front(conn);
        }
    }

    /// Sends a request on `conn`, keeping the connection in the pool.
    fn dispatch(
        &self,
        conns: &mut Http1Conns,
        target: &Target,
        mut conn: Http1Conn,
        req: Request<Body>,
        now: Instant,
    ) -> impl Future<Output = Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<Body>>>> + use<>
    {
        conn.used += 1;
        conn.last_sent = now;
        let sent = conn.sender.try_send_request(req);
        self.keep(conns, target, conn);
        sent
    }

    /// Opens a connection holding a `max_connections` slot; the slot is given back (and
    /// waiting requests woken) when the connection ends.
    async fn connect_http1(&self, target: &Target, slot: Slot) -> Result<Http1Conn, SendError> {
        let io = self.open(target).await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| SendError::Handshake(e.to_string()))?;
        let released = self.released.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream HTTP/1.1 connection ended");
            }
            drop(slot);
            released.notify_waiters();
        });
        let now = Instant::now();
        Ok(Http1Conn {
            sender,
            last_sent: now,
            created: now,
            used: 0,
        })
    }

    async fn send_http1(&self, target: &Target, req: Request<Body>) -> Result<Response<Incoming>, SendError> {
        let mut req = req;
        // A reused connection may have been closed by the upstream while idle; a request that
        // was not written is sent again on a fresh connection.
        for _ in 0..3 {
            let sent = {
                let Ok(mut conns) = self.http1.lock() else {
                    break;
                };
                let now = Instant::now();
                let Some(conn) = self.take_ready(&mut conns, target, now) else {
                    break;
                };
                self.dispatch(&mut conns, target, conn, req, now)
            };
            match sent.await {
                Ok(resp) => {
                    self.stats.rq_reused.fetch_add(1, Ordering::Relaxed);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    Some(back) => req = back,
                    None => return Err(classify(e.into_error())),
                },
            }
        }
        let conn = self.wait_for_http1(target).await?;
        let now = Instant::now();
        let sent = match self.http1.lock() {
            Ok(mut conns) => self.dispatch(&mut conns, target, conn, req, now),
            Err(poisoned) => self.dispatch(&mut poisoned.into_inner(), target, conn, req, now),
        };
        sent.await.map_err(|e| classify(e.into_error()))
    }

    /// No ready connection: the request is pending (`max_pending_requests`) until a new
    /// connection is open or, at `max_connections`, one is free.
    async fn wait_for_http1(&self, target: &Target) -> Result<Http1Conn, SendError> {
        let _pending = self.breakers.pending()?;
        if let Ok(slot) = self.breakers.connection() {
            return self.connect_new_http1(target, slot).await;
        }
        // At `max_connections`: busy connections in the list would not say when they are
        // free, so they go to tasks that do, as do those given requests while this one waits.
        let _waiting = Waiting::start(self, target);
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let ready = match self.http1.lock() {
                Ok(mut conns) => self.take_ready(&mut conns, target, Instant::now()),
                Err(_) => None,
            };
            if let Some(conn) = ready {
                self.stats.rq_reused.fetch_add(1, Ordering::Relaxed);
                return Ok(conn);
            }
            if let Ok(slot) = self.breakers.connection() {
                return self.connect_new_http1(target, slot).await;
            }
            // Idle connections of Weir's client may hold the slots: one is closed.
            self.lean.evict_one(target);
            released.await;
        }
    }

    /// Opens a connection for a pending request; on failure the slot is given back and a
    /// request waiting for a connection may open one.
    async fn connect_new_http1(&self, target: &Target, slot: Slot) -> Result<Http1Conn, SendError> {
        let connected = self.connect_http1(target, slot).await;
        if connected.is_err() {
            self.released.notify_waiters();
        }
        connected
    }

    /// Gives `conn` back to the pool once it can take another request, and wakes the requests
    /// waiting for one.
    fn return_when_ready(&self, target: Target, mut conn: Http1Conn) {
        let conns = self.http1.clone();
        let released = self.released.clone();
        tokio::spawn(async move {
            if conn.sender.ready().await.is_ok() {
                if let Ok(mut conns) = conns.lock() {
                    let list = conns.by_endpoint.entry(target).or_default();
                    if list.len() < MAX_POOLED_PER_ENDPOINT {
                        list.push_front(conn);
                    }
                }
                released.notify_waiters();
            }
        });
    }

    /// An HTTP/2 connection to `target` with room for a stream (`max_concurrent_streams`),
    /// not past its `max_connection_duration`; closed and expired ones are dropped.
    fn checkout_http2(&self, target: &Target) -> Option<(http2::SendRequest<Body>, StreamCount)> {
        let mut map = self.http2.lock().ok()?;
        let conns = map.get_mut(target)?;
        let now = Instant::now();
        conns.retain(|c| !c.sender.is_closed() && !self.expired(c.created, now));
        let limit = self.options.h2.max_concurrent_streams.unwrap_or(u32::MAX);
        let c = conns.iter().find(|c| c.active.load(Ordering::Acquire) < limit)?;
        c.active.fetch_add(1, Ordering::AcqRel);
        Some((c.sender.clone(), StreamCount(c.active.clone())))
    }

    async fn connect_http2(
        &self,
        target: &Target,
    ) -> Result<(http2::SendRequest<Body>, StreamCount), SendError> {
        let slot = self.breakers.connection()?;
        let _pending = self.breakers.pending()?;
        let io = self.open(target).await?;
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder.timer(hyper_util::rt::TokioTimer::new());
        let h2 = &self.options.h2;
        if let Some((interval, timeout)) = h2.keepalive {
            builder
                .keep_alive_interval(interval)
                .keep_alive_timeout(timeout)
                .keep_alive_while_idle(true);
        }
        builder
            .initial_stream_window_size(h2.initial_stream_window)
            .initial_connection_window_size(h2.initial_connection_window);
        let (sender, conn) = builder
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| SendError::Handshake(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
            }
            drop(slot);
        });
        let active = Arc::new(std::sync::atomic::AtomicU32::new(1));
        if let Ok(mut m) = self.http2.lock() {
            m.entry(target.clone()).or_default().push(H2Conn {
                sender: sender.clone(),
                created: Instant::now(),
                active: active.clone(),
            });
        }
        Ok((sender, StreamCount(active)))
    }

    async fn send_http2(&self, target: &Target, req: Request<Body>) -> Result<Response<Incoming>, SendError> {
        let (mut sender, _stream) = match self.checkout_http2(target) {
            Some(found) => {
                self.stats.rq_reused.fetch_add(1, Ordering::Relaxed);
                found
            }
            None => self.connect_http2(target).await?,
        };
        sender.ready().await.map_err(classify)?;
        sender.send_request(req).await.map_err(classify)
    }
}

/// A request waiting for an HTTP/1.1 connection at `max_connections`, counted while it lives.
struct Waiting<'a> {
    pool: &'a Pool,
}

impl<'a> Waiting<'a> {
    /// Counts the request and hands the busy connections to `target` to tasks that give them
    /// back when ready (under the pool's lock, so none given a request meanwhile is missed).
    fn start(pool: &'a Pool, target: &Target) -> Self {
        if let Ok(mut conns) = pool.http1.lock() {
            conns.waiting += 1;
            if let Some(list) = conns.by_endpoint.get_mut(target) {
                let all = std::mem::take(list);
                for conn in all {
                    if conn.sender.is_closed() {
                        continue;
                    }
                    if conn.sender.is_ready() {
                        list.push_back(conn);
                    } else {
                        pool.return_when_ready(target.clone(), conn);
                    }
                }
            }
        }
        Waiting { pool }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Ok(mut conns) = self.pool.http1.lock() {
            conns.waiting = conns.waiting.saturating_sub(1);
        }
    }
}

/// Whether a connection made at `created` is past `max_connection_duration` at `now`.
fn expired(options: &HttpOptions, created: Instant, now: Instant) -> bool {
    options
        .max_connection_duration
        .is_some_and(|d| now.saturating_duration_since(created) >= d)
}

/// Maps a hyper error to what retry policies see.
fn classify(e: hyper::Error) -> SendError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(h2e) = s.downcast_ref::<h2::Error>()
            && h2e.reason() == Some(h2::Reason::REFUSED_STREAM)
        {
            return SendError::RefusedStream;
        }
        source = s.source();
    }
    SendError::Reset(e.to_string())
}

#[cfg(test)]
pub(super) mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use http_body_util::BodyExt;
    use hyper::service::service_fn;

    use super::*;
    use crate::breaker::Limits;

    /// Requests served per connection, in the order the connections were accepted.
    type Served = Arc<Mutex<Vec<usize>>>;

    /// An HTTP/1.1 server answering after `?ms` milliseconds, counting the connections it
    /// accepted and the requests each served; with `close_idle`, it closes a connection right
    /// after each response.
    async fn server(close_idle: bool) -> (SocketAddr, Arc<AtomicUsize>, Served) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let served: Served = Arc::default();
        let (counter, per_connection) = (accepted.clone(), served.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let index = counter.fetch_add(1, Ordering::SeqCst);
                per_connection.lock().unwrap().push(0);
                let per_connection = per_connection.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        per_connection.lock().unwrap()[index] += 1;
                        async move {
                            let ms: u64 = req.uri().query().and_then(|q| q.parse().ok()).unwrap_or(0);
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                            Ok::<_, Infallible>(Response::new(crate::body::full("ok")))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(!close_idle)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, accepted, served)
    }

    /// A pool with the given limits and options, connecting plainly with a 1 s timeout.
    pub(in crate::pool) fn pool(limits: Limits, options: HttpOptions) -> Arc<Pool> {
        let settings = ConnectSettings {
            timeout: Duration::from_secs(1),
            source: None,
            tls: None,
            keepalive: None,
            family: crate::cluster::Family::Auto,
        };
        Arc::new(Pool::new(
            settings,
            crate::breaker::Breakers::new(limits),
            options,
        ))
    }

    /// Which HTTP/1.1 client a test request goes through.
    #[derive(Clone, Copy, Debug)]
    enum Client {
        /// Weir's own: a GET without a body.
        Lean,
        /// hyper's: a POST with a body.
        Hyper,
    }

    const BOTH: [Client; 2] = [Client::Lean, Client::Hyper];

    /// A request through `client`, answered after `delay_ms`; its status once its body is read.
    async fn call(pool: &Pool, target: &Target, delay_ms: u64, client: Client) -> Result<u16, String> {
        let req = Request::builder()
            .uri(format!("/?{delay_ms}"))
            .header("host", "test");
        let req = match client {
            Client::Lean => req.body(crate::body::empty()),
            Client::Hyper => req.method("POST").body(crate::body::full("payload")),
        }
        .unwrap();
        let resp = pool
            .send(target, Protocol::Http1, req)
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        resp.into_body().collect().await.map_err(|e| e.to_string())?;
        Ok(status)
    }

    /// Requests counted as waiting for a connection of `client`'s pool.
    fn waiting(pool: &Pool, target: &Target, client: Client) -> usize {
        match client {
            Client::Lean => pool.lean.counts(target).1,
            Client::Hyper => pool.http1.lock().unwrap().waiting,
        }
    }

    /// `n` requests sent at once, each answered after `delay_ms`; their answers in order.
    async fn together(
        pool: &Arc<Pool>,
        target: &Target,
        n: usize,
        delay_ms: u64,
        client: Client,
    ) -> Vec<Result<u16, String>> {
        let sent: Vec<_> = (0..n)
            .map(|_| {
                let (pool, target) = (pool.clone(), target.clone());
                tokio::spawn(async move { call(&pool, &target, delay_ms, client).await })
            })
            .collect();
        let mut answers = Vec::new();
        for t in sent {
            let answered = tokio::time::timeout(Duration::from_secs(5), t).await;
            answers.push(answered.expect("a waiting request was never woken").unwrap());
        }
        answers
    }

    fn all_ok(answers: &[Result<u16, String>]) -> bool {
        answers.iter().all(|a| a == &Ok(200))
    }

    #[tokio::test]
    async fn http1_connections_are_reused_one_request_at_a_time() {
        for client in BOTH {
            let (addr, accepted, _) = server(false).await;
            let target = Target::Socket(addr);
            let pool = pool(Limits::default(), HttpOptions::default());
            for _ in 0..5 {
                assert_eq!(call(&pool, &target, 0, client).await, Ok(200));
            }
            assert_eq!(
                accepted.load(Ordering::SeqCst),
                1,
                "{client:?}: one connection, reused"
            );
            // Four at once: the busy connection takes no second request, so three more are made.
            assert!(all_ok(&together(&pool, &target, 4, 100, client).await));
            assert_eq!(accepted.load(Ordering::SeqCst), 4, "{client:?}");
            // Afterwards all four are ready again: no new connection for another round.
            assert!(all_ok(&together(&pool, &target, 4, 50, client).await));
            assert_eq!(accepted.load(Ordering::SeqCst), 4, "{client:?}");
            assert_eq!(pool.stats.cx_total.load(Ordering::Relaxed), 4);
            // And they went through the client meant for them.
            let lean_idle = pool.lean.counts(&target).0;
            match client {
                Client::Lean => assert_eq!(lean_idle, 4),
                Client::Hyper => assert_eq!(lean_idle, 0),
            }
        }
    }

    #[tokio::test]
    async fn a_connection_serves_at_most_max_requests_per_connection() {
        for client in BOTH {
            let (addr, accepted, _) = server(false).await;
            let target = Target::Socket(addr);
            let options = HttpOptions {
                max_requests_per_connection: Some(2),
                ..HttpOptions::default()
            };
            let pool = pool(Limits::default(), options);
            for _ in 0..5 {
                assert_eq!(call(&pool, &target, 0, client).await, Ok(200));
            }
            assert_eq!(accepted.load(Ordering::SeqCst), 3, "{client:?}");
        }
    }

    #[tokio::test]
    async fn a_connection_closed_by_the_upstream_while_idle_is_not_used_again() {
        for client in BOTH {
            let (addr, accepted, _) = server(true).await;
            let target = Target::Socket(addr);
            let pool = pool(Limits::default(), HttpOptions::default());
            for _ in 0..3 {
                assert_eq!(call(&pool, &target, 0, client).await, Ok(200));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(accepted.load(Ordering::SeqCst), 3, "{client:?}");
        }
    }

    #[tokio::test]
    async fn requests_beyond_max_connections_wait_for_a_busy_connection() {
        for client in BOTH {
            let (addr, accepted, served) = server(false).await;
            let target = Target::Socket(addr);
            let limits = Limits {
                max_connections: 2,
                max_pending_requests: 10,
                ..Limits::default()
            };
            let pool = pool(limits, HttpOptions::default());
            assert_eq!(call(&pool, &target, 0, client).await, Ok(200));
            assert!(all_ok(&together(&pool, &target, 6, 100, client).await));
            // Two connections, both taking the waiting requests as they come free (seven
            // requests in all with the first).
            assert_eq!(accepted.load(Ordering::SeqCst), 2, "{client:?}");
            let served = served.lock().unwrap().clone();
            assert!(
                served.iter().all(|n| (3..=4).contains(n)),
                "{client:?}: {served:?}"
            );
            assert_eq!(call(&pool, &target, 0, client).await, Ok(200));
            assert_eq!(
                waiting(&pool, &target, client),
                0,
                "{client:?}: nobody counted as waiting"
            );
        }
    }

    #[tokio::test]
    async fn a_request_waiting_for_the_only_connection_gets_it_when_its_response_ends() {
        for client in BOTH {
            let (addr, accepted, _) = server(false).await;
            let target = Target::Socket(addr);
            let limits = Limits {
                max_connections: 1,
                max_pending_requests: 10,
                ..Limits::default()
            };
            let pool = pool(limits, HttpOptions::default());
            assert_eq!(call(&pool, &target, 0, client).await, Ok(200));
            // The only connection, busy for 200 ms: the next three wait for it.
            let holder = {
                let (pool, target) = (pool.clone(), target.clone());
                tokio::spawn(async move { call(&pool, &target, 200, client).await })
            };
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(all_ok(&together(&pool, &target, 3, 20, client).await));
            assert_eq!(holder.await.unwrap(), Ok(200));
            assert_eq!(accepted.load(Ordering::SeqCst), 1, "{client:?}");
        }
    }
}

//! Upstream HTTP connection pools, one per cluster: HTTP/1.1 connections reused one request at
//! a time, HTTP/2 connections multiplexed, both keyed by endpoint. A request that could not
//! even be written to a reused connection (the upstream closed it while idle) is sent again on
//! a new connection, as Envoy does; anything else is reported to the router with its kind so
//! that retry policies can act on it.

use std::collections::HashMap;
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

struct Idle {
    sender: http1::SendRequest<Body>,
    since: Instant,
    created: Instant,
    used: u32,
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
    // Hashed with foldhash: looked up twice per request (SipHash showed in profiles).
    http1: Arc<Mutex<HashMap<Target, Vec<Idle>, FastHash>>>,
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

/// At most this many idle HTTP/1.1 connections are kept per endpoint.
const MAX_IDLE_PER_ENDPOINT: usize = 128;

impl Pool {
    /// A pool with the cluster's connection settings and circuit breakers.
    pub fn new(settings: ConnectSettings, breakers: Arc<Breakers>, options: HttpOptions) -> Self {
        Pool {
            settings,
            breakers,
            http1: Arc::new(Mutex::new(HashMap::default())),
            released: Arc::new(Notify::new()),
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
    pub async fn send(
        &self,
        target: &Target,
        protocol: Protocol,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, SendError> {
        match protocol {
            Protocol::Http1 => self.send_http1(target, req).await,
            Protocol::Http2 => self.send_http2(target, req).await,
        }
    }

    fn checkout_http1(&self, target: &Target) -> Option<Idle> {
        let mut idle = self.http1.lock().ok()?;
        let list = idle.get_mut(target)?;
        while let Some(conn) = list.pop() {
            if conn.since.elapsed() < self.options.idle_timeout
                && !self.expired(conn.created)
                && conn.sender.is_ready()
                && !conn.sender.is_closed()
            {
                return Some(conn);
            }
        }
        None
    }

    /// Whether a connection made at `created` is past `max_connection_duration`.
    fn expired(&self, created: Instant) -> bool {
        self.options
            .max_connection_duration
            .is_some_and(|d| created.elapsed() >= d)
    }

    /// Opens a connection holding a `max_connections` slot; the slot is given back (and
    /// waiting requests woken) when the connection ends.
    async fn connect_http1(&self, target: &Target, slot: Slot) -> Result<Idle, SendError> {
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
        Ok(Idle {
            sender,
            since: now,
            created: now,
            used: 0,
        })
    }

    async fn send_http1(&self, target: &Target, req: Request<Body>) -> Result<Response<Incoming>, SendError> {
        let mut req = req;
        // A reused connection may have been closed by the upstream while idle; a request that
        // was not written is sent again on a fresh connection.
        for _ in 0..3 {
            let Some(mut conn) = self.checkout_http1(target) else {
                break;
            };
            match conn.sender.try_send_request(req).await {
                Ok(resp) => {
                    self.stats.rq_reused.fetch_add(1, Ordering::Relaxed);
                    self.return_when_ready(target.clone(), conn);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    Some(back) => req = back,
                    None => return Err(classify(e.into_error())),
                },
            }
        }
        let mut conn = self.wait_for_http1(target).await?;
        match conn.sender.send_request(req).await {
            Ok(resp) => {
                self.return_when_ready(target.clone(), conn);
                Ok(resp)
            }
            Err(e) => Err(classify(e)),
        }
    }

    /// No idle connection: the request is pending (`max_pending_requests`) until a new
    /// connection is open or, at `max_connections`, one is returned.
    async fn wait_for_http1(&self, target: &Target) -> Result<Idle, SendError> {
        let _pending = self.breakers.pending()?;
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Some(conn) = self.checkout_http1(target) {
                self.stats.rq_reused.fetch_add(1, Ordering::Relaxed);
                return Ok(conn);
            }
            if let Ok(slot) = self.breakers.connection() {
                let connected = self.connect_http1(target, slot).await;
                if connected.is_err() {
                    // The slot was given back: a request waiting for a connection may open one.
                    self.released.notify_waiters();
                }
                return connected;
            }
            released.await;
        }
    }

    fn return_when_ready(&self, target: Target, mut conn: Idle) {
        if self
            .options
            .max_requests_per_connection
            .is_some_and(|m| conn.used + 1 >= m)
        {
            return;
        }
        // The connection takes another request once this response's body has been read.
        let idle = self.http1.clone();
        let released = self.released.clone();
        tokio::spawn(async move {
            if conn.sender.ready().await.is_ok() {
                conn.used += 1;
                conn.since = Instant::now();
                if let Ok(mut idle) = idle.lock() {
                    let list = idle.entry(target).or_default();
                    if list.len() < MAX_IDLE_PER_ENDPOINT {
                        list.push(conn);
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
        conns.retain(|c| !c.sender.is_closed() && !self.expired(c.created));
        let limit = self.options.max_concurrent_streams.unwrap_or(u32::MAX);
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
        if let Some((interval, timeout)) = self.options.keepalive {
            builder
                .keep_alive_interval(interval)
                .keep_alive_timeout(timeout)
                .keep_alive_while_idle(true);
        }
        let (stream_window, connection_window) = self.options.windows;
        builder
            .initial_stream_window_size(stream_window)
            .initial_connection_window_size(connection_window);
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

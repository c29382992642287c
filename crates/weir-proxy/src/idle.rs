//! The connection manager's `idle_timeout` for downstream connections: Envoy closes a connection
//! that has had no open stream for that long — an HTTP/2 connection whose streams have ended,
//! and a connection that never sent a request at all (an HTTP/2 client that opened a connection
//! and stopped after its preface, say). HTTP/1.1 connections that have served a request get it
//! from hyper's header-read timer, which runs while a connection waits for its next request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::pool::Body;

/// No request has arrived yet.
const NO_REQUEST: u8 = 0;
/// HTTP/1.x requests: hyper's header-read timer closes the connection when idle.
const HTTP1: u8 = 1;
/// HTTP/2 streams, counted here.
const HTTP2: u8 = 2;

/// The streams of one downstream connection.
#[derive(Debug)]
pub struct Streams {
    started: Instant,
    /// What the connection has carried: [`NO_REQUEST`], [`HTTP1`] or [`HTTP2`].
    protocol: AtomicU8,
    open: AtomicUsize,
    /// When the last stream ended, in milliseconds since `started`.
    last_end_ms: AtomicU64,
    /// Asked to close gracefully (an HTTP/2 GOAWAY) once its streams are done.
    closing: tokio::sync::Notify,
}

impl Streams {
    /// A connection that has just started.
    pub fn new() -> Arc<Self> {
        Arc::new(Streams {
            started: Instant::now(),
            protocol: AtomicU8::new(NO_REQUEST),
            open: AtomicUsize::new(0),
            last_end_ms: AtomicU64::new(0),
            closing: tokio::sync::Notify::new(),
        })
    }

    /// Asks the connection to close gracefully: no new streams (an HTTP/2 GOAWAY), those open
    /// finish (the overload manager's `disable_http_keepalive`).
    pub fn close_gracefully(&self) {
        self.closing.notify_one();
    }

    /// Resolves once the connection has been asked to close gracefully.
    pub async fn closing(&self) {
        self.closing.notified().await;
    }

    /// Counts an HTTP/2 stream until the returned guard (kept by its response body) drops.
    pub fn open(self: &Arc<Self>) -> StreamGuard {
        self.protocol.store(HTTP2, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::AcqRel);
        StreamGuard(self.clone())
    }

    /// How many HTTP/2 streams are open now.
    pub fn open_streams(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Records an HTTP/1.x request (its connection's idle time is hyper's to keep).
    pub fn http1_request(&self) {
        if self.protocol.load(Ordering::Relaxed) == NO_REQUEST {
            self.protocol.store(HTTP1, Ordering::Relaxed);
        }
    }

    /// Resolves once the connection has had no open stream for `idle`: HTTP/2 with all its
    /// streams ended that long ago, or no request at all that long after it started. Never for
    /// a connection that has carried HTTP/1.x.
    pub async fn idle_for(&self, idle: Duration) {
        loop {
            let wait = match self.protocol.load(Ordering::Relaxed) {
                NO_REQUEST => idle.saturating_sub(self.started.elapsed()),
                HTTP2 if self.open.load(Ordering::Acquire) == 0 => {
                    let last_end =
                        self.started + Duration::from_millis(self.last_end_ms.load(Ordering::Acquire));
                    idle.saturating_sub(last_end.elapsed())
                }
                _ => idle,
            };
            if wait.is_zero() {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }
}

/// An open HTTP/2 stream; its end is recorded when dropped.
#[derive(Debug)]
pub struct StreamGuard(Arc<Streams>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let s = &self.0;
        let now = u64::try_from(s.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        s.last_end_ms.store(now, Ordering::Release);
        s.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Keeps `guard` (the stream) open as long as `body` is being sent: until it ends, fails or is
/// dropped.
pub fn hold(body: Body, guard: StreamGuard) -> Body {
    crate::body::Metered::body(body, move |_| drop(guard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_http2_connection_is_idle_only_without_open_streams() {
        let idle = Duration::from_millis(150);
        let waits = |streams: Arc<Streams>| async move {
            tokio::time::timeout(Duration::from_millis(400), streams.idle_for(idle))
                .await
                .is_err()
        };
        // HTTP/1.1: never idle here (hyper's timer keeps its idle time).
        let http1 = Streams::new();
        http1.http1_request();
        assert!(waits(http1).await);
        let streams = Streams::new();
        let guard = streams.open();
        assert!(waits(streams.clone()).await, "a stream is open");
        drop(guard);
        let ended = Instant::now();
        streams.idle_for(idle).await;
        assert!(
            ended.elapsed() >= Duration::from_millis(140),
            "{:?}",
            ended.elapsed()
        );
    }

    #[tokio::test]
    async fn a_connection_without_a_request_is_idle_from_its_start() {
        let started = Instant::now();
        let streams = Streams::new();
        streams.idle_for(Duration::from_millis(150)).await;
        assert!(
            started.elapsed() >= Duration::from_millis(140),
            "{:?}",
            started.elapsed()
        );
    }
}

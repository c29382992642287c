//! The connection manager's `idle_timeout` for downstream HTTP/2 connections: Envoy closes a
//! connection that has had no open stream for that long. (HTTP/1.1 connections get it from
//! hyper's header-read timer, which runs while a connection waits for its next request.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::pool::Body;

/// The streams of one downstream connection.
#[derive(Debug)]
pub struct Streams {
    started: Instant,
    /// Whether the connection speaks HTTP/2 (known at its first request).
    http2: AtomicBool,
    open: AtomicUsize,
    /// When the last stream ended, in milliseconds since `started`.
    last_end_ms: AtomicU64,
}

impl Streams {
    /// A connection that has just started.
    pub fn new() -> Arc<Self> {
        Arc::new(Streams {
            started: Instant::now(),
            http2: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            last_end_ms: AtomicU64::new(0),
        })
    }

    /// Counts an HTTP/2 stream until the returned guard (kept by its response body) drops.
    pub fn open(self: &Arc<Self>) -> StreamGuard {
        self.http2.store(true, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::AcqRel);
        StreamGuard(self.clone())
    }

    /// Resolves once the connection is HTTP/2 and has had no open stream for `idle`.
    pub async fn idle_for(&self, idle: Duration) {
        loop {
            let wait = if self.http2.load(Ordering::Relaxed) && self.open.load(Ordering::Acquire) == 0 {
                let last_end = self.started + Duration::from_millis(self.last_end_ms.load(Ordering::Acquire));
                idle.saturating_sub(last_end.elapsed())
            } else {
                idle
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
        let streams = Streams::new();
        let idle = Duration::from_millis(150);
        let waits = |streams: Arc<Streams>| async move {
            tokio::time::timeout(Duration::from_millis(400), streams.idle_for(idle))
                .await
                .is_err()
        };
        // HTTP/1.1 (no stream counted): never idle here.
        assert!(waits(streams.clone()).await);
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
}

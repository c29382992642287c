//! Bodies the router needs: a request body buffered so it can be sent again on a retry (up to a
//! limit, as Envoy's buffer limit), a body that replays a buffered prefix before the rest of
//! the stream, and a response body that reports its size and end for metrics.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};

use crate::pool::{Body, BoxError};

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A body with these bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

/// A complete body that does not announce its length, which stays the `content-length` header's:
/// the answer to HEAD, or a 304, declares a length it does not carry.
pub fn full_unsized(bytes: Bytes) -> Body {
    http_body_util::StreamBody::new(futures_util::stream::once(async move {
        Ok::<_, BoxError>(Frame::data(bytes))
    }))
    .boxed()
}

/// A streamed body: the downstream request's, or an upstream response's.
pub fn incoming<B>(body: B) -> Body
where
    B: HttpBody<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

/// A body that fails at once with `error` (a response whose body could not be read: the
/// downstream stream is reset rather than given a body shorter than its head announced).
pub fn failed(error: impl Into<BoxError>) -> Body {
    let error: BoxError = error.into();
    http_body_util::StreamBody::new(futures_util::stream::once(async move {
        Err::<Frame<Bytes>, BoxError>(error)
    }))
    .boxed()
}

/// A body that adds the bytes it passes on to a shared counter (a request's size, for the
/// metrics recorded when its response ends).
pub struct Counted {
    inner: Body,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Counted {
    /// Wraps a body.
    pub fn body(inner: Body, count: std::sync::Arc<std::sync::atomic::AtomicU64>) -> Body {
        Counted { inner, count }.boxed()
    }
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(d) = frame.data_ref()
        {
            self.count
                .fetch_add(d.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body under a timer: past it the body fails (the downstream stream is reset, as
/// Envoy resets it) and `on_expiry` runs once. The timer is either the route's deadline, or
/// Envoy's stream idle timeout, which starts again with every frame.
pub struct Timed<F: FnOnce() + Send + Sync + Unpin> {
    inner: Body,
    sleep: Pin<Box<tokio::time::Sleep>>,
    /// Restart the timer this long after each frame (idle timeout); `None`: a fixed deadline.
    restart: Option<std::time::Duration>,
    /// When set by the time the deadline passes, the deadline is dropped instead.
    disarmed: Option<Arc<AtomicBool>>,
    /// The deadline passed disarmed: the timer is no longer looked at.
    dropped: bool,
    what: &'static str,
    on_expiry: Option<F>,
}

impl<F: FnOnce() + Send + Sync + Unpin + 'static> Timed<F> {
    /// The body fails at `deadline` (the route timeout).
    pub fn deadline(inner: Body, deadline: std::time::Instant, on_timeout: F) -> Body {
        Timed {
            inner,
            sleep: Box::pin(tokio::time::sleep_until(deadline.into())),
            restart: None,
            disarmed: None,
            dropped: false,
            what: "upstream request timeout while the response body was streaming",
            on_expiry: Some(on_timeout),
        }
        .boxed()
    }

    /// The body fails with `what` at `deadline`, unless `disarmed` is set by then (the
    /// connection manager's `request_timeout`, which no longer applies once the response has
    /// started).
    pub fn disarmable_deadline(
        inner: Body,
        deadline: std::time::Instant,
        disarmed: Arc<AtomicBool>,
        what: &'static str,
        on_timeout: F,
    ) -> Body {
        Timed {
            inner,
            sleep: Box::pin(tokio::time::sleep_until(deadline.into())),
            restart: None,
            disarmed: Some(disarmed),
            dropped: false,
            what,
            on_expiry: Some(on_timeout),
        }
        .boxed()
    }

    /// The body fails with `what` when nothing arrives for `timeout` (the stream idle timeout).
    pub fn idle(inner: Body, timeout: std::time::Duration, what: &'static str, on_idle: F) -> Body {
        Timed {
            inner,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            restart: Some(timeout),
            disarmed: None,
            dropped: false,
            what,
            on_expiry: Some(on_idle),
        }
        .boxed()
    }
}

impl<F: FnOnce() + Send + Sync + Unpin> HttpBody for Timed<F> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            if let Some(after) = self.restart {
                self.sleep.as_mut().reset(tokio::time::Instant::now() + after);
            }
            return Poll::Ready(frame);
        }
        if !self.dropped && self.sleep.as_mut().poll(cx).is_ready() {
            if self.disarmed.as_ref().is_some_and(|d| d.load(Ordering::Relaxed)) {
                // Past the deadline but disarmed: the timer is dropped (the inner body has the
                // waker).
                self.dropped = true;
                return Poll::Pending;
            }
            if let Some(f) = self.on_expiry.take() {
                f();
            }
            return Poll::Ready(Some(Err(self.what.into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A downstream request's body: hyper's stream, or none at all (a request read by Weir's own
/// HTTP/1.1 server, `crate::lean_server`, which reads only requests without a body).
#[derive(Debug)]
pub enum RequestBody {
    /// The body as hyper's server reads it.
    Hyper(Incoming),
    /// No body.
    Empty,
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Hyper(body) => Pin::new(body).poll_frame(cx),
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Hyper(body) => body.is_end_stream(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Hyper(body) => body.size_hint(),
            RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// A request body after buffering.
pub enum Buffered {
    /// The whole body (it can be replayed).
    Complete(Bytes),
    /// More than the limit: what was read, and the rest (cannot be replayed).
    Partial(Bytes, RequestBody),
}

/// Reads a body until its end or until more than `limit` bytes were read.
pub async fn buffer(mut body: RequestBody, limit: usize) -> Result<Buffered, hyper::Error> {
    let mut data = BytesMut::new();
    loop {
        if body.is_end_stream() {
            return Ok(Buffered::Complete(data.freeze()));
        }
        match body.frame().await {
            None => return Ok(Buffered::Complete(data.freeze())),
            Some(Err(e)) => return Err(e),
            Some(Ok(frame)) => {
                if let Ok(chunk) = frame.into_data() {
                    data.extend_from_slice(&chunk);
                    if data.len() > limit {
                        return Ok(Buffered::Partial(data.freeze(), body));
                    }
                }
            }
        }
    }
}

/// A buffered prefix, then the rest of a stream.
pub struct Prefixed {
    prefix: Option<Bytes>,
    rest: RequestBody,
}

impl Prefixed {
    /// The body `prefix ++ rest`.
    pub fn body(prefix: Bytes, rest: RequestBody) -> Body {
        Prefixed {
            prefix: (!prefix.is_empty()).then_some(prefix),
            rest,
        }
        .boxed()
    }
}

impl HttpBody for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(prefix) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        Pin::new(&mut self.rest)
            .poll_frame(cx)
            .map_err(|e| Box::new(e) as BoxError)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.rest.is_end_stream()
    }
}

/// A response body that calls `done(bytes)` once, at its end or when dropped.
pub struct Metered<F: FnOnce(u64) + Send + Sync + Unpin> {
    inner: Body,
    bytes: u64,
    done: Option<F>,
}

impl<F: FnOnce(u64) + Send + Sync + Unpin + 'static> Metered<F> {
    /// Wraps a body.
    pub fn body(inner: Body, done: F) -> Body {
        Metered {
            inner,
            bytes: 0,
            done: Some(done),
        }
        .boxed()
    }
}

impl<F: FnOnce(u64) + Send + Sync + Unpin> HttpBody for Metered<F> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    self.bytes += d.len() as u64;
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                if let Some(done) = self.done.take() {
                    done(self.bytes);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<F: FnOnce(u64) + Send + Sync + Unpin> Drop for Metered<F> {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            done(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    /// A body fed from a channel, frame by frame.
    fn channel_body() -> (tokio::sync::mpsc::Sender<Bytes>, Body) {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let stream =
            tokio_stream::wrappers::ReceiverStream::new(rx).map(|b| Ok::<_, BoxError>(Frame::data(b)));
        (tx, http_body_util::StreamBody::new(stream).boxed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_disarmable_deadline_fails_the_body_unless_disarmed_in_time() {
        let deadline = || std::time::Instant::now() + std::time::Duration::from_secs(1);
        // Armed: past the deadline the body fails, once, and says why.
        let (tx, inner) = channel_body();
        let expired = Arc::new(AtomicBool::new(false));
        let flag = expired.clone();
        let mut body = Timed::disarmable_deadline(
            inner,
            deadline(),
            Arc::new(AtomicBool::new(false)),
            "request timeout",
            move || flag.store(true, Ordering::Relaxed),
        );
        tx.send(Bytes::from_static(b"early")).await.unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        let err = body.frame().await.unwrap().unwrap_err();
        assert_eq!(err.to_string(), "request timeout");
        assert!(expired.load(Ordering::Relaxed));

        // Disarmed before it passes: the deadline is dropped and the body goes on.
        let (tx, inner) = channel_body();
        let disarmed = Arc::new(AtomicBool::new(false));
        let mut body = Timed::disarmable_deadline(inner, deadline(), disarmed.clone(), "late", || {
            panic!("a disarmed deadline ran its expiry")
        });
        disarmed.store(true, Ordering::Relaxed);
        let late = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
            tx.send(Bytes::from_static(b"late")).await.unwrap();
        });
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "late");
        late.await.unwrap();
        assert!(body.frame().await.is_none());
    }
}

//! Weir's own HTTP/1.1 client for requests without a body — most proxied requests: `GET`,
//! `HEAD`, `DELETE`, `OPTIONS`. hyper's client costs about a fifth of the proxy's instructions
//! per request (a connection task, channels to it and back, a dispatcher built for every case);
//! this one writes the request head and reads the answer from the request's own task, with
//! `httparse` and [`super::codec`]. Requests with a body, upgrades and `CONNECT` go through
//! hyper's client as before.
//!
//! A connection is held by one request at a time: until its response head has come, then by the
//! response body, which reads it to its end and gives the connection back to the pool. An idle
//! connection is polled by nobody until its socket has something to say (the upstream closing
//! it), when a sweep drops the pool's closed connections.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::{Method, Response};
use hyper::body::{Body as _, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::sync::Notify;

use super::codec::{self, Decoded, Decoder, Framing};
use super::{Body, BoxError, FastHash, Outgoing, SendError, expired};
use crate::breaker::Slot;
use crate::cluster::HttpOptions;
use crate::convert::Target;
use crate::io::Io;

/// At most this many idle connections are kept per endpoint.
const MAX_IDLE_PER_ENDPOINT: usize = 128;

/// Whether a request goes through this client: no body, no upgrade, not `CONNECT`, no
/// `expect: 100-continue`.
pub fn eligible(head: &http::request::Parts, body: &Body) -> bool {
    body.is_end_stream()
        && head.method != Method::CONNECT
        // One look at each name: cheaper than two lookups for the handful a request carries.
        && !head
            .headers
            .keys()
            .any(|name| name == http::header::UPGRADE || name == http::header::EXPECT)
}

/// An HTTP/1.1 connection of this client.
pub(super) struct LeanConn {
    io: Io,
    /// What has been read and not yet used.
    buf: BytesMut,
    /// The request head being written.
    out: Vec<u8>,
    /// Scratch space for parsing response heads (and the request's header map, emptied, for
    /// the next response's headers).
    scratch: codec::HeadScratch,
    watch: Arc<IdleWatch>,
    waker: Waker,
    /// When its latest request was sent (idle time is counted from then).
    last_sent: Instant,
    created: Instant,
    /// Requests sent on it.
    used: u32,
    /// The `max_connections` slot, given back when the connection is dropped.
    slot: Option<Slot>,
}

impl LeanConn {
    /// A connection over `io`, holding `slot`.
    pub(super) fn new(io: Io, slot: Slot, pool: &Arc<LeanIdle>) -> Box<Self> {
        let watch = Arc::new(IdleWatch {
            idle: AtomicBool::new(false),
            pool: Arc::downgrade(pool),
            runtime: tokio::runtime::Handle::try_current().ok(),
        });
        let now = Instant::now();
        // Boxed: moved between the pool, the request and its body as a pointer.
        Box::new(LeanConn {
            io,
            buf: BytesMut::with_capacity(READ_SIZE),
            out: Vec::with_capacity(512),
            scratch: codec::HeadScratch::with_capacity(16),
            waker: Waker::from(watch.clone()),
            watch,
            last_sent: now,
            created: now,
            used: 0,
            slot: Some(slot),
        })
    }

    /// Reads what the socket has into the buffer: the number of bytes (0 at its end).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_SIZE / 4 {
            self.buf.reserve(READ_SIZE);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    /// Whether an idle connection is still open and silent, checked without waiting (and with
    /// its own waker, so that the pool hears when that changes).
    fn still_open(&mut self) -> bool {
        let waker = self.waker.clone();
        let mut cx = Context::from_waker(&waker);
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        // Anything but "nothing to read yet" means the connection is unusable: closed, failed,
        // or the upstream said something unasked.
        Pin::new(&mut self.io).poll_read(&mut cx, &mut probe).is_pending()
    }

    /// Whether an idle connection taken for a request is still open and silent: told from the
    /// socket's readiness where it can be, with no waker registered (the request's task
    /// registers its own when it reads).
    fn open_for_reuse(&mut self) -> bool {
        match self.io.open_and_silent() {
            Some(open) => open,
            None => self.still_open(),
        }
    }
}

/// Bytes read from the socket at a time.
const READ_SIZE: usize = 8 * 1024;

impl Drop for LeanConn {
    fn drop(&mut self) {
        // The slot first: a request woken here may open a connection in its place.
        drop(self.slot.take());
        if let Some(pool) = self.watch.pool.upgrade() {
            pool.released.notify_waiters();
        }
    }
}

/// The waker of an idle connection: while it sits in the pool, a wake-up means its socket has
/// news (almost always the upstream closing it) and a sweep of the pool is scheduled. While a
/// request holds the connection, wake-ups go to the request's task and this one ignores any
/// that reach it.
struct IdleWatch {
    idle: AtomicBool,
    pool: Weak<LeanIdle>,
    runtime: Option<tokio::runtime::Handle>,
}

impl Wake for IdleWatch {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.idle.load(Ordering::Acquire) {
            return;
        }
        let (Some(pool), Some(runtime)) = (self.pool.upgrade(), &self.runtime) else {
            return;
        };
        if !pool.sweep_scheduled.swap(true, Ordering::AcqRel) {
            runtime.spawn(async move { pool.sweep() });
        }
    }
}

/// The idle connections of a pool, and the requests waiting for one.
pub(super) struct LeanIdle {
    conns: Mutex<LeanConns>,
    /// Woken when a connection is given back or closed (requests waiting at `max_connections`);
    /// shared with the pool's hyper connections.
    pub(super) released: Arc<Notify>,
    sweep_scheduled: AtomicBool,
    options: HttpOptions,
}

#[derive(Default)]
struct LeanConns {
    // Most recently used first.
    by_endpoint: HashMap<Target, VecDeque<Box<LeanConn>>, FastHash>,
    /// Requests waiting for a connection at `max_connections`.
    waiting: usize,
}

impl LeanIdle {
    pub(super) fn new(options: HttpOptions, released: Arc<Notify>) -> Self {
        LeanIdle {
            conns: Mutex::new(LeanConns::default()),
            released,
            sweep_scheduled: AtomicBool::new(false),
            options,
        }
    }

    /// Whether an idle connection is too old for another request: idle for the idle timeout,
    /// or past `max_connection_duration`.
    fn stale(&self, conn: &LeanConn, now: Instant) -> bool {
        now.saturating_duration_since(conn.last_sent) >= self.options.idle_timeout
            || expired(&self.options, conn.created, now)
    }

    /// Takes the most recently used open idle connection to `target`; closed and stale ones
    /// are dropped on the way.
    pub(super) fn take(&self, target: &Target, now: Instant) -> Option<Box<LeanConn>> {
        let mut closed = Vec::new();
        let found = {
            let mut conns = self.conns.lock().ok()?;
            let list = conns.by_endpoint.get_mut(target)?;
            let mut found = None;
            while let Some(mut conn) = list.pop_front() {
                if !self.stale(&conn, now) && conn.open_for_reuse() {
                    conn.watch.idle.store(false, Ordering::Release);
                    found = Some(conn);
                    break;
                }
                closed.push(conn);
            }
            found
        };
        // Dropped outside the lock: each wakes the waiting requests.
        drop(closed);
        found
    }

    /// Drops one idle connection to `target`, if there is one: a request waiting at
    /// `max_connections` for the other client frees a slot this way.
    pub(super) fn evict_one(&self, target: &Target) -> bool {
        let evicted = self
            .conns
            .lock()
            .ok()
            .and_then(|mut conns| conns.by_endpoint.get_mut(target).and_then(VecDeque::pop_back));
        evicted.is_some()
    }

    /// Keeps a connection whose response has ended (unless it has served
    /// `max_requests_per_connection`), armed to hear from its socket, and wakes a request
    /// waiting for one.
    fn put(&self, target: Target, mut conn: Box<LeanConn>) {
        if self
            .options
            .max_requests_per_connection
            .is_some_and(|m| conn.used >= m)
        {
            return;
        }
        conn.watch.idle.store(true, Ordering::Release);
        if !conn.still_open() {
            return;
        }
        let Ok(mut conns) = self.conns.lock() else {
            return;
        };
        let waiting = conns.waiting > 0;
        let list = conns.by_endpoint.entry(target).or_default();
        if list.len() < MAX_IDLE_PER_ENDPOINT {
            list.push_front(conn);
        }
        drop(conns);
        if waiting {
            self.released.notify_waiters();
        }
    }

    /// Looks at every idle connection again (re-arming its watch), dropping those closed or
    /// stale.
    fn sweep(&self) {
        self.sweep_scheduled.store(false, Ordering::Release);
        let Ok(mut conns) = self.conns.lock() else {
            return;
        };
        let now = Instant::now();
        let mut closed = Vec::new();
        for list in conns.by_endpoint.values_mut() {
            let mut kept = VecDeque::with_capacity(list.len());
            for mut conn in list.drain(..) {
                if !self.stale(&conn, now) && conn.still_open() {
                    kept.push_back(conn);
                } else {
                    closed.push(conn);
                }
            }
            *list = kept;
        }
        conns.by_endpoint.retain(|_, list| !list.is_empty());
        drop(conns);
        drop(closed);
    }

    /// Counts a request waiting for a connection until the guard is dropped.
    pub(super) fn wait(&self) -> Waiting<'_> {
        if let Ok(mut conns) = self.conns.lock() {
            conns.waiting += 1;
        }
        Waiting { idle: self }
    }

    /// Idle connections to `target`, and requests waiting (tests).
    #[cfg(test)]
    pub(super) fn counts(&self, target: &Target) -> (usize, usize) {
        let conns = self.conns.lock().unwrap();
        (
            conns.by_endpoint.get(target).map_or(0, VecDeque::len),
            conns.waiting,
        )
    }
}

/// A request waiting for a connection at `max_connections`, counted while it lives.
pub(super) struct Waiting<'a> {
    idle: &'a LeanIdle,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Ok(mut conns) = self.idle.conns.lock() {
            conns.waiting = conns.waiting.saturating_sub(1);
        }
    }
}

/// Why an exchange failed, with the request when it may be sent again on another connection
/// (a reused connection the upstream had closed: nothing of it was written, or the request is
/// idempotent and no byte of an answer came).
pub(super) struct Failed<'a> {
    pub(super) error: SendError,
    pub(super) retry: Option<Outgoing<'a>>,
}

fn reset(reason: impl std::fmt::Display) -> SendError {
    SendError::Reset(reason.to_string())
}

/// Sends `req` on `conn` and reads the response head; the body reads the rest and gives the
/// connection back to `pool`.
pub(super) async fn exchange<'a>(
    pool: &Arc<LeanIdle>,
    target: &Target,
    mut conn: Box<LeanConn>,
    req: Outgoing<'a>,
    now: Instant,
) -> Result<Response<ResponseBody>, Failed<'a>> {
    let reused = conn.used > 0;
    conn.used += 1;
    conn.last_sent = now;
    conn.out.clear();
    codec::encode_head(&mut conn.out, req.head());
    // Flushed too: TLS keeps records in its buffer otherwise.
    let written = async {
        conn.io.write_all(&conn.out).await?;
        conn.io.flush().await
    };
    if let Err(e) = written.await {
        return Err(Failed {
            error: reset(e),
            retry: reused.then_some(req),
        });
    }
    // Whether any byte of an answer (an interim one included) has come.
    let mut answered = false;
    let head = loop {
        // Nothing to parse before the first bytes of the answer.
        let parsed = if conn.buf.is_empty() {
            Ok(None)
        } else {
            codec::parse_head(&mut conn.buf, &req.head().method, &mut conn.scratch)
        };
        match parsed {
            Ok(Some(head)) if head.status == http::StatusCode::SWITCHING_PROTOCOLS => {
                return Err(Failed {
                    error: reset("the upstream switched protocols unasked"),
                    retry: None,
                });
            }
            // Interim answers (`100 Continue`, `103 Early Hints`) are dropped; the final one
            // may already be in the buffer.
            Ok(Some(head)) if head.status.is_informational() => continue,
            Ok(Some(head)) => break head,
            Ok(None) => {}
            Err(e) => {
                return Err(Failed {
                    error: reset(e),
                    retry: None,
                });
            }
        }
        match std::future::poll_fn(|cx| conn.poll_fill(cx)).await {
            Ok(0) => {
                return Err(Failed {
                    error: reset("the upstream closed the connection before responding"),
                    retry: (reused && !answered && req.head().method.is_idempotent()).then_some(req),
                });
            }
            Ok(_) => answered = true,
            Err(e) => {
                return Err(Failed {
                    error: reset(e),
                    retry: None,
                });
            }
        }
    };
    // The request is answered and no longer needed for a retry: an owned head's map is kept
    // for the next response on this connection.
    if let Outgoing::Owned(parts, _) = req {
        conn.scratch.recycle(parts.headers);
    }
    let keep_alive = head.keep_alive;
    let mut response = Response::new(());
    *response.status_mut() = head.status;
    *response.version_mut() = head.version;
    *response.headers_mut() = head.headers;
    let mut body = LeanBody {
        conn: Some(conn),
        decoder: Decoder::new(head.framing),
        keep_alive,
        pool: pool.clone(),
        target: target.clone(),
        size: match head.framing {
            Framing::Empty => Some(0),
            Framing::Length(n) => Some(n),
            _ => None,
        },
    };
    if body.decoder.is_done() {
        body.settle();
    }
    Ok(response.map(|()| ResponseBody::Lean(body)))
}

/// A response body read from a connection of this client.
pub struct LeanBody {
    /// The connection, until the body has ended (then given back) or failed (then closed).
    conn: Option<Box<LeanConn>>,
    decoder: Decoder,
    keep_alive: bool,
    pool: Arc<LeanIdle>,
    target: Target,
    /// The length, when known.
    size: Option<u64>,
}

impl LeanBody {
    /// The body has ended: the connection goes back to the pool if it may carry another
    /// request.
    fn settle(&mut self) {
        // Bytes after the end of the answer were not asked for: such a connection is not
        // reused either.
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && self.decoder.is_done()
            && conn.buf.is_empty()
        {
            self.pool.put(self.target.clone(), conn);
        }
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(conn) = &mut self.conn else {
            return Poll::Ready(None);
        };
        loop {
            let decoded = match self.decoder.decode(&mut conn.buf) {
                Ok(Decoded::NeedMore) => match conn.poll_fill(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(0)) => self.decoder.at_eof(),
                    Poll::Ready(Ok(_)) => continue,
                    Poll::Ready(Err(e)) => {
                        self.conn = None;
                        return Poll::Ready(Some(Err(Box::new(e))));
                    }
                },
                other => other,
            };
            return match decoded {
                Ok(Decoded::Data(bytes)) => {
                    if self.decoder.is_done() {
                        self.settle();
                    }
                    Poll::Ready(Some(Ok(Frame::data(bytes))))
                }
                Ok(Decoded::Trailers(trailers)) => {
                    self.settle();
                    Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                }
                Ok(Decoded::End) => {
                    self.settle();
                    Poll::Ready(None)
                }
                Ok(Decoded::NeedMore) => continue,
                Err(e) => {
                    self.conn = None;
                    Poll::Ready(Some(Err(Box::new(e))))
                }
            };
        }
    }
}

/// The body of an upstream response: from hyper's client, or from [`LeanBody`].
pub enum ResponseBody {
    /// hyper's (HTTP/2, and HTTP/1.1 requests with a body or an upgrade).
    Hyper(hyper::body::Incoming),
    /// This client's.
    Lean(LeanBody),
}

impl ResponseBody {
    /// The whole body, if it has already been read and nothing of it has been taken yet: a
    /// body of known length that arrived with the head (the usual small answer) comes out in
    /// one piece and its connection goes back to the pool, with no frame-by-frame collection
    /// and no timer. `None` when more must be read, for other framings, and for hyper's bodies;
    /// the body is then untouched.
    pub fn take_whole(&mut self) -> Option<Bytes> {
        let ResponseBody::Lean(body) = self else {
            return None;
        };
        match (&body.decoder, &mut body.conn, body.size) {
            // Nothing to read (HEAD, 204, 304, `content-length: 0`): the connection is back.
            (Decoder::Done, None, Some(0)) => Some(Bytes::new()),
            (Decoder::Length(left), Some(conn), Some(size))
                if *left == size && conn.buf.len() as u64 >= size =>
            {
                match body.decoder.decode(&mut conn.buf) {
                    Ok(Decoded::Data(bytes)) if body.decoder.is_done() => {
                        body.settle();
                        Some(bytes)
                    }
                    // A length decoder with the whole length buffered always ends here.
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

impl hyper::body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ResponseBody::Hyper(incoming) => Pin::new(incoming)
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map_err(|e| Box::new(e) as BoxError))),
            ResponseBody::Lean(body) => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Hyper(incoming) => incoming.is_end_stream(),
            ResponseBody::Lean(body) => body.conn.is_none() || body.decoder.is_done(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Hyper(incoming) => incoming.size_hint(),
            ResponseBody::Lean(LeanBody { size: Some(n), .. }) => SizeHint::with_exact(*n),
            ResponseBody::Lean(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use http::Request;
    use http_body_util::BodyExt;
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::breaker::Limits;
    use crate::pool::{Pool, Protocol};

    /// What the raw server does after an answer.
    #[derive(Clone, Copy)]
    enum Then {
        KeepOpen,
        Close,
        CloseAfter(Duration),
    }

    /// A raw HTTP/1.1 server: for the `n`th request on a connection (from 0) it writes
    /// `answer(n)` and does what that says; counts the connections it accepted.
    async fn raw_server(answer: fn(usize) -> (Vec<u8>, Then)) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    for n in 0.. {
                        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                            let mut chunk = [0u8; 1024];
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(k) => seen.extend_from_slice(&chunk[..k]),
                            }
                        }
                        let end = seen.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                        seen.drain(..end);
                        let (bytes, then) = answer(n);
                        if stream.write_all(&bytes).await.is_err() {
                            return;
                        }
                        match then {
                            Then::KeepOpen => {}
                            Then::Close => return,
                            Then::CloseAfter(d) => {
                                tokio::time::sleep(d).await;
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn pool(limits: Limits) -> Arc<Pool> {
        crate::pool::tests::pool(limits, HttpOptions::default())
    }

    fn request(method: Method, body: &'static str) -> Request<Body> {
        let body = if body.is_empty() {
            crate::body::empty()
        } else {
            crate::body::full(body)
        };
        Request::builder()
            .method(method)
            .uri("/")
            .header("host", "test")
            .body(body)
            .unwrap()
    }

    /// Status, body and trailers of an answer, or the error.
    async fn fetch(
        pool: &Pool,
        target: &Target,
        method: Method,
    ) -> Result<(u16, Bytes, Option<HeaderMap>), String> {
        let resp = pool
            .send(target, Protocol::Http1, request(method, ""))
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let collected = resp.into_body().collect().await.map_err(|e| e.to_string())?;
        let trailers = collected.trailers().cloned();
        Ok((status, collected.to_bytes(), trailers))
    }

    use http::HeaderMap;

    #[tokio::test]
    async fn a_chunked_answer_streams_with_its_trailers_and_the_connection_is_reused() {
        let (addr, accepted) = raw_server(|_| {
            let wire = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\ngrpc-status: 0\r\n\r\n";
            (wire.to_vec(), Then::KeepOpen)
        })
        .await;
        let target = Target::Socket(addr);
        let pool = pool(Limits::default());
        for _ in 0..3 {
            let (status, body, trailers) = fetch(&pool, &target, Method::GET).await.unwrap();
            assert_eq!((status, &body[..]), (200, &b"hello world"[..]));
            assert_eq!(trailers.unwrap()["grpc-status"], "0");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.lean.counts(&target), (1, 0));
    }

    #[tokio::test]
    async fn answers_without_a_body_leave_the_connection_ready() {
        let (addr, accepted) = raw_server(|n| {
            let wire: &[u8] = match n {
                // The length of what a GET would get; no body follows.
                0 => b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n",
                1 => b"HTTP/1.1 204 No Content\r\n\r\n",
                2 => b"HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n",
                // An interim answer first.
                _ => b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            };
            (wire.to_vec(), Then::KeepOpen)
        })
        .await;
        let target = Target::Socket(addr);
        let pool = pool(Limits::default());
        let answers = [
            fetch(&pool, &target, Method::HEAD).await.unwrap(),
            fetch(&pool, &target, Method::GET).await.unwrap(),
            fetch(&pool, &target, Method::GET).await.unwrap(),
            fetch(&pool, &target, Method::GET).await.unwrap(),
        ];
        let got: Vec<_> = answers.iter().map(|(s, b, _)| (*s, b.len())).collect();
        assert_eq!(got, [(200, 0), (204, 0), (304, 0), (200, 2)]);
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_body_that_came_with_its_head_is_taken_whole_and_the_connection_reused() {
        let (addr, accepted) = raw_server(|n| {
            let wire: &[u8] = match n {
                0 => b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
                1 => b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
                _ => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            };
            (wire.to_vec(), Then::KeepOpen)
        })
        .await;
        let target = Target::Socket(addr);
        let pool = pool(Limits::default());
        let mut whole = Vec::new();
        for _ in 0..3 {
            let resp = pool
                .send(&target, Protocol::Http1, request(Method::GET, ""))
                .await
                .unwrap();
            let mut body = resp.into_body();
            whole.push(body.take_whole());
            // What was not taken whole still reads as usual.
            let rest = body.collect().await.unwrap().to_bytes();
            whole.push(Some(rest));
        }
        let expected: [Option<&[u8]>; 6] =
            [Some(b"hello"), Some(b""), Some(b""), Some(b""), None, Some(b"ok")];
        let got: Vec<Option<&[u8]>> = whole.iter().map(|b| b.as_deref()).collect();
        assert_eq!(got, expected);
        // Given back at once each time: one connection served all three.
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.lean.counts(&target), (1, 0));
    }

    #[tokio::test]
    async fn a_body_still_on_its_way_is_not_taken_whole_and_streams_instead() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let mut chunk = [0u8; 1024];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => seen.extend_from_slice(&chunk[..k]),
                }
            }
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhe")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            stream.write_all(b"llo").await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let target = Target::Socket(addr);
        let pool = pool(Limits::default());
        let resp = pool
            .send(&target, Protocol::Http1, request(Method::GET, ""))
            .await
            .unwrap();
        let mut body = resp.into_body();
        assert_eq!(body.take_whole(), None);
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"hello");
        assert_eq!(pool.lean.counts(&target), (1, 0));
    }

    #[tokio::test]
    async fn a_connection_that_sent_more_than_its_answer_is_not_reused() {
        let (addr, accepted) = raw_server(|_| {
            let wire = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n";
            (wire.to_vec(), Then::KeepOpen)
        })
        .await;
        let target = Target::Socket(addr);
        let pool = pool(Limits::default());
        for _ in 0..2 {
            let (_, body, _) = fetch(&pool, &target, Method::GET).await.unwrap();
            assert_eq!(&body[..], b"ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_body_without_length_ends_with_the_connection_which_is_not_reused() {
        let (addr, accepted) =
            raw_server(|_| (b"HTTP/1.1 200 OK\r\n\r\nuntil the end".to_vec(), Then::Close)).await;
        let target = Target::Socket(addr);
        let pool = pool(Limits::default());
        for _ in 0..2 {
            let (_, body, _) = fetch(&pool, &target, Method::GET).await.unwrap();
            assert_eq!(&body[..], b"until the end");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(pool.lean.counts(&target), (0, 0));
    }

    #[tokio::test]
    async fn a_connection_closed_in_the_middle_of_a_body_fails_that_body_only() {
        // The first answer of all is cut short; the others are whole.
        static ANSWERED: AtomicUsize = AtomicUsize::new(0);
        let (addr, accepted) = raw_server(|_| match ANSWERED.fetch_add(1, Ordering::SeqCst) {
            0 => (
                b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc".to_vec(),
                Then::Close,
            ),
            _ => (
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
                Then::KeepOpen,
            ),
        })
        .await;
        let target = Target::Socket(addr);
        let pool = pool(Limits::default());
        let failed = fetch(&pool, &target, Method::GET).await.unwrap_err();
        assert!(failed.contains("closed in the middle of the body"), "{failed}");
        assert_eq!(
            pool.lean.counts(&target),
            (0, 0),
            "the broken connection is not kept"
        );
        for _ in 0..2 {
            let (status, body, _) = fetch(&pool, &target, Method::GET).await.unwrap();
            assert_eq!((status, &body[..]), (200, &b"ok"[..]));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn malformed_and_oversized_answers_are_errors_with_their_reason() {
        let (addr, _) = raw_server(|_| (b"HTTP/1.1 2x0 OK\r\n\r\n".to_vec(), Then::KeepOpen)).await;
        let failed = fetch(&pool(Limits::default()), &Target::Socket(addr), Method::GET)
            .await
            .unwrap_err();
        assert!(failed.contains("malformed response head"), "{failed}");
        let (addr, _) = raw_server(|_| {
            let mut wire = b"HTTP/1.1 200 OK\r\n".to_vec();
            wire.extend(std::iter::repeat_n(b'x', codec::MAX_HEAD_BYTES + 10));
            (wire, Then::KeepOpen)
        })
        .await;
        let failed = fetch(&pool(Limits::default()), &Target::Socket(addr), Method::GET)
            .await
            .unwrap_err();
        assert!(failed.contains("over 61440 bytes"), "{failed}");
        let (addr, _) = raw_server(|_| {
            (
                b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec(),
                Then::KeepOpen,
            )
        })
        .await;
        let failed = fetch(&pool(Limits::default()), &Target::Socket(addr), Method::GET)
            .await
            .unwrap_err();
        assert!(failed.contains("switched protocols unasked"), "{failed}");
    }

    #[tokio::test]
    async fn an_idle_connection_the_upstream_closes_leaves_the_pool_at_once() {
        let (addr, accepted) = raw_server(|_| {
            let wire = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            (wire.to_vec(), Then::CloseAfter(Duration::from_millis(50)))
        })
        .await;
        let target = Target::Socket(addr);
        let pool = pool(Limits::default());
        fetch(&pool, &target, Method::GET).await.unwrap();
        assert_eq!(pool.lean.counts(&target), (1, 0), "kept after its answer");
        // Nobody uses it: its closing alone takes it out of the pool.
        let deadline = Instant::now() + Duration::from_secs(2);
        while pool.lean.counts(&target).0 > 0 {
            assert!(
                Instant::now() < deadline,
                "the closed connection is still in the pool"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        fetch(&pool, &target, Method::GET).await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_get_given_a_connection_closed_a_moment_ago_goes_on_another() {
        // Each connection is closed right after its answer, without `connection: close`: the
        // next request may find it in the pool before the close is seen.
        let (addr, accepted) = raw_server(|_| {
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
                Then::Close,
            )
        })
        .await;
        let target = Target::Socket(addr);
        let pool = pool(Limits::default());
        for _ in 0..20 {
            assert_eq!(fetch(&pool, &target, Method::GET).await.unwrap().0, 200);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 20);
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_closes_its_connection() {
        let (addr, accepted) = raw_server(|_| {
            let wire = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n";
            (wire.to_vec(), Then::CloseAfter(Duration::from_secs(5)))
        })
        .await;
        let target = Target::Socket(addr);
        let pool = pool(Limits::default());
        let resp = pool
            .send(&target, Protocol::Http1, request(Method::GET, ""))
            .await
            .unwrap();
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "abc");
        drop(body);
        assert_eq!(pool.lean.counts(&target), (0, 0));
        let _ = tokio::time::timeout(Duration::from_millis(200), fetch(&pool, &target, Method::GET)).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn both_clients_share_max_connections_without_starving_each_other() {
        let (addr, accepted) = raw_server(|_| {
            let wire = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            (wire.to_vec(), Then::KeepOpen)
        })
        .await;
        let target = Target::Socket(addr);
        let pool = pool(Limits {
            max_connections: 1,
            max_pending_requests: 10,
            ..Limits::default()
        });
        let limit = Duration::from_secs(5);
        // A GET leaves an idle connection of Weir's client holding the only slot; a POST with a
        // body (hyper's client) closes it to get one, and the next GET does the same back.
        let get = fetch(&pool, &target, Method::GET);
        tokio::time::timeout(limit, get).await.unwrap().unwrap();
        let post = pool.send(&target, Protocol::Http1, request(Method::POST, "payload"));
        let resp = tokio::time::timeout(limit, post)
            .await
            .expect("the POST waited forever")
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
        tokio::time::timeout(limit, fetch(&pool, &target, Method::GET))
            .await
            .expect("the GET waited forever")
            .unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }
}

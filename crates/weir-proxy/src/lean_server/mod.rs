//! Weir's own HTTP/1.1 server for downstream requests without a body.
//!
//! Most requests through a proxy are `GET`s: a head and no body. For those this loop reads the
//! head with `httparse`, calls the router, and writes the answer, on the connection's own task
//! and without hyper's connection machinery (its dispatcher, buffers and per-request timers
//! were about a quarter of the instructions the proxy spent on such a request). Everything
//! else — a request with a body, an upgrade, `expect`, `CONNECT`, HTTP/1.0, HTTP/2's preface, a
//! malformed or oversized head — is handed, with the bytes already read, to hyper's server,
//! which serves the rest of the connection exactly as before: the same answers to bad input,
//! the same protocol coverage.
//!
//! As hyper's server does, it closes a connection that waits longer than the connection
//! manager's idle timeout for a request head, ends an in-flight request (dropping its upstream
//! exchange) when the client closes the connection, answers `connection: close` and closes
//! once a drained listener's request is done, and reads pipelined requests one after another.

pub mod codec;

use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use http::{Method, Response};
use hyper::body::Body as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};

use crate::body::RequestBody;
use crate::drain::DrainSignal;
use crate::http::{HttpContext, handle};
use crate::inspect::Rewind;
use crate::pool::Body;
use crate::wake_gate::Gated;
use codec::{BodyLength, BodyWriter, Parsed, RequestHead};

/// Bytes read from the connection at a time.
const READ_SIZE: usize = 8 * 1024;
/// A body frame at least this large is written on its own rather than copied behind the head.
const DIRECT_WRITE: usize = 16 * 1024;

/// Serves HTTP/1.1 on a connection until it ends, is drained, or sends a request this server
/// leaves to hyper's (then hyper serves the rest of it).
pub async fn serve<S>(ctx: Arc<HttpContext>, mut stream: S, drain: DrainSignal)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // hyper's limit for a request head (`max_buf_size`), so a head it would refuse is refused
    // by it.
    let limit = ctx.manager.max_request_headers.max(8192) * 2;
    let mut buf = BytesMut::with_capacity(READ_SIZE);
    let handoff = {
        let mut conn = Connection {
            ctx: &ctx,
            stream: &mut stream,
            buf: &mut buf,
            out: Vec::with_capacity(1024),
            scratch: crate::pool::codec::HeadScratch::default(),
            limit,
            idle: IdleTimer::new(ctx.manager.idle_timeout),
        };
        conn.run(&drain).await
    };
    match handoff {
        Ending::HandOff => {
            // Boxed: rarely taken, and not to be carried in every connection's task.
            Box::pin(crate::serve::serve_with_hyper(
                ctx,
                Rewind::new(buf.freeze(), stream),
                drain,
            ))
            .await;
        }
        Ending::Close => {
            let _ = stream.shutdown().await;
        }
        Ending::Gone => {}
    }
}

/// How the loop ended.
enum Ending {
    /// The rest of the connection is hyper's.
    HandOff,
    /// The server closes the connection (after `connection: close`, a drain, an idle timeout).
    Close,
    /// The client closed it, or it failed.
    Gone,
}

struct Connection<'a, S> {
    ctx: &'a Arc<HttpContext>,
    stream: &'a mut S,
    buf: &'a mut BytesMut,
    /// What is to be written next (a response head, small body frames).
    out: Vec<u8>,
    /// Where the headers of the head being parsed sit, and the last response's header map,
    /// emptied, for the next request's headers.
    scratch: crate::pool::codec::HeadScratch,
    limit: usize,
    idle: IdleTimer,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<'_, S> {
    async fn run(&mut self, drain: &DrainSignal) -> Ending {
        // Polled only when it fires (see `wake_gate`): a watch check per request otherwise.
        let mut watching = drain.clone();
        let drained = Gated::new(async move { watching.drained().await });
        let mut drained = pin!(drained);
        loop {
            let head = match self.next_head(drained.as_mut()).await {
                Ok(head) => head,
                Err(ending) => return ending,
            };
            let method = head.request.method().clone();
            let close_requested = head.close;
            let Some(response) = self.answer(head).await else {
                return Ending::Gone;
            };
            let keep_alive = !close_requested && !drain.has_fired();
            match self.write_response(response, &method, keep_alive).await {
                Ok(true) => self.idle.restart(),
                Ok(false) => return Ending::Close,
                Err(e) => {
                    tracing::debug!(error = %e, "writing a response to the downstream connection failed");
                    return Ending::Gone;
                }
            }
        }
    }

    /// Reads until a whole request head is buffered.
    async fn next_head(
        &mut self,
        mut drained: Pin<&mut Gated<impl Future<Output = ()>>>,
    ) -> Result<RequestHead, Ending> {
        loop {
            if !self.buf.is_empty() {
                match codec::parse_request(self.buf, self.limit, &mut self.scratch) {
                    Parsed::Request(head) => return Ok(head),
                    Parsed::Other => return Err(Ending::HandOff),
                    Parsed::Partial => {}
                }
            }
            if self.buf.capacity() - self.buf.len() < READ_SIZE / 4 {
                self.buf.reserve(READ_SIZE);
            }
            tokio::select! {
                biased;
                read = self.stream.read_buf(self.buf) => match read {
                    Ok(0) => return Err(Ending::Gone),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "reading from the downstream connection failed");
                        return Err(Ending::Gone);
                    }
                },
                expired = self.idle.expired() => if expired {
                    tracing::debug!("downstream HTTP/1.1 connection idle for the idle timeout; closing");
                    return Err(Ending::Close);
                },
                () = drained.as_mut() => return Err(Ending::Close),
            }
        }
    }

    /// Runs the request through the router, watching for the client closing the connection
    /// meanwhile (then the exchange is dropped: `None`).
    async fn answer(&mut self, head: RequestHead) -> Option<Response<Body>> {
        let request = head.request.map(|()| RequestBody::Empty);
        // Not boxed (hyper's server boxes it): boxing copies the whole future, kilobytes, for
        // every request; inline, it is copied with the connection's task when that starts.
        let mut response = pin!(handle(self.ctx.clone(), request));
        loop {
            tokio::select! {
                biased;
                response = response.as_mut() => {
                    let mut response = response.ok()?;
                    crate::http::keepalive_under_overload(self.ctx, false, &mut response);
                    return Some(response);
                }
                // A pipelined request stays in the buffer; past one, the connection is not read
                // until this answer is written.
                read = self.stream.read_buf(self.buf), if self.buf.is_empty() => match read {
                    Ok(0) | Err(_) => {
                        tracing::debug!("downstream connection closed before its response");
                        return None;
                    }
                    Ok(_) => {}
                },
            }
        }
    }

    /// Writes a response; true if the connection can carry another.
    async fn write_response(
        &mut self,
        response: Response<Body>,
        method: &Method,
        keep_alive: bool,
    ) -> io::Result<bool> {
        let (parts, mut body) = response.into_parts();
        let length = if body.is_end_stream() {
            BodyLength::Ended
        } else {
            match body.size_hint().exact() {
                Some(n) => BodyLength::Known(n),
                None => BodyLength::Unknown,
            }
        };
        self.out.clear();
        let head = match codec::encode_response(&mut self.out, &parts, method, length, keep_alive) {
            Ok(head) => head,
            Err(e) => {
                // As hyper does: nothing is sent, the connection closes.
                tracing::debug!(error = %e, "response not sent");
                return Ok(false);
            }
        };
        // Written out: the map is kept for the next request's headers.
        self.scratch.recycle(parts.headers);
        let mut writer = BodyWriter::new(head.framing);
        let mut body = Pin::new(&mut body);
        loop {
            // Frames ready now go out with the head; the head goes before waiting for more.
            let frame = match poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    self.flush_out().await?;
                    poll_fn(|cx| body.as_mut().poll_frame(cx)).await
                }
            };
            match frame {
                None => {
                    writer.finish(&mut self.out, None);
                    break;
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        if let Some(piece) = writer.data(&mut self.out, data) {
                            if piece.data.len() >= DIRECT_WRITE {
                                self.flush_out().await?;
                                self.stream.write_all(&piece.data).await?;
                            } else {
                                self.out.extend_from_slice(&piece.data);
                            }
                            self.out.extend_from_slice(piece.suffix);
                        }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            writer.finish(&mut self.out, Some(&trailers));
                            break;
                        }
                    }
                },
                Some(Err(e)) => {
                    // The client must not take a cut body for a whole one: the connection ends
                    // without the body's end (as hyper's server ends it).
                    tracing::debug!(error = %e, "response body failed; closing the downstream connection");
                    self.flush_out().await?;
                    return Ok(false);
                }
            }
        }
        self.flush_out().await?;
        Ok(head.keep_alive && writer.reusable())
    }

    async fn flush_out(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        self.stream.flush().await
    }
}

/// The wait for a request head, bounded by the idle timeout: one timer per connection, moved
/// only when it fires early (a request restarts the wait with a clock read, not a timer).
struct IdleTimer {
    timeout: Option<Duration>,
    since: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl IdleTimer {
    fn new(timeout: Option<Duration>) -> Self {
        let since = Instant::now();
        IdleTimer {
            timeout,
            since,
            sleep: timeout.map(|t| Box::pin(tokio::time::sleep_until(since + t))),
        }
    }

    /// The connection starts waiting for its next request now.
    fn restart(&mut self) {
        if self.timeout.is_some() {
            self.since = Instant::now();
        }
    }

    /// Resolves when the timer fires: true if the connection has waited the whole timeout,
    /// false if it fired for an earlier wait (and has been moved to the current one's end).
    /// Never without a timeout.
    async fn expired(&mut self) -> bool {
        let (Some(timeout), Some(sleep)) = (self.timeout, self.sleep.as_mut()) else {
            return std::future::pending().await;
        };
        sleep.as_mut().await;
        let deadline = self.since + timeout;
        if Instant::now() >= deadline {
            return true;
        }
        sleep.as_mut().reset(deadline);
        false
    }
}

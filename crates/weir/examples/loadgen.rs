//! A small HTTP/1.1 load generator and backend for `bench/proxy/bench.py`.
//!
//! - `loadgen serve ADDR`: answers every request with `200 ok` (the backend every proxy fronts).
//! - `loadgen run ADDR HOST CONNECTIONS SECONDS RATE [h2]`: sends `GET /` with `Host: HOST` over
//!   `CONNECTIONS` keep-alive connections for `SECONDS`; `RATE` requests per second in all (0:
//!   as fast as possible); HTTP/1.1, or HTTP/2 with prior knowledge (h2c) with `h2`, one request
//!   at a time per connection either way. When the previous response came after a request was due, its latency
//!   is measured from when it was due, so a stall is not hidden (no coordinated omission);
//!   otherwise from when it was sent, so the lateness of the load generator's own timer (up to a
//!   millisecond with tokio's) is not charged to the target. Prints one JSON line: requests,
//!   errors, rps, p50/p90/p99/max in microseconds.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    match args.first().map(String::as_str) {
        Some("serve") => {
            let addr: SocketAddr = args
                .get(1)
                .ok_or("serve ADDR")?
                .parse()
                .map_err(|e| format!("{e}"))?;
            runtime.block_on(serve(addr))
        }
        Some("run") => {
            let get = |i: usize| {
                args.get(i)
                    .ok_or("run ADDR HOST CONNECTIONS SECONDS RATE [h2]".to_string())
            };
            let addr: SocketAddr = get(1)?.parse().map_err(|e| format!("{e}"))?;
            let host = get(2)?.clone();
            let connections: usize = get(3)?.parse().map_err(|e| format!("{e}"))?;
            let seconds: f64 = get(4)?.parse().map_err(|e| format!("{e}"))?;
            let rate: f64 = get(5)?.parse().map_err(|e| format!("{e}"))?;
            let h2 = match args.get(6).map(String::as_str) {
                None => false,
                Some("h2") => true,
                Some(other) => return Err(format!("unknown protocol {other:?}: give h2 or nothing")),
            };
            runtime.block_on(run(
                addr,
                host,
                connections,
                Duration::from_secs_f64(seconds),
                rate,
                h2,
            ))
        }
        _ => Err("usage: loadgen serve ADDR | loadgen run ADDR HOST CONNECTIONS SECONDS RATE [h2]".into()),
    }
}

async fn serve(addr: SocketAddr) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| e.to_string())?;
    println!("serving on {}", listener.local_addr().map_err(|e| e.to_string())?);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|_req| async {
                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A connection's request sender, HTTP/1.1 or HTTP/2.
enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl Sender {
    /// Connects and hands the connection's driver to the runtime.
    async fn connect(addr: SocketAddr, h2: bool) -> Result<Sender, String> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let io = hyper_util::rt::TokioIo::new(stream);
        if h2 {
            let executor = hyper_util::rt::TokioExecutor::new();
            let (sender, conn) = hyper::client::conn::http2::handshake(executor, io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Ok(Sender::Http2(sender))
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Ok(Sender::Http1(sender))
        }
    }

    async fn send(
        &mut self,
        req: hyper::Request<Empty<Bytes>>,
    ) -> hyper::Result<hyper::Response<hyper::body::Incoming>> {
        match self {
            Sender::Http1(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
            Sender::Http2(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
        }
    }
}

/// One connection's work: (latencies in µs, errors).
async fn connection(
    addr: SocketAddr,
    host: String,
    h2: bool,
    start: Instant,
    end: Instant,
    offset: Duration,
    interval: Option<Duration>,
) -> (Vec<u64>, u64) {
    let mut latencies = Vec::new();
    let mut errors = 0u64;
    let Ok(mut sender) = Sender::connect(addr, h2).await else {
        return (latencies, 1);
    };
    // HTTP/2 takes the authority from the URI (`:authority`); HTTP/1.1 from the Host header.
    let uri = if h2 {
        format!("http://{host}/")
    } else {
        "/".to_string()
    };
    let mut due = start + offset;
    tokio::time::sleep_until(start.into()).await;
    // When the previous response arrived (a later one means the target held this request back).
    let mut previous_done = start;
    while due < end {
        let sent_at = match interval {
            Some(i) => {
                let held_back = previous_done > due;
                tokio::time::sleep_until(due.into()).await;
                let at = if held_back { due } else { Instant::now() };
                due += i;
                at
            }
            None => {
                due = Instant::now();
                due
            }
        };
        let mut builder = hyper::Request::builder().uri(uri.as_str());
        if !h2 {
            builder = builder.header("host", &host);
        }
        let Ok(req) = builder.body(Empty::<Bytes>::new()) else {
            break;
        };
        match sender.send(req).await {
            Ok(resp) => {
                let ok = resp.status().is_success();
                let _ = resp.into_body().collect().await;
                previous_done = Instant::now();
                if ok {
                    latencies.push(sent_at.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                }
            }
            Err(_) => {
                errors += 1;
                break;
            }
        }
    }
    (latencies, errors)
}

async fn run(
    addr: SocketAddr,
    host: String,
    connections: usize,
    duration: Duration,
    rate: f64,
    h2: bool,
) -> Result<(), String> {
    let start = Instant::now() + Duration::from_millis(100);
    let end = start + duration;
    let interval = (rate > 0.0).then(|| Duration::from_secs_f64(connections as f64 / rate));
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            // Connections are spread over one interval so the rate is smooth.
            let offset = interval.map_or(Duration::ZERO, |i| i.mul_f64(c as f64 / connections as f64));
            tokio::spawn(connection(addr, host.clone(), h2, start, end, offset, interval))
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.map_err(|e| e.to_string())?;
        all.extend(l);
        errors += e;
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{{\"requests\": {}, \"errors\": {}, \"rps\": {:.0}, \"p50_us\": {}, \"p90_us\": {}, \"p99_us\": {}, \"max_us\": {}}}",
        all.len(),
        errors,
        all.len() as f64 / duration.as_secs_f64(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        all.last().copied().unwrap_or(0)
    );
    Ok(())
}

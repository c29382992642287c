//! The TCP proxy filter: a weighted cluster pick, a host from the cluster's load balancer (or
//! the original destination), up to `max_connect_attempts` connects, then bytes both ways until
//! either side closes or nothing moves for the idle timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::convert::Target;
use crate::io::connect_with;
use crate::lb::PickContext;
use crate::listener::TcpProxyConfig;
use crate::state::ProxyState;

/// Proxies one downstream connection.
pub async fn proxy<S>(
    state: &ProxyState,
    config: &TcpProxyConfig,
    downstream: S,
    original_dst: Option<Target>,
    server_name: Option<&str>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let snapshot = state.snapshot();
    let picked = match (config.cluster_from_sni, server_name) {
        (true, Some(sni)) => Some(std::borrow::Cow::Borrowed(sni)),
        _ => config
            .clusters
            .pick(fastrand::u64(..), &http::HeaderMap::new())
            .map(|(c, _)| c),
    };
    let Some(cluster_name) = picked else {
        return;
    };
    let Some(cluster) = snapshot.clusters.get(cluster_name.as_ref()).cloned() else {
        tracing::debug!(cluster = %cluster_name, "tcp_proxy cluster not found; closing");
        state.counters.no_cluster.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let destination = cluster.destination.clone();
    cluster.warmed(cluster.config.connect_timeout).await;
    // Envoy's `max_connections` breaker: past it the connection is closed (flag UO).
    let Ok(_connection_slot) = cluster.pool.breakers().connection() else {
        tracing::debug!(cluster = %cluster_name, "tcp_proxy: the cluster's maximum connections are in use");
        let labels = state
            .metrics
            .tcp_labels(&destination, crate::http::flags::UPSTREAM_OVERFLOW);
        state.metrics.tcp_opened(&labels);
        state.metrics.tcp_closed(&labels, 0, 0);
        return;
    };
    let mut tried = Vec::new();
    let mut upstream = None;
    for _ in 0..config.max_connect_attempts {
        let host = match cluster.pick(
            &PickContext {
                hash: None,
                avoid: &tried,
                exclude_priorities: &[],
            },
            2,
            original_dst.as_ref(),
        ) {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(cluster = %cluster_name, error = %e, "tcp_proxy: no upstream");
                cluster
                    .stats
                    .upstream_cx_none_healthy
                    .fetch_add(1, Ordering::Relaxed);
                let labels = state.metrics.tcp_labels(&destination, "UH");
                state.metrics.tcp_opened(&labels);
                state.metrics.tcp_closed(&labels, 0, 0);
                return;
            }
        };
        if state.is_own(&host.target) {
            tracing::warn!(target = %host.target, "refusing a passthrough to this proxy's own address (it would loop)");
            return;
        }
        match connect_with(&host.target, cluster.pool.settings()).await {
            Ok(io) => {
                cluster.report(&host, crate::outlier::Outcome::Status(200));
                host.stats.cx_total.fetch_add(1, Ordering::Relaxed);
                cluster.pool.stats.cx_total.fetch_add(1, Ordering::Relaxed);
                upstream = Some((io, host));
                break;
            }
            Err(e) => {
                tracing::debug!(cluster = %cluster_name, error = %e, "tcp_proxy: connect failed");
                host.stats.cx_connect_fail.fetch_add(1, Ordering::Relaxed);
                cluster.report(&host, crate::outlier::Outcome::ConnectFailed);
                cluster.pool.stats.cx_connect_fail.fetch_add(1, Ordering::Relaxed);
                tried.push(host);
            }
        }
    }
    let Some((upstream, host)) = upstream else {
        let labels = state.metrics.tcp_labels(&destination, "UF");
        state.metrics.tcp_opened(&labels);
        state.metrics.tcp_closed(&labels, 0, 0);
        return;
    };
    let labels = state.metrics.tcp_labels(&destination, "-");
    state.metrics.tcp_opened(&labels);
    host.active_requests.fetch_add(1, Ordering::Relaxed);
    let buffers = (config.read_buffer, cluster.config.read_buffer);
    let (sent, received) = splice(downstream, upstream, config.idle_timeout, buffers).await;
    host.active_requests.fetch_sub(1, Ordering::Relaxed);
    cluster
        .stats
        .upstream_cx_tx_bytes_total
        .fetch_add(received, Ordering::Relaxed);
    cluster
        .stats
        .upstream_cx_rx_bytes_total
        .fetch_add(sent, Ordering::Relaxed);
    // Istio: sent = bytes sent to the downstream peer… reported from the proxy's side:
    // received from downstream, sent back to it.
    state.metrics.tcp_closed(&labels, sent, received);
}

/// How much a connection is read ahead of its peer's writes by default: 16 KiB per direction.
pub const DEFAULT_READ_BUFFER: usize = 16 * 1024;

/// The read buffer of a connection whose listener or cluster sets
/// `per_connection_buffer_limit_bytes` (Envoy's soft limit on a connection's buffers, 1 MiB
/// by default): the limit when below the default, else the default (Weir reads no further
/// ahead than that whatever the limit). 0, which in Envoy turns the watermarks off, keeps the
/// default.
pub fn read_buffer(limit: Option<u32>) -> usize {
    match limit.and_then(|l| usize::try_from(l).ok()) {
        Some(l) if l > 0 => l.min(DEFAULT_READ_BUFFER),
        _ => DEFAULT_READ_BUFFER,
    }
}

/// Copies both ways, reading at most `buffers` bytes at a time from each side (`a`'s, `b`'s);
/// returns (bytes to downstream, bytes from downstream).
pub async fn splice<A, B>(a: A, b: B, idle: Option<Duration>, buffers: (usize, usize)) -> (u64, u64)
where
    A: AsyncRead + AsyncWrite + Unpin + Send,
    B: AsyncRead + AsyncWrite + Unpin + Send,
{
    let started = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let to_a = Arc::new(AtomicU64::new(0));
    let from_a = Arc::new(AtomicU64::new(0));
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let up = copy_counting(&mut ar, &mut bw, buffers.0, &from_a, &last, started);
    let down = copy_counting(&mut br, &mut aw, buffers.1, &to_a, &last, started);
    let both = async { tokio::join!(up, down) };
    match idle {
        None => {
            both.await;
        }
        Some(idle) => {
            let watchdog = async {
                loop {
                    tokio::time::sleep(idle / 4 + Duration::from_millis(1)).await;
                    let quiet = started
                        .elapsed()
                        .saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                    if quiet >= idle {
                        break;
                    }
                }
            };
            tokio::select! {
                _ = both => {}
                _ = watchdog => tracing::debug!("tcp_proxy idle timeout"),
            }
        }
    }
    (to_a.load(Ordering::Relaxed), from_a.load(Ordering::Relaxed))
}

async fn copy_counting<R, W>(
    r: &mut R,
    w: &mut W,
    buffer: usize,
    count: &AtomicU64,
    last: &AtomicU64,
    started: Instant,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; buffer.max(1)];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if w.write_all(&buf[..n]).await.is_err() {
            break;
        }
        count.fetch_add(n as u64, Ordering::Relaxed);
        last.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    let _ = w.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_buffer_limit_caps_the_read_buffer_and_never_raises_it() {
        assert_eq!(read_buffer(None), DEFAULT_READ_BUFFER);
        assert_eq!(read_buffer(Some(1024)), 1024);
        assert_eq!(read_buffer(Some(32 * 1024)), DEFAULT_READ_BUFFER);
        // 0 turns Envoy's watermarks off: Weir's default then.
        assert_eq!(read_buffer(Some(0)), DEFAULT_READ_BUFFER);
    }
}

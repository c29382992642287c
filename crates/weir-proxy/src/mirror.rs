//! Request mirroring (`request_mirror_policies`), as Envoy's shadowing does it: a copy of the
//! request goes to the mirror cluster with `-shadow` appended to the host part of the
//! authority; the copy is fire-and-forget — its answer is read and dropped, its failures only
//! counted, and the client never waits for it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::Request;

use crate::action::Mirror;
use crate::http::HttpContext;
use crate::lb::PickContext;
use crate::state::Snapshot;

/// Where the original request goes, which the copies follow.
#[derive(Debug)]
pub struct Target<'a> {
    /// The upstream authority of the original request.
    pub authority: &'a str,
    /// Its path (after rewrites).
    pub path: &'a http::uri::PathAndQuery,
    /// Whether it arrived over HTTP/2 (for clusters that use the downstream protocol).
    pub downstream_h2: bool,
    /// The route's timeout, which bounds the copy too.
    pub timeout: Option<Duration>,
}

/// Envoy's shadow authority: `-shadow` after the host, before any port.
pub fn shadow_authority(authority: &str) -> String {
    match authority.rsplit_once(':') {
        Some((host, port))
            if !authority.ends_with(']') && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            format!("{host}-shadow:{port}")
        }
        _ => format!("{authority}-shadow"),
    }
}

/// Sends a copy of the request to each mirror; returns at once.
pub fn send(
    ctx: &HttpContext,
    snapshot: &Snapshot,
    mirrors: &[&Mirror],
    parts: &http::request::Parts,
    target: &Target<'_>,
    body: &Bytes,
) {
    for m in mirrors {
        let Some(cluster) = snapshot.clusters.get(&m.cluster).cloned() else {
            ctx.state.counters.no_cluster.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(cluster = %m.cluster, "mirror cluster not found; the copy is not sent");
            continue;
        };
        let host = match cluster.pick(&PickContext::default(), 1, None) {
            Ok(h) => h,
            Err(e) => {
                cluster
                    .stats
                    .upstream_cx_none_healthy
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(cluster = %m.cluster, error = %e, "mirror: no host");
                continue;
            }
        };
        let authority = match (&m.host_rewrite, m.shadow_suffix) {
            (Some(h), true) => shadow_authority(h),
            (Some(h), false) => h.clone(),
            (None, true) => shadow_authority(target.authority),
            (None, false) => target.authority.to_string(),
        };
        let protocol = cluster.protocol(target.downstream_h2);
        let mut copy = parts.clone();
        crate::router::set_target(&mut copy, protocol, &authority, target.path);
        let req = Request::from_parts(copy, crate::body::full(body.clone()));
        let timeout = target.timeout;
        tokio::spawn(async move {
            let Ok(_slot) = cluster.pool.breakers().request() else {
                return;
            };
            cluster.stats.upstream_rq_total.fetch_add(1, Ordering::Relaxed);
            host.stats.rq_total.fetch_add(1, Ordering::Relaxed);
            let send = cluster.pool.send(&host.target, protocol, req);
            let result = match timeout {
                Some(t) => tokio::time::timeout(t, send).await.ok(),
                None => Some(send.await),
            };
            match result {
                Some(Ok(resp)) => {
                    let status = resp.status().as_u16();
                    cluster.stats.count_status(status);
                    cluster.report(&host, crate::outlier::Outcome::Status(status));
                    // Read and drop the answer so the connection can be reused.
                    let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
                }
                Some(Err(e)) => {
                    host.stats.rq_error.fetch_add(1, Ordering::Relaxed);
                    let outcome = match &e {
                        crate::pool::SendError::Connect(_) => Some(crate::outlier::Outcome::ConnectFailed),
                        crate::pool::SendError::Overflow(_) => None,
                        _ => Some(crate::outlier::Outcome::Reset),
                    };
                    if let Some(o) = outcome {
                        cluster.report(&host, o);
                    }
                    tracing::debug!(cluster = %cluster.config.name, error = %e, "mirrored request failed");
                }
                None => {
                    cluster.stats.upstream_rq_timeout.fetch_add(1, Ordering::Relaxed);
                    cluster.report(&host, crate::outlier::Outcome::Timeout);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_goes_before_the_port() {
        assert_eq!(shadow_authority("reviews"), "reviews-shadow");
        assert_eq!(shadow_authority("reviews:9080"), "reviews-shadow:9080");
        assert_eq!(shadow_authority("[::1]:80"), "[::1]-shadow:80");
        assert_eq!(shadow_authority("[::1]"), "[::1]-shadow");
    }
}

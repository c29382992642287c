//! The router: sends a request to the route's cluster as Envoy's router filter does — picks the
//! cluster (weighted) and a host (the cluster's load balancer, with the route's hash policy),
//! applies the request headers Envoy sets, enforces the route timeout (or
//! `x-envoy-upstream-rq-timeout-ms`, or `grpc-timeout`), and retries per the retry policy with
//! jittered back-off, per-try timeouts and, if asked, other hosts than those tried.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};

use crate::action::{Forward, HashPolicy, WeightedTarget};
use crate::body::{self, Buffered, RequestBody};
use crate::header_facts::HeaderFacts;
use crate::http::{HttpContext, finish_local, flags, record, rewritten_path, strip_hop_by_hop, uuid4};
use crate::lb::{Host, PickContext};
use crate::names;
use crate::pool::{Body, Outgoing, ResponseBody, SendError};
use crate::retry::{Outcome, RetryPolicy};
use crate::stats::Destination;
use crate::upstream::NoHost;

/// Response bodies of at most this many bytes (by `content-length`) are sent with their head.
const SMALL_BODY: usize = 16 * 1024;

/// A body read whole: announced with its length when that is the length the upstream declared
/// (a HEAD answer declares one and has none).
fn sized_body(bytes: Bytes, declared: Option<usize>) -> Body {
    if Some(bytes.len()) == declared {
        body::full(bytes)
    } else {
        body::full_unsized(bytes)
    }
}

use crate::http::Matched;

/// Envoy's request headers that configure the router; consumed here.
static ENVOY_CONTROL_HEADERS: [http::header::HeaderName; 5] = [
    names::X_ENVOY_UPSTREAM_RQ_TIMEOUT_MS,
    names::X_ENVOY_UPSTREAM_RQ_PER_TRY_TIMEOUT_MS,
    names::X_ENVOY_RETRY_ON,
    names::X_ENVOY_RETRY_GRPC_ON,
    names::X_ENVOY_MAX_RETRIES,
];

fn grpc_timeout(v: &HeaderValue) -> Option<Duration> {
    let s = v.to_str().ok()?;
    let (digits, unit) = s.split_at(s.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The request's timeout: header override, then gRPC, then the route's.
fn request_timeout(forward: &Forward, headers: &http::HeaderMap, facts: HeaderFacts) -> Option<Duration> {
    if let Some(ms) = facts
        .envoy
        .then(|| headers.get(names::X_ENVOY_UPSTREAM_RQ_TIMEOUT_MS))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        return (ms > 0).then(|| Duration::from_millis(ms));
    }
    if let Some(max) = forward.grpc_timeout_max
        && let Some(t) = headers.get(names::GRPC_TIMEOUT).and_then(grpc_timeout)
    {
        return Some(match max {
            Some(m) => t.min(m),
            None => t,
        });
    }
    forward.timeout
}

fn hash_for(
    policies: &[crate::action::HashPolicyEntry],
    req: &Request<RequestBody>,
    ctx: &HttpContext,
) -> Option<u64> {
    let mut hash: Option<u64> = None;
    for p in policies {
        let value: Option<String> = match &p.policy {
            HashPolicy::Header(h) => {
                let values: Vec<&[u8]> = req
                    .headers()
                    .get_all(h)
                    .iter()
                    .map(HeaderValue::as_bytes)
                    .collect();
                (!values.is_empty()).then(|| {
                    values
                        .iter()
                        .map(|v| String::from_utf8_lossy(v))
                        .collect::<Vec<_>>()
                        .join(",")
                })
            }
            HashPolicy::Cookie(name) => req
                .headers()
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|c| c.trim().split_once('='))
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.to_string()),
            HashPolicy::SourceIp => Some(ctx.downstream.peer.ip().to_string()),
            HashPolicy::QueryParameter(name) => crate::http::query_pairs(req.uri().query())
                .into_iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.to_string()),
        };
        if let Some(v) = value {
            let h = xxhash_rust::xxh64::xxh64(v.as_bytes(), 0);
            // Envoy combines hashes by rotating and xoring.
            hash = Some(hash.map_or(h, |prev| prev.rotate_left(1) ^ h));
            if p.terminal {
                break;
            }
        }
    }
    hash
}

fn is_upgrade(req: &Request<RequestBody>, facts: HeaderFacts) -> Option<String> {
    if !facts.connection {
        return None;
    }
    let connection_upgrade = req
        .headers()
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")));
    if !connection_upgrade || req.version() != Version::HTTP_11 {
        return None;
    }
    req.headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase)
}

/// Forwards a request; returns the response (or a local reply) and how many attempts were
/// made upstream (Envoy's attempt count: 0 when none was, as when no host was healthy).
pub async fn forward(
    ctx: &HttpContext,
    matched: &Matched<'_>,
    forward: &Forward,
    mut req: Request<RequestBody>,
    authority: &str,
    started: Instant,
    injected: &'static str,
) -> (Response<Body>, u32) {
    let snapshot = ctx.state.snapshot();
    let Some((cluster_name, target)) = forward.clusters.pick(fastrand::u64(..), req.headers()) else {
        return (no_cluster(ctx, started, None), 0);
    };
    let Some(cluster) = snapshot.clusters.get(cluster_name.as_ref()).cloned() else {
        tracing::debug!(cluster = %cluster_name, "route points at a cluster this proxy does not have");
        return (no_cluster(ctx, started, Some(&cluster_name)), 0);
    };
    let destination = cluster.destination.clone();
    // Which of the headers read below the request carries, found in one pass.
    let facts = HeaderFacts::of(req.headers());
    let upgrade = is_upgrade(&req, facts);
    if let Some(kind) = &upgrade {
        let allowed = forward.upgrades.iter().find(|(k, _)| k == kind).map_or_else(
            || ctx.manager.upgrades.iter().any(|u| u == kind),
            |(_, enabled)| *enabled,
        );
        if !allowed {
            return (
                finish_local(
                    ctx,
                    started,
                    StatusCode::FORBIDDEN,
                    "upgrade not allowed",
                    flags::INVALID,
                    Some(&cluster_name),
                ),
                0,
            );
        }
    }
    cluster.warmed(cluster.config.connect_timeout).await;
    let timeout = request_timeout(forward, req.headers(), facts);
    // The stream idle timeout of this request: the route's `idle_timeout`, else the connection
    // manager's.
    let stream_idle = forward.stream_idle_timeout(ctx.manager.stream_idle_timeout);
    // The connection manager's `request_timeout`: by then the whole request must have arrived
    // (here only its body can still be arriving), unless its response has started.
    let request_deadline = ctx.manager.request_timeout.map(|t| started + t);
    let policy = RetryPolicy::for_request(
        forward.retry.as_ref().or(matched.vhost.retry.as_ref()),
        req.headers(),
        facts.envoy,
    );
    let hash = hash_for(&forward.hash_policies, &req, ctx);
    let downstream_h2 = req.version() == Version::HTTP_2;
    let protocol = cluster.protocol(downstream_h2);
    let downstream_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));

    // Request headers as Envoy sets them.
    let (mut parts, incoming) = req.into_parts();
    prepare_headers(
        ctx,
        matched,
        forward,
        target,
        &mut parts,
        facts,
        timeout,
        upgrade.is_some(),
    );
    // The request's own path and query unless a rewrite changes them (then parsed once).
    let original = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let path = match rewritten_path(&parts.uri, matched.route, forward) {
        Some(p) if p != original.as_str() => {
            if let Ok(v) = HeaderValue::from_str(parts.uri.path()) {
                parts.headers.insert(names::X_ENVOY_ORIGINAL_PATH, v);
            }
            PathAndQuery::try_from(p).unwrap_or_else(|_| PathAndQuery::from_static("/"))
        }
        _ => original,
    };
    let upstream_authority: &str = target
        .and_then(|t| t.host_rewrite.as_deref())
        .or(forward.host_rewrite.as_deref())
        .unwrap_or(authority);
    // Shadow copies go out with the request as it is now (their own authority and protocol).
    let mirrors: Vec<&crate::action::Mirror> = forward
        .mirrors
        .iter()
        .filter(|m| m.fraction.hit(fastrand::u64(..)))
        .collect();
    let shadow_parts = (!mirrors.is_empty() && upgrade.is_none()).then(|| parts.clone());
    set_target(&mut parts, protocol, upstream_authority, &path);

    // The body: kept for retries and mirrors when small enough.
    let mut replay: Option<Bytes> = None;
    let mut stream: Option<Body> = None;
    if (policy.is_some() || shadow_parts.is_some()) && upgrade.is_none() {
        let waits_for_body = !hyper::body::Body::is_end_stream(&incoming);
        let buffering = body::buffer(
            incoming,
            forward.buffer_limit(ctx.manager.connection_buffer_limit),
        );
        let buffered = match request_deadline.filter(|_| waits_for_body) {
            Some(deadline) => match tokio::time::timeout_at(deadline.into(), buffering).await {
                Ok(buffered) => buffered,
                Err(_) => return (request_timed_out(ctx, started, &cluster_name), 0),
            },
            None => buffering.await,
        };
        match buffered {
            Ok(Buffered::Complete(b)) => replay = Some(b),
            Ok(Buffered::Partial(prefix, rest)) => stream = Some(body::Prefixed::body(prefix, rest)),
            Err(e) => {
                tracing::debug!(error = %e, "downstream request body failed");
                return (
                    finish_local(
                        ctx,
                        started,
                        StatusCode::BAD_REQUEST,
                        "",
                        flags::DOWNSTREAM_TERMINATION,
                        Some(&cluster_name),
                    ),
                    0,
                );
            }
        }
    } else {
        stream = Some(body::incoming(incoming));
    }
    // The request's size, for the metrics: known when buffered or empty, else counted as the
    // body streams (a shared counter only then, off the common path).
    let mut request_bytes = RequestSize::Known(replay.as_ref().map_or(0, |b| b.len() as u64));
    // A request body that streams up and stalls for the stream idle timeout ends the stream
    // (Envoy's 408 when no response has started).
    let mut request_stalled: Option<Arc<std::sync::atomic::AtomicBool>> = None;
    // Once such a body has gone up whole, the wait for the response head is bounded by the
    // stream idle timeout from its end (signalled here).
    let mut request_ended: Option<Arc<tokio::sync::Notify>> = None;
    // A body still arriving at the request deadline ends the stream (408 when no response has
    // started; once one has, the deadline no longer applies).
    let mut request_late: Option<RequestLate> = None;
    if let Some(s) = stream.take() {
        stream = Some(if hyper::body::Body::is_end_stream(&s) {
            s
        } else {
            let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
            request_bytes = RequestSize::Counted(counter.clone());
            let counted = body::Counted::body(s, counter);
            let counted = match request_deadline {
                Some(deadline) => {
                    let late = RequestLate::default();
                    let expired = late.expired.clone();
                    let timed = body::Timed::disarmable_deadline(
                        counted,
                        deadline,
                        late.responded.clone(),
                        "request timeout while the request body was arriving",
                        move || expired.store(true, Ordering::Relaxed),
                    );
                    request_late = Some(late);
                    timed
                }
                None => counted,
            };
            match stream_idle {
                Some(idle) => {
                    let stalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
                    request_stalled = Some(stalled.clone());
                    let ended = Arc::new(tokio::sync::Notify::new());
                    request_ended = Some(ended.clone());
                    let timed = body::Timed::idle(
                        counted,
                        idle,
                        "stream idle timeout while the request body was streaming",
                        move || stalled.store(true, Ordering::Relaxed),
                    );
                    // At its end (or when the connection drops it, done writing).
                    body::Metered::body(timed, move |_| ended.notify_one())
                }
                None => counted,
            }
        });
    }

    if let Some(shadow) = shadow_parts {
        match &replay {
            Some(body) => crate::mirror::send(
                ctx,
                &snapshot,
                &mirrors,
                &shadow,
                &crate::mirror::Target {
                    authority: upstream_authority,
                    path: &path,
                    downstream_h2,
                    timeout,
                },
                body,
            ),
            None => tracing::debug!(
                limit = forward.buffer_limit(ctx.manager.connection_buffer_limit),
                "request body above the buffer limit: not mirrored"
            ),
        }
    }
    let mut parts = Some(parts);
    // Envoy counts the route timeout from when the router has the whole request: now, after
    // an injected delay (the fault filter comes first) and the body, if it was buffered. Not
    // from `started`, which was before both.
    let deadline = timeout.map(|t| Instant::now() + t);
    let max_retries = policy.as_ref().map_or(0, |p| p.num_retries);
    let mut tried: Vec<Arc<Host>> = Vec::new();
    let mut attempt = 0u32;
    // Whether the attempt being retried ended with its per-try timeout.
    let mut timeout_retry = false;
    // The retry in flight holds a `max_retries` (or budget) slot until it ends.
    let mut retry_slot: Option<crate::breaker::Slot> = None;
    loop {
        attempt += 1;
        let avoid: &[Arc<Host>] = if policy.as_ref().is_some_and(|p| p.avoid_previous_hosts) {
            &tried
        } else {
            &[]
        };
        let selection_attempts = policy.as_ref().map_or(1, |p| p.host_selection_max_attempts);
        // `previous_priorities`: the priorities tried so far are left out, refreshed every
        // `update_frequency` attempts.
        let exclude: Vec<usize> = match policy.as_ref().and_then(|p| p.previous_priorities) {
            Some(every) if attempt > 1 => {
                let seen = ((attempt - 1) / every * every) as usize;
                let mut p: Vec<usize> = tried.iter().take(seen).map(|h| h.priority).collect();
                p.sort_unstable();
                p.dedup();
                p
            }
            _ => Vec::new(),
        };
        let host = match cluster.pick(
            &PickContext {
                hash,
                avoid,
                exclude_priorities: &exclude,
            },
            selection_attempts,
            ctx.downstream.original_dst.as_ref(),
        ) {
            Ok(h) => h,
            Err(NoHost::NoneHealthy) => {
                cluster
                    .stats
                    .upstream_cx_none_healthy
                    .fetch_add(1, Ordering::Relaxed);
                return (
                    finish_local(
                        ctx,
                        started,
                        StatusCode::SERVICE_UNAVAILABLE,
                        "no healthy upstream",
                        flags::NO_HEALTHY_UPSTREAM,
                        Some(&cluster_name),
                    ),
                    attempt - 1,
                );
            }
            Err(e @ NoHost::NoOriginalDestination(_)) => {
                return (
                    finish_local(
                        ctx,
                        started,
                        StatusCode::SERVICE_UNAVAILABLE,
                        &e.to_string(),
                        flags::NO_HEALTHY_UPSTREAM,
                        Some(&cluster_name),
                    ),
                    attempt - 1,
                );
            }
        };
        if ctx.state.is_own(&host.target) {
            let text = format!(
                "refusing to pass the request through to {}, an address of this proxy (it would loop)",
                host.target
            );
            return (
                finish_local(
                    ctx,
                    started,
                    StatusCode::BAD_GATEWAY,
                    &text,
                    flags::UPSTREAM_CONNECTION_FAILURE,
                    Some(&cluster_name),
                ),
                attempt - 1,
            );
        }
        // Without a retry policy, or with a body that streams, this attempt is the only one:
        // the request's head moves into it instead of being copied.
        let only_attempt = policy.is_none() || replay.is_none();
        // Envoy's stream idle timeout (5 min unless the connection manager sets it) bounds the
        // wait for the response head once the request has gone whole: nothing moves on the
        // stream then. A request body still streaming up is activity: for it the bound counts
        // from the body's end (below).
        let request_sent_whole =
            replay.is_some() || stream.as_ref().is_none_or(hyper::body::Body::is_end_stream);
        let idle = stream_idle.filter(|_| request_sent_whole);
        let body = match (&replay, stream.take()) {
            (Some(b), _) => body::full(b.clone()),
            (None, Some(s)) => s,
            (None, None) => body::empty(),
        };
        // The head is lent to the attempt when it is kept for another one and needs no
        // change of its own (Weir's HTTP/1.1 client only writes it out); otherwise moved or
        // copied into it.
        let mark_timeout_retry = attempt > 1 && matched.vhost.timeout_retry_header;
        let lend = !only_attempt && !matched.vhost.include_attempt_count && !mark_timeout_retry;
        let upstream_req = if lend {
            parts.as_ref().map(|kept| Outgoing::Lent(kept, body))
        } else {
            let head = if only_attempt { parts.take() } else { parts.clone() };
            head.map(|mut head| {
                if matched.vhost.include_attempt_count {
                    head.headers
                        .insert(names::X_ENVOY_ATTEMPT_COUNT, HeaderValue::from(attempt));
                }
                // Envoy's `x-envoy-is-timeout-retry`, on retries only.
                if mark_timeout_retry {
                    head.headers.insert(
                        names::X_ENVOY_IS_TIMEOUT_RETRY,
                        HeaderValue::from_static(if timeout_retry { "true" } else { "false" }),
                    );
                }
                Outgoing::Owned(head, body)
            })
        };
        let Some(upstream_req) = upstream_req else {
            // Not reached: a request is attempted again only with its body kept (above).
            return (
                finish_local(
                    ctx,
                    started,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "request head already sent and not kept for a retry",
                    flags::UPSTREAM_CONNECTION_FAILURE,
                    Some(&cluster_name),
                ),
                attempt,
            );
        };
        let per_try = policy.as_ref().and_then(|p| p.per_try_timeout);
        // One clock read for the attempt's bounds and its start.
        let sent_at = Instant::now();
        let remaining = deadline.map(|d| d.saturating_duration_since(sent_at));
        let limit = match (remaining, per_try) {
            (Some(r), Some(p)) => Some(r.min(p)),
            (r, p) => r.or(p),
        };
        let idle_bound = match (limit, idle) {
            (Some(l), Some(i)) => i < l,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        let limit = if idle_bound { idle } else { limit };
        let per_try_bound = !idle_bound
            && (matches!((remaining, per_try), (Some(r), Some(p)) if p < r)
                || (remaining.is_none() && per_try.is_some()));
        let request_slot = match cluster.pool.breakers().request() {
            Ok(slot) => slot,
            Err(_) => return (overflow(ctx, started, &cluster_name), attempt),
        };
        cluster.stats.upstream_rq_total.fetch_add(1, Ordering::Relaxed);
        host.stats.rq_total.fetch_add(1, Ordering::Relaxed);
        host.active_requests.fetch_add(1, Ordering::Relaxed);
        // A body streaming up: the stream idle timeout counts from its end.
        let idle_after_request = match (&request_ended, stream_idle) {
            (Some(ended), Some(idle)) if !request_sent_whole => Some((ended.clone(), idle)),
            _ => None,
        };
        let mut idle_after_request_fired = false;
        let result = {
            // Pinned where it is: the timeout wraps a pointer instead of moving the future.
            let send = cluster.pool.send(&host.target, protocol, upstream_req);
            tokio::pin!(send);
            match idle_after_request {
                None => match limit {
                    // The connection's shared timer (no timer made and dropped per request).
                    Some(l) => ctx
                        .request_timer
                        .bound(sent_at + l, send.as_mut())
                        .await
                        .ok_or(()),
                    None => Ok(send.await),
                },
                Some((ended, idle)) => {
                    let idle_fired = &mut idle_after_request_fired;
                    let bounded = async move {
                        tokio::select! {
                            biased;
                            sent = send.as_mut() => Ok(sent),
                            () = async {
                                ended.notified().await;
                                tokio::time::sleep(idle).await;
                            } => {
                                *idle_fired = true;
                                Err(())
                            }
                        }
                    };
                    match limit {
                        Some(l) => tokio::time::timeout(l, bounded)
                            .await
                            .map_err(|_| ())
                            .and_then(|r| r),
                        None => bounded.await,
                    }
                }
            }
        };
        host.active_requests.fetch_sub(1, Ordering::Relaxed);
        if let Some(late) = &request_late {
            if matches!(result, Ok(Ok(_))) {
                late.responded.store(true, Ordering::Relaxed);
            } else if late.expired.load(Ordering::Relaxed) {
                return (request_timed_out(ctx, started, &cluster_name), attempt);
            }
        }
        if idle_after_request_fired {
            return (stream_idle_timeout(ctx, started, &cluster_name), attempt);
        }
        if !matches!(result, Ok(Ok(_)))
            && request_stalled
                .as_ref()
                .is_some_and(|s| s.load(Ordering::Relaxed))
        {
            return (stream_idle_timeout(ctx, started, &cluster_name), attempt);
        }
        let outcome = match &result {
            Err(()) if idle_bound => return (stream_idle_timeout(ctx, started, &cluster_name), attempt),
            Err(()) if per_try_bound => Outcome::PerTryTimeout,
            Err(()) => {
                cluster.stats.upstream_rq_timeout.fetch_add(1, Ordering::Relaxed);
                host.stats.rq_error.fetch_add(1, Ordering::Relaxed);
                cluster.report(&host, crate::outlier::Outcome::Timeout);
                return (upstream_timeout(ctx, started, &cluster_name), attempt);
            }
            Ok(Ok(resp)) => Outcome::Response(
                resp.status().as_u16(),
                // Read only for a retry policy (its gRPC conditions).
                policy
                    .as_ref()
                    .and_then(|_| resp.headers().get(names::GRPC_STATUS))
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok()),
            ),
            Ok(Err(SendError::Connect(_))) => {
                host.stats.cx_connect_fail.fetch_add(1, Ordering::Relaxed);
                Outcome::ConnectFailure
            }
            Ok(Err(SendError::RefusedStream)) => Outcome::RefusedStream,
            Ok(Err(SendError::Reset(_) | SendError::Handshake(_))) => Outcome::Reset,
            Ok(Err(SendError::Overflow(_))) => {
                return (overflow(ctx, started, &cluster_name), attempt);
            }
        };
        cluster.report(
            &host,
            match outcome {
                Outcome::Response(status, _) => crate::outlier::Outcome::Status(status),
                Outcome::ConnectFailure => crate::outlier::Outcome::ConnectFailed,
                Outcome::PerTryTimeout => crate::outlier::Outcome::Timeout,
                Outcome::RefusedStream | Outcome::Reset => crate::outlier::Outcome::Reset,
            },
        );
        if outcome == Outcome::PerTryTimeout {
            cluster
                .stats
                .upstream_rq_per_try_timeout
                .fetch_add(1, Ordering::Relaxed);
        }
        let retriable =
            policy.as_ref().is_some_and(|p| p.retries(outcome)) && (replay.is_some() || stream.is_some());
        if retriable && attempt <= max_retries {
            let wait = policy
                .as_ref()
                .map_or(Duration::ZERO, |p| p.backoff(attempt, fastrand::f64()));
            let past_deadline = deadline.is_some_and(|d| Instant::now() + wait >= d);
            // Envoy's retry circuit breaker (or budget): past it, the answer stands. The retry
            // that just ended gives its slot back first.
            drop(retry_slot.take());
            let slot = if past_deadline {
                None
            } else {
                cluster.pool.breakers().retry()
            };
            if let Some(slot) = slot {
                retry_slot = Some(slot);
                cluster.stats.upstream_rq_retry.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(cluster = %cluster_name, host = %host.target, ?outcome, attempt, "retrying");
                tried.push(host);
                timeout_retry = outcome == Outcome::PerTryTimeout;
                tokio::time::sleep(wait).await;
                continue;
            }
        } else if retriable {
            cluster
                .stats
                .upstream_rq_retry_limit_exceeded
                .fetch_add(1, Ordering::Relaxed);
        }
        let retried = attempt > 1;
        return match result {
            Ok(Ok(resp)) => {
                if retried && resp.status().as_u16() < 500 {
                    cluster
                        .stats
                        .upstream_rq_retry_success
                        .fetch_add(1, Ordering::Relaxed);
                }
                if resp.status().is_server_error() {
                    host.stats.rq_error.fetch_add(1, Ordering::Relaxed);
                }
                cluster.stats.count_status(resp.status().as_u16());
                // One clock read for the service time and, for a body that came whole with
                // the head, the request's duration.
                let answered = Instant::now();
                let service_time = answered.saturating_duration_since(sent_at);
                let resp = finish_upstream(
                    ctx,
                    resp,
                    Finish {
                        target,
                        destination: &destination,
                        started,
                        answered,
                        service_time,
                        injected,
                        downstream_upgrade,
                        request_slot,
                        deadline,
                        stream_idle,
                        request_bytes,
                        cluster: &cluster,
                    },
                )
                .await;
                (resp, attempt)
            }
            Ok(Err(e)) => {
                host.stats.rq_error.fetch_add(1, Ordering::Relaxed);
                cluster.stats.upstream_rq_reset.fetch_add(1, Ordering::Relaxed);
                let (flag, reason) = match &e {
                    SendError::Connect(c) => (
                        flags::UPSTREAM_CONNECTION_FAILURE,
                        format!("connection failure, transport failure reason: {c}"),
                    ),
                    SendError::RefusedStream => {
                        (flags::UPSTREAM_RESET, "remote refused stream reset".to_string())
                    }
                    SendError::Reset(r) | SendError::Handshake(r) => {
                        (flags::UPSTREAM_RESET, format!("connection termination: {r}"))
                    }
                    SendError::Overflow(_) => (flags::UPSTREAM_OVERFLOW, "overflow".to_string()),
                };
                let flag = match (retried, flag) {
                    (false, f) => f,
                    (true, flags::UPSTREAM_CONNECTION_FAILURE) => "UF,URX",
                    (true, _) => "UR,URX",
                };
                let text = format!(
                    "upstream connect error or disconnect/reset before headers. reset reason: {reason}"
                );
                (
                    finish_local(
                        ctx,
                        started,
                        StatusCode::SERVICE_UNAVAILABLE,
                        &text,
                        flag,
                        Some(&cluster_name),
                    ),
                    attempt,
                )
            }
            Err(()) => {
                // A per-try timeout that is not retried answers like Envoy: 504.
                cluster.stats.upstream_rq_timeout.fetch_add(1, Ordering::Relaxed);
                (upstream_timeout(ctx, started, &cluster_name), attempt)
            }
        };
    }
}

/// Points a request at its upstream: origin-form URI and `host` for HTTP/1.1, absolute URI
/// (`:authority`) for HTTP/2.
pub(crate) fn set_target(
    parts: &mut http::request::Parts,
    protocol: crate::pool::Protocol,
    authority: &str,
    path: &PathAndQuery,
) {
    match protocol {
        crate::pool::Protocol::Http1 => {
            parts.uri = Uri::from(path.clone());
            parts.version = Version::HTTP_11;
            // Most requests already carry this `host` (HTTP/1.1 downstream, no rewrite).
            if parts.headers.get(HOST).map(HeaderValue::as_bytes) != Some(authority.as_bytes())
                && let Ok(v) = HeaderValue::from_str(authority)
            {
                parts.headers.insert(HOST, v);
            }
        }
        crate::pool::Protocol::Http2 => {
            parts.uri = Uri::builder()
                .scheme("http")
                .authority(authority)
                .path_and_query(path.clone())
                .build()
                .unwrap_or_else(|_| Uri::from_static("/"));
            parts.version = Version::HTTP_2;
            parts.headers.remove(HOST);
        }
    }
}

/// Envoy's answer when the route names no cluster this proxy has (flag NC), counted.
fn no_cluster(ctx: &HttpContext, started: Instant, cluster: Option<&str>) -> Response<Body> {
    ctx.state.counters.no_cluster.fetch_add(1, Ordering::Relaxed);
    finish_local(
        ctx,
        started,
        StatusCode::SERVICE_UNAVAILABLE,
        "",
        flags::NO_CLUSTER,
        cluster,
    )
}

/// Envoy's answer when the stream idle timeout fires before the response started, counted.
fn stream_idle_timeout(ctx: &HttpContext, started: Instant, cluster: &str) -> Response<Body> {
    ctx.state
        .counters
        .downstream_rq_idle_timeout
        .fetch_add(1, Ordering::Relaxed);
    finish_local(
        ctx,
        started,
        StatusCode::REQUEST_TIMEOUT,
        "stream timeout",
        flags::STREAM_IDLE_TIMEOUT,
        Some(cluster),
    )
}

/// What the request deadline (the connection manager's `request_timeout`) shares between a
/// body that is still arriving and the router.
#[derive(Default)]
struct RequestLate {
    /// The deadline passed with the body still arriving.
    expired: Arc<std::sync::atomic::AtomicBool>,
    /// The response has started: the deadline no longer applies.
    responded: Arc<std::sync::atomic::AtomicBool>,
}

/// Envoy's answer when the whole request did not arrive within the connection manager's
/// `request_timeout`: `408 request timeout`, counted in `http.downstream_rq_timeout`.
fn request_timed_out(ctx: &HttpContext, started: Instant, cluster: &str) -> Response<Body> {
    ctx.state
        .counters
        .downstream_rq_timeout
        .fetch_add(1, Ordering::Relaxed);
    finish_local(
        ctx,
        started,
        StatusCode::REQUEST_TIMEOUT,
        "request timeout",
        flags::NONE,
        Some(cluster),
    )
}

/// Envoy's answer to a request that timed out before the response started.
fn upstream_timeout(ctx: &HttpContext, started: Instant, cluster: &str) -> Response<Body> {
    finish_local(
        ctx,
        started,
        StatusCode::GATEWAY_TIMEOUT,
        "upstream request timeout",
        flags::UPSTREAM_TIMEOUT,
        Some(cluster),
    )
}

/// A circuit breaker refused the request: Envoy's 503 with `x-envoy-overloaded`.
fn overflow(ctx: &HttpContext, started: Instant, cluster: &str) -> Response<Body> {
    let mut resp = finish_local(
        ctx,
        started,
        StatusCode::SERVICE_UNAVAILABLE,
        "upstream connect error or disconnect/reset before headers. reset reason: overflow",
        flags::UPSTREAM_OVERFLOW,
        Some(cluster),
    );
    if !ctx.manager.suppress_envoy_headers {
        resp.headers_mut()
            .insert(names::X_ENVOY_OVERLOADED, HeaderValue::from_static("true"));
    }
    resp
}

#[allow(clippy::too_many_arguments)]
fn prepare_headers(
    ctx: &HttpContext,
    matched: &Matched<'_>,
    forward: &Forward,
    target: Option<&WeightedTarget>,
    parts: &mut http::request::Parts,
    facts: HeaderFacts,
    timeout: Option<Duration>,
    upgrading: bool,
) {
    let manager = &ctx.manager;
    let h = &mut parts.headers;
    // Room for the headers added below at once: a map grown one insert at a time may rehash
    // every entry more than once.
    h.reserve(4);
    if facts.hop_by_hop {
        strip_hop_by_hop(h, upgrading);
    }
    if facts.envoy {
        for name in &ENVOY_CONTROL_HEADERS {
            h.remove(name);
        }
    }
    // x-request-id.
    let external = manager.use_remote_address && !manager.preserve_external_request_id;
    if manager.generate_request_id
        && (external || !facts.request_id)
        && let Ok(v) = HeaderValue::from_bytes(&uuid4())
    {
        h.insert(names::X_REQUEST_ID, v);
    }
    // x-forwarded-for / -proto.
    let scheme = if ctx.downstream.tls { "https" } else { "http" };
    if manager.use_remote_address {
        if !manager.skip_xff_append {
            let ip = ctx.downstream.peer.ip().to_string();
            let value = match h.get(names::X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
                Some(existing) if !existing.is_empty() => format!("{existing},{ip}"),
                _ => ip,
            };
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(names::X_FORWARDED_FOR, v);
            }
        }
        h.insert(
            names::X_FORWARDED_PROTO,
            HeaderValue::from_static(if ctx.downstream.tls { "https" } else { "http" }),
        );
    } else if !facts.forwarded_proto {
        h.insert(
            names::X_FORWARDED_PROTO,
            HeaderValue::from_static(if scheme == "https" { "https" } else { "http" }),
        );
    }
    if manager.sanitize_xfcc && facts.client_cert {
        h.remove(names::X_FORWARDED_CLIENT_CERT);
    }
    if let Some(via) = &manager.via {
        h.append(http::header::VIA, via.clone());
    }
    if let Some(t) = timeout.filter(|_| !manager.suppress_envoy_headers) {
        let value = match &forward.timeout_header {
            Some(v) if forward.timeout == Some(t) => v.clone(),
            _ => crate::headers::number_value(t.as_millis() as u64),
        };
        h.insert(names::X_ENVOY_EXPECTED_RQ_TIMEOUT_MS, value);
    }
    // Header operations: weighted cluster, route, virtual host, configuration.
    if let Some(t) = target {
        t.request_headers.apply(h);
    }
    matched.route.request_headers.apply(h);
    matched.vhost.request_headers.apply(h);
    matched.routes.request_headers.apply(h);
}

/// What the proxy reads from an upstream response's headers, found in one pass over them
/// instead of a lookup each (each hashes the name and probes the map).
#[derive(Debug, Default, PartialEq)]
struct ResponseFacts {
    /// A header that ends at this hop is there (see `strip_hop_by_hop`).
    hop_by_hop: bool,
    /// The first `grpc-status` value, if it is text.
    grpc_status: Option<String>,
    /// The first `content-length` value, if it is a number.
    declared: Option<usize>,
}

impl ResponseFacts {
    fn of(headers: &http::HeaderMap) -> Self {
        let mut facts = ResponseFacts::default();
        let (mut seen_length, mut seen_grpc) = (false, false);
        for (name, value) in headers {
            if *name == http::header::CONTENT_LENGTH {
                if !seen_length {
                    seen_length = true;
                    facts.declared = crate::pool::codec::parse_length(value.as_bytes())
                        .ok()
                        .and_then(|n| usize::try_from(n).ok());
                }
            } else if *name == names::GRPC_STATUS {
                if !seen_grpc {
                    seen_grpc = true;
                    facts.grpc_status = value.to_str().ok().map(str::to_string);
                }
            } else if crate::http::is_hop_by_hop(name) {
                facts.hop_by_hop = true;
            }
        }
        facts
    }
}

/// A request body's size for the metrics.
enum RequestSize {
    /// Buffered or empty.
    Known(u64),
    /// Streamed: counted as it passes.
    Counted(Arc<std::sync::atomic::AtomicU64>),
}

impl RequestSize {
    fn get(&self) -> u64 {
        match self {
            RequestSize::Known(n) => *n,
            RequestSize::Counted(c) => c.load(Ordering::Relaxed),
        }
    }
}

/// What the response of an attempt is finished with.
struct Finish<'a> {
    target: Option<&'a WeightedTarget>,
    destination: &'a Arc<Destination>,
    started: Instant,
    /// When the response head arrived.
    answered: Instant,
    service_time: Duration,
    injected: &'static str,
    downstream_upgrade: Option<hyper::upgrade::OnUpgrade>,
    /// The `max_requests` slot, held until the response body ends.
    request_slot: crate::breaker::Slot,
    /// The route timeout's deadline, which also bounds the response body.
    deadline: Option<Instant>,
    /// The stream idle timeout of the request (the route's or the connection manager's).
    stream_idle: Option<Duration>,
    request_bytes: RequestSize,
    cluster: &'a Arc<crate::upstream::ClusterRuntime>,
}

async fn finish_upstream(
    ctx: &HttpContext,
    resp: Response<ResponseBody>,
    finish: Finish<'_>,
) -> Response<Body> {
    let Finish {
        target,
        destination,
        started,
        answered,
        service_time,
        injected,
        downstream_upgrade,
        request_slot,
        deadline,
        stream_idle,
        request_bytes,
        cluster,
    } = finish;
    let status = resp.status();
    let (mut parts, incoming) = resp.into_parts();
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let mut facts = ResponseFacts::of(&parts.headers);
    // What is read below is read again if anything but the service time changed the headers.
    let mut changed = false;
    if facts.hop_by_hop {
        strip_hop_by_hop(&mut parts.headers, switching);
        changed = true;
    }
    if !ctx.manager.suppress_envoy_headers {
        parts.headers.insert(
            names::X_ENVOY_UPSTREAM_SERVICE_TIME,
            crate::headers::number_value(service_time.as_millis() as u64),
        );
    }
    if let Some(t) = target
        && !t.response_headers.is_empty()
    {
        t.response_headers.apply(&mut parts.headers);
        changed = true;
    }
    if changed {
        facts = ResponseFacts::of(&parts.headers);
    }
    if switching && let Some(downstream) = downstream_upgrade {
        let upstream_resp = Response::from_parts(parts.clone(), ());
        let mut upstream_resp = upstream_resp;
        let upstream = hyper::upgrade::on(&mut upstream_resp);
        let _ = incoming;
        tokio::spawn(async move {
            match tokio::try_join!(downstream, upstream) {
                Ok((d, u)) => {
                    let mut d = hyper_util::rt::TokioIo::new(d);
                    let mut u = hyper_util::rt::TokioIo::new(u);
                    let _ = tokio::io::copy_bidirectional(&mut d, &mut u).await;
                }
                Err(e) => tracing::debug!(error = %e, "upgrade failed"),
            }
        });
        record(ctx, started, destination, status.as_u16(), None, injected, 0);
        return Response::from_parts(parts, body::empty());
    }
    let ResponseFacts {
        grpc_status,
        declared,
        ..
    } = facts;
    let state = ctx.state.clone();
    let inbound = ctx.inbound;
    let destination = destination.clone();
    let code = status.as_u16();
    let flag = if injected == flags::NONE {
        flags::NONE
    } else {
        injected
    };
    // A small body of known length is read before the response goes out, so head and body
    // leave in one write (one syscall and one wake-up of the client instead of two); larger or
    // unknown-length bodies stream.
    let small = declared.is_some_and(|n| n <= SMALL_BODY);
    let timed_out = {
        let cluster = cluster.clone();
        move || {
            cluster.stats.upstream_rq_timeout.fetch_add(1, Ordering::Relaxed);
        }
    };
    // Recorded when the response body is done: the request is in flight (`max_requests`)
    // until then.
    let done = move |bytes: u64, ended: Instant| {
        drop(request_slot);
        state.metrics.record_request(&crate::stats::RequestRecord {
            destination: &destination,
            protocol: if grpc_status.is_some() { "grpc" } else { "http" },
            status: code,
            grpc_status: grpc_status.as_deref(),
            flags: flag,
            duration_ms: ended.saturating_duration_since(started).as_secs_f64() * 1000.0,
            request_bytes: request_bytes.get(),
            response_bytes: bytes,
            inbound,
        });
    };
    let mut incoming = incoming;
    if small && let Some(bytes) = incoming.take_whole() {
        // Already here whole (Weir's own client read it with the head): done now.
        done(bytes.len() as u64, answered);
        return Response::from_parts(parts, sized_body(bytes, declared));
    }
    let upstream_body = if small {
        let collect = http_body_util::BodyExt::collect(incoming);
        // A small body comes at once; one that stalls is cut by the route's deadline or the
        // stream idle timeout, whichever comes first.
        let idle_deadline = stream_idle.map(|i| Instant::now() + i);
        let (bound, by_idle) = match (deadline, idle_deadline) {
            (Some(d), Some(i)) if i < d => (Some(i), true),
            (None, Some(i)) => (Some(i), true),
            (d, _) => (d, false),
        };
        let collected = match bound {
            Some(d) => tokio::time::timeout_at(d.into(), collect).await.ok(),
            None => Some(collect.await),
        };
        match collected {
            // The whole body is here: done now, and it leaves as one buffer.
            Some(Ok(collected)) if collected.trailers().is_none() => {
                let bytes = collected.to_bytes();
                done(bytes.len() as u64, Instant::now());
                return Response::from_parts(parts, sized_body(bytes, declared));
            }
            // `Collected` replays the data and the trailers.
            Some(Ok(collected)) => http_body_util::BodyExt::boxed(http_body_util::BodyExt::map_err(
                collected,
                |never| match never {},
            )),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "upstream response body failed");
                body::failed(e)
            }
            None if by_idle => {
                ctx.state
                    .counters
                    .downstream_rq_idle_timeout
                    .fetch_add(1, Ordering::Relaxed);
                body::failed("stream idle timeout while reading the response body")
            }
            None => {
                timed_out();
                body::failed("upstream request timeout while reading the response body")
            }
        }
    } else {
        let streamed = match deadline {
            Some(d) => body::Timed::deadline(body::incoming(incoming), d, timed_out),
            None => body::incoming(incoming),
        };
        match stream_idle {
            Some(idle) => {
                let state = ctx.state.clone();
                body::Timed::idle(
                    streamed,
                    idle,
                    "stream idle timeout while the response body was streaming",
                    move || {
                        state
                            .counters
                            .downstream_rq_idle_timeout
                            .fetch_add(1, Ordering::Relaxed);
                    },
                )
            }
            None => streamed,
        }
    };
    Response::from_parts(
        parts,
        body::Metered::body(upstream_body, move |bytes| done(bytes, Instant::now())),
    )
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue};

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_static(value));
        }
        h
    }

    /// A plain answer: its length and no gRPC status, nothing to strip.
    #[test]
    fn response_facts_of_a_plain_answer() {
        let facts = ResponseFacts::of(&headers(&[("content-length", "12"), ("date", "x")]));
        assert_eq!(
            facts,
            ResponseFacts {
                hop_by_hop: false,
                grpc_status: None,
                declared: Some(12),
            }
        );
    }

    /// As `HeaderMap::get` would: the first value of each, and a value that is not a number
    /// (or not text) is no value.
    #[test]
    fn response_facts_take_the_first_value_of_each() {
        let facts = ResponseFacts::of(&headers(&[
            ("grpc-status", "14"),
            ("content-length", "5"),
            ("content-length", "7"),
            ("grpc-status", "0"),
        ]));
        assert_eq!(facts.declared, Some(5));
        assert_eq!(facts.grpc_status.as_deref(), Some("14"));
        let facts = ResponseFacts::of(&headers(&[("content-length", "five")]));
        assert_eq!(facts.declared, None);
    }

    /// Each header that ends at this hop is noticed, whichever it is.
    #[test]
    fn response_facts_notice_hop_by_hop_headers() {
        for name in [
            "connection",
            "upgrade",
            "te",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "proxy-authenticate",
            "proxy-authorization",
        ] {
            let mut h = headers(&[("content-length", "1")]);
            h.append(name, HeaderValue::from_static("x"));
            assert!(ResponseFacts::of(&h).hop_by_hop, "{name}");
        }
        assert!(!ResponseFacts::of(&headers(&[("x-connection", "close")])).hop_by_hop);
    }
}

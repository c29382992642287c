//! Arbitrary xDS resources through the proxy's compiler: the first byte picks the type
//! (Listener, Cluster, RouteConfiguration, ClusterLoadAssignment, or a whole Bootstrap with its
//! overload manager and runtime layers), the rest is decoded as that message. Whatever decodes
//! must be compiled or refused with an error — never a panic — and the listener inspectors must
//! survive any first bytes of a connection.
#![no_main]

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use weir_proxy::cluster::ClusterConfig;
use weir_proxy::endpoints::compile_assignment;
use weir_proxy::listener::{ConnectionFacts, ListenerConfig};
use weir_proxy::routes::CompiledRoutes;

/// Runs a compiled cluster's outlier detection and circuit breakers through a few outcomes.
fn exercise_resilience(c: &ClusterConfig) {
    use weir_proxy::outlier::{HostOutlier, Outcome, ejection_limit, judge_rates};
    let breakers = weir_proxy::breaker::Breakers::new(c.limits);
    let _slots = (breakers.request().ok(), breakers.pending().ok(), breakers.retry());
    let Some(config) = &c.outlier else { return };
    let host = HostOutlier::default();
    let now = std::time::Instant::now();
    for outcome in [Outcome::Status(503), Outcome::ConnectFailed, Outcome::Timeout, Outcome::Reset, Outcome::Status(200)] {
        if host.record(config, outcome).is_some() {
            let _ = host.eject(config, now);
        }
    }
    let _ = host.eject(config, now);
    let _ = host.review(now);
    let _ = judge_rates(config, &[(100, 1), (100, 100), (0, 0), (u64::MAX, u64::MAX)], false);
    let _ = ejection_limit(config, usize::MAX / 200);
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else { return };
    match kind % 6 {
        0 => {
            if let Ok(l) = Listener::decode(body) {
                if let Ok(c) = ListenerConfig::compile(&l) {
                    let _ = c.select(&ConnectionFacts::default());
                }
            }
        }
        1 => {
            if let Ok(c) = Cluster::decode(body) {
                if let Ok(compiled) = ClusterConfig::compile(&c) {
                    exercise_resilience(&compiled);
                }
            }
        }
        2 => {
            if let Ok(r) = RouteConfiguration::decode(body) {
                if let Ok(c) = CompiledRoutes::compile(&r) {
                    if let Some(vh) = c.virtual_host("a.example:80") {
                        let _ = vh.route("/x", &[("a", "b")][..], &[("q", "1")]);
                    }
                }
            }
        }
        3 => {
            if let Ok(a) = ClusterLoadAssignment::decode(body) {
                let _ = compile_assignment(&a, true);
            }
        }
        5 => {
            if let Ok(b) = Bootstrap::decode(body) {
                let _ = weir_proxy::bootstrap::compile(&b);
            }
        }
        _ => {
            let _ = weir_proxy::inspect::parse_client_hello(body);
            let _ = weir_proxy::inspect::guess_http(body);
        }
    }
});

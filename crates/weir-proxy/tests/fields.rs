//! No field is silently ignored. For each resource the proxy compiles (and the messages nested in
//! it), every field of the message — read from the Envoy API's descriptors, so a field added to
//! the API is covered the day the descriptors are regenerated — is set on a message that
//! compiles, and the compiler must then either refuse it, naming the field, or the field must be
//! listed here as honoured. A field neither listed nor refused would change nothing in the proxy:
//! exactly what DESIGN.md rules out ("it never half-applies or silently ignores a field").

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use prost::Message;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MapKey, ReflectMessage, Value};
use serde_json::json;

/// The fields of the message at `path` inside `base` (a resource of type `root`) that are
/// accepted without being honoured, refused without being named, or listed as honoured but no
/// field of it. A path step names a field (the first element of a list, or the one `[i]` names;
/// after a map field, the key); `@` opens an `Any`.
fn probe(
    root: &str,
    base: &serde_json::Value,
    path: &[&str],
    honoured: &[&str],
    compile: &dyn Fn(&[u8]) -> Result<(), String>,
) -> Vec<String> {
    let pool = weir_xds::json::pool().unwrap();
    let descriptor = pool
        .get_message_by_name(root)
        .unwrap_or_else(|| panic!("no descriptor for {root}"));
    let base = DynamicMessage::decode(
        descriptor,
        weir_xds::json::from_json(root, base).unwrap().as_slice(),
    )
    .unwrap();
    if let Err(e) = compile(&base.encode_to_vec()) {
        panic!("{root}: the base message does not compile: {e}");
    }
    let mut target = None;
    let mut probed = base.clone();
    at(&mut probed, path, &mut |m| target = Some(m.descriptor()));
    let target = target.unwrap();
    let type_name = target.full_name();
    let mut problems = Vec::new();
    for name in honoured {
        if target.get_field_by_name(name).is_none() {
            problems.push(format!(
                "{type_name}.{name} is listed as honoured but is no field of it"
            ));
        }
    }
    for field in target.fields() {
        let name = field.name();
        if honoured.contains(&name) {
            continue;
        }
        let mut message = base.clone();
        at(&mut message, path, &mut |m| m.set_field(&field, sample(&field)));
        match compile(&message.encode_to_vec()) {
            Ok(()) => problems.push(format!(
                "{type_name}.{name} is accepted but not listed as honoured"
            )),
            // The refusal names the field, or says what only is supported.
            Err(e) if !e.contains(name) && !e.contains(&name.replace('_', " ")) && !e.contains("only ") => {
                problems.push(format!("{type_name}.{name} is refused without being named: {e}"))
            }
            Err(_) => {}
        }
    }
    problems
}

/// Runs `f` on the message at `path` inside `message` (see [`probe`]).
fn at(message: &mut DynamicMessage, path: &[&str], f: &mut dyn FnMut(&mut DynamicMessage)) {
    let Some((step, rest)) = path.split_first() else {
        return f(message);
    };
    if *step == "@" {
        let type_url = message
            .get_field_by_name("type_url")
            .unwrap()
            .as_str()
            .unwrap()
            .to_string();
        let type_name = type_url.rsplit('/').next().unwrap();
        let descriptor = weir_xds::json::pool()
            .unwrap()
            .get_message_by_name(type_name)
            .unwrap();
        let bytes = message
            .get_field_by_name("value")
            .unwrap()
            .as_bytes()
            .unwrap()
            .clone();
        let mut inner = DynamicMessage::decode(descriptor, bytes).unwrap();
        at(&mut inner, rest, f);
        message.set_field_by_name("value", Value::Bytes(inner.encode_to_vec().into()));
        return;
    }
    // `routes[1]`: another element than the first.
    let (step, index) = match step.strip_suffix(']').and_then(|s| s.split_once('[')) {
        Some((name, i)) => (name, i.parse::<usize>().unwrap()),
        None => (*step, 0),
    };
    let field = message
        .descriptor()
        .get_field_by_name(step)
        .unwrap_or_else(|| panic!("no field {step} in {}", message.descriptor().full_name()));
    match message.get_field_mut(&field) {
        Value::Message(m) => at(m, rest, f),
        // A map: the next step is the key.
        Value::Map(map) => {
            let (key, rest) = rest.split_first().expect("a map step names its key");
            match map.get_mut(&MapKey::String((*key).to_string())) {
                Some(Value::Message(m)) => at(m, rest, f),
                other => panic!("{step}[{key}]: no message there ({other:?})"),
            }
        }
        Value::List(list) => match list.get_mut(index) {
            Some(Value::Message(m)) => at(m, rest, f),
            other => panic!("{step}: the base has no message at index {index} ({other:?})"),
        },
        other => panic!("{step} is not a message ({other:?})"),
    }
}

/// A value for `field` other than its default: one element for a list or map, an empty message
/// (present, so `has_field`), the first non-zero enum value.
fn sample(field: &FieldDescriptor) -> Value {
    let one = |kind: &Kind| match kind {
        Kind::Bool => Value::Bool(true),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(1),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(1),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(1),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(1),
        Kind::Float => Value::F32(1.0),
        Kind::Double => Value::F64(1.0),
        Kind::String => Value::String("x".into()),
        Kind::Bytes => Value::Bytes(b"x".as_slice().into()),
        Kind::Enum(e) => Value::EnumNumber(e.values().map(|v| v.number()).find(|n| *n != 0).unwrap_or(0)),
        // A wrapper (`BoolValue`, `UInt32Value`…) holds a value other than its default too.
        Kind::Message(m) => {
            let mut message = DynamicMessage::new(m.clone());
            if m.full_name() == "google.protobuf.Duration" {
                message.set_field_by_name("seconds", Value::I64(1));
            } else if m.full_name().starts_with("google.protobuf.")
                && let Some(value) = m.get_field_by_name("value")
            {
                message.set_field(&value, sample(&value));
            }
            Value::Message(message)
        }
    };
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            unreachable!("a map field's kind is its entry message")
        };
        let value = one(&entry.map_entry_value_field().kind());
        Value::Map([(MapKey::String("x".into()), value)].into_iter().collect())
    } else if field.is_list() {
        Value::List(vec![one(&field.kind())])
    } else {
        one(&field.kind())
    }
}

fn listener(bytes: &[u8]) -> Result<(), String> {
    let l = Listener::decode(bytes).map_err(|e| e.to_string())?;
    weir_proxy::listener::ListenerConfig::compile(&l)
        .map(drop)
        .map_err(|e| e.to_string())
}

fn cluster(bytes: &[u8]) -> Result<(), String> {
    let c = Cluster::decode(bytes).map_err(|e| e.to_string())?;
    weir_proxy::cluster::ClusterConfig::compile(&c)
        .map(drop)
        .map_err(|e| e.to_string())
}

fn routes(bytes: &[u8]) -> Result<(), String> {
    let r = RouteConfiguration::decode(bytes).map_err(|e| e.to_string())?;
    weir_proxy::routes::CompiledRoutes::compile(&r)
        .map(drop)
        .map_err(|e| e.to_string())
}

fn assignment(bytes: &[u8]) -> Result<(), String> {
    let a = ClusterLoadAssignment::decode(bytes).map_err(|e| e.to_string())?;
    weir_proxy::endpoints::compile_assignment(&a, false).map(drop)
}

fn tcp_listener() -> serde_json::Value {
    json!({
        "name": "l",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}},
        "filter_chains": [{"filters": [{"name": "tcp", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": "t", "cluster": "c"}}]}]
    })
}

fn static_cluster() -> serde_json::Value {
    json!({
        "name": "c",
        "type": "STATIC",
        "load_assignment": {"cluster_name": "c", "endpoints": [{"lb_endpoints": [{"endpoint": {"address":
            {"socket_address": {"address": "127.0.0.1", "port_value": 1}}}}]}]}
    })
}

/// Asserts that `probe` found nothing.
fn check(problems: Vec<String>) {
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_listener_field_is_honoured_or_refused() {
    let accepted = [
        "name",
        "address",
        "filter_chains",
        "default_filter_chain",
        "use_original_dst",
        "bind_to_port",
        "traffic_direction",
        "listener_filters",
        "listener_filters_timeout",
        "continue_on_listener_filters_timeout",
        "tcp_backlog_size",
        "enable_reuse_port",
        "max_connections_to_accept_per_socket_event",
        "per_connection_buffer_limit_bytes",
        "ignore_global_conn_limit",
        "bypass_overload_manager",
        // Changing nothing in Weir: no filter it runs reads listener metadata, and its counters
        // are proxy-wide (not per listener).
        "metadata",
        "stat_prefix",
    ];
    check(probe(
        "envoy.config.listener.v3.Listener",
        &tcp_listener(),
        &[],
        &accepted,
        &listener,
    ));
}

#[test]
fn every_tls_inspector_field_is_honoured_or_refused() {
    let mut base = tcp_listener();
    base["listener_filters"] = json!([{"name": "envoy.filters.listener.tls_inspector", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}]);
    let root = "envoy.config.listener.v3.Listener";
    let mut problems = probe(
        root,
        &base,
        &["listener_filters"],
        &["name", "typed_config"],
        &listener,
    );
    let inspector = [
        "max_client_hello_size",
        "close_connection_on_client_hello_parsing_errors",
        // Changing nothing in Weir: only access logs (refused) read the fingerprints, and the
        // size of the first read changes how the ClientHello is read, not what is seen.
        "enable_ja3_fingerprinting",
        "enable_ja4_fingerprinting",
        "initial_read_buffer_size",
    ];
    problems.extend(probe(
        root,
        &base,
        &["listener_filters", "typed_config", "@"],
        &inspector,
        &listener,
    ));
    check(problems);
}

#[test]
fn every_dynamic_forward_proxy_field_is_honoured_or_refused() {
    let base = json!({
        "name": "dfp",
        "lb_policy": "CLUSTER_PROVIDED",
        "cluster_type": {"name": "envoy.clusters.dynamic_forward_proxy", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig",
            "dns_cache_config": {"name": "cache", "dns_lookup_family": "V4_ONLY"}}}
    });
    let root = "envoy.config.cluster.v3.Cluster";
    let config = ["cluster_type", "typed_config", "@"];
    let mut problems = probe(
        root,
        &base,
        &config,
        // Changing nothing in Weir: it only allows turning off checks Weir refuses anyway.
        &["dns_cache_config", "allow_insecure_cluster_options"],
        &cluster,
    );
    let cache = [
        "name",
        "dns_lookup_family",
        // Changing nothing in Weir: it keeps no cache, and resolves a host for each new
        // connection, so no answer is ever older than these allow.
        "dns_refresh_rate",
        "dns_min_refresh_rate",
        "host_ttl",
    ];
    problems.extend(probe(
        root,
        &base,
        &[&config[..], &["dns_cache_config"]].concat(),
        &cache,
        &cluster,
    ));
    check(problems);
}

#[test]
fn every_cluster_field_is_honoured_or_refused() {
    let accepted = [
        "name",
        "type",
        "cluster_type",
        "eds_cluster_config",
        "load_assignment",
        "connect_timeout",
        "lb_policy",
        "round_robin_lb_config",
        "least_request_lb_config",
        "ring_hash_lb_config",
        "maglev_lb_config",
        "original_dst_lb_config",
        "common_lb_config",
        "circuit_breakers",
        "outlier_detection",
        "max_requests_per_connection",
        "http2_protocol_options",
        "typed_extension_protocol_options",
        "transport_socket",
        "upstream_bind_config",
        "upstream_connection_options",
        "dns_refresh_rate",
        "respect_dns_ttl",
        "dns_lookup_family",
        "wait_for_warm_on_init",
        "per_connection_buffer_limit_bytes",
        // Changing nothing in Weir: no filter it runs reads cluster metadata; an ORIGINAL_DST
        // cluster keeps no hosts to clean up; without active health checks a removed host goes
        // at once either way.
        "metadata",
        "cleanup_interval",
        "ignore_health_on_host_removal",
    ];
    check(probe(
        "envoy.config.cluster.v3.Cluster",
        &static_cluster(),
        &[],
        &accepted,
        &cluster,
    ));
}

#[test]
fn every_route_configuration_field_is_honoured_or_refused() {
    let base = json!({"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"],
        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c"}}]}]});
    let root = "envoy.config.route.v3.RouteConfiguration";
    let accepted = [
        "name",
        "virtual_hosts",
        "request_headers_to_add",
        "request_headers_to_remove",
        "response_headers_to_add",
        "response_headers_to_remove",
        "validate_clusters",
        "ignore_port_in_host_matching",
        "max_direct_response_body_size_bytes",
        // Changing nothing in Weir: no filter it runs reads route metadata.
        "metadata",
    ];
    check(probe(root, &base, &[], &accepted, &routes));
}

#[test]
fn every_endpoint_assignment_field_is_honoured_or_refused() {
    let base = static_cluster()["load_assignment"].clone();
    let root = "envoy.config.endpoint.v3.ClusterLoadAssignment";
    let mut problems = probe(
        root,
        &base,
        &[],
        &["cluster_name", "endpoints", "policy"],
        &assignment,
    );
    // `drop_overloads` and the rest are refused one by one.
    problems.extend(probe(
        root,
        &json!({"cluster_name": "c", "policy": {}}),
        &["policy"],
        &["overprovisioning_factor"],
        &assignment,
    ));
    // Changing nothing in Weir: metadata (no filter it runs reads it; transport socket matches
    // and subsets are refused), `proximity` (not implemented in Envoy either), the endpoint's
    // health check settings and host name (active health checks and `auto_host_rewrite` are
    // refused).
    let group = [
        "locality",
        "lb_endpoints",
        "load_balancing_weight",
        "priority",
        "metadata",
        "proximity",
    ];
    problems.extend(probe(root, &base, &["endpoints"], &group, &assignment));
    let endpoint = [
        "endpoint",
        "endpoint_name",
        "health_status",
        "load_balancing_weight",
        "metadata",
    ];
    problems.extend(probe(
        root,
        &base,
        &["endpoints", "lb_endpoints"],
        &endpoint,
        &assignment,
    ));
    let address = [
        "address",
        "additional_addresses",
        "health_check_config",
        "hostname",
    ];
    problems.extend(probe(
        root,
        &base,
        &["endpoints", "lb_endpoints", "endpoint"],
        &address,
        &assignment,
    ));
    check(problems);
}

/// The HTTP/2 options honoured on both sides of the proxy (`weir_proxy::h2_settings`).
const HTTP2_OPTIONS: [&str; 4] = [
    "max_concurrent_streams",
    "initial_stream_window_size",
    "initial_connection_window_size",
    "connection_keepalive",
];

fn http_listener() -> serde_json::Value {
    json!({
        "name": "h",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}},
        "filter_chains": [{"filters": [{"name": "hcm", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "h",
            "route_config": {"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c"}}]}]},
            "http_filters": [{"name": "router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]
    })
}

#[test]
fn every_listener_part_field_is_honoured_or_refused() {
    let root = "envoy.config.listener.v3.Listener";
    let mut problems = Vec::new();
    let mut part = |base: &serde_json::Value, path: &[&str], accepted: &[&str]| {
        problems.extend(probe(root, base, path, accepted, &listener));
    };
    let socket_address = [
        "address",
        "port_value",
        "protocol",
        "resolver_name",
        "ipv4_compat",
    ];
    part(&tcp_listener(), &["address", "socket_address"], &socket_address);
    // `metadata`: no filter Weir runs reads it.
    let chain = [
        "filter_chain_match",
        "filters",
        "transport_socket",
        "name",
        "metadata",
    ];
    part(&tcp_listener(), &["filter_chains"], &chain);
    let chain_match = [
        "destination_port",
        "prefix_ranges",
        "server_names",
        "transport_protocol",
        "application_protocols",
    ];
    part(
        &tcp_listener(),
        &["filter_chains", "filter_chain_match"],
        &chain_match,
    );
    part(
        &tcp_listener(),
        &["filter_chains", "filters"],
        &["name", "typed_config"],
    );
    let tcp_proxy = [
        "cluster",
        "weighted_clusters",
        "idle_timeout",
        "max_connect_attempts",
        // Changing nothing in Weir: its counters are proxy-wide, and the options of access
        // logs and of a connection duration limit that are themselves refused.
        "stat_prefix",
        "access_log_flush_interval",
        "flush_access_log_on_connected",
        "access_log_options",
        "max_downstream_connection_duration_jitter_percentage",
    ];
    part(
        &tcp_listener(),
        &["filter_chains", "filters", "typed_config", "@"],
        &tcp_proxy,
    );
    let manager = [
        "codec_type",
        "rds",
        "route_config",
        "http_filters",
        "server_name",
        "server_header_transformation",
        "drain_timeout",
        "drain_timeout_jitter",
        "stream_idle_timeout",
        "request_timeout",
        "use_remote_address",
        "skip_xff_append",
        "via",
        "generate_request_id",
        "preserve_external_request_id",
        "always_set_request_id_in_response",
        "forward_client_cert_details",
        "upgrade_configs",
        "max_request_headers_kb",
        "strip_any_host_port",
        "normalize_path",
        "merge_slashes",
        "path_with_escaped_slashes_action",
        "common_http_protocol_options",
        "http_protocol_options",
        "http2_protocol_options",
        "append_local_overload",
        // Changing nothing in Weir: its counters are proxy-wide; no PROXY protocol or access log
        // exists to be configured.
        "stat_prefix",
        "add_proxy_protocol_connection_state",
        "access_log_flush_interval",
        "flush_access_log_on_new_request",
        "access_log_options",
    ];
    part(
        &http_listener(),
        &["filter_chains", "filters", "typed_config", "@"],
        &manager,
    );
    let mut common = http_listener();
    common["filter_chains"][0]["filters"][0]["typed_config"]["common_http_protocol_options"] =
        json!({"idle_timeout": "60s"});
    part(
        &common,
        &[
            "filter_chains",
            "filters",
            "typed_config",
            "@",
            "common_http_protocol_options",
        ],
        &["idle_timeout", "headers_with_underscores_action"],
    );
    let mut tuned = http_listener();
    tuned["filter_chains"][0]["filters"][0]["typed_config"]["http2_protocol_options"] =
        json!({"max_concurrent_streams": 100});
    part(
        &tuned,
        &[
            "filter_chains",
            "filters",
            "typed_config",
            "@",
            "http2_protocol_options",
        ],
        &HTTP2_OPTIONS,
    );
    check(problems);
}

fn route_configuration() -> serde_json::Value {
    json!({"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"],
        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c",
            "retry_policy": {"retry_on": "5xx"}}}]}]})
}

#[test]
fn every_route_part_field_is_honoured_or_refused() {
    let root = "envoy.config.route.v3.RouteConfiguration";
    let mut problems = Vec::new();
    let mut part = |path: &[&str], accepted: &[&str]| {
        problems.extend(probe(root, &route_configuration(), path, accepted, &routes));
    };
    let headers = [
        "request_headers_to_add",
        "request_headers_to_remove",
        "response_headers_to_add",
        "response_headers_to_remove",
    ];
    let buffer_limits = ["per_request_buffer_limit_bytes", "request_body_buffer_limit"];
    let virtual_host = [
        "name",
        "domains",
        "routes",
        "require_tls",
        "retry_policy",
        "include_request_attempt_count",
        "include_attempt_count_in_response",
        "include_is_timeout_retry_header",
        "typed_per_filter_config",
        // Changing nothing in Weir: no filter it runs reads virtual host metadata.
        "metadata",
    ];
    part(
        &["virtual_hosts"],
        &[&virtual_host[..], &headers, &buffer_limits].concat(),
    );
    let route = [
        "name",
        "match",
        "route",
        "redirect",
        "direct_response",
        "typed_per_filter_config",
        // Changing nothing in Weir: metadata (no filter it runs reads it), `decorator` and
        // `tracing` (tracing is refused where it is configured, in the connection manager).
        "metadata",
        "decorator",
        "tracing",
    ];
    part(
        &["virtual_hosts", "routes"],
        &[&route[..], &headers, &buffer_limits].concat(),
    );
    let route_match = [
        "prefix",
        "path",
        "safe_regex",
        "path_separated_prefix",
        "case_sensitive",
        "headers",
        "query_parameters",
    ];
    part(&["virtual_hosts", "routes", "match"], &route_match);
    let action = [
        "cluster",
        "cluster_header",
        "weighted_clusters",
        "prefix_rewrite",
        "regex_rewrite",
        "host_rewrite_literal",
        "timeout",
        "idle_timeout",
        "retry_policy",
        "request_mirror_policies",
        "hash_policy",
        "upgrade_configs",
        "max_stream_duration",
        "max_grpc_timeout",
        // Changing nothing in Weir: rate limits are refused wherever they are configured.
        "include_vh_rate_limits",
    ];
    part(&["virtual_hosts", "routes", "route"], &action);
    let retry = [
        "retry_on",
        "num_retries",
        "per_try_timeout",
        "retriable_status_codes",
        "retry_back_off",
        "retry_host_predicate",
        "host_selection_retry_max_attempts",
        // As in Envoy, changing nothing for the cluster specifiers Weir accepts (a cluster, a
        // header, weighted clusters): only plugin specifiers can choose again for a retry.
        "refresh_cluster_on_retry",
    ];
    part(&["virtual_hosts", "routes", "route", "retry_policy"], &retry);
    check(problems);
}

/// A self-signed CA certificate (PEM).
fn ca() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["ca.test".to_string()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().pem()
}

/// A static cluster with every part set that has parts of its own.
fn full_cluster() -> serde_json::Value {
    let mut c = static_cluster();
    c["circuit_breakers"] = json!({"thresholds": [{"max_connections": 10}]});
    c["outlier_detection"] = json!({"consecutive_5xx": 5});
    c["common_lb_config"] = json!({"healthy_panic_threshold": {"value": 40}});
    c["upstream_connection_options"] = json!({"tcp_keepalive": {"keepalive_time": 30}});
    c["upstream_bind_config"] = json!({"source_address": {"address": "127.0.0.1", "port_value": 0}});
    c["transport_socket"] = json!({"name": "tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "sni": "backend.test",
        "common_tls_context": {"validation_context": {"trusted_ca": {"inline_string": ca()}}}}});
    c["typed_extension_protocol_options"] = json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "common_http_protocol_options": {"idle_timeout": "30s"},
            "explicit_http_config": {"http2_protocol_options": {"max_concurrent_streams": 100}}}});
    c
}

#[test]
fn every_cluster_part_field_is_honoured_or_refused() {
    let root = "envoy.config.cluster.v3.Cluster";
    let mut problems = Vec::new();
    let mut part = |base: &serde_json::Value, path: &[&str], accepted: &[&str]| {
        problems.extend(probe(root, base, path, accepted, &cluster));
    };
    let full = full_cluster();
    part(&full, &["circuit_breakers"], &["thresholds"]);
    let thresholds = [
        "priority",
        "max_connections",
        "max_pending_requests",
        "max_requests",
        "max_retries",
        "retry_budget",
        "track_remaining",
    ];
    part(&full, &["circuit_breakers", "thresholds"], &thresholds);
    let outlier = [
        "consecutive_5xx",
        "consecutive_gateway_failure",
        "consecutive_local_origin_failure",
        "interval",
        "base_ejection_time",
        "max_ejection_time",
        "max_ejection_time_jitter",
        "max_ejection_percent",
        "enforcing_consecutive_5xx",
        "enforcing_consecutive_gateway_failure",
        "enforcing_consecutive_local_origin_failure",
        "enforcing_success_rate",
        "enforcing_local_origin_success_rate",
        "enforcing_failure_percentage",
        "enforcing_failure_percentage_local_origin",
        "success_rate_minimum_hosts",
        "success_rate_request_volume",
        "success_rate_stdev_factor",
        "failure_percentage_threshold",
        "failure_percentage_minimum_hosts",
        "failure_percentage_request_volume",
        "split_external_local_origin_errors",
    ];
    part(&full, &["outlier_detection"], &outlier);
    let common_lb = [
        "healthy_panic_threshold",
        "locality_weighted_lb_config",
        "update_merge_window",
        // Changing nothing in Weir: active health checks are refused.
        "ignore_new_hosts_until_first_hc",
    ];
    part(&full, &["common_lb_config"], &common_lb);
    part(&full, &["upstream_connection_options"], &["tcp_keepalive"]);
    let keepalive = ["keepalive_probes", "keepalive_time", "keepalive_interval"];
    part(
        &full,
        &["upstream_connection_options", "tcp_keepalive"],
        &keepalive,
    );
    let bind = [
        "source_address",
        // Changing nothing in Weir: network namespaces are refused wherever they are named,
        // so there is never one to validate.
        "validate_network_namespaces",
    ];
    part(&full, &["upstream_bind_config"], &bind);
    let tls = ["common_tls_context", "sni"];
    part(&full, &["transport_socket", "typed_config", "@"], &tls);
    let common_tls = ["tls_certificates", "validation_context", "alpn_protocols"];
    part(
        &full,
        &["transport_socket", "typed_config", "@", "common_tls_context"],
        &common_tls,
    );
    let validation = [
        "trusted_ca",
        "match_typed_subject_alt_names",
        // As in Envoy, changing nothing upstream: only a server asks for client certificates.
        "suppress_client_ca_list",
    ];
    part(
        &full,
        &[
            "transport_socket",
            "typed_config",
            "@",
            "common_tls_context",
            "validation_context",
        ],
        &validation,
    );
    let options = [
        "typed_extension_protocol_options",
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "@",
    ];
    let protocol = [
        "common_http_protocol_options",
        "explicit_http_config",
        "use_downstream_protocol_config",
    ];
    part(&full, &options, &protocol);
    let common_http = [
        "idle_timeout",
        "max_connection_duration",
        "max_requests_per_connection",
    ];
    part(
        &full,
        &[&options[..], &["common_http_protocol_options"]].concat(),
        &common_http,
    );
    part(
        &full,
        &[&options[..], &["explicit_http_config", "http2_protocol_options"]].concat(),
        &HTTP2_OPTIONS,
    );
    let mut ring = static_cluster();
    ring["lb_policy"] = json!("RING_HASH");
    ring["ring_hash_lb_config"] = json!({"minimum_ring_size": 1024});
    part(
        &ring,
        &["ring_hash_lb_config"],
        &["minimum_ring_size", "maximum_ring_size", "hash_function"],
    );
    let mut maglev = static_cluster();
    maglev["lb_policy"] = json!("MAGLEV");
    maglev["maglev_lb_config"] = json!({"table_size": 65537});
    part(&maglev, &["maglev_lb_config"], &["table_size"]);
    let mut least = static_cluster();
    least["lb_policy"] = json!("LEAST_REQUEST");
    least["least_request_lb_config"] = json!({"choice_count": 2});
    part(&least, &["least_request_lb_config"], &["choice_count"]);
    check(problems);
}

/// Compiles `resource` (Envoy JSON) of type `type_name` with `compile`.
fn compile_json(
    type_name: &str,
    resource: serde_json::Value,
    compile: &dyn Fn(&[u8]) -> Result<(), String>,
) -> Result<(), String> {
    compile(&weir_xds::json::from_json(type_name, &resource).unwrap())
}

#[test]
fn values_envoy_refuses_are_refused() {
    let listener_type = "envoy.config.listener.v3.Listener";
    let mut l = tcp_listener();
    l["max_connections_to_accept_per_socket_event"] = json!(0);
    let e = compile_json(listener_type, l, &listener).unwrap_err();
    assert!(
        e.contains("max_connections_to_accept_per_socket_event must be above 0"),
        "{e}"
    );

    let routes_type = "envoy.config.route.v3.RouteConfiguration";
    let direct = |size: usize, limit: Option<u32>| {
        let mut r = json!({"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200,
                "body": {"inline_string": "x".repeat(size)}}}]}]});
        if let Some(limit) = limit {
            r["max_direct_response_body_size_bytes"] = json!(limit);
        }
        compile_json(routes_type, r, &routes)
    };
    assert!(direct(4096, None).is_ok(), "Envoy's default limit is 4096 bytes");
    let e = direct(4097, None).unwrap_err();
    assert!(
        e.contains("response body size is 4097 bytes; maximum is 4096"),
        "{e}"
    );
    assert!(direct(10_000, Some(10_000)).is_ok());

    let assignment_type = "envoy.config.endpoint.v3.ClusterLoadAssignment";
    let factor = |f: u32| {
        compile_json(
            assignment_type,
            json!({"cluster_name": "c", "policy": {"overprovisioning_factor": f}}),
            &assignment,
        )
    };
    assert!(factor(140).is_ok());
    assert!(factor(150).is_ok());
    assert!(factor(0).unwrap_err().contains("overprovisioning_factor"));
}

#[test]
fn every_route_action_part_field_is_honoured_or_refused() {
    let root = "envoy.config.route.v3.RouteConfiguration";
    let base = json!({"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
        {"match": {"prefix": "/", "headers": [{"name": "x", "exact_match": "y"}],
                   "query_parameters": [{"name": "q", "string_match": {"exact": "1"}}]},
         "route": {"weighted_clusters": {"clusters": [{"name": "c", "weight": 1}]},
            "retry_policy": {"retry_on": "5xx", "retry_back_off": {"base_interval": "0.1s"}},
            "hash_policy": [{"header": {"header_name": "x"}}],
            "request_mirror_policies": [{"cluster": "m"}],
            "upgrade_configs": [{"upgrade_type": "websocket"}]}},
        {"match": {"prefix": "/r"}, "redirect": {"host_redirect": "h"}},
        {"match": {"prefix": "/d"}, "direct_response": {"status": 200}}]}]});
    let mut problems = Vec::new();
    let mut part = |path: &[&str], accepted: &[&str]| {
        problems.extend(probe(root, &base, path, accepted, &routes));
    };
    let r = ["virtual_hosts", "routes"];
    let header = [
        "name",
        "exact_match",
        "prefix_match",
        "suffix_match",
        "contains_match",
        "safe_regex_match",
        "range_match",
        "present_match",
        "string_match",
        "invert_match",
        "treat_missing_header_as_empty",
    ];
    part(&[&r[..], &["match", "headers"]].concat(), &header);
    let query = ["name", "string_match", "present_match"];
    part(&[&r[..], &["match", "query_parameters"]].concat(), &query);
    part(
        &[&r[..], &["route", "weighted_clusters"]].concat(),
        &["clusters", "total_weight"],
    );
    let weighted = [
        "name",
        "weight",
        "host_rewrite_literal",
        "request_headers_to_add",
        "request_headers_to_remove",
        "response_headers_to_add",
        "response_headers_to_remove",
    ];
    part(
        &[&r[..], &["route", "weighted_clusters", "clusters"]].concat(),
        &weighted,
    );
    let back_off = ["base_interval", "max_interval"];
    part(
        &[&r[..], &["route", "retry_policy", "retry_back_off"]].concat(),
        &back_off,
    );
    let hash = [
        "header",
        "cookie",
        "connection_properties",
        "query_parameter",
        "terminal",
    ];
    part(&[&r[..], &["route", "hash_policy"]].concat(), &hash);
    let mirror = [
        "cluster",
        "runtime_fraction",
        "disable_shadow_host_suffix_append",
        "host_rewrite_literal",
        // Changing nothing in Weir: tracing is refused where it is configured.
        "trace_sampled",
    ];
    part(&[&r[..], &["route", "request_mirror_policies"]].concat(), &mirror);
    part(
        &[&r[..], &["route", "upgrade_configs"]].concat(),
        &["upgrade_type", "enabled"],
    );
    check(problems);
}

#[test]
fn every_downstream_tls_and_http_filter_field_is_honoured_or_refused() {
    let root = "envoy.config.listener.v3.Listener";
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["gateway.test".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let mut tls = http_listener();
    tls["filter_chains"][0]["transport_socket"] = json!({"name": "tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "common_tls_context": {"tls_certificates": [{
            "certificate_chain": {"inline_string": cert.pem()},
            "private_key": {"inline_string": key.serialize_pem()}}],
            "validation_context": {"trusted_ca": {"inline_string": ca()}}}}});
    tls["filter_chains"][0]["filters"][0]["typed_config"]["upgrade_configs"] =
        json!([{"upgrade_type": "websocket"}]);
    let mut problems = Vec::new();
    let mut part = |path: &[&str], accepted: &[&str]| {
        problems.extend(probe(root, &tls, path, accepted, &listener));
    };
    let downstream = ["filter_chains", "transport_socket", "typed_config", "@"];
    part(&downstream, &["common_tls_context", "require_client_certificate"]);
    let common = [&downstream[..], &["common_tls_context"]].concat();
    part(
        &common,
        &["tls_certificates", "validation_context", "alpn_protocols"],
    );
    part(
        &[&common[..], &["tls_certificates"]].concat(),
        &["certificate_chain", "private_key"],
    );
    part(
        &[&common[..], &["validation_context"]].concat(),
        &["trusted_ca", "suppress_client_ca_list"],
    );
    let manager = ["filter_chains", "filters", "typed_config", "@"];
    part(
        &[&manager[..], &["http_filters"]].concat(),
        &["name", "typed_config", "is_optional"],
    );
    part(
        &[&manager[..], &["upgrade_configs"]].concat(),
        &["upgrade_type", "enabled"],
    );
    let router = [
        "suppress_envoy_headers",
        // Changing nothing in Weir: it keeps no per-status-code or timing statistics per
        // cluster for these to turn off, and tracing is refused where it is configured.
        "dynamic_stats",
        "suppress_grpc_request_failure_code_stats",
        "start_child_span",
    ];
    part(
        &[&manager[..], &["http_filters", "typed_config", "@"]].concat(),
        &router,
    );
    check(problems);
}

/// As `weir proxy --bootstrap` reads a file: fields this build's types would drop are refused,
/// then the bootstrap is compiled.
fn bootstrap(bytes: &[u8]) -> Result<(), String> {
    weir_proxy::bootstrap::check_known(bytes)?;
    weir_proxy::bootstrap::from_encoded(bytes).map(drop)
}

#[test]
fn every_bootstrap_field_is_honoured_or_refused() {
    let root = "envoy.config.bootstrap.v3.Bootstrap";
    let base = json!({
        "node": {"id": "n", "cluster": "c"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": [tcp_listener()], "clusters": [static_cluster()]}
    });
    let accepted = [
        "node",
        "admin",
        "static_resources",
        "dynamic_resources",
        "cluster_manager",
        "overload_manager",
        "layered_runtime",
        // Changing nothing in Weir: flushing stats sinks (which are refused), and how Envoy
        // stores headers inside.
        "stats_flush_interval",
        "stats_flush_on_admin",
        "inline_headers",
    ];
    let mut problems = probe(root, &base, &[], &accepted, &bootstrap);
    problems.extend(probe(
        root,
        &base,
        &["static_resources"],
        &["listeners", "clusters"],
        &bootstrap,
    ));
    let mut with_manager = base.clone();
    with_manager["cluster_manager"] = json!({"local_cluster_name": ""});
    // Changing nothing in Weir: the local cluster serves zone-aware balancing (refused), and
    // clusters are created when they arrive either way.
    let manager = ["local_cluster_name", "enable_deferred_cluster_creation"];
    problems.extend(probe(
        root,
        &with_manager,
        &["cluster_manager"],
        &manager,
        &bootstrap,
    ));
    // `profile_path` changes nothing in Weir: it has no CPU profiler.
    let admin = ["address", "ignore_global_conn_limit", "profile_path"];
    problems.extend(probe(root, &base, &["admin"], &admin, &bootstrap));
    let mut overloaded = base.clone();
    overloaded["overload_manager"] = json!({
        "refresh_interval": "1s",
        "resource_monitors": [{"name": "m", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.resource_monitors.injected_resource.v3.InjectedResourceConfig",
            "filename": "/dev/null"}}],
        "actions": [{"name": "envoy.overload_actions.stop_accepting_requests",
            "triggers": [{"name": "m", "threshold": {"value": 0.9}}]}],
        "loadshed_points": [{"name": "envoy.load_shed_points.tcp_listener_accept",
            "triggers": [{"name": "m", "threshold": {"value": 0.9}}]}]
    });
    overloaded["layered_runtime"] = json!({"layers": [{"name": "l", "static_layer": {}}]});
    problems.extend(probe(
        root,
        &overloaded,
        &["overload_manager"],
        &[
            "refresh_interval",
            "resource_monitors",
            "actions",
            "loadshed_points",
        ],
        &bootstrap,
    ));
    problems.extend(probe(
        root,
        &overloaded,
        &["overload_manager", "resource_monitors"],
        &["name", "typed_config"],
        &bootstrap,
    ));
    problems.extend(probe(
        root,
        &overloaded,
        &["overload_manager", "actions"],
        &["name", "triggers"],
        &bootstrap,
    ));
    problems.extend(probe(
        root,
        &overloaded,
        &["overload_manager", "actions", "triggers"],
        &["name", "threshold", "scaled"],
        &bootstrap,
    ));
    problems.extend(probe(
        root,
        &overloaded,
        &["overload_manager", "loadshed_points"],
        &["name", "triggers"],
        &bootstrap,
    ));
    problems.extend(probe(
        root,
        &overloaded,
        &["layered_runtime"],
        &["layers"],
        &bootstrap,
    ));
    // An admin layer adds nothing: Weir has no `/runtime_modify` to fill it.
    problems.extend(probe(
        root,
        &overloaded,
        &["layered_runtime", "layers"],
        &["name", "static_layer", "admin_layer"],
        &bootstrap,
    ));
    // The node goes to the control plane as it is.
    let node_names: Vec<String> = weir_xds::json::pool()
        .unwrap()
        .get_message_by_name("envoy.config.core.v3.Node")
        .unwrap()
        .fields()
        .map(|f| f.name().to_string())
        .collect();
    let node_fields: Vec<&str> = node_names.iter().map(String::as_str).collect();
    problems.extend(probe(root, &base, &["node"], &node_fields, &bootstrap));
    check(problems);
}

#[test]
fn every_redirect_fault_and_cors_field_is_honoured_or_refused() {
    let root = "envoy.config.route.v3.RouteConfiguration";
    let base = json!({"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
        {"match": {"prefix": "/r"}, "redirect": {"host_redirect": "h"}},
        {"match": {"prefix": "/"}, "route": {"cluster": "c", "max_stream_duration": {"max_stream_duration": "1s"}},
         "typed_per_filter_config": {
            "envoy.filters.http.cors": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
                "allow_origin_string_match": [{"exact": "https://a.test"}]},
            "envoy.filters.http.fault": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
                "delay": {"fixed_delay": "1s", "percentage": {"numerator": 10}},
                "abort": {"http_status": 503, "percentage": {"numerator": 10}}}}}]}]});
    let mut problems = Vec::new();
    let mut part = |path: &[&str], accepted: &[&str]| {
        problems.extend(probe(root, &base, path, accepted, &routes));
    };
    let r = ["virtual_hosts", "routes"];
    let redirect = [
        "https_redirect",
        "scheme_redirect",
        "host_redirect",
        "port_redirect",
        "path_redirect",
        "prefix_rewrite",
        "regex_rewrite",
        "response_code",
        "strip_query",
    ];
    part(&[&r[..], &["redirect"]].concat(), &redirect);
    let duration = ["max_stream_duration", "grpc_timeout_header_max"];
    part(
        &["virtual_hosts", "routes[1]", "route", "max_stream_duration"],
        &duration,
    );
    let filters = ["virtual_hosts", "routes[1]", "typed_per_filter_config"];
    let cors = [
        "allow_origin_string_match",
        "allow_methods",
        "allow_headers",
        "expose_headers",
        "max_age",
        "allow_credentials",
        "filter_enabled",
        "forward_not_matching_preflights",
    ];
    part(&[&filters[..], &["envoy.filters.http.cors", "@"]].concat(), &cors);
    let fault = [
        "delay",
        "abort",
        // Changing nothing in Weir: runtime keys (no runtime exists to override the values
        // given; `layered_runtime` is refused), per-downstream-cluster statistics it never keeps,
        // and dynamic metadata only access logs (refused) would read.
        "delay_percent_runtime",
        "abort_percent_runtime",
        "delay_duration_runtime",
        "abort_http_status_runtime",
        "max_active_faults_runtime",
        "response_rate_limit_percent_runtime",
        "abort_grpc_status_runtime",
        "disable_downstream_cluster_stats",
        "filter_metadata",
    ];
    part(
        &[&filters[..], &["envoy.filters.http.fault", "@"]].concat(),
        &fault,
    );
    let delay = ["fixed_delay", "header_delay", "percentage"];
    part(
        &[&filters[..], &["envoy.filters.http.fault", "@", "delay"]].concat(),
        &delay,
    );
    let abort = [
        "http_status",
        "grpc_status",
        "header_abort",
        "percentage",
        "response_body",
    ];
    part(
        &[&filters[..], &["envoy.filters.http.fault", "@", "abort"]].concat(),
        &abort,
    );
    check(problems);
}

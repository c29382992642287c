//! VirtualService: CRD rules and `ValidateVirtualService` / `validateHTTPRoute`
//! (validation.go:1743, virtualservice.go:46).

use std::collections::BTreeMap;

use super::Meta;
use super::common::{self, ExportKind};
use crate::diag::Report;
use crate::host;
use crate::path::Path;
use crate::types::networking::{
    CorsPolicy, Destination, HeaderOperations, Headers, HttpFaultInjection, HttpMatchRequest, HttpRedirect,
    HttpRetry, HttpRewrite, HttpRoute, HttpRouteDestination, L4MatchAttributes, RouteDestination, TlsRoute,
    VirtualService,
};
use crate::types::{OrEmpty, StringMatch};

const JWT_CLAIM_PREFIX: &str = "@request.auth.claims.";

/// Retry policies Envoy accepts in `retryOn` (besides HTTP status codes).
pub const RETRY_ON_POLICIES: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// gRPC status code names accepted by abort faults.
pub const GRPC_STATUS_CODES: &[&str] = &[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

const CORS_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*",
];

/// Whether Go's `http.StatusText` knows `code`.
pub fn is_known_http_status(code: i64) -> bool {
    matches!(code,
        100..=103 | 200..=208 | 226 | 300..=308 | 400..=418 | 421..=426 | 428 | 429 | 431 | 451 | 500..=508 | 510 | 511)
}

/// CRD rules: required fields, oneofs and duration minimums.
pub fn schema(r: &mut Report, spec: &Path<'_>, vs: &VirtualService, _meta: &Meta<'_>) {
    let http_path = spec.key("http");
    for (i, route) in vs.http.or_empty().iter().enumerate() {
        let rp = http_path.index(i);
        http_route_schema(r, &rp, route);
    }
    let tls_path = spec.key("tls");
    for (i, route) in vs.tls.or_empty().iter().enumerate() {
        let rp = tls_path.index(i);
        if route.r#match.is_none() {
            r.required(&rp.key("match"));
        }
        let mp = rp.key("match");
        for (j, m) in route.r#match.or_empty().iter().enumerate() {
            if m.sni_hosts.is_none() {
                r.required(&mp.index(j).key("sniHosts"));
            }
        }
        route_destinations_schema(
            r,
            &rp.key("route"),
            route.route.or_empty().iter().map(|d| &d.destination),
        );
    }
    let tcp_path = spec.key("tcp");
    for (i, route) in vs.tcp.or_empty().iter().enumerate() {
        let rp = tcp_path.index(i);
        route_destinations_schema(
            r,
            &rp.key("route"),
            route.route.or_empty().iter().map(|d| &d.destination),
        );
    }
}

fn route_destinations_schema<'a>(
    r: &mut Report,
    path: &Path<'_>,
    destinations: impl Iterator<Item = &'a Option<Destination>>,
) {
    for (i, d) in destinations.enumerate() {
        let p = path.index(i);
        match d {
            None => r.required(&p.key("destination")),
            Some(d) => destination_schema(r, &p.key("destination"), d),
        }
    }
}

fn destination_schema(r: &mut Report, path: &Path<'_>, d: &Destination) {
    if d.host.is_none() {
        r.required(&path.key("host"));
    }
}

fn string_match_schema(r: &mut Report, path: &Path<'_>, m: &StringMatch) {
    let set = [m.exact.is_some(), m.prefix.is_some(), m.regex.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if set > 1 {
        r.invalid(
            path,
            "\"object\"",
            "only one of exact, prefix or regex can be set",
        );
    }
}

fn http_route_schema(r: &mut Report, rp: &Path<'_>, route: &HttpRoute) {
    let mp = rp.key("match");
    for (j, m) in route.r#match.or_empty().iter().enumerate() {
        let p = mp.index(j);
        for (field, sm) in [
            ("uri", &m.uri),
            ("scheme", &m.scheme),
            ("method", &m.method),
            ("authority", &m.authority),
        ] {
            if let Some(sm) = sm {
                string_match_schema(r, &p.key(field), sm);
            }
        }
        for (field, map) in [
            ("headers", &m.headers),
            ("queryParams", &m.query_params),
            ("withoutHeaders", &m.without_headers),
        ] {
            let fp = p.key(field);
            for (k, sm) in map.iter().flatten() {
                string_match_schema(r, &fp.key(k), sm);
            }
        }
    }
    route_destinations_schema(
        r,
        &rp.key("route"),
        route.route.or_empty().iter().map(|d| &d.destination),
    );
    if let Some(t) = &route.timeout {
        common::duration_schema(r, &rp.key("timeout"), t);
    }
    if let Some(retries) = &route.retries {
        let p = rp.key("retries");
        if let Some(d) = &retries.per_try_timeout {
            common::duration_schema(r, &p.key("perTryTimeout"), d);
        }
        if let Some(d) = &retries.backoff {
            common::duration_schema(r, &p.key("backoff"), d);
        }
    }
    if let Some(fault) = &route.fault {
        let fp = rp.key("fault");
        if let Some(delay) = &fault.delay {
            let dp = fp.key("delay");
            if delay.fixed_delay.is_some() && delay.exponential_delay.is_some() {
                r.invalid(
                    &dp,
                    "\"object\"",
                    "only one of fixedDelay or exponentialDelay can be set",
                );
            }
            if let Some(d) = &delay.fixed_delay {
                common::duration_schema(r, &dp.key("fixedDelay"), d);
            }
            if let Some(d) = &delay.exponential_delay {
                common::duration_schema(r, &dp.key("exponentialDelay"), d);
            }
        }
        if let Some(abort) = &fault.abort {
            let set = [
                abort.http_status.is_some(),
                abort.grpc_status.is_some(),
                abort.http2_error.is_some(),
            ];
            if set.iter().filter(|b| **b).count() > 1 {
                r.invalid(
                    &fp.key("abort"),
                    "\"object\"",
                    "only one of httpStatus, grpcStatus or http2Error can be set",
                );
            }
        }
    }
    if let Some(cors) = &route.cors_policy {
        if let Some(d) = &cors.max_age {
            common::duration_schema(r, &rp.key("corsPolicy").key("maxAge"), d);
        }
        let op = rp.key("corsPolicy");
        let op = op.key("allowOrigins");
        for (i, sm) in cors.allow_origins.or_empty().iter().enumerate() {
            string_match_schema(r, &op.index(i), sm);
        }
    }
    if let Some(redirect) = &route.redirect
        && redirect.port.is_some()
        && redirect.derive_port.is_some()
    {
        r.invalid(
            &rp.key("redirect"),
            "\"object\"",
            "only one of port or derivePort can be set",
        );
    }
    if let Some(dr) = &route.direct_response {
        let dp = rp.key("directResponse");
        if dr.status.is_none() {
            r.required(&dp.key("status"));
        }
        if let Some(body) = &dr.body
            && body.string.is_some()
            && body.bytes.is_some()
        {
            r.invalid(
                &dp.key("body"),
                "\"object\"",
                "only one of string or bytes can be set",
            );
        }
    }
    let mirrors = rp.key("mirrors");
    for (i, m) in route.mirrors.or_empty().iter().enumerate() {
        match &m.destination {
            None => r.required(&mirrors.index(i).key("destination")),
            Some(d) => destination_schema(r, &mirrors.index(i).key("destination"), d),
        }
    }
    if let Some(mirror) = &route.mirror {
        destination_schema(r, &rp.key("mirror"), mirror);
    }
}

/// Webhook rules.
pub fn webhook(r: &mut Report, spec: &Path<'_>, vs: &VirtualService, meta: &Meta<'_>) {
    let hosts = vs.hosts.or_empty();
    let gateways = vs.gateways.or_empty();
    let is_delegate = hosts.is_empty();
    if is_delegate {
        if !gateways.is_empty() {
            r.error(
                &spec.key("gateways"),
                "delegate virtual service must have no gateways specified",
            );
        }
        if !vs.tls.or_empty().is_empty() {
            r.error(
                &spec.key("tls"),
                "delegate virtual service must have no tls route specified",
            );
        }
        if !vs.tcp.or_empty().is_empty() {
            r.error(
                &spec.key("tcp"),
                "delegate virtual service must have no tcp route specified",
            );
        }
    }
    let applies_to_mesh = gateways.is_empty() || gateways.iter().any(|g| g == "mesh");
    let applies_to_gateway = !applies_to_mesh;
    if !gateways.is_empty() {
        common::gateway_names(r, &spec.key("gateways"), gateways);
    }
    if !applies_to_gateway {
        check_jwt_claim_routes(r, spec, vs, gateways);
    }

    let hosts_path = spec.key("hosts");
    let has_sni_routes = vs
        .tls
        .or_empty()
        .iter()
        .any(|t| t.r#match.or_empty().iter().any(|m| m.sni_hosts.is_some()));
    let mut all_valid = true;
    for (i, h) in hosts.iter().enumerate() {
        let p = hosts_path.index(i);
        let domain_ok = if applies_to_gateway && has_sni_routes && h.starts_with("outbound_.") {
            Ok(())
        } else {
            common::wildcard_domain(h)
        };
        match domain_ok {
            Err(e) if !common::is_ip(h) => {
                r.error(&p, e);
                all_valid = false;
            }
            Ok(()) if applies_to_mesh && h == "*" => {
                r.error(
                    &p,
                    "wildcard host * is not allowed for virtual services bound to the mesh gateway",
                );
                all_valid = false;
            }
            _ => {}
        }
    }
    if all_valid {
        for i in 0..hosts.len() {
            for j in i + 1..hosts.len() {
                if host::matches(&hosts[i], &hosts[j]) {
                    r.error(
                        &hosts_path.index(j),
                        format!("duplicate hosts in virtual service: {} & {}", hosts[i], hosts[j]),
                    );
                }
            }
        }
    }

    let http = vs.http.or_empty();
    if http.is_empty() && vs.tcp.or_empty().is_empty() && vs.tls.or_empty().is_empty() {
        r.error(spec, "http, tcp or tls must be provided in virtual service");
    }
    let http_path = spec.key("http");
    for (i, route) in http.iter().enumerate() {
        http_route(r, &http_path.index(i), route, is_delegate);
    }
    unreachable_http_rules(r, &http_path, http);
    let tls_path = spec.key("tls");
    for (i, route) in vs.tls.or_empty().iter().enumerate() {
        tls_route(r, &tls_path.index(i), route, hosts);
    }
    let tcp_path = spec.key("tcp");
    for (i, route) in vs.tcp.or_empty().iter().enumerate() {
        let rp = tcp_path.index(i);
        let mp = rp.key("match");
        for (j, m) in route.r#match.or_empty().iter().enumerate() {
            l4_match(r, &mp.index(j), m);
        }
        if route.route.or_empty().is_empty() {
            r.error(&rp.key("route"), "TCP route is required");
        }
        route_destinations(r, &rp.key("route"), route.route.or_empty());
    }
    common::export_to(
        r,
        &spec.key("exportTo"),
        meta.namespace,
        vs.export_to.or_empty(),
        ExportKind::Other,
    );
}

fn check_jwt_claim_routes(r: &mut Report, spec: &Path<'_>, vs: &VirtualService, gateways: &[String]) {
    let http_path = spec.key("http");
    for (i, route) in vs.http.or_empty().iter().enumerate() {
        let rp = http_path.index(i);
        let mp = rp.key("match");
        for (j, m) in route.r#match.or_empty().iter().enumerate() {
            let keys = m
                .headers
                .iter()
                .flatten()
                .chain(m.without_headers.iter().flatten())
                .map(|(k, _)| k);
            for key in keys {
                if key.starts_with(JWT_CLAIM_PREFIX) {
                    r.error(
                        &mp.index(j),
                        format!("JWT claim based routing (key: {key}) is only supported for gateway, found no gateways: {gateways:?}"),
                    );
                }
            }
        }
    }
}

fn http_route(r: &mut Report, rp: &Path<'_>, route: &HttpRoute, in_delegate: bool) {
    if route.delegate.is_some() {
        if in_delegate {
            r.error(&rp.key("delegate"), "delegate HTTP route cannot contain delegate");
        }
        let name = route.name.as_deref().unwrap_or("");
        if route.redirect.is_some() {
            r.error(
                &rp.key("redirect"),
                format!("root HTTP route {name} must not specify redirect"),
            );
        }
        if route.route.is_some() {
            r.error(
                &rp.key("route"),
                format!("root HTTP route {name} must not specify route"),
            );
        }
        if let Some(d) = &route.delegate {
            let dp = rp.key("delegate");
            match d.name.as_deref() {
                None | Some("") => r.error(&dp.key("name"), "delegate name cannot be empty"),
                Some(n) if !common::is_dns1123_label(n) => {
                    r.error(&dp.key("name"), format!("delegate name {n} is invalid"));
                }
                Some(_) => {}
            }
            if let Some(ns) = d.namespace.as_deref().filter(|ns| !ns.is_empty())
                && !common::is_dns1123_label(ns)
            {
                r.error(
                    &dp.key("namespace"),
                    format!("delegate namespace {ns} is invalid"),
                );
            }
        }
        return;
    }
    let has_route = !route.route.or_empty().is_empty();
    if route.redirect.is_some() {
        if has_route {
            r.error(rp, "HTTP route cannot contain both route and redirect");
        }
        if route.fault.is_some() {
            r.error(rp, "HTTP route cannot contain both fault and redirect");
        }
        if route.rewrite.is_some() {
            r.error(rp, "HTTP route rule cannot contain both rewrite and redirect");
        }
        if route.direct_response.is_some() {
            r.error(rp, "HTTP route cannot contain both direct_response and redirect");
        }
    } else if route.direct_response.is_some() {
        if has_route {
            r.error(rp, "HTTP route cannot contain both route and direct_response");
        }
        if route.fault.is_some() {
            r.error(rp, "HTTP route cannot contain both fault and direct_response");
        }
        if route.rewrite.is_some() {
            r.error(
                rp,
                "HTTP route rule cannot contain both rewrite and direct_response",
            );
        }
    } else if !has_route {
        r.error(rp, "HTTP route, redirect or direct_response is required");
    }
    if route.mirror.is_some() && route.mirrors.is_some() {
        r.error(rp, "HTTP route cannot contain both mirror and mirrors");
    }

    let mp = rp.key("match");
    for (j, m) in route.r#match.or_empty().iter().enumerate() {
        http_match(r, &mp.index(j), m);
    }
    if let Some(h) = &route.headers {
        header_operations(r, &rp.key("headers"), h);
    }
    authority_set_once(r, rp, route);
    if let Some(cors) = &route.cors_policy {
        cors_policy(r, &rp.key("corsPolicy"), cors);
    }
    if let Some(fault) = &route.fault {
        fault_injection(r, &rp.key("fault"), fault);
    }
    mirrors(r, rp, route);
    if let Some(redirect) = &route.redirect {
        redirect_rules(r, &rp.key("redirect"), redirect, route.r#match.or_empty());
    }
    if let Some(dr) = &route.direct_response {
        let dp = rp.key("directResponse");
        let status = dr.status.unwrap_or(0);
        if !(200..=600).contains(&status) {
            r.error(
                &dp.key("status"),
                format!("invalid direct response status {status}, must be between 200 and 599"),
            );
        }
        if let Some(body) = &dr.body {
            let len = body
                .string
                .as_ref()
                .or(body.bytes.as_ref())
                .map_or(0, String::len);
            if len > 1 << 20 {
                r.error(
                    &dp.key("body"),
                    "large direct_responses may impact control plane performance, must be less than 1MB",
                );
            } else if len > 100 << 10 {
                r.warn(
                    &dp.key("body"),
                    "large direct_responses may impact control plane performance",
                );
            }
        }
    }
    if let Some(retries) = &route.retries {
        retry_policy(r, &rp.key("retries"), retries);
    }
    if let Some(rewrite) = &route.rewrite {
        rewrite_rules(r, &rp.key("rewrite"), rewrite);
    }
    if let Some(t) = &route.timeout {
        common::duration(r, &rp.key("timeout"), t);
    }
    http_route_destinations(r, &rp.key("route"), route.route.or_empty());
}

fn http_match(r: &mut Report, p: &Path<'_>, m: &HttpMatchRequest) {
    for (field, map) in [("headers", &m.headers), ("withoutHeaders", &m.without_headers)] {
        let fp = p.key(field);
        for (name, sm) in map.iter().flatten() {
            let hp = fp.key(name);
            if let Err(e) = header_name_or_jwt_claim(name) {
                r.error(&hp, e);
            }
            string_match(r, &hp, sm, field, false);
        }
    }
    let qp = p.key("queryParams");
    for (name, sm) in m.query_params.iter().flatten() {
        string_match(r, &qp.key(name), sm, "queryParams", false);
    }
    if let Some(uri) = &m.uri {
        string_match(r, &p.key("uri"), uri, "uri", true);
    }
    for (field, sm) in [
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ] {
        if let Some(sm) = sm {
            string_match(r, &p.key(field), sm, field, false);
        }
    }
    if let Some(port) = m.port.filter(|p| *p != 0) {
        common::port(r, &p.key("port"), i64::from(port));
    }
    common::labels(r, &p.key("sourceLabels"), m.source_labels.or_empty());
    common::gateway_names(r, &p.key("gateways"), m.gateways.or_empty());
    if let Some(ns) = m.source_namespace.as_deref().filter(|s| !s.is_empty())
        && !common::is_dns1123_label(ns)
    {
        r.error(
            &p.key("sourceNamespace"),
            format!("sourceNamespace match {ns} is invalid"),
        );
    }
}

fn header_name_or_jwt_claim(name: &str) -> Result<(), String> {
    if name.starts_with(JWT_CLAIM_PREFIX) && name.len() > JWT_CLAIM_PREFIX.len() {
        return Ok(());
    }
    if matches!(name, ":method" | ":scheme" | ":authority" | ":path" | ":status")
        || common::is_http_token(name)
    {
        return Ok(());
    }
    Err(format!("header name {name} is not a valid header name"))
}

fn string_match(r: &mut Report, p: &Path<'_>, sm: &StringMatch, whe: &str, allow_empty_prefix: bool) {
    if !allow_empty_prefix && sm.prefix.as_deref() == Some("") {
        r.error(p, format!("{whe:?}: prefix string match should not be empty"));
    }
    if let Some(re) = &sm.regex
        && let Err(e) = common::regex(re)
    {
        r.error(p, e.replacen(&format!("{re:?}"), &format!("{whe:?}"), 1));
    }
}

fn header_value_ok(value: &str) -> bool {
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return false;
    }
    value.replace("%%", "").matches('%').count().is_multiple_of(2)
}

fn header_operations(r: &mut Report, p: &Path<'_>, headers: &Headers) {
    for (dir, ops) in [("request", &headers.request), ("response", &headers.response)] {
        let Some(ops) = ops else { continue };
        let dp = p.key(dir);
        header_ops(r, &dp, ops, dir == "request");
    }
}

fn header_ops(r: &mut Report, p: &Path<'_>, ops: &HeaderOperations, request: bool) {
    for (verb, map) in [("set", &ops.set), ("add", &ops.add)] {
        let vp = p.key(verb);
        for (name, value) in map.iter().flatten() {
            let hp = vp.key(name);
            check_header_name(r, &hp, name, request);
            if !header_value_ok(value) {
                r.error(&hp, format!("header value configuration {value} is invalid"));
            }
        }
    }
    let rp = p.key("remove");
    for (i, name) in ops.remove.or_empty().iter().enumerate() {
        check_header_name(r, &rp.index(i), name, false);
    }
}

fn check_header_name(r: &mut Report, p: &Path<'_>, name: &str, allow_authority: bool) {
    let lower = name.to_ascii_lowercase();
    if name.is_empty() {
        r.error(p, format!("invalid header {name:?}: header name cannot be empty"));
    } else if lower.starts_with(':') && !(allow_authority && lower == ":authority") {
        r.error(
            p,
            format!("invalid header {name:?}: header cannot have \":\" prefix"),
        );
    } else if lower == "host" && !allow_authority {
        r.error(p, format!("invalid header {name:?}: cannot set Host header"));
    }
}

fn authority_set_once(r: &mut Report, rp: &Path<'_>, route: &HttpRoute) {
    let mut seen: Option<String> = route.rewrite.as_ref().and_then(|rw| rw.authority.clone());
    let request = route.headers.as_ref().and_then(|h| h.request.as_ref());
    for map in request.into_iter().flat_map(|ops| [&ops.set, &ops.add]) {
        for (name, value) in map.iter().flatten() {
            if matches!(name.to_ascii_lowercase().as_str(), ":authority" | "host") {
                if let Some(have) = &seen {
                    r.error(rp, format!("authority header cannot be set multiple times: have {have:?}, attempting to set {value:?}"));
                }
                seen = Some(value.clone());
            }
        }
    }
}

fn cors_policy(r: &mut Report, p: &Path<'_>, cors: &CorsPolicy) {
    let op = p.key("allowOrigins");
    for (i, origin) in cors.allow_origins.or_empty().iter().enumerate() {
        let ip = op.index(i);
        let value = origin
            .exact
            .as_deref()
            .or(origin.prefix.as_deref())
            .or(origin.regex.as_deref());
        if value.is_none_or(str::is_empty) {
            r.error(
                &ip,
                format!(
                    "'{}' is not a valid match type for CORS allow origins",
                    serde_json::to_string(origin).unwrap_or_default()
                ),
            );
        }
        if let Some(re) = origin.regex.as_deref().filter(|s| !s.is_empty())
            && let Err(e) = common::regex(re)
        {
            r.error(&ip, e);
        }
    }
    let mp = p.key("allowMethods");
    for (i, m) in cors.allow_methods.or_empty().iter().enumerate() {
        if !CORS_METHODS.contains(&m.as_str()) {
            r.error(&mp.index(i), format!("{m:?} is not a supported HTTP method"));
        }
    }
    for (field, list) in [
        ("allowHeaders", &cors.allow_headers),
        ("exposeHeaders", &cors.expose_headers),
    ] {
        let fp = p.key(field);
        for (i, h) in list.or_empty().iter().enumerate() {
            if h != "*" && !common::is_http_token(h) {
                r.error(&fp.index(i), format!("{h:?} is not a valid HTTP header name"));
            }
        }
    }
    if let Some(max_age) = &cors.max_age {
        let mp = p.key("maxAge");
        common::duration(r, &mp, max_age);
        if max_age.get().is_some_and(|d| d.subsec_nanos() != 0) {
            r.error(&mp, "max_age duration is accurate only to seconds precision");
        }
    }
}

fn fault_percentage(r: &mut Report, p: &Path<'_>, value: f64) {
    if value != 0.0 && !(0.0001..=100.0).contains(&value) {
        r.error(
            p,
            format!("percentage {value} is neither 0.0, nor in range [0.0001, 100.0]"),
        );
    }
}

fn fault_injection(r: &mut Report, p: &Path<'_>, fault: &HttpFaultInjection) {
    if fault.abort.is_none() && fault.delay.is_none() {
        r.error(p, "HTTP fault injection must have an abort and/or a delay");
    }
    if let Some(abort) = &fault.abort {
        let ap = p.key("abort");
        if let Some(pct) = &abort.percentage {
            fault_percentage(r, &ap.key("percentage"), pct.value.unwrap_or(0.0));
        }
        if let Some(status) = abort.http_status {
            if !(200..=600).contains(&status) {
                r.error(
                    &ap.key("httpStatus"),
                    format!("HTTP status {status} is not in range 200-599"),
                );
            }
        } else if let Some(grpc) = &abort.grpc_status {
            if !GRPC_STATUS_CODES.contains(&grpc.as_str()) {
                r.error(
                    &ap.key("grpcStatus"),
                    format!("gRPC status {grpc:?} is not supported. See https://github.com/grpc/grpc/blob/master/doc/statuscodes.md"),
                );
            }
        } else if abort.http2_error.is_some() {
            r.error(
                &ap.key("http2Error"),
                "HTTP/2 abort fault injection not supported yet",
            );
        } else {
            r.warn(&ap, "abort configured, but error type not set");
        }
    }
    if let Some(delay) = &fault.delay {
        let dp = p.key("delay");
        if let Some(pct) = &delay.percentage {
            fault_percentage(r, &dp.key("percentage"), pct.value.unwrap_or(0.0));
        }
        if let Some(percent) = delay.percent
            && !(0..=100).contains(&percent)
        {
            r.error(
                &dp.key("percent"),
                format!("percentage {percent} is not in range 0..100"),
            );
        }
        if let Some(d) = &delay.fixed_delay {
            common::duration(r, &dp.key("fixedDelay"), d);
        } else if delay.exponential_delay.is_some() {
            r.error(&dp.key("exponentialDelay"), "exponentialDelay not supported yet");
        }
    }
}

fn mirrors(r: &mut Report, rp: &Path<'_>, route: &HttpRoute) {
    if let Some(pct) = route.mirror_percent {
        r.warn(
            &rp.key("mirrorPercent"),
            "using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead",
        );
        if pct > 100 {
            r.error(
                &rp.key("mirrorPercent"),
                format!("mirror_percent must have a max value of 100 (it has {pct})"),
            );
        }
    }
    if let Some(pct) = route.mirror_percentage.as_ref().and_then(|p| p.value) {
        let p = rp.key("mirrorPercentage");
        if pct > 100.0 {
            r.error(
                &p,
                format!("mirror_percentage must have a max value of 100 (it has {pct:.6})"),
            );
        }
        if pct < 0.0 {
            r.error(
                &p,
                format!("mirror_percentage must have a min value of 0 (it has {pct:.6})"),
            );
        }
    }
    if let Some(mirror) = &route.mirror {
        destination(r, &rp.key("mirror"), mirror);
    }
    let mp = rp.key("mirrors");
    for (i, m) in route.mirrors.or_empty().iter().enumerate() {
        let p = mp.index(i);
        match &m.destination {
            None => r.error(&p, "destination is required for mirrors"),
            Some(d) => destination(r, &p.key("destination"), d),
        }
        if let Some(pct) = m.percentage.as_ref().and_then(|p| p.value)
            && !(0.0..=100.0).contains(&pct)
        {
            r.error(
                &p.key("percentage"),
                format!("mirror percentage must be in range 0..100 (it has {pct:.6})"),
            );
        }
    }
}

fn redirect_rules(r: &mut Report, p: &Path<'_>, redirect: &HttpRedirect, matches: &[HttpMatchRequest]) {
    if redirect.uri.is_some() && redirect.prefix_rewrite.is_some() {
        r.error(p, "redirect may only specify one of uri or prefix_rewrite");
    }
    if redirect.prefix_rewrite.is_some()
        && matches
            .iter()
            .any(|m| m.uri.as_ref().is_some_and(|u| u.prefix.is_none()))
    {
        r.error(
            p,
            "redirect prefix_rewrite requires all URI matches to use prefix match type",
        );
    }
    let nothing = [
        redirect.uri.as_deref(),
        redirect.authority.as_deref(),
        redirect.scheme.as_deref(),
        redirect.prefix_rewrite.as_deref(),
    ]
    .iter()
    .all(|v| v.is_none_or(str::is_empty))
        && redirect.port.is_none()
        && redirect.derive_port.is_none();
    if nothing {
        r.error(p, "redirect must specify URI, authority, scheme, or port");
    }
    if let Some(code) = redirect.redirect_code
        && !(300..=399).contains(&code)
    {
        r.error(
            &p.key("redirectCode"),
            format!("{code} is not a valid redirect code, must be 3xx"),
        );
    }
    if let Some(scheme) = redirect.scheme.as_deref()
        && !scheme.is_empty()
        && scheme != "http"
        && scheme != "https"
    {
        r.error(
            &p.key("scheme"),
            "invalid redirect scheme, must be \"http\" or \"https\"",
        );
    }
    if let Some(port) = redirect.port {
        common::port(r, &p.key("port"), i64::from(port));
    }
}

/// `ValidateHTTPRetry` (also used for MeshConfig's default retry policy).
pub fn retry_policy(r: &mut Report, p: &Path<'_>, retries: &HttpRetry) {
    let attempts = retries.attempts.unwrap_or(0);
    if attempts < 0 {
        r.error(&p.key("attempts"), "attempts cannot be negative");
    }
    let configured = retries.per_try_timeout.is_some()
        || retries.retry_on.as_deref().is_some_and(|s| !s.is_empty())
        || retries.retry_remote_localities.is_some();
    if attempts == 0 && configured {
        r.error(
            p,
            "http retry policy configured when attempts are set to 0 (disabled)",
        );
    }
    if let Some(d) = &retries.per_try_timeout {
        common::duration(r, &p.key("perTryTimeout"), d);
    }
    if let Some(d) = &retries.backoff {
        common::duration(r, &p.key("backoff"), d);
    }
    if let Some(retry_on) = retries.retry_on.as_deref().filter(|s| !s.is_empty()) {
        let rp = p.key("retryOn");
        for policy in retry_on.split(',') {
            let code = policy.parse::<i64>().ok();
            if let Some(c) = code {
                if !is_known_http_status(c) {
                    r.error(&rp, format!("{c} is not a valid HTTP status code"));
                }
            } else if !RETRY_ON_POLICIES.contains(&policy) {
                r.error(&rp, format!("{policy:?} is not a valid retryOn policy"));
            }
        }
    }
}

fn rewrite_rules(r: &mut Report, p: &Path<'_>, rewrite: &HttpRewrite) {
    let uri = rewrite.uri.as_deref().is_some_and(|s| !s.is_empty());
    let authority = rewrite.authority.as_deref().is_some_and(|s| !s.is_empty());
    if uri && rewrite.uri_regex_rewrite.is_some() {
        r.error(p, "rewrite may only contain one of URI or UriRegexRewrite");
    }
    if !uri && !authority && rewrite.uri_regex_rewrite.is_none() {
        r.error(p, "rewrite must specify at least one of URI, UriRegexRewrite, or authority. Only one of URI or UriRegexRewrite may be specified");
    }
    if let Some(rx) = &rewrite.uri_regex_rewrite {
        let rp = p.key("uriRegexRewrite");
        match (rx.r#match.as_deref(), rx.rewrite.as_deref()) {
            (Some(m), Some(_)) if !m.is_empty() => {
                if let Err(e) = common::regex(m) {
                    r.error(&rp.key("match"), e);
                }
            }
            _ => r.error(
                &rp,
                "UriRegexRewrite requires both Rewrite and Match fields to be specified",
            ),
        }
    }
}

fn destination(r: &mut Report, p: &Path<'_>, d: &Destination) {
    let host = d.host.as_deref().unwrap_or("");
    if host == "*" {
        r.error(&p.key("host"), format!("invalid destination host {host}"));
        return;
    }
    if let Err(e) = common::wildcard_domain(host) {
        r.error(&p.key("host"), e);
    }
    if let Some(subset) = d.subset.as_deref() {
        if subset.is_empty() {
            r.error(&p.key("subset"), "subset name cannot be empty");
        } else if !common::is_dns1123_label(subset) {
            r.error(&p.key("subset"), format!("subset name is invalid: {subset}"));
        }
    }
    if let Some(port) = d.port.as_ref().and_then(|p| p.number) {
        common::port(r, &p.key("port").key("number"), i64::from(port));
    }
}

fn http_route_destinations(r: &mut Report, p: &Path<'_>, routes: &[HttpRouteDestination]) {
    weighted_destinations(
        r,
        p,
        routes
            .iter()
            .map(|rd| (&rd.destination, rd.weight, rd.headers.as_ref())),
    );
}

fn route_destinations(r: &mut Report, p: &Path<'_>, routes: &[RouteDestination]) {
    weighted_destinations(r, p, routes.iter().map(|rd| (&rd.destination, rd.weight, None)));
}

/// `validateHTTPRouteDestinations` / `validateRouteDestinations`: each destination, its header
/// operations (HTTP only), non-negative weights, and some weight when there are several.
fn weighted_destinations<'a>(
    r: &mut Report,
    p: &Path<'_>,
    routes: impl ExactSizeIterator<Item = (&'a Option<Destination>, Option<i32>, Option<&'a Headers>)>,
) {
    let count = routes.len();
    let mut total: i64 = 0;
    for (i, (dest, weight, headers)) in routes.enumerate() {
        let dp = p.index(i);
        match dest {
            None => r.error(&dp, "destination is required"),
            Some(d) => destination(r, &dp.key("destination"), d),
        }
        if let Some(h) = headers {
            header_operations(r, &dp.key("headers"), h);
        }
        let w = weight.unwrap_or(0);
        if w < 0 {
            r.error(&dp.key("weight"), format!("weight {w} < 0"));
        }
        total += i64::from(w);
    }
    if count > 1 && total == 0 {
        r.error(p, "total destination weight = 0");
    }
}

fn tls_route(r: &mut Report, rp: &Path<'_>, route: &TlsRoute, hosts: &[String]) {
    let matches = route.r#match.or_empty();
    let mp = rp.key("match");
    if matches.is_empty() {
        r.error(&mp, "TLS route must have at least one match condition");
    }
    for (j, m) in matches.iter().enumerate() {
        let p = mp.index(j);
        let sni = m.sni_hosts.or_empty();
        let sp = p.key("sniHosts");
        if sni.is_empty() {
            r.error(&sp, "TLS match must have at least one SNI host");
        }
        for (k, h) in sni.iter().enumerate() {
            let hp = sp.index(k);
            if let Err(e) = common::wildcard_domain(h) {
                if common::is_ip(h) {
                    r.warn(&hp, format!("using an IP address ({h:?}) goes against SNI spec and most clients do not support this"));
                } else {
                    r.error(&hp, e);
                }
            }
            if !hosts.iter().any(|vh| host::subset_of(h, vh)) {
                r.error(
                    &hp,
                    format!(
                        "SNI host {h:?} is not a compatible subset of any of the virtual service hosts: [{}]",
                        hosts.join(", ")
                    ),
                );
            }
        }
        for (k, s) in m.destination_subnets.or_empty().iter().enumerate() {
            if let Err(e) = common::ip_subnet(s) {
                r.error(&p.key("destinationSubnets").index(k), e);
            }
        }
        if let Some(port) = m.port {
            common::port(r, &p.key("port"), i64::from(port));
        }
        common::labels(r, &p.key("sourceLabels"), m.source_labels.or_empty());
        common::gateway_names(r, &p.key("gateways"), m.gateways.or_empty());
    }
    if route.route.or_empty().is_empty() {
        r.error(&rp.key("route"), "TLS route is required");
    }
    route_destinations(r, &rp.key("route"), route.route.or_empty());
}

fn l4_match(r: &mut Report, p: &Path<'_>, m: &L4MatchAttributes) {
    for (k, s) in m.destination_subnets.or_empty().iter().enumerate() {
        if let Err(e) = common::ip_subnet(s) {
            r.error(&p.key("destinationSubnets").index(k), e);
        }
    }
    if let Some(s) = m.source_subnet.as_deref().filter(|s| !s.is_empty())
        && let Err(e) = common::ip_subnet(s)
    {
        r.error(&p.key("sourceSubnet"), e);
    }
    if let Some(port) = m.port {
        common::port(r, &p.key("port"), i64::from(port));
    }
    common::labels(r, &p.key("sourceLabels"), m.source_labels.or_empty());
    common::gateway_names(r, &p.key("gateways"), m.gateways.or_empty());
}

fn rule_id(name: Option<&str>, index: usize) -> String {
    match name {
        Some(n) if !n.is_empty() => format!("{n:?}"),
        _ => format!("#{index}"),
    }
}

/// Unreachable and ineffective rules (IST0130 / IST0131): exact duplicate matches and rules
/// after a catch-all.
fn unreachable_http_rules(r: &mut Report, http_path: &Path<'_>, routes: &[HttpRoute]) {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut catch_all: Option<usize> = None;
    for (n, route) in routes.iter().enumerate() {
        let rp = http_path.index(n);
        let id = rule_id(route.name.as_deref(), n);
        let matches = route.r#match.or_empty();
        if catch_all.is_some() {
            let reason = if matches.is_empty() {
                "only the last rule can have no matches"
            } else {
                "route without matches defined before"
            };
            r.warn(&rp, format!("virtualService rule {id} not used ({reason})"));
        }
        if matches.is_empty() {
            catch_all.get_or_insert(n);
            continue;
        }
        let mut duplicates = 0;
        for (j, m) in matches.iter().enumerate() {
            let mut key_match = m.clone();
            key_match.name = None;
            let key = serde_json::to_string(&key_match).unwrap_or_default();
            match seen.get(&key) {
                Some(&dup) => {
                    duplicates += 1;
                    let match_id = rule_id(m.name.as_deref(), j);
                    let dup_id = rule_id(routes[dup].name.as_deref(), dup);
                    r.warn(
                        &rp.key("match").index(j),
                        format!("virtualService rule {id} match {match_id} is not used (duplicate/overlapping match in rule {dup_id})"),
                    );
                }
                None => {
                    seen.insert(key, n);
                }
            }
        }
        if duplicates == matches.len() {
            r.warn(
                &rp,
                format!("virtualService rule {id} not used (all matches used by prior rules)"),
            );
        }
    }
}

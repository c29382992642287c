//! HTTP routes (`httproute.go`): VirtualService `http` routes as Envoy routes, default routes for
//! services without a VirtualService, and the `allow_any`/`block_all` catch-all virtual host.

use std::collections::{BTreeSet, HashMap};

use base64::Engine as _;
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, HeaderValue, HeaderValueOption, RuntimeFractionalPercent, data_source, header_value_option,
};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction, RetryPolicy, Route,
    RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster, header_matcher,
    query_parameter_matcher, redirect_action, retry_policy, route, route_action, route_match,
    weighted_cluster,
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{FaultDelay, fault_delay};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy as EnvoyCors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{FaultAbort, HttpFault, fault_abort};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::extensions::retry::priority::previous_priorities::v3::PreviousPrioritiesConfig;
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatchAndSubstitute, StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::Any;
use weir_api::Resource;
use weir_api::host;
use weir_api::types::OrEmpty;
use weir_api::types::networking::{
    CorsPolicy, Destination, HeaderOperations, Headers, HttpFaultInjection, HttpMatchRequest, HttpRetry,
    HttpRoute, UnmatchedPreflights, VirtualService,
};
use weir_model::registry::Protocol;
use weir_model::registry::Service;
use weir_model::view::BoundVirtualService;
use weir_model::{Proxy, ProxyView};

use super::Inputs;
use super::cluster::{ClusterName, PASSTHROUGH, is_http};
use super::util::{any, api_duration, boolv, percent, regex, string_matcher as api_string_matcher, u32v};

/// Name of Envoy's fault filter (also the key of its per-route config).
pub const FAULT_FILTER: &str = "envoy.filters.http.fault";
/// Name of Envoy's CORS filter.
pub const CORS_FILTER: &str = "envoy.filters.http.cors";
/// Name of Envoy's router filter.
pub const ROUTER_FILTER: &str = "envoy.filters.http.router";

/// Where routes are generated for.
#[derive(Clone, Copy)]
pub struct RouteContext<'a> {
    /// The proxy (source labels and namespace of matches).
    pub proxy: &'a Proxy,
    /// The gateway (`namespace/name`) the routes are for; `None` for the mesh (sidecars).
    pub gateway: Option<&'a str>,
    /// The port of the listener: `match.port` is compared with it, and a destination without a
    /// port on a multi-port service goes to it.
    pub port: u32,
    /// Only what gRPC's xDS client understands (no CORS, no mirrors, gRPC retry codes).
    pub grpc: bool,
}

/// Whether a port carries HTTP for route generation (declared HTTP or auto-detected).
pub fn serves_http(protocol: Protocol) -> bool {
    is_http(protocol) || protocol == Protocol::Auto
}

/// The sidecar's outbound route configurations, one per HTTP port number, named `"<port>"`.
pub fn sidecar_routes(inputs: &Inputs<'_>, view: &ProxyView) -> Vec<RouteConfiguration> {
    let index = MeshRoutes::new(view);
    let mut ports: BTreeSet<u32> = BTreeSet::new();
    for s in &view.services {
        ports.extend(
            s.ports
                .iter()
                .filter(|p| serves_http(p.protocol))
                .map(|p| p.number),
        );
    }
    ports
        .into_iter()
        .map(|port| {
            let ctx = RouteContext {
                proxy: &view.proxy,
                gateway: None,
                port,
                grpc: false,
            };
            let mut seen: BTreeSet<String> = BTreeSet::from(["*".to_string()]);
            let mut virtual_hosts: Vec<VirtualHost> = view
                .services
                .iter()
                .filter(|s| {
                    s.ports
                        .iter()
                        .any(|p| p.number == port && serves_http(p.protocol))
                })
                .filter_map(|s| {
                    let domains: Vec<String> = service_domains(inputs, view, s, port)
                        .into_iter()
                        .filter(|d| seen.insert(d.clone()))
                        .collect();
                    if domains.is_empty() {
                        return None;
                    }
                    Some(VirtualHost {
                        name: format!("{}:{port}", s.hostname),
                        domains,
                        routes: service_routes(inputs, view, &index, s, &ctx),
                        include_request_attempt_count: true,
                        ..Default::default()
                    })
                })
                .collect();
            virtual_hosts.sort_by(|a, b| a.name.cmp(&b.name));
            virtual_hosts.push(catch_all(view));
            RouteConfiguration {
                name: port.to_string(),
                virtual_hosts,
                validate_clusters: Some(boolv(false)),
                ..Default::default()
            }
        })
        .collect()
}

/// The routes for one service: its VirtualService's, or the default route.
pub fn service_routes(
    inputs: &Inputs<'_>,
    view: &ProxyView,
    index: &MeshRoutes<'_>,
    s: &Service,
    ctx: &RouteContext<'_>,
) -> Vec<Route> {
    match index.for_host(&s.hostname) {
        Some(vs) => virtual_service_routes(inputs, view, vs, ctx),
        None => vec![default_route(
            inputs,
            &ClusterName::outbound(ctx.port, "", &s.hostname).to_string(),
            ctx.grpc,
        )],
    }
}

/// The mesh VirtualServices of a view indexed by host, to find the one claiming a service
/// without scanning them all.
pub struct MeshRoutes<'v> {
    exact: std::collections::HashMap<&'v str, &'v BoundVirtualService>,
    wildcard: Vec<(&'v str, &'v BoundVirtualService)>,
}

impl<'v> MeshRoutes<'v> {
    /// Indexes the view's VirtualServices bound to the mesh (oldest first wins a host).
    pub fn new(view: &'v ProxyView) -> Self {
        let mut exact = std::collections::HashMap::new();
        let mut wildcard = Vec::new();
        for vs in view
            .virtual_services
            .iter()
            .filter(|vs| vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh"))
        {
            for h in &vs.hosts {
                if host::is_wildcard(h) {
                    wildcard.push((h.as_str(), vs));
                } else {
                    exact.entry(h.as_str()).or_insert(vs);
                }
            }
        }
        MeshRoutes { exact, wildcard }
    }

    /// The mesh VirtualService that claims `hostname` (exactly, else by wildcard).
    pub fn for_host(&self, hostname: &str) -> Option<&'v BoundVirtualService> {
        self.exact.get(hostname).copied().or_else(|| {
            self.wildcard
                .iter()
                .find(|(h, _)| host::matches(h, hostname))
                .map(|(_, vs)| *vs)
        })
    }
}

/// `generateVirtualHostDomains`: the host, `host:port`, the short forms of a Kubernetes name
/// seen from the proxy's namespace, and the service address.
fn service_domains(inputs: &Inputs<'_>, view: &ProxyView, s: &Service, port: u32) -> Vec<String> {
    let mut names = vec![s.hostname.clone()];
    let k8s_suffix = format!(".svc.{}", inputs.domain_suffix);
    if let Some(base) = s.hostname.strip_suffix(&k8s_suffix)
        && let Some((name, ns)) = base.split_once('.')
    {
        if ns == view.proxy.namespace {
            names.push(name.to_string());
        }
        names.push(format!("{name}.{ns}"));
        names.push(format!("{name}.{ns}.svc"));
    }
    if let Some(weir_model::registry::ServiceAddress::Ip(ip)) = &s.address {
        names.push(ip.to_string());
    }
    let mut out = Vec::with_capacity(names.len() * 2);
    for n in names {
        out.push(format!("{n}:{port}"));
        out.push(n);
    }
    out
}

/// The catch-all virtual host: `allow_any` to PassthroughCluster, or `block_all` answering 502.
pub fn catch_all(view: &ProxyView) -> VirtualHost {
    use weir_api::types::networking::OutboundMode;
    let (name, action) = match view.outbound_mode {
        OutboundMode::RegistryOnly => (
            "block_all",
            route::Action::DirectResponse(DirectResponseAction {
                status: 502,
                ..Default::default()
            }),
        ),
        OutboundMode::AllowAny | OutboundMode::AllowAnyDynamicDns => (
            "allow_any",
            route::Action::Route(RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(PASSTHROUGH.into())),
                timeout: Some(super::util::duration(std::time::Duration::ZERO)),
                ..Default::default()
            }),
        ),
    };
    VirtualHost {
        name: name.into(),
        domains: vec!["*".into()],
        routes: vec![Route {
            name: name.into(),
            r#match: Some(prefix_match("/")),
            action: Some(action),
            ..Default::default()
        }],
        include_request_attempt_count: true,
        ..Default::default()
    }
}

fn prefix_match(prefix: &str) -> RouteMatch {
    RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Prefix(prefix.into())),
        ..Default::default()
    }
}

/// The route of a service without a VirtualService: everything to its cluster, no timeout,
/// the mesh's default retry policy.
pub fn default_route(inputs: &Inputs<'_>, cluster: &str, grpc: bool) -> Route {
    Route {
        name: "default".into(),
        r#match: Some(prefix_match("/")),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.into())),
            timeout: Some(super::util::duration(std::time::Duration::ZERO)),
            retry_policy: if grpc {
                None
            } else {
                retry_policy(&inputs.mesh.default_http_retry_policy, false)
            },
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn spec(vs: &BoundVirtualService) -> Option<&VirtualService> {
    match vs.resource.as_ref() {
        Resource::VirtualService(o) => o.spec.as_ref(),
        _ => None,
    }
}

/// The Envoy routes of a VirtualService's `http` section for one listener port.
pub fn virtual_service_routes(
    inputs: &Inputs<'_>,
    view: &ProxyView,
    vs: &BoundVirtualService,
    ctx: &RouteContext<'_>,
) -> Vec<Route> {
    let Some(spec) = spec(vs) else { return Vec::new() };
    let mut out = Vec::new();
    for http in spec.http.or_empty() {
        if let Some(d) = &http.delegate {
            let ns = d
                .namespace
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| vs.key.namespace.clone());
            let Some(delegate) = view.delegates.get(&format!("{ns}/{}", d.name.or_empty())) else {
                continue;
            };
            let Some(dspec) = spec_of(delegate) else { continue };
            for inner in dspec.http.or_empty() {
                for m in merge_matches(http.r#match.or_empty(), inner.r#match.or_empty()) {
                    if applies(&m, ctx, vs) {
                        out.push(route_for(inputs, view, inner, Some(&m), delegate, ctx));
                    }
                }
            }
            continue;
        }
        let matches = http.r#match.or_empty();
        if matches.is_empty() {
            out.push(route_for(inputs, view, http, None, vs, ctx));
            continue;
        }
        for m in matches.iter().filter(|m| applies(m, ctx, vs)) {
            out.push(route_for(inputs, view, http, Some(m), vs, ctx));
        }
    }
    out
}

fn spec_of(vs: &BoundVirtualService) -> Option<&VirtualService> {
    spec(vs)
}

/// Delegate matching (Istio's `mergeHTTPMatchRequests`): each delegate match is combined with each
/// root match; the delegate's conditions win where both set the same one.
fn merge_matches(root: &[HttpMatchRequest], inner: &[HttpMatchRequest]) -> Vec<HttpMatchRequest> {
    match (root.is_empty(), inner.is_empty()) {
        (true, _) => inner.to_vec(),
        (false, true) => root.to_vec(),
        (false, false) => root
            .iter()
            .flat_map(|r| {
                inner.iter().map(move |i| {
                    let mut m = i.clone();
                    m.uri = i.uri.clone().or_else(|| r.uri.clone());
                    m.method = i.method.clone().or_else(|| r.method.clone());
                    m.authority = i.authority.clone().or_else(|| r.authority.clone());
                    m.scheme = i.scheme.clone().or_else(|| r.scheme.clone());
                    m.port = i.port.or(r.port);
                    m.gateways = i.gateways.clone().or_else(|| r.gateways.clone());
                    m.source_labels = i.source_labels.clone().or_else(|| r.source_labels.clone());
                    m.source_namespace = i.source_namespace.clone().or_else(|| r.source_namespace.clone());
                    let mut headers = r.headers.clone().unwrap_or_default();
                    headers.extend(i.headers.clone().unwrap_or_default());
                    m.headers = (!headers.is_empty()).then_some(headers);
                    let mut qp = r.query_params.clone().unwrap_or_default();
                    qp.extend(i.query_params.clone().unwrap_or_default());
                    m.query_params = (!qp.is_empty()).then_some(qp);
                    m
                })
            })
            .collect(),
    }
}

/// Whether a match applies to this proxy and listener (port, gateways, source labels/namespace).
fn applies(m: &HttpMatchRequest, ctx: &RouteContext<'_>, vs: &BoundVirtualService) -> bool {
    if !port_applies(m.port, ctx.port) {
        return false;
    }
    let gateways: Vec<String> = match m.gateways.as_deref() {
        Some(g) if !g.is_empty() => g
            .iter()
            .map(|g| weir_model::view::resolve_gateway(g, &vs.key.namespace))
            .collect(),
        _ => Vec::new(),
    };
    if !gateways.is_empty() {
        let want = ctx.gateway.unwrap_or("mesh");
        if !gateways.iter().any(|g| g == want) {
            return false;
        }
    }
    if !labels_apply(m.source_labels.as_ref(), &ctx.proxy.labels) {
        return false;
    }
    if let Some(ns) = m.source_namespace.as_deref().filter(|n| !n.is_empty())
        && ns != ctx.proxy.namespace
    {
        return false;
    }
    true
}

fn header_matcher(name: &str, m: &weir_api::types::StringMatch, invert: bool) -> HeaderMatcher {
    let specifier = match api_string_matcher(m, false) {
        Some(sm) => header_matcher::HeaderMatchSpecifier::StringMatch(sm),
        // `{}` means "present" (Istio).
        None => header_matcher::HeaderMatchSpecifier::PresentMatch(true),
    };
    HeaderMatcher {
        name: name.to_string(),
        invert_match: invert,
        header_match_specifier: Some(specifier),
        ..Default::default()
    }
}

fn route_match(m: Option<&HttpMatchRequest>) -> RouteMatch {
    let Some(m) = m else { return prefix_match("/") };
    let ignore_case = m.ignore_uri_case.unwrap_or(false);
    let path_specifier = match &m.uri {
        Some(u) if u.exact.is_some() => route_match::PathSpecifier::Path(u.exact.clone().unwrap_or_default()),
        Some(u) if u.prefix.is_some() => {
            route_match::PathSpecifier::Prefix(u.prefix.clone().unwrap_or_default())
        }
        Some(u) if u.regex.is_some() => {
            route_match::PathSpecifier::SafeRegex(regex(u.regex.as_deref().unwrap_or_default()))
        }
        _ => route_match::PathSpecifier::Prefix("/".into()),
    };
    let mut headers = Vec::new();
    for (name, value) in m.headers.iter().flatten() {
        headers.push(header_matcher(name, value, false));
    }
    for (name, value) in m.without_headers.iter().flatten() {
        headers.push(header_matcher(name, value, true));
    }
    for (pseudo, value) in [
        (":method", &m.method),
        (":authority", &m.authority),
        (":scheme", &m.scheme),
    ] {
        if let Some(v) = value {
            headers.push(header_matcher(pseudo, v, false));
        }
    }
    let query_parameters = m
        .query_params
        .iter()
        .flatten()
        .map(|(name, value)| QueryParameterMatcher {
            name: name.clone(),
            query_parameter_match_specifier: Some(match api_string_matcher(value, false) {
                Some(sm) => query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(sm),
                None => query_parameter_matcher::QueryParameterMatchSpecifier::PresentMatch(true),
            }),
        })
        .collect();
    RouteMatch {
        path_specifier: Some(path_specifier),
        case_sensitive: ignore_case.then(|| boolv(false)),
        headers,
        query_parameters,
        ..Default::default()
    }
}

/// The cluster of a destination (`GetDestinationCluster`): its port, or the only port of the
/// service, or the listener's port.
pub fn destination_cluster(
    inputs: &Inputs<'_>,
    view: &ProxyView,
    d: &Destination,
    vs_namespace: &str,
    listener_port: u32,
) -> String {
    let hostname = host::resolve_short_name(d.host.or_empty(), vs_namespace, inputs.domain_suffix);
    let port = d
        .port
        .as_ref()
        .and_then(|p| p.number)
        .filter(|n| *n > 0)
        .or_else(|| {
            view.service(&hostname)
                .filter(|s| s.ports.len() == 1)
                .and_then(|s| s.ports.first())
                .map(|p| p.number)
        });
    ClusterName::outbound(port.unwrap_or(listener_port), d.subset.or_empty(), &hostname).to_string()
}

/// The weight of a destination: as written, or 1 each when no destination of the route has one
/// (they then share equally); 0 drops the destination.
pub fn effective_weight(weight: Option<i32>, none_weighted: bool) -> u32 {
    if none_weighted {
        1
    } else {
        u32::try_from(weight.unwrap_or(0)).unwrap_or(0)
    }
}

/// The clusters of weighted L4 destinations (TCP and TLS routes) with their weights.
pub fn weighted_clusters(
    inputs: &Inputs<'_>,
    view: &ProxyView,
    routes: &[weir_api::types::networking::RouteDestination],
    vs_namespace: &str,
    port: u32,
) -> Vec<(String, u32)> {
    let none_weighted = routes.iter().all(|r| r.weight.unwrap_or(0) == 0);
    routes
        .iter()
        .filter_map(|r| {
            let w = effective_weight(r.weight, none_weighted);
            (w > 0).then(|| {
                let d = r.destination.clone().unwrap_or_default();
                (destination_cluster(inputs, view, &d, vs_namespace, port), w)
            })
        })
        .collect()
}

/// Whether a match's `port` (0 or unset: any) selects the listener port `port`.
pub fn port_applies(match_port: Option<u32>, port: u32) -> bool {
    match_port.is_none_or(|p| p == 0 || p == port)
}

/// Whether a match's `sourceLabels` (unset: any) select a proxy with `labels`.
pub fn labels_apply(
    source_labels: Option<&weir_api::types::Labels>,
    labels: &weir_api::types::Labels,
) -> bool {
    source_labels.is_none_or(|want| want.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// Whether an L4 match's `gateways` (empty: the VirtualService's) include `want` (`mesh` or a
/// gateway's `namespace/name`).
pub fn match_gateways_include(gateways: Option<&Vec<String>>, vs_namespace: &str, want: &str) -> bool {
    gateways.is_none_or(|g| {
        g.is_empty()
            || g.iter()
                .any(|g| weir_model::view::resolve_gateway(g, vs_namespace) == want)
    })
}

fn header_options(ops: Option<&HeaderOperations>) -> (Vec<HeaderValueOption>, Vec<String>) {
    let Some(ops) = ops else {
        return (Vec::new(), Vec::new());
    };
    let option =
        |k: &String, v: &String, action: header_value_option::HeaderAppendAction| HeaderValueOption {
            header: Some(HeaderValue {
                key: k.clone(),
                value: v.clone(),
                ..Default::default()
            }),
            append_action: action as i32,
            ..Default::default()
        };
    let mut add: Vec<HeaderValueOption> = ops
        .set
        .iter()
        .flatten()
        .map(|(k, v)| {
            option(
                k,
                v,
                header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd,
            )
        })
        .collect();
    add.extend(
        ops.add
            .iter()
            .flatten()
            .map(|(k, v)| option(k, v, header_value_option::HeaderAppendAction::AppendIfExistsOrAdd)),
    );
    (add, ops.remove.or_empty().to_vec())
}

struct HeaderChanges {
    request_add: Vec<HeaderValueOption>,
    request_remove: Vec<String>,
    response_add: Vec<HeaderValueOption>,
    response_remove: Vec<String>,
}

fn header_changes(h: Option<&Headers>) -> HeaderChanges {
    let (request_add, request_remove) = header_options(h.and_then(|h| h.request.as_ref()));
    let (response_add, response_remove) = header_options(h.and_then(|h| h.response.as_ref()));
    HeaderChanges {
        request_add,
        request_remove,
        response_add,
        response_remove,
    }
}

fn route_for(
    inputs: &Inputs<'_>,
    view: &ProxyView,
    http: &HttpRoute,
    m: Option<&HttpMatchRequest>,
    vs: &BoundVirtualService,
    ctx: &RouteContext<'_>,
) -> Route {
    let name = match (http.name.as_deref(), m.and_then(|m| m.name.as_deref())) {
        (Some(r), Some(mn)) => format!("{r}.{mn}"),
        (Some(r), None) => r.to_string(),
        (None, Some(mn)) => mn.to_string(),
        (None, None) => String::new(),
    };
    let mut out = Route {
        name,
        r#match: Some(route_match(m)),
        ..Default::default()
    };
    let mut headers = header_changes(http.headers.as_ref());
    let mut filters: HashMap<String, Any> = HashMap::new();
    if let Some(r) = &http.redirect {
        out.action = Some(route::Action::Redirect(redirect(r)));
    } else if let Some(d) = &http.direct_response {
        out.action = Some(route::Action::DirectResponse(direct_response(d)));
    } else {
        let mut action = RouteAction::default();
        let destinations = http.route.or_empty();
        let ns = &vs.key.namespace;
        if let [only] = destinations {
            let d = only.destination.clone().unwrap_or_default();
            action.cluster_specifier = Some(route_action::ClusterSpecifier::Cluster(destination_cluster(
                inputs, view, &d, ns, ctx.port,
            )));
            let dest = header_changes(only.headers.as_ref());
            headers.request_add.extend(dest.request_add);
            headers.request_remove.extend(dest.request_remove);
            headers.response_add.extend(dest.response_add);
            headers.response_remove.extend(dest.response_remove);
        } else {
            let none_weighted = destinations.iter().all(|d| d.weight.unwrap_or(0) == 0);
            let clusters = destinations
                .iter()
                .filter_map(|d| {
                    let weight = effective_weight(d.weight, none_weighted);
                    if weight == 0 {
                        return None;
                    }
                    let h = header_changes(d.headers.as_ref());
                    let dest = d.destination.clone().unwrap_or_default();
                    Some(weighted_cluster::ClusterWeight {
                        name: destination_cluster(inputs, view, &dest, ns, ctx.port),
                        weight: Some(u32v(weight)),
                        request_headers_to_add: h.request_add,
                        request_headers_to_remove: h.request_remove,
                        response_headers_to_add: h.response_add,
                        response_headers_to_remove: h.response_remove,
                        ..Default::default()
                    })
                })
                .collect();
            action.cluster_specifier = Some(route_action::ClusterSpecifier::WeightedClusters(
                WeightedCluster {
                    clusters,
                    ..Default::default()
                },
            ));
        }
        let timeout = api_duration(http.timeout.as_ref()).unwrap_or_default();
        action.timeout = Some(timeout);
        if ctx.grpc && http.timeout.is_some() {
            action.max_stream_duration = Some(route_action::MaxStreamDuration {
                max_stream_duration: Some(timeout),
                ..Default::default()
            });
        }
        action.retry_policy = match (&http.retries, ctx.grpc) {
            (Some(r), grpc) => retry_policy(r, grpc),
            (None, false) => retry_policy(&inputs.mesh.default_http_retry_policy, false),
            (None, true) => None,
        };
        if let Some(rw) = &http.rewrite {
            if let Some(uri) = rw.uri.as_deref() {
                action.prefix_rewrite = uri.to_string();
            }
            if let Some(re) = &rw.uri_regex_rewrite {
                action.regex_rewrite = Some(RegexMatchAndSubstitute {
                    pattern: Some(regex(re.r#match.or_empty())),
                    substitution: re.rewrite.clone().unwrap_or_default(),
                });
            }
            if let Some(a) = rw.authority.as_deref().filter(|a| !a.is_empty()) {
                action.host_rewrite_specifier =
                    Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(a.into()));
            }
        }
        if !ctx.grpc {
            action.request_mirror_policies = mirrors(inputs, view, http, ns, ctx.port);
            if let Some(cors) = &http.cors_policy {
                filters.insert(CORS_FILTER.into(), any(&cors_policy(cors)));
            }
        }
        action.hash_policy = hash_policy(view, http, ns, inputs);
        out.action = Some(route::Action::Route(action));
    }
    if let Some(f) = &http.fault
        && let Some(fault) = fault(f)
    {
        filters.insert(FAULT_FILTER.into(), any(&fault));
    }
    out.typed_per_filter_config = filters;
    out.request_headers_to_add = headers.request_add;
    out.request_headers_to_remove = headers.request_remove;
    out.response_headers_to_add = headers.response_add;
    out.response_headers_to_remove = headers.response_remove;
    out
}

fn hash_policy(
    view: &ProxyView,
    http: &HttpRoute,
    ns: &str,
    inputs: &Inputs<'_>,
) -> Vec<route_action::HashPolicy> {
    let Some(first) = http.route.or_empty().first().and_then(|d| d.destination.as_ref()) else {
        return Vec::new();
    };
    let hostname = host::resolve_short_name(first.host.or_empty(), ns, inputs.domain_suffix);
    let rule = view.destination_rules.get(&hostname);
    let port = first.port.as_ref().and_then(|p| p.number).unwrap_or(0);
    let policy = super::cluster::Policy::of(rule, port, first.subset.or_empty());
    let Some(hash) = policy.load_balancer.and_then(|lb| lb.consistent_hash.as_ref()) else {
        return Vec::new();
    };
    use route_action::hash_policy::PolicySpecifier;
    let specifier = if let Some(h) = hash.http_header_name.as_deref() {
        PolicySpecifier::Header(route_action::hash_policy::Header {
            header_name: h.into(),
            ..Default::default()
        })
    } else if let Some(c) = &hash.http_cookie {
        PolicySpecifier::Cookie(route_action::hash_policy::Cookie {
            name: c.name.clone().unwrap_or_default(),
            path: c.path.clone().unwrap_or_default(),
            ttl: api_duration(c.ttl.as_ref()),
            ..Default::default()
        })
    } else if hash.use_source_ip == Some(true) {
        PolicySpecifier::ConnectionProperties(route_action::hash_policy::ConnectionProperties {
            source_ip: true,
        })
    } else if let Some(q) = hash.http_query_parameter_name.as_deref() {
        PolicySpecifier::QueryParameter(route_action::hash_policy::QueryParameter { name: q.into() })
    } else {
        return Vec::new();
    };
    vec![route_action::HashPolicy {
        policy_specifier: Some(specifier),
        terminal: false,
    }]
}

fn mirrors(
    inputs: &Inputs<'_>,
    view: &ProxyView,
    http: &HttpRoute,
    ns: &str,
    port: u32,
) -> Vec<route_action::RequestMirrorPolicy> {
    let mut out = Vec::new();
    let legacy_percent = http
        .mirror_percentage
        .as_ref()
        .and_then(|p| p.value)
        .or_else(|| http.mirror_percent.map(f64::from));
    if let Some(d) = &http.mirror {
        out.push(route_action::RequestMirrorPolicy {
            cluster: destination_cluster(inputs, view, d, ns, port),
            runtime_fraction: Some(RuntimeFractionalPercent {
                default_value: Some(percent(legacy_percent.unwrap_or(100.0))),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    for m in http.mirrors.or_empty() {
        let Some(d) = &m.destination else { continue };
        out.push(route_action::RequestMirrorPolicy {
            cluster: destination_cluster(inputs, view, d, ns, port),
            runtime_fraction: Some(RuntimeFractionalPercent {
                default_value: Some(percent(
                    m.percentage.as_ref().and_then(|p| p.value).unwrap_or(100.0),
                )),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    out
}

/// Retry codes gRPC's xDS client understands (gRFC A44).
const GRPC_RETRY_ON: [&str; 5] = [
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// An Istio retry policy as Envoy's (`retry.ConvertPolicy`); `None` for `attempts: 0`.
pub fn retry_policy(r: &HttpRetry, grpc: bool) -> Option<RetryPolicy> {
    let attempts = u32::try_from(r.attempts.unwrap_or(0)).ok().filter(|a| *a > 0)?;
    let mut retry_on: Vec<String> = Vec::new();
    let mut codes: Vec<u32> = Vec::new();
    let text = r.retry_on.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| {
        "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes".into()
    });
    for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        match token.parse::<u32>() {
            Ok(code) => codes.push(code),
            Err(_) => retry_on.push(token.to_string()),
        }
    }
    if r.retry_on.as_deref().is_none_or(str::is_empty) {
        codes.push(503);
    }
    if !codes.is_empty() && !retry_on.iter().any(|t| t == "retriable-status-codes") {
        retry_on.push("retriable-status-codes".into());
    }
    if grpc {
        retry_on.retain(|t| GRPC_RETRY_ON.contains(&t.as_str()));
        if retry_on.is_empty() {
            return None;
        }
        codes.clear();
    }
    let mut policy = RetryPolicy {
        retry_on: retry_on.join(","),
        num_retries: Some(u32v(attempts)),
        per_try_timeout: api_duration(r.per_try_timeout.as_ref()),
        retriable_status_codes: codes,
        retry_back_off: api_duration(r.backoff.as_ref()).map(|base| retry_policy::RetryBackOff {
            base_interval: Some(base),
            ..Default::default()
        }),
        ..Default::default()
    };
    if !grpc && r.retry_ignore_previous_hosts != Some(false) {
        policy.retry_host_predicate = vec![retry_policy::RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".into(),
            config_type: Some(retry_policy::retry_host_predicate::ConfigType::TypedConfig(any(
                &PreviousHostsPredicate::default(),
            ))),
        }];
        policy.host_selection_retry_max_attempts = 5;
    }
    if !grpc && r.retry_remote_localities == Some(true) {
        // Istio: retries move on to the priorities (localities) not yet tried, re-evaluated
        // every two attempts.
        policy.retry_priority = Some(retry_policy::RetryPriority {
            name: "envoy.retry_priorities.previous_priorities".into(),
            config_type: Some(retry_policy::retry_priority::ConfigType::TypedConfig(any(
                &PreviousPrioritiesConfig { update_frequency: 2 },
            ))),
        });
    }
    Some(policy)
}

fn redirect(r: &weir_api::types::networking::HttpRedirect) -> RedirectAction {
    let mut out = RedirectAction {
        host_redirect: r.authority.clone().unwrap_or_default(),
        port_redirect: r.port.unwrap_or(0),
        response_code: match r.redirect_code.unwrap_or(301) {
            302 => redirect_action::RedirectResponseCode::Found,
            303 => redirect_action::RedirectResponseCode::SeeOther,
            307 => redirect_action::RedirectResponseCode::TemporaryRedirect,
            308 => redirect_action::RedirectResponseCode::PermanentRedirect,
            _ => redirect_action::RedirectResponseCode::MovedPermanently,
        } as i32,
        ..Default::default()
    };
    if let Some(scheme) = r.scheme.as_deref().filter(|s| !s.is_empty()) {
        out.scheme_rewrite_specifier = Some(redirect_action::SchemeRewriteSpecifier::SchemeRedirect(
            scheme.into(),
        ));
    }
    if let Some(uri) = r.uri.as_deref().filter(|s| !s.is_empty()) {
        out.path_rewrite_specifier = Some(redirect_action::PathRewriteSpecifier::PathRedirect(uri.into()));
    } else if let Some(prefix) = r.prefix_rewrite.as_deref() {
        out.path_rewrite_specifier = Some(redirect_action::PathRewriteSpecifier::PrefixRewrite(
            prefix.into(),
        ));
    }
    out
}

fn direct_response(d: &weir_api::types::networking::HttpDirectResponse) -> DirectResponseAction {
    let body = d.body.as_ref().and_then(|b| {
        if let Some(s) = &b.string {
            Some(data_source::Specifier::InlineString(s.clone()))
        } else {
            b.bytes
                .as_deref()
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .map(data_source::Specifier::InlineBytes)
        }
    });
    DirectResponseAction {
        status: d.status.unwrap_or(200),
        body: body.map(|specifier| DataSource {
            specifier: Some(specifier),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn cors_policy(c: &CorsPolicy) -> EnvoyCors {
    let mut origins: Vec<StringMatcher> = c
        .allow_origins
        .or_empty()
        .iter()
        .filter_map(|m| api_string_matcher(m, false))
        .collect();
    origins.extend(c.allow_origin.or_empty().iter().map(|o| StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::Exact(o.clone())),
        ..Default::default()
    }));
    EnvoyCors {
        allow_origin_string_match: origins,
        allow_methods: c.allow_methods.or_empty().join(","),
        allow_headers: c.allow_headers.or_empty().join(","),
        expose_headers: c.expose_headers.or_empty().join(","),
        max_age: c
            .max_age
            .as_ref()
            .and_then(weir_api::types::Duration::get)
            .map(|d| d.as_secs().to_string())
            .unwrap_or_default(),
        allow_credentials: c.allow_credentials.map(boolv),
        forward_not_matching_preflights: match c.unmatched_preflights {
            Some(UnmatchedPreflights::Ignore) => Some(boolv(false)),
            Some(UnmatchedPreflights::Forward) => Some(boolv(true)),
            _ => None,
        },
        filter_enabled: Some(RuntimeFractionalPercent {
            default_value: Some(percent(100.0)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// gRPC status names (in code order, as the API accepts them) as codes; numbers are taken as is.
fn grpc_code(name: &str) -> Option<u32> {
    use weir_api::validate::virtual_service::GRPC_STATUS_CODES;
    name.parse().ok().or_else(|| {
        GRPC_STATUS_CODES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))
            .and_then(|i| u32::try_from(i).ok())
    })
}

fn fault_percent(percentage: Option<&weir_api::types::Percent>, legacy: Option<i32>) -> f64 {
    percentage
        .and_then(|p| p.value)
        .or_else(|| legacy.filter(|p| *p > 0).map(f64::from))
        .unwrap_or(100.0)
}

/// The per-route fault filter config of an Istio fault (`translateFault`).
fn fault(f: &HttpFaultInjection) -> Option<HttpFault> {
    let delay = f.delay.as_ref().and_then(|d| {
        let fixed = api_duration(d.fixed_delay.as_ref().or(d.exponential_delay.as_ref()))?;
        Some(FaultDelay {
            percentage: Some(percent(fault_percent(d.percentage.as_ref(), d.percent))),
            fault_delay_secifier: Some(fault_delay::FaultDelaySecifier::FixedDelay(fixed)),
        })
    });
    let abort = f.abort.as_ref().and_then(|a| {
        let error_type = if let Some(code) = a.http_status.and_then(|s| u32::try_from(s).ok()) {
            fault_abort::ErrorType::HttpStatus(code)
        } else {
            fault_abort::ErrorType::GrpcStatus(grpc_code(a.grpc_status.as_deref()?)?)
        };
        Some(FaultAbort {
            percentage: Some(percent(fault_percent(a.percentage.as_ref(), None))),
            error_type: Some(error_type),
            ..Default::default()
        })
    });
    (delay.is_some() || abort.is_some()).then(|| HttpFault {
        delay,
        abort,
        ..Default::default()
    })
}

/// The HTTP filters of an outbound or gateway connection manager: fault, CORS, router.
pub fn http_filters(
    grpc: bool,
) -> Vec<envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter> {
    use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpFilter, http_filter,
    };
    let filter = |name: &str, config: Any| HttpFilter {
        name: name.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    };
    let mut out = vec![filter(FAULT_FILTER, any(&HttpFault::default()))];
    if !grpc {
        out.push(filter(
            CORS_FILTER,
            any(&envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors::default()),
        ));
    }
    out.push(filter(ROUTER_FILTER, any(&Router::default())));
    out
}

//! Proxyless gRPC (Istio's `grpcgen`): for a target `xds:///<host>:<port>` the client asks for
//! the listener `<host>:<port>`, an API listener whose connection manager names the route
//! configuration `outbound|<port>||<host>`; that holds one virtual host for the service with the
//! VirtualService's routes (or a default route); clusters are EDS.

use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use weir_model::ProxyView;

use super::Inputs;
use super::cluster::ClusterName;
use super::listener::hcm_rds;
use super::route::{MeshRoutes, RouteContext, default_route, serves_http, virtual_service_routes};
use super::util::any;

/// The API listeners: one per HTTP (or undeclared) port of every visible service.
pub fn listeners(_inputs: &Inputs<'_>, view: &ProxyView) -> Vec<Listener> {
    let mut out = Vec::new();
    for s in &view.services {
        for p in s.ports.iter().filter(|p| serves_http(p.protocol)) {
            let route = ClusterName::outbound(p.number, "", &s.hostname).to_string();
            let hcm = hcm_rds(&route, &route, true);
            out.push(Listener {
                name: format!("{}:{}", s.hostname, p.number),
                api_listener: Some(ApiListener {
                    api_listener: Some(any(&hcm)),
                }),
                ..Default::default()
            });
        }
    }
    out
}

/// The route configurations named by the API listeners.
pub fn routes(inputs: &Inputs<'_>, view: &ProxyView) -> Vec<RouteConfiguration> {
    let index = MeshRoutes::new(view);
    let mut out = Vec::new();
    for s in &view.services {
        for p in s.ports.iter().filter(|p| serves_http(p.protocol)) {
            let name = ClusterName::outbound(p.number, "", &s.hostname).to_string();
            let ctx = RouteContext {
                proxy: &view.proxy,
                gateway: None,
                port: p.number,
                grpc: true,
            };
            let routes = match index.for_host(&s.hostname) {
                Some(vs) => virtual_service_routes(inputs, view, vs, &ctx),
                None => vec![default_route(inputs, &name, true)],
            };
            out.push(RouteConfiguration {
                name,
                virtual_hosts: vec![VirtualHost {
                    name: format!("{}:{}", s.hostname, p.number),
                    domains: vec![s.hostname.clone(), format!("{}:{}", s.hostname, p.number)],
                    routes,
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
    }
    out
}

//! Targeted behaviours of the generators, each on a small folder written by the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use envoy_types::pb::envoy::config::cluster::v3::cluster;
use envoy_types::pb::envoy::config::route::v3::route;
use weir_model::registry::RegistryOptions;
use weir_model::registry::alloc::AddressAllocator;
use weir_model::{ConfigStore, FolderSource, Proxy};
use weir_xds::generator::Resources;
use weir_xds::model::Model;

fn generate(name: &str, yaml: &str, proxy: &str) -> Resources {
    let dir: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("generators")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.yaml"), yaml).unwrap();
    let mut store = ConfigStore::new();
    FolderSource::new(&dir, "default")
        .unwrap()
        .load_all(&mut store)
        .unwrap();
    assert_eq!(store.rejected().count(), 0, "test config must be valid");
    let model = Model::new(store, AddressAllocator::default(), RegistryOptions::default());
    let (_, resources) = model.generate(&Proxy::parse(proxy).unwrap());
    resources.to_json().expect("renders");
    resources
}

const HTTP_AND_TCP_ON_ONE_PORT: &str = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web}
spec: {hosts: [web.test], addresses: [10.9.0.1], location: MESH_INTERNAL, resolution: STATIC, ports: [{number: 8000, name: web}], endpoints: [{address: 10.9.1.1}]}
";

#[test]
fn an_undeclared_protocol_is_sniffed() {
    let r = generate("sniff", HTTP_AND_TCP_ON_ONE_PORT, "sidecar:default/a");
    let l = &r.listeners["10.9.0.1_8000"];
    assert_eq!(l.filter_chains.len(), 2, "a TCP chain and an HTTP chain");
    let http = l.filter_chains.iter().find(|c| {
        c.filter_chain_match
            .as_ref()
            .is_some_and(|m| m.application_protocols.contains(&"h2c".to_string()))
    });
    assert!(http.is_some(), "the HTTP chain matches sniffed HTTP");
    assert!(
        l.listener_filters
            .iter()
            .any(|f| f.name == "envoy.filters.listener.http_inspector")
    );
    assert!(r.routes.contains_key("8000"));
}

#[test]
fn registry_only_answers_502_and_blackholes_unknown_tcp() {
    let yaml = format!(
        "{HTTP_AND_TCP_ON_ONE_PORT}---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: default}}\nspec: {{outboundTrafficPolicy: {{mode: REGISTRY_ONLY}}}}\n"
    );
    let r = generate("registry-only", &yaml, "sidecar:default/a");
    let vh = r.routes["8000"]
        .virtual_hosts
        .iter()
        .find(|v| v.name == "block_all")
        .unwrap();
    match vh.routes[0].action.as_ref().unwrap() {
        route::Action::DirectResponse(d) => assert_eq!(d.status, 502),
        other => panic!("expected a direct response, got {other:?}"),
    }
    let listener = weir_xds::json::to_json(&r.listeners["virtualOutbound"]).unwrap();
    let catch_all = listener["filter_chains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "virtualOutbound-catchall-tcp")
        .unwrap();
    assert_eq!(
        catch_all["filters"][0]["typed_config"]["cluster"],
        "BlackHoleCluster"
    );
}

#[test]
fn resolution_picks_the_cluster_type() {
    let yaml = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dns}
spec: {hosts: [dns.test], resolution: DNS, ports: [{number: 443, name: tls, protocol: TLS}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: rr}
spec: {hosts: [rr.test], resolution: DNS_ROUND_ROBIN, ports: [{number: 443, name: tls, protocol: TLS}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: none}
spec: {hosts: [none.test], resolution: NONE, ports: [{number: 5432, name: pg, protocol: TCP, targetPort: 15432}]}
";
    let r = generate("resolution", yaml, "sidecar:default/a");
    let kind = |name: &str| r.clusters[name].cluster_discovery_type.clone();
    let typed = |t: cluster::DiscoveryType| Some(cluster::ClusterDiscoveryType::Type(t as i32));
    assert_eq!(
        kind("outbound|443||dns.test"),
        typed(cluster::DiscoveryType::StrictDns)
    );
    assert_eq!(
        kind("outbound|443||rr.test"),
        typed(cluster::DiscoveryType::LogicalDns)
    );
    assert_eq!(
        kind("outbound|5432||none.test"),
        typed(cluster::DiscoveryType::OriginalDst)
    );
    assert!(format!("{:?}", r.clusters["outbound|5432||none.test"].lb_config).contains("15432"));
    // A gateway cannot use original destination: NONE becomes EDS there.
    let g = generate("resolution-gw", yaml, "router:default/gw");
    assert_eq!(
        g.clusters["outbound|5432||none.test"].cluster_discovery_type,
        typed(cluster::DiscoveryType::Eds)
    );
}

#[test]
fn a_gateway_server_without_its_secret_is_not_served_and_says_why() {
    let yaml = "
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [a.example]
    tls: {mode: SIMPLE, credentialName: missing-cert}
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [a.example]
";
    let r = generate("missing-secret", yaml, "router:default/gw:istio=ingressgateway");
    assert!(
        !r.listeners.contains_key("0.0.0.0_443"),
        "no chain with someone else's certificate"
    );
    assert!(r.listeners.contains_key("0.0.0.0_80"));
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert!(r.problems[0].contains("missing-cert"), "{}", r.problems[0]);
    // With no VirtualService bound, the HTTP server answers 404.
    let vh = &r.routes["http.80"].virtual_hosts[0];
    assert_eq!(vh.name, "blackhole:80");
}

#[test]
fn istio_mutual_is_reported_not_silently_dropped() {
    let yaml = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api}
spec: {hosts: [api.test], location: MESH_INTERNAL, resolution: STATIC, ports: [{number: 80, name: http, protocol: HTTP}], endpoints: [{address: 10.0.0.1}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api}
spec: {host: api.test, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}
";
    let r = generate("istio-mutual", yaml, "sidecar:default/a");
    assert!(
        r.problems.iter().any(|p| p.contains("ISTIO_MUTUAL")),
        "{:?}",
        r.problems
    );
}

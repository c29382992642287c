//! The per-proxy view over `tests/fixtures/view/`: exportTo, Sidecar scoping, outbound policy,
//! VirtualService binding and conflicts, delegation, DestinationRule lookup and merging, Gateways.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

mod common;

use std::path::Path;

use weir_api::types::networking::{OutboundMode, SimpleLb};
use weir_model::registry::RegistryKind;
use weir_model::registry::RegistryOptions;
use weir_model::registry::alloc::AddressAllocator;
use weir_model::{ConfigStore, FolderSource, ObjectKey, Proxy, ProxyKind, ProxyView, ServiceRegistry};

struct Mesh {
    store: ConfigStore,
    registry: ServiceRegistry,
}

fn mesh() -> Mesh {
    let (store, registry) = common::load(&common::fixture("view"));
    Mesh { store, registry }
}

fn view(m: &Mesh, proxy: &str) -> ProxyView {
    ProxyView::build(
        &m.store,
        &m.registry,
        &m.store.mesh_defaults(),
        "cluster.local",
        &Proxy::parse(proxy).unwrap(),
    )
}

fn hosts(v: &ProxyView) -> Vec<String> {
    let mut h: Vec<String> = v
        .services
        .iter()
        .map(|s| format!("{}/{}", s.namespace, s.hostname))
        .collect();
    h.dedup();
    h
}

#[test]
fn proxies_parse_from_their_description() {
    let p = Proxy::parse("sidecar:bookinfo/reviews-v1:app=reviews,version=v1").unwrap();
    assert_eq!(p.kind, ProxyKind::Sidecar);
    assert_eq!(
        (p.namespace.as_str(), p.name.as_str()),
        ("bookinfo", "reviews-v1")
    );
    assert_eq!(p.labels.get("version").map(String::as_str), Some("v1"));
    assert_eq!(
        Proxy::parse("gateway:istio-system/ingress").unwrap().kind,
        ProxyKind::Router
    );
    assert!(
        Proxy::parse("pod:ns/name")
            .unwrap_err()
            .to_string()
            .contains("unknown kind")
    );
    assert!(Proxy::parse("sidecar:ns").is_err());
    assert!(Proxy::parse("sidecar:ns/n:novalue").is_err());
}

#[test]
fn export_to_and_the_own_namespace_rule() {
    let m = mesh();
    let b = view(&m, "sidecar:bookinfo/productpage");
    assert_eq!(
        hosts(&b),
        vec![
            "default/api.example.com",
            "istio-system/mesh-wide.example.com",
            "bookinfo/ratings.bookinfo.svc.cluster.local",
            "bookinfo/reviews.bookinfo.svc.cluster.local",
            "team-b/shared.example.com",
        ],
        "private, team-b-only and ~ exports are invisible; the older shared host wins; Kubernetes beats the squatter"
    );
    assert_eq!(
        b.service("reviews.bookinfo.svc.cluster.local").unwrap().registry,
        RegistryKind::Kubernetes
    );

    let a = view(&m, "sidecar:team-a/worker");
    assert!(hosts(&a).contains(&"team-a/private.example.com".to_string()));
    assert!(
        hosts(&a).contains(&"team-a/shared.example.com".to_string()),
        "the proxy's own namespace wins a shared host"
    );

    let team_b = view(&m, "sidecar:team-b/worker");
    assert!(hosts(&team_b).contains(&"team-a/for-b.example.com".to_string()));
}

#[test]
fn sidecar_selection_and_egress_scoping() {
    let m = mesh();
    // No Sidecar in team-c: the root namespace's applies (own namespace and istio-system only).
    let c = view(&m, "sidecar:team-c/worker");
    assert_eq!(
        c.sidecar,
        Some(ObjectKey::new("Sidecar", "istio-system", "default"))
    );
    assert_eq!(hosts(&c), vec!["istio-system/mesh-wide.example.com".to_string()]);
    assert_eq!(c.outbound_mode, OutboundMode::AllowAny, "mesh default");

    let special = view(&m, "sidecar:team-a/s1:app=special");
    assert_eq!(
        special.sidecar,
        Some(ObjectKey::new("Sidecar", "team-a", "special"))
    );
    assert_eq!(hosts(&special), vec!["default/api.example.com".to_string()]);
    assert_eq!(special.outbound_mode, OutboundMode::RegistryOnly);

    let plain = view(&m, "sidecar:team-a/w1:app=other");
    assert_eq!(
        plain.sidecar,
        Some(ObjectKey::new("Sidecar", "team-a", "default"))
    );
    assert!(!hosts(&plain).iter().any(|h| h.ends_with("nothing.example.com")));
}

#[test]
fn virtual_services_bind_to_the_mesh_or_gateways_and_the_oldest_keeps_a_host() {
    let m = mesh();
    let v = view(&m, "sidecar:bookinfo/productpage");
    let names: Vec<&str> = v.virtual_services.iter().map(|vs| vs.key.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["reviews"],
        "reviews-late loses the host; the gateway VS and team-a's private VS do not apply"
    );
    assert_eq!(
        v.virtual_services[0].hosts,
        vec!["reviews.bookinfo.svc.cluster.local"]
    );

    let a = view(&m, "sidecar:team-a/worker");
    assert!(a.virtual_services.iter().any(|vs| vs.key.name == "private"));

    let gw = view(&m, "router:istio-system/ingress:istio=ingressgateway");
    assert_eq!(
        gw.gateways,
        vec![ObjectKey::new("Gateway", "bookinfo", "bookinfo-gateway")]
    );
    let names: Vec<&str> = gw
        .virtual_services
        .iter()
        .map(|vs| vs.key.name.as_str())
        .collect();
    assert_eq!(names, vec!["bookinfo"]);
    assert_eq!(gw.virtual_services[0].gateways, vec!["bookinfo/bookinfo-gateway"]);
    assert!(
        gw.delegates.contains_key("bookinfo/reviews-delegate"),
        "{:?}",
        gw.delegates.keys()
    );

    let egress = view(&m, "router:istio-system/egress:istio=egressgateway");
    assert_eq!(
        egress.gateways,
        vec![ObjectKey::new("Gateway", "istio-system", "egress")]
    );
    assert!(egress.virtual_services.is_empty());
}

#[test]
fn destination_rules_merge_per_namespace_and_are_looked_up_in_order() {
    let m = mesh();
    let v = view(&m, "sidecar:bookinfo/productpage");
    let reviews = &v.destination_rules["reviews.bookinfo.svc.cluster.local"];
    assert_eq!(
        reviews
            .sources
            .iter()
            .map(|k| k.name.as_str())
            .collect::<Vec<_>>(),
        vec!["reviews", "reviews-v3"]
    );
    let subsets: Vec<_> = reviews
        .rule
        .subsets
        .as_ref()
        .unwrap()
        .iter()
        .map(|s| s.name.clone().unwrap())
        .collect();
    assert_eq!(subsets, vec!["v1", "v2", "v3"], "first definition of v1 wins");
    let lb = reviews
        .rule
        .traffic_policy
        .as_ref()
        .unwrap()
        .load_balancer
        .as_ref()
        .unwrap()
        .simple;
    assert_eq!(lb, Some(SimpleLb::Random), "the oldest rule's policy");
    assert_eq!(
        reviews.subset("v1").unwrap().labels.as_ref().unwrap()["version"],
        "v1"
    );

    // api.example.com: bookinfo has no rule, the service's namespace has none: the root's wildcard.
    assert_eq!(v.destination_rules["api.example.com"].namespace, "istio-system");
    // team-a's local rule wins for its proxies, and the selector rule for the selected ones.
    let a = view(&m, "sidecar:team-a/w:app=other");
    assert_eq!(
        a.destination_rules["api.example.com"].sources,
        vec![ObjectKey::new("DestinationRule", "team-a", "api")]
    );
    let special = view(&m, "sidecar:team-a/s:app=special");
    assert_eq!(
        special.destination_rules["api.example.com"].sources,
        vec![ObjectKey::new("DestinationRule", "team-a", "api-special")]
    );
}

#[test]
fn the_corpus_views_build_for_every_kind_of_proxy() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/istio");
    for folder in [
        "bookinfo-networking",
        "tests-testdata-config",
        "tests-testdata-networking",
    ] {
        let mut store = ConfigStore::new();
        FolderSource::new(corpus.join(folder), "default")
            .unwrap()
            .load_all(&mut store)
            .unwrap();
        let registry = ServiceRegistry::build(
            &store,
            &RegistryOptions::default(),
            &mut AddressAllocator::default(),
        );
        for proxy in [
            "sidecar:default/app:app=productpage",
            "router:istio-system/ingress:istio=ingressgateway",
            "proxyless:default/client",
        ] {
            let v = ProxyView::build(
                &store,
                &registry,
                &store.mesh_defaults(),
                "cluster.local",
                &Proxy::parse(proxy).unwrap(),
            );
            assert!(v.services.len() <= registry.len(), "{folder} {proxy}");
        }
    }
}

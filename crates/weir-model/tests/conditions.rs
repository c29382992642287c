//! Conflicts resolved by one documented rule, reported on the loser (`tests/fixtures/conditions`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

mod common;

use weir_model::ObjectKey;
use weir_model::conditions::{self, ConditionType, Conditions};

fn conditions() -> Conditions {
    let (store, registry) = common::load(&common::fixture("conditions"));
    conditions::compute(&store, &registry, &store.mesh_defaults(), "cluster.local")
}

fn texts(c: &Conditions, kind: &str, ns: &str, name: &str, t: ConditionType) -> Vec<String> {
    c.get(&ObjectKey::new(kind, ns, name))
        .into_iter()
        .flatten()
        .filter(|c| c.kind == t)
        .map(|c| c.to_string())
        .collect()
}

#[test]
fn every_resource_is_accepted() {
    let c = conditions();
    assert!(
        c.values()
            .all(|list| list.iter().any(|c| c.kind == ConditionType::Accepted && c.status))
    );
}

#[test]
fn duplicate_hosts_kubernetes_first_then_oldest() {
    let c = conditions();
    let squatter = texts(&c, "ServiceEntry", "other", "squatter", ConditionType::Conflicted);
    assert_eq!(squatter.len(), 1, "{squatter:?}");
    assert!(
        squatter[0]
            .contains("Service bookinfo/reviews, which wins (a Kubernetes Service beats a ServiceEntry)"),
        "{squatter:?}"
    );
    let newer = texts(&c, "ServiceEntry", "team-b", "api", ConditionType::Conflicted);
    assert!(
        newer[0].contains("ServiceEntry team-a/api, which wins (the oldest definition wins)"),
        "{newer:?}"
    );
    assert!(texts(&c, "ServiceEntry", "team-a", "api", ConditionType::Conflicted).is_empty());
    assert!(texts(&c, "Service", "bookinfo", "reviews", ConditionType::Conflicted).is_empty());
}

#[test]
fn tcp_ports_without_addresses_go_to_the_oldest() {
    let c = conditions();
    let b = texts(
        &c,
        "ServiceEntry",
        "default",
        "mongo-b",
        ConditionType::Conflicted,
    );
    assert_eq!(b.len(), 1);
    assert!(
        b[0].contains(
            "TCP port 27017 of mongo-b.example.com has no address of its own, and mongo-a.example.com"
        ),
        "{b:?}"
    );
    assert!(
        texts(
            &c,
            "ServiceEntry",
            "default",
            "mongo-a",
            ConditionType::Conflicted
        )
        .is_empty()
    );
    assert!(
        texts(&c, "ServiceEntry", "default", "pg-b", ConditionType::Conflicted).is_empty(),
        "allocated addresses keep them apart"
    );
}

#[test]
fn a_second_mesh_virtual_service_for_a_host_loses_it() {
    let c = conditions();
    let again = texts(
        &c,
        "VirtualService",
        "bookinfo",
        "reviews-again",
        ConditionType::Conflicted,
    );
    assert_eq!(again.len(), 1);
    assert!(
        again[0].contains("VirtualService bookinfo/reviews, which is older and keeps it")
            && again[0].ends_with("[IST0109]"),
        "{again:?}"
    );
}

#[test]
fn destination_rules_for_one_host_merge_and_say_what_was_ignored() {
    let c = conditions();
    let more = texts(
        &c,
        "DestinationRule",
        "bookinfo",
        "reviews-more",
        ConditionType::Conflicted,
    );
    assert_eq!(more.len(), 1);
    assert!(
        more[0].contains("its trafficPolicy and subsets v1 of this rule are ignored"),
        "{more:?}"
    );
}

#[test]
fn dangling_hosts_subsets_gateways_and_selectors() {
    let c = conditions();
    let again = texts(
        &c,
        "VirtualService",
        "bookinfo",
        "reviews-again",
        ConditionType::ResolvedRefs,
    );
    assert_eq!(
        again,
        vec![
            "ResolvedRefs=False (SubsetNotFound): Referenced host+subset in destinationrule not found: \"reviews.bookinfo.svc.cluster.local+v9\" [IST0101]"
        ]
    );
    let nowhere = texts(
        &c,
        "VirtualService",
        "bookinfo",
        "nowhere",
        ConditionType::ResolvedRefs,
    );
    assert!(
        nowhere
            .iter()
            .any(|t| t.contains("Referenced host not found: \"nowhere.example.com\"")),
        "{nowhere:?}"
    );
    assert!(
        nowhere
            .iter()
            .any(|t| t.contains("Referenced gateway not found: \"bookinfo/missing-gateway\"")),
        "{nowhere:?}"
    );
    assert!(
        texts(
            &c,
            "VirtualService",
            "bookinfo",
            "reviews",
            ConditionType::ResolvedRefs
        )
        .is_empty()
    );
    let lonely = texts(&c, "Gateway", "bookinfo", "lonely", ConditionType::ResolvedRefs);
    assert!(
        lonely[0].contains("Referenced selector not found: \"istio=nobody\""),
        "{lonely:?}"
    );
}

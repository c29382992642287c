//! The service registry built from folders of real-looking configuration
//! (`tests/fixtures/registry/`, Istio's documented egress and VM-migration situations).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use weir_model::registry::alloc::AddressAllocator;
use weir_model::registry::{
    EndpointAddress, Protocol, RegistryKind, RegistryOptions, Resolution, ServiceAddress, TlsMode,
};
use weir_model::{ConfigStore, FolderSource, ServiceKey, ServiceRegistry};

fn fixtures() -> PathBuf {
    common::fixture("registry")
}

fn build(dir: &Path) -> (ConfigStore, ServiceRegistry) {
    common::load(dir)
}

/// The registry of one fixture file alone, read in place (no copies, so tests can run in parallel).
fn build_file(file: &str) -> (ConfigStore, ServiceRegistry) {
    let source = FolderSource::new(fixtures(), "default").unwrap();
    let path = fixtures().join(file);
    let mut store = ConfigStore::new();
    store.replace_file(&path, source.read_file(&path));
    common::registry_of(store)
}

fn key(ns: &str, host: &str) -> ServiceKey {
    ServiceKey {
        namespace: ns.into(),
        hostname: host.into(),
    }
}

fn addresses(registry: &ServiceRegistry, k: &ServiceKey) -> Vec<(String, u32, bool)> {
    registry
        .endpoints(k)
        .iter()
        .map(|e| (e.address.to_string(), e.port, e.healthy))
        .collect()
}

#[test]
fn external_https_apis_matched_by_sni_get_one_service_per_host() {
    let (_, registry) = build_file("external-services.yaml");
    for host in ["api.dropboxapi.com", "www.googleapis.com"] {
        let svc = registry.service(&key("default", host)).unwrap();
        assert_eq!(svc.registry, RegistryKind::ServiceEntry);
        assert_eq!(svc.resolution, Resolution::DnsLb);
        assert!(svc.mesh_external);
        assert_eq!(svc.ports[0].protocol, Protocol::Tls);
        assert_eq!(
            addresses(&registry, &svc.key()),
            vec![(host.to_string(), 443, true)],
            "DNS: the host itself"
        );
        let auto = svc
            .auto_address
            .expect("a DNS ServiceEntry without addresses gets one");
        assert_eq!(&auto.octets()[..2], &[240, 240]);
    }
}

#[test]
fn mongodb_on_a_vip_with_static_endpoints() {
    let (_, registry) = build_file("external-services.yaml");
    let svc = registry.service(&key("default", "mymongodb.somedomain")).unwrap();
    assert_eq!(
        svc.address,
        Some(ServiceAddress::Cidr("192.192.192.192/24".into()))
    );
    assert_eq!(svc.resolution, Resolution::ClientSideLb);
    assert!(!svc.mesh_external);
    assert_eq!(svc.auto_address, None);
    assert_eq!(
        addresses(&registry, &svc.key()),
        vec![("2.2.2.2".into(), 27018, true), ("3.3.3.3".into(), 27018, true)]
    );
}

#[test]
fn wildcard_hosts_with_none_resolution_have_no_endpoints_and_no_address() {
    let (_, registry) = build_file("external-services.yaml");
    let svc = registry.service(&key("default", "*.bar.com")).unwrap();
    assert_eq!(svc.resolution, Resolution::Passthrough);
    assert_eq!(svc.auto_address, None);
    assert!(registry.endpoints(&svc.key()).is_empty());
}

#[test]
fn a_unix_socket_endpoint_has_port_zero() {
    let (_, registry) = build_file("external-services.yaml");
    let eps = registry.endpoints(&key("default", "example.unix.local"));
    assert_eq!(eps.len(), 1);
    assert_eq!(
        eps[0].address,
        EndpointAddress::Unix("/var/run/example/socket".into())
    );
    assert_eq!(eps[0].port, 0);
}

#[test]
fn a_dns_service_with_three_regional_endpoints() {
    let (_, registry) = build_file("external-services.yaml");
    let eps = registry.endpoints(&key("default", "foo.bar.com"));
    let got: Vec<_> = eps
        .iter()
        .map(|e| (e.address.to_string(), e.port, e.locality.clone().unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("us.foo.bar.com".into(), 8080, "us-west1".into()),
            ("uk.foo.bar.com".into(), 9080, "europe-west2".into()),
            ("in.foo.bar.com".into(), 7080, "asia-south1".into()),
        ]
    );
}

#[test]
fn an_egress_host_exported_to_its_namespace_and_an_opt_out() {
    let (_, registry) = build_file("external-services.yaml");
    assert_eq!(
        registry
            .service(&key("istio-system", "edition.cnn.com"))
            .unwrap()
            .export_to,
        vec!["."]
    );
    assert_eq!(
        registry
            .service(&key("default", "noalloc.example.com"))
            .unwrap()
            .auto_address,
        None
    );
}

#[test]
fn a_selector_spans_workload_entries_and_pods_of_its_namespace() {
    let (_, registry) = build_file("vm-migration.yaml");
    let k = key("bookinfo", "details.bookinfo.com");
    let eps = registry.endpoints(&k);
    let got: Vec<_> = eps
        .iter()
        .map(|e| (e.address.to_string(), e.port, e.healthy, e.tls_mode))
        .collect();
    assert_eq!(
        got,
        vec![
            // Pods first, then WorkloadEntries: Istio orders workloads by kind, namespace, name.
            ("10.1.0.1".into(), 9080, true, TlsMode::Istio), // the pod's named container port
            ("10.1.0.2".into(), 8080, false, TlsMode::Disabled), // not ready; no tlsMode label
            ("10.0.0.1".into(), 8080, true, TlsMode::Istio), // targetPort
            ("10.0.0.2".into(), 9090, true, TlsMode::Istio), // the entry's own named port wins
        ],
        "the host-name entry and the pod of another namespace are not selected"
    );
    assert_eq!(eps[2].locality.as_deref(), Some("us-east1/b"));
    assert_eq!(
        eps[3].labels.get("version").map(String::as_str),
        Some("v2"),
        "metadata labels merge over spec labels"
    );
    assert_eq!(eps[2].service_account.as_deref(), Some("details-legacy"));
}

#[test]
fn kubernetes_external_name_and_selector_less_services() {
    let (_, registry) = build_file("kubernetes-services.yaml");
    let httpbin = registry
        .service(&key("default", "my-httpbin.default.svc.cluster.local"))
        .unwrap();
    assert_eq!(httpbin.registry, RegistryKind::Kubernetes);
    assert_eq!(httpbin.resolution, Resolution::DnsLb);
    assert_eq!(httpbin.external_name.as_deref(), Some("httpbin.org"));
    assert_eq!(
        addresses(&registry, &httpbin.key()),
        vec![("httpbin.org".into(), 80, true)]
    );

    let wiki = key("default", "my-wikipedia.default.svc.cluster.local");
    assert_eq!(
        addresses(&registry, &wiki),
        vec![
            ("198.35.26.96".into(), 443, true),
            ("208.80.153.224".into(), 443, true),
            ("208.80.154.224".into(), 443, false)
        ]
    );

    let db = registry
        .service(&key("data", "legacy-db.data.svc.cluster.local"))
        .unwrap();
    assert_eq!(
        db.address,
        Some(ServiceAddress::Ip(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 20))))
    );
    assert_eq!(db.ports[0].protocol, Protocol::Tcp, "from the tcp- name prefix");
    assert_eq!(
        addresses(&registry, &db.key()),
        vec![
            ("10.50.0.7".into(), 5432, true),
            ("10.50.0.8".into(), 5432, false)
        ]
    );
}

#[test]
fn kubernetes_selectors_named_target_ports_and_headless_services() {
    let (_, registry) = build_file("kubernetes-services.yaml");
    let reviews = key("bookinfo", "reviews.bookinfo.svc.cluster.local");
    assert_eq!(
        addresses(&registry, &reviews),
        vec![("10.1.1.1".into(), 8080, true)]
    );
    assert_eq!(
        registry.endpoints(&reviews)[0]
            .labels
            .get("version")
            .map(String::as_str),
        Some("v1")
    );
    let db = registry
        .service(&key("bookinfo", "db.bookinfo.svc.cluster.local"))
        .unwrap();
    assert_eq!(db.resolution, Resolution::Passthrough);
    assert_eq!(db.address, None);
}

#[test]
fn same_namespace_and_host_merge_oldest_first_and_dns_round_robin_keeps_one() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("registry/merge");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let se = |name: &str, time: &str, resolution: &str, address: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: default, creationTimestamp: \"{time}\"}}\n\
             spec: {{hosts: [merged.example.com], ports: [{{number: 80, name: http, protocol: HTTP}}], resolution: {resolution}, endpoints: [{{address: {address}}}]}}\n"
        )
    };
    std::fs::write(
        dir.join("a.yaml"),
        se("newer", "2024-02-01T00:00:00Z", "STATIC", "10.0.0.2"),
    )
    .unwrap();
    std::fs::write(
        dir.join("b.yaml"),
        se("older", "2024-01-01T00:00:00Z", "STATIC", "10.0.0.1"),
    )
    .unwrap();
    let (_, registry) = build(&dir);
    let k = key("default", "merged.example.com");
    assert_eq!(
        addresses(&registry, &k),
        vec![("10.0.0.1".into(), 80, true), ("10.0.0.2".into(), 80, true)]
    );
    assert_eq!(
        registry.service(&k).unwrap().origin.name,
        "older",
        "the oldest definition comes first"
    );

    std::fs::write(
        dir.join("a.yaml"),
        se(
            "newer",
            "2024-02-01T00:00:00Z",
            "DNS_ROUND_ROBIN",
            "b.example.net",
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("b.yaml"),
        se(
            "older",
            "2024-01-01T00:00:00Z",
            "DNS_ROUND_ROBIN",
            "a.example.net",
        ),
    )
    .unwrap();
    let (_, registry) = build(&dir);
    assert_eq!(addresses(&registry, &k), vec![("a.example.net".into(), 80, true)]);
}

#[test]
fn allocations_survive_rebuilds_and_unrelated_changes() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("registry/alloc");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let se = |name: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: default}}\n\
             spec: {{hosts: [{name}.example.com], ports: [{{number: 443, name: https, protocol: HTTPS}}], resolution: DNS}}\n"
        )
    };
    for i in 0..20 {
        std::fs::write(dir.join(format!("se{i:02}.yaml")), se(&format!("svc{i}"))).unwrap();
    }
    let source = FolderSource::new(&dir, "default").unwrap();
    let mut store = ConfigStore::new();
    source.load_all(&mut store).unwrap();
    let mut alloc = AddressAllocator::default();
    let before = ServiceRegistry::build(&store, &RegistryOptions::default(), &mut alloc);
    let addr = |r: &ServiceRegistry, i: usize| {
        r.service(&key("default", &format!("svc{i}.example.com")))
            .unwrap()
            .auto_address
    };

    std::fs::write(dir.join("zz-new.yaml"), se("newcomer")).unwrap();
    std::fs::remove_file(dir.join("se05.yaml")).unwrap();
    source.refresh(&mut store, &[dir.join("zz-new.yaml"), dir.join("se05.yaml")]);
    let after = ServiceRegistry::build(&store, &RegistryOptions::default(), &mut alloc);
    for i in (0..20).filter(|i| *i != 5) {
        assert_eq!(addr(&before, i), addr(&after, i), "svc{i} moved");
    }
    let all: std::collections::BTreeSet<_> = after.services().filter_map(|s| s.auto_address).collect();
    assert_eq!(all.len(), 20, "every address is distinct");

    // A restart with the saved assignments gives the same addresses.
    let mut restarted = AddressAllocator::default();
    restarted.restore(&alloc.export());
    let again = ServiceRegistry::build(&store, &RegistryOptions::default(), &mut restarted);
    for i in (0..20).filter(|i| *i != 5) {
        assert_eq!(addr(&after, i), addr(&again, i));
    }
}

#[test]
fn the_whole_istio_corpus_loads_into_the_registry() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/istio");
    for folder in [
        "bookinfo-networking",
        "samples-istio-kinds",
        "tests-testdata-config",
        "tests-testdata-networking",
        "validation-dataset",
    ] {
        let (store, registry) = build(&corpus.join(folder));
        let entries = store.of_kind("ServiceEntry").count();
        assert!(
            registry.len() >= entries,
            "{folder}: {} services from {entries} ServiceEntries",
            registry.len()
        );
    }
}

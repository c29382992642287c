//! Incremental registry updates: a change recomputes only what depends on it, reports whether a
//! host's services or only its endpoints changed, and always ends where a full rebuild would.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use weir_model::registry::RegistryOptions;
use weir_model::registry::alloc::AddressAllocator;
use weir_model::{ConfigStore, FolderSource, ServiceKey, ServiceRegistry};

struct Fixture {
    dir: PathBuf,
    source: FolderSource,
    store: ConfigStore,
    registry: ServiceRegistry,
}

impl Fixture {
    fn new(name: &str, files: &[(&str, String)]) -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("incremental")
            .join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (file, text) in files {
            std::fs::write(dir.join(file), text).unwrap();
        }
        let source = FolderSource::new(&dir, "default").unwrap();
        let mut store = ConfigStore::new();
        source.load_all(&mut store).unwrap();
        let registry = ServiceRegistry::build(
            &store,
            &RegistryOptions::default(),
            &mut AddressAllocator::default(),
        );
        Fixture {
            dir,
            source,
            store,
            registry,
        }
    }

    /// Writes (or with `None` deletes) a file and applies the change incrementally.
    fn change(&mut self, file: &str, text: Option<String>) -> weir_model::registry::RegistryDelta {
        let path = self.dir.join(file);
        match text {
            Some(t) => std::fs::write(&path, t).unwrap(),
            None => std::fs::remove_file(&path).unwrap(),
        }
        let changes = self.source.refresh(&mut self.store, &[path]);
        self.registry.update(&self.store, &changes)
    }

    /// The registry as a full rebuild would make it (with the same allocation history).
    fn assert_matches_full_build(&self) {
        let mut alloc = self.registry.allocator().clone();
        let full = ServiceRegistry::build(&self.store, &RegistryOptions::default(), &mut alloc);
        let a: Vec<_> = self
            .registry
            .services()
            .map(|s| (s.as_ref().clone(), self.registry.endpoints(&s.key()).to_vec()))
            .collect();
        let b: Vec<_> = full
            .services()
            .map(|s| (s.as_ref().clone(), full.endpoints(&s.key()).to_vec()))
            .collect();
        assert_eq!(a, b, "incremental state differs from a full build");
    }
}

fn se(name: &str, host: &str, extra: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: default}}\n\
         spec: {{hosts: [{host}], ports: [{{number: 80, name: http, protocol: HTTP}}], {extra}}}\n"
    )
}

fn we(name: &str, ip: &str, app: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: {name}, namespace: default}}\nspec: {{address: {ip}, labels: {{app: {app}}}}}\n"
    )
}

fn key(host: &str) -> ServiceKey {
    ServiceKey {
        namespace: "default".into(),
        hostname: host.into(),
    }
}

#[test]
fn one_service_entry_change_touches_only_its_host() {
    let mut files: Vec<(String, String)> = (0..200)
        .map(|i| {
            (
                format!("se{i:03}.yaml"),
                se(&format!("s{i}"), &format!("h{i}.example.com"), "resolution: DNS"),
            )
        })
        .collect();
    files.sort();
    let refs: Vec<(&str, String)> = files.iter().map(|(f, t)| (f.as_str(), t.clone())).collect();
    let mut fx = Fixture::new("one-change", &refs);
    let before: Vec<_> = fx.registry.services().map(|s| s.as_ref().clone()).collect();

    let delta = fx.change(
        "se042.yaml",
        Some(se(
            "s42",
            "h42.example.com",
            "resolution: DNS, location: MESH_INTERNAL",
        )),
    );
    assert_eq!(delta.services, BTreeSet::from([key("h42.example.com")]));
    assert!(delta.endpoints.is_empty());
    let after: Vec<_> = fx.registry.services().map(|s| s.as_ref().clone()).collect();
    let changed: Vec<_> = before
        .iter()
        .zip(&after)
        .filter(|(a, b)| a != b)
        .map(|(a, _)| a.hostname.clone())
        .collect();
    assert_eq!(changed, vec!["h42.example.com"]);
    assert_eq!(
        before[42].auto_address, after[42].auto_address,
        "the address does not move"
    );

    let delta = fx.change("se042.yaml", None);
    assert_eq!(delta.services, BTreeSet::from([key("h42.example.com")]));
    assert!(fx.registry.service(&key("h42.example.com")).is_none());
    fx.assert_matches_full_build();
}

#[test]
fn workload_changes_are_endpoint_only_and_follow_labels() {
    let mut fx = Fixture::new(
        "workloads",
        &[
            (
                "se.yaml",
                format!(
                    "{}---\n{}",
                    se(
                        "a",
                        "a.internal",
                        "resolution: STATIC, workloadSelector: {labels: {app: a}}"
                    ),
                    se(
                        "b",
                        "b.internal",
                        "resolution: STATIC, workloadSelector: {labels: {app: b}}"
                    )
                ),
            ),
            ("we1.yaml", we("vm1", "10.0.0.1", "a")),
        ],
    );
    assert_eq!(fx.registry.endpoints(&key("a.internal")).len(), 1);

    let delta = fx.change("we2.yaml", Some(we("vm2", "10.0.0.2", "a")));
    assert!(delta.services.is_empty());
    assert_eq!(delta.endpoints, BTreeSet::from([key("a.internal")]), "EDS-only");
    assert_eq!(fx.registry.endpoints(&key("a.internal")).len(), 2);

    // Relabelling moves the workload from one service to the other.
    let delta = fx.change("we1.yaml", Some(we("vm1", "10.0.0.1", "b")));
    assert_eq!(
        delta.endpoints,
        BTreeSet::from([key("a.internal"), key("b.internal")])
    );
    assert_eq!(
        fx.registry.endpoints(&key("b.internal"))[0].address.to_string(),
        "10.0.0.1"
    );

    let delta = fx.change("we2.yaml", None);
    assert_eq!(delta.endpoints, BTreeSet::from([key("a.internal")]));
    assert!(fx.registry.endpoints(&key("a.internal")).is_empty());
    fx.assert_matches_full_build();
}

#[test]
fn kubernetes_endpoints_and_slices_update_their_service() {
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: default}\nspec: {clusterIP: 10.96.0.5, ports: [{name: tcp, port: 5432}]}\n";
    let mut fx = Fixture::new("kube", &[("svc.yaml", svc.to_string())]);
    let k = key("db.default.svc.cluster.local");
    assert!(fx.registry.endpoints(&k).is_empty());
    let eps = "apiVersion: v1\nkind: Endpoints\nmetadata: {name: db, namespace: default}\nsubsets: [{addresses: [{ip: 10.9.0.1}], ports: [{name: tcp, port: 5432}]}]\n";
    assert_eq!(
        fx.change("eps.yaml", Some(eps.into())).endpoints,
        BTreeSet::from([k.clone()])
    );
    let slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: db-1, namespace: default, labels: {kubernetes.io/service-name: db}}\naddressType: IPv4\nendpoints: [{addresses: [10.9.0.2]}]\nports: [{name: tcp, port: 5432}]\n";
    assert_eq!(
        fx.change("slice.yaml", Some(slice.into())).endpoints,
        BTreeSet::from([k.clone()])
    );
    assert_eq!(fx.registry.endpoints(&k).len(), 2);
    assert_eq!(
        fx.change("slice.yaml", None).endpoints,
        BTreeSet::from([k.clone()])
    );
    assert_eq!(fx.registry.endpoints(&k).len(), 1);
    fx.assert_matches_full_build();
}

#[test]
fn a_user_address_taking_an_allocated_one_moves_only_its_holder() {
    let mut fx = Fixture::new(
        "reserved",
        &[
            ("a.yaml", se("a", "a.example.com", "resolution: DNS")),
            ("b.yaml", se("b", "b.example.com", "resolution: DNS")),
        ],
    );
    let taken = fx
        .registry
        .service(&key("a.example.com"))
        .unwrap()
        .auto_address
        .unwrap();
    let b_before = fx.registry.service(&key("b.example.com")).unwrap().auto_address;
    let delta = fx.change(
        "c.yaml",
        Some(se(
            "c",
            "c.example.com",
            &format!("resolution: STATIC, addresses: [{taken}]"),
        )),
    );
    assert_eq!(
        delta.services,
        BTreeSet::from([key("a.example.com"), key("c.example.com")])
    );
    let moved = fx
        .registry
        .service(&key("a.example.com"))
        .unwrap()
        .auto_address
        .unwrap();
    assert_ne!(moved, taken);
    assert_eq!(
        fx.registry.service(&key("b.example.com")).unwrap().auto_address,
        b_before
    );
}

#[test]
fn a_sequence_of_edits_ends_where_a_full_build_would() {
    let mut fx = Fixture::new(
        "sequence",
        &[("a.yaml", se("a", "shared.example.com", "resolution: DNS"))],
    );
    let steps: Vec<(&str, Option<String>)> = vec![
        ("b.yaml", Some(se("b", "shared.example.com", "resolution: DNS"))),
        (
            "c.yaml",
            Some(se(
                "c",
                "c.internal",
                "resolution: STATIC, workloadSelector: {labels: {app: c}}",
            )),
        ),
        ("w.yaml", Some(we("w", "10.1.1.1", "c"))),
        (
            "a.yaml",
            Some(se("a", "other.example.com", "resolution: DNS_ROUND_ROBIN")),
        ),
        ("w.yaml", Some(we("w", "10.1.1.2", "c"))),
        ("b.yaml", None),
        (
            "c.yaml",
            Some(se(
                "c",
                "c.internal",
                "resolution: STATIC, endpoints: [{address: 10.2.2.2}]",
            )),
        ),
    ];
    for (file, text) in steps {
        fx.change(file, text);
        fx.assert_matches_full_build();
    }
}

#[test]
fn a_pod_behind_listed_endpoints_updates_the_service_that_lists_it() {
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: legacy, namespace: default}\nspec: {clusterIP: 10.96.0.9, ports: [{name: http, port: 80}]}\n---\n\
               apiVersion: v1\nkind: Endpoints\nmetadata: {name: legacy, namespace: default}\nsubsets: [{addresses: [{ip: 10.1.0.9, targetRef: {kind: Pod, name: p1}}], ports: [{name: http, port: 8080}]}]\n";
    let pod = |version: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p1, namespace: default, labels: {{version: {version}}}}}\nstatus: {{podIP: 10.1.0.9}}\n"
        )
    };
    let mut fx = Fixture::new(
        "listed",
        &[("svc.yaml", svc.to_string()), ("pod.yaml", pod("v1"))],
    );
    let k = key("legacy.default.svc.cluster.local");
    assert_eq!(fx.registry.endpoints(&k)[0].labels["version"], "v1");
    let delta = fx.change("pod.yaml", Some(pod("v2")));
    assert_eq!(delta.endpoints, BTreeSet::from([k.clone()]));
    assert_eq!(fx.registry.endpoints(&k)[0].labels["version"], "v2");
    fx.assert_matches_full_build();
}

#[test]
fn a_pod_created_after_the_endpoints_listing_it_is_picked_up() {
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: legacy, namespace: default}\nspec: {clusterIP: 10.96.0.9, ports: [{name: http, port: 80}]}\n---\n\
               apiVersion: v1\nkind: Endpoints\nmetadata: {name: legacy, namespace: default}\nsubsets: [{addresses: [{ip: 10.1.0.9, targetRef: {kind: Pod, name: p1}}], ports: [{name: http, port: 8080}]}]\n";
    let mut fx = Fixture::new("listed-late", &[("svc.yaml", svc.to_string())]);
    let k = key("legacy.default.svc.cluster.local");
    assert!(fx.registry.endpoints(&k)[0].labels.is_empty());
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p1, namespace: default, labels: {version: v3}}\nstatus: {podIP: 10.1.0.9}\n";
    assert_eq!(
        fx.change("pod.yaml", Some(pod.into())).endpoints,
        BTreeSet::from([k.clone()])
    );
    assert_eq!(fx.registry.endpoints(&k)[0].labels["version"], "v3");
    fx.assert_matches_full_build();
}

//! Golden tests: the resources generated for representative proxies of every corpus folder
//! (`shared/corpus/istio/`) and of the scenario folders under `tests/scenarios/`, compared with
//! reviewed JSON under `tests/golden/`. Rendering them decodes every typed config against Envoy's
//! descriptors, so an unknown type or malformed config fails here.
//!
//! After a deliberate change: `WEIR_UPDATE_GOLDEN=1 cargo test -p weir-xds --test golden`, then
//! review the diff with `git diff crates/weir-xds/tests/golden`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use weir_model::registry::RegistryOptions;
use weir_model::registry::alloc::AddressAllocator;
use weir_model::{ConfigStore, FolderSource, Proxy};
use weir_xds::model::Model;

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn corpus_root() -> PathBuf {
    let root = manifest().join("../../../shared/corpus/istio");
    assert!(root.is_dir(), "corpus not found at {}", root.display());
    root
}

fn load(dir: &Path) -> Model {
    let mut store = ConfigStore::new();
    FolderSource::new(dir, "default")
        .unwrap()
        .load_all(&mut store)
        .unwrap();
    Model::new(store, AddressAllocator::default(), RegistryOptions::default())
}

/// Every resource for `proxy`, as an object keyed by type; checks names are unique per type.
fn render(model: &Model, proxy: &str) -> Value {
    let proxy = Proxy::parse(proxy).unwrap();
    let (_, resources) = model.generate(&proxy);
    let mut out = Map::new();
    for (type_url, name, json) in resources
        .to_json()
        .expect("every resource renders against Envoy's descriptors")
    {
        let key = type_url.rsplit('.').next().unwrap().to_string();
        let list = out.entry(key).or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = list {
            list.push(json);
        }
        assert!(!name.is_empty(), "a {type_url} without a name");
    }
    // Nothing unknown: every field of every resource and typed config is in Envoy's descriptors.
    for type_url in weir_xds::generator::TYPE_URLS {
        let type_name = type_url.rsplit('/').next().unwrap();
        for (name, encoded) in resources.encoded(type_url).unwrap() {
            let unknown = weir_xds::json::unknown_fields(type_name, &encoded.bytes).unwrap();
            assert!(
                unknown.is_empty(),
                "{type_url} {name}: unknown fields {unknown:?}"
            );
        }
    }
    Value::Object(out)
}

fn check(folder: &str, dir: &Path, proxies: &[(&str, &str)]) -> Vec<String> {
    let model = load(dir);
    let mut mismatches = Vec::new();
    for (label, proxy) in proxies {
        let got = serde_json::to_string_pretty(&render(&model, proxy)).unwrap() + "\n";
        let file = manifest()
            .join("tests/golden")
            .join(folder)
            .join(format!("{label}.json"));
        if std::env::var_os("WEIR_UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&file).unwrap_or_default();
        if want != got {
            mismatches.push(format!(
                "{} differs from what {proxy} gets now (run with WEIR_UPDATE_GOLDEN=1 and review the diff)",
                file.display()
            ));
        }
    }
    mismatches
}

const CORPUS_PROXIES: [(&str, &str); 3] = [
    ("sidecar", "sidecar:default/app:app=productpage,version=v1"),
    (
        "gateway",
        "router:istio-system/istio-ingressgateway:istio=ingressgateway,app=istio-ingressgateway",
    ),
    ("proxyless", "proxyless:default/client"),
];

#[test]
fn corpus_folders_match_their_golden_files() {
    let mut folders: Vec<PathBuf> = std::fs::read_dir(corpus_root())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    folders.sort();
    assert!(
        folders.len() >= 5,
        "expected the corpus folders, found {folders:?}"
    );
    let mut mismatches = Vec::new();
    for dir in folders {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        mismatches.extend(check(&name, &dir, &CORPUS_PROXIES));
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn scenarios_match_their_golden_files() {
    let scenarios = manifest().join("tests/scenarios");
    let mut mismatches = check(
        "scenario-mesh",
        &scenarios.join("mesh"),
        &[
            (
                "productpage-sidecar",
                "sidecar:shop/productpage-v1-xyz:app=productpage,version=v1",
            ),
            ("registry-only-sidecar", "sidecar:batch/job:app=job"),
            ("proxyless", "proxyless:shop/client"),
            (
                "eu-west-a-sidecar",
                "sidecar:shop/ratings-1:app=ratings,topology.kubernetes.io/region=eu-west,topology.kubernetes.io/zone=a",
            ),
            (
                "eu-west-b-sidecar",
                "sidecar:shop/ratings-2:app=ratings,topology.kubernetes.io/region=eu-west,topology.kubernetes.io/zone=b",
            ),
        ],
    );
    mismatches.extend(check(
        "scenario-egress",
        &scenarios.join("egress"),
        &[
            ("sidecar", "sidecar:default/app:app=app"),
            (
                "egress-gateway",
                "router:istio-system/istio-egressgateway-1:istio=egressgateway",
            ),
        ],
    ));
    mismatches.extend(check(
        "scenario-gateway",
        &scenarios.join("gateway"),
        &[("ingress", "router:edge/ingress:istio=ingressgateway")],
    ));
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn scenario_files_are_valid() {
    for name in ["mesh", "gateway", "egress"] {
        let mut store = ConfigStore::new();
        FolderSource::new(manifest().join("tests/scenarios").join(name), "default")
            .unwrap()
            .load_all(&mut store)
            .unwrap();
        let rejected: Vec<_> = store
            .rejected()
            .map(|r| format!("{}: {:?}", r.subject, r.findings))
            .collect();
        assert!(rejected.is_empty(), "scenario {name}: {rejected:?}");
    }
}

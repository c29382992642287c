//! Everything Weir's control plane generates — for every folder of the Istio corpus and every
//! scenario, for a sidecar and a gateway — is compiled by the proxy. A resource may only be
//! refused for one of the reasons listed in `KNOWN_GAPS` (features of the proxy still to come,
//! each documented in docs/proxy.md); anything else is a mismatch between the two halves.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use weir_model::registry::RegistryOptions;
use weir_model::registry::alloc::AddressAllocator;
use weir_model::{ConfigStore, FolderSource, Proxy};
use weir_proxy::resources::{compiled_counts, refusals};
use weir_xds::model::Model;

/// Refusals that are expected, by the text they contain: features still to come, and test
/// data that no proxy could load.
const KNOWN_GAPS: &[&str] = &[
    // Certificates named by file that do not exist on this machine, or placeholder certificate
    // data in the scenarios' Secrets (Envoy refuses both too).
    "No such file or directory",
    "is not valid PEM",
];

fn load(dir: &Path) -> Model {
    let mut store = ConfigStore::new();
    FolderSource::new(dir, "default")
        .unwrap()
        .load_all(&mut store)
        .unwrap();
    Model::new(store, AddressAllocator::default(), RegistryOptions::default())
}

fn folders() -> Vec<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = manifest.join("../../../shared/corpus/istio");
    assert!(corpus.is_dir(), "corpus not found at {}", corpus.display());
    let mut out: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    for s in ["mesh", "gateway", "egress"] {
        out.push(manifest.join("../weir-xds/tests/scenarios").join(s));
    }
    out.sort();
    out
}

const PROXIES: &[&str] = &[
    "sidecar:default/app:app=productpage",
    "sidecar:shop/productpage-v1:app=productpage,version=v1",
    "router:istio-system/istio-ingressgateway:istio=ingressgateway,app=istio-ingressgateway",
    "router:edge/ingress:istio=ingressgateway",
    "router:istio-system/istio-egressgateway-1:istio=egressgateway",
];

#[test]
fn everything_weir_generates_compiles_or_is_a_known_gap() {
    let mut compiled: BTreeMap<&str, usize> = BTreeMap::new();
    let mut gaps: BTreeMap<String, usize> = BTreeMap::new();
    let mut unexpected = Vec::new();
    for dir in folders() {
        let model = load(&dir);
        // Each proxy also once with a locality, so that locality rules (`distribute` for
        // `eu-west/a/*` in the mesh scenario, failover priorities) are generated too.
        let proxies = PROXIES.iter().flat_map(|p| {
            let plain = Proxy::parse(p).unwrap();
            let mut located = plain.clone();
            located.locality = Some("eu-west/a/1".to_string());
            [plain, located]
        });
        for proxy in proxies {
            let (_, r) = model.generate(&proxy);
            for (kind, n) in compiled_counts(&r) {
                *compiled.entry(kind).or_default() += n;
            }
            for e in refusals(&r) {
                match KNOWN_GAPS.iter().find(|g| e.contains(*g)) {
                    Some(g) => *gaps.entry((*g).to_string()).or_default() += 1,
                    None => unexpected.push(format!("{} {proxy:?}: {e}", dir.display())),
                }
            }
        }
    }
    unexpected.sort();
    unexpected.dedup();
    assert!(
        unexpected.is_empty(),
        "{} unexpected refusals:\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
    for kind in ["listeners", "clusters", "routes", "endpoints"] {
        assert!(
            compiled.get(kind).copied().unwrap_or(0) > 20,
            "{kind}: {compiled:?}"
        );
    }
    eprintln!("compiled {compiled:?}; known gaps {gaps:?}");
}

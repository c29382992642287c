//! Arbitrary documents through the whole model: the store (as two files, so that duplicates and
//! moves happen), the registry built in full and updated incrementally (which must agree), every
//! kind of proxy view, and the conditions. Nothing may panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use weir_model::registry::RegistryOptions;
use weir_model::registry::alloc::AddressAllocator;
use weir_model::store::FileContents;
use weir_model::{ConfigStore, Proxy, ProxyView, ServiceRegistry, conditions};

fn contents(file: &str, text: &str) -> FileContents {
    FileContents::from_checked(Path::new(file), weir_api::check_text(text, "default"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // The first half of the documents is one file, the rest another; then the first file is
    // replaced by the second's text, so objects move, change and disappear.
    let split = text.find("\n---").unwrap_or(text.len());
    let (first, second) = text.split_at(split);
    let mut store = ConfigStore::new();
    let options = RegistryOptions::default();
    let mut registry = ServiceRegistry::new(options.clone(), AddressAllocator::default());
    let changes = store.apply_batch(vec![("a.yaml".into(), Some(contents("a.yaml", first))), ("b.yaml".into(), Some(contents("b.yaml", second)))]);
    registry.update(&store, &changes);
    let changes = store.apply_batch(vec![("a.yaml".into(), Some(contents("a.yaml", second))), ("b.yaml".into(), None)]);
    registry.update(&store, &changes);

    let mut alloc = registry.allocator().clone();
    let full = ServiceRegistry::build(&store, &options, &mut alloc);
    let incremental: Vec<_> = registry.services().map(|s| (s.as_ref().clone(), registry.endpoints(&s.key()).to_vec())).collect();
    let rebuilt: Vec<_> = full.services().map(|s| (s.as_ref().clone(), full.endpoints(&s.key()).to_vec())).collect();
    assert!(incremental == rebuilt, "incremental and full registries differ:\n{incremental:#?}\n{rebuilt:#?}");

    let mesh = store.mesh_defaults();
    for proxy in ["sidecar:default/app:app=a,version=v1", "router:istio-system/gw:istio=ingressgateway", "proxyless:other/client"] {
        if let Ok(p) = Proxy::parse(proxy) {
            let _ = ProxyView::build(&store, &registry, &mesh, &options.domain_suffix, &p);
        }
    }
    let _ = conditions::compute(&store, &registry, &mesh, &options.domain_suffix);
});

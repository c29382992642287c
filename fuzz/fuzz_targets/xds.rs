//! Arbitrary documents through the model and the xDS generators for a sidecar, a gateway and a
//! proxyless client: nothing may panic, and every generated resource must render against
//! Envoy's descriptors (so no malformed typed config is ever produced).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use weir_model::registry::RegistryOptions;
use weir_model::registry::alloc::AddressAllocator;
use weir_model::store::FileContents;
use weir_model::{ConfigStore, Proxy};
use weir_xds::model::Model;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut store = ConfigStore::new();
    let contents = FileContents::from_checked(Path::new("a.yaml"), weir_api::check_text(text, "default"));
    store.apply_batch(vec![("a.yaml".into(), Some(contents))]);
    let model = Model::new(store, AddressAllocator::default(), RegistryOptions::default());
    for proxy in [
        "sidecar:default/app:app=a,version=v1,topology.kubernetes.io/region=r,topology.kubernetes.io/zone=z",
        "router:istio-system/gw:istio=ingressgateway",
        "proxyless:default/client",
    ] {
        if let Ok(p) = Proxy::parse(proxy) {
            let (_, resources) = model.generate(&p);
            if let Err(e) = resources.to_json() {
                panic!("a generated resource does not render: {e}");
            }
        }
    }
});

//! Writes seeds for the `proxy` fuzz target: every resource generated for the scenario folders,
//! and a bootstrap with an overload manager and runtime layers, encoded, each prefixed with the
//! byte that selects its type in the target.
//!
//! `cargo run -p weir-proxy --example fuzz_seeds -- fuzz/corpus/proxy`

use std::path::Path;

use prost::Message;
use weir_model::registry::RegistryOptions;
use weir_model::registry::alloc::AddressAllocator;
use weir_model::{ConfigStore, FolderSource, Proxy};

fn main() -> Result<(), String> {
    let out = std::env::args().nth(1).ok_or("usage: fuzz_seeds OUTPUT_DIR")?;
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let scenarios = Path::new(env!("CARGO_MANIFEST_DIR")).join("../weir-xds/tests/scenarios");
    let mut n = 0;
    for (folder, proxy) in [
        ("mesh", "sidecar:shop/productpage-v1:app=productpage,version=v1"),
        ("gateway", "router:edge/ingress:istio=ingressgateway"),
        (
            "egress",
            "router:istio-system/istio-egressgateway-1:istio=egressgateway",
        ),
    ] {
        let mut store = ConfigStore::new();
        FolderSource::new(scenarios.join(folder), "default")
            .map_err(|e| e.to_string())?
            .load_all(&mut store)
            .map_err(|e| e.to_string())?;
        let model =
            weir_xds::model::Model::new(store, AddressAllocator::default(), RegistryOptions::default());
        let (_, r) = model.generate(&Proxy::parse(proxy).map_err(|e| e.to_string())?);
        let mut write = |kind: u8, bytes: Vec<u8>| -> Result<(), String> {
            let mut seed = vec![kind];
            seed.extend(bytes);
            n += 1;
            std::fs::write(Path::new(&out).join(format!("seed-{n}")), seed).map_err(|e| e.to_string())
        };
        for l in r.listeners.values() {
            write(0, l.encode_to_vec())?;
        }
        for c in r.clusters.values() {
            write(1, c.encode_to_vec())?;
        }
        for rc in r.routes.values() {
            write(2, rc.encode_to_vec())?;
        }
        for e in r.endpoints.values() {
            write(3, e.encode_to_vec())?;
        }
    }
    let bootstrap = serde_json::json!({
        "overload_manager": {
            "refresh_interval": "0.25s",
            "resource_monitors": [
                {"name": "heap", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig",
                    "max_heap_size_bytes": 1048576}},
                {"name": "connections", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                    "max_active_downstream_connections": 100}}],
            "actions": [
                {"name": "envoy.overload_actions.shrink_heap",
                 "triggers": [{"name": "heap", "threshold": {"value": 0.9}}]},
                {"name": "envoy.overload_actions.stop_accepting_requests",
                 "triggers": [{"name": "heap", "scaled": {"scaling_threshold": 0.8, "saturation_threshold": 0.95}}]}]
        },
        "layered_runtime": {"layers": [{"name": "static", "static_layer": {
            "envoy": {"resource_limits": {"listener": {"l": {"connection_limit": 10}}}}}}]}
    });
    let encoded = weir_xds::json::from_json("envoy.config.bootstrap.v3.Bootstrap", &bootstrap)
        .map_err(|e| e.to_string())?;
    let mut seed = vec![5];
    seed.extend(encoded);
    n += 1;
    std::fs::write(Path::new(&out).join(format!("seed-{n}")), seed).map_err(|e| e.to_string())?;
    println!("{n} seeds in {out}");
    Ok(())
}

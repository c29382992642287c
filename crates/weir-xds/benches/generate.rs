//! Generation time for one sidecar seeing 10,000 services (the goal is under 200 ms), and for
//! an endpoint-only regeneration. `cargo bench -p weir-xds --bench generate`

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark with bad fixed input should stop loudly

use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use weir_model::registry::RegistryOptions;
use weir_model::registry::alloc::AddressAllocator;
use weir_model::store::FileContents;
use weir_model::{ConfigStore, Proxy};
use weir_xds::generator;
use weir_xds::model::Model;

#[path = "../../weir-model/benches/support/generate.rs"]
mod mesh;

fn model(services: usize) -> Model {
    let mut store = ConfigStore::new();
    let batch = mesh::mesh(services, services / 10, services / 10)
        .into_iter()
        .map(|(f, t)| {
            let path = PathBuf::from(f);
            let contents = FileContents::from_checked(&path, weir_api::check_text(&t, "default"));
            (path, Some(contents))
        })
        .collect();
    store.apply_batch(batch);
    Model::new(store, AddressAllocator::default(), RegistryOptions::default())
}

fn bench(c: &mut Criterion) {
    let m = model(10_000);
    let sidecar = Proxy::parse("sidecar:team-1/app:app=x").expect("proxy");
    let mut group = c.benchmark_group("xds_10k_services");
    group.sample_size(10);
    group.bench_function("sidecar_view_and_resources", |b| b.iter(|| m.generate(&sidecar)));
    let (view, resources) = m.generate(&sidecar);
    // The size of what this sidecar is sent, per type (printed once; docs/performance.md).
    for type_url in generator::TYPE_URLS {
        let set = resources.encoded(type_url).unwrap_or_default();
        let bytes: usize = set.values().map(|e| e.bytes.len()).sum();
        eprintln!("{type_url}: {} resources, {bytes} bytes", set.len());
    }
    group.bench_function("sidecar_resources_from_view", |b| {
        b.iter(|| generator::generate(&m.inputs(), &view))
    });
    group.bench_function("encode_all_types", |b| {
        b.iter(|| generator::TYPE_URLS.map(|t| resources.encoded(t).map(|s| s.len())))
    });
    let hosts = std::iter::once("svc-1.team-1.example.com".to_string()).collect();
    group.bench_function("endpoint_only_regeneration", |b| {
        b.iter(|| generator::regenerate_endpoints(&m.inputs(), &view, resources.endpoints.keys(), &hosts))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

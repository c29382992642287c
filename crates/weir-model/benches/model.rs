//! The model at scale: 10,000 ServiceEntries, 1,000 VirtualServices, 1,000 DestinationRules.
//! Goals: full build under 1 s; one changed ServiceEntry applied in under 5 ms.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use weir_model::registry::RegistryOptions;
use weir_model::registry::alloc::AddressAllocator;
use weir_model::store::FileContents;
use weir_model::{ConfigStore, ServiceRegistry};

mod support {
    pub mod generate;
}

fn parse(file: &str, text: &str) -> (PathBuf, Option<FileContents>) {
    let path = PathBuf::from(file);
    let contents = FileContents::from_checked(&path, weir_api::check_text(text, "default"));
    (path, Some(contents))
}

fn model(c: &mut Criterion) {
    let mesh = support::generate::mesh(10_000, 1_000, 1_000);
    let parsed: Vec<(PathBuf, Option<FileContents>)> = mesh.iter().map(|(f, t)| parse(f, t)).collect();
    let mut group = c.benchmark_group("model");
    group.sample_size(10);

    // Parsing excluded: the store and the registry from already-validated objects.
    group.bench_function("full_build_10k_se_1k_vs_1k_dr", |b| {
        b.iter_batched(
            || parsed.clone(),
            |batch| {
                let mut store = ConfigStore::new();
                store.apply_batch(batch);
                let registry = ServiceRegistry::build(
                    &store,
                    &RegistryOptions::default(),
                    &mut AddressAllocator::default(),
                );
                assert_eq!(registry.len(), 10_000);
                (store, registry)
            },
            BatchSize::LargeInput,
        )
    });

    // One ServiceEntry edited: parse its file, update the store, update the registry.
    let mut store = ConfigStore::new();
    store.apply_batch(parsed.clone());
    let mut registry = ServiceRegistry::build(
        &store,
        &RegistryOptions::default(),
        &mut AddressAllocator::default(),
    );
    let mut generation = 0u32;
    group.sample_size(100);
    group.bench_function("one_service_entry_changed", |b| {
        b.iter(|| {
            generation += 1;
            let i = 4_243 + (generation as usize % 2) * 2; // alternate a STATIC and a DNS entry
            let (path, contents) = parse(
                &format!("se/{i:05}.yaml"),
                &support::generate::service_entry(i, generation),
            );
            let changes = store.apply_batch(vec![(path, contents)]);
            let delta = registry.update(&store, black_box(&changes));
            assert_eq!(delta.services.len(), 1);
            delta
        })
    });
    group.finish();
}

criterion_group!(benches, model);
criterion_main!(benches);

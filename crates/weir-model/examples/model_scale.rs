//! Builds the benchmark mesh (10,000 ServiceEntries, 1,000 VirtualServices, 1,000
//! DestinationRules) from YAML, applies one change, and prints the times and the peak memory
//! (VmHWM) — the figures in docs/performance.md. `cargo run --release -p weir-model --example model_scale`

use std::path::PathBuf;
use std::time::Instant;

use weir_model::registry::RegistryOptions;
use weir_model::registry::alloc::AddressAllocator;
use weir_model::store::FileContents;
use weir_model::{ConfigStore, ServiceRegistry};

#[path = "../benches/support/generate.rs"]
mod generate;

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn main() {
    let mesh = generate::mesh(10_000, 1_000, 1_000);
    let start = Instant::now();
    let parsed: Vec<(PathBuf, Option<FileContents>)> = mesh
        .iter()
        .map(|(f, t)| {
            (
                PathBuf::from(f),
                Some(FileContents::from_checked(
                    &PathBuf::from(f),
                    weir_api::check_text(t, "default"),
                )),
            )
        })
        .collect();
    let parse = start.elapsed();
    let start = Instant::now();
    let mut store = ConfigStore::new();
    store.apply_batch(parsed);
    let registry_start = Instant::now();
    let mut registry = ServiceRegistry::build(
        &store,
        &RegistryOptions::default(),
        &mut AddressAllocator::default(),
    );
    let build = start.elapsed();
    let registry_only = registry_start.elapsed();
    let mut changes_took = Vec::new();
    for generation in 1..=20 {
        let start = Instant::now();
        let i = 4_243 + (generation as usize % 2) * 1_000;
        let text = generate::service_entry(i, generation);
        let path = PathBuf::from(format!("se/{i:05}.yaml"));
        let changes = store.apply_batch(vec![(
            path.clone(),
            Some(FileContents::from_checked(
                &path,
                weir_api::check_text(&text, "default"),
            )),
        )]);
        let delta = registry.update(&store, &changes);
        assert_eq!(delta.services.len(), 1);
        changes_took.push(start.elapsed());
    }
    let mut warm = changes_took[1..].to_vec();
    warm.sort();
    println!("objects: {} ({} services)", store.len(), registry.len());
    println!("parse + validate 12,000 documents: {parse:.2?}");
    println!("full build (store + registry): {build:.2?} (registry alone {registry_only:.2?})");
    println!(
        "one ServiceEntry changed (parse, store, registry): first {:.2?}, then median {:.2?}, max {:.2?}",
        changes_took[0],
        warm[warm.len() / 2],
        warm[warm.len() - 1]
    );
    println!("peak RSS: {:.1} MB", peak_rss_mb());
}

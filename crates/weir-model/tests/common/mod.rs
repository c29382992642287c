//! Helpers shared by the model's integration tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // each test file uses a part; a panic is a failed test

use std::path::{Path, PathBuf};

use weir_model::registry::RegistryOptions;
use weir_model::registry::alloc::AddressAllocator;
use weir_model::{ConfigStore, FolderSource, ServiceRegistry};

/// `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Loads a folder into a store and builds its registry; every document must be valid.
pub fn load(dir: &Path) -> (ConfigStore, ServiceRegistry) {
    let mut store = ConfigStore::new();
    FolderSource::new(dir, "default")
        .unwrap()
        .load_all(&mut store)
        .unwrap();
    registry_of(store)
}

/// Builds the registry of a store whose documents must all be valid.
pub fn registry_of(store: ConfigStore) -> (ConfigStore, ServiceRegistry) {
    let rejected: Vec<_> = store
        .rejected()
        .map(|r| format!("{}: {:?}", r.subject, r.findings))
        .collect();
    assert!(rejected.is_empty(), "fixtures must be valid: {rejected:?}");
    let registry = ServiceRegistry::build(
        &store,
        &RegistryOptions::default(),
        &mut AddressAllocator::default(),
    );
    (store, registry)
}

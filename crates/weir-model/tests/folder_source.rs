//! The folder source and the store, on real files in a real folder, watched by the real
//! filesystem notifier.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use weir_api::types::networking::OutboundMode;
use weir_model::{Change, ConfigStore, FolderSource, ObjectKey};

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("folder-source")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn se(name: &str, host: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: {name}\nspec:\n  hosts: [{host}]\n  ports: [{{number: 443, name: https, protocol: HTTPS}}]\n  resolution: DNS\n"
    )
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::new("ServiceEntry", "default", name)
}

fn load(dir: &Path) -> (FolderSource, ConfigStore, Vec<Change>) {
    let source = FolderSource::new(dir, "default").unwrap();
    let mut store = ConfigStore::new();
    let changes = source.load_all(&mut store).unwrap();
    (source, store, changes)
}

#[test]
fn loads_every_file_with_origins() {
    let dir = scratch("load");
    std::fs::create_dir_all(dir.join("team-a")).unwrap();
    std::fs::write(
        dir.join("a.yaml"),
        format!(
            "{}---\n{}",
            se("one", "one.example.com"),
            se("two", "two.example.com")
        ),
    )
    .unwrap();
    std::fs::write(dir.join("team-a/svc.yaml"), "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: team-a}\nspec: {ports: [{port: 9080, name: http}], selector: {app: reviews}}\n").unwrap();
    std::fs::write(dir.join(".swap.yaml"), se("hidden", "hidden.example.com")).unwrap();
    std::fs::write(dir.join("notes.txt"), "not config").unwrap();
    let (_, store, changes) = load(&dir);
    assert_eq!(changes.len(), 3, "{changes:?}");
    assert_eq!(store.len(), 3);
    let two = store.get(&key("two")).unwrap();
    assert_eq!(two.origin.file, dir.join("a.yaml"));
    assert_eq!(two.origin.line, 10);
    assert_eq!(two.generation, 1);
    assert!(
        store
            .get(&ObjectKey::new("Service", "team-a", "reviews"))
            .is_some()
    );
    assert!(store.get(&key("hidden")).is_none());
    assert_eq!(store.of_kind("ServiceEntry").count(), 2);
}

#[test]
fn an_invalid_object_is_rejected_alone() {
    let dir = scratch("invalid");
    let bad = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: bad}\nspec: {hosts: [\"*\"]}\n";
    std::fs::write(
        dir.join("mixed.yaml"),
        format!(
            "{}---\n{bad}---\n{}",
            se("good", "good.example.com"),
            se("also", "also.example.com")
        ),
    )
    .unwrap();
    let (_, store, _) = load(&dir);
    assert_eq!(store.len(), 2);
    let rejected: Vec<_> = store.rejected().collect();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].subject, "ServiceEntry default/bad");
    assert_eq!(rejected[0].origin.line, 10);
    assert!(
        rejected[0].findings[0]
            .text()
            .contains("hostname cannot be wildcard")
    );
}

#[test]
fn editing_a_file_changes_only_what_changed() {
    let dir = scratch("edit");
    let file = dir.join("f.yaml");
    std::fs::write(
        &file,
        format!(
            "{}---\n{}",
            se("keep", "keep.example.com"),
            se("edit", "edit.example.com")
        ),
    )
    .unwrap();
    let (source, mut store, _) = load(&dir);
    std::fs::write(
        &file,
        format!(
            "{}---\n{}---\n{}",
            se("keep", "keep.example.com"),
            se("edit", "changed.example.com"),
            se("new", "new.example.com")
        ),
    )
    .unwrap();
    let changes = source.refresh(&mut store, std::slice::from_ref(&file));
    assert_eq!(
        changes,
        vec![Change::Updated(key("edit")), Change::Added(key("new"))],
        "changes come in key order"
    );
    assert_eq!(store.get(&key("edit")).unwrap().generation, 2);
    assert_eq!(store.get(&key("keep")).unwrap().generation, 1);
    std::fs::write(&file, se("keep", "keep.example.com")).unwrap();
    let changes = source.refresh(&mut store, std::slice::from_ref(&file));
    assert_eq!(
        changes,
        vec![Change::Deleted(key("edit")), Change::Deleted(key("new"))]
    );
}

#[test]
fn deleting_and_renaming_files_and_folders() {
    let dir = scratch("delete");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("a.yaml"), se("a", "a.example.com")).unwrap();
    std::fs::write(dir.join("sub/b.yaml"), se("b", "b.example.com")).unwrap();
    let (source, mut store, _) = load(&dir);

    // A rename moves the definition; the object itself does not change.
    std::fs::rename(dir.join("a.yaml"), dir.join("renamed.yaml")).unwrap();
    let changes = source.refresh(&mut store, &[dir.join("a.yaml"), dir.join("renamed.yaml")]);
    assert!(changes.is_empty(), "{changes:?}");
    assert_eq!(
        store.get(&key("a")).unwrap().origin.file,
        dir.join("renamed.yaml")
    );

    // Deleting a folder deletes what its files defined.
    std::fs::remove_dir_all(dir.join("sub")).unwrap();
    assert_eq!(
        source.refresh(&mut store, &[dir.join("sub")]),
        vec![Change::Deleted(key("b"))]
    );

    std::fs::remove_file(dir.join("renamed.yaml")).unwrap();
    assert_eq!(
        source.refresh(&mut store, &[dir.join("renamed.yaml")]),
        vec![Change::Deleted(key("a"))]
    );
    assert!(store.is_empty());
}

#[test]
fn the_same_object_in_two_files_uses_the_first_and_reports_the_other() {
    let dir = scratch("duplicate");
    std::fs::write(dir.join("a.yaml"), se("dup", "first.example.com")).unwrap();
    std::fs::write(dir.join("b.yaml"), se("dup", "second.example.com")).unwrap();
    let (source, mut store, _) = load(&dir);
    let stored = store.get(&key("dup")).unwrap();
    assert_eq!(stored.origin.file, dir.join("a.yaml"));
    let dups = store.duplicates();
    assert_eq!(dups.len(), 1);
    assert_eq!(dups[0].ignored.file, dir.join("b.yaml"));
    std::fs::remove_file(dir.join("a.yaml")).unwrap();
    assert_eq!(
        source.refresh(&mut store, &[dir.join("a.yaml")]),
        vec![Change::Updated(key("dup"))]
    );
    assert_eq!(store.get(&key("dup")).unwrap().origin.file, dir.join("b.yaml"));
}

#[test]
fn creation_time_comes_from_metadata_or_first_sight() {
    let dir = scratch("time");
    let stamped = se("old", "old.example.com").replace(
        "  name: old\n",
        "  name: old\n  creationTimestamp: \"2020-01-02T03:04:05Z\"\n",
    );
    std::fs::write(
        dir.join("a.yaml"),
        format!("{stamped}---\n{}", se("new", "new.example.com")),
    )
    .unwrap();
    let (source, mut store, _) = load(&dir);
    let old = store
        .get(&key("old"))
        .unwrap()
        .creation_time
        .duration_since(UNIX_EPOCH)
        .unwrap();
    assert_eq!(old.as_secs(), 1_577_934_245);
    let first_seen = store.get(&key("new")).unwrap().creation_time;
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(
        dir.join("a.yaml"),
        format!("{stamped}---\n{}", se("new", "changed.example.com")),
    )
    .unwrap();
    source.refresh(&mut store, &[dir.join("a.yaml")]);
    assert_eq!(
        store.get(&key("new")).unwrap().creation_time,
        first_seen,
        "first-seen time survives updates"
    );
}

#[test]
fn mesh_config_from_a_file_or_the_istio_config_map_else_defaults() {
    let dir = scratch("mesh");
    std::fs::write(dir.join("a.yaml"), se("a", "a.example.com")).unwrap();
    let (source, mut store, _) = load(&dir);
    assert_eq!(
        store.mesh_defaults().outbound_traffic_policy,
        OutboundMode::AllowAny
    );
    assert_eq!(store.mesh_defaults().root_namespace, "istio-system");

    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |\n    rootNamespace: mesh-root\n";
    std::fs::write(dir.join("istio.yaml"), cm).unwrap();
    let changes = source.refresh(&mut store, &[dir.join("istio.yaml")]);
    assert!(changes.contains(&Change::MeshConfig), "{changes:?}");
    assert_eq!(store.mesh_defaults().root_namespace, "mesh-root");

    std::fs::write(
        dir.join("mesh.yaml"),
        "outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n",
    )
    .unwrap();
    let changes = source.refresh(&mut store, &[dir.join("mesh.yaml")]);
    assert_eq!(changes, vec![Change::MeshConfig]);
    assert_eq!(
        store.mesh_defaults().outbound_traffic_policy,
        OutboundMode::RegistryOnly
    );
    assert_eq!(store.mesh_origin().unwrap().file, dir.join("mesh.yaml"));

    std::fs::write(
        dir.join("mesh.yaml"),
        "outboundTrafficPolicy:\n  mode: SOMETIMES\n",
    )
    .unwrap();
    source.refresh(&mut store, &[dir.join("mesh.yaml")]);
    let rejected: Vec<_> = store.rejected().collect();
    assert_eq!(rejected.len(), 1);
    assert!(
        rejected[0].findings[0]
            .text()
            .contains("Unsupported value: \"SOMETIMES\"")
    );
    assert_eq!(
        store.mesh_defaults().root_namespace,
        "mesh-root",
        "a broken mesh file falls back to the ConfigMap"
    );
}

/// Waits for the watcher to report `want`, collecting batches for up to ten seconds.
fn wait_for(watch: &weir_model::FolderWatch, want: &Path) -> Vec<PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Some(batch) = watch.next_batch(Duration::from_millis(200)) {
            seen.extend(batch.unwrap());
            if seen.iter().any(|p| p == want) {
                return seen;
            }
        }
    }
    panic!(
        "watcher did not report {} within 10s; saw {seen:?}",
        want.display()
    );
}

#[test]
fn the_watcher_reports_created_modified_and_deleted_files() {
    let dir = scratch("watch");
    let (source, mut store, _) = load(&dir);
    let watch = source.watch().unwrap();
    let file = dir.join("new.yaml");

    std::fs::write(&file, se("w", "w.example.com")).unwrap();
    let batch = wait_for(&watch, &file);
    assert_eq!(source.refresh(&mut store, &batch), vec![Change::Added(key("w"))]);

    std::fs::write(&file, se("w", "changed.example.com")).unwrap();
    let batch = wait_for(&watch, &file);
    assert_eq!(
        source.refresh(&mut store, &batch),
        vec![Change::Updated(key("w"))]
    );

    std::fs::remove_file(&file).unwrap();
    let batch = wait_for(&watch, &file);
    assert_eq!(
        source.refresh(&mut store, &batch),
        vec![Change::Deleted(key("w"))]
    );
}

#[test]
fn a_missing_folder_is_an_error() {
    let err = FolderSource::new("/nonexistent/weir", "default").unwrap_err();
    assert!(
        err.to_string().starts_with("cannot read /nonexistent/weir"),
        "{err}"
    );
    let file = scratch("not-a-folder").join("f.yaml");
    std::fs::write(&file, "a: 1").unwrap();
    assert!(
        FolderSource::new(&file, "default")
            .unwrap_err()
            .to_string()
            .ends_with("is not a folder")
    );
}

#[test]
fn the_source_trait_loads_then_polls_changes() {
    use weir_model::{ConfigSource, WatchedFolder};
    let dir = scratch("trait");
    std::fs::write(dir.join("a.yaml"), se("a", "a.example.com")).unwrap();
    let mut source: Box<dyn ConfigSource> =
        Box::new(WatchedFolder::new(FolderSource::new(&dir, "default").unwrap()));
    let mut store = ConfigStore::new();
    assert_eq!(source.load(&mut store).unwrap(), vec![Change::Added(key("a"))]);
    assert!(
        source
            .poll(&mut store, Duration::from_millis(100))
            .unwrap()
            .is_empty(),
        "nothing changed"
    );
    std::fs::write(dir.join("b.yaml"), se("b", "b.example.com")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut changes = Vec::new();
    while changes.is_empty() && Instant::now() < deadline {
        changes = source.poll(&mut store, Duration::from_millis(200)).unwrap();
    }
    assert_eq!(changes, vec![Change::Added(key("b"))]);
}

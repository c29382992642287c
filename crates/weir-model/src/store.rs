//! The config store: every accepted object, with where it came from, fed file by file (or object
//! by object) by a source, and reporting each change as an add, update or delete of one object.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use weir_api::types::mesh::{MeshConfig, MeshDefaults};
use weir_api::{Checked, Finding, Resource, Verdict};

use crate::timestamp;

/// The namespace whose `istio` ConfigMap carries the MeshConfig, as for istiod.
pub const ISTIO_NAMESPACE: &str = "istio-system";

/// The identity of an object: kind, namespace (empty for cluster-scoped kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// Kind (`ServiceEntry`, `Service`, …).
    pub kind: String,
    /// Namespace; empty for cluster-scoped kinds.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// A key from its parts.
    pub fn new(kind: impl Into<String>, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of a decoded resource.
    pub fn of(resource: &Resource) -> Self {
        let meta = resource.metadata();
        let namespace = if resource.kind() == "Namespace" {
            ""
        } else {
            meta.namespace.as_deref().unwrap_or("")
        };
        ObjectKey::new(resource.kind(), namespace, meta.name.as_deref().unwrap_or(""))
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// Where a definition came from: a file and the line its document starts on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    /// The file (or a source name such as `kubernetes`).
    pub file: PathBuf,
    /// The line the object's document starts on (0 when not from a file).
    pub line: u32,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// An accepted object.
#[derive(Clone, Debug)]
pub struct StoredObject {
    /// Identity.
    pub key: ObjectKey,
    /// The decoded, validated resource.
    pub resource: Arc<Resource>,
    /// `metadata.generation` when set, else 1 on creation plus one per change of content.
    pub generation: i64,
    /// `metadata.creationTimestamp` when set, else when Weir first saw the object.
    pub creation_time: SystemTime,
    /// Where the active definition is.
    pub origin: Origin,
    /// Validation warnings (the object was accepted with them).
    pub warnings: Vec<Finding>,
    /// Health reported by a readiness probe (a WorkloadEntry's `Healthy` condition in Istio);
    /// `None` until a probe reports.
    pub health: Option<bool>,
}

/// Istio's annotation that puts a WorkloadEntry under health checks: it takes traffic only
/// once a probe has reported it healthy.
pub const HEALTH_CHECKS_ANNOTATION: &str = "proxy.istio.io/health-checks-enabled";

impl StoredObject {
    /// Whether this object is under health checks (the annotation is `"true"`).
    pub fn health_checked(&self) -> bool {
        self.annotations()
            .get(HEALTH_CHECKS_ANNOTATION)
            .is_some_and(|v| v == "true")
    }

    /// Labels from metadata.
    pub fn labels(&self) -> &weir_api::types::Labels {
        use weir_api::types::OrEmpty;
        self.resource.metadata().labels.or_empty()
    }

    /// Annotations from metadata.
    pub fn annotations(&self) -> &weir_api::types::Labels {
        use weir_api::types::OrEmpty;
        self.resource.metadata().annotations.or_empty()
    }
}

/// An object that failed validation: kept out of the store, reported.
#[derive(Clone, Debug)]
pub struct Rejected {
    /// Where it is.
    pub origin: Origin,
    /// `Kind namespace/name`, or a description of the document.
    pub subject: String,
    /// Its errors and warnings, with positions.
    pub findings: Vec<Finding>,
}

/// A second definition of an object that another file already defines: not used, reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Duplicate {
    /// The object.
    pub key: ObjectKey,
    /// The definition in use (the first by file path, then line).
    pub active: Origin,
    /// The definition that is ignored.
    pub ignored: Origin,
}

/// One change to the store.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// A new object.
    Added(ObjectKey),
    /// An object whose content changed.
    Updated(ObjectKey),
    /// An object that is gone.
    Deleted(ObjectKey),
    /// The MeshConfig changed.
    MeshConfig,
}

/// Everything a source read from one file.
#[derive(Clone, Debug, Default)]
pub struct FileContents {
    /// Accepted resources, each with the line its document starts on and its warnings.
    pub objects: Vec<(Resource, u32, Vec<Finding>)>,
    /// Documents that failed.
    pub rejected: Vec<Rejected>,
    /// A MeshConfig, when the file is a mesh config file.
    pub mesh: Option<(MeshConfig, Vec<Finding>)>,
}

impl FileContents {
    /// Sorts checked resources into accepted objects and rejected documents.
    pub fn from_checked(file: &Path, checked: Vec<Checked>) -> Self {
        let mut contents = FileContents::default();
        for c in checked {
            let origin = Origin {
                file: file.to_path_buf(),
                line: c.pos.line,
            };
            if c.verdict == Verdict::Invalid {
                let subject = subject_of(&c.kind, &c.namespace, &c.name, c.pos.line);
                contents.rejected.push(Rejected {
                    origin,
                    subject,
                    findings: c.findings,
                });
            } else if let Some(resource) = c.resource {
                // Valid Istio objects, and the Kubernetes kinds the registry reads (listed as
                // skipped by validation). Kinds Weir does not read have no resource.
                contents.objects.push((resource, c.pos.line, c.findings));
            }
        }
        contents
    }
}

fn subject_of(kind: &Option<String>, ns: &Option<String>, name: &Option<String>, line: u32) -> String {
    match (kind, ns, name) {
        (Some(k), Some(ns), Some(n)) => format!("{k} {ns}/{n}"),
        (Some(k), None, Some(n)) => format!("{k} {n}"),
        _ => format!("document at line {line}"),
    }
}

#[derive(Clone, Debug)]
struct Definition {
    resource: Arc<Resource>,
    warnings: Vec<Finding>,
}

#[derive(Clone, Debug, Default)]
struct FileEntry {
    keys: BTreeSet<ObjectKey>,
    rejected: Vec<Rejected>,
    mesh: Option<(MeshConfig, Vec<Finding>)>,
}

/// The config store.
#[derive(Debug, Default)]
pub struct ConfigStore {
    objects: BTreeMap<ObjectKey, StoredObject>,
    /// Every definition of every key, by origin; the smallest origin is active.
    definitions: BTreeMap<ObjectKey, BTreeMap<Origin, Definition>>,
    files: BTreeMap<PathBuf, FileEntry>,
    /// Files that carry a MeshConfig (so that finding it does not scan every file).
    mesh_files: BTreeSet<PathBuf>,
    mesh: MeshConfig,
    mesh_origin: Option<Origin>,
    revision: u64,
}

impl ConfigStore {
    /// An empty store with Istio's default MeshConfig.
    pub fn new() -> Self {
        ConfigStore::default()
    }

    /// The object with `key`.
    pub fn get(&self, key: &ObjectKey) -> Option<&StoredObject> {
        self.objects.get(key)
    }

    /// All objects, ordered by key.
    pub fn objects(&self) -> impl Iterator<Item = &StoredObject> {
        self.objects.values()
    }

    /// All objects of one kind, ordered by namespace and name.
    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a StoredObject> + 'a {
        let start = ObjectKey::new(kind, "", "");
        self.objects
            .range(start..)
            .take_while(move |(k, _)| k.kind == kind)
            .map(|(_, o)| o)
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether the store holds no objects.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// The MeshConfig in force (Istio's defaults when none was given).
    pub fn mesh(&self) -> &MeshConfig {
        &self.mesh
    }

    /// The MeshConfig with Istio's defaults filled in.
    pub fn mesh_defaults(&self) -> MeshDefaults {
        self.mesh.effective()
    }

    /// Where the MeshConfig in force came from.
    pub fn mesh_origin(&self) -> Option<&Origin> {
        self.mesh_origin.as_ref()
    }

    /// Increases with every change.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Documents that failed validation, by file.
    pub fn rejected(&self) -> impl Iterator<Item = &Rejected> {
        self.files.values().flat_map(|f| f.rejected.iter())
    }

    /// Objects defined more than once, with the definition that is ignored.
    pub fn duplicates(&self) -> Vec<Duplicate> {
        let mut out = Vec::new();
        for (key, defs) in &self.definitions {
            let mut origins = defs.keys();
            if let Some(active) = origins.next() {
                for ignored in origins {
                    out.push(Duplicate {
                        key: key.clone(),
                        active: active.clone(),
                        ignored: ignored.clone(),
                    });
                }
            }
        }
        out
    }

    /// Files the store holds definitions from.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.keys().map(PathBuf::as_path)
    }

    /// Replaces everything `file` defined with `contents`, and reports what changed.
    pub fn replace_file(&mut self, file: &Path, contents: FileContents) -> Vec<Change> {
        self.apply_batch(vec![(file.to_path_buf(), Some(contents))])
    }

    /// Records the health a probe reported for `key`; a change when it differs from what was
    /// known (and the object exists).
    pub fn set_health(&mut self, key: &ObjectKey, healthy: bool) -> Vec<Change> {
        match self.objects.get_mut(key) {
            Some(o) if o.health != Some(healthy) => {
                o.health = Some(healthy);
                self.revision += 1;
                vec![Change::Updated(key.clone())]
            }
            _ => Vec::new(),
        }
    }

    /// Forgets everything `file` defined (the file was deleted).
    pub fn remove_file(&mut self, file: &Path) -> Vec<Change> {
        self.apply_batch(vec![(file.to_path_buf(), None)])
    }

    /// Applies several file changes as one: `Some(contents)` replaces what a file defined, `None`
    /// forgets the file. Objects are compared once all files are applied, so moving an object
    /// from one file to another (a rename) is not reported as a change. Changes come in key order.
    pub fn apply_batch(&mut self, batch: Vec<(PathBuf, Option<FileContents>)>) -> Vec<Change> {
        let mut touched: BTreeSet<ObjectKey> = BTreeSet::new();
        for (file, contents) in batch {
            self.apply_file(&file, contents, &mut touched);
        }
        let mut changes: Vec<Change> = touched.into_iter().filter_map(|k| self.settle(k)).collect();
        if self.settle_mesh() {
            changes.push(Change::MeshConfig);
        }
        if !changes.is_empty() {
            self.revision += 1;
        }
        changes
    }

    fn apply_file(&mut self, file: &Path, contents: Option<FileContents>, touched: &mut BTreeSet<ObjectKey>) {
        let old = self.files.remove(file).unwrap_or_default();
        for key in old.keys {
            if let Some(defs) = self.definitions.get_mut(&key) {
                defs.retain(|origin, _| origin.file != file);
            }
            touched.insert(key);
        }
        self.mesh_files.remove(file);
        let Some(contents) = contents else { return };
        if contents.mesh.is_some() {
            self.mesh_files.insert(file.to_path_buf());
        }
        let mut entry = FileEntry {
            keys: BTreeSet::new(),
            rejected: contents.rejected,
            mesh: contents.mesh,
        };
        for (resource, line, warnings) in contents.objects {
            let key = ObjectKey::of(&resource);
            let origin = Origin {
                file: file.to_path_buf(),
                line,
            };
            let definition = Definition {
                resource: Arc::new(resource),
                warnings,
            };
            self.definitions
                .entry(key.clone())
                .or_default()
                .insert(origin, definition);
            entry.keys.insert(key.clone());
            touched.insert(key);
        }
        self.files.insert(file.to_path_buf(), entry);
    }

    /// Brings the stored object for `key` in line with its definitions; returns the change, if any.
    fn settle(&mut self, key: ObjectKey) -> Option<Change> {
        let active = self
            .definitions
            .get(&key)
            .and_then(|d| d.iter().next())
            .map(|(o, d)| (o.clone(), d.clone()));
        let Some((origin, def)) = active else {
            self.definitions.remove(&key);
            return self.objects.remove(&key).map(|_| Change::Deleted(key));
        };
        let meta = def.resource.metadata();
        let declared_time = meta
            .creation_timestamp
            .as_deref()
            .and_then(timestamp::parse_rfc3339);
        match self.objects.get_mut(&key) {
            Some(existing) => {
                existing.origin = origin;
                existing.warnings = def.warnings;
                if existing.resource == def.resource {
                    return None;
                }
                existing.generation = meta.generation.unwrap_or(existing.generation + 1);
                if let Some(t) = declared_time {
                    existing.creation_time = t;
                }
                existing.resource = def.resource;
                Some(Change::Updated(key))
            }
            None => {
                let stored = StoredObject {
                    key: key.clone(),
                    generation: meta.generation.unwrap_or(1),
                    creation_time: declared_time.unwrap_or_else(SystemTime::now),
                    resource: def.resource,
                    origin,
                    warnings: def.warnings,
                    health: None,
                };
                self.objects.insert(key.clone(), stored);
                Some(Change::Added(key))
            }
        }
    }

    /// Picks the MeshConfig in force: the first mesh config file by path, else the `istio`
    /// ConfigMap of the root namespace, else Istio's defaults. Returns whether it changed.
    fn settle_mesh(&mut self) -> bool {
        let from_file = self.mesh_files.iter().find_map(|path| {
            let (mesh, _) = self.files.get(path)?.mesh.as_ref()?;
            Some((
                mesh.clone(),
                Origin {
                    file: path.clone(),
                    line: 1,
                },
            ))
        });
        let from_config_map = || {
            let stored = self
                .objects
                .get(&ObjectKey::new("ConfigMap", ISTIO_NAMESPACE, "istio"))?;
            match stored.resource.as_ref() {
                Resource::ConfigMap(_, Some(mesh)) => Some((mesh.as_ref().clone(), stored.origin.clone())),
                _ => None,
            }
        };
        let (mesh, origin) = match from_file.or_else(from_config_map) {
            Some((m, o)) => (m, Some(o)),
            None => (MeshConfig::default(), None),
        };
        let changed = mesh != self.mesh;
        self.mesh = mesh;
        self.mesh_origin = origin;
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(text: &str) -> FileContents {
        FileContents::from_checked(Path::new("x.yaml"), weir_api::check_text(text, "default"))
    }

    const SE: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: a}\nspec: {hosts: [a.example.com], resolution: DNS}\n";

    #[test]
    fn add_update_delete() {
        let mut store = ConfigStore::new();
        let file = Path::new("f.yaml");
        let key = ObjectKey::new("ServiceEntry", "default", "a");
        assert_eq!(
            store.replace_file(file, contents(SE)),
            vec![Change::Added(key.clone())]
        );
        assert_eq!(store.get(&key).unwrap().generation, 1);
        assert!(
            store.replace_file(file, contents(SE)).is_empty(),
            "same content, no change"
        );
        let changed = SE.replace("a.example.com", "b.example.com");
        assert_eq!(
            store.replace_file(file, contents(&changed)),
            vec![Change::Updated(key.clone())]
        );
        assert_eq!(store.get(&key).unwrap().generation, 2);
        assert_eq!(store.remove_file(file), vec![Change::Deleted(key.clone())]);
        assert!(store.is_empty());
        assert_eq!(store.revision(), 3);
    }

    #[test]
    fn the_first_file_wins_a_duplicate() {
        let mut store = ConfigStore::new();
        let key = ObjectKey::new("ServiceEntry", "default", "a");
        store.replace_file(Path::new("b.yaml"), contents(SE));
        let other = SE.replace("a.example.com", "z.example.com");
        assert_eq!(
            store.replace_file(Path::new("a.yaml"), contents(&other)),
            vec![Change::Updated(key.clone())]
        );
        assert_eq!(store.get(&key).unwrap().origin.file, Path::new("a.yaml"));
        let dups = store.duplicates();
        assert_eq!(dups.len(), 1);
        assert_eq!(dups[0].ignored.file, Path::new("b.yaml"));
        assert_eq!(
            store.remove_file(Path::new("a.yaml")),
            vec![Change::Updated(key.clone())]
        );
        assert_eq!(store.get(&key).unwrap().origin.file, Path::new("b.yaml"));
        assert!(store.duplicates().is_empty());
    }
}

//! The folder source: configuration as YAML/JSON files in a folder tree, watched for changes.
//!
//! Every `.yaml`, `.yml` and `.json` file below the folder is read (hidden files and folders are
//! skipped, so editor swap files do not count). A file named `mesh.yaml` (or `mesh.yml`,
//! `meshconfig.yaml`, `meshconfig.yml`) at the top of the folder is Istio's MeshConfig document.
//! A change to a file replaces what that file defined: the store reports each object added,
//! updated or deleted, and nothing else.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher as _};
use weir_api::{Finding, Severity};

use crate::store::{Change, ConfigStore, FileContents, Origin, Rejected};

/// File extensions read as configuration.
pub const EXTENSIONS: &[&str] = &["yaml", "yml", "json"];

/// File names (at the top of the folder) read as a MeshConfig document.
pub const MESH_FILE_NAMES: &[&str] = &["mesh.yaml", "mesh.yml", "meshconfig.yaml", "meshconfig.yml"];

/// Problems with the folder itself.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The folder cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The path is not a folder.
    #[error("{0} is not a folder")]
    NotAFolder(PathBuf),
    /// The file watcher could not start.
    #[error("cannot watch {path} for changes: {source}")]
    Watch {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: notify::Error,
    },
}

/// Whether `path` is a configuration file by its name (extension, not hidden).
pub fn is_config_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !name.starts_with('.')
        && path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e))
}

/// Whether the file's name is one of [`MESH_FILE_NAMES`].
pub fn has_mesh_file_name(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| MESH_FILE_NAMES.contains(&n))
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// Every configuration file below `dir`, sorted, skipping hidden files and folders.
pub fn config_files(dir: &Path) -> Result<Vec<PathBuf>, SourceError> {
    let mut out = Vec::new();
    walk(dir, &mut out).map_err(|source| SourceError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for path in entries {
        if is_hidden(&path) {
            continue;
        }
        if path.is_dir() {
            walk(&path, out)?;
        } else if is_config_file(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// A folder of configuration.
#[derive(Clone, Debug)]
pub struct FolderSource {
    root: PathBuf,
    default_namespace: String,
}

impl FolderSource {
    /// A source for `root`; objects without a namespace go to `default_namespace`.
    pub fn new(root: impl Into<PathBuf>, default_namespace: impl Into<String>) -> Result<Self, SourceError> {
        let root = root.into();
        let meta = std::fs::metadata(&root).map_err(|source| SourceError::Io {
            path: root.clone(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(SourceError::NotAFolder(root));
        }
        Ok(FolderSource {
            root,
            default_namespace: default_namespace.into(),
        })
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether `path` is a MeshConfig file of this folder (one of [`MESH_FILE_NAMES`] at its top).
    pub fn is_mesh_file(&self, path: &Path) -> bool {
        path.parent() == Some(self.root.as_path()) && has_mesh_file_name(path)
    }

    /// Reads and checks one file. An unreadable file yields one rejected entry.
    pub fn read_file(&self, path: &Path) -> FileContents {
        let text = match std::fs::read(path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(t) => t,
                Err(_) => return unreadable(path, "not UTF-8 text"),
            },
            Err(e) => return unreadable(path, &format!("cannot read: {e}")),
        };
        if self.is_mesh_file(path) {
            let (mesh, findings) = weir_api::parse_mesh_config(&text);
            return match mesh {
                Some(mesh) => FileContents {
                    mesh: Some((mesh, findings)),
                    ..FileContents::default()
                },
                None => FileContents {
                    rejected: vec![Rejected {
                        origin: Origin {
                            file: path.to_path_buf(),
                            line: 1,
                        },
                        subject: "MeshConfig".into(),
                        findings,
                    }],
                    ..FileContents::default()
                },
            };
        }
        FileContents::from_checked(path, weir_api::check_text(&text, &self.default_namespace))
    }

    /// Loads every file into `store`.
    pub fn load_all(&self, store: &mut ConfigStore) -> Result<Vec<Change>, SourceError> {
        let batch = config_files(&self.root)?
            .into_iter()
            .map(|f| (f.clone(), Some(self.read_file(&f))))
            .collect();
        Ok(store.apply_batch(batch))
    }

    /// Applies changes to `paths` (files or folders created, modified, deleted or renamed) to
    /// `store`: a file that exists is re-read, one that is gone is forgotten, a folder is rescanned.
    pub fn refresh(&self, store: &mut ConfigStore, paths: &[PathBuf]) -> Vec<Change> {
        let mut files: BTreeSet<PathBuf> = BTreeSet::new();
        for path in paths {
            if path
                .ancestors()
                .skip(1)
                .take_while(|a| a.starts_with(&self.root))
                .any(is_hidden)
                || is_hidden(path)
            {
                continue;
            }
            // Files the store knows under a path (a deleted or renamed folder takes its files along).
            files.extend(
                store
                    .files()
                    .filter(|f| f.starts_with(path))
                    .map(Path::to_path_buf),
            );
            if path.is_dir() {
                files.extend(config_files(path).unwrap_or_default());
            } else if is_config_file(path) {
                files.insert(path.clone());
            }
        }
        let batch = files
            .into_iter()
            .map(|file| {
                let contents = file.is_file().then(|| self.read_file(&file));
                (file, contents)
            })
            .collect();
        store.apply_batch(batch)
    }

    /// Starts watching the folder. Changed paths arrive in batches from [`FolderWatch::next_batch`].
    pub fn watch(&self) -> Result<FolderWatch, SourceError> {
        let (tx, rx) = mpsc::channel();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // A closed channel means the FolderWatch was dropped; nothing to tell.
            let _ = tx.send(event);
        })
        .map_err(|source| SourceError::Watch {
            path: self.root.clone(),
            source,
        })?;
        watcher
            .watch(&self.root, RecursiveMode::Recursive)
            .map_err(|source| SourceError::Watch {
                path: self.root.clone(),
                source,
            })?;
        Ok(FolderWatch {
            _watcher: watcher,
            events: rx,
        })
    }
}

fn unreadable(path: &Path, reason: &str) -> FileContents {
    let finding = Finding {
        severity: Severity::Error,
        path: weir_api::FieldPath::default(),
        message: reason.to_string(),
        style: weir_api::diag::Style::Field,
        pos: Some(weir_api::Pos { line: 1, col: 1 }),
    };
    FileContents {
        rejected: vec![Rejected {
            origin: Origin {
                file: path.to_path_buf(),
                line: 1,
            },
            subject: "file".into(),
            findings: vec![finding],
        }],
        ..FileContents::default()
    }
}

/// A running watch of a folder.
pub struct FolderWatch {
    _watcher: notify::RecommendedWatcher,
    events: mpsc::Receiver<notify::Result<notify::Event>>,
}

/// How long a batch stays open for more events after the first, so that an editor's
/// write-rename-chmod sequence or a `git checkout` arrives as one batch.
pub const SETTLE: Duration = Duration::from_millis(50);

impl FolderWatch {
    /// Waits up to `timeout` for a change, then collects the changes that follow within
    /// [`SETTLE`]; returns the changed paths, or `None` when nothing happened. Watch errors
    /// (for example an overflowed event queue) are returned so the caller can rescan everything.
    pub fn next_batch(&self, timeout: Duration) -> Option<Result<Vec<PathBuf>, notify::Error>> {
        let first = self.events.recv_timeout(timeout).ok()?;
        let mut paths: BTreeSet<PathBuf> = BTreeSet::new();
        let mut add = |event: notify::Result<notify::Event>| -> Result<(), notify::Error> {
            let event = event?;
            if !matches!(event.kind, notify::EventKind::Access(_)) {
                paths.extend(event.paths);
            }
            Ok(())
        };
        if let Err(e) = add(first) {
            return Some(Err(e));
        }
        let deadline = Instant::now() + SETTLE;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.events.recv_timeout(left) {
                Ok(event) => {
                    if let Err(e) = add(event) {
                        return Some(Err(e));
                    }
                }
                Err(_) => break,
            }
        }
        Some(Ok(paths.into_iter().collect()))
    }
}

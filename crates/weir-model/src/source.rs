//! Where configuration comes from. The folder source is the first; a Kubernetes source will be
//! another implementation of the same trait.

use std::time::Duration;

use crate::folder::{FolderSource, FolderWatch, SourceError};
use crate::store::{Change, ConfigStore};

/// A source of configuration objects that feeds a [`ConfigStore`].
pub trait ConfigSource {
    /// Reads everything and puts it in the store.
    fn load(&mut self, store: &mut ConfigStore) -> Result<Vec<Change>, SourceError>;

    /// Waits up to `timeout` for the source to change, applies what changed to the store and
    /// returns the changes (empty when nothing happened in time).
    fn poll(&mut self, store: &mut ConfigStore, timeout: Duration) -> Result<Vec<Change>, SourceError>;
}

/// A folder source together with its watch: [`ConfigSource::load`] starts watching before it
/// reads, so no change between the two is missed.
pub struct WatchedFolder {
    folder: FolderSource,
    watch: Option<FolderWatch>,
}

impl WatchedFolder {
    /// Wraps a folder source; watching starts at [`ConfigSource::load`].
    pub fn new(folder: FolderSource) -> Self {
        WatchedFolder { folder, watch: None }
    }

    /// The folder source.
    pub fn folder(&self) -> &FolderSource {
        &self.folder
    }
}

impl ConfigSource for WatchedFolder {
    fn load(&mut self, store: &mut ConfigStore) -> Result<Vec<Change>, SourceError> {
        self.watch = Some(self.folder.watch()?);
        self.folder.load_all(store)
    }

    fn poll(&mut self, store: &mut ConfigStore, timeout: Duration) -> Result<Vec<Change>, SourceError> {
        let Some(watch) = &self.watch else {
            return self.load(store);
        };
        match watch.next_batch(timeout) {
            None => Ok(Vec::new()),
            Some(Ok(paths)) => Ok(self.folder.refresh(store, &paths)),
            // The watcher lost events (for example its queue overflowed): read everything again.
            // Replacing every file yields exactly the objects that changed.
            Some(Err(_)) => {
                let mut paths: Vec<std::path::PathBuf> =
                    store.files().map(std::path::Path::to_path_buf).collect();
                paths.push(self.folder.root().to_path_buf());
                Ok(self.folder.refresh(store, &paths))
            }
        }
    }
}

//! Loading a configuration folder into a model: store, allocator, registry.

use weir_model::registry::RegistryOptions;
use weir_model::registry::alloc::AddressAllocator;
use weir_model::{ConfigStore, FolderSource};
use weir_xds::model::Model;

/// Options shared by commands that read a configuration folder.
#[derive(clap::Args, Clone)]
pub struct FolderArgs {
    /// Namespace for resources that do not set metadata.namespace.
    #[arg(short = 'n', long = "namespace", default_value = "default")]
    pub namespace: String,
    /// Range for addresses allocated to ServiceEntries without `addresses`.
    #[arg(long, value_name = "CIDR", default_value = "240.240.0.0/16")]
    pub allocation_range: String,
}

/// Reads `folder` and builds the model. Errors are ready to print.
pub fn load(folder: &str, args: &FolderArgs) -> Result<(FolderSource, Model), String> {
    let allocator = AddressAllocator::parse_range(&args.allocation_range).map_err(|e| e.to_string())?;
    let source = FolderSource::new(folder, &args.namespace).map_err(|e| e.to_string())?;
    let mut store = ConfigStore::new();
    source.load_all(&mut store).map_err(|e| e.to_string())?;
    Ok((source, Model::new(store, allocator, RegistryOptions::default())))
}

/// Tells on stderr that some documents of `folder` were rejected (and are ignored).
pub fn warn_rejected(folder: &str, model: &Model) {
    let rejected = model.store.rejected().count();
    if rejected > 0 {
        eprintln!(
            "weir: {rejected} document(s) in {folder} were rejected and are ignored; `weir validate -f {folder}` shows why"
        );
    }
}

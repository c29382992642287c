//! Finding configuration files: files, folders (recursive, as the folder source reads them) and stdin.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};
use weir_model::folder::{config_files, has_mesh_file_name};

/// One input: its display name and its text.
pub struct Source {
    /// The path as given (or `<stdin>`).
    pub name: String,
    /// The bytes, when they are UTF-8 text.
    pub text: Result<String, String>,
    /// Whether the file is a MeshConfig document (`mesh.yaml` named directly, or at the top of a
    /// given folder), as the folder source reads it.
    pub mesh: bool,
}

/// Reads every input named by `paths`: `-` is stdin, a folder is walked recursively for
/// `.yaml`, `.yml` and `.json` files (in sorted order, hidden entries skipped).
pub fn read_inputs(paths: &[String]) -> Result<Vec<Source>> {
    let mut sources = Vec::new();
    let mut stdin_read = false;
    for given in paths {
        if given == "-" {
            if stdin_read {
                bail!("'-' (stdin) may be given only once");
            }
            stdin_read = true;
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("cannot read stdin")?;
            sources.push(Source {
                name: "<stdin>".into(),
                text: utf8(bytes),
                mesh: false,
            });
            continue;
        }
        let path = Path::new(given);
        let meta = std::fs::metadata(path).with_context(|| format!("cannot read {given}"))?;
        if meta.is_dir() {
            let found = config_files(path)?;
            if found.is_empty() {
                bail!("no .yaml, .yml or .json files under {given}");
            }
            for file in found {
                let bytes =
                    std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
                let mesh = file.parent() == Some(path) && has_mesh_file_name(&file);
                sources.push(Source {
                    name: file.display().to_string(),
                    text: utf8(bytes),
                    mesh,
                });
            }
        } else {
            let bytes = std::fs::read(path).with_context(|| format!("cannot read {given}"))?;
            sources.push(Source {
                name: given.clone(),
                text: utf8(bytes),
                mesh: has_mesh_file_name(path),
            });
        }
    }
    Ok(sources)
}

fn utf8(bytes: Vec<u8>) -> Result<String, String> {
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

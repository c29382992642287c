//! Finding configuration files: files, folders (recursive) and stdin.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Extensions read from folders.
const EXTENSIONS: &[&str] = &["yaml", "yml", "json"];

/// One input: its display name and its text.
pub struct Source {
    /// The path as given (or `<stdin>`).
    pub name: String,
    /// The bytes, when they are UTF-8 text.
    pub text: Result<String, String>,
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
            });
            continue;
        }
        let path = Path::new(given);
        let meta = std::fs::metadata(path).with_context(|| format!("cannot read {given}"))?;
        if meta.is_dir() {
            let mut found = Vec::new();
            walk(path, &mut found).with_context(|| format!("cannot read folder {given}"))?;
            if found.is_empty() {
                bail!("no .yaml, .yml or .json files under {given}");
            }
            for file in found {
                let bytes =
                    std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
                sources.push(Source {
                    name: file.display().to_string(),
                    text: utf8(bytes),
                });
            }
        } else {
            let bytes = std::fs::read(path).with_context(|| format!("cannot read {given}"))?;
            sources.push(Source {
                name: given.clone(),
                text: utf8(bytes),
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

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for path in entries {
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            walk(&path, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e))
        {
            out.push(path);
        }
    }
    Ok(())
}

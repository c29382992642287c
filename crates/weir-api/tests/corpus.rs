//! Every document of `shared/corpus/istio/` (configuration written by the Istio project) gets the
//! verdict the corpus README states:
//! - every file outside `crd-validation-testdata`, and every `*-valid.yaml` file in it: valid;
//! - every document of a `*-invalid.yaml` file: invalid, with an error containing its `_err` text
//!   (the `_err` key is removed before checking);
//! - WasmPlugin and other kinds outside Weir's scope may be skipped instead.
//!
//! It also checks that each valid resource round-trips: parse → serialize gives the same document.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::path::{Path, PathBuf};

use weir_api::yaml::{Node, Value, parse_documents};
use weir_api::{Checked, Verdict, check_document};

fn corpus_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/istio");
    assert!(root.is_dir(), "corpus not found at {}", root.display());
    root
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

/// Kinds the corpus README lets us skip: WasmPlugin and the other `extensions.istio.io` kinds,
/// and non-Istio kinds (Deployment, Service, …) that sample files carry alongside Istio ones.
fn skippable(c: &Checked) -> bool {
    let group = c
        .api_version
        .as_deref()
        .and_then(|v| v.rsplit_once('/'))
        .map_or("", |(g, _)| g);
    c.verdict == Verdict::Skipped && (group == "extensions.istio.io" || !group.ends_with("istio.io"))
}

fn describe(file: &Path, c: &Checked) -> String {
    let findings: Vec<String> = c
        .findings
        .iter()
        .map(|f| format!("  {}: {:?}: {}", f.pos.unwrap_or_default(), f.severity, f.text()))
        .collect();
    format!(
        "{}: {} {:?}\n{}",
        file.display(),
        c.display_name(),
        c.verdict,
        findings.join("\n")
    )
}

/// Removes the top-level `_err` key, returning its text.
fn take_err(root: &mut Node) -> Option<String> {
    let Value::Map(entries) = &mut root.value else {
        return None;
    };
    let idx = entries.iter().position(|(k, _)| k == "_err")?;
    let (_, node) = entries.remove(idx);
    node.as_str().map(str::to_string)
}

/// JSON with nulls, empty lists and empty maps removed (they are the same as absent in the API).
fn normalize(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        J::Object(map) => J::Object(
            map.into_iter()
                .map(|(k, v)| (k, normalize(v)))
                .filter(|(_, v)| {
                    !matches!(v, J::Null) && v != &J::Array(vec![]) && v != &J::Object(Default::default())
                })
                .collect(),
        ),
        J::Array(items) => J::Array(items.into_iter().map(normalize).collect()),
        J::Number(n) => J::from(n.as_f64().unwrap_or_default()),
        other => other,
    }
}

#[test]
fn every_corpus_document_gets_its_expected_verdict() {
    let root = corpus_root();
    let mut files = Vec::new();
    yaml_files(&root, &mut files);
    assert!(files.len() > 100, "only {} corpus files found", files.len());
    let mut failures = Vec::new();
    let (mut valid, mut invalid, mut skipped, mut round_tripped) = (0, 0, 0, 0);
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let expect_invalid = name.ends_with("-invalid.yaml");
        for doc in parse_documents(&text) {
            let Some(mut node) = doc.root else {
                failures.push(format!(
                    "{}: unreadable YAML at {}: {:?}",
                    file.display(),
                    doc.pos,
                    doc.errors
                ));
                continue;
            };
            let expected_err = take_err(&mut node);
            for checked in check_document(&node, "default") {
                if skippable(&checked) {
                    skipped += 1;
                    continue;
                }
                if expect_invalid {
                    let want = expected_err.clone().unwrap_or_default();
                    let hit = checked
                        .errors()
                        .any(|f| f.text().contains(&want) || f.message.contains(&want));
                    if checked.verdict != Verdict::Invalid || !hit {
                        failures.push(format!(
                            "expected an error containing {want:?}\n{}",
                            describe(file, &checked)
                        ));
                    }
                    invalid += 1;
                } else {
                    if checked.verdict != Verdict::Valid {
                        failures.push(format!("expected valid\n{}", describe(file, &checked)));
                        continue;
                    }
                    valid += 1;
                    let resource = checked.resource.as_ref().unwrap();
                    // Removed API fields are reported and dropped; the rest must come back unchanged.
                    let mut kept = node.clone();
                    for f in checked
                        .warnings()
                        .filter(|f| f.message.contains("removed from the Istio API"))
                    {
                        kept.remove(f.path.segments());
                    }
                    let mut original = kept.to_json();
                    if original
                        .get("metadata")
                        .and_then(|m| m.get("namespace"))
                        .is_none()
                    {
                        original["metadata"]["namespace"] = "default".into();
                    }
                    if normalize(resource.to_json()) == normalize(original.clone()) {
                        round_tripped += 1;
                    } else {
                        failures.push(format!(
                            "{}: {} does not round-trip:\n  in:  {}\n  out: {}",
                            file.display(),
                            checked.display_name(),
                            normalize(original),
                            normalize(resource.to_json())
                        ));
                    }
                }
            }
        }
    }
    println!("corpus: {valid} valid, {invalid} invalid, {skipped} skipped, {round_tripped} round-tripped");
    assert!(
        failures.is_empty(),
        "{} corpus failures:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert!(
        valid > 200 && invalid > 50,
        "too few documents checked: {valid} valid, {invalid} invalid"
    );
}

#[test]
fn expectations_file_agrees_with_the_documents() {
    let root = corpus_root().join("crd-validation-testdata");
    let expectations: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("EXPECTATIONS.json")).unwrap()).unwrap();
    let mut missing = Vec::new();
    for e in expectations.as_array().unwrap() {
        let file = e["file"].as_str().unwrap();
        let name = e["name"].as_str().unwrap();
        if e["kind"] == "WasmPlugin" {
            continue;
        }
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let mut found = false;
        for doc in parse_documents(&text) {
            let mut node = doc.root.unwrap();
            let err = take_err(&mut node);
            if node
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Node::as_str)
                != Some(name)
            {
                continue;
            }
            let checked = &check_document(&node, "default")[0];
            match e["expect_error_substring"].as_str() {
                None => found |= checked.verdict == Verdict::Valid,
                Some(want) => {
                    found |=
                        err.as_deref() == Some(want) && checked.errors().any(|f| f.text().contains(want));
                }
            }
        }
        if !found {
            missing.push(format!("{file}: {name}: {:?}", e["expect_error_substring"]));
        }
    }
    assert!(
        missing.is_empty(),
        "expectations not met:\n{}",
        missing.join("\n")
    );
}

//! Table-driven tests of every validation rule. Each `tests/rules/*.yaml` document is one case:
//!
//! ```yaml
//! _case: what the case shows
//! _expect: valid                         # no errors and no warnings
//! _expect: {error: "substring"}          # invalid, with an error containing the text
//! _expect: {warning: "substring"}        # valid, with a warning containing the text
//! kind: ServiceEntry                     # apiVersion and metadata.name are filled in when absent
//! spec: {...}
//! ```
//! A case with `_raw: true` is checked exactly as written.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::path::Path;

use weir_api::resource::kind_info;
use weir_api::yaml::{Node, Value, parse_documents};
use weir_api::{Verdict, check_document};

fn take(root: &mut Node, key: &str) -> Option<Node> {
    let Value::Map(entries) = &mut root.value else {
        return None;
    };
    let idx = entries.iter().position(|(k, _)| k == key)?;
    Some(entries.remove(idx).1)
}

fn fill_defaults(root: &mut Node, case_no: usize) {
    let Value::Map(entries) = &mut root.value else {
        return;
    };
    let kind = entries
        .iter()
        .find(|(k, _)| k == "kind")
        .and_then(|(_, v)| v.as_str())
        .map(str::to_string);
    if let Some(info) = kind
        .as_deref()
        .and_then(|k| weir_api::resource::KINDS.iter().find(|i| i.kind == k))
        && !entries.iter().any(|(k, _)| k == "apiVersion")
    {
        let group = kind_info(info.group, info.kind).map_or("", |i| i.group);
        let api = if group.is_empty() {
            info.versions[0].to_string()
        } else {
            format!("{group}/{}", info.versions[0])
        };
        entries.push(("apiVersion".into(), Node::new(Value::Str(api))));
    }
    if !entries.iter().any(|(k, _)| k == "metadata") {
        let name = Node::new(Value::Str(format!("case-{case_no}")));
        entries.push((
            "metadata".into(),
            Node::new(Value::Map(vec![("name".into(), name)])),
        ));
    }
}

#[test]
fn every_rule_case() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rules");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut failures = Vec::new();
    let mut cases = 0;
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "yaml"))
    {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, doc) in parse_documents(&text).into_iter().enumerate() {
            let mut root = doc.root.unwrap_or_else(|| {
                panic!(
                    "{}: unreadable case at {}: {:?}",
                    file.display(),
                    doc.pos,
                    doc.errors
                )
            });
            cases += 1;
            let case = take(&mut root, "_case")
                .and_then(|n| n.as_str().map(str::to_string))
                .unwrap_or_default();
            let expect = take(&mut root, "_expect")
                .unwrap_or_else(|| panic!("{}:{}: case without _expect", file.display(), doc.pos));
            if take(&mut root, "_raw").is_none() {
                fill_defaults(&mut root, n);
            }
            let checked = &check_document(&root, "default")[0];
            let where_ = format!(
                "{}:{} ({case})",
                file.file_name().unwrap().to_string_lossy(),
                doc.pos.line
            );
            let findings: Vec<String> = checked
                .findings
                .iter()
                .map(|f| format!("{:?}: {}", f.severity, f.text()))
                .collect();
            let ok = match (&expect.value, expect.get("error"), expect.get("warning")) {
                (Value::Str(s), _, _) if s == "valid" => {
                    checked.verdict == Verdict::Valid && checked.findings.is_empty()
                }
                (_, Some(e), _) => {
                    let want = e.as_str().unwrap();
                    checked.verdict == Verdict::Invalid && checked.errors().any(|f| f.text().contains(want))
                }
                (_, None, Some(w)) => {
                    let want = w.as_str().unwrap();
                    checked.verdict == Verdict::Valid && checked.warnings().any(|f| f.text().contains(want))
                }
                _ => panic!("{where_}: _expect must be valid, {{error: …}} or {{warning: …}}"),
            };
            if !ok {
                failures.push(format!(
                    "{where_}: expected {:?}, got {:?}\n    {}",
                    expect.to_json(),
                    checked.verdict,
                    findings.join("\n    ")
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(cases > 200, "only {cases} cases");
}

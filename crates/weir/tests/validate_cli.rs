//! `weir validate` end to end: the real binary on real files, folders and stdin.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn weir() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weir"))
}

fn run(args: &[&str]) -> Output {
    weir().args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// A fresh folder under the target directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const VALID_SE: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: api\nspec:\n  hosts: [api.example.com]\n  ports: [{number: 443, name: https, protocol: HTTPS}]\n  resolution: DNS\n";
const TYPO_SE: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: typo\n  namespace: prod\nspec:\n  hosts: [api.example.com]\n  address: [10.0.0.1]\n  resolution: DNS\n";
const WARN_SE: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: partial\nspec:\n  hosts: [\"*foo.com\"]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n";

#[test]
fn valid_files_exit_zero_with_a_summary() {
    let dir = scratch("valid");
    std::fs::write(dir.join("se.yaml"), VALID_SE).unwrap();
    let out = run(&["validate", "-f", dir.join("se.yaml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        stdout(&out),
        "1 resource in 1 file: 1 valid, 0 invalid, 0 skipped; 0 errors, 0 warnings\n"
    );
}

#[test]
fn an_invalid_resource_exits_one_and_points_at_file_line_and_field() {
    let dir = scratch("invalid");
    let file = dir.join("typo.yaml");
    std::fs::write(&file, TYPO_SE).unwrap();
    let out = run(&["validate", "-f", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let expected = format!(
        "{}:8:3: error: ServiceEntry prod/typo: spec.address: unknown field \"address\"; did you mean \"addresses\"?\n",
        file.display()
    );
    assert!(text.starts_with(&expected), "{text}");
    assert!(
        text.ends_with("1 resource in 1 file: 0 valid, 1 invalid, 0 skipped; 1 error, 0 warnings\n"),
        "{text}"
    );
}

#[test]
fn warnings_do_not_fail() {
    let dir = scratch("warn");
    std::fs::write(dir.join("w.yaml"), WARN_SE).unwrap();
    let out = run(&["validate", "-f", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains(
        ": warning: ServiceEntry default/partial: spec.hosts[0]: partial wildcard \"*foo.com\" not allowed"
    ));
}

#[test]
fn folders_are_walked_recursively_and_other_files_ignored() {
    let dir = scratch("folder");
    std::fs::create_dir_all(dir.join("nested/deeper")).unwrap();
    std::fs::write(dir.join("a.yaml"), VALID_SE).unwrap();
    std::fs::write(
        dir.join("nested/b.yml"),
        VALID_SE.replace("name: api", "name: api2"),
    )
    .unwrap();
    let json = r#"{"apiVersion":"networking.istio.io/v1","kind":"Sidecar","metadata":{"name":"s"},"spec":{"egress":[{"hosts":["./*"]}]}}"#;
    std::fs::write(dir.join("nested/deeper/c.json"), json).unwrap();
    std::fs::write(dir.join("nested/notes.txt"), "not config").unwrap();
    std::fs::write(dir.join(".hidden.yaml"), "garbage: [").unwrap();
    let out = run(&["validate", "-f", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(
        stdout(&out),
        "3 resources in 3 files: 3 valid, 0 invalid, 0 skipped; 0 errors, 0 warnings\n"
    );
}

#[test]
fn stdin_and_several_paths() {
    let dir = scratch("stdin");
    std::fs::write(dir.join("se.yaml"), VALID_SE).unwrap();
    let mut child = weir()
        .args(["validate", "-f", "-", "-f", dir.join("se.yaml").to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(TYPO_SE.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.starts_with("<stdin>:8:3: error: ServiceEntry prod/typo"),
        "{text}"
    );
    assert!(
        text.contains("2 resources in 2 files: 1 valid, 1 invalid"),
        "{text}"
    );
}

#[test]
fn json_output_has_the_documented_shape() {
    let dir = scratch("json");
    let file = dir.join("all.yaml");
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app}\n";
    std::fs::write(
        &file,
        format!("{VALID_SE}---\n{TYPO_SE}---\n{WARN_SE}---\n{deployment}"),
    )
    .unwrap();
    let out = run(&["validate", "-o", "json", "-f", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["summary"],
        serde_json::json!({"valid": 2, "invalid": 1, "skipped": 1, "warnings": 1})
    );
    let resources = v["resources"].as_array().unwrap();
    assert_eq!(resources.len(), 4);
    let typo = &resources[1];
    assert_eq!(typo["file"], file.to_str().unwrap());
    assert_eq!(typo["line"], 1 + VALID_SE.lines().count() as u64 + 1);
    assert_eq!(typo["apiVersion"], "networking.istio.io/v1");
    assert_eq!(typo["kind"], "ServiceEntry");
    assert_eq!(typo["namespace"], "prod");
    assert_eq!(typo["name"], "typo");
    assert_eq!(typo["status"], "invalid");
    assert_eq!(typo["errors"][0]["path"], "spec.address");
    assert_eq!(
        typo["errors"][0]["message"],
        "unknown field \"address\"; did you mean \"addresses\"?"
    );
    assert!(typo["errors"][0]["line"].as_u64().unwrap() > typo["line"].as_u64().unwrap());
    assert_eq!(resources[0]["status"], "valid");
    assert_eq!(resources[0]["namespace"], "default");
    assert_eq!(resources[2]["warnings"][0]["path"], "spec.hosts[0]");
    assert_eq!(resources[3]["status"], "skipped");
}

#[test]
fn namespace_flag_sets_the_default_namespace() {
    let dir = scratch("ns");
    std::fs::write(dir.join("w.yaml"), WARN_SE).unwrap();
    let out = run(&["validate", "-n", "payments", "-f", dir.to_str().unwrap()]);
    assert!(
        stdout(&out).contains("ServiceEntry payments/partial"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn usage_and_io_errors_exit_two() {
    let missing = run(&["validate", "-f", "/nonexistent/weir/config.yaml"]);
    assert_eq!(missing.status.code(), Some(2));
    let err = String::from_utf8(missing.stderr).unwrap();
    assert!(err.contains("cannot read /nonexistent/weir/config.yaml"), "{err}");
    let no_args = run(&["validate"]);
    assert_eq!(no_args.status.code(), Some(2));
    let bad_format = run(&["validate", "-o", "xml", "-f", "x"]);
    assert_eq!(bad_format.status.code(), Some(2));
    let empty = scratch("empty");
    let out = run(&["validate", "-f", empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("no .yaml, .yml or .json files under")
    );
}

#[test]
fn a_broken_document_loses_nothing_else() {
    let dir = scratch("broken");
    let file = dir.join("mixed.yaml");
    std::fs::write(
        &file,
        format!(
            "{VALID_SE}---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: [}}\n---\n{}",
            VALID_SE.replace("name: api", "name: api3")
        ),
    )
    .unwrap();
    let out = run(&["validate", "-f", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("YAML syntax error"), "{text}");
    assert!(
        text.contains("3 resources in 1 file: 2 valid, 1 invalid, 0 skipped"),
        "{text}"
    );
}

#[test]
fn binary_files_are_reported_not_crashed_on() {
    let dir = scratch("binary");
    std::fs::write(dir.join("blob.yaml"), [0xff, 0xfe, 0x00, 0x41]).unwrap();
    let out = run(&["validate", "-f", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("not UTF-8 text"), "{}", stdout(&out));
}

#[test]
fn istio_sample_folders_validate_clean() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/istio");
    for folder in [
        "bookinfo-networking",
        "samples-istio-kinds",
        "tests-testdata-config",
        "tests-testdata-networking",
        "validation-dataset",
    ] {
        let out = run(&["validate", "-f", corpus.join(folder).to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{folder}:\n{}", stdout(&out));
        assert!(stdout(&out).contains(" 0 invalid"), "{folder}: {}", stdout(&out));
    }
}

#[test]
fn help_and_version() {
    let help = run(&["validate", "--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(stdout(&help).contains("--filename"));
    let version = run(&["--version"]);
    assert!(stdout(&version).starts_with("weir "));
}

#[test]
fn a_mesh_file_is_checked_as_mesh_config() {
    let dir = scratch("mesh");
    std::fs::write(
        dir.join("mesh.yaml"),
        "outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n",
    )
    .unwrap();
    std::fs::write(dir.join("se.yaml"), VALID_SE).unwrap();
    let out = run(&["validate", "-f", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("2 resources in 2 files: 2 valid"),
        "{}",
        stdout(&out)
    );
    std::fs::write(
        dir.join("mesh.yaml"),
        "outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\nrootNamespce: x\n",
    )
    .unwrap();
    let out = run(&["validate", "-f", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("mesh.yaml:3:1: error: MeshConfig: rootNamespce: unknown field \"rootNamespce\"; did you mean \"rootNamespace\"?"),
        "{}",
        stdout(&out)
    );
}

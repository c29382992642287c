//! `weir describe` end to end on fixture folders.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .output()
        .unwrap()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../weir-model/tests/fixtures")
        .join(name)
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn text_lists_services_endpoints_allocations_and_conditions() {
    let out = run(&["describe", "-f", fixture("conditions").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.contains("bookinfo/reviews.bookinfo.svc.cluster.local  ClientSideLb  10.96.0.10  9080/HTTP:http  from Service bookinfo/reviews"), "{text}");
    assert!(
        text.contains("10.1.0.1:9080 <- Pod bookinfo/reviews-v1"),
        "{text}"
    );
    assert!(
        text.contains("default/pg-a.example.com  DnsLb  240.240."),
        "{text}"
    );
    assert!(
        text.contains("ServiceEntry other/squatter") && text.contains("Conflicted=True (DuplicateHost)"),
        "{text}"
    );
    assert!(text.contains("[IST0109]"), "{text}");
}

#[test]
fn a_proxy_view() {
    let out = run(&[
        "describe",
        "-f",
        fixture("view").to_str().unwrap(),
        "--proxy",
        "sidecar:team-a/s1:app=special",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.contains("Proxy sidecar:team-a/s1:"), "{text}");
    assert!(text.contains("Sidecar: Sidecar team-a/special"), "{text}");
    assert!(text.contains("Outbound traffic policy: REGISTRY_ONLY"), "{text}");
    assert!(
        text.contains("default/api.example.com  DestinationRule team-a/api-special"),
        "{text}"
    );
}

#[test]
fn json_for_scripts() {
    let out = run(&[
        "describe",
        "-o",
        "json",
        "-f",
        fixture("view").to_str().unwrap(),
        "--proxy",
        "router:istio-system/gw:istio=ingressgateway",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let api = v["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["hostname"] == "api.example.com")
        .unwrap();
    assert_eq!(api["registry"], "ServiceEntry");
    assert!(api["allocatedAddress"].as_str().unwrap().starts_with("240.240."));
    assert_eq!(api["endpoints"][0]["address"], "api.example.com");
    assert_eq!(
        v["proxy"]["gateways"],
        serde_json::json!(["Gateway bookinfo/bookinfo-gateway"])
    );
    assert_eq!(
        v["proxy"]["virtualServices"][0]["name"],
        "VirtualService bookinfo/bookinfo"
    );
    let squatter = v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "squatter")
        .unwrap();
    assert!(
        squatter["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Conflicted" && c["reason"] == "DuplicateHost")
    );
}

#[test]
fn rejected_documents_are_shown_and_exit_one() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("describe-rejected");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("bad.yaml"), "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: bad}\nspec: {hosts: [\"*\"]}\n").unwrap();
    let out = run(&["describe", "-f", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("bad.yaml:4:16: ServiceEntry default/bad: spec.hosts[0]: Invalid value: \"string\": hostname cannot be wildcard"), "{}", stdout(&out));
}

#[test]
fn usage_errors_exit_two() {
    assert_eq!(run(&["describe", "-f", "/nonexistent"]).status.code(), Some(2));
    let bad_proxy = run(&[
        "describe",
        "-f",
        fixture("view").to_str().unwrap(),
        "--proxy",
        "pod:x",
    ]);
    assert_eq!(bad_proxy.status.code(), Some(2));
    assert!(
        String::from_utf8(bad_proxy.stderr)
            .unwrap()
            .contains("expected KIND:NAMESPACE/NAME")
    );
    let bad_range = run(&[
        "describe",
        "-f",
        fixture("view").to_str().unwrap(),
        "--allocation-range",
        "10.0.0.0/31",
    ]);
    assert_eq!(bad_range.status.code(), Some(2));
}

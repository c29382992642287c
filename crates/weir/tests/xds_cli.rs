//! `weir config-dump` and `weir discovery` end to end (the ADS protocol itself is tested in
//! `weir-xds`; the gRPC interop tests under `interop/` drive `weir discovery` with grpcio).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .output()
        .unwrap()
}

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../weir-xds/tests/scenarios")
        .join(name)
}

#[test]
fn config_dump_prints_every_type_or_one() {
    let dir = scenario("mesh");
    let dir = dir.to_str().unwrap();
    let proxy = "sidecar:shop/productpage-v1:app=productpage";
    let all = run(&["config-dump", "--config", dir, "--proxy", proxy]);
    assert_eq!(
        all.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&all.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&all.stdout).unwrap();
    for key in ["clusters", "endpoints", "listeners", "routes"] {
        assert!(!json[key].as_array().unwrap().is_empty(), "{key} is empty");
    }
    let clusters = run(&[
        "config-dump",
        "--config",
        dir,
        "--proxy",
        proxy,
        "--type",
        "clusters",
    ]);
    let list: Vec<serde_json::Value> = serde_json::from_slice(&clusters.stdout).unwrap();
    assert!(
        list.iter()
            .all(|c| c["@type"] == "type.googleapis.com/envoy.config.cluster.v3.Cluster")
    );
    assert!(
        list.iter()
            .any(|c| c["name"] == "outbound|9080|v2|reviews.shop.svc.cluster.local")
    );
}

#[test]
fn config_dump_says_what_is_wrong_with_its_arguments() {
    let bad = run(&[
        "config-dump",
        "--config",
        scenario("mesh").to_str().unwrap(),
        "--proxy",
        "pod/x",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected KIND:NAMESPACE/NAME"));
    let missing = run(&[
        "config-dump",
        "--config",
        "/nonexistent/weir",
        "--proxy",
        "sidecar:a/b",
    ]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/weir"));
}

#[test]
fn config_dump_warns_about_what_a_gateway_cannot_serve() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("xds-cli-gateway");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("gw.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a.example]\n    tls: {mode: SIMPLE, credentialName: nope}\n",
    )
    .unwrap();
    let out = run(&[
        "config-dump",
        "--config",
        dir.to_str().unwrap(),
        "--proxy",
        "router:default/gw:istio=ingressgateway",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: Gateway default/gw server \"https\" on port 443") && err.contains("nope"),
        "{err}"
    );
}

#[test]
fn discovery_reports_an_address_it_cannot_listen_on() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run(&[
        "discovery",
        "--config",
        scenario("mesh").to_str().unwrap(),
        "--listen",
        &addr,
        "--monitoring",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("cannot listen on {addr}")));
}

#[test]
fn config_dump_warns_about_what_weirs_proxy_would_refuse() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("xds-cli-refusals");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("svc.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: a}\nspec:\n  hosts: [a.test]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: DNS\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a}\nspec:\n  host: a.test\n  trafficPolicy:\n    tls: {mode: SIMPLE, caCertificates: /nonexistent/weir-cli-ca.pem}\n",
    )
    .unwrap();
    let out = run(&[
        "config-dump",
        "--config",
        dir.to_str().unwrap(),
        "--proxy",
        "sidecar:default/x",
        "--type",
        "clusters",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Weir's proxy would refuse cluster \"outbound|80||a.test\": TLS: ")
            && err.contains("/nonexistent/weir-cli-ca.pem"),
        "{err}"
    );
    // Proxyless gRPC clients are not Weir's proxy: nothing to say for them.
    let grpc = run(&[
        "config-dump",
        "--config",
        dir.to_str().unwrap(),
        "--proxy",
        "proxyless:default/x",
        "--type",
        "clusters",
    ]);
    assert!(!String::from_utf8_lossy(&grpc.stderr).contains("would refuse"));
}

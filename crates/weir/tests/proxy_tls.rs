//! TLS through `weir run` with certificates made for the test (rcgen) and curl as the client:
//! origination to an HTTPS backend (SIMPLE, with CA and SAN verification — and what a bad
//! certificate does), termination on a gateway (SIMPLE and MUTUAL), and passthrough by SNI.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use support::{Mesh, Proc, echo, folder, free_port};

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: PathBuf,
}

fn ca(dir: &Path, name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    let pem = dir.join(format!("{name}.pem"));
    std::fs::write(&pem, cert.pem()).unwrap();
    Ca {
        issuer: Issuer::new(params, key),
        pem,
    }
}

/// A leaf certificate for `names`, written as `<file>.crt` / `<file>.key`.
fn leaf(dir: &Path, ca: &Ca, file: &str, names: &[&str], client: bool) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let (crt, k) = (dir.join(format!("{file}.crt")), dir.join(format!("{file}.key")));
    std::fs::write(&crt, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (crt, k)
}

fn tls_echo(name: &str, cert: &(PathBuf, PathBuf)) -> (Proc, SocketAddr) {
    support::echo_with(
        name,
        &[
            "--tls-cert",
            cert.0.to_str().unwrap(),
            "--tls-key",
            cert.1.to_str().unwrap(),
        ],
    )
}

/// curl over HTTPS to 127.0.0.1:port as `host`; returns (exit code, body).
fn curl(host: &str, port: u16, ca: &Path, client: Option<&(PathBuf, PathBuf)>) -> (i32, String) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "10",
        "--cacert",
        ca.to_str().unwrap(),
        "--resolve",
        &format!("{host}:{port}:127.0.0.1"),
    ]);
    if let Some((crt, key)) = client {
        cmd.args(["--cert", crt.to_str().unwrap(), "--key", key.to_str().unwrap()]);
    }
    let out = cmd
        .arg(format!("https://{host}:{port}/hello"))
        .output()
        .expect("curl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn service(name: &str, host: &str, port: u16, protocol: &str, backend: SocketAddr) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}}}\nspec:\n  hosts: [{host}]\n  ports: [{{number: {port}, name: p, protocol: {protocol}, targetPort: {tp}}}]\n  resolution: STATIC\n  endpoints: [{{address: {ip}}}]\n---\n",
        tp = backend.port(),
        ip = backend.ip()
    )
}

fn origination(name: &str, host: &str, ca: &Path, san: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}}}\nspec:\n  host: {host}\n  trafficPolicy:\n    tls: {{mode: SIMPLE, caCertificates: {ca}, sni: secure.test, subjectAltNames: [{san}]}}\n---\n",
        ca = ca.display()
    )
}

#[test]
fn tls_origination_verifies_the_upstream_certificate() {
    let dir = folder("tls-origination-certs");
    let good = ca(&dir, "mesh-ca");
    let other = ca(&dir, "other-ca");
    let cert = leaf(&dir, &good, "secure", &["secure.test"], false);
    let (_b, backend) = tls_echo("secure-backend", &cert);
    let config = [
        service("secure", "secure.test", 80, "HTTP", backend),
        origination("secure", "secure.test", &good.pem, "secure.test"),
        service("wrong-ca", "wrong-ca.test", 80, "HTTP", backend),
        origination("wrong-ca", "wrong-ca.test", &other.pem, "secure.test"),
        service("wrong-san", "wrong-san.test", 80, "HTTP", backend),
        origination("wrong-san", "wrong-san.test", &good.pem, "elsewhere.test"),
    ]
    .concat();
    let mesh = Mesh::start("tls-origination", &[("tls.yaml", &config)], &[]);
    let r = mesh.get("http://secure.test/over-tls", &[]);
    assert_eq!((r.status, r.server()), (200, Some("secure-backend")), "{r:?}");
    assert_eq!(r.json()["uri"], "/over-tls");
    for host in ["wrong-ca.test", "wrong-san.test"] {
        let r = mesh.get(&format!("http://{host}/"), &[]);
        assert_eq!(r.status, 503, "{host}: {r:?}");
        assert!(
            r.body.contains("TLS handshake") && r.body.contains("certificate"),
            "{host}: {}",
            r.body
        );
    }
}

#[test]
fn gateways_terminate_tls_simple_and_mutual_and_pass_tls_through_by_sni() {
    let dir = folder("tls-gateway-certs");
    let ca = ca(&dir, "gateway-ca");
    let server = leaf(&dir, &ca, "gateway", &["web.test", "mtls.test"], false);
    let client = leaf(&dir, &ca, "client", &["client.test"], true);
    let pass_cert = leaf(&dir, &ca, "pass", &["pass.test"], false);
    let (_b, backend) = echo("web-backend");
    let (_p, pass_backend) = tls_echo("pass-backend", &pass_cert);
    let (simple, mutual, passthrough) = (free_port(), free_port(), free_port());
    let gateway = format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: edge}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: {simple}, name: https, protocol: HTTPS}}\n    hosts: [web.test]\n    tls: {{mode: SIMPLE, serverCertificate: {crt}, privateKey: {key}}}\n  - port: {{number: {mutual}, name: https-mtls, protocol: HTTPS}}\n    hosts: [mtls.test]\n    tls: {{mode: MUTUAL, serverCertificate: {crt}, privateKey: {key}, caCertificates: {ca}}}\n  - port: {{number: {passthrough}, name: tls, protocol: TLS}}\n    hosts: [pass.test]\n    tls: {{mode: PASSTHROUGH}}\n",
        crt = server.0.display(),
        key = server.1.display(),
        ca = ca.pem.display(),
    );
    let routes = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web}\nspec:\n  hosts: [web.test, mtls.test]\n  gateways: [edge]\n  http:\n  - route: [{destination: {host: web.internal}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: pass}\nspec:\n  hosts: [pass.test]\n  gateways: [edge]\n  tls:\n  - match: [{sniHosts: [pass.test]}]\n    route: [{destination: {host: pass.test, port: {number: 443}}}]\n";
    let services = [
        service("web", "web.internal", 80, "HTTP", backend),
        service("pass", "pass.test", 443, "TLS", pass_backend),
    ]
    .concat();
    let mesh = Mesh::start(
        "tls-gateway",
        &[
            ("gateway.yaml", &gateway),
            ("routes.yaml", routes),
            ("services.yaml", &services),
        ],
        &[],
    );
    mesh.run.wait_line(
        &format!("on 127.0.0.1:{passthrough}"),
        std::time::Duration::from_secs(20),
    );

    let (code, body) = curl("web.test", simple, &ca.pem, None);
    assert_eq!(code, 0, "{body}");
    assert!(
        body.contains("\"server\": \"web-backend\"") && body.contains("\"x-forwarded-proto\": \"https\""),
        "{body}"
    );

    let (code, body) = curl("mtls.test", mutual, &ca.pem, None);
    assert_ne!(code, 0, "a client without a certificate must be refused: {body}");
    let (code, body) = curl("mtls.test", mutual, &ca.pem, Some(&client));
    assert_eq!(code, 0, "{body}");
    assert!(body.contains("\"server\": \"web-backend\""), "{body}");

    // Passthrough: the client's TLS session ends at the backend, chosen by SNI.
    let (code, body) = curl("pass.test", passthrough, &ca.pem, None);
    assert_eq!(code, 0, "{body}");
    assert!(body.contains("\"server\": \"pass-backend\""), "{body}");
}

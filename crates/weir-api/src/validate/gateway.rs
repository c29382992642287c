//! Gateway: CRD rules (§1.5) and `ValidateGateway` (validation.go:384); the server TLS and
//! `namespace/host` rules are shared with Sidecar.

use super::Meta;
use super::common;
use crate::diag::Report;
use crate::path::Path;
use crate::types::OrEmpty;
use crate::types::networking::{Gateway, Port, ServerTlsMode, ServerTlsSettings, TlsProtocol};

const UNIX_PREFIX: &str = "unix://";

/// Cipher suites Envoy accepts.
pub const CIPHER_SUITES: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-PSK-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-PSK-AES128-CBC-SHA",
    "AES128-GCM-SHA256",
    "AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "ECDHE-PSK-AES256-CBC-SHA",
    "AES256-GCM-SHA384",
    "AES256-SHA",
    "PSK-AES128-CBC-SHA",
    "PSK-AES256-CBC-SHA",
    "DES-CBC3-SHA",
];

/// CRD rules.
pub fn schema(r: &mut Report, spec: &Path<'_>, gw: &Gateway, _meta: &Meta<'_>) {
    let sp = spec.key("servers");
    for (i, s) in gw.servers.or_empty().iter().enumerate() {
        let p = sp.index(i);
        match &s.port {
            None => r.required(&p.key("port")),
            Some(port) => port_schema(r, &p.key("port"), port),
        }
        if s.hosts.is_none() {
            r.required(&p.key("hosts"));
        }
        if let Some(tls) = &s.tls {
            tls_schema(r, &p.key("tls"), tls);
        }
    }
}

fn port_schema(r: &mut Report, p: &Path<'_>, port: &Port) {
    if port.number.is_none() {
        r.required(&p.key("number"));
    }
    if port.protocol.is_none() {
        r.required(&p.key("protocol"));
    }
    if port.name.is_none() {
        r.required(&p.key("name"));
    }
}

/// CRD rules of `ServerTLSSettings` (shared with Sidecar ingress).
pub fn tls_schema(r: &mut Report, p: &Path<'_>, tls: &ServerTlsSettings) {
    let names = tls.credential_names.is_some();
    let certs = tls.tls_certificates.is_some();
    let name = tls.credential_name.is_some();
    if names && certs {
        r.invalid(
            p,
            "\"object\"",
            "only one of credentialNames or tlsCertificates can be set",
        );
    }
    if name && names {
        r.invalid(
            p,
            "\"object\"",
            "only one of credentialName or credentialNames can be set",
        );
    }
    if name && certs {
        r.invalid(
            p,
            "\"object\"",
            "only one of credentialName or tlsCertificates can be set",
        );
    }
    for (field, len) in [
        ("credentialNames", tls.credential_names.as_ref().map(Vec::len)),
        ("tlsCertificates", tls.tls_certificates.as_ref().map(Vec::len)),
    ] {
        match len {
            Some(0) => r.body(&p.key(field), "should have at least 1 items"),
            Some(n) if n > 2 => r.body(&p.key(field), "should have at most 2 items"),
            _ => {}
        }
    }
}

/// Webhook rules.
pub fn webhook(r: &mut Report, spec: &Path<'_>, gw: &Gateway, meta: &Meta<'_>) {
    if !common::is_dns1123_label(meta.name) {
        r.error(
            &Path::Root.key("metadata").key("name"),
            format!("invalid gateway name: {:?}", meta.name),
        );
    }
    let servers = gw.servers.or_empty();
    let sp = spec.key("servers");
    if servers.is_empty() {
        r.error(&sp, "gateway must have at least one server");
    }
    let mut port_names: Vec<&str> = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        let p = sp.index(i);
        let hp = p.key("hosts");
        let hosts = s.hosts.or_empty();
        if hosts.is_empty() {
            r.error(&hp, "server config must contain at least one host");
        }
        for (j, h) in hosts.iter().enumerate() {
            namespace_slash_host(r, &hp.index(j), h, true);
        }
        let bind = s.bind.as_deref().unwrap_or("");
        let port_ok = server_port(r, &p.key("port"), s.port.as_ref(), bind);
        server_bind(r, &p, s.port.as_ref(), bind);
        if let Some(tls) = &s.tls {
            tls_options(r, &p.key("tls"), tls);
        }
        if let (true, Some(port)) = (port_ok, &s.port) {
            let proto = port.protocol.as_deref().unwrap_or("");
            if common::is_tls_protocol(proto) {
                if s.tls.is_none() {
                    r.error(&p, "server must have TLS settings for HTTPS/TLS protocols");
                }
            } else if let Some(tls) = &s.tls {
                if common::is_http_protocol(proto) {
                    let mode = tls.mode.unwrap_or_default();
                    let has_certs = [&tls.ca_certificates, &tls.private_key, &tls.server_certificate]
                        .iter()
                        .any(|v| v.as_deref().is_some_and(|s| !s.is_empty()));
                    if !matches!(mode, ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough)
                        || has_certs
                    {
                        r.error(
                            &p.key("tls"),
                            "server cannot have TLS settings for plain text HTTP ports",
                        );
                    }
                } else {
                    r.error(
                        &p.key("tls"),
                        "server cannot have TLS settings for non HTTPS/TLS ports",
                    );
                }
            }
        }
        if let Some(port) = &s.port {
            let name = port.name.as_deref().unwrap_or("");
            if port_names.contains(&name) {
                r.error(
                    &p.key("port").key("name"),
                    format!("port names in servers must be unique: duplicate name {name}"),
                );
            }
            port_names.push(name);
            let http = common::is_http_protocol(port.protocol.as_deref().unwrap_or(""));
            if !http && s.tls.as_ref().is_some_and(|t| t.https_redirect == Some(true)) {
                r.warn(
                    &p.key("tls").key("httpsRedirect"),
                    "tls.httpsRedirect should only be used with http servers",
                );
            }
        }
        if let Some(name) = s.name.as_deref().filter(|n| !n.is_empty())
            && servers[..i].iter().any(|o| o.name.as_deref() == Some(name))
        {
            r.error(
                &p.key("name"),
                format!("server name {name:?} must be unique across servers"),
            );
        }
    }
}

/// `validateNamespaceSlashWildcardHostname` for gateways (`gateway = true`) and sidecars.
pub fn namespace_slash_host(r: &mut Report, p: &Path<'_>, hostname: &str, gateway: bool) {
    let Some((ns, dns)) = hostname.split_once('/') else {
        if gateway {
            hostname_part(r, p, hostname, gateway);
        } else {
            r.error(p, "host must be of form namespace/dnsName");
        }
        return;
    };
    if ns.is_empty() || dns.is_empty() {
        r.error(p, "config namespace and dnsName in host entry cannot be empty");
        return;
    }
    // Sidecars also accept "~" (import nothing); gateways do not.
    let special: &[&str] = if gateway { &["*", "."] } else { &["*", ".", "~"] };
    if !special.contains(&ns) && !common::is_dns1123_label(ns) {
        let what = if gateway { "gateway" } else { "sidecar" };
        r.error(p, format!("invalid namespace value {ns:?} in {what}"));
    }
    hostname_part(r, p, dns, gateway);
}

fn hostname_part(r: &mut Report, p: &Path<'_>, hostname: &str, gateway: bool) {
    if hostname != "*" && !hostname.contains('.') {
        r.error(p, "short names (non FQDN) are not allowed");
    }
    if let Err(e) = common::wildcard_domain(hostname)
        && (!gateway || !common::is_ip(hostname))
    {
        r.error(p, e);
    }
    if let Err(e) = common::partial_wildcard(hostname) {
        r.error(p, e);
    }
}

fn server_port(r: &mut Report, p: &Path<'_>, port: Option<&Port>, bind: &str) -> bool {
    let Some(port) = port else {
        r.error(p, "port is required");
        return false;
    };
    let before = r.findings.len();
    let proto = port.protocol.as_deref().unwrap_or("");
    if proto.is_empty() || !common::known_protocol(proto) {
        r.error(
            &p.key("protocol"),
            format!("invalid protocol {proto:?}, supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP"),
        );
    }
    let number = port.number.unwrap_or(0);
    if number > 0 || !bind.starts_with(UNIX_PREFIX) {
        common::port(r, &p.key("number"), i64::from(number));
    }
    if port.target_port.is_some_and(|t| t > 0) {
        r.error(&p.key("targetPort"), "targetPort has no impact on Gateways");
    }
    if port.name.as_deref().is_none_or(str::is_empty) {
        r.error(
            &p.key("name"),
            format!("port name must be set: number:{number} protocol:{proto:?}"),
        );
    }
    r.findings.len() == before
}

fn server_bind(r: &mut Report, p: &Path<'_>, port: Option<&Port>, bind: &str) {
    let bp = p.key("bind");
    if let Some(uds) = bind.strip_prefix(UNIX_PREFIX) {
        if let Err(e) = common::unix_address(uds) {
            r.error(&bp, e);
        }
        if let Some(n) = port.and_then(|p| p.number).filter(|n| *n != 0) {
            r.error(&bp, format!("port number must be 0 for unix domain socket: {n}"));
        }
    } else if !bind.is_empty()
        && let Err(e) = common::ip_address(bind)
    {
        r.error(&bp, e);
    }
}

/// `validateTLSOptions` (Gateway servers and Sidecar ingress).
pub fn tls_options(r: &mut Report, p: &Path<'_>, tls: &ServerTlsSettings) {
    let set = |s: &Option<String>| s.as_deref().is_some_and(|v| !v.is_empty());
    let ciphers = tls.cipher_suites.or_empty();
    if matches!(
        tls.min_protocol_version,
        Some(TlsProtocol::TlsV1_0 | TlsProtocol::TlsV1_1)
    ) && ciphers.is_empty()
    {
        r.warn(
            &p.key("minProtocolVersion"),
            "TLS version below TLSV1_2 require setting compatible ciphers as by default they no longer include compatible ciphers.",
        );
    }
    let invalid: Vec<&str> = ciphers
        .iter()
        .map(String::as_str)
        .filter(|c| !CIPHER_SUITES.contains(c))
        .collect();
    if !invalid.is_empty() {
        r.warn(
            &p.key("cipherSuites"),
            format!("ignoring invalid cipher suites: [{}]", invalid.join(" ")),
        );
    }
    let duplicates: Vec<&str> = ciphers
        .iter()
        .enumerate()
        .filter(|(i, c)| ciphers[..*i].contains(c))
        .map(|(_, c)| c.as_str())
        .collect();
    if !duplicates.is_empty() {
        r.warn(
            &p.key("cipherSuites"),
            format!("ignoring duplicate cipher suites: [{}]", duplicates.join(" ")),
        );
    }
    let mode = tls.mode.unwrap_or_default();
    let credential_names = !tls.credential_names.or_empty().is_empty();
    let tls_certificates = tls.tls_certificates.or_empty();
    if mode == ServerTlsMode::IstioMutual {
        for (present, what) in [
            (set(&tls.server_certificate), "server certificate"),
            (set(&tls.private_key), "private key"),
            (set(&tls.ca_certificates), "CA bundle"),
            (set(&tls.credential_name), "credentialName"),
            (credential_names, "credentialNames"),
            (!tls_certificates.is_empty(), "tlsCertificates"),
        ] {
            if present {
                r.error(p, format!("ISTIO_MUTUAL TLS cannot have associated {what}"));
            }
        }
        return;
    }
    if matches!(mode, ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough) {
        let any_cert = set(&tls.ca_crl)
            || set(&tls.server_certificate)
            || set(&tls.private_key)
            || set(&tls.ca_certificates)
            || set(&tls.credential_name)
            || credential_names
            || !tls_certificates.is_empty();
        if any_cert {
            r.warn(
                p,
                format!("{mode} mode does not use certificates, they will be ignored"),
            );
        }
    }
    if matches!(
        mode,
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
    ) {
        let sources = [
            set(&tls.credential_name),
            credential_names,
            set(&tls.server_certificate) || set(&tls.private_key),
            !tls_certificates.is_empty(),
        ];
        if sources.iter().filter(|s| **s).count() > 1 {
            r.error(p, "only one of credential_name, credential_names, server_certificate/private_key, tls_certificates should be specified");
        }
        if !set(&tls.credential_name) && !credential_names {
            if tls_certificates.is_empty() {
                if !set(&tls.server_certificate) {
                    r.error(
                        &p.key("serverCertificate"),
                        format!("{mode} TLS requires a server certificate"),
                    );
                }
                if !set(&tls.private_key) {
                    r.error(&p.key("privateKey"), format!("{mode} TLS requires a private key"));
                }
            } else {
                for (i, cert) in tls_certificates.iter().enumerate() {
                    let cp = p.key("tlsCertificates");
                    let cp = cp.index(i);
                    if !set(&cert.server_certificate) {
                        r.error(&cp, format!("{mode} TLS requires a server certificate"));
                    }
                    if !set(&cert.private_key) {
                        r.error(&cp, format!("{mode} TLS requires a private key"));
                    }
                }
            }
            if mode != ServerTlsMode::Simple
                && !set(&tls.ca_certificates)
                && !set(&tls.ca_cert_credential_name)
            {
                r.error(
                    &p.key("caCertificates"),
                    format!("{mode} TLS requires a client CA bundle"),
                );
            }
        }
        if set(&tls.ca_crl) {
            if set(&tls.credential_name) {
                r.error(
                    &p.key("caCrl"),
                    "CRL is not supported with credentialName. CRL has to be specified in the credential",
                );
            } else if mode == ServerTlsMode::Simple {
                r.error(&p.key("caCrl"), "CRL is not supported with SIMPLE TLS");
            }
        }
    }
    if tls_certificates.len() > 2 {
        r.warn(
            &p.key("tlsCertificates"),
            "only 2 tlsCertificates (one RSA, one ECDSA) are used; the rest are ignored",
        );
    }
}

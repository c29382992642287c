//! WorkloadEntry (also ServiceEntry endpoints) and WorkloadGroup (§1.7, §1.8, §2.7).

use super::Meta;
use super::common;
use crate::diag::Report;
use crate::path::Path;
use crate::types::OrEmpty;
use crate::types::networking::{ReadinessProbe, WorkloadEntry, WorkloadGroup};

const UNIX_PREFIX: &str = "unix://";

/// CRD rules of a WorkloadEntry message (the kind and `ServiceEntry.endpoints[]`).
pub fn entry_fields_schema(r: &mut Report, path: &Path<'_>, we: &WorkloadEntry) {
    if we.address.is_none() && we.network.is_none() {
        r.invalid(path, "\"object\"", "Address is required");
    }
    if let Some(address) = we.address.as_deref() {
        if address.len() > 256 {
            r.body(&path.key("address"), "should be at most 256 chars long");
        }
        if let Some(uds) = address.strip_prefix(UNIX_PREFIX) {
            if we.ports.is_some() {
                r.invalid(path, "\"object\"", "UDS may not include ports");
            }
            if !(uds.starts_with('/') || uds.starts_with('@')) {
                r.invalid(
                    &path.key("address"),
                    format!("{address:?}"),
                    "UDS must be an absolute path or abstract socket",
                );
            } else if uds.starts_with('/') && uds.ends_with('/') {
                r.invalid(
                    &path.key("address"),
                    format!("{address:?}"),
                    "UDS may not be a dir",
                );
            }
        }
    }
    let ports_path = path.key("ports");
    let ports = we.ports.as_ref();
    if ports.is_some_and(|p| p.len() > 128) {
        r.body(&ports_path, "should have at most 128 properties");
    }
    for (name, port) in ports.into_iter().flatten() {
        if !(1..=65535).contains(port) {
            r.invalid(&ports_path.key(name), port, "port must be between 1-65535");
        }
        if name.len() >= 63 || !common::is_dns1123_label(name) {
            r.invalid(&ports_path, "\"object\"", "port name must be valid");
        }
    }
    if we.labels.as_ref().is_some_and(|l| l.len() > 256) {
        r.body(&path.key("labels"), "should have at most 256 properties");
    }
    if we.network.as_deref().is_some_and(|n| n.len() > 2048) {
        r.body(&path.key("network"), "should be at most 2048 chars long");
    }
    if we.locality.as_deref().is_some_and(|n| n.len() > 2048) {
        r.body(&path.key("locality"), "should be at most 2048 chars long");
    }
    if we.service_account.as_deref().is_some_and(|n| n.len() > 253) {
        r.body(&path.key("serviceAccount"), "should be at most 253 chars long");
    }
}

/// `validateWorkloadEntry`. `service_ports` are the port names of the enclosing ServiceEntry
/// (None for a WorkloadEntry object); `allow_fqdn` is false for STATIC ServiceEntry endpoints.
pub fn validate_entry(
    r: &mut Report,
    path: &Path<'_>,
    we: &WorkloadEntry,
    service_ports: Option<&[&str]>,
    allow_fqdn: bool,
    service_port_count: usize,
) {
    let address = we.address.as_deref().unwrap_or("");
    let network = we.network.as_deref().unwrap_or("");
    if address.is_empty() {
        if network.is_empty() {
            r.error(&path.key("address"), "address is required");
        } else {
            r.warn(
                &path.key("address"),
                format!("address is unset with network {network:?}"),
            );
        }
    }
    if let Some(uds) = address.strip_prefix(UNIX_PREFIX) {
        if let Err(e) = common::unix_address(uds) {
            r.error(&path.key("address"), e);
        }
        if we.ports.as_ref().is_some_and(|p| !p.is_empty()) {
            r.error(
                &path.key("ports"),
                format!("unix endpoint {address} must not include ports"),
            );
        }
        if service_ports.is_some() && service_port_count != 1 {
            r.error(
                &path.key("address"),
                "exactly 1 service port required for unix endpoints",
            );
        }
    } else if !address.is_empty() && !common::is_ip(address) {
        if !allow_fqdn {
            r.error(
                &path.key("address"),
                format!("endpoint address {address:?} is not a valid IP address"),
            );
        } else if common::fqdn(address).is_err() {
            r.error(
                &path.key("address"),
                format!("endpoint address {address:?} is not a valid FQDN or an IP address"),
            );
        }
    }
    let ports_path = path.key("ports");
    for (name, port) in we.ports.iter().flatten() {
        let p = ports_path.key(name);
        if service_ports.is_some_and(|names| !names.contains(&name.as_str())) {
            r.error(
                &p,
                format!("endpoint port {name} is not defined by the service entry"),
            );
        }
        common::port_name(r, &p, name);
        common::port(r, &p, i64::from(*port));
    }
    common::labels(r, &path.key("labels"), we.labels.or_empty());
}

/// CRD rules of the WorkloadEntry kind.
pub fn entry_schema(r: &mut Report, spec: &Path<'_>, we: &WorkloadEntry, _meta: &Meta<'_>) {
    entry_fields_schema(r, spec, we);
}

/// Webhook rules of the WorkloadEntry kind (`ValidateWorkloadEntry`).
pub fn entry_webhook(r: &mut Report, spec: &Path<'_>, we: &WorkloadEntry, _meta: &Meta<'_>) {
    validate_entry(r, spec, we, None, true, 0);
}

/// CRD rules of WorkloadGroup.
pub fn group_schema(r: &mut Report, spec: &Path<'_>, wg: &WorkloadGroup, _meta: &Meta<'_>) {
    if wg.template.is_none() {
        r.required(&spec.key("template"));
    }
    if let Some(m) = &wg.metadata {
        let mp = spec.key("metadata");
        if m.labels.as_ref().is_some_and(|l| l.len() > 256) {
            r.body(&mp.key("labels"), "should have at most 256 properties");
        }
        if m.annotations.as_ref().is_some_and(|l| l.len() > 256) {
            r.body(&mp.key("annotations"), "should have at most 256 properties");
        }
    }
    if let Some(probe) = &wg.probe {
        probe_schema(r, &spec.key("probe"), probe);
    }
}

fn probe_schema(r: &mut Report, path: &Path<'_>, probe: &ReadinessProbe) {
    let methods = [
        probe.http_get.is_some(),
        probe.tcp_socket.is_some(),
        probe.exec.is_some(),
        probe.grpc.is_some(),
    ];
    if methods.iter().filter(|m| **m).count() > 1 {
        r.invalid(
            path,
            "\"object\"",
            "only one of httpGet, tcpSocket, exec or grpc can be set",
        );
    }
    let port_rule = |r: &mut Report, p: &Path<'_>, port: Option<u32>, required: bool| match port {
        None if required => r.required(p),
        Some(n) if !(1..=65535).contains(&n) => r.invalid(p, n, "port must be between 1-65535"),
        _ => {}
    };
    if let Some(h) = &probe.http_get {
        let hp = path.key("httpGet");
        port_rule(r, &hp.key("port"), h.port, true);
        let headers = hp.key("httpHeaders");
        for (i, header) in h.http_headers.or_empty().iter().enumerate() {
            let name = header.name.as_deref().unwrap_or("");
            if !common::HEADER_NAME.is_match(name) {
                r.body(
                    &headers.index(i).key("name"),
                    format!("should match '{}'", common::HEADER_NAME.as_str()),
                );
            }
        }
    }
    if let Some(t) = &probe.tcp_socket {
        port_rule(r, &path.key("tcpSocket").key("port"), t.port, true);
    }
    if let Some(g) = &probe.grpc {
        port_rule(r, &path.key("grpc").key("port"), g.port, false);
    }
}

/// Webhook rules of WorkloadGroup (`ValidateWorkloadGroup`).
pub fn group_webhook(r: &mut Report, spec: &Path<'_>, wg: &WorkloadGroup, _meta: &Meta<'_>) {
    if wg.template.is_none() {
        r.error(&spec.key("template"), "template is required");
    }
    if let Some(m) = &wg.metadata {
        let lp = spec.key("metadata");
        let lp = lp.key("labels");
        let mut sub = Report::default();
        common::labels(&mut sub, &lp, m.labels.or_empty());
        for f in sub.findings {
            r.error(&lp, format!("invalid labels: {}", f.message));
        }
    }
    let Some(probe) = &wg.probe else { return };
    let pp = spec.key("probe");
    for (field, value) in [
        ("initialDelaySeconds", probe.initial_delay_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
        ("periodSeconds", probe.period_seconds),
        ("successThreshold", probe.success_threshold),
        ("failureThreshold", probe.failure_threshold),
    ] {
        if value.is_some_and(|v| v < 0) {
            r.error(&pp.key(field), format!("{field} must be non-negative"));
        }
    }
    if let Some(h) = &probe.http_get {
        let hp = pp.key("httpGet");
        common::port(r, &hp.key("port"), i64::from(h.port.unwrap_or(0)));
        let scheme = h.scheme.as_deref().unwrap_or("");
        if !matches!(scheme, "" | "HTTP" | "HTTPS") {
            r.error(
                &hp.key("scheme"),
                r#"scheme must be one of "", "HTTP" or "HTTPS""#,
            );
        }
        let headers = hp.key("httpHeaders");
        for (i, header) in h.http_headers.or_empty().iter().enumerate() {
            let name = header.name.as_deref().unwrap_or("");
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                r.error(
                    &headers.index(i).key("name"),
                    format!("invalid http header name: {name:?}"),
                );
            }
        }
    } else if let Some(t) = &probe.tcp_socket {
        common::port(
            r,
            &pp.key("tcpSocket").key("port"),
            i64::from(t.port.unwrap_or(0)),
        );
    } else if let Some(e) = &probe.exec {
        if e.command.or_empty().is_empty() {
            r.error(&pp.key("exec").key("command"), "exec command is required");
        }
    } else if let Some(g) = &probe.grpc {
        common::port(r, &pp.key("grpc").key("port"), i64::from(g.port.unwrap_or(0)));
    } else {
        r.error(
            &pp,
            "unknown health check method: none of httpGet, tcpSocket, exec or grpc is set",
        );
    }
}

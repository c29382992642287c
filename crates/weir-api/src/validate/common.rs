//! Rules shared by several kinds, with Istio's wording (`pkg/config/validation/agent/validation.go`,
//! `pkg/config/labels`, `validation.go`).

use std::net::IpAddr;
use std::sync::LazyLock;

use regex::Regex;

use crate::diag::Report;
use crate::path::Path;
use crate::types::{Duration, Labels, MatchLabelsSelector, WorkloadSelector};

/// Compiles one of this crate's built-in patterns (a literal; a typo is caught by the unit tests).
pub(crate) fn re(pattern: &str) -> Regex {
    // The patterns are literals of this file; a typo is caught by the unit tests.
    Regex::new(pattern).unwrap_or_else(|e| panic!("invalid built-in pattern {pattern}: {e}"))
}

/// `^[-_A-Za-z0-9]+$`: header names in probes and JWT claim-to-header rules (CRD pattern).
pub(crate) static HEADER_NAME: LazyLock<Regex> = LazyLock::new(|| re(r"^[-_A-Za-z0-9]+$"));
static DNS1123_LABEL: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$"));
static DNS1123_LABEL_LOWER: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?$"));
static WILDCARD_LABEL: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(?:\*|(?:\*|\*-)?[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?)$"));
static QUALIFIED_NAME: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$"));
static LABEL_VALUE: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(?:(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"));
static DNS1123_SUBDOMAIN: LazyLock<Regex> =
    LazyLock::new(|| re(r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*$"));
static HTTP_TOKEN: LazyLock<Regex> = LazyLock::new(|| re(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$"));

/// A DNS-1123 label (Istio's check accepts upper case).
pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && DNS1123_LABEL.is_match(s)
}

/// A lower-case DNS-1123 label, as Kubernetes requires for names and namespaces.
pub fn is_lower_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && DNS1123_LABEL_LOWER.is_match(s)
}

/// An RFC 7230 token (header names).
pub fn is_http_token(s: &str) -> bool {
    HTTP_TOKEN.is_match(s)
}

fn dns_preconditions(domain: &str) -> Result<(), String> {
    if domain.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    if domain.len() > 255 {
        return Err(format!("domain name {domain:?} too long (max 255)"));
    }
    Ok(())
}

fn dns1123_labels(domain: &str, whole: &str) -> Result<(), String> {
    let parts: Vec<&str> = domain.split('.').collect();
    let tld = parts[parts.len() - 1];
    if !tld.is_empty() && tld.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "domain name {whole:?} invalid (top level domain {tld:?} cannot be all-numeric)"
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        if i == parts.len() - 1 && label.is_empty() {
            return Ok(());
        }
        if !is_dns1123_label(label) {
            return Err(format!("domain name {whole:?} invalid (label {label:?} invalid)"));
        }
    }
    Ok(())
}

/// `ValidateWildcardDomain`: a DNS name whose first label may be a wildcard.
pub fn wildcard_domain(domain: &str) -> Result<(), String> {
    dns_preconditions(domain)?;
    let (first, rest) = match domain.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (domain, None),
    };
    if first.len() > 63 || !WILDCARD_LABEL.is_match(first) {
        return Err(format!(
            "domain name {domain:?} invalid (label {first:?} invalid)"
        ));
    }
    match rest {
        Some(rest) => dns1123_labels(rest, domain),
        None => Ok(()),
    }
}

/// `ValidateFQDN`: a DNS name without wildcards.
pub fn fqdn(domain: &str) -> Result<(), String> {
    dns_preconditions(domain)?;
    dns1123_labels(domain, domain)
}

/// `ValidatePartialWildCard`: only `*` alone or a `*.` prefix.
pub fn partial_wildcard(host: &str) -> Result<(), String> {
    if host.contains('*') && host.len() != 1 && !host.starts_with("*.") {
        return Err(format!("partial wildcard {host:?} not allowed"));
    }
    Ok(())
}

/// `ValidatePort`.
pub fn port(r: &mut Report, path: &Path<'_>, port: i64) {
    if !(1..=65535).contains(&port) {
        r.error(path, format!("port number {port} must be in the range 1..65535"));
    }
}

/// `ValidatePortName`.
pub fn port_name(r: &mut Report, path: &Path<'_>, name: &str) {
    if !is_dns1123_label(name) {
        r.error(path, format!("invalid port name: {name}"));
    }
}

/// Protocols Istio knows (`pkg/config/protocol`), lower case.
const PROTOCOLS: &[&str] = &[
    "tcp",
    "udp",
    "grpc",
    "grpc-web",
    "http",
    "http_proxy",
    "http2",
    "https",
    "tls",
    "mongo",
    "redis",
    "mysql",
];

/// Whether `protocol` is one Istio knows ("" means auto-detect).
pub fn known_protocol(protocol: &str) -> bool {
    protocol.is_empty() || PROTOCOLS.contains(&protocol.to_ascii_lowercase().as_str())
}

/// `ValidateProtocol`.
pub fn protocol(r: &mut Report, path: &Path<'_>, protocol: &str) {
    if !known_protocol(protocol) {
        r.error(path, format!("unsupported protocol: {protocol}"));
    }
}

/// An HTTP-class protocol (HTTP, HTTP2, HTTP_PROXY, GRPC, GRPC-Web).
pub fn is_http_protocol(p: &str) -> bool {
    matches!(
        p.to_ascii_uppercase().as_str(),
        "HTTP" | "HTTP2" | "HTTP_PROXY" | "GRPC" | "GRPC-WEB"
    )
}

/// A TLS-class protocol (HTTPS, TLS).
pub fn is_tls_protocol(p: &str) -> bool {
    matches!(p.to_ascii_uppercase().as_str(), "HTTPS" | "TLS")
}

/// `ValidateIPSubnet`: an IP or a CIDR block.
pub fn ip_subnet(value: &str) -> Result<(), String> {
    if value.matches('/').count() == 1 {
        let ok = value.split_once('/').is_some_and(|(ip, bits)| {
            match (ip.parse::<IpAddr>(), bits.parse::<u8>()) {
                (Ok(IpAddr::V4(_)), Ok(b)) => b <= 32 && !bits.starts_with('+'),
                (Ok(IpAddr::V6(_)), Ok(b)) => b <= 128 && !bits.starts_with('+'),
                _ => false,
            }
        });
        return if ok {
            Ok(())
        } else {
            Err(format!("{value:?} is not a valid CIDR block"))
        };
    }
    ip_address(value)
}

/// `ValidateIPAddress`.
pub fn ip_address(value: &str) -> Result<(), String> {
    value
        .parse::<IpAddr>()
        .map(|_| ())
        .map_err(|_| format!("{value} is not a valid IP"))
}

/// Whether `value` is an IP address.
pub fn is_ip(value: &str) -> bool {
    value.parse::<IpAddr>().is_ok()
}

/// `ValidateUnixAddress`.
pub fn unix_address(addr: &str) -> Result<(), String> {
    if addr.is_empty() {
        return Err("unix address must not be empty".into());
    }
    if addr.starts_with('@') {
        return Ok(());
    }
    if !addr.starts_with('/') || addr.ends_with('/') {
        return Err(format!("{addr} is not an absolute path to a file"));
    }
    Ok(())
}

/// Label key check (`validateTagKey`).
pub fn label_key(key: &str) -> bool {
    let parts: Vec<&str> = key.split('/').collect();
    match parts.as_slice() {
        [name] => name.len() <= 63 && QUALIFIED_NAME.is_match(name),
        [prefix, name] => {
            prefix.len() <= 253
                && DNS1123_SUBDOMAIN.is_match(prefix)
                && name.len() <= 63
                && QUALIFIED_NAME.is_match(name)
        }
        _ => false,
    }
}

/// Label value check.
pub fn label_value(value: &str) -> bool {
    value.len() <= 63 && LABEL_VALUE.is_match(value)
}

/// `labels.Instance.Validate`.
pub fn labels(r: &mut Report, path: &Path<'_>, labels: &Labels) {
    for (k, v) in labels {
        let p = path.key(k);
        if !label_key(k) {
            r.error(&p, format!("invalid tag key: {k:?}"));
        }
        if !label_value(v) {
            r.error(&p, format!("invalid tag value: {v:?}"));
        }
    }
}

/// CRD rules of `networking.v1alpha3.WorkloadSelector`.
pub fn networking_selector_schema(r: &mut Report, path: &Path<'_>, sel: &WorkloadSelector) {
    let labels_path = path.key("labels");
    for (k, v) in sel.labels.iter().flatten() {
        let p = labels_path.key(k);
        if v.len() > 63 {
            r.body(&p, "should be at most 63 chars long");
        }
        if v.contains('*') {
            r.invalid(&p, format!("{v:?}"), "wildcard is not supported in selector");
        }
    }
}

/// Webhook rules of `networking.v1alpha3.WorkloadSelector`; `kind` prefixes the empty-labels warning.
pub fn networking_selector(r: &mut Report, path: &Path<'_>, sel: &WorkloadSelector, kind: &str) {
    let warning = format!(
        "{kind}: workload selector specified without labels, will be applied to all services in namespace"
    );
    selector_labels(r, path, &path.key("labels"), sel.labels.as_ref(), warning);
}

/// The webhook rules both selector types share: no empty keys, no wildcards, and a warning when
/// no labels are given.
fn selector_labels(
    r: &mut Report,
    path: &Path<'_>,
    labels_path: &Path<'_>,
    labels: Option<&Labels>,
    empty_warning: String,
) {
    for (k, v) in labels.into_iter().flatten() {
        let p = labels_path.key(k);
        let pair = format!("{k}={v}");
        if k.is_empty() {
            r.error(&p, format!("empty key is not supported in selector: {pair:?}"));
        }
        if k.contains('*') || v.contains('*') {
            r.error(&p, format!("wildcard is not supported in selector: {pair:?}"));
        }
    }
    if labels.is_none_or(|l| l.is_empty()) {
        r.warn(path, empty_warning);
    }
}

/// CRD rules of `type.v1beta1.WorkloadSelector`.
pub fn match_labels_schema(r: &mut Report, path: &Path<'_>, sel: &MatchLabelsSelector) {
    let labels_path = path.key("matchLabels");
    for (k, v) in sel.match_labels.iter().flatten() {
        let p = labels_path.key(k);
        if k.is_empty() {
            r.invalid(&labels_path, "\"object\"", "key must not be empty");
        }
        if k.contains('*') {
            r.invalid(
                &labels_path,
                "\"object\"",
                "wildcard not allowed in label key match",
            );
        }
        if v.contains('*') {
            r.invalid(
                &labels_path,
                "\"object\"",
                "wildcard not allowed in label value match",
            );
        }
        if v.len() > 63 {
            r.body(&p, "should be at most 63 chars long");
        }
    }
}

/// Webhook rules of `type.v1beta1.WorkloadSelector`.
pub fn match_labels(r: &mut Report, path: &Path<'_>, sel: &MatchLabelsSelector) {
    let warning = "workload selector specified without labels".to_string();
    selector_labels(
        r,
        path,
        &path.key("matchLabels"),
        sel.match_labels.as_ref(),
        warning,
    );
}

/// What kind of object `exportTo` belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ExportKind {
    /// A ServiceEntry (accepts `~`).
    ServiceEntry,
    /// A DestinationRule with a workload selector (own namespace only).
    SelectorDestinationRule,
    /// Any other kind.
    Other,
}

/// `validateExportTo`.
pub fn export_to(r: &mut Report, path: &Path<'_>, namespace: &str, export_to: &[String], kind: ExportKind) {
    if export_to.is_empty() {
        return;
    }
    let mut seen: Vec<&str> = Vec::new();
    let mut has_dot = false;
    for (i, e) in export_to.iter().enumerate() {
        let p = path.index(i);
        let e = e.as_str();
        if e == "." {
            has_dot = true;
        } else if e == "~" {
            if kind != ExportKind::ServiceEntry {
                r.error(
                    &p,
                    "exportTo ~ (none) is not allowed for Istio configuration objects",
                );
            }
        } else if e != "*" && !is_lower_dns1123_label(e) {
            r.error(
                &p,
                "only .,*, or a valid DNS 1123 label is allowed as exportTo entry",
            );
        }
        if seen.contains(&e) {
            r.error(&p, format!("duplicate entries in exportTo for entry {e}"));
        } else {
            seen.push(e);
        }
    }
    if has_dot && seen.contains(&namespace) {
        r.error(
            path,
            format!("duplicate entries in exportTo: . and current namespace {namespace}"),
        );
    }
    if seen.contains(&"*") && seen.len() > 1 {
        r.error(
            path,
            "cannot have both public (*) and non-public exportTo values for a resource",
        );
    }
    if seen.contains(&"~") && seen.len() > 1 {
        r.error(path, "cannot export service entry to no one (~) and someone");
    }
    if kind == ExportKind::SelectorDestinationRule {
        if seen.len() > 1 {
            r.error(
                path,
                "destination rule with workload selector cannot have multiple entries in exportTo",
            );
        } else if !has_dot && !seen.contains(&namespace) {
            r.error(
                path,
                "destination rule with workload selector cannot have exportTo beyond current namespace",
            );
        }
    }
}

/// CRD rule on Duration fields: "must be a valid duration greater than 1ms".
pub fn duration_schema(r: &mut Report, path: &Path<'_>, d: &Duration) {
    if d.get().is_none_or(|v| v < std::time::Duration::from_millis(1)) {
        r.invalid(
            path,
            format!("{:?}", d.as_str()),
            "must be a valid duration greater than 1ms",
        );
    }
}

/// CRD rule on Duration fields marked `duration-validation:none`: any valid duration, `0s` included.
pub fn duration_schema_any(r: &mut Report, path: &Path<'_>, d: &Duration) {
    if d.get().is_none() {
        r.invalid(path, format!("{:?}", d.as_str()), "must be a valid duration");
    }
}

/// Webhook `ValidateDuration`: at least 1ms, millisecond precision.
pub fn duration(r: &mut Report, path: &Path<'_>, d: &Duration) {
    match d.get() {
        Some(v) if v < std::time::Duration::from_millis(1) => {
            r.error(path, "duration must be greater than 1ms")
        }
        Some(v) if v.subsec_nanos() % 1_000_000 != 0 => {
            r.error(path, "only durations to ms precision are supported");
        }
        Some(_) => {}
        None => r.error(path, format!("invalid duration {:?}", d.as_str())),
    }
}

/// A percentage in 0..=100 (`percentage %v is not in range 0..100`).
pub fn percentage_0_100(r: &mut Report, path: &Path<'_>, value: f64) {
    if !(0.0..=100.0).contains(&value) {
        r.error(path, format!("percentage {value} is not in range 0..100"));
    }
}

/// An RE2 regular expression as Istio checks it (non-empty, ≤1024 chars, compiles).
pub fn regex(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{value:?}: regex string match should not be empty"));
    }
    if value.len() > 1024 {
        return Err(format!(
            "{value:?}: regex is too large, max length allowed is 1024"
        ));
    }
    regex::RegexBuilder::new(value).size_limit(1 << 20).build().map(|_| ()).map_err(|e| {
        format!(
            "{value:?}: {}; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)",
            e.to_string().lines().last().unwrap_or("invalid regex")
        )
    })
}

/// `validateGatewayNames`: entries of VirtualService `gateways` and match `gateways`.
pub fn gateway_names(r: &mut Report, path: &Path<'_>, gateways: &[String]) {
    for (i, gw) in gateways.iter().enumerate() {
        let p = path.index(i);
        if let Some((ns, name)) = gw.split_once('/') {
            if ns.is_empty() || name.is_empty() {
                r.error(&p, "config namespace and gateway name cannot be empty");
                continue;
            }
            if !is_lower_dns1123_label(ns) {
                r.error(&p, format!("invalid value for namespace: {ns:?}"));
            }
            if !is_lower_dns1123_label(name) {
                r.error(&p, format!("invalid value for gateway name: {name:?}"));
            }
        } else if gw != "mesh" && gw.contains('.') {
            let mut parts = gw.splitn(3, '.');
            let (name, ns) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            r.warn(&p, format!("using legacy gatewayName format {gw:?}; prefer the <namespace>/<name> format: \"{ns}/{name}\""));
            if let Err(e) = fqdn(gw) {
                r.error(&p, e);
            }
        } else if let Err(e) = fqdn(gw) {
            r.error(&p, e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        assert!(wildcard_domain("*.example.com").is_ok());
        assert!(wildcard_domain("*").is_ok());
        assert!(wildcard_domain("reviews").is_ok());
        assert!(wildcard_domain("istio.io.").is_ok());
        assert_eq!(wildcard_domain("").unwrap_err(), "empty domain name not allowed");
        assert!(
            wildcard_domain("a.*.com")
                .unwrap_err()
                .contains("(label \"*\" invalid)")
        );
        assert!(
            wildcard_domain("foo.123")
                .unwrap_err()
                .contains("cannot be all-numeric")
        );
        assert!(
            wildcard_domain(&"a".repeat(256))
                .unwrap_err()
                .contains("too long")
        );
        assert!(fqdn("*.google.com").is_err());
        assert!(partial_wildcard("*foo.com").is_err());
        assert!(partial_wildcard("*.foo.com").is_ok());
    }

    #[test]
    fn ips_and_labels() {
        assert!(ip_subnet("10.0.0.0/8").is_ok());
        assert!(ip_subnet("2001:db8::/32").is_ok());
        assert!(ip_subnet("10.0.0.0/33").is_err());
        assert!(ip_subnet("1.1.1.1").is_ok());
        assert_eq!(ip_subnet("foo").unwrap_err(), "foo is not a valid IP");
        assert!(label_key("app.kubernetes.io/name"));
        assert!(!label_key("a/b/c"));
        assert!(label_value(""));
        assert!(!label_value("-bad"));
        assert!(unix_address("/var/run/x.sock").is_ok());
        assert!(unix_address("@abstract").is_ok());
        assert!(unix_address("relative").is_err());
        assert!(unix_address("/dir/").is_err());
    }

    #[test]
    fn regexes() {
        assert!(regex("^/api/v[0-9]+").is_ok());
        assert!(regex("(").unwrap_err().contains("RE2"));
        assert!(regex("").is_err());
    }
}

//! MeshConfig (`pkg/config/validation/agent: ValidateMeshConfig`), for the fields Weir reads.

use super::common;
use super::destination_rule::locality_lb;
use super::virtual_service::retry_policy;
use crate::diag::Report;
use crate::path::Path;
use crate::types::OrEmpty;
use crate::types::mesh::MeshConfig;

/// Validates a MeshConfig document.
pub fn validate_mesh_config(r: &mut Report, root: &Path<'_>, m: &MeshConfig) {
    for (field, port) in [
        ("proxyListenPort", m.proxy_listen_port),
        ("proxyInboundListenPort", m.proxy_inbound_listen_port),
        ("proxyHttpPort", m.proxy_http_port),
    ] {
        if let Some(p) = port.filter(|p| *p != 0) {
            common::port(r, &root.key(field), i64::from(p));
        }
    }
    for (field, d) in [
        ("connectTimeout", &m.connect_timeout),
        ("protocolDetectionTimeout", &m.protocol_detection_timeout),
        ("dnsRefreshRate", &m.dns_refresh_rate),
    ] {
        if let Some(d) = d {
            if d.get().is_none() {
                r.error(&root.key(field), format!("invalid duration {:?}", d.as_str()));
            } else if field == "connectTimeout" {
                common::duration(r, &root.key(field), d);
            }
        }
    }
    if let Some(td) = m.trust_domain.as_deref().filter(|t| !t.is_empty())
        && let Err(e) = common::fqdn(td)
    {
        r.error(
            &root.key("trustDomain"),
            format!("trust domain {td:?} is invalid: {e}"),
        );
    }
    for (i, alias) in m.trust_domain_aliases.or_empty().iter().enumerate() {
        if let Err(e) = common::fqdn(alias) {
            r.error(
                &root.key("trustDomainAliases").index(i),
                format!("trust domain alias {alias:?} is invalid: {e}"),
            );
        }
    }
    if let Some(ns) = m.root_namespace.as_deref().filter(|n| !n.is_empty())
        && !common::is_lower_dns1123_label(ns)
    {
        r.error(
            &root.key("rootNamespace"),
            format!("root namespace {ns:?} is not a valid namespace name"),
        );
    }
    for (field, list) in [
        ("defaultServiceExportTo", &m.default_service_export_to),
        (
            "defaultVirtualServiceExportTo",
            &m.default_virtual_service_export_to,
        ),
        (
            "defaultDestinationRuleExportTo",
            &m.default_destination_rule_export_to,
        ),
    ] {
        let p = root.key(field);
        for (i, e) in list.or_empty().iter().enumerate() {
            if e != "." && e != "*" && !common::is_lower_dns1123_label(e) {
                r.error(
                    &p.index(i),
                    format!("invalid exportTo value {e:?}: only .,*, or a valid DNS 1123 label is allowed"),
                );
            }
        }
    }
    if let Some(retry) = &m.default_http_retry_policy {
        retry_policy(r, &root.key("defaultHttpRetryPolicy"), retry);
    }
    if let Some(l) = &m.locality_lb_setting {
        locality_lb(r, &root.key("localityLbSetting"), l, true);
    }
}

#[cfg(test)]
mod tests {
    use crate::resource::parse_mesh_config;

    #[test]
    fn valid_mesh_config_parses() {
        let (mesh, findings) = parse_mesh_config(
            "outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\nrootNamespace: istio-system\ntrustDomain: example.org\n\
             defaultConfig:\n  discoveryAddress: istiod:15012\nconnectTimeout: 5s\n",
        );
        assert!(findings.is_empty(), "{findings:?}");
        let mesh = mesh.unwrap();
        assert_eq!(mesh.effective().trust_domain, "example.org");
    }

    #[test]
    fn invalid_mesh_config_is_reported_with_positions() {
        let (mesh, findings) =
            parse_mesh_config("connectTimeout: 5s\nproxyListenPort: 70000\noutboundTraficPolicy: {}\n");
        assert!(mesh.is_none());
        let texts: Vec<String> = findings.iter().map(|f| f.text()).collect();
        assert!(
            texts
                .iter()
                .any(|t| t.contains("port number 70000 must be in the range 1..65535")),
            "{texts:?}"
        );
        assert!(
            texts
                .iter()
                .any(|t| t.contains("did you mean \"outboundTrafficPolicy\"")),
            "{texts:?}"
        );
        let typo = findings
            .iter()
            .find(|f| f.message.contains("did you mean"))
            .unwrap();
        assert_eq!(typo.pos.unwrap().line, 3);
    }
}

//! Sidecar: CRD rules (§1.6) and `ValidateSidecar` (validation.go:753).

use std::collections::{BTreeMap, BTreeSet};

use super::Meta;
use super::common;
use super::destination_rule;
use super::gateway;
use crate::diag::Report;
use crate::path::Path;
use crate::types::OrEmpty;
use crate::types::networking::{
    CaptureMode, OutboundMode, OutboundTrafficPolicy, ServerTlsMode, Sidecar, SidecarPort,
};

const UNIX_PREFIX: &str = "unix://";

/// CRD rules.
pub fn schema(r: &mut Report, spec: &Path<'_>, sc: &Sidecar, _meta: &Meta<'_>) {
    if let Some(sel) = &sc.workload_selector {
        common::networking_selector_schema(r, &spec.key("workloadSelector"), sel);
    }
    let ip = spec.key("ingress");
    for (i, l) in sc.ingress.or_empty().iter().enumerate() {
        let p = ip.index(i);
        if l.port.is_none() {
            r.required(&p.key("port"));
        }
        if let Some(tls) = &l.tls {
            gateway::tls_schema(r, &p.key("tls"), tls);
        }
        if let Some(cp) = &l.connection_pool {
            destination_rule::pool_schema(r, &p.key("connectionPool"), cp);
        }
    }
    if let Some(cp) = &sc.inbound_connection_pool {
        destination_rule::pool_schema(r, &spec.key("inboundConnectionPool"), cp);
    }
    let ep = spec.key("egress");
    for (i, l) in sc.egress.or_empty().iter().enumerate() {
        if l.hosts.is_none() {
            r.required(&ep.index(i).key("hosts"));
        }
    }
}

/// Webhook rules.
pub fn webhook(r: &mut Report, spec: &Path<'_>, sc: &Sidecar, meta: &Meta<'_>) {
    if let Some(sel) = &sc.workload_selector {
        common::networking_selector(r, &spec.key("workloadSelector"), sel, "sidecar");
    }
    let ingress = sc.ingress.or_empty();
    let egress = sc.egress.or_empty();
    if ingress.is_empty()
        && egress.is_empty()
        && sc.outbound_traffic_policy.is_none()
        && sc.inbound_connection_pool.is_none()
    {
        r.error(spec, "sidecar: empty configuration provided");
    }
    let ip = spec.key("ingress");
    let mut ports: BTreeSet<u32> = BTreeSet::new();
    for (i, l) in ingress.iter().enumerate() {
        let p = ip.index(i);
        let Some(port) = &l.port else {
            r.error(&p, "sidecar: port is required for ingress listeners");
            continue;
        };
        let pp = p.key("port");
        if port.target_port.is_some_and(|t| t > 0) {
            r.error(&pp.key("targetPort"), "targetPort has no impact on Sidecars");
        }
        ingress_port_and_bind(r, &p, port, l.bind.as_deref().unwrap_or(""));
        let number = port.number.unwrap_or(0);
        if !ports.insert(number) {
            r.error(&pp, "sidecar: ports on IP bound listeners must be unique");
            continue;
        }
        if let Some(ep) = l.default_endpoint.as_deref().filter(|e| !e.is_empty()) {
            default_endpoint(r, &p.key("defaultEndpoint"), ep);
        }
        if let Some(tls) = &l.tls {
            let tp = p.key("tls");
            for (bad, msg) in [
                (
                    !tls.subject_alt_names.or_empty().is_empty(),
                    "sidecar: subjectAltNames is not supported in ingress tls",
                ),
                (
                    tls.https_redirect == Some(true),
                    "sidecar: httpsRedirect is not supported",
                ),
                (
                    tls.credential_name.as_deref().is_some_and(|c| !c.is_empty()),
                    "sidecar: credentialName is not currently supported",
                ),
                (
                    !tls.credential_names.or_empty().is_empty(),
                    "sidecar: credentialNames is not currently supported",
                ),
                (
                    !tls.tls_certificates.or_empty().is_empty(),
                    "sidecar: tlsCertificates is not currently supported",
                ),
            ] {
                if bad {
                    r.error(&tp, msg);
                }
            }
            let mode = tls.mode.unwrap_or_default();
            if matches!(mode, ServerTlsMode::IstioMutual | ServerTlsMode::AutoPassthrough) {
                r.error(
                    &tp.key("mode"),
                    format!("configuration is invalid: cannot set mode to {mode} in sidecar ingress tls"),
                );
            }
            let proto = port.protocol.as_deref().unwrap_or("");
            if !common::is_tls_protocol(proto) {
                r.error(
                    &tp,
                    format!("sidecar: ingress tls is only supported on HTTPS or TLS ports, not {proto:?}"),
                );
            }
            gateway::tls_options(r, &tp, tls);
        }
        if let Some(cp) = &l.connection_pool {
            destination_rule::connection_pool(r, &p.key("connectionPool"), cp);
            let proto = port.protocol.as_deref().unwrap_or("");
            if cp.http.is_some() && !common::is_http_protocol(proto) {
                r.warn(
                    &p.key("connectionPool"),
                    format!("sidecar: HTTP connection pool settings are configured for port {number} ({:?}) but its protocol is not HTTP ({proto}); only TCP settings will apply", port.name.as_deref().unwrap_or("")),
                );
            }
        }
    }
    if let Some(cp) = &sc.inbound_connection_pool {
        destination_rule::connection_pool(r, &spec.key("inboundConnectionPool"), cp);
    }

    let ep = spec.key("egress");
    let mut ports: BTreeSet<u32> = BTreeSet::new();
    let mut uds: BTreeSet<&str> = BTreeSet::new();
    let mut catch_all = false;
    for (i, l) in egress.iter().enumerate() {
        let p = ep.index(i);
        match &l.port {
            None => {
                if catch_all {
                    r.error(&p, "sidecar: egress can have only one listener with empty port");
                    continue;
                }
                if i == egress.len() - 1 {
                    catch_all = true;
                } else {
                    r.error(&p, "sidecar: the egress listener with empty port should be the last listener in the list");
                }
            }
            Some(port) => {
                let pp = p.key("port");
                if port.target_port.is_some_and(|t| t > 0) {
                    r.error(&pp.key("targetPort"), "targetPort has no impact on Sidecars");
                }
                let bind = l.bind.as_deref().unwrap_or("");
                egress_port_bind_capture(r, &p, port, bind, l.capture_mode.unwrap_or_default());
                let number = port.number.unwrap_or(0);
                if number == 0 {
                    if !uds.insert(bind) {
                        r.error(
                            &p.key("bind"),
                            "sidecar: unix domain socket values for listeners must be unique",
                        );
                    }
                } else if !ports.insert(number) {
                    r.error(&pp, "sidecar: ports on IP bound listeners must be unique");
                }
            }
        }
        let hosts = l.hosts.or_empty();
        let hp = p.key("hosts");
        if hosts.is_empty() {
            r.error(&hp, "sidecar: egress listener must contain at least one host");
            continue;
        }
        let mut by_ns: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
        for (j, h) in hosts.iter().enumerate() {
            let hpj = hp.index(j);
            if let Some((ns, svc)) = h.split_once('/') {
                let ns = if ns == "." {
                    meta.namespace.to_string()
                } else {
                    ns.to_string()
                };
                let seen = by_ns.entry(ns).or_default();
                let duplicate = if svc == "*" {
                    !seen.is_empty()
                } else {
                    seen.contains(svc) || seen.contains("*")
                };
                if duplicate {
                    r.warn(&hpj, format!("duplicated egress host: {h}"));
                }
                seen.insert(svc);
            }
            gateway::namespace_slash_host(r, &hpj, h, false);
        }
        if by_ns.get("*").is_some_and(|s| s.contains("*")) && by_ns.len() != 1 {
            r.warn(
                &hp,
                "`*/*` host select all resources, no other hosts can be added",
            );
        }
    }
    if let Some(policy) = &sc.outbound_traffic_policy {
        outbound_policy(r, &spec.key("outboundTrafficPolicy"), policy);
    }
}

fn ingress_port_and_bind(r: &mut Report, p: &Path<'_>, port: &SidecarPort, bind: &str) {
    let pp = p.key("port");
    if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
        common::port_name(r, &pp.key("name"), name);
    }
    common::protocol(r, &pp.key("protocol"), port.protocol.as_deref().unwrap_or(""));
    common::port(r, &pp.key("number"), i64::from(port.number.unwrap_or(0)));
    if !bind.is_empty()
        && let Err(e) = common::ip_address(bind)
    {
        r.error(&p.key("bind"), e);
    }
}

fn egress_port_bind_capture(
    r: &mut Report,
    p: &Path<'_>,
    port: &SidecarPort,
    bind: &str,
    capture: CaptureMode,
) {
    let pp = p.key("port");
    if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
        common::port_name(r, &pp.key("name"), name);
    }
    let number = port.number.unwrap_or(0);
    if let Some(path) = bind.strip_prefix(UNIX_PREFIX) {
        if number != 0 {
            r.error(
                &pp.key("number"),
                "sidecar: ports on unix bound listeners must be 0",
            );
        }
        if !matches!(capture, CaptureMode::Default | CaptureMode::None) {
            r.error(
                &p.key("captureMode"),
                "sidecar: captureMode must be DEFAULT or NONE for unix domain socket listeners",
            );
        }
        if let Err(e) = common::unix_address(path) {
            r.error(&p.key("bind"), e);
        }
    } else {
        if !bind.is_empty()
            && let Err(e) = common::ip_address(bind)
        {
            r.error(&p.key("bind"), e);
        }
        common::port(r, &pp.key("number"), i64::from(number));
    }
    common::protocol(r, &pp.key("protocol"), port.protocol.as_deref().unwrap_or(""));
}

fn default_endpoint(r: &mut Report, p: &Path<'_>, endpoint: &str) {
    if let Some(path) = endpoint.strip_prefix(UNIX_PREFIX) {
        if let Err(e) = common::unix_address(path) {
            r.error(p, e);
        }
        return;
    }
    let Some((host, port)) = endpoint.rsplit_once(':') else {
        r.error(p, format!("address {endpoint}: missing port in address"));
        return;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if !host.is_empty() && !matches!(host, "127.0.0.1" | "0.0.0.0" | "::1" | "::") {
        r.error(p, "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,[::]:port,unix://filepath or unset");
    }
    match port.parse::<i64>() {
        Ok(n) => common::port(r, p, n),
        Err(e) => r.error(
            p,
            format!("sidecar: defaultEndpoint port ({port}) is not a number: {e}"),
        ),
    }
}

fn outbound_policy(r: &mut Report, p: &Path<'_>, policy: &OutboundTrafficPolicy) {
    let mode = policy.mode.unwrap_or_default();
    if mode == OutboundMode::AllowAnyDynamicDns {
        r.error(
            &p.key("mode"),
            "sidecar: ALLOW_ANY_DYNAMIC_DNS is only supported in MeshConfig's outboundTrafficPolicy",
        );
    }
    if let Some(proxy) = &policy.egress_proxy {
        let pp = p.key("egressProxy");
        if mode != OutboundMode::AllowAny {
            r.error(
                &pp,
                "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode",
            );
        }
        if let Err(e) = common::fqdn(proxy.host.as_deref().unwrap_or("")) {
            r.error(&pp.key("host"), e);
        }
        match proxy.port.as_ref().and_then(|p| p.number) {
            None => r.error(&pp.key("port"), "sidecar: egress_proxy port must be non-nil"),
            Some(n) => common::port(r, &pp.key("port").key("number"), i64::from(n)),
        }
        if let Some(subset) = proxy.subset.as_deref().filter(|s| !s.is_empty())
            && !common::is_dns1123_label(subset)
        {
            r.error(&pp.key("subset"), format!("subset name is invalid: {subset}"));
        }
    }
}

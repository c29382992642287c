//! ServiceEntry: CRD rules (§1.2) and `ValidateServiceEntry` (validation.go:2892).

use super::Meta;
use super::common::{self, ExportKind};
use super::workload;
use crate::diag::Report;
use crate::path::Path;
use crate::types::OrEmpty;
use crate::types::networking::{Resolution, ServiceEntry};

/// Label that opts a ServiceEntry out of address auto-allocation.
pub const AUTOALLOCATE_LABEL: &str = "networking.istio.io/enable-autoallocate-ip";

/// CRD schema and CEL rules.
pub fn schema(r: &mut Report, spec: &Path<'_>, se: &ServiceEntry, _meta: &Meta<'_>) {
    let hosts = se.hosts.or_empty();
    let hosts_path = spec.key("hosts");
    if hosts.is_empty() {
        r.required(&hosts_path);
    }
    if hosts.len() > 256 {
        r.body(&hosts_path, "should have at most 256 items");
    }
    for (i, h) in hosts.iter().enumerate() {
        if h == "*" {
            r.invalid(&hosts_path.index(i), "\"string\"", "hostname cannot be wildcard");
        }
    }
    let addresses = se.addresses.or_empty();
    let addr_path = spec.key("addresses");
    if addresses.len() > 256 {
        r.body(&addr_path, "should have at most 256 items");
    }
    for (i, a) in addresses.iter().enumerate() {
        if a.len() > 64 {
            r.body(&addr_path.index(i), "should be at most 64 chars long");
        }
    }
    let ports = se.ports.or_empty();
    let ports_path = spec.key("ports");
    if ports.len() > 256 {
        r.body(&ports_path, "should have at most 256 items");
    }
    for (i, p) in ports.iter().enumerate() {
        let pp = ports_path.index(i);
        match p.number {
            None => r.required(&pp.key("number")),
            Some(n) if !(1..=65535).contains(&n) => {
                r.invalid(&pp.key("number"), n, "port must be between 1-65535")
            }
            Some(_) => {}
        }
        if let Some(t) = p.target_port
            && !(1..=65535).contains(&t)
        {
            r.invalid(&pp.key("targetPort"), t, "port must be between 1-65535");
        }
        match p.name.as_deref() {
            None => r.required(&pp.key("name")),
            Some(name) => {
                if name.len() > 256 {
                    r.body(&pp.key("name"), "should be at most 256 chars long");
                }
                if ports[..i].iter().any(|q| q.name.as_deref() == Some(name)) {
                    r.error(&pp, format!("Duplicate value: {{\"name\":{name:?}}}"));
                }
            }
        }
        if p.protocol.as_deref().is_some_and(|s| s.len() > 256) {
            r.body(&pp.key("protocol"), "should be at most 256 chars long");
        }
    }
    let numbers: Vec<u32> = ports.iter().filter_map(|p| p.number).collect();
    if (1..numbers.len()).any(|i| numbers[..i].contains(&numbers[i])) {
        r.invalid(&ports_path, "\"array\"", "port number cannot be duplicated");
    }
    if let Some(sel) = &se.workload_selector {
        common::networking_selector_schema(r, &spec.key("workloadSelector"), sel);
    }
    let endpoints_path = spec.key("endpoints");
    if let Some(endpoints) = &se.endpoints {
        if endpoints.len() > 4096 {
            r.body(&endpoints_path, "should have at most 4096 items");
        }
        for (i, ep) in endpoints.iter().enumerate() {
            workload::entry_fields_schema(r, &endpoints_path.index(i), ep);
        }
    }
    let resolution = se.resolution();
    if se.workload_selector.is_some() && se.endpoints.is_some() {
        r.invalid(
            spec,
            "\"object\"",
            "only one of WorkloadSelector or Endpoints can be set",
        );
    }
    if addresses.iter().any(|a| a.contains('/'))
        && !matches!(resolution, Resolution::None | Resolution::Static)
    {
        r.invalid(
            spec,
            "\"object\"",
            "CIDR addresses are allowed only for NONE/STATIC resolution types",
        );
    }
    if resolution == Resolution::None && se.endpoints.is_some() {
        r.invalid(spec, "\"object\"", "NONE mode cannot set endpoints");
    }
    if resolution == Resolution::DnsRoundRobin && se.endpoints.or_empty().len() > 1 {
        r.invalid(
            spec,
            "\"object\"",
            "DNS_ROUND_ROBIN mode cannot have multiple endpoints",
        );
    }
}

/// Webhook rules, in Istio's evaluation order.
pub fn webhook(r: &mut Report, spec: &Path<'_>, se: &ServiceEntry, meta: &Meta<'_>) {
    let resolution = se.resolution();
    if let Some(sel) = &se.workload_selector {
        common::networking_selector(r, &spec.key("workloadSelector"), sel, "service entry");
    }
    if se.workload_selector.is_some() && se.endpoints.is_some() {
        r.error(
            spec,
            "only one of WorkloadSelector or Endpoints is allowed in Service Entry",
        );
    }

    let hosts = se.hosts.or_empty();
    let hosts_path = spec.key("hosts");
    if hosts.is_empty() {
        r.error(&hosts_path, "service entry must have at least one host");
    }
    for (i, h) in hosts.iter().enumerate() {
        let p = hosts_path.index(i);
        if h == "*" {
            r.error(&p, "invalid host *");
            continue;
        }
        if let Err(e) = common::wildcard_domain(h) {
            r.error(&p, e);
        }
        if resolution != Resolution::DynamicDns
            && let Err(e) = common::partial_wildcard(h)
        {
            r.warn(&p, e);
        }
    }

    let addresses = se.addresses.or_empty();
    let addr_path = spec.key("addresses");
    let mut cidr_found = false;
    for (i, a) in addresses.iter().enumerate() {
        cidr_found |= a.contains('/');
        if let Err(e) = common::ip_subnet(a) {
            r.error(&addr_path.index(i), e);
        }
    }
    if cidr_found && !matches!(resolution, Resolution::None | Resolution::Static) {
        r.error(
            &addr_path,
            "CIDR addresses are allowed only for NONE/STATIC resolution types",
        );
    }

    let ports_path = spec.key("ports");
    let ports = se.ports.or_empty();
    let autoallocate = resolution != Resolution::None
        && meta
            .metadata
            .labels
            .or_empty()
            .get(AUTOALLOCATE_LABEL)
            .map(String::as_str)
            != Some("false");
    let mut names: Vec<&str> = Vec::new();
    let mut numbers: Vec<u32> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = ports_path.index(i);
        let name = p.name.as_deref().unwrap_or("");
        let number = p.number.unwrap_or(0);
        if names.contains(&name) {
            r.error(
                &pp.key("name"),
                format!("service entry port name {name:?} already defined"),
            );
        }
        names.push(name);
        if numbers.contains(&number) {
            r.error(
                &pp.key("number"),
                format!("service entry port {number} already defined"),
            );
        }
        numbers.push(number);
        if let Some(t) = p.target_port {
            common::port(r, &pp.key("targetPort"), i64::from(t));
        }
        common::port_name(r, &pp.key("name"), name);
        let protocol = p.protocol.as_deref().unwrap_or("");
        common::protocol(r, &pp.key("protocol"), protocol);
        common::port(r, &pp.key("number"), i64::from(number));
        if addresses.is_empty()
            && !autoallocate
            && (protocol.is_empty() || protocol.eq_ignore_ascii_case("TCP"))
        {
            r.warn(
                &pp.key("protocol"),
                "addresses are required for ports serving TCP (or unset) protocol when IP Autoallocation is not enabled",
            );
        }
    }

    let endpoints = se.endpoints.or_empty();
    let ep_path = spec.key("endpoints");
    match resolution {
        Resolution::None => {
            if !endpoints.is_empty() {
                r.error(
                    &ep_path,
                    "no endpoints should be provided for resolution type none",
                );
            }
            if se.workload_selector.is_some() {
                r.warn(
                    &spec.key("workloadSelector"),
                    "workloadSelector should not be set when resolution mode is NONE",
                );
            }
        }
        Resolution::Static => {
            for (i, ep) in endpoints.iter().enumerate() {
                workload::validate_entry(r, &ep_path.index(i), ep, Some(&names), false, ports.len());
            }
        }
        Resolution::Dns | Resolution::DnsRoundRobin => {
            if endpoints.is_empty()
                && let Some((i, h)) = hosts.iter().enumerate().find(|(_, h)| common::fqdn(h).is_err())
            {
                r.error(
                        &hosts_path.index(i),
                        format!(
                            "hosts must be FQDN or contain only prefix wildcards if no endpoints are provided for resolution mode {}, {}",
                            resolution.as_str(),
                            common::fqdn(h).err().unwrap_or_default()
                        ),
                    );
            }
            if resolution == Resolution::DnsRoundRobin && endpoints.len() > 1 {
                r.error(
                    &ep_path,
                    "there must only be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN",
                );
            }
            for (i, ep) in endpoints.iter().enumerate() {
                let p = ep_path.index(i);
                let address = ep.address.as_deref().unwrap_or("");
                if !common::is_ip(address) && common::fqdn(address).is_err() {
                    r.error(
                        &p.key("address"),
                        format!("endpoint address {address:?} is not a valid FQDN or an IP address"),
                    );
                }
                common::labels(r, &p.key("labels"), ep.labels.or_empty());
                let ports_p = p.key("ports");
                for (name, port) in ep.ports.iter().flatten() {
                    let pp = ports_p.key(name);
                    if !names.contains(&name.as_str()) {
                        r.error(
                            &pp,
                            format!("endpoint port {name} is not defined by the service entry"),
                        );
                    }
                    common::port_name(r, &pp, name);
                    common::port(r, &pp, i64::from(*port));
                }
            }
            let tcp_class = ports.iter().any(|p| {
                let proto = p.protocol.as_deref().unwrap_or("").to_ascii_uppercase();
                matches!(
                    proto.as_str(),
                    "TCP" | "HTTPS" | "TLS" | "MONGO" | "REDIS" | "MYSQL"
                )
            });
            if !addresses.is_empty() && tcp_class && hosts.len() > 1 {
                r.warn(&hosts_path, "service entry can not have more than one host specified simultaneously with address and tcp port");
            }
        }
        Resolution::DynamicDns => {
            if hosts.is_empty() {
                r.error(
                    &hosts_path,
                    "at least one wildcard host must be provided for resolution type DYNAMIC_DNS",
                );
            }
            for (i, h) in hosts.iter().enumerate() {
                if !h.starts_with('*') {
                    r.error(
                        &hosts_path.index(i),
                        "host must be wildcarded for resolution mode DYNAMIC_DNS",
                    );
                }
            }
            if !addresses.is_empty() {
                r.error(
                    &addr_path,
                    "addresses cannot be set for resolution type DYNAMIC_DNS",
                );
            }
            if !endpoints.is_empty() {
                r.error(
                    &ep_path,
                    "endpoints cannot be set for resolution type DYNAMIC_DNS",
                );
            }
            for (i, p) in ports.iter().enumerate() {
                let proto = p.protocol.as_deref().unwrap_or("").to_ascii_uppercase();
                if !matches!(proto.as_str(), "HTTP" | "TLS" | "GRPC" | "HTTP2") {
                    r.error(
                        &ports_path.index(i).key("protocol"),
                        "only HTTP, TLS, GRPC, and HTTP2 protocols are supported for resolution type DYNAMIC_DNS",
                    );
                }
            }
            let waypoint = meta.metadata.labels.or_empty().get("istio.io/use-waypoint");
            if se.location() == crate::types::networking::Location::MeshInternal
                && waypoint.is_some_and(|w| w != "none")
            {
                r.error(spec, "location MESH_INTERNAL with resolution type DYNAMIC_DNS is not supported when using waypoints");
            }
        }
    }

    if resolution != Resolution::None && hosts.len() > 1 {
        let any_opaque = ports.iter().any(|p| {
            let proto = p.protocol.as_deref().unwrap_or("");
            !common::is_http_protocol(proto) && !common::is_tls_protocol(proto)
        });
        if any_opaque {
            r.error(
                &ports_path,
                "multiple hosts provided with non-HTTP, non-TLS ports",
            );
        }
    }

    common::export_to(
        r,
        &spec.key("exportTo"),
        meta.namespace,
        se.export_to.or_empty(),
        ExportKind::ServiceEntry,
    );
}

//! EnvoyFilter (`ValidateEnvoyFilter`) and ProxyConfig (`ValidateProxyConfig`).

use super::Meta;
use super::common;
use crate::diag::Report;
use crate::path::Path;
use crate::types::OrEmpty;
use crate::types::networking::{
    ApplyTo, EnvoyConfigObjectMatch, EnvoyFilter, PatchContext, PatchOperation, ProxyConfig,
};

const HCM: &str = "envoy.filters.network.http_connection_manager";

/// CRD rules of EnvoyFilter.
pub fn schema(r: &mut Report, spec: &Path<'_>, ef: &EnvoyFilter, _meta: &Meta<'_>) {
    if let Some(sel) = &ef.workload_selector {
        common::networking_selector_schema(r, &spec.key("workloadSelector"), sel);
    }
    if ef.workload_selector.is_some() && ef.target_refs.is_some() {
        r.invalid(
            spec,
            "\"object\"",
            "only one of targetRefs or workloadSelector can be set",
        );
    }
    let cp = spec.key("configPatches");
    for (i, patch) in ef.config_patches.or_empty().iter().enumerate() {
        let p = cp.index(i);
        if let Some(m) = &patch.r#match {
            match_schema(r, &p.key("match"), m);
        }
    }
}

fn match_schema(r: &mut Report, p: &Path<'_>, m: &EnvoyConfigObjectMatch) {
    let objects = [
        m.listener.is_some(),
        m.route_configuration.is_some(),
        m.cluster.is_some(),
        m.waypoint.is_some(),
    ];
    if objects.iter().filter(|b| **b).count() > 1 {
        r.invalid(
            p,
            "\"object\"",
            "only one of listener, routeConfiguration, cluster or waypoint can be set",
        );
    }
    let waypoint_context = m.context == Some(PatchContext::Waypoint);
    let misplaced = (m.waypoint.is_some() && !waypoint_context)
        || (waypoint_context
            && (m.listener.is_some() || m.route_configuration.is_some() || m.cluster.is_some()));
    if misplaced {
        r.invalid(
            p,
            "\"object\"",
            "only support waypointMatch when context is WAYPOINT",
        );
    }
    if let Some(port) = m.waypoint.as_ref().and_then(|w| w.port_number)
        && !(1..=65535).contains(&port)
    {
        r.invalid(
            &p.key("waypoint").key("portNumber"),
            "\"integer\"",
            "port must be between 1-65535",
        );
    }
}

/// Webhook rules of EnvoyFilter.
pub fn webhook(r: &mut Report, spec: &Path<'_>, ef: &EnvoyFilter, _meta: &Meta<'_>) {
    if let Some(sel) = &ef.workload_selector {
        common::networking_selector(r, &spec.key("workloadSelector"), sel, "envoy filter");
    }
    let refs_path = spec.key("targetRefs");
    let refs: Vec<(Path<'_>, &crate::types::PolicyTargetReference)> = ef
        .target_refs
        .or_empty()
        .iter()
        .enumerate()
        .map(|(i, t)| (refs_path.index(i), t))
        .collect();
    super::target_refs_webhook(r, &refs);
    let cp = spec.key("configPatches");
    for (i, patch) in ef.config_patches.or_empty().iter().enumerate() {
        let p = cp.index(i);
        let apply_to = patch.apply_to.unwrap_or_default();
        if apply_to == ApplyTo::Invalid {
            r.error(&p.key("applyTo"), "Envoy filter: missing applyTo");
        }
        match &patch.patch {
            None => r.error(&p.key("patch"), "Envoy filter: missing patch"),
            Some(body) => {
                let op = body.operation.unwrap_or_default();
                if op == PatchOperation::Invalid {
                    r.error(
                        &p.key("patch").key("operation"),
                        "Envoy filter: missing patch operation",
                    );
                }
                if op != PatchOperation::Remove && body.value.is_none() {
                    r.error(
                        &p.key("patch").key("value"),
                        "Envoy filter: missing patch value for non-remove operation",
                    );
                }
            }
        }
        let Some(m) = &patch.r#match else { continue };
        let mp = p.key("match");
        if let Some(version) = m
            .proxy
            .as_ref()
            .and_then(|px| px.proxy_version.as_deref())
            .filter(|v| !v.is_empty())
            && let Err(e) = regex::Regex::new(version)
        {
            r.error(
                &mp.key("proxy").key("proxyVersion"),
                format!("Envoy filter: invalid regex for proxy version, [{e}]"),
            );
        }
        let has_object = m.listener.is_some() || m.route_configuration.is_some() || m.cluster.is_some();
        match apply_to {
            ApplyTo::Listener | ApplyTo::FilterChain | ApplyTo::NetworkFilter | ApplyTo::HttpFilter => {
                if has_object && m.listener.is_none() {
                    r.error(
                        &mp,
                        "Envoy filter: applyTo for listener class objects cannot have non listener match",
                    );
                }
                let filter = m
                    .listener
                    .as_ref()
                    .and_then(|l| l.filter_chain.as_ref())
                    .and_then(|fc| fc.filter.as_ref());
                if let Some(filter) = filter {
                    if matches!(apply_to, ApplyTo::Listener | ApplyTo::FilterChain) {
                        r.warn(
                            &mp,
                            format!("Envoy filter: filter match has no effect when used with {apply_to}"),
                        );
                    }
                    let name = filter.name.as_deref().unwrap_or("");
                    if name.is_empty() {
                        r.error(&mp, "Envoy filter: filter match has no name to match on");
                    } else if let Some(sub) = &filter.sub_filter {
                        if apply_to != ApplyTo::HttpFilter {
                            r.error(
                                &mp,
                                "Envoy filter: subfilter match can be used with applyTo HTTP_FILTER only",
                            );
                        }
                        if name != HCM && name != "envoy.http_connection_manager" {
                            r.error(
                                &mp,
                                format!("Envoy filter: subfilter match requires filter match with {HCM}"),
                            );
                        }
                        if sub.name.as_deref().is_none_or(str::is_empty) {
                            r.error(&mp, "Envoy filter: subfilter match has no name to match on");
                        }
                    }
                }
            }
            ApplyTo::RouteConfiguration | ApplyTo::VirtualHost | ApplyTo::HttpRoute
                if has_object && m.route_configuration.is_none() =>
            {
                r.error(&mp, "Envoy filter: applyTo for http route class objects cannot have non route configuration match");
            }
            ApplyTo::Cluster if has_object && m.cluster.is_none() => {
                r.error(
                    &mp,
                    "Envoy filter: applyTo for cluster class objects cannot have non cluster match",
                );
            }
            _ => {}
        }
    }
}

/// CRD rules of ProxyConfig.
pub fn proxy_config_schema(r: &mut Report, spec: &Path<'_>, pc: &ProxyConfig, _meta: &Meta<'_>) {
    if let Some(sel) = &pc.selector {
        common::match_labels_schema(r, &spec.key("selector"), sel);
    }
    if pc.concurrency.is_some_and(|c| c < 0) {
        r.body(&spec.key("concurrency"), "should be greater than or equal to 0");
    }
}

/// Webhook rules of ProxyConfig.
pub fn proxy_config_webhook(r: &mut Report, spec: &Path<'_>, pc: &ProxyConfig, _meta: &Meta<'_>) {
    if let Some(sel) = &pc.selector {
        common::match_labels(r, &spec.key("selector"), sel);
    }
    if let Some(image) = pc.image.as_ref().and_then(|i| i.image_type.as_deref())
        && !matches!(image, "" | "default" | "debug" | "distroless")
    {
        r.warn(
            &spec.key("image").key("imageType"),
            format!("image type {image:?} is not one of default, debug, distroless"),
        );
    }
}

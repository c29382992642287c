//! Istio's validation, in its two layers.
//!
//! 1. The **CRD schema** (OpenAPI + CEL rules generated from the protos), which the Kubernetes API
//!    server applies first, with Kubernetes' wording (`spec.hosts: Required value`).
//! 2. The **istiod webhook** (`pkg/config/validation`), with Istio's wording and its split between
//!    errors and warnings.
//!
//! As on a real cluster, the webhook layer only runs when the schema layer accepted the object.

pub mod common;
pub mod destination_rule;
pub mod envoy_filter;
pub mod gateway;
pub mod mesh;
pub mod security;
pub mod service_entry;
pub mod sidecar;
pub mod telemetry;
pub mod virtual_service;
pub mod workload;

use crate::diag::Report;
use crate::path::Path;
use crate::resource::Resource;
use crate::types::{Object, ObjectMeta, PolicyTargetReference};

/// Validates a decoded Istio resource. Kubernetes kinds are not validated.
pub fn validate(resource: &Resource, r: &mut Report) {
    match resource {
        Resource::ServiceEntry(o) => run(r, o, true, service_entry::schema, service_entry::webhook),
        Resource::VirtualService(o) => run(r, o, false, virtual_service::schema, virtual_service::webhook),
        Resource::DestinationRule(o) => run(r, o, false, destination_rule::schema, destination_rule::webhook),
        Resource::Gateway(o) => run(r, o, false, gateway::schema, gateway::webhook),
        Resource::Sidecar(o) => run(r, o, false, sidecar::schema, sidecar::webhook),
        Resource::WorkloadEntry(o) => run(r, o, true, workload::entry_schema, workload::entry_webhook),
        Resource::WorkloadGroup(o) => run(r, o, true, workload::group_schema, workload::group_webhook),
        Resource::EnvoyFilter(o) => run(r, o, false, envoy_filter::schema, envoy_filter::webhook),
        Resource::ProxyConfig(o) => run(
            r,
            o,
            false,
            envoy_filter::proxy_config_schema,
            envoy_filter::proxy_config_webhook,
        ),
        Resource::AuthorizationPolicy(o) => run(r, o, false, security::authz_schema, security::authz_webhook),
        Resource::PeerAuthentication(o) => run(r, o, false, security::peer_schema, security::peer_webhook),
        Resource::RequestAuthentication(o) => {
            run(r, o, false, security::request_schema, security::request_webhook)
        }
        Resource::Telemetry(o) => run(r, o, false, telemetry::schema, telemetry::webhook),
        Resource::Namespace(_)
        | Resource::Service(_)
        | Resource::Endpoints(_)
        | Resource::EndpointSlice(_)
        | Resource::Pod(_)
        | Resource::Secret(_)
        | Resource::ConfigMap(..) => {}
    }
}

/// Everything a rule may need to know about the object besides its spec.
pub struct Meta<'a> {
    /// Name.
    pub name: &'a str,
    /// Namespace.
    pub namespace: &'a str,
    /// Metadata.
    pub metadata: &'a ObjectMeta,
}

type Layer<S> = fn(&mut Report, &Path<'_>, &S, &Meta<'_>);

fn run<S: Default>(
    r: &mut Report,
    obj: &Object<S>,
    spec_required: bool,
    schema: Layer<S>,
    webhook: Layer<S>,
) {
    let root = Path::Root;
    let spec_path = root.key("spec");
    let meta = Meta {
        name: obj.name(),
        namespace: obj.namespace(),
        metadata: &obj.metadata,
    };
    metadata_schema(r, &root, &obj.metadata);
    let default_spec = S::default();
    let spec = match &obj.spec {
        Some(spec) => spec,
        None if spec_required => {
            r.required(&spec_path);
            return;
        }
        None => &default_spec,
    };
    schema(r, &spec_path, spec, &meta);
    if r.has_errors() {
        return;
    }
    metadata_webhook(r, &root, &obj.kind, &obj.metadata);
    webhook(r, &spec_path, spec, &meta);
}

fn metadata_schema(r: &mut Report, root: &Path<'_>, m: &ObjectMeta) {
    let meta = root.key("metadata");
    if m.name.as_deref().is_none_or(str::is_empty) && m.generate_name.as_deref().is_none_or(str::is_empty) {
        r.error(
            &meta.key("name"),
            "Required value: name or generateName is required",
        );
    }
    if let Some(ns) = m.namespace.as_deref()
        && !common::is_lower_dns1123_label(ns)
    {
        r.invalid(&meta.key("namespace"), format!("{ns:?}"), "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character");
    }
}

const DRY_RUN: &str = "istio.io/dry-run";
const ALWAYS_REJECT: &str = "internal.istio.io/webhook-always-reject";

fn metadata_webhook(r: &mut Report, root: &Path<'_>, kind: &str, m: &ObjectMeta) {
    let annotations = root.key("metadata");
    let annotations = annotations.key("annotations");
    for key in m.annotations.iter().flat_map(|a| a.keys()) {
        let p = annotations.key(key);
        if key == DRY_RUN && kind != "AuthorizationPolicy" {
            let name = m.name.as_deref().unwrap_or("");
            let ns = m.namespace.as_deref().unwrap_or("");
            r.error(
                &p,
                format!(
                    "{kind}/{ns}/{name} has unsupported annotation {DRY_RUN}, please remove the annotation"
                ),
            );
        }
        if key == ALWAYS_REJECT {
            r.error(&p, format!("{ALWAYS_REJECT:?} annotation found, rejecting"));
        }
        if key.starts_with("internal.istio.io/parent") {
            r.error(
                &p,
                format!("{key:?} annotation found, this may not be set by users"),
            );
        }
    }
}

/// CRD rules for `targetRef`/`targetRefs`/`selector` (security kinds, Telemetry).
pub(crate) fn target_refs_schema(
    r: &mut Report,
    spec: &Path<'_>,
    has_selector: bool,
    target_ref: Option<&PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
) {
    if has_selector && (target_ref.is_some() || !target_refs.is_empty())
        || target_ref.is_some() && !target_refs.is_empty()
    {
        r.invalid(
            spec,
            "\"object\"",
            "only one of targetRefs or selector can be set",
        );
    }
    if target_refs.len() > 16 {
        r.body(&spec.key("targetRefs"), "should have at most 16 items");
    }
    let single = spec.key("targetRef");
    if let Some(t) = target_ref {
        target_ref_schema(r, &single, t);
    }
    let many = spec.key("targetRefs");
    for (i, t) in target_refs.iter().enumerate() {
        target_ref_schema(r, &many.index(i), t);
    }
}

fn target_ref_schema(r: &mut Report, path: &Path<'_>, t: &PolicyTargetReference) {
    static GROUP: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        common::re(r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    });
    static KIND: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| common::re(r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$"));
    let group = t.group.as_deref().unwrap_or("");
    if group.len() > 253 {
        r.body(&path.key("group"), "should be at most 253 chars long");
    }
    if !GROUP.is_match(group) {
        r.body(&path.key("group"), format!("should match '{}'", GROUP.as_str()));
    }
    match t.kind.as_deref() {
        None => r.required(&path.key("kind")),
        Some("") => r.body(&path.key("kind"), "should be at least 1 chars long"),
        Some(kind) if kind.len() > 63 => r.body(&path.key("kind"), "should be at most 63 chars long"),
        Some(kind) if !KIND.is_match(kind) => {
            r.body(&path.key("kind"), format!("should match '{}'", KIND.as_str()))
        }
        Some(_) => {}
    }
    match t.name.as_deref() {
        None => r.required(&path.key("name")),
        Some("") => r.body(&path.key("name"), "should be at least 1 chars long"),
        Some(name) if name.len() > 253 => r.body(&path.key("name"), "should be at most 253 chars long"),
        Some(_) => {}
    }
    if t.namespace.as_deref().is_some_and(|ns| !ns.is_empty()) {
        r.invalid(
            path,
            "\"object\"",
            "cross namespace referencing is not currently supported",
        );
    }
}

/// Webhook rules for target references.
pub(crate) fn target_refs_webhook(r: &mut Report, refs: &[(Path<'_>, &PolicyTargetReference)]) {
    const ALLOWED: &[(&str, &str)] = &[
        ("", "Service"),
        ("core", "Service"),
        ("networking.istio.io", "ServiceEntry"),
        ("gateway.networking.k8s.io", "Gateway"),
        ("gateway.networking.k8s.io", "GatewayClass"),
    ];
    for (path, t) in refs {
        let group = t.group.as_deref().unwrap_or("");
        let kind = t.kind.as_deref().unwrap_or("");
        if t.name.as_deref().is_none_or(str::is_empty) {
            r.error(path, "targetRef name must be set");
        }
        if !ALLOWED.contains(&(group, kind)) {
            r.error(
                path,
                format!(
                    "targetRef must be to one of [/Service networking.istio.io/ServiceEntry gateway.networking.k8s.io/Gateway gateway.networking.k8s.io/GatewayClass] but was {group}/{kind}"
                ),
            );
        }
    }
}

//! Resources: which kinds Weir knows, and turning a document into a typed resource.

use serde::de::DeserializeOwned;

use crate::decode::{Fields, decode};
use crate::diag::{Finding, Report, Severity, Style};
use crate::path::{FieldPath, Path, Seg};
use crate::types::kube::{DataObject, EndpointSlice, Endpoints, Namespace, Pod, Service};
use crate::types::mesh::MeshConfig;
use crate::types::{Object, networking as net, security as sec, telemetry as tel};
use crate::yaml::{Node, Pos, Value};

/// Who validates a kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// An Istio kind: decoded strictly and validated with Istio's rules.
    Istio,
    /// A Kubernetes kind: decoded leniently for the registry; Kubernetes validates it.
    Kubernetes,
}

/// A kind Weir knows, with the API versions it serves.
#[derive(Clone, Copy, Debug)]
pub struct KindInfo {
    /// API group ("" for core Kubernetes).
    pub group: &'static str,
    /// Kind name.
    pub kind: &'static str,
    /// Served versions.
    pub versions: &'static [&'static str],
    /// Istio or Kubernetes.
    pub class: Class,
}

const NETWORKING: &[&str] = &["v1", "v1beta1", "v1alpha3"];
const SECURITY: &[&str] = &["v1", "v1beta1"];

/// Every kind Weir reads.
pub const KINDS: &[KindInfo] = &[
    istio("networking.istio.io", "ServiceEntry", NETWORKING),
    istio("networking.istio.io", "VirtualService", NETWORKING),
    istio("networking.istio.io", "DestinationRule", NETWORKING),
    istio("networking.istio.io", "Gateway", NETWORKING),
    istio("networking.istio.io", "Sidecar", NETWORKING),
    istio("networking.istio.io", "WorkloadEntry", NETWORKING),
    istio("networking.istio.io", "WorkloadGroup", NETWORKING),
    istio("networking.istio.io", "EnvoyFilter", &["v1alpha3"]),
    istio("networking.istio.io", "ProxyConfig", &["v1beta1"]),
    istio("security.istio.io", "AuthorizationPolicy", SECURITY),
    istio("security.istio.io", "PeerAuthentication", SECURITY),
    istio("security.istio.io", "RequestAuthentication", SECURITY),
    istio("telemetry.istio.io", "Telemetry", &["v1", "v1alpha1"]),
    kube("", "Namespace"),
    kube("", "Service"),
    kube("", "Endpoints"),
    kube("discovery.k8s.io", "EndpointSlice"),
    kube("", "Pod"),
    kube("", "Secret"),
    kube("", "ConfigMap"),
];

const fn istio(group: &'static str, kind: &'static str, versions: &'static [&'static str]) -> KindInfo {
    KindInfo {
        group,
        kind,
        versions,
        class: Class::Istio,
    }
}

const fn kube(group: &'static str, kind: &'static str) -> KindInfo {
    KindInfo {
        group,
        kind,
        versions: &["v1"],
        class: Class::Kubernetes,
    }
}

/// Looks a kind up by group and name.
pub fn kind_info(group: &str, kind: &str) -> Option<&'static KindInfo> {
    KINDS.iter().find(|k| k.group == group && k.kind == kind)
}

/// A decoded resource.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub enum Resource {
    ServiceEntry(Box<Object<net::ServiceEntry>>),
    VirtualService(Box<Object<net::VirtualService>>),
    DestinationRule(Box<Object<net::DestinationRule>>),
    Gateway(Box<Object<net::Gateway>>),
    Sidecar(Box<Object<net::Sidecar>>),
    WorkloadEntry(Box<Object<net::WorkloadEntry>>),
    WorkloadGroup(Box<Object<net::WorkloadGroup>>),
    EnvoyFilter(Box<Object<net::EnvoyFilter>>),
    ProxyConfig(Box<Object<net::ProxyConfig>>),
    AuthorizationPolicy(Box<Object<sec::AuthorizationPolicy>>),
    PeerAuthentication(Box<Object<sec::PeerAuthentication>>),
    RequestAuthentication(Box<Object<sec::RequestAuthentication>>),
    Telemetry(Box<Object<tel::Telemetry>>),
    Namespace(Box<Namespace>),
    Service(Box<Service>),
    Endpoints(Box<Endpoints>),
    EndpointSlice(Box<EndpointSlice>),
    Pod(Box<Pod>),
    Secret(Box<DataObject>),
    /// A ConfigMap; the `istio` ConfigMap also carries a parsed MeshConfig.
    ConfigMap(Box<DataObject>, Option<Box<MeshConfig>>),
}

/// Calls `$body` with the object inside any variant (all variants hold a type with `metadata`).
macro_rules! with_object {
    ($res:expr, $o:ident => $body:expr) => {
        match $res {
            Resource::ServiceEntry($o) => $body,
            Resource::VirtualService($o) => $body,
            Resource::DestinationRule($o) => $body,
            Resource::Gateway($o) => $body,
            Resource::Sidecar($o) => $body,
            Resource::WorkloadEntry($o) => $body,
            Resource::WorkloadGroup($o) => $body,
            Resource::EnvoyFilter($o) => $body,
            Resource::ProxyConfig($o) => $body,
            Resource::AuthorizationPolicy($o) => $body,
            Resource::PeerAuthentication($o) => $body,
            Resource::RequestAuthentication($o) => $body,
            Resource::Telemetry($o) => $body,
            Resource::Namespace($o) => $body,
            Resource::Service($o) => $body,
            Resource::Endpoints($o) => $body,
            Resource::EndpointSlice($o) => $body,
            Resource::Pod($o) => $body,
            Resource::Secret($o) | Resource::ConfigMap($o, _) => $body,
        }
    };
}

impl Resource {
    /// The kind name (`ServiceEntry`, `Service`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Resource::ServiceEntry(_) => "ServiceEntry",
            Resource::VirtualService(_) => "VirtualService",
            Resource::DestinationRule(_) => "DestinationRule",
            Resource::Gateway(_) => "Gateway",
            Resource::Sidecar(_) => "Sidecar",
            Resource::WorkloadEntry(_) => "WorkloadEntry",
            Resource::WorkloadGroup(_) => "WorkloadGroup",
            Resource::EnvoyFilter(_) => "EnvoyFilter",
            Resource::ProxyConfig(_) => "ProxyConfig",
            Resource::AuthorizationPolicy(_) => "AuthorizationPolicy",
            Resource::PeerAuthentication(_) => "PeerAuthentication",
            Resource::RequestAuthentication(_) => "RequestAuthentication",
            Resource::Telemetry(_) => "Telemetry",
            Resource::Namespace(_) => "Namespace",
            Resource::Service(_) => "Service",
            Resource::Endpoints(_) => "Endpoints",
            Resource::EndpointSlice(_) => "EndpointSlice",
            Resource::Pod(_) => "Pod",
            Resource::Secret(_) => "Secret",
            Resource::ConfigMap(..) => "ConfigMap",
        }
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &crate::types::ObjectMeta {
        with_object!(self, o => &o.metadata)
    }

    /// The resource as JSON (for round-trip checks and dumps).
    pub fn to_json(&self) -> serde_json::Value {
        with_object!(self, o => serde_json::to_value(o)).unwrap_or(serde_json::Value::Null)
    }
}

/// The outcome for one resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Accepted (warnings allowed).
    Valid,
    /// Rejected.
    Invalid,
    /// Not an Istio kind Weir validates.
    Skipped,
}

/// One resource read from a document, decoded and checked.
#[derive(Clone, Debug)]
pub struct Checked {
    /// Where the resource starts.
    pub pos: Pos,
    /// `apiVersion` as written.
    pub api_version: Option<String>,
    /// `kind` as written.
    pub kind: Option<String>,
    /// Namespace (the default namespace when unset).
    pub namespace: Option<String>,
    /// Name.
    pub name: Option<String>,
    /// The decoded resource (absent when decoding failed or the kind is unknown).
    pub resource: Option<Resource>,
    /// Errors and warnings, with positions.
    pub findings: Vec<Finding>,
    /// The verdict.
    pub verdict: Verdict,
    /// Why the resource was skipped.
    pub skip_reason: Option<String>,
}

impl Checked {
    /// `Kind namespace/name` for messages.
    pub fn display_name(&self) -> String {
        let kind = self.kind.as_deref().unwrap_or("<no kind>");
        match (&self.namespace, &self.name) {
            (Some(ns), Some(name)) => format!("{kind} {ns}/{name}"),
            (None, Some(name)) => format!("{kind} {name}"),
            _ => kind.to_string(),
        }
    }

    /// Errors only.
    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.severity == Severity::Error)
    }

    /// Warnings only.
    pub fn warnings(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.severity == Severity::Warning)
    }
}

/// Decodes and validates every resource in a document (a `kind: List` yields its items).
/// Resources without `metadata.namespace` are placed in `default_namespace`.
pub fn check_document(root: &Node, default_namespace: &str) -> Vec<Checked> {
    if root
        .get("kind")
        .and_then(Node::as_str)
        .is_some_and(|k| k.ends_with("List"))
        && root.get("items").is_some()
        && let Some(Value::Seq(items)) = root.get("items").map(|n| &n.value)
    {
        return items
            .iter()
            .map(|item| check_resource(item, default_namespace))
            .collect();
    }
    vec![check_resource(root, default_namespace)]
}

fn text_field(node: &Node, key: &str) -> Option<String> {
    node.get(key).and_then(Node::as_str).map(str::to_string)
}

/// Decodes and validates one resource.
pub fn check_resource(root: &Node, default_namespace: &str) -> Checked {
    let metadata = root.get("metadata");
    let mut checked = Checked {
        pos: root.pos,
        api_version: text_field(root, "apiVersion"),
        kind: text_field(root, "kind"),
        namespace: metadata.and_then(|m| text_field(m, "namespace")),
        name: metadata.and_then(|m| text_field(m, "name")),
        resource: None,
        findings: Vec::new(),
        verdict: Verdict::Valid,
        skip_reason: None,
    };
    if !matches!(root.value, Value::Map(_)) {
        let message = format!("a resource must be an object, not {}", root.type_name());
        checked
            .findings
            .push(finding(Severity::Error, &[], message, Style::Field));
    } else {
        classify_and_check(root, default_namespace, &mut checked);
    }
    if checked.namespace.is_none() && checked.verdict != Verdict::Skipped {
        checked.namespace = Some(default_namespace.to_string());
    }
    for f in &mut checked.findings {
        if f.pos.is_none() {
            let (node, _) = root.locate(f.path.segments());
            f.pos = Some(node.anchor());
        }
    }
    if checked.findings.iter().any(|f| f.severity == Severity::Error) {
        checked.verdict = Verdict::Invalid;
    }
    checked
}

fn finding(severity: Severity, path: &[Seg], message: String, style: Style) -> Finding {
    Finding {
        severity,
        path: FieldPath(path.to_vec()),
        message,
        style,
        pos: None,
    }
}

fn classify_and_check(root: &Node, default_namespace: &str, checked: &mut Checked) {
    let (Some(api_version), Some(kind)) = (checked.api_version.clone(), checked.kind.clone()) else {
        let mut missing = Vec::new();
        if checked.api_version.is_none() {
            missing.push("apiVersion not set");
        }
        if checked.kind.is_none() {
            missing.push("kind not set");
        }
        let message = format!("not a Kubernetes resource: {}", missing.join(", "));
        checked
            .findings
            .push(finding(Severity::Error, &[], message, Style::Field));
        return;
    };
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version.as_str()));
    let Some(info) = kind_info(group, &kind) else {
        checked.verdict = Verdict::Skipped;
        checked.skip_reason = Some(if group.ends_with("istio.io") {
            format!("unsupported kind {kind} ({api_version}): Weir does not validate it")
        } else {
            format!("{api_version} {kind} is not a kind Weir reads")
        });
        return;
    };
    if !info.versions.contains(&version) {
        let message = format!(
            "no matches for kind {kind:?} in version {api_version:?}; served versions: {}",
            info.versions
                .iter()
                .map(|v| format!("{group}/{v}").trim_start_matches('/').to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        checked.findings.push(finding(
            Severity::Error,
            &[Seg::Key("apiVersion".into())],
            message,
            Style::Field,
        ));
        return;
    }
    let namespace = checked
        .namespace
        .clone()
        .unwrap_or_else(|| default_namespace.to_string());
    let (resource, mut findings) = decode_kind(root, info.kind, &namespace);
    checked.findings.append(&mut findings);
    if info.class == Class::Kubernetes {
        let mesh_checked = matches!(&resource, Some(Resource::ConfigMap(_, Some(_))));
        if checked.findings.is_empty() && !mesh_checked {
            checked.verdict = Verdict::Skipped;
            checked.skip_reason = Some(format!("{kind} is read by the registry; Kubernetes validates it"));
        }
        checked.resource = resource;
        return;
    }
    let Some(resource) = resource else { return };
    if checked.findings.iter().all(|f| f.severity != Severity::Error) {
        let mut report = Report::default();
        crate::validate::validate(&resource, &mut report);
        checked.findings.append(&mut report.findings);
    }
    checked.resource = Some(resource);
}

fn decode_object<S: DeserializeOwned + Default>(
    root: &Node,
    namespace: &str,
    fields: Fields,
) -> (Option<Object<S>>, Vec<Finding>) {
    let (obj, findings) = decode::<Object<S>>(root, fields);
    let obj = obj.map(|mut o| {
        if o.metadata.namespace.as_deref().is_none_or(str::is_empty) {
            o.metadata.namespace = Some(namespace.to_string());
        }
        o
    });
    (obj, findings)
}

fn decode_kind(root: &Node, kind: &str, namespace: &str) -> (Option<Resource>, Vec<Finding>) {
    use Fields::{Lenient, Strict};
    macro_rules! istio {
        ($variant:ident) => {{
            let (o, f) = decode_object(root, namespace, Strict);
            (o.map(|o| Resource::$variant(Box::new(o))), f)
        }};
    }
    match kind {
        "ServiceEntry" => istio!(ServiceEntry),
        "VirtualService" => istio!(VirtualService),
        "DestinationRule" => istio!(DestinationRule),
        "Gateway" => istio!(Gateway),
        "Sidecar" => istio!(Sidecar),
        "WorkloadEntry" => istio!(WorkloadEntry),
        "WorkloadGroup" => istio!(WorkloadGroup),
        "EnvoyFilter" => istio!(EnvoyFilter),
        "ProxyConfig" => istio!(ProxyConfig),
        "AuthorizationPolicy" => istio!(AuthorizationPolicy),
        "PeerAuthentication" => istio!(PeerAuthentication),
        "RequestAuthentication" => istio!(RequestAuthentication),
        "Telemetry" => istio!(Telemetry),
        "Namespace" => {
            let (o, f) = decode::<Namespace>(root, Lenient);
            (o.map(|o| Resource::Namespace(Box::new(o))), f)
        }
        "Service" => {
            let (o, f) = decode_object(root, namespace, Lenient);
            (o.map(|o| Resource::Service(Box::new(o))), f)
        }
        "Endpoints" => {
            let (o, f) = decode::<Endpoints>(root, Lenient);
            (o.map(|o| Resource::Endpoints(Box::new(o))), f)
        }
        "EndpointSlice" => {
            let (o, f) = decode::<EndpointSlice>(root, Lenient);
            (o.map(|o| Resource::EndpointSlice(Box::new(o))), f)
        }
        "Pod" => {
            let (o, f) = decode::<Pod>(root, Lenient);
            (o.map(|o| Resource::Pod(Box::new(o))), f)
        }
        "Secret" => {
            let (o, f) = decode::<DataObject>(root, Lenient);
            (o.map(|o| Resource::Secret(Box::new(o))), f)
        }
        "ConfigMap" => decode_config_map(root),
        _ => (None, Vec::new()),
    }
}

/// A ConfigMap named `istio` carries the MeshConfig under `data.mesh`; it is parsed and checked.
fn decode_config_map(root: &Node) -> (Option<Resource>, Vec<Finding>) {
    let (obj, mut findings) = decode::<DataObject>(root, Fields::Lenient);
    let Some(obj) = obj else { return (None, findings) };
    let mesh = match (obj.metadata.name.as_deref(), obj.data.get("mesh")) {
        (Some("istio"), Some(text)) => {
            let value = root.get("data").and_then(|d| d.get("mesh"));
            // A block scalar (`mesh: |`) starts on a line of its own: map inner positions onto the
            // file. An inline string cannot be mapped; point at the value itself.
            let block_start = value
                .filter(|v| v.key.is_some_and(|k| v.pos.line > k.line))
                .map(|v| v.pos);
            let fallback = value.map_or(root.pos, |v| v.anchor());
            let (mesh, mut mesh_findings) = parse_mesh_config(text);
            for f in &mut mesh_findings {
                let mut path = vec![Seg::Key("data".into()), Seg::Key("mesh".into())];
                path.append(&mut f.path.0);
                f.path = FieldPath(path);
                f.pos = Some(match (block_start, f.pos) {
                    (Some(start), Some(inner)) => Pos {
                        line: start.line + inner.line - 1,
                        col: start.col + inner.col - 1,
                    },
                    _ => fallback,
                });
            }
            findings.append(&mut mesh_findings);
            mesh.map(Box::new)
        }
        _ => None,
    };
    (Some(Resource::ConfigMap(Box::new(obj), mesh)), findings)
}

/// Parses and validates a MeshConfig document (the text of the `mesh` key of the `istio`
/// ConfigMap, or a mesh config file). Positions in the findings are relative to `text`.
pub fn parse_mesh_config(text: &str) -> (Option<MeshConfig>, Vec<Finding>) {
    let mut docs = crate::yaml::parse_documents(text);
    let Some(doc) = docs.pop() else {
        return (Some(MeshConfig::default()), Vec::new());
    };
    let mut findings: Vec<Finding> = doc
        .errors
        .iter()
        .map(|e| Finding {
            pos: Some(e.pos),
            ..finding(Severity::Error, &[], e.message.clone(), Style::Field)
        })
        .collect();
    let Some(root) = doc.root else {
        return (None, findings);
    };
    let (mesh, mut decoded) = decode::<MeshConfig>(&root, Fields::Strict);
    findings.append(&mut decoded);
    if let Some(mesh) = &mesh {
        let mut report = Report::default();
        crate::validate::mesh::validate_mesh_config(&mut report, &Path::Root, mesh);
        findings.append(&mut report.findings);
    }
    for f in &mut findings {
        if f.pos.is_none() {
            f.pos = Some(root.locate(f.path.segments()).0.anchor());
        }
    }
    let has_errors = findings.iter().any(|f| f.severity == Severity::Error);
    (if has_errors { None } else { mesh }, findings)
}

#[cfg(test)]
mod tests {
    use crate::{Verdict, check_text};

    const MESH_CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio\n  namespace: istio-system\ndata:\n  mesh: |-\n    outboundTrafficPolicy:\n      mode: REGISTRY_ONLY\n";

    #[test]
    fn the_istio_config_map_carries_a_checked_mesh_config() {
        let checked = check_text(MESH_CM, "default");
        assert_eq!(checked[0].verdict, Verdict::Valid, "{:?}", checked[0].findings);
        let Some(super::Resource::ConfigMap(_, Some(mesh))) = &checked[0].resource else {
            panic!("no mesh config")
        };
        assert_eq!(
            mesh.effective().outbound_traffic_policy,
            crate::types::networking::OutboundMode::RegistryOnly
        );
    }

    #[test]
    fn mesh_config_errors_point_into_the_block() {
        let text = format!("{MESH_CM}    proxyListenPort: 70000\n    trustDomian: x\n");
        let checked = check_text(&text, "default");
        assert_eq!(checked[0].verdict, Verdict::Invalid);
        let typo = checked[0]
            .findings
            .iter()
            .find(|f| f.message.contains("trustDomian"))
            .unwrap();
        assert_eq!(typo.path.to_string(), "data.mesh.trustDomian");
        assert_eq!(typo.pos.unwrap(), crate::Pos { line: 11, col: 5 });
    }

    #[test]
    fn other_config_maps_are_skipped() {
        let checked = check_text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\ndata: {a: b}\n",
            "default",
        );
        assert_eq!(checked[0].verdict, Verdict::Skipped);
    }
}

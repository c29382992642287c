//! The Istio configuration API for Weir.
//!
//! - [`yaml`]: YAML/JSON documents as trees that remember the line and column of every value.
//! - [`types`]: typed Istio kinds (networking, security, telemetry), the Kubernetes kinds the
//!   registry reads, and MeshConfig.
//! - [`decode`]: tree → typed resource, reporting every unknown field (with a suggestion) and every
//!   value of the wrong shape.
//! - [`validate`]: Istio's validation in its two layers (CRD schema, then the istiod webhook),
//!   keeping Istio's wording and its split between errors and warnings.
//! - [`host`]: host-name algebra (wildcards, `matches`, `subset_of`, short names).
//!
//! This crate does no I/O: it reads the bytes it is given.
//!
//! ```
//! let yaml = r#"
//! apiVersion: networking.istio.io/v1
//! kind: ServiceEntry
//! metadata: {name: api}
//! spec:
//!   hosts: ["api.example.com"]
//!   ports: [{number: 443, name: https, protocol: HTTPS}]
//!   resolution: DNS
//! "#;
//! let checked = weir_api::check_text(yaml, "default");
//! assert_eq!(checked[0].verdict, weir_api::Verdict::Valid);
//! assert_eq!(checked[0].namespace.as_deref(), Some("default"));
//! ```

pub mod decode;
pub mod diag;
pub mod host;
pub mod path;
pub mod resource;
pub mod types;
pub mod validate;
pub mod yaml;

pub use diag::{Finding, Report, Severity};
pub use path::FieldPath;
pub use resource::{Checked, Resource, Verdict, check_document, check_resource, parse_mesh_config};
pub use yaml::Pos;

use diag::Style;

/// Parses a YAML or JSON stream and checks every resource in it.
///
/// A document that is not readable YAML yields one invalid entry carrying the syntax error; a
/// document with a duplicate key is checked but marked invalid. Resources without
/// `metadata.namespace` are placed in `default_namespace`.
pub fn check_text(text: &str, default_namespace: &str) -> Vec<Checked> {
    let mut out = Vec::new();
    check_text_each(text, default_namespace, |c| out.push(c));
    out
}

/// Like [`check_text`], but hands each resource to `f` as soon as it is checked; each document's
/// tree is dropped before the next is read, so memory stays flat however large the input.
pub fn check_text_each(text: &str, default_namespace: &str, mut f: impl FnMut(Checked)) {
    yaml::for_each_document(text, |doc| {
        let yaml_findings: Vec<Finding> = doc
            .errors
            .iter()
            .map(|e| Finding {
                severity: Severity::Error,
                path: FieldPath::default(),
                message: e.message.clone(),
                style: Style::Field,
                pos: Some(e.pos),
            })
            .collect();
        match &doc.root {
            None => {
                let last_line = doc
                    .errors
                    .iter()
                    .map(|e| e.pos.line)
                    .max()
                    .unwrap_or(doc.pos.line);
                let id = sniff_identity(text, doc.pos.line, last_line);
                f(Checked {
                    pos: doc.pos,
                    api_version: id.api_version,
                    kind: id.kind,
                    namespace: id.namespace.or_else(|| Some(default_namespace.to_string())),
                    name: id.name,
                    resource: None,
                    findings: yaml_findings,
                    verdict: Verdict::Invalid,
                    skip_reason: None,
                });
            }
            Some(root) => {
                let mut checked = check_document(root, default_namespace);
                if !yaml_findings.is_empty()
                    && let Some(first) = checked.first_mut()
                {
                    let mut findings = yaml_findings;
                    findings.append(&mut first.findings);
                    first.findings = findings;
                    first.verdict = Verdict::Invalid;
                }
                checked.into_iter().for_each(&mut f);
            }
        }
    });
}

/// Checks a MeshConfig document (a `mesh.yaml` file) and reports it like a resource of kind
/// `MeshConfig`.
pub fn check_mesh_config_text(text: &str) -> Checked {
    let (mesh, findings) = parse_mesh_config(text);
    let invalid = mesh.is_none();
    Checked {
        pos: Pos { line: 1, col: 1 },
        api_version: None,
        kind: Some("MeshConfig".into()),
        namespace: None,
        name: None,
        resource: None,
        findings,
        verdict: if invalid { Verdict::Invalid } else { Verdict::Valid },
        skip_reason: None,
    }
}

/// What could be read of a resource's identity from raw lines (for a document YAML cannot parse).
#[derive(Default)]
struct Identity {
    api_version: Option<String>,
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
}

/// Looks for top-level `apiVersion:`/`kind:` and `metadata.name`/`namespace` lines between two
/// 1-based lines, so that a syntax error can still name the resource it is in.
fn sniff_identity(text: &str, from: u32, to: u32) -> Identity {
    let mut id = Identity::default();
    let mut in_metadata = false;
    let value = |line: &str, key: &str| -> Option<String> {
        let rest = line.trim_start().strip_prefix(key)?.strip_prefix(':')?;
        let v = rest
            .split(" #")
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches(['"', '\'']);
        (!v.is_empty()).then(|| v.to_string())
    };
    let lines = text
        .lines()
        .skip(from.saturating_sub(1) as usize)
        .take((to + 1).saturating_sub(from) as usize);
    for line in lines {
        let top_level = !line.starts_with([' ', '\t']);
        if top_level {
            in_metadata = line.trim_end() == "metadata:";
            id.api_version = id.api_version.or_else(|| value(line, "apiVersion"));
            id.kind = id.kind.or_else(|| value(line, "kind"));
        } else if in_metadata && line.len() - line.trim_start().len() == 2 {
            id.name = id.name.clone().or_else(|| value(line, "name"));
            id.namespace = id.namespace.clone().or_else(|| value(line, "namespace"));
        }
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_syntax_error_still_names_its_resource() {
        let text = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: api\n  namespace: prod\nspec:\n  hosts:\n  - *.foo.com\n";
        let checked = check_text(text, "default");
        assert_eq!(checked.len(), 1);
        assert_eq!(checked[0].display_name(), "ServiceEntry prod/api");
        assert_eq!(checked[0].verdict, Verdict::Invalid);
        assert_eq!(checked[0].findings[0].pos.unwrap().line, 8);
    }

    #[test]
    fn duplicate_keys_make_the_resource_invalid() {
        let text = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: s}\nspec:\n  egress: [{hosts: [\"./*\"]}]\n  egress: []\n";
        let checked = check_text(text, "default");
        assert_eq!(checked[0].verdict, Verdict::Invalid);
        assert!(
            checked[0].findings[0]
                .message
                .contains("duplicate key \"egress\"")
        );
    }
}

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
    for doc in yaml::parse_documents(text) {
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
            None => out.push(Checked {
                pos: doc.pos,
                api_version: None,
                kind: None,
                namespace: None,
                name: None,
                resource: None,
                findings: yaml_findings,
                verdict: Verdict::Invalid,
                skip_reason: None,
            }),
            Some(root) => {
                let mut checked = check_document(root, default_namespace);
                if !yaml_findings.is_empty() {
                    if let Some(first) = checked.first_mut() {
                        let mut findings = yaml_findings;
                        findings.append(&mut first.findings);
                        first.findings = findings;
                        first.verdict = Verdict::Invalid;
                    }
                }
                out.extend(checked);
            }
        }
    }
    out
}

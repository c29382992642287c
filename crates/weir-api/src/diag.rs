//! Findings: the errors and warnings that decoding and validation report about one resource.

use std::fmt;

use crate::path::{FieldPath, Path};
use crate::yaml::Pos;

/// Whether a finding rejects the resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The resource is invalid.
    Error,
    /// The resource is accepted, but something in it is probably a mistake.
    Warning,
}

/// How the message joins its field path when printed, following the Kubernetes API server:
/// field errors read `spec.hosts: Required value`, schema errors read
/// `spec.hosts[0] in body should be at least 1 chars long`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Style {
    /// `path: message`.
    Field,
    /// `path in body message`.
    Body,
}

/// One error or warning about one resource.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// The field the finding is about (empty for the whole resource).
    pub path: FieldPath,
    /// What is wrong.
    pub message: String,
    /// How path and message are joined.
    pub style: Style,
    /// Where in the file; filled in from the document tree after validation.
    pub pos: Option<Pos>,
}

impl Finding {
    /// The finding as one line: path and message joined as the Kubernetes API server does.
    pub fn text(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.0.is_empty() {
            return f.write_str(&self.message);
        }
        match self.style {
            Style::Field => write!(f, "{}: {}", self.path, self.message),
            Style::Body => write!(f, "{} in body {}", self.path, self.message),
        }
    }
}

/// Collects findings while validating one resource.
#[derive(Debug, Default)]
pub struct Report {
    /// Everything found so far, in the order found.
    pub findings: Vec<Finding>,
}

impl Report {
    fn push(&mut self, severity: Severity, path: &Path<'_>, message: String, style: Style) {
        self.findings.push(Finding {
            severity,
            path: path.to_owned_path(),
            message,
            style,
            pos: None,
        });
    }

    /// An error at `path`.
    pub fn error(&mut self, path: &Path<'_>, message: impl Into<String>) {
        self.push(Severity::Error, path, message.into(), Style::Field);
    }

    /// A warning at `path`.
    pub fn warn(&mut self, path: &Path<'_>, message: impl Into<String>) {
        self.push(Severity::Warning, path, message.into(), Style::Field);
    }

    /// A schema error printed as `path in body <message>`.
    pub fn body(&mut self, path: &Path<'_>, message: impl Into<String>) {
        self.push(Severity::Error, path, message.into(), Style::Body);
    }

    /// `path: Required value`.
    pub fn required(&mut self, path: &Path<'_>) {
        self.error(path, "Required value");
    }

    /// `path: Invalid value: <value>: <message>`.
    pub fn invalid(&mut self, path: &Path<'_>, value: impl fmt::Display, message: impl fmt::Display) {
        self.error(path, format!("Invalid value: {value}: {message}"));
    }

    /// Whether any error (not warning) was recorded.
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }
}

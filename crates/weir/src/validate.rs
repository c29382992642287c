//! `weir validate`: check files like Istio's admission webhook, print findings for people or
//! scripts.

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::ValueEnum;
use serde_json::json;
use weir_api::{Checked, Finding, Severity, Verdict};

use crate::files::{Source, read_inputs};

/// Output formats.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    /// One line per finding, then a summary (for people).
    Text,
    /// One JSON document (for scripts).
    Json,
}

/// `weir validate` arguments.
#[derive(clap::Args)]
pub struct Args {
    /// A file, a folder (searched recursively for .yaml, .yml and .json), or - for stdin.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    paths: Vec<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    format: Format,
    /// Namespace for resources that do not set metadata.namespace.
    #[arg(short = 'n', long = "namespace", default_value = "default")]
    namespace: String,
}

/// Runs the command and returns its exit status.
pub fn run(args: &Args) -> ExitCode {
    let sources = match read_inputs(&args.paths) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("weir validate: {e:#}");
            return ExitCode::from(2);
        }
    };
    let results: Vec<(String, Checked)> = sources
        .iter()
        .flat_map(|s| check_source(s, &args.namespace))
        .collect();
    let out = match args.format {
        Format::Text => text_report(&results, sources.len()),
        Format::Json => json_report(&results),
    };
    print!("{out}");
    if results.iter().any(|(_, c)| c.verdict == Verdict::Invalid) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn check_source(source: &Source, namespace: &str) -> Vec<(String, Checked)> {
    let checked = match &source.text {
        Ok(text) => weir_api::check_text(text, namespace),
        Err(reason) => vec![unreadable(reason)],
    };
    checked.into_iter().map(|c| (source.name.clone(), c)).collect()
}

fn unreadable(reason: &str) -> Checked {
    Checked {
        pos: weir_api::Pos { line: 1, col: 1 },
        api_version: None,
        kind: None,
        namespace: None,
        name: None,
        resource: None,
        findings: vec![Finding {
            severity: Severity::Error,
            path: weir_api::FieldPath::default(),
            message: reason.to_string(),
            style: weir_api::diag::Style::Field,
            pos: Some(weir_api::Pos { line: 1, col: 1 }),
        }],
        verdict: Verdict::Invalid,
        skip_reason: None,
    }
}

fn subject(c: &Checked) -> String {
    if c.kind.is_none() && c.name.is_none() {
        return format!("document at line {}", c.pos.line);
    }
    c.display_name()
}

/// The text report: `file:line:col: error: Kind ns/name: spec.path: message`, then a summary.
pub fn text_report(results: &[(String, Checked)], files: usize) -> String {
    let mut out = String::new();
    for (file, c) in results {
        for f in &c.findings {
            let pos = f.pos.unwrap_or(c.pos);
            let level = match f.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            let _ = writeln!(out, "{file}:{pos}: {level}: {}: {}", subject(c), f.text());
        }
        if c.verdict == Verdict::Skipped {
            let reason = c.skip_reason.as_deref().unwrap_or("not validated");
            let _ = writeln!(out, "{file}:{}: skipped: {}: {reason}", c.pos, subject(c));
        }
    }
    let count = |v: Verdict| results.iter().filter(|(_, c)| c.verdict == v).count();
    let errors: usize = results.iter().map(|(_, c)| c.errors().count()).sum();
    let warnings: usize = results.iter().map(|(_, c)| c.warnings().count()).sum();
    let _ = writeln!(
        out,
        "{} in {}: {} valid, {} invalid, {} skipped; {}, {}",
        plural(results.len(), "resource"),
        plural(files, "file"),
        count(Verdict::Valid),
        count(Verdict::Invalid),
        count(Verdict::Skipped),
        plural(errors, "error"),
        plural(warnings, "warning"),
    );
    out
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn finding_json(f: &Finding) -> serde_json::Value {
    json!({
        "path": f.path.to_string(),
        "line": f.pos.map(|p| p.line),
        "column": f.pos.map(|p| p.col),
        "message": f.message,
        "text": f.text(),
    })
}

/// The JSON report (shape documented in docs/cli.md).
pub fn json_report(results: &[(String, Checked)]) -> String {
    let resources: Vec<serde_json::Value> = results
        .iter()
        .map(|(file, c)| {
            let mut r = json!({
                "file": file,
                "line": c.pos.line,
                "apiVersion": c.api_version,
                "kind": c.kind,
                "namespace": c.namespace,
                "name": c.name,
                "status": c.verdict,
                "errors": c.errors().map(finding_json).collect::<Vec<_>>(),
                "warnings": c.warnings().map(finding_json).collect::<Vec<_>>(),
            });
            if let Some(reason) = &c.skip_reason {
                r["reason"] = json!(reason);
            }
            r
        })
        .collect();
    let count = |v: Verdict| results.iter().filter(|(_, c)| c.verdict == v).count();
    let report = json!({
        "resources": resources,
        "summary": {
            "valid": count(Verdict::Valid),
            "invalid": count(Verdict::Invalid),
            "skipped": count(Verdict::Skipped),
            "warnings": results.iter().map(|(_, c)| c.warnings().count()).sum::<usize>(),
        }
    });
    let mut s = serde_json::to_string_pretty(&report).unwrap_or_default();
    s.push('\n');
    s
}

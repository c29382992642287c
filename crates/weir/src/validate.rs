//! `weir validate`: check files like Istio's admission webhook, print findings for people or
//! scripts.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

use clap::ValueEnum;
use serde_json::json;
use weir_api::{Checked, Finding, Severity, Verdict};

use crate::files::read_inputs;

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
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut tally = Tally::default();
    let mut json_resources = Vec::new();
    for source in &sources {
        let mut handle = |c: Checked| {
            tally.add(&c);
            match args.format {
                Format::Text => {
                    let _ = out.write_all(text_lines(&source.name, &c).as_bytes());
                }
                Format::Json => json_resources.push(resource_json(&source.name, &c)),
            }
        };
        match &source.text {
            Ok(text) if source.mesh => handle(weir_api::check_mesh_config_text(text)),
            Ok(text) => weir_api::check_text_each(text, &args.namespace, &mut handle),
            Err(reason) => handle(unreadable(reason)),
        }
    }
    let summary = match args.format {
        Format::Text => tally.text_summary(sources.len()),
        Format::Json => json_document(json_resources, &tally),
    };
    let _ = out.write_all(summary.as_bytes());
    let _ = out.flush();
    if tally.invalid > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Counts for the summary.
#[derive(Default)]
pub struct Tally {
    resources: usize,
    valid: usize,
    invalid: usize,
    skipped: usize,
    errors: usize,
    warnings: usize,
}

impl Tally {
    fn add(&mut self, c: &Checked) {
        self.resources += 1;
        match c.verdict {
            Verdict::Valid => self.valid += 1,
            Verdict::Invalid => self.invalid += 1,
            Verdict::Skipped => self.skipped += 1,
        }
        self.errors += c.errors().count();
        self.warnings += c.warnings().count();
    }

    fn text_summary(&self, files: usize) -> String {
        format!(
            "{} in {}: {} valid, {} invalid, {} skipped; {}, {}\n",
            plural(self.resources, "resource"),
            plural(files, "file"),
            self.valid,
            self.invalid,
            self.skipped,
            plural(self.errors, "error"),
            plural(self.warnings, "warning"),
        )
    }
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

/// One resource's lines of the text report: `file:line:col: error: Kind ns/name: spec.path: message`.
pub fn text_lines(file: &str, c: &Checked) -> String {
    let mut out = String::new();
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

/// One resource of the JSON report (shape documented in docs/cli.md).
pub fn resource_json(file: &str, c: &Checked) -> serde_json::Value {
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
}

fn json_document(resources: Vec<serde_json::Value>, tally: &Tally) -> String {
    let report = json!({
        "resources": resources,
        "summary": {
            "valid": tally.valid,
            "invalid": tally.invalid,
            "skipped": tally.skipped,
            "warnings": tally.warnings,
        }
    });
    let mut s = serde_json::to_string_pretty(&report).unwrap_or_default();
    s.push('\n');
    s
}

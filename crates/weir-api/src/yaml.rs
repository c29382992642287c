//! A YAML/JSON document tree that remembers where every value came from.
//!
//! Kubernetes tools read YAML by converting it to JSON (`sigs.k8s.io/yaml`, go-yaml v2 scalar rules).
//! This module does the same conversion but keeps the line and column of each node, so that a
//! diagnostic about `spec.http[0].route[1].weight` can point at the exact place in the file.
//! JSON is parsed by the same YAML 1.2 parser (JSON is a subset), so JSON files get positions too.

use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Tag};

use crate::path::Seg;

/// A position in a source file: 1-based line and column (columns count characters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    /// Line, starting at 1.
    pub line: u32,
    /// Column, starting at 1.
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// The value of a node, after YAML scalars were resolved to JSON types.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `null`, `~` or an empty value.
    Null,
    /// A boolean (`true`, `false`, and YAML 1.1's `yes`/`no`/`on`/`off` as Kubernetes reads them).
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// Any other number.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence (JSON array).
    Seq(Vec<Node>),
    /// A mapping (JSON object), in source order. Keys are unique (duplicates are reported as errors).
    Map(Vec<(String, Node)>),
}

/// One node of a document, with the position where it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Where the node starts in its file.
    pub pos: Pos,
    /// The resolved value.
    pub value: Value,
    /// The source text of a plain (unquoted) scalar that YAML resolved to a non-string type,
    /// kept so that errors can say "write it in quotes".
    pub plain: Option<Box<str>>,
    /// Where this node's key is, when the node is a mapping value.
    pub key: Option<Pos>,
}

impl Node {
    /// A node without a meaningful position (used for synthesized values).
    pub fn new(value: Value) -> Self {
        Node {
            pos: Pos::default(),
            value,
            plain: None,
            key: None,
        }
    }

    /// The JSON type name of this node, as Kubernetes names it in errors.
    pub fn type_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "number",
            Value::Str(_) => "string",
            Value::Seq(_) => "array",
            Value::Map(_) => "object",
        }
    }

    /// The value under `key` when this node is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string value, if this node is a string.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The source text of a scalar as written (for messages such as "write it in quotes").
    pub fn source_text(&self) -> Option<std::borrow::Cow<'_, str>> {
        if let Some(p) = &self.plain {
            return Some(std::borrow::Cow::Borrowed(p));
        }
        match &self.value {
            Value::Null => Some("".into()),
            Value::Bool(b) => Some(b.to_string().into()),
            Value::Int(i) => Some(i.to_string().into()),
            Value::Float(f) => Some(f.to_string().into()),
            Value::Str(s) => Some(std::borrow::Cow::Borrowed(s)),
            Value::Seq(_) | Value::Map(_) => None,
        }
    }

    /// Where a finding about this node should point: its key when it is a mapping value.
    pub fn anchor(&self) -> Pos {
        self.key.unwrap_or(self.pos)
    }

    /// The deepest node along `path` and the number of segments that were found.
    /// Used to place a diagnostic: a missing field is reported where its parent is.
    pub fn locate(&self, path: &[Seg]) -> (&Node, usize) {
        let mut node = self;
        for (i, seg) in path.iter().enumerate() {
            let next = match (seg, &node.value) {
                (Seg::Key(k), Value::Map(entries)) => {
                    entries.iter().find(|(key, _)| key == k).map(|(_, v)| v)
                }
                (Seg::Index(idx), Value::Seq(items)) => items.get(*idx),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => return (node, i),
            }
        }
        (node, path.len())
    }

    /// Removes the mapping entry at `path` (which must end in a key). Returns whether it existed.
    pub fn remove(&mut self, path: &[Seg]) -> bool {
        let Some((Seg::Key(last), parent)) = path.split_last() else {
            return false;
        };
        let mut node = self;
        for seg in parent {
            let next = match (seg, &mut node.value) {
                (Seg::Key(k), Value::Map(entries)) => {
                    entries.iter_mut().find(|(key, _)| key == k).map(|(_, v)| v)
                }
                (Seg::Index(idx), Value::Seq(items)) => items.get_mut(*idx),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => return false,
            }
        }
        match &mut node.value {
            Value::Map(entries) => {
                let before = entries.len();
                entries.retain(|(k, _)| k != last);
                entries.len() != before
            }
            _ => false,
        }
    }

    /// Converts the tree to a JSON value (positions are dropped).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(entries.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
        }
    }
}

/// A problem reading YAML: a syntax error or an ambiguity such as a duplicate key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{pos}: {message}")]
pub struct YamlError {
    /// Where the problem is.
    pub pos: Pos,
    /// What is wrong, in words a person understands, with a suggestion where one helps.
    pub message: String,
}

/// One YAML document of a stream.
#[derive(Clone, Debug)]
pub struct Document {
    /// The document's root node; `None` when a syntax error made it unreadable.
    pub root: Option<Node>,
    /// Where the document starts.
    pub pos: Pos,
    /// Problems found in this document.
    pub errors: Vec<YamlError>,
}

/// Parses a multi-document YAML (or JSON) stream.
///
/// Empty documents are dropped. A syntax error makes the document that contains it unreadable
/// (`root: None`); parsing resumes at the next `---` line, so one broken document loses nothing else.
pub fn parse_documents(src: &str) -> Vec<Document> {
    let mut docs = Vec::new();
    for_each_document(src, |d| docs.push(d));
    docs
}

/// Like [`parse_documents`], but hands each document to `f` as soon as it is read, so that a
/// caller can check it and drop its tree before the next one is built.
pub fn for_each_document(src: &str, mut f: impl FnMut(Document)) {
    let mut line_offset = 0usize;
    let mut rest = src;
    loop {
        match parse_stream(rest, line_offset, &mut f) {
            None => break,
            Some(error_line) => {
                // Resume at the first document separator after the error line.
                let Some((skip_lines, byte_off)) = next_separator(rest, error_line) else {
                    break;
                };
                line_offset += skip_lines;
                rest = &rest[byte_off..];
            }
        }
    }
}

/// Finds the first line at or after `after_line` (1-based, relative to `src`) that starts a new
/// document. The first line of `src` is never chosen, so resuming always makes progress.
/// Returns the number of lines before it and its byte offset.
fn next_separator(src: &str, after_line: usize) -> Option<(usize, usize)> {
    let mut offset = 0;
    for (idx, line) in src.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end();
        if idx > 0 && idx + 1 >= after_line && (trimmed == "---" || trimmed.starts_with("--- ")) {
            return Some((idx, offset));
        }
        offset += line.len();
    }
    None
}

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
        flow: bool,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<(String, Node)>,
        key: Option<Node>,
        implicit_in_flow: bool,
    },
}

/// Byte offsets of line starts, to look at the source character at a parser position.
struct Lines<'s> {
    src: &'s str,
    starts: Vec<usize>,
}

impl<'s> Lines<'s> {
    fn new(src: &'s str) -> Self {
        let mut starts = vec![0];
        starts.extend(src.match_indices('\n').map(|(i, _)| i + 1));
        Lines { src, starts }
    }

    /// The character at a 1-based line and 0-based character column.
    fn char_at(&self, line: usize, col: usize) -> Option<char> {
        let start = *self.starts.get(line.checked_sub(1)?)?;
        self.src[start..].chars().take_while(|c| *c != '\n').nth(col)
    }
}

/// Parses `src` into `docs`. Returns `Some(line)` (relative to `src`) when a syntax error stopped it.
fn parse_stream(src: &str, line_offset: usize, emit: &mut dyn FnMut(Document)) -> Option<usize> {
    let mut parser = Parser::new_from_str(src);
    let lines = Lines::new(src);
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: Vec<(usize, Node)> = Vec::new();
    let mut current: Option<Document> = None;
    let pos_of = |line: usize, col: usize| Pos {
        line: u32::try_from(line + line_offset).unwrap_or(u32::MAX),
        col: u32::try_from(col + 1).unwrap_or(u32::MAX),
    };
    loop {
        let (event, span) = match parser.next_event() {
            None => return None,
            Some(Ok(ev)) => ev,
            Some(Err(err)) => {
                let pos = pos_of(err.marker().line(), err.marker().col());
                let error = YamlError {
                    pos,
                    message: explain_scan_error(&err, src),
                };
                let doc_pos = current.as_ref().map_or(pos, |d| d.pos);
                emit(Document {
                    root: None,
                    pos: doc_pos,
                    errors: vec![error],
                });
                return Some(err.marker().line());
            }
        };
        let pos = pos_of(span.start.line(), span.start.col());
        let finished: Option<Node> = match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing => None,
            Event::DocumentStart(_) => {
                anchors.clear();
                current = Some(Document {
                    root: None,
                    pos,
                    errors: Vec::new(),
                });
                None
            }
            Event::DocumentEnd => {
                if let Some(doc) = current.take()
                    && (doc.root.as_ref().is_some_and(|n| n.value != Value::Null) || !doc.errors.is_empty())
                {
                    emit(doc);
                }
                None
            }
            Event::Alias(id) => {
                let node = anchors
                    .iter()
                    .rev()
                    .find(|(a, _)| *a == id)
                    .map(|(_, n)| n.clone());
                Some(node.unwrap_or(Node {
                    pos,
                    value: Value::Null,
                    plain: None,
                    key: None,
                }))
            }
            Event::Scalar(text, style, anchor, tag) => {
                let node = scalar_node(&text, style, tag.as_deref(), pos);
                if anchor > 0 {
                    anchors.push((anchor, node.clone()));
                }
                Some(node)
            }
            Event::SequenceStart(anchor, _) => {
                let flow = lines.char_at(span.start.line(), span.start.col()) == Some('[');
                stack.push(Frame::Seq {
                    pos,
                    anchor,
                    items: Vec::new(),
                    flow,
                });
                None
            }
            Event::MappingStart(anchor, _) => {
                let in_flow_seq = matches!(stack.last(), Some(Frame::Seq { flow: true, .. }));
                let implicit_in_flow =
                    in_flow_seq && lines.char_at(span.start.line(), span.start.col()) != Some('{');
                stack.push(Frame::Map {
                    pos,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                    implicit_in_flow,
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq {
                    pos, anchor, items, ..
                }) => {
                    let node = Node {
                        pos,
                        value: Value::Seq(items),
                        plain: None,
                        key: None,
                    };
                    if anchor > 0 {
                        anchors.push((anchor, node.clone()));
                    }
                    Some(node)
                }
                Some(Frame::Map {
                    pos,
                    anchor,
                    entries,
                    implicit_in_flow,
                    ..
                }) => {
                    let node = flow_entry_compat(
                        Node {
                            pos,
                            value: Value::Map(entries),
                            plain: None,
                            key: None,
                        },
                        implicit_in_flow,
                    );
                    if anchor > 0 {
                        anchors.push((anchor, node.clone()));
                    }
                    Some(node)
                }
                None => None,
            },
        };
        let Some(node) = finished else { continue };
        match stack.last_mut() {
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => {
                    let name = key_string(&k);
                    if let Some((_, first)) = entries.iter().find(|(existing, _)| *existing == name) {
                        if let Some(doc) = current.as_mut() {
                            doc.errors.push(YamlError {
                                pos: k.pos,
                                message: format!(
                                    "duplicate key \"{name}\" (first defined at line {}); a mapping may define each key once",
                                    first.pos.line
                                ),
                            });
                        }
                    } else {
                        let mut node = node;
                        node.key = Some(k.pos);
                        entries.push((name, node));
                    }
                }
            },
            None => {
                if let Some(doc) = current.as_mut() {
                    doc.root = Some(node);
                }
            }
        }
    }
}

/// In a flow sequence, YAML 1.2 reads `[a, 001:db8::]` as a one-pair mapping `{"001:db8:": null}`
/// because a `:` before `]` or `,` is a value indicator there. go-yaml, which `kubectl` uses, reads
/// the scalar `001:db8::`. Weir reads it as `kubectl` does, so IPv6 addresses in flow lists work.
fn flow_entry_compat(node: Node, implicit_in_flow: bool) -> Node {
    if !implicit_in_flow {
        return node;
    }
    match &node.value {
        Value::Map(entries)
            if entries.len() == 1 && entries[0].1.value == Value::Null && entries[0].1.plain.is_none() =>
        {
            Node {
                pos: node.pos,
                value: Value::Str(format!("{}:", entries[0].0)),
                plain: None,
                key: None,
            }
        }
        _ => node,
    }
}

/// The string form of a mapping key: JSON keys are strings, so `80:` becomes `"80"`.
fn key_string(node: &Node) -> String {
    if let Some(plain) = &node.plain {
        return plain.to_string();
    }
    if let Value::Null = node.value {
        return String::new();
    }
    match &node.value {
        Value::Str(s) => s.clone(),
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Seq(_) | Value::Map(_) => node.to_json().to_string(),
    }
}

fn scalar_node(text: &str, style: ScalarStyle, tag: Option<&Tag>, pos: Pos) -> Node {
    let core_tag = tag
        .filter(|t| t.handle == "!!" || t.handle == "tag:yaml.org,2002:")
        .map(|t| t.suffix.as_str());
    let value = match (core_tag, style) {
        (Some("str"), _) => Value::Str(text.to_string()),
        (Some("int" | "float" | "bool" | "null"), _) => resolve_plain(text),
        (_, ScalarStyle::Plain) => resolve_plain(text),
        _ => Value::Str(text.to_string()),
    };
    // Keep the source text only where the value does not render back to it (`yes`, `0x10`, `1.10`).
    let canonical = match &value {
        Value::Str(_) => true,
        Value::Null => text.is_empty(),
        Value::Bool(b) => text == if *b { "true" } else { "false" },
        Value::Int(i) => text.parse::<i64>().ok() == Some(*i) && !text.starts_with(['+', '0']) || text == "0",
        _ => false,
    };
    let plain = (!canonical).then(|| text.into());
    Node {
        pos,
        value,
        plain,
        key: None,
    }
}

/// Resolves a plain scalar the way go-yaml v2 (used by `kubectl` and `sigs.k8s.io/yaml`) does.
fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "y" | "Y" => {
            return Value::Bool(true);
        }
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "n" | "N" => {
            return Value::Bool(false);
        }
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Value::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let first = text.as_bytes()[0];
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.')) {
        return Value::Str(text.to_string());
    }
    if let Some(i) = parse_int(text) {
        return Value::Int(i);
    }
    if is_float(text)
        && let Ok(f) = text.replace('_', "").parse::<f64>()
    {
        return Value::Float(f);
    }
    Value::Str(text.to_string())
}

fn parse_int(text: &str) -> Option<i64> {
    let (neg, body) = match text.as_bytes()[0] {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let body = body.replace('_', "");
    if body.is_empty() {
        return None;
    }
    let magnitude = if let Some(hex) = body.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()?
    } else if let Some(bin) = body.strip_prefix("0b") {
        i64::from_str_radix(bin, 2).ok()?
    } else if let Some(oct) = body.strip_prefix("0o") {
        i64::from_str_radix(oct, 8).ok()?
    } else if body.len() > 1 && body.starts_with('0') && body.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        i64::from_str_radix(&body[1..], 8).ok()?
    } else if body.bytes().all(|b| b.is_ascii_digit()) {
        body.parse::<i64>().ok()?
    } else {
        return None;
    };
    Some(if neg { -magnitude } else { magnitude })
}

fn is_float(text: &str) -> bool {
    let t = text.trim_start_matches(['-', '+']);
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let digits_ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || b == b'_');
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => (!int.is_empty() || !frac.is_empty()) && digits_ok(int) && digits_ok(frac),
        None => !mantissa.is_empty() && digits_ok(mantissa),
    };
    let exp_ok = exp.is_none_or(|e| {
        let e = e.trim_start_matches(['-', '+']);
        !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
    });
    mantissa_ok && exp_ok
}

/// Turns the parser's terse error into a sentence with a suggestion for the common mistakes.
fn explain_scan_error(err: &ScanError, src: &str) -> String {
    let info = err.info();
    let line = src
        .lines()
        .nth(err.marker().line().saturating_sub(1))
        .unwrap_or("");
    let col = err.marker().col();
    if (info.contains("unknown anchor") || info.contains("alias"))
        && let Some(token) = alias_token(line, col)
    {
        let anchor = &token[1..];
        return format!(
            "YAML syntax error: unquoted {token} is read as an alias (a reference to an anchor named \"{anchor}\"), \
                 because a YAML value may not start with '*'; put it in quotes: \"{token}\""
        );
    }
    if info.contains("recursion limit") {
        return format!("YAML syntax error: {info}: the document is nested too deeply to be configuration");
    }
    if info.contains("anchor or alias") {
        return format!(
            "YAML syntax error: {info}; a value that starts with '*' or '&' is read as an alias or anchor, \
             put it in quotes (for example \"*\" or \"*.example.com\")"
        );
    }
    let at_char = line.chars().nth(col);
    if at_char == Some('\t') || (info.contains("tab") && line.contains('\t')) {
        return format!("YAML syntax error: {info}; YAML does not allow tabs for indentation, use spaces");
    }
    if info.contains("mapping values are not allowed") {
        return format!(
            "YAML syntax error: {info}; a value that contains \": \" must be quoted, or a key is indented wrongly"
        );
    }
    format!("YAML syntax error: {info}")
}

/// The `*alias` token at or just before `col` on `line`.
fn alias_token(line: &str, col: usize) -> Option<String> {
    let chars: Vec<char> = line.chars().collect();
    let start = (0..=col.min(chars.len().saturating_sub(1)))
        .rev()
        .find(|&i| chars.get(i) == Some(&'*'))?;
    let token: String = chars[start..]
        .iter()
        .take_while(|c| !c.is_whitespace() && !matches!(c, ',' | ']' | '}' | '#'))
        .collect();
    (token.len() > 1).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(src: &str) -> Node {
        let docs = parse_documents(src);
        assert_eq!(docs.len(), 1, "{docs:?}");
        assert!(docs[0].errors.is_empty(), "{:?}", docs[0].errors);
        docs[0].root.clone().unwrap()
    }

    #[test]
    fn scalars_resolve_like_kubectl() {
        let n = one("a: 1\nb: \"1\"\nc: yes\nd: 1.5\ne: ~\nf: 0x10\ng: text\nh: 010\ni: '*.x'\nj: 1e3\n");
        assert_eq!(n.get("a").unwrap().value, Value::Int(1));
        assert_eq!(n.get("b").unwrap().value, Value::Str("1".into()));
        assert_eq!(n.get("c").unwrap().value, Value::Bool(true));
        assert_eq!(n.get("d").unwrap().value, Value::Float(1.5));
        assert_eq!(n.get("e").unwrap().value, Value::Null);
        assert_eq!(n.get("f").unwrap().value, Value::Int(16));
        assert_eq!(n.get("g").unwrap().value, Value::Str("text".into()));
        assert_eq!(n.get("h").unwrap().value, Value::Int(8));
        assert_eq!(n.get("i").unwrap().value, Value::Str("*.x".into()));
        assert_eq!(n.get("j").unwrap().value, Value::Float(1000.0));
        assert_eq!(n.get("a").unwrap().source_text().as_deref(), Some("1"));
        assert_eq!(n.get("c").unwrap().source_text().as_deref(), Some("yes"));
        assert_eq!(n.get("h").unwrap().source_text().as_deref(), Some("010"));
    }

    #[test]
    fn positions_are_one_based() {
        let n = one("spec:\n  hosts:\n  - a.com\n");
        let hosts = n.get("spec").unwrap().get("hosts").unwrap();
        assert_eq!(hosts.pos.line, 3);
        let (found, depth) = n.locate(&[Seg::Key("spec".into()), Seg::Key("hosts".into()), Seg::Index(0)]);
        assert_eq!(depth, 3);
        assert_eq!(found.pos, Pos { line: 3, col: 5 });
        let (parent, depth) = n.locate(&[Seg::Key("spec".into()), Seg::Key("ports".into())]);
        assert_eq!(depth, 1);
        assert_eq!(parent.pos.line, 2);
    }

    #[test]
    fn documents_split_and_empty_ones_drop() {
        let docs = parse_documents("---\na: 1\n---\n# only a comment\n---\nb: 2\n");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].root.as_ref().unwrap().get("b").unwrap().pos.line, 6);
    }

    #[test]
    fn unquoted_wildcard_is_explained_as_an_alias() {
        let docs = parse_documents("spec:\n  hosts:\n  - *.foo.com\n");
        let err = &docs[0].errors[0];
        assert!(err.message.contains("alias"), "{}", err.message);
        assert!(err.message.contains("\"*.foo.com\""), "{}", err.message);
        assert_eq!(err.pos.line, 3);
    }

    #[test]
    fn syntax_error_loses_only_its_document() {
        let docs = parse_documents("a: 1\n---\nb: [1, 2\n---\nc: 3\n");
        assert_eq!(docs.len(), 3, "{docs:?}");
        assert!(docs[0].root.is_some());
        assert!(docs[1].root.is_none());
        assert!(docs[1].errors[0].message.starts_with("YAML syntax error"));
        assert_eq!(docs[2].root.as_ref().unwrap().get("c").unwrap().pos.line, 5);
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let docs = parse_documents("a: 1\nb: 2\na: 3\n");
        assert_eq!(docs[0].errors.len(), 1);
        assert!(
            docs[0].errors[0]
                .message
                .contains("duplicate key \"a\" (first defined at line 1)")
        );
    }

    #[test]
    fn a_lone_star_is_explained() {
        let docs = parse_documents("hosts: [* ]\n");
        assert!(
            docs[0].errors[0].message.contains("put it in quotes"),
            "{:?}",
            docs[0].errors
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let src = format!("a: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let docs = parse_documents(&src);
        assert!(
            docs[0].errors[0].message.contains("nested too deeply"),
            "{:?}",
            docs[0].errors
        );
    }

    #[test]
    fn tabs_are_explained() {
        let docs = parse_documents("a:\n\tb: 1\n");
        assert!(docs[0].errors[0].message.contains("tabs"), "{:?}", docs[0].errors);
    }

    #[test]
    fn json_gets_positions() {
        let n = one("{\n  \"kind\": \"ServiceEntry\",\n  \"spec\": {\"hosts\": [\"a.com\"]}\n}\n");
        assert_eq!(n.get("spec").unwrap().pos.line, 3);
        assert_eq!(n.get("kind").unwrap().as_str(), Some("ServiceEntry"));
    }

    #[test]
    fn ipv6_in_flow_lists_reads_like_kubectl() {
        let n = one("addresses: [1.2.3.4, 001:db8::]\nmap: [{a: b}]\n");
        let addrs = n.get("addresses").unwrap();
        let Value::Seq(items) = &addrs.value else { panic!() };
        assert_eq!(items[1].value, Value::Str("001:db8::".into()));
        let Value::Seq(items) = &n.get("map").unwrap().value else {
            panic!()
        };
        assert_eq!(items[0].get("a").unwrap().as_str(), Some("b"));
    }

    #[test]
    fn anchors_and_aliases_resolve() {
        let n = one("a: &x {k: v}\nb: *x\n");
        assert_eq!(n.get("b").unwrap().get("k").unwrap().as_str(), Some("v"));
    }
}

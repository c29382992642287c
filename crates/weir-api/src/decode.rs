//! Decoding a positioned [`Node`] tree into typed structures with serde.
//!
//! The deserializer knows the field list of every struct it fills, so it reports *all* unknown
//! fields of a document (with a did-you-mean suggestion) rather than stopping at the first, and it
//! words type errors like the Kubernetes API server (`spec.ports in body must be of type array:
//! "object"`). A type error aborts decoding; [`decode`] then removes the offending field and tries
//! again, so one document yields all its structural errors.
//!
//! As the API server does for structural schemas, a field whose value is `null` is treated as absent.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};

use crate::diag::{Finding, Severity, Style};
use crate::path::{FieldPath, Path, Seg};
use crate::yaml::{Node, Value};

/// How unknown fields are handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fields {
    /// Unknown fields are errors (Istio kinds: the CRD schemas are closed).
    Strict,
    /// Unknown fields are ignored (Kubernetes kinds, of which Weir reads only a part).
    Lenient,
}

/// Decodes `root` into `T`, collecting every structural problem.
///
/// Returns the value (when decoding succeeded after dropping bad fields) and the findings.
pub fn decode<T: DeserializeOwned>(root: &Node, fields: Fields) -> (Option<T>, Vec<Finding>) {
    const MAX_ATTEMPTS: usize = 64;
    let ctx = Ctx {
        fields,
        soft: RefCell::new(Vec::new()),
    };
    let mut hard: Vec<Finding> = Vec::new();
    let mut tree: Option<Node> = None;
    for _ in 0..MAX_ATTEMPTS {
        let current = tree.as_ref().unwrap_or(root);
        let result = T::deserialize(NodeDe {
            node: current,
            path: &Path::Root,
            ctx: &ctx,
        });
        match result {
            Ok(value) => {
                let mut findings = hard;
                findings.append(&mut ctx.take_soft());
                return (Some(value), findings);
            }
            Err(err) => {
                let path = err.path.clone().unwrap_or_default();
                hard.push(err.into_finding());
                // Drop the nearest enclosing field and try again.
                let Some(cut) = path.0.iter().rposition(|s| matches!(s, Seg::Key(_))) else {
                    break;
                };
                let mut next = tree.take().unwrap_or_else(|| root.clone());
                if !next.remove(&path.0[..=cut]) {
                    break;
                }
                tree = Some(next);
            }
        }
    }
    let mut findings = hard;
    findings.append(&mut ctx.take_soft());
    (None, findings)
}

struct Ctx {
    fields: Fields,
    /// Problems that do not stop decoding (unknown fields), de-duplicated across attempts.
    soft: RefCell<Vec<Finding>>,
}

impl Ctx {
    fn soft_error(&self, finding: Finding) {
        let mut soft = self.soft.borrow_mut();
        if !soft
            .iter()
            .any(|f| f.path == finding.path && f.message == finding.message)
        {
            soft.push(finding);
        }
    }

    fn take_soft(&self) -> Vec<Finding> {
        std::mem::take(&mut *self.soft.borrow_mut())
    }
}

/// A decoding error; the path is attached by the innermost access that sees it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    path: Option<FieldPath>,
    message: String,
    style: Style,
}

impl DecodeError {
    fn at(path: &Path<'_>, style: Style, message: String) -> Self {
        DecodeError {
            path: Some(path.to_owned_path()),
            message,
            style,
        }
    }

    fn with_path(mut self, path: &Path<'_>) -> Self {
        if self.path.is_none() {
            self.path = Some(path.to_owned_path());
        }
        self
    }

    fn into_finding(self) -> Finding {
        Finding {
            severity: Severity::Error,
            path: self.path.unwrap_or_default(),
            message: self.message,
            style: self.style,
            pos: None,
        }
    }
}

impl de::Error for DecodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DecodeError {
            path: None,
            message: msg.to_string(),
            style: Style::Field,
        }
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let supported: Vec<String> = expected.iter().map(|v| format!("{v:?}")).collect();
        DecodeError {
            path: None,
            message: format!(
                "Unsupported value: {variant:?}: supported values: {}",
                supported.join(", ")
            ),
            style: Style::Field,
        }
    }
}

/// The closest of `candidates` to `name`, if it is close enough to be a plausible typo.
pub fn did_you_mean<'c>(name: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    let lower = name.to_ascii_lowercase();
    let mut best: Option<(&str, f64)> = None;
    for cand in candidates {
        if cand.eq_ignore_ascii_case(name) {
            return Some(cand);
        }
        let cand_lower = cand.to_ascii_lowercase();
        let distance = strsim::damerau_levenshtein(&lower, &cand_lower);
        let prefix = cand_lower.starts_with(&lower) || lower.starts_with(&cand_lower);
        let limit = (cand.len().max(name.len()) / 3).max(2);
        if distance <= limit || (prefix && lower.len() >= 4) {
            let score = strsim::normalized_damerau_levenshtein(&lower, &cand_lower);
            if best.is_none_or(|(_, s)| score > s) {
                best = Some((cand, score));
            }
        }
    }
    best.map(|(c, _)| c)
}

/// Fields the Istio protos reserve: removed from the API, still found in old configuration.
/// Istio ignores them; Weir warns, naming the replacement. (Rust struct name, field, advice.)
pub const REMOVED_FIELDS: &[(&str, &str, &str)] = &[
    (
        "HttpRoute",
        "websocketUpgrade",
        "WebSocket upgrades are always allowed",
    ),
    ("HttpRoute", "appendHeaders", "use headers.request.add"),
    ("HttpRoute", "appendRequestHeaders", "use headers.request.add"),
    ("HttpRoute", "removeRequestHeaders", "use headers.request.remove"),
    ("HttpRoute", "appendResponseHeaders", "use headers.response.add"),
    (
        "HttpRoute",
        "removeResponseHeaders",
        "use headers.response.remove",
    ),
    (
        "TlsMatchAttributes",
        "sourceSubnet",
        "TLS routes cannot match on the source subnet",
    ),
    ("PortSelector", "name", "select the port by number"),
];

fn type_error(node: &Node, path: &Path<'_>, expected: &str) -> DecodeError {
    let mut message = format!("must be of type {expected}: {:?}", node.type_name());
    let scalar = matches!(
        node.value,
        Value::Null | Value::Bool(_) | Value::Int(_) | Value::Float(_)
    );
    if expected == "string"
        && scalar
        && let Some(text) = node.source_text().filter(|t| !t.is_empty())
    {
        message.push_str(&format!(
            " (YAML reads {text} as {}; write \"{text}\" in quotes)",
            node.type_name()
        ));
    }
    DecodeError::at(path, Style::Body, message)
}

struct NodeDe<'a> {
    node: &'a Node,
    path: &'a Path<'a>,
    ctx: &'a Ctx,
}

impl<'a> NodeDe<'a> {
    fn int(&self, expected: &str) -> Result<i64, DecodeError> {
        match self.node.value {
            Value::Int(i) => Ok(i),
            _ => Err(type_error(self.node, self.path, expected)),
        }
    }

    fn out_of_range(&self, value: i64, kind: &str) -> DecodeError {
        DecodeError::at(
            self.path,
            Style::Field,
            format!("Invalid value: {value}: must fit in {kind}"),
        )
    }
}

macro_rules! deserialize_int {
    ($($method:ident => $visit:ident, $ty:ty, $kind:literal;)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
                let i = self.int("integer")?;
                let v = <$ty>::try_from(i).map_err(|_| self.out_of_range(i, $kind))?;
                visitor.$visit(v)
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for NodeDe<'_> {
    type Error = DecodeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Str(s) => visitor.visit_str(s),
            Value::Seq(items) => visitor.visit_seq(Seq {
                items,
                idx: 0,
                path: self.path,
                ctx: self.ctx,
            }),
            Value::Map(entries) => visitor.visit_map(Map::all(entries, self.path, self.ctx)),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.node.value {
            Value::Bool(b) => visitor.visit_bool(b),
            _ => Err(type_error(self.node, self.path, "boolean")),
        }
    }

    deserialize_int! {
        deserialize_i8 => visit_i8, i8, "8 bits";
        deserialize_i16 => visit_i16, i16, "16 bits";
        deserialize_i32 => visit_i32, i32, "a 32-bit integer";
        deserialize_i64 => visit_i64, i64, "a 64-bit integer";
        deserialize_u8 => visit_u8, u8, "8 bits";
        deserialize_u16 => visit_u16, u16, "16 bits";
        deserialize_u32 => visit_u32, u32, "a 32-bit unsigned integer";
        deserialize_u64 => visit_u64, u64, "a 64-bit unsigned integer";
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.node.value {
            Value::Float(f) => visitor.visit_f64(f),
            #[allow(clippy::cast_precision_loss)]
            Value::Int(i) => visitor.visit_f64(i as f64),
            _ => Err(type_error(self.node, self.path, "number")),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match &self.node.value {
            Value::Str(s) => visitor.visit_str(s),
            _ => Err(type_error(self.node, self.path, "string")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.node.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match &self.node.value {
            Value::Seq(items) => visitor.visit_seq(Seq {
                items,
                idx: 0,
                path: self.path,
                ctx: self.ctx,
            }),
            _ => Err(type_error(self.node, self.path, "array")),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DecodeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match &self.node.value {
            Value::Map(entries) => visitor.visit_map(Map::all(entries, self.path, self.ctx)),
            _ => Err(type_error(self.node, self.path, "object")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        let Value::Map(entries) = &self.node.value else {
            return Err(type_error(self.node, self.path, "object"));
        };
        if self.ctx.fields == Fields::Strict {
            for (key, _) in entries.iter().filter(|(k, _)| !fields.contains(&k.as_str())) {
                let path = self.path.key(key);
                if let Some((_, _, advice)) = REMOVED_FIELDS.iter().find(|(s, f, _)| *s == name && f == key) {
                    let message = format!(
                        "field {key:?} was removed from the Istio API and is ignored ({advice}); remove it"
                    );
                    let mut finding = DecodeError::at(&path, Style::Field, message).into_finding();
                    finding.severity = Severity::Warning;
                    self.ctx.soft_error(finding);
                    continue;
                }
                let mut message = format!("unknown field {key:?}");
                if let Some(suggestion) = did_you_mean(key, fields.iter().copied()) {
                    message.push_str(&format!("; did you mean {suggestion:?}?"));
                }
                self.ctx
                    .soft_error(DecodeError::at(&path, Style::Field, message).into_finding());
            }
        }
        visitor.visit_map(Map {
            entries,
            fields: Some(fields),
            idx: 0,
            path: self.path,
            ctx: self.ctx,
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        let result = match &self.node.value {
            Value::Str(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            Value::Int(i) => match u32::try_from(*i) {
                Ok(n) => visitor.visit_enum(n.into_deserializer()),
                Err(_) => return Err(self.out_of_range(*i, "an enum number")),
            },
            _ => return Err(type_error(self.node, self.path, "string")),
        };
        result.map_err(|e: DecodeError| e.with_path(self.path))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_unit()
    }
}

struct Seq<'a> {
    items: &'a [Node],
    idx: usize,
    path: &'a Path<'a>,
    ctx: &'a Ctx,
}

impl<'de> SeqAccess<'de> for Seq<'_> {
    type Error = DecodeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DecodeError> {
        let Some(node) = self.items.get(self.idx) else {
            return Ok(None);
        };
        let path = self.path.index(self.idx);
        self.idx += 1;
        seed.deserialize(NodeDe {
            node,
            path: &path,
            ctx: self.ctx,
        })
        .map(Some)
        .map_err(|e| e.with_path(&path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len() - self.idx)
    }
}

struct Map<'a> {
    entries: &'a [(String, Node)],
    /// For structs: the known fields; unknown keys and null values are skipped.
    fields: Option<&'static [&'static str]>,
    idx: usize,
    path: &'a Path<'a>,
    ctx: &'a Ctx,
}

impl<'a> Map<'a> {
    fn all(entries: &'a [(String, Node)], path: &'a Path<'a>, ctx: &'a Ctx) -> Self {
        Map {
            entries,
            fields: None,
            idx: 0,
            path,
            ctx,
        }
    }
}

impl<'de> MapAccess<'de> for Map<'_> {
    type Error = DecodeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DecodeError> {
        while let Some((key, node)) = self.entries.get(self.idx) {
            let skip = self
                .fields
                .is_some_and(|f| !f.contains(&key.as_str()) || node.value == Value::Null);
            if !skip {
                let path = self.path.key(key);
                return seed
                    .deserialize(KeyDe { key, path: &path })
                    .map(Some)
                    .map_err(|e| e.with_path(&path));
            }
            self.idx += 1;
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DecodeError> {
        let Some((key, node)) = self.entries.get(self.idx) else {
            return Err(de::Error::custom("value requested before key"));
        };
        self.idx += 1;
        let path = self.path.key(key);
        seed.deserialize(NodeDe {
            node,
            path: &path,
            ctx: self.ctx,
        })
        .map_err(|e| e.with_path(&path))
    }
}

/// A map key: always a string in JSON; typed keys (`map<uint32, …>`) are parsed from it.
struct KeyDe<'a> {
    key: &'a str,
    path: &'a Path<'a>,
}

impl KeyDe<'_> {
    fn conversion_error(&self, ty: &str) -> DecodeError {
        DecodeError::at(
            self.path,
            Style::Field,
            format!(
                "Invalid value: {:?}: type conversion error from string to {ty}",
                self.key
            ),
        )
    }
}

macro_rules! key_int {
    ($($method:ident => $visit:ident, $ty:ty;)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
                let v: $ty = self.key.parse().map_err(|_| self.conversion_error(stringify!($ty)))?;
                visitor.$visit(v)
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for KeyDe<'_> {
    type Error = DecodeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_str(self.key)
    }

    key_int! {
        deserialize_i8 => visit_i8, i8;
        deserialize_i16 => visit_i16, i16;
        deserialize_i32 => visit_i32, i32;
        deserialize_i64 => visit_i64, i64;
        deserialize_u8 => visit_u8, u8;
        deserialize_u16 => visit_u16, u16;
        deserialize_u32 => visit_u32, u32;
        deserialize_u64 => visit_u64, u64;
    }

    serde::forward_to_deserialize_any! {
        bool f32 f64 char str string bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any i128 u128
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::yaml::parse_documents;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Inner {
        name: Option<String>,
        port: Option<u32>,
    }

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Outer {
        hosts: Option<Vec<String>>,
        inner: Option<Inner>,
        items: Option<Vec<Inner>>,
        ports: Option<BTreeMap<u32, String>>,
        forward_original_token: Option<bool>,
    }

    fn run(src: &str) -> (Option<Outer>, Vec<String>) {
        let doc = parse_documents(src).remove(0);
        let (v, f) = decode::<Outer>(doc.root.as_ref().unwrap(), Fields::Strict);
        (v, f.iter().map(Finding::text).collect())
    }

    #[test]
    fn unknown_fields_are_all_reported_with_suggestions() {
        let (v, errs) = run("hostz: [a]\nforwardOriginalTolen: true\ninner: {nmae: x}\n");
        assert!(v.is_some());
        assert!(
            errs.contains(&r#"hostz: unknown field "hostz"; did you mean "hosts"?"#.to_string()),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains(r#"did you mean "forwardOriginalToken"?"#)),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("inner.nmae:") && e.contains("\"name\"")),
            "{errs:?}"
        );
    }

    #[test]
    fn wrong_shapes_name_both_types_and_every_one_is_reported() {
        let (_, errs) = run("hosts: {a: b}\ninner: [1]\nitems: [null]\n");
        assert!(
            errs.contains(&r#"hosts in body must be of type array: "object""#.to_string()),
            "{errs:?}"
        );
        assert!(
            errs.contains(&r#"inner in body must be of type object: "array""#.to_string()),
            "{errs:?}"
        );
        assert!(
            errs.contains(&r#"items[0] in body must be of type object: "null""#.to_string()),
            "{errs:?}"
        );
    }

    #[test]
    fn unquoted_numbers_in_strings_get_a_hint() {
        let (_, errs) = run("inner: {name: 1.10}\n");
        assert!(errs[0].contains("write \"1.10\" in quotes"), "{errs:?}");
    }

    #[test]
    fn unquoted_integers_and_booleans_get_a_hint_too() {
        let (_, errs) = run("inner: {name: 80}\n");
        assert!(
            errs[0].contains("(YAML reads 80 as integer; write \"80\" in quotes)"),
            "{errs:?}"
        );
        let (_, errs) = run("inner: {name: yes}\n");
        assert!(
            errs[0].contains("(YAML reads yes as boolean; write \"yes\" in quotes)"),
            "{errs:?}"
        );
    }

    #[test]
    fn typed_map_keys_and_ranges() {
        let (_, errs) = run("ports: {acd: x}\n");
        assert!(
            errs[0].contains("type conversion error from string to u32"),
            "{errs:?}"
        );
        let (_, errs) = run("inner: {port: 99999999999}\n");
        assert!(
            errs[0].starts_with("inner.port: Invalid value: 99999999999"),
            "{errs:?}"
        );
        let (v, errs) = run("ports: {80: x}\ninner: null\n");
        assert!(errs.is_empty(), "{errs:?}");
        let v = v.unwrap();
        assert_eq!(v.ports.unwrap()[&80], "x");
        assert_eq!(v.inner, None);
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            did_you_mean("address", ["addresses", "hosts", "ports"]),
            Some("addresses")
        );
        assert_eq!(did_you_mean("Hosts", ["addresses", "hosts"]), Some("hosts"));
        assert_eq!(did_you_mean("zzz", ["addresses", "hosts"]), None);
    }
}

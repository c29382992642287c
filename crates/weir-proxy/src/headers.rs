//! Header additions and removals (`request_headers_to_add`, `response_headers_to_remove`…)
//! compiled once, applied with Envoy's append actions.

use envoy_types::pb::envoy::config::core::v3::{HeaderValueOption, header_value_option::HeaderAppendAction};
use http::{HeaderMap, HeaderName, HeaderValue};

/// How an added header combines with an existing one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Append {
    /// Add another value (Envoy's default).
    Accumulate,
    /// Add only when absent.
    AddIfAbsent,
    /// Replace, or add.
    OverwriteOrAdd,
    /// Replace only when present.
    OverwriteIfExists,
}

/// A compiled list of header operations: removals first, then additions (Envoy's order).
#[derive(Clone, Debug, Default)]
pub struct HeaderOps {
    add: Vec<(HeaderName, HeaderValue, Append, bool)>,
    remove: Vec<HeaderName>,
}

impl HeaderOps {
    /// Compiles additions and removals.
    pub fn compile(add: &[HeaderValueOption], remove: &[String]) -> Result<Self, String> {
        let mut ops = HeaderOps::default();
        for name in remove {
            // As Envoy refuses them: routing and the upstream request's target depend on these.
            if name.starts_with(':') || name.eq_ignore_ascii_case("host") {
                return Err(format!(
                    "header {name:?} cannot be removed (:-prefixed or host headers may not be removed)"
                ));
            }
            ops.remove.push(header_name(name)?);
        }
        for option in add {
            let header = option.header.as_ref().ok_or("a header to add has no header")?;
            let name = header_name(&header.key)?;
            if name.as_str().starts_with(':') || name == http::header::HOST {
                return Err(format!("header {:?} cannot be modified", header.key));
            }
            let raw: &[u8] = if header.raw_value.is_empty() {
                header.value.as_bytes()
            } else {
                &header.raw_value
            };
            if raw.windows(1).any(|w| w[0] == b'%') && !is_plain_percent(raw) {
                return Err(format!(
                    "header {:?}: command operators (%…%) in values are not supported",
                    header.key
                ));
            }
            let unescaped = String::from_utf8_lossy(raw).replace("%%", "%");
            let value = HeaderValue::from_str(&unescaped).map_err(|_| {
                format!(
                    "header {:?}: value {unescaped:?} is not a valid header value",
                    header.key
                )
            })?;
            #[allow(deprecated)]
            let append = match option.append.as_ref().map(|b| b.value) {
                Some(true) => Append::Accumulate,
                Some(false) => Append::OverwriteOrAdd,
                None => match HeaderAppendAction::try_from(option.append_action) {
                    Ok(HeaderAppendAction::AppendIfExistsOrAdd) => Append::Accumulate,
                    Ok(HeaderAppendAction::AddIfAbsent) => Append::AddIfAbsent,
                    Ok(HeaderAppendAction::OverwriteIfExistsOrAdd) => Append::OverwriteOrAdd,
                    Ok(HeaderAppendAction::OverwriteIfExists) => Append::OverwriteIfExists,
                    Err(_) => return Err(format!("header {:?}: unknown append_action", header.key)),
                },
            };
            ops.add.push((name, value, append, option.keep_empty_value));
        }
        Ok(ops)
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }

    /// Applies the operations.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value, append, keep_empty) in &self.add {
            if value.is_empty() && !keep_empty {
                continue;
            }
            match append {
                Append::Accumulate => {
                    headers.append(name.clone(), value.clone());
                }
                Append::AddIfAbsent => {
                    if !headers.contains_key(name) {
                        headers.insert(name.clone(), value.clone());
                    }
                }
                Append::OverwriteOrAdd => {
                    headers.insert(name.clone(), value.clone());
                }
                Append::OverwriteIfExists => {
                    if headers.contains_key(name) {
                        headers.insert(name.clone(), value.clone());
                    }
                }
            }
        }
    }
}

/// `%%` escapes only: no command operator.
fn is_plain_percent(raw: &[u8]) -> bool {
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            if raw.get(i + 1) != Some(&b'%') {
                return false;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    true
}

/// A header name, checked.
pub fn header_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map_err(|_| format!("{name:?} is not a valid header name"))
}

/// The decimal text of every number below 1,000, one after another ("0123…9101112…999").
static NUMBERS: [u8; 2890] = {
    let mut out = [0u8; 2890];
    let mut n = 0;
    let mut at = 0;
    while n < 1000 {
        if n >= 100 {
            out[at] = b'0' + (n / 100) as u8;
            at += 1;
        }
        if n >= 10 {
            out[at] = b'0' + (n / 10 % 10) as u8;
            at += 1;
        }
        out[at] = b'0' + (n % 10) as u8;
        at += 1;
        n += 1;
    }
    out
};

/// A number as a header value (`x-envoy-upstream-service-time`, a timeout in milliseconds):
/// below 1,000 a slice of a static table, without the allocation `HeaderValue::from` makes.
pub fn number_value(n: u64) -> HeaderValue {
    let span = match n {
        0..10 => n as usize..n as usize + 1,
        10..100 => {
            let at = 10 + (n as usize - 10) * 2;
            at..at + 2
        }
        100..1000 => {
            let at = 190 + (n as usize - 100) * 3;
            at..at + 3
        }
        _ => return HeaderValue::from(n),
    };
    HeaderValue::from_maybe_shared(bytes::Bytes::from_static(&NUMBERS[span]))
        .unwrap_or_else(|_| HeaderValue::from(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::HeaderValue as PbHeader;

    fn option(key: &str, value: &str, action: HeaderAppendAction) -> HeaderValueOption {
        HeaderValueOption {
            header: Some(PbHeader {
                key: key.into(),
                value: value.into(),
                ..Default::default()
            }),
            append_action: action as i32,
            ..Default::default()
        }
    }

    #[test]
    fn append_actions_follow_envoy() {
        let ops = HeaderOps::compile(
            &[
                option("x-a", "1", HeaderAppendAction::AppendIfExistsOrAdd),
                option("x-b", "2", HeaderAppendAction::AddIfAbsent),
                option("x-c", "3", HeaderAppendAction::OverwriteIfExistsOrAdd),
                option("x-d", "4", HeaderAppendAction::OverwriteIfExists),
                option("x-e", "50%%", HeaderAppendAction::OverwriteIfExistsOrAdd),
            ],
            &["x-gone".into()],
        )
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("0"));
        h.insert("x-b", HeaderValue::from_static("0"));
        h.insert("x-c", HeaderValue::from_static("0"));
        h.insert("x-gone", HeaderValue::from_static("0"));
        ops.apply(&mut h);
        assert_eq!(h.get_all("x-a").iter().count(), 2);
        assert_eq!(h["x-b"], "0");
        assert_eq!(h["x-c"], "3");
        assert!(!h.contains_key("x-d"));
        assert_eq!(h["x-e"], "50%");
        assert!(!h.contains_key("x-gone"));
    }

    #[test]
    fn command_operators_and_bad_names_are_errors() {
        let e = HeaderOps::compile(
            &[option(
                "x-a",
                "%DOWNSTREAM_REMOTE_ADDRESS%",
                HeaderAppendAction::AddIfAbsent,
            )],
            &[],
        )
        .unwrap_err();
        assert!(e.contains("command operators"), "{e}");
        assert!(HeaderOps::compile(&[], &["bad name".into()]).is_err());
        assert!(HeaderOps::compile(&[option(":path", "/", HeaderAppendAction::AddIfAbsent)], &[]).is_err());
        let e = HeaderOps::compile(&[option("Host", "a", HeaderAppendAction::AddIfAbsent)], &[]).unwrap_err();
        assert!(e.contains("cannot be modified"), "{e}");
        for name in ["host", "Host", ":authority", ":path"] {
            let e = HeaderOps::compile(&[], &[name.to_string()]).unwrap_err();
            assert!(e.contains("may not be removed") && e.contains(name), "{e}");
        }
        assert!(HeaderOps::compile(&[], &["x-host".into(), "hostname".into()]).is_ok());
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        for n in [0, 7, 9, 10, 42, 99, 100, 512, 999, 1000, 123_456, u64::MAX] {
            assert_eq!(number_value(n).to_str().unwrap(), n.to_string());
        }
        for n in 0..1000 {
            assert_eq!(number_value(n).to_str().unwrap(), n.to_string());
        }
    }
}

//! Durations as Istio writes them: `10s`, `1.5s`, `300ms`, `1h30m`.

use std::fmt;

/// A duration field. The source text is kept so that a document round-trips unchanged and so that
/// an unparseable value reaches validation, which reports it with the field's own rule
/// (most fields must be at least 1ms; a few accept `0s`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Duration {
    raw: String,
    parsed: Option<std::time::Duration>,
}

impl Duration {
    /// Parses `raw`; an invalid value is kept and reported by validation.
    pub fn new(raw: impl Into<String>) -> Self {
        let raw = raw.into();
        let parsed = parse(&raw);
        Duration { raw, parsed }
    }

    /// A duration from a value (written in seconds or milliseconds).
    pub fn from_std(d: std::time::Duration) -> Self {
        let raw = if d.subsec_nanos() == 0 {
            format!("{}s", d.as_secs())
        } else if d.subsec_nanos().is_multiple_of(1_000_000) {
            format!("{}ms", d.as_millis())
        } else {
            format!("{}ns", d.as_nanos())
        };
        Duration { raw, parsed: Some(d) }
    }

    /// The value, or `None` when the text is not a valid duration.
    pub fn get(&self) -> Option<std::time::Duration> {
        self.parsed
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Duration({:?})", self.raw)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl serde::Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

impl<'de> serde::Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Duration::new)
    }
}

/// Parses Go's `time.ParseDuration` syntax (a superset of the protobuf JSON form `1.5s`).
/// Negative durations are rejected: no Istio field accepts one.
pub fn parse(text: &str) -> Option<std::time::Duration> {
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest == "0" {
        return Some(std::time::Duration::ZERO);
    }
    if rest.is_empty() || rest.starts_with('-') {
        return None;
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail
            .bytes()
            .take_while(|b| !b.is_ascii_digit() && *b != b'.')
            .count();
        let (unit, tail) = tail.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if int.is_empty() && frac.is_empty() || frac.contains('.') {
            return None;
        }
        let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let mut part = int.checked_mul(scale)?;
        let mut div = 1u128;
        for digit in frac.bytes().take(18) {
            div *= 10;
            part += u128::from(digit - b'0') * scale / div;
        }
        total = total.checked_add(part)?;
        rest = tail;
    }
    let secs = u64::try_from(total / 1_000_000_000).ok()?;
    let nanos = u32::try_from(total % 1_000_000_000).ok()?;
    Some(std::time::Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use std::time::Duration as D;

    use super::*;

    #[test]
    fn go_and_proto_forms() {
        assert_eq!(parse("10s"), Some(D::from_secs(10)));
        assert_eq!(parse("1.5s"), Some(D::from_millis(1500)));
        assert_eq!(parse("300ms"), Some(D::from_millis(300)));
        assert_eq!(parse("1h30m"), Some(D::from_secs(5400)));
        assert_eq!(parse("0s"), Some(D::ZERO));
        assert_eq!(parse("0"), Some(D::ZERO));
        assert_eq!(parse("100us"), Some(D::from_micros(100)));
        assert_eq!(parse(".5s"), Some(D::from_millis(500)));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["apple", "", "10", "-1s", "1x", "s", "1..2s", "."] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn round_trips_text() {
        let d = Duration::new("1h30m");
        assert_eq!(d.to_string(), "1h30m");
        assert_eq!(Duration::from_std(D::from_millis(250)).as_str(), "250ms");
    }
}

//! Field paths such as `spec.http[0].route[1].weight`.
//!
//! Validation walks deep trees and almost never finds a problem, so the path being walked is a
//! borrowed linked list on the stack ([`Path`]); it is turned into an owned [`FieldPath`] only
//! when a finding is recorded.

use std::fmt;

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Seg {
    /// A field or map key.
    Key(String),
    /// A list index.
    Index(usize),
}

/// An owned field path.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldPath(pub Vec<Seg>);

impl FieldPath {
    /// The path's segments.
    pub fn segments(&self) -> &[Seg] {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if is_plain_key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Seg::Key(k) => write!(f, "[{k:?}]")?,
                Seg::Index(idx) => write!(f, "[{idx}]")?,
            }
        }
        Ok(())
    }
}

/// Keys that print as `.key`; anything else (dots, slashes, spaces) prints as `["key"]`, like `kubectl`.
fn is_plain_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'@')
}

/// A borrowed path under construction: each step lives on the stack of the code walking the tree.
#[derive(Clone, Copy, Debug)]
pub enum Path<'a> {
    /// The document root.
    Root,
    /// A field or map key below a parent.
    Key(&'a Path<'a>, &'a str),
    /// A list index below a parent.
    Index(&'a Path<'a>, usize),
}

impl<'a> Path<'a> {
    /// The path of field `key` below this one.
    pub fn key(&'a self, key: &'a str) -> Path<'a> {
        Path::Key(self, key)
    }

    /// The path of element `idx` below this one.
    pub fn index(&'a self, idx: usize) -> Path<'a> {
        Path::Index(self, idx)
    }

    /// An owned copy of this path.
    pub fn to_owned_path(&self) -> FieldPath {
        let mut segs = Vec::new();
        let mut cur = self;
        loop {
            match cur {
                Path::Root => break,
                Path::Key(parent, k) => {
                    segs.push(Seg::Key((*k).to_string()));
                    cur = parent;
                }
                Path::Index(parent, i) => {
                    segs.push(Seg::Index(*i));
                    cur = parent;
                }
            }
        }
        segs.reverse();
        FieldPath(segs)
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_owned_path().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_kubectl() {
        let root = Path::Root;
        let spec = root.key("spec");
        let http = spec.key("http");
        let first = http.index(0);
        let headers = first.key("headers");
        let odd = headers.key("x.y/z");
        assert_eq!(first.to_string(), "spec.http[0]");
        assert_eq!(odd.to_string(), "spec.http[0].headers[\"x.y/z\"]");
        assert_eq!(root.to_string(), "");
    }
}

//! What the HTTP connection manager does to a request's path before anything reads it:
//! Envoy's `path_with_escaped_slashes_action`, `normalize_path` and `merge_slashes`, in
//! Envoy's order (`ConnectionManagerUtility::maybeNormalizePath`).
//!
//! Normalisation is RFC 3986 path canonicalisation as Envoy performs it with its snapshot of
//! Chromium's URL library: dot segments (`.`, `..`, and their `%2e` spellings) are resolved,
//! backslashes become slashes, percent-encoded unreserved characters (`%41` → `A`) are
//! decoded, characters that must not appear raw are percent-encoded, other escapes are kept as
//! written (case included), and an escaped NUL (`%00`) fails the request. The query string is
//! never touched.

/// What becomes of `%2F`, `%2f`, `%5C` and `%5c` in a path (Envoy's
/// `path_with_escaped_slashes_action`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EscapedSlashes {
    /// Left as they are (the default, and `IMPLEMENTATION_SPECIFIC_DEFAULT`).
    #[default]
    KeepUnchanged,
    /// A request with one is refused with 400.
    RejectRequest,
    /// Decoded, and the client redirected (307) to the decoded path.
    UnescapeAndRedirect,
    /// Decoded, and the request goes on with the decoded path.
    UnescapeAndForward,
}

/// The connection manager's path handling, compiled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathNormalization {
    /// `normalize_path`.
    pub normalize: bool,
    /// `merge_slashes`.
    pub merge_slashes: bool,
    /// `path_with_escaped_slashes_action`.
    pub escaped_slashes: EscapedSlashes,
}

/// What a request's path comes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing changed.
    Unchanged,
    /// The request goes on with this path (and query).
    Rewritten(String),
    /// The client is to be redirected (307) to this path (and query).
    Redirect(String),
    /// The request is refused (400).
    Reject,
}

impl PathNormalization {
    /// Whether any of it is on (when none is, a request's path is not looked at).
    pub fn is_active(&self) -> bool {
        self.normalize || self.merge_slashes || self.escaped_slashes != EscapedSlashes::KeepUnchanged
    }

    /// Applies the configured steps to a request's path and query.
    pub fn apply(&self, path_and_query: &str) -> Outcome {
        let mut current: Option<String> = None;
        let mut redirect = false;
        if self.escaped_slashes != EscapedSlashes::KeepUnchanged
            && let Some(unescaped) = unescape_slashes(path_and_query)
        {
            match self.escaped_slashes {
                EscapedSlashes::RejectRequest => return Outcome::Reject,
                EscapedSlashes::UnescapeAndRedirect => redirect = true,
                EscapedSlashes::UnescapeAndForward | EscapedSlashes::KeepUnchanged => {}
            }
            current = Some(unescaped);
        }
        if self.normalize {
            let from = current.as_deref().unwrap_or(path_and_query);
            match rewrite_canonical(from) {
                Err(Invalid) => return Outcome::Reject,
                Ok(Some(canonical)) if canonical != from => current = Some(canonical),
                Ok(_) => {}
            }
        }
        if self.merge_slashes {
            let from = current.as_deref().unwrap_or(path_and_query);
            if let Some(merged) = merge_slashes(from) {
                current = Some(merged);
            }
        }
        match current {
            Some(path) if path != path_and_query => {
                if redirect {
                    Outcome::Redirect(path)
                } else {
                    Outcome::Rewritten(path)
                }
            }
            _ => Outcome::Unchanged,
        }
    }
}

/// Splits a path-and-query at its first `?` (the query keeps its `?`).
fn split_query(path_and_query: &str) -> (&str, &str) {
    path_and_query.split_at(path_and_query.find('?').unwrap_or(path_and_query.len()))
}

/// Decodes `%2F`/`%2f` to `/` and `%5C`/`%5c` to `\` in the path (not the query); `None` when
/// there was none (Envoy's `PathUtil::unescapeSlashes`).
pub fn unescape_slashes(path_and_query: &str) -> Option<String> {
    let (path, query) = split_query(path_and_query);
    if !path.contains('%') {
        return None;
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path_and_query.len());
    let mut found = false;
    let mut copied = 0;
    let mut i = 0;
    while i + 3 <= bytes.len() {
        let decoded = match (bytes[i], bytes[i + 1], bytes[i + 2]) {
            (b'%', b'2', b'F' | b'f') => Some('/'),
            (b'%', b'5', b'C' | b'c') => Some('\\'),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push_str(&path[copied..i]);
                out.push(c);
                i += 3;
                copied = i;
                found = true;
            }
            None => i += 1,
        }
    }
    if !found {
        return None;
    }
    out.push_str(&path[copied..]);
    out.push_str(query);
    Some(out)
}

/// Collapses runs of slashes in the path (not the query) to one; `None` when there was none
/// (Envoy's `PathUtil::mergeSlashes`).
pub fn merge_slashes(path_and_query: &str) -> Option<String> {
    let (path, query) = split_query(path_and_query);
    if !path.contains("//") {
        return None;
    }
    let mut out = String::with_capacity(path_and_query.len());
    if path.starts_with('/') {
        out.push('/');
    }
    for (n, segment) in path.split('/').filter(|s| !s.is_empty()).enumerate() {
        if n > 0 {
            out.push('/');
        }
        out.push_str(segment);
    }
    if path.ends_with('/') && !out.ends_with('/') {
        out.push('/');
    }
    out.push_str(query);
    Some(out)
}

/// The RFC 3986 canonical form of the path (the query is kept as it is); `None` when the path
/// holds a NUL, raw or escaped, which Envoy refuses (`PathUtil::canonicalPath`).
pub fn canonical_path(path_and_query: &str) -> Option<String> {
    match rewrite_canonical(path_and_query) {
        Ok(Some(canonical)) => Some(canonical),
        Ok(None) => Some(path_and_query.to_string()),
        Err(Invalid) => None,
    }
}

/// A path Envoy refuses to canonicalise (it holds a NUL).
struct Invalid;

/// The canonical form of a path and query when it is not canonical already (`Ok(None)`: it
/// is, and nothing is copied).
fn rewrite_canonical(path_and_query: &str) -> Result<Option<String>, Invalid> {
    let (path, query) = split_query(path_and_query);
    if is_canonical(path.as_bytes()) {
        return Ok(None);
    }
    let mut out = canonicalize(path.as_bytes()).ok_or(Invalid)?;
    out.extend_from_slice(query.as_bytes());
    // Every byte written is ASCII: bytes above 0x7f are always percent-encoded.
    String::from_utf8(out).map(Some).map_err(|_| Invalid)
}

// How each byte is treated in a path (Chromium's `kPathCharLookup` in the snapshot Envoy
// normalises with).
/// Copied as it is, raw or escaped.
const PASS: u8 = 0;
/// Needs a look (dots, backslash, `%`, and everything below).
const SPECIAL: u8 = 1;
/// Written percent-encoded when it appears raw.
const ESCAPE: u8 = 2 | SPECIAL;
/// Decoded when it appears percent-encoded (the unreserved characters).
const UNESCAPE: u8 = 4;
/// Fails the path (NUL).
const INVALID: u8 = 8 | SPECIAL;

const fn path_char_table() -> [u8; 256] {
    let mut table = [ESCAPE; 256];
    let mut c = 0x21;
    while c < 0x7f {
        table[c] = match c as u8 {
            b'0'..=b'9' | b'A'..=b'Z' | b'a'..=b'z' | b'-' | b'_' | b'~' => UNESCAPE,
            b'"' | b'#' | b'%' | b'<' | b'>' | b'?' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}' => ESCAPE,
            b'.' => SPECIAL,
            _ => PASS,
        };
        c += 1;
    }
    table[0] = INVALID;
    table
}

static PATH_CHARS: [u8; 256] = path_char_table();

fn is_slash(b: u8) -> bool {
    b == b'/' || b == b'\\'
}

/// The length of a dot at `at`: 1 for `.`, 3 for `%2e`/`%2E`, 0 for anything else.
fn dot_len(spec: &[u8], at: usize) -> usize {
    match spec.get(at..) {
        Some([b'.', ..]) => 1,
        Some([b'%', b'2', b'e' | b'E', ..]) => 3,
        _ => 0,
    }
}

/// The byte a `%XX` at `at` stands for, when it is one.
fn decode_escaped(spec: &[u8], at: usize) -> Option<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    match spec.get(at..at + 3) {
        Some([b'%', hi, lo]) => Some((hex(*hi)? * 16 + hex(*lo)?) as u8),
        _ => None,
    }
}

fn push_escaped(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
}

/// What a dot that follows a slash turns out to be.
enum AfterDot {
    /// Part of a name.
    Name,
    /// The current directory; this many more input bytes belong to it.
    Current(usize),
    /// The parent directory; this many more input bytes belong to it.
    Parent(usize),
}

fn classify_after_dot(spec: &[u8], after: usize) -> AfterDot {
    let Some(&next) = spec.get(after) else {
        return AfterDot::Current(0);
    };
    if is_slash(next) {
        return AfterDot::Current(1);
    }
    let second = dot_len(spec, after);
    if second > 0 {
        match spec.get(after + second) {
            None => return AfterDot::Parent(second),
            Some(&b) if is_slash(b) => return AfterDot::Parent(second + 1),
            Some(_) => {}
        }
    }
    AfterDot::Name
}

/// Drops the last segment of the output, which ends with a slash, keeping the first slash.
fn back_up_to_previous_slash(out: &mut Vec<u8>) {
    let Some(mut i) = out.len().checked_sub(1) else {
        return;
    };
    if i == 0 {
        return;
    }
    i -= 1;
    while out[i] != b'/' && i > 0 {
        i -= 1;
    }
    out.truncate(i + 1);
}

/// After decoding a byte just behind a `%` that began no valid escape, makes sure the output
/// has not become a valid escape that a later decoder would read differently (`%%30` must not
/// turn into `%0`+`0` = `%00`): that `%` is written `%25` (Chromium's `CheckForNestedEscapes`).
fn check_nested_escapes(spec: &[u8], next_input: usize, invalid_percent: usize, out: &mut Vec<u8>) {
    let length = out.len();
    let last_unescaped = out[length - 1];
    let append_next = invalid_percent + 2 == length;
    if append_next {
        match spec.get(next_input) {
            Some(&b) if b < 0x80 => out.push(b),
            _ => return,
        }
    }
    if decode_escaped(out, invalid_percent).is_some() {
        if !append_next {
            out.push(out[invalid_percent + 1]);
        }
        out[invalid_percent + 1] = b'2';
        out[invalid_percent + 2] = b'5';
        out.push(last_unescaped);
    } else if append_next {
        out.truncate(length);
    }
}

/// Whether a path is canonical as it is: it starts with a slash, and holds nothing that
/// canonicalisation looks at (a `%`, a backslash, a character to escape) but dots, none of
/// them right after a slash. Most paths are; they are passed over in one scan.
fn is_canonical(path: &[u8]) -> bool {
    if path.first() != Some(&b'/') {
        return false;
    }
    path.iter()
        .enumerate()
        .all(|(i, &c)| PATH_CHARS[usize::from(c)] & SPECIAL == 0 || c == b'.' && path[i - 1] != b'/')
}

fn canonicalize(path: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(path.len() + 1);
    if path.first().is_none_or(|&b| !is_slash(b)) {
        out.push(b'/');
    }
    let mut valid = true;
    let mut invalid_percent: Option<usize> = None;
    let mut i = 0;
    while i < path.len() {
        let c = path[i];
        let flags = PATH_CHARS[usize::from(c)];
        if flags & SPECIAL == 0 {
            out.push(c);
            i += 1;
            continue;
        }
        let dot = dot_len(path, i);
        if dot > 0 {
            if out.last() == Some(&b'/') {
                match classify_after_dot(path, i + dot) {
                    AfterDot::Name => {
                        out.push(b'.');
                        i += dot;
                    }
                    AfterDot::Current(consumed) => i += dot + consumed,
                    AfterDot::Parent(consumed) => {
                        back_up_to_previous_slash(&mut out);
                        i += dot + consumed;
                    }
                }
            } else {
                out.push(b'.');
                i += dot;
            }
            continue;
        }
        if c == b'\\' {
            out.push(b'/');
        } else if c == b'%' {
            if let Some(value) = decode_escaped(path, i) {
                let value_flags = PATH_CHARS[usize::from(value)];
                if value_flags & UNESCAPE != 0 {
                    out.push(value);
                    if let Some(at) = invalid_percent
                        && at + 3 >= out.len()
                    {
                        check_nested_escapes(path, i + 3, at, &mut out);
                    }
                } else {
                    out.extend_from_slice(&path[i..i + 3]);
                    if value_flags & INVALID == INVALID {
                        valid = false;
                    }
                }
                i += 3;
                continue;
            }
            invalid_percent = Some(out.len());
            out.push(b'%');
        } else if flags == INVALID {
            push_escaped(&mut out, c);
            valid = false;
        } else {
            push_escaped(&mut out, c);
        }
        i += 1;
    }
    valid.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalize(path: &str) -> Option<String> {
        canonical_path(path)
    }

    /// Envoy's `PathUtilityTest` and `PathTransformerTest` cases for `canonicalPath`.
    #[test]
    fn canonical_paths_as_envoy_has_them() {
        for path in ["/xyz", "/x/y/z", "/A/B/C"] {
            assert_eq!(normalize(path).as_deref(), Some(path));
        }
        let cases = [
            ("/a/b/../c", "/a/c"),
            ("/a/b/./c", "/a/b/c"),
            ("a/b/../c", "/a/c"),
            ("/a/b/../../../../c", "/c"),
            ("/a/..\\c", "/c"),
            ("/%c0%af", "/%c0%af"),
            ("/%5c%25", "/%5c%25"),
            ("/a/b/%2E%2E/c", "/a/c"),
            ("/a/b/%2e%2e/c", "/a/c"),
            ("/a/b/%2E./c", "/a/c"),
            ("/a/b/%2E/c", "/a/b/c"),
            ("..", "/"),
            ("/../a/b", "/a/b"),
            ("/./a/b", "/a/b"),
            ("/a/%2F%2f/c", "/a/%2F%2f/c"),
        ];
        for (path, want) in cases {
            assert_eq!(normalize(path).as_deref(), Some(want), "{path}");
        }
        for path in ["/xyz/.%00../abc", "/xyz/%00.%00./abc", "/xyz/AAAAA%%0000/abc"] {
            assert_eq!(normalize(path), None, "{path}");
        }
    }

    #[test]
    fn canonical_paths_decode_unreserved_and_escape_what_must_be() {
        assert_eq!(normalize("/%41%62%7e%2D%5f").as_deref(), Some("/Ab~-_"));
        assert_eq!(normalize("/a\"b{c}|^").as_deref(), Some("/a%22b%7Bc%7D%7C%5E"));
        assert_eq!(normalize("/\u{e9}").as_deref(), Some("/%C3%A9"));
        // A dot that does not follow a slash is part of the name.
        assert_eq!(normalize("/a./b..c/.d").as_deref(), Some("/a./b..c/.d"));
        // Trailing dot segments leave the directory.
        assert_eq!(normalize("/a/b/..").as_deref(), Some("/a/"));
        assert_eq!(normalize("/a/b/.").as_deref(), Some("/a/b/"));
        // The query is not touched.
        assert_eq!(normalize("/a/../b?x=/../%41").as_deref(), Some("/b?x=/../%41"));
        // Slashes are not merged by normalisation.
        assert_eq!(normalize("//a//b").as_deref(), Some("//a//b"));
    }

    #[test]
    fn canonical_paths_are_recognised_without_rewriting_them() {
        for path in ["/", "/a/b.c/d..e", "/index.html", "/a-b_c~d/!$&'()*+,;=:@[]"] {
            assert!(is_canonical(path.as_bytes()), "{path}");
            assert_eq!(normalize(path).as_deref(), Some(path));
        }
        for path in [
            "", "a", "/.", "/a/./b", "/a/..", "/%41", "/a\\b", "/a b", "/\u{e9}",
        ] {
            assert!(!is_canonical(path.as_bytes()), "{path}");
        }
    }

    #[test]
    fn nested_escapes_cannot_become_new_ones() {
        // `%%30%30` decodes its inner escapes to `%00`: the first `%` is written `%25`.
        assert_eq!(normalize("/%%30%30").as_deref(), Some("/%2500"));
        assert_eq!(normalize("/%%30").as_deref(), Some("/%0"));
        assert_eq!(normalize("/%%41%42").as_deref(), Some("/%25AB"));
        assert_eq!(normalize("/%").as_deref(), Some("/%"));
    }

    /// The expectations of Istio's path normalisation integration test (run there against
    /// Envoy), for each mesh setting: `BASE` is `normalize_path`, `MERGE_SLASHES` adds
    /// `merge_slashes`, `DECODE_AND_MERGE_SLASHES` adds `UNESCAPE_AND_FORWARD`.
    #[test]
    fn istio_mesh_settings_give_what_istios_integration_test_expects() {
        let base = PathNormalization {
            normalize: true,
            ..PathNormalization::default()
        };
        let merge = PathNormalization {
            merge_slashes: true,
            ..base
        };
        let decode = PathNormalization {
            escaped_slashes: EscapedSlashes::UnescapeAndForward,
            ..merge
        };
        let got = |settings: &PathNormalization, path: &str| match settings.apply(path) {
            Outcome::Unchanged => path.to_string(),
            Outcome::Rewritten(p) => p,
            other => panic!("{path}: {other:?}"),
        };
        // (input, BASE, MERGE_SLASHES, DECODE_AND_MERGE_SLASHES)
        let table = [
            ("/", "/", "/", "/"),
            ("/app/", "/app/", "/app/", "/app/"),
            ("/app/../admin", "/admin", "/admin", "/admin"),
            ("/app//", "/app//", "/app/", "/app/"),
            ("/app/%2f", "/app/%2f", "/app/%2f", "/app/"),
            ("/app%2f/", "/app%2f/", "/app%2f/", "/app/"),
            ("/xyz%30..//abc", "/xyz0..//abc", "/xyz0../abc", "/xyz0../abc"),
            ("/app/%2E./admin", "/admin", "/admin", "/admin"),
            ("/app\\admin", "/app/admin", "/app/admin", "/app/admin"),
            (
                "/app/\\/\\/\\admin",
                "/app//////admin",
                "/app/admin",
                "/app/admin",
            ),
            (
                "/%2Fapp%5cadmin%5Cabc",
                "/%2Fapp%5cadmin%5Cabc",
                "/%2Fapp%5cadmin%5Cabc",
                "/app/admin/abc",
            ),
            (
                "/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\\abc",
                "/%5Capp%2f%5c%2F..%2fadmin%5c/abc",
                "/%5Capp%2f%5c%2F..%2fadmin%5c/abc",
                "/app/admin/abc",
            ),
            ("/app//../admin", "/app/admin", "/app/admin", "/app/admin"),
            ("/app//../../admin", "/admin", "/admin", "/admin"),
        ];
        for (input, want_base, want_merge, want_decode) in table {
            assert_eq!(got(&base, input), want_base, "BASE {input}");
            assert_eq!(got(&merge, input), want_merge, "MERGE_SLASHES {input}");
            assert_eq!(
                got(&decode, input),
                want_decode,
                "DECODE_AND_MERGE_SLASHES {input}"
            );
        }
        assert_eq!(got(&decode, "/%c0%2e%c0%2e/admin"), "/%c0.%c0./admin");
        assert_eq!(got(&decode, "/%c0%2fadmin"), "/%c0/admin");
        for same in [
            "/0x2e0x2e0x2fadmin",
            "/%25c0%25ae%25c1%259cadmin",
            "/%252e%252e%252fadmin",
            "/%c1%9cadmin",
            "/%c0%ae%c0%ae/admin",
            "/.../admin",
            "/..../admin",
            "/..;/admin",
            "/;/admin",
            "/admin;a=b/xyz",
            "/admin,a=b/xyz",
            "/ADMIN",
        ] {
            assert_eq!(got(&decode, same), same);
        }
        // Every escape from %01 to %ff: decoded when it stands for an unreserved character, a
        // dot or a slash (`\` read as one), kept as written otherwise.
        for byte in 1..=0xffu8 {
            let input = format!("/admin%{byte:02x}");
            let want = match byte {
                b'/' | b'\\' => "/admin/".to_string(),
                b'0'..=b'9' | b'A'..=b'Z' | b'a'..=b'z' | b'-' | b'.' | b'_' | b'~' => {
                    format!("/admin{}", byte as char)
                }
                _ => input.clone(),
            };
            assert_eq!(got(&decode, &input), want, "{input}");
        }
        assert_eq!(decode.apply("/admin%00"), Outcome::Reject);
    }

    /// Envoy's `MergeSlashes` cases.
    #[test]
    fn merged_slashes_as_envoy_has_them() {
        let cases = [
            ("a//b/c", "a/b/c"),
            ("/a//b/c/", "/a/b/c/"),
            ("a//b/c/", "a/b/c/"),
            ("//a/b/c", "/a/b/c"),
            ("/a//b/c", "/a/b/c"),
            ("/a/b/c//", "/a/b/c/"),
            ("/a///b/c", "/a/b/c"),
            ("/a////b/c", "/a/b/c"),
            ("/a//b?a=///c", "/a/b?a=///c"),
            ("/a//b?", "/a/b?"),
            ("//a/?b", "/a/?b"),
        ];
        for (path, want) in cases {
            assert_eq!(merge_slashes(path).as_deref(), Some(want), "{path}");
        }
        assert_eq!(merge_slashes("/a"), None);
        assert_eq!(merge_slashes("/a?b=//"), None);
    }

    /// Envoy's `UnescapeSlashes` cases.
    #[test]
    fn unescaped_slashes_as_envoy_has_them() {
        assert_eq!(unescape_slashes("%2f%2F").as_deref(), Some("//"));
        assert_eq!(unescape_slashes("/a%2Fb%2fc/").as_deref(), Some("/a/b/c/"));
        assert_eq!(unescape_slashes("/a%5Cb%5cc").as_deref(), Some("/a\\b\\c"));
        assert_eq!(unescape_slashes("/a%2Fb?c=%2F").as_deref(), Some("/a/b?c=%2F"));
        for path in ["", "%2b", "/a/b/c", "%2", "%", "/abc%2", "/a?b=%2F"] {
            assert_eq!(unescape_slashes(path), None, "{path}");
        }
    }

    #[test]
    fn the_steps_run_in_envoys_order_with_its_actions() {
        let all = PathNormalization {
            normalize: true,
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::UnescapeAndRedirect,
        };
        assert_eq!(all.apply("/a/b"), Outcome::Unchanged);
        // Normalisation alone continues with the new path.
        assert_eq!(all.apply("/a/../b//c"), Outcome::Rewritten("/b/c".into()));
        // Escaped slashes decoded: redirect to the path every step made.
        assert_eq!(all.apply("/a%2F..%2Fb//c?q"), Outcome::Redirect("/b/c?q".into()));
        // `%5C` decodes to a backslash, which normalisation makes a slash.
        assert_eq!(all.apply("/a%5cb"), Outcome::Redirect("/a/b".into()));
        assert_eq!(all.apply("/a/%00"), Outcome::Reject);

        let reject = PathNormalization {
            escaped_slashes: EscapedSlashes::RejectRequest,
            ..PathNormalization::default()
        };
        assert_eq!(reject.apply("/a%2fb"), Outcome::Reject);
        assert_eq!(reject.apply("/a/../b"), Outcome::Unchanged);

        let forward = PathNormalization {
            escaped_slashes: EscapedSlashes::UnescapeAndForward,
            ..PathNormalization::default()
        };
        assert_eq!(forward.apply("/a%2fb"), Outcome::Rewritten("/a/b".into()));
        assert!(!PathNormalization::default().is_active());
    }
}

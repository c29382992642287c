//! Arbitrary request paths through the connection manager's path handling (Envoy's
//! `normalize_path`, `merge_slashes` and `path_with_escaped_slashes_action`), under each of the
//! settings the first byte picks. Never a panic; a path that passes is canonical (normalising it
//! again changes nothing) and always a path the proxy can send upstream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_proxy::path_normalization::{EscapedSlashes, Outcome, PathNormalization, canonical_path};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let Ok(path) = std::str::from_utf8(rest) else {
        return;
    };
    let settings = PathNormalization {
        normalize: first & 1 == 1,
        merge_slashes: first & 2 == 2,
        escaped_slashes: match (first >> 2) & 3 {
            0 => EscapedSlashes::KeepUnchanged,
            1 => EscapedSlashes::RejectRequest,
            2 => EscapedSlashes::UnescapeAndRedirect,
            _ => EscapedSlashes::UnescapeAndForward,
        },
    };
    let result = match settings.apply(path) {
        Outcome::Unchanged => path.to_string(),
        Outcome::Rewritten(p) | Outcome::Redirect(p) => p,
        Outcome::Reject => return,
    };
    if settings.normalize && !settings.merge_slashes && settings.escaped_slashes == EscapedSlashes::KeepUnchanged {
        assert_eq!(canonical_path(&result).as_deref(), Some(result.as_str()), "{path:?}");
        assert!(result.starts_with('/'), "{path:?} -> {result:?}");
    }
});

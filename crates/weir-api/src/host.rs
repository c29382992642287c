//! Host-name algebra, as Istio defines it (`pkg/config/host/name.go`).
//!
//! A host is a DNS name that may start with a wildcard label (`*.example.com`); `*` alone matches
//! everything. Comparisons are on the literal text (Istio does not fold case).

/// Whether `host` starts with a wildcard.
pub fn is_wildcard(host: &str) -> bool {
    host.starts_with('*')
}

/// Whether two hosts overlap: some name matches both. Symmetric.
/// `*.com` ~ `foo.com`; `*.foo.com` ~ `*.com`; `*.foo.com` !~ `foo.com`; `*` ~ everything.
pub fn matches(a: &str, b: &str) -> bool {
    match (is_wildcard(a), is_wildcard(b)) {
        (true, true) => {
            let (sa, sb) = (&a[1..], &b[1..]);
            if sa.len() < sb.len() {
                sb.ends_with(sa)
            } else {
                sa.ends_with(sb)
            }
        }
        (true, false) => b.ends_with(&a[1..]),
        (false, true) => a.ends_with(&b[1..]),
        (false, false) => a == b,
    }
}

/// Whether every name matched by `host` is also matched by `of`. One-directional.
/// `foo.com` ⊆ `*.com`; `*.foo.com` ⊆ `*.com`; `*.com` ⊄ `foo.com`.
pub fn subset_of(host: &str, of: &str) -> bool {
    match (is_wildcard(host), is_wildcard(of)) {
        (true, true) => host[1..].ends_with(&of[1..]),
        (true, false) => false,
        (false, true) => host.ends_with(&of[1..]),
        (false, false) => host == of,
    }
}

/// Expands a short name (no dot) to `<name>.<namespace>.svc.<domain_suffix>`, as Istio does for
/// VirtualService and DestinationRule hosts. Names with a dot, `*` and IP addresses are unchanged.
pub fn resolve_short_name(host: &str, namespace: &str, domain_suffix: &str) -> String {
    if host.contains('.') || host == "*" || host.contains(':') || host.parse::<std::net::IpAddr>().is_ok() {
        return host.to_string();
    }
    format!("{host}.{namespace}.svc.{domain_suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_is_symmetric_wildcard_overlap() {
        let cases = [
            ("*.com", "foo.com", true),
            ("*.foo.com", "*.com", true),
            ("*.foo.com", "foo.com", false),
            ("*", "anything.example", true),
            ("a.com", "a.com", true),
            ("a.com", "b.com", false),
            ("*.bar.com", "*.baz.com", false),
        ];
        for (a, b, want) in cases {
            assert_eq!(matches(a, b), want, "{a} ~ {b}");
            assert_eq!(matches(b, a), want, "{b} ~ {a}");
        }
    }

    #[test]
    fn subset_is_one_directional() {
        assert!(subset_of("foo.com", "*.com"));
        assert!(subset_of("*.foo.com", "*.com"));
        assert!(!subset_of("*.com", "*.foo.com"));
        assert!(!subset_of("*.com", "foo.com"));
        assert!(subset_of("a.com", "*"));
        assert!(subset_of("a.com", "a.com"));
    }

    #[test]
    fn short_names_expand() {
        assert_eq!(
            resolve_short_name("reviews", "prod", "cluster.local"),
            "reviews.prod.svc.cluster.local"
        );
        assert_eq!(
            resolve_short_name("reviews.prod", "x", "cluster.local"),
            "reviews.prod"
        );
        assert_eq!(resolve_short_name("*", "x", "cluster.local"), "*");
        assert_eq!(resolve_short_name("10.0.0.1", "x", "cluster.local"), "10.0.0.1");
    }
}

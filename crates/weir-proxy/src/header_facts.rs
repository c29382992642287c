//! What a request's header names say, found in one pass over them.
//!
//! The router asks a request's headers the same questions for every request — is there a
//! `connection` header, an `x-envoy-*` override, an `x-request-id`, an `x-forwarded-proto`? —
//! and most requests carry a handful of headers and none of those. A `HeaderMap` lookup hashes
//! the name and probes the table (about 150 instructions); a look at each name present costs a
//! few comparisons, so the answers are found once and the lookups made only when they can find
//! something.

use http::HeaderMap;
use http::header::{CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRANSFER_ENCODING, UPGRADE};

use crate::names;

/// Which headers a request carries, of those the router reads or replaces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeaderFacts {
    /// A `connection` header.
    pub connection: bool,
    /// A hop-by-hop header (`connection`, `upgrade`, `te`, `keep-alive`, ...).
    pub hop_by_hop: bool,
    /// A header whose name starts with `x-envoy-` (Envoy's request overrides among them).
    pub envoy: bool,
    /// `x-request-id`.
    pub request_id: bool,
    /// `x-forwarded-proto`.
    pub forwarded_proto: bool,
    /// `x-forwarded-client-cert`.
    pub client_cert: bool,
}

impl HeaderFacts {
    /// Looks at each name in `headers` once.
    pub fn of(headers: &HeaderMap) -> Self {
        let mut facts = HeaderFacts::default();
        for name in headers.keys() {
            if *name == CONNECTION {
                facts.connection = true;
                facts.hop_by_hop = true;
            } else if *name == UPGRADE
                || *name == TE
                || *name == TRANSFER_ENCODING
                || *name == PROXY_AUTHENTICATE
                || *name == PROXY_AUTHORIZATION
                || *name == names::KEEP_ALIVE
                || *name == names::PROXY_CONNECTION
            {
                facts.hop_by_hop = true;
            } else if name.as_str().starts_with("x-envoy-") {
                facts.envoy = true;
            } else if *name == names::X_REQUEST_ID {
                facts.request_id = true;
            } else if *name == names::X_FORWARDED_PROTO {
                facts.forwarded_proto = true;
            } else if *name == names::X_FORWARDED_CLIENT_CERT {
                facts.client_cert = true;
            }
        }
        facts
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn facts(names: &[&str]) -> HeaderFacts {
        let mut h = HeaderMap::new();
        for n in names {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_static("v"),
            );
        }
        HeaderFacts::of(&h)
    }

    #[test]
    fn each_fact_is_found_by_its_name_in_any_case() {
        assert_eq!(facts(&["host", "accept", "user-agent"]), HeaderFacts::default());
        let all = facts(&[
            "Connection",
            "X-Envoy-Max-Retries",
            "x-request-id",
            "X-Forwarded-Proto",
            "x-forwarded-client-cert",
        ]);
        assert_eq!(
            all,
            HeaderFacts {
                connection: true,
                hop_by_hop: true,
                envoy: true,
                request_id: true,
                forwarded_proto: true,
                client_cert: true,
            }
        );
        for hop in [
            "upgrade",
            "te",
            "transfer-encoding",
            "keep-alive",
            "proxy-connection",
            "proxy-authorization",
        ] {
            let f = facts(&[hop]);
            assert!(f.hop_by_hop && !f.connection, "{hop}");
        }
        assert!(facts(&["x-envoy-upstream-rq-timeout-ms"]).envoy);
        assert!(!facts(&["x-envoyish"]).envoy);
    }
}

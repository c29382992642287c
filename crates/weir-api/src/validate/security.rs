//! AuthorizationPolicy, PeerAuthentication, RequestAuthentication (§1.9–1.11, §2.8).

use super::common;
use super::{Meta, target_refs_schema, target_refs_webhook};
use crate::diag::Report;
use crate::path::Path;
use crate::types::security::{
    AuthorizationAction, AuthorizationPolicy, JwtRule, PeerAuthentication, RequestAuthentication, Source,
};
use crate::types::{OrEmpty, PolicyTargetReference};

fn refs<'p, 'a>(
    single: &'p Path<'p>,
    many: &'p Path<'p>,
    one: Option<&'a PolicyTargetReference>,
    list: &'a [PolicyTargetReference],
) -> Vec<(Path<'p>, &'a PolicyTargetReference)> {
    let mut out: Vec<(Path<'p>, &PolicyTargetReference)> = one.map(|t| (*single, t)).into_iter().collect();
    out.extend(list.iter().enumerate().map(|(i, t)| (many.index(i), t)));
    out
}

/// CRD rules of AuthorizationPolicy.
pub fn authz_schema(r: &mut Report, spec: &Path<'_>, ap: &AuthorizationPolicy, _meta: &Meta<'_>) {
    if let Some(sel) = &ap.selector {
        common::match_labels_schema(r, &spec.key("selector"), sel);
    }
    target_refs_schema(
        r,
        spec,
        ap.selector.is_some(),
        ap.target_ref.as_ref(),
        ap.target_refs.or_empty(),
    );
    let rules = ap.rules.or_empty();
    let rp = spec.key("rules");
    if rules.len() > 512 {
        r.body(&rp, "should have at most 512 items");
    }
    for (i, rule) in rules.iter().enumerate() {
        let p = rp.index(i);
        let fp = p.key("from");
        for (j, from) in rule.from.or_empty().iter().enumerate() {
            if let Some(src) = &from.source {
                let sp = fp.index(j);
                let sp = sp.key("source");
                let sas = src.service_accounts.or_empty();
                if sas.len() > 16 {
                    r.body(&sp.key("serviceAccounts"), "should have at most 16 items");
                }
                for (k, sa) in sas.iter().enumerate() {
                    if sa.len() > 320 {
                        r.body(
                            &sp.key("serviceAccounts").index(k),
                            "should be at most 320 chars long",
                        );
                    }
                }
                if !sas.is_empty() && (src.namespaces.is_some() || src.principals.is_some()) {
                    r.invalid(
                        &sp,
                        "\"object\"",
                        "Cannot set serviceAccounts with namespaces or principals",
                    );
                }
            }
        }
    }
}

/// Every list field of a `Source`, with its YAML name.
fn source_fields(s: &Source) -> [(&'static str, &Option<Vec<String>>); 14] {
    [
        ("principals", &s.principals),
        ("notPrincipals", &s.not_principals),
        ("requestPrincipals", &s.request_principals),
        ("notRequestPrincipals", &s.not_request_principals),
        ("namespaces", &s.namespaces),
        ("notNamespaces", &s.not_namespaces),
        ("serviceAccounts", &s.service_accounts),
        ("notServiceAccounts", &s.not_service_accounts),
        ("ipBlocks", &s.ip_blocks),
        ("notIpBlocks", &s.not_ip_blocks),
        ("remoteIpBlocks", &s.remote_ip_blocks),
        ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
        ("trustDomains", &s.trust_domains),
        ("notTrustDomains", &s.not_trust_domains),
    ]
}

/// Source fields a CUSTOM policy cannot use (its external authorizer sees no peer identity).
const CUSTOM_UNSUPPORTED: &[&str] = &[
    "principals",
    "notPrincipals",
    "requestPrincipals",
    "notRequestPrincipals",
    "namespaces",
    "notNamespaces",
    "serviceAccounts",
    "trustDomains",
];

fn no_empty_values(r: &mut Report, p: &Path<'_>, field: &str, values: &[String]) {
    if values.iter().any(String::is_empty) {
        r.error(
            &p.key(field),
            format!("empty value not allowed, found in {field}"),
        );
    }
}

fn ip_blocks(r: &mut Report, p: &Path<'_>, field: &str, values: &[String]) {
    for (i, v) in values.iter().enumerate() {
        if let Err(e) = common::ip_subnet(v) {
            r.error(&p.key(field).index(i), e);
        }
    }
}

fn ports(r: &mut Report, p: &Path<'_>, field: &str, values: &[String]) {
    for (i, v) in values.iter().enumerate() {
        if v.parse::<u32>().map_or(true, |n| n > 65535) {
            r.error(&p.key(field).index(i), format!("invalid port: {v}"));
        }
    }
}

/// `CheckValidPathTemplate`: `{*}` and `{**}` only as whole segments, nothing templated after `{**}`.
fn path_templates(r: &mut Report, p: &Path<'_>, field: &str, values: &[String]) {
    for (i, path) in values.iter().enumerate().filter(|(_, v)| v.contains("{*")) {
        let mut after_any = false;
        for glob in path.trim_matches('/').split('/') {
            let problem = match glob {
                "{*}" | "{**}" if after_any => Some("{**} is not the last operator"),
                "{**}" => {
                    after_any = true;
                    None
                }
                "{*}" => None,
                g if g.contains(['{', '}']) => Some("Contains '{' or '}' beyond a supported path template"),
                _ => None,
            };
            if let Some(problem) = problem {
                r.error(
                    &p.key(field).index(i),
                    format!("invalid or unsupported path {path}, found in {field}. {problem}"),
                );
                break;
            }
        }
    }
}

const ATTRIBUTES: &[&str] = &[
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "source.serviceAccount",
    "source.trustDomain",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "destination.ip",
    "destination.port",
    "connection.sni",
];

fn known_attribute(key: &str) -> bool {
    ATTRIBUTES.contains(&key)
        || (key.starts_with("request.headers[")
            && key.ends_with(']')
            && key.len() > "request.headers[]".len())
        || (key.starts_with("request.auth.claims[")
            && key.ends_with(']')
            && key.len() > "request.auth.claims[]".len())
        || key.starts_with("experimental.envoy.filters.")
}

/// Webhook rules of AuthorizationPolicy.
pub fn authz_webhook(r: &mut Report, spec: &Path<'_>, ap: &AuthorizationPolicy, _meta: &Meta<'_>) {
    if let Some(sel) = &ap.selector {
        common::match_labels(r, &spec.key("selector"), sel);
    }
    let single = spec.key("targetRef");
    let many = spec.key("targetRefs");
    target_refs_webhook(
        r,
        &refs(&single, &many, ap.target_ref.as_ref(), ap.target_refs.or_empty()),
    );
    let action = ap.action.unwrap_or_default();
    let custom = action == AuthorizationAction::Custom;
    if custom {
        if ap.rules.is_none() {
            r.error(spec, "CUSTOM action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request");
        } else if ap
            .provider
            .as_ref()
            .and_then(|p| p.name.as_deref())
            .is_none_or(str::is_empty)
        {
            r.error(
                &spec.key("provider"),
                "must specify provider when using CUSTOM action",
            );
        }
    } else if ap.provider.is_some() {
        r.error(
            &spec.key("provider"),
            "provider is only allowed with CUSTOM action",
        );
    }
    if action == AuthorizationAction::Deny && ap.rules.is_none() {
        r.error(spec, "DENY action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request");
    }
    let rp = spec.key("rules");
    for (i, rule) in ap.rules.or_empty().iter().enumerate() {
        let p = rp.index(i);
        if rule.from.as_ref().is_some_and(Vec::is_empty) {
            r.error(
                &p.key("from"),
                format!("`from` must not be empty, found at rule {i}"),
            );
        }
        let fp = p.key("from");
        for (j, from) in rule.from.or_empty().iter().enumerate() {
            let jp = fp.index(j);
            let Some(src) = &from.source else {
                r.error(&jp, format!("`from.source` must not be nil, found at rule {i}"));
                continue;
            };
            let sp = jp.key("source");
            let fields = source_fields(src);
            if fields.iter().all(|(_, v)| v.or_empty().is_empty()) {
                r.error(&sp, format!("`from.source` must not be empty, found at rule {i}"));
            }
            for (field, values) in fields {
                no_empty_values(r, &sp, field, values.or_empty());
                if field.to_ascii_lowercase().ends_with("ipblocks") {
                    ip_blocks(r, &sp, field, values.or_empty());
                }
                if custom && CUSTOM_UNSUPPORTED.contains(&field) && !values.or_empty().is_empty() {
                    r.error(
                        &sp.key(field),
                        format!("{field} is currently not supported with CUSTOM action"),
                    );
                }
            }
            if !src.service_accounts.or_empty().is_empty()
                && (!src.namespaces.or_empty().is_empty() || !src.principals.or_empty().is_empty())
            {
                r.error(&sp, "Cannot set serviceAccounts with namespaces or principals");
            }
        }
        if rule.to.as_ref().is_some_and(Vec::is_empty) {
            r.error(&p.key("to"), format!("`to` must not be empty, found at rule {i}"));
        }
        let tp = p.key("to");
        for (j, to) in rule.to.or_empty().iter().enumerate() {
            let jp = tp.index(j);
            let Some(op) = &to.operation else {
                r.error(&jp, format!("`to.operation` must not be nil, found at rule {i}"));
                continue;
            };
            let op_path = jp.key("operation");
            let fields = [
                ("hosts", &op.hosts),
                ("notHosts", &op.not_hosts),
                ("ports", &op.ports),
                ("notPorts", &op.not_ports),
                ("methods", &op.methods),
                ("notMethods", &op.not_methods),
                ("paths", &op.paths),
                ("notPaths", &op.not_paths),
            ];
            if fields.iter().all(|(_, v)| v.or_empty().is_empty()) {
                r.error(
                    &op_path,
                    format!("`to.operation` must not be empty, found at rule {i}"),
                );
            }
            for (field, values) in fields {
                no_empty_values(r, &op_path, field, values.or_empty());
            }
            ports(r, &op_path, "ports", op.ports.or_empty());
            ports(r, &op_path, "notPorts", op.not_ports.or_empty());
            path_templates(r, &op_path, "paths", op.paths.or_empty());
            path_templates(r, &op_path, "notPaths", op.not_paths.or_empty());
        }
        let wp = p.key("when");
        for (j, cond) in rule.when.or_empty().iter().enumerate() {
            let cp = wp.index(j);
            let key = cond.key.as_deref().unwrap_or("");
            if key.is_empty() {
                r.error(&cp.key("key"), "`key` must not be empty");
                continue;
            }
            if cond.values.or_empty().is_empty() && cond.not_values.or_empty().is_empty() {
                r.error(
                    &cp,
                    format!("at least one of `values` or `notValues` must be set for key {key}"),
                );
            } else if !known_attribute(key) {
                r.error(
                    &cp.key("key"),
                    format!("invalid `value` for `key` {key}: unknown attribute: {key}"),
                );
            } else {
                for (field, values) in [("values", &cond.values), ("notValues", &cond.not_values)] {
                    match key {
                        "source.ip" | "remote.ip" | "destination.ip" => {
                            ip_blocks(r, &cp, field, values.or_empty())
                        }
                        "destination.port" => ports(r, &cp, field, values.or_empty()),
                        _ => {}
                    }
                }
            }
            if custom
                && [
                    "source.namespace",
                    "source.serviceAccount",
                    "source.principal",
                    "request.auth.",
                ]
                .iter()
                .any(|prefix| key.starts_with(prefix))
            {
                r.error(
                    &cp.key("key"),
                    format!("{key} is currently not supported with CUSTOM action"),
                );
            }
        }
    }
}

/// CRD rules of PeerAuthentication.
pub fn peer_schema(r: &mut Report, spec: &Path<'_>, pa: &PeerAuthentication, _meta: &Meta<'_>) {
    if let Some(sel) = &pa.selector {
        common::match_labels_schema(r, &spec.key("selector"), sel);
    }
    let Some(ports) = &pa.port_level_mtls else { return };
    let pp = spec.key("portLevelMtls");
    if ports.is_empty() {
        r.body(&pp, "should have at least 1 properties");
    }
    if ports.keys().any(|p| !(1..=65535).contains(p)) {
        r.invalid(&pp, "\"object\"", "port must be between 1-65535");
    }
    if pa.selector.is_none() {
        r.invalid(spec, "\"object\"", "portLevelMtls requires selector");
    }
}

/// Webhook rules of PeerAuthentication.
pub fn peer_webhook(r: &mut Report, spec: &Path<'_>, pa: &PeerAuthentication, _meta: &Meta<'_>) {
    if let Some(sel) = &pa.selector {
        common::match_labels(r, &spec.key("selector"), sel);
    }
    let Some(ports) = &pa.port_level_mtls else { return };
    let pp = spec.key("portLevelMtls");
    if pa
        .selector
        .as_ref()
        .is_none_or(|s| s.match_labels.or_empty().is_empty())
    {
        r.error(
            &pp,
            "mesh/namespace peer authentication cannot have port level mTLS",
        );
    }
    if ports.is_empty() {
        r.error(&pp, "port level mTLS, if defined, must have at least one element");
    }
    for port in ports.keys() {
        common::port(r, &pp.key(&port.to_string()), i64::from(*port));
    }
}

/// CRD rules of RequestAuthentication.
pub fn request_schema(r: &mut Report, spec: &Path<'_>, ra: &RequestAuthentication, _meta: &Meta<'_>) {
    if let Some(sel) = &ra.selector {
        common::match_labels_schema(r, &spec.key("selector"), sel);
    }
    target_refs_schema(
        r,
        spec,
        ra.selector.is_some(),
        ra.target_ref.as_ref(),
        ra.target_refs.or_empty(),
    );
    let rules = ra.jwt_rules.or_empty();
    let jp = spec.key("jwtRules");
    if rules.len() > 4096 {
        r.body(&jp, "should have at most 4096 items");
    }
    for (i, rule) in rules.iter().enumerate() {
        jwt_rule_schema(r, &jp.index(i), rule);
    }
}

fn min_len_items(r: &mut Report, p: &Path<'_>, field: &str, values: &[String]) {
    let fp = p.key(field);
    for (i, v) in values.iter().enumerate() {
        if v.is_empty() {
            r.body(&fp.index(i), "should be at least 1 chars long");
        }
    }
}

fn jwt_rule_schema(r: &mut Report, p: &Path<'_>, rule: &JwtRule) {
    if rule.issuer.as_deref() == Some("") {
        r.body(&p.key("issuer"), "should be at least 1 chars long");
    }
    min_len_items(r, p, "audiences", rule.audiences.or_empty());
    if let Some(uri) = rule.jwks_uri.as_deref() {
        let up = p.key("jwksUri");
        if uri.is_empty() {
            r.body(&up, "should be at least 1 chars long");
        } else if uri.len() > 2048 {
            r.body(&up, "should be at most 2048 chars long");
        }
        if !uri.starts_with("http://") && !uri.starts_with("https://") {
            r.invalid(&up, "\"string\"", "url must have scheme http:// or https://");
        }
    }
    if rule.jwks.is_some() && rule.jwks_uri.is_some() {
        r.invalid(p, "\"object\"", "only one of jwks or jwksUri can be set");
    }
    let hp = p.key("fromHeaders");
    for (i, h) in rule.from_headers.or_empty().iter().enumerate() {
        match h.name.as_deref() {
            None => r.required(&hp.index(i).key("name")),
            Some("") => r.body(&hp.index(i).key("name"), "should be at least 1 chars long"),
            Some(_) => {}
        }
    }
    min_len_items(r, p, "fromParams", rule.from_params.or_empty());
    min_len_items(r, p, "fromCookies", rule.from_cookies.or_empty());
    let cp = p.key("outputClaimToHeaders");
    for (i, c) in rule.output_claim_to_headers.or_empty().iter().enumerate() {
        let ip = cp.index(i);
        match c.header.as_deref() {
            None => r.required(&ip.key("header")),
            Some("") => r.body(&ip.key("header"), "should be at least 1 chars long"),
            Some(h) if !common::HEADER_NAME.is_match(h) => r.body(
                &ip.key("header"),
                format!("should match '{}'", common::HEADER_NAME.as_str()),
            ),
            Some(_) => {}
        }
        match c.claim.as_deref() {
            None => r.required(&ip.key("claim")),
            Some("") => r.body(&ip.key("claim"), "should be at least 1 chars long"),
            Some(_) => {}
        }
    }
    if let Some(t) = &rule.timeout {
        common::duration_schema(r, &p.key("timeout"), t);
    }
    let claims = rule.space_delimited_claims.or_empty();
    if claims.len() > 64 {
        r.body(&p.key("spaceDelimitedClaims"), "should have at most 64 items");
    }
    min_len_items(r, p, "spaceDelimitedClaims", claims);
}

/// Webhook rules of RequestAuthentication.
pub fn request_webhook(r: &mut Report, spec: &Path<'_>, ra: &RequestAuthentication, _meta: &Meta<'_>) {
    if let Some(sel) = &ra.selector {
        common::match_labels(r, &spec.key("selector"), sel);
    }
    let single = spec.key("targetRef");
    let many = spec.key("targetRefs");
    target_refs_webhook(
        r,
        &refs(&single, &many, ra.target_ref.as_ref(), ra.target_refs.or_empty()),
    );
    let jp = spec.key("jwtRules");
    for (i, rule) in ra.jwt_rules.or_empty().iter().enumerate() {
        let p = jp.index(i);
        if rule.issuer.as_deref().is_none_or(str::is_empty) {
            r.error(&p.key("issuer"), "issuer must be set");
        }
        if rule.audiences.or_empty().iter().any(String::is_empty) {
            r.error(&p.key("audiences"), "audience must be non-empty string");
        }
        if let Some(uri) = rule.jwks_uri.as_deref().filter(|u| !u.is_empty()) {
            let rest = uri
                .strip_prefix("https://")
                .or_else(|| uri.strip_prefix("http://"));
            match rest {
                Some(rest) if !rest.is_empty() && !rest.starts_with('/') => {}
                _ => r.error(
                    &p.key("jwksUri"),
                    format!("invalid jwksUri {uri:?}: must be an http:// or https:// URL with a host"),
                ),
            }
        }
        if let Some(jwks) = rule.jwks.as_deref().filter(|j| !j.is_empty()) {
            jwks_document(r, &p.key("jwks"), jwks);
        }
        if rule
            .from_headers
            .or_empty()
            .iter()
            .any(|h| h.name.as_deref().is_none_or(str::is_empty))
        {
            r.error(
                &p.key("fromHeaders"),
                "location header name must be non-empty string",
            );
        }
        if rule.from_params.or_empty().iter().any(String::is_empty) {
            r.error(&p.key("fromParams"), "location query must be non-empty string");
        }
        if rule.from_cookies.or_empty().iter().any(String::is_empty) {
            r.error(&p.key("fromCookies"), "cookie name must be non-empty string");
        }
        let cp = p.key("outputClaimToHeaders");
        for (j, c) in rule.output_claim_to_headers.or_empty().iter().enumerate() {
            let (header, claim) = (
                c.header.as_deref().unwrap_or(""),
                c.claim.as_deref().unwrap_or(""),
            );
            if header.is_empty() || claim.is_empty() {
                r.error(
                    &cp.index(j),
                    "outputClaimToHeaders header and claim value must be non-empty string",
                );
            } else if !common::is_http_token(header) {
                r.error(
                    &cp.index(j).key("header"),
                    format!("invalid header name {header:?}"),
                );
            }
        }
        if let Some(t) = &rule.timeout {
            common::duration(r, &p.key("timeout"), t);
        }
    }
}

/// Checks an inline JWKS: a JSON object with a `keys` array of objects, and warns on private keys.
fn jwks_document(r: &mut Report, p: &Path<'_>, jwks: &str) {
    let parsed: Result<serde_json::Value, _> = serde_json::from_str(jwks);
    let keys = match &parsed {
        Ok(v) => v.get("keys").and_then(|k| k.as_array()),
        Err(e) => {
            r.error(p, format!("jwks parse error: {e}"));
            return;
        }
    };
    let Some(keys) = keys else {
        r.error(p, "jwks parse error: the document has no \"keys\" array");
        return;
    };
    for key in keys {
        if !key.is_object() || key.get("kty").and_then(|k| k.as_str()).is_none() {
            r.error(p, "jwks parse error: every key must be an object with a \"kty\"");
            return;
        }
        if key.get("d").is_some() {
            r.warn(
                p,
                "jwks contains private key material; only public keys are needed to verify tokens",
            );
        }
    }
}

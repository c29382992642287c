//! `security.istio.io` kinds (v1 and v1beta1 share these messages).

use std::collections::BTreeMap;

use super::{Duration, MatchLabelsSelector, PolicyTargetReference, api_enum, api_struct};

api_struct! {
    /// `AuthorizationPolicy.spec`: access control for workloads.
    pub struct AuthorizationPolicy {
        selector: MatchLabelsSelector,
        target_ref: PolicyTargetReference,
        target_refs: Vec<PolicyTargetReference>,
        rules: Vec<Rule>,
        action: AuthorizationAction,
        provider: ExtensionProvider,
    }

    /// The external authorizer of a CUSTOM policy.
    pub struct ExtensionProvider {
        name: String,
    }

    /// One rule: who (from), what (to), when.
    pub struct Rule {
        from: Vec<RuleFrom>,
        to: Vec<RuleTo>,
        when: Vec<Condition>,
    }

    /// A `from` clause.
    pub struct RuleFrom {
        source: Source,
    }

    /// A `to` clause.
    pub struct RuleTo {
        operation: Operation,
    }

    /// Request source attributes.
    pub struct Source {
        principals: Vec<String>,
        not_principals: Vec<String>,
        request_principals: Vec<String>,
        not_request_principals: Vec<String>,
        namespaces: Vec<String>,
        not_namespaces: Vec<String>,
        service_accounts: Vec<String>,
        not_service_accounts: Vec<String>,
        ip_blocks: Vec<String>,
        not_ip_blocks: Vec<String>,
        remote_ip_blocks: Vec<String>,
        not_remote_ip_blocks: Vec<String>,
        trust_domains: Vec<String>,
        not_trust_domains: Vec<String>,
    }

    /// Request operation attributes.
    pub struct Operation {
        hosts: Vec<String>,
        not_hosts: Vec<String>,
        ports: Vec<String>,
        not_ports: Vec<String>,
        methods: Vec<String>,
        not_methods: Vec<String>,
        paths: Vec<String>,
        not_paths: Vec<String>,
    }

    /// An extra condition on a request attribute.
    pub struct Condition {
        key: String,
        values: Vec<String>,
        not_values: Vec<String>,
    }

    /// `PeerAuthentication.spec`: the mTLS mode for workloads.
    pub struct PeerAuthentication {
        selector: MatchLabelsSelector,
        mtls: MutualTls,
        port_level_mtls: BTreeMap<u32, MutualTls>,
    }

    /// An mTLS mode.
    pub struct MutualTls {
        mode: MtlsMode,
    }

    /// `RequestAuthentication.spec`: JWT validation.
    pub struct RequestAuthentication {
        selector: MatchLabelsSelector,
        target_ref: PolicyTargetReference,
        target_refs: Vec<PolicyTargetReference>,
        jwt_rules: Vec<JwtRule>,
    }

    /// How to validate one issuer's tokens.
    pub struct JwtRule {
        issuer: String,
        audiences: Vec<String>,
        jwks_uri: String,
        jwks: String,
        from_headers: Vec<JwtHeader>,
        from_params: Vec<String>,
        from_cookies: Vec<String>,
        output_payload_to_header: String,
        forward_original_token: bool,
        output_claim_to_headers: Vec<ClaimToHeader>,
        timeout: Duration,
        space_delimited_claims: Vec<String>,
        presence: JwtPresence,
    }

    /// A header that carries a token.
    pub struct JwtHeader {
        name: String,
        prefix: String,
    }

    /// Copies a claim into a request header.
    pub struct ClaimToHeader {
        header: String,
        claim: String,
    }
}

api_enum! {
    /// What an AuthorizationPolicy does when it matches.
    pub enum AuthorizationAction { Allow = "ALLOW", Deny = "DENY", Audit = "AUDIT", Custom = "CUSTOM" }

    /// Peer authentication mode.
    pub enum MtlsMode { Unset = "UNSET", Disable = "DISABLE", Permissive = "PERMISSIVE", Strict = "STRICT" }

    /// Whether a JWT must be present.
    pub enum JwtPresence { Unspecified = "UNSPECIFIED", Optional = "OPTIONAL", Required = "REQUIRED" }
}

//! TLS with rustls, configured as Envoy's TLS transport sockets are: origination to upstreams
//! (`UpstreamTlsContext`: SNI, client certificate for MUTUAL, trusted CA, SAN matchers, ALPN)
//! and termination for filter chains (`DownstreamTlsContext`: certificate, client certificate
//! verification when required, ALPN). As in Envoy, an upstream context without a validation
//! context does not verify the server; with one, the chain must lead to its CA and, when SAN
//! matchers are given, the certificate must carry one of them (the host name is not checked
//! otherwise).

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, UpstreamTlsContext,
    common_tls_context, subject_alt_name_matcher::SanType,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher;
use envoy_types::pb::google::protobuf::Any;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::convert::decode_any;

const UPSTREAM: &str = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
const DOWNSTREAM: &str = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";

/// TLS origination for a cluster.
#[derive(Clone, Debug)]
pub struct UpstreamTls {
    /// The client configuration.
    pub config: Arc<rustls::ClientConfig>,
    /// The SNI to send (`None`: none).
    pub sni: Option<ServerName<'static>>,
}

/// TLS termination for a filter chain.
#[derive(Clone, Debug)]
pub struct DownstreamTls {
    /// The server configuration.
    pub config: Arc<rustls::ServerConfig>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read(source: Option<&DataSource>, what: &str) -> Result<Vec<u8>, String> {
    match source.and_then(|s| s.specifier.as_ref()) {
        Some(data_source::Specifier::Filename(f)) => {
            std::fs::read(f).map_err(|e| format!("{what} file {f:?}: {e}"))
        }
        Some(data_source::Specifier::InlineBytes(b)) => Ok(b.clone()),
        Some(data_source::Specifier::InlineString(s)) => Ok(s.as_bytes().to_vec()),
        Some(data_source::Specifier::EnvironmentVariable(v)) => std::env::var(v)
            .map(String::into_bytes)
            .map_err(|_| format!("{what}: variable {v:?} is not set")),
        None => Err(format!("{what} is missing")),
    }
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what} is not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what} holds no PEM certificate"));
    }
    Ok(certs)
}

fn private_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, String> {
    use rustls::pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("{what} is not a valid PEM private key: {e}"))
}

/// The ALPN protocols of a TLS context as Envoy reads `alpn_protocols`: the entries joined
/// with commas, then split on them, so that `["h2,http/1.1"]` (as Envoy's own edge example
/// writes it) offers both; each name 1 to 255 bytes long.
fn alpn_protocols(entries: &[String]) -> Result<Vec<Vec<u8>>, String> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    entries
        .join(",")
        .split(',')
        .map(|name| match name.len() {
            1..=255 => Ok(name.as_bytes().to_vec()),
            _ => Err(format!("alpn_protocols: invalid ALPN protocol string {name:?}")),
        })
        .collect()
}

fn check_common(c: &CommonTlsContext) -> Result<(), String> {
    let unsupported = [
        (c.tls_params.is_some(), "tls_params"),
        (
            !c.tls_certificate_sds_secret_configs.is_empty(),
            "tls_certificate_sds_secret_configs (SDS)",
        ),
        (
            c.tls_certificate_provider_instance.is_some(),
            "tls_certificate_provider_instance",
        ),
        (
            c.custom_tls_certificate_selector.is_some(),
            "custom_tls_certificate_selector",
        ),
        (c.custom_handshaker.is_some(), "custom_handshaker"),
        (c.key_log.is_some(), "key_log"),
    ];
    #[allow(deprecated)]
    let unsupported_deprecated = [
        (
            c.tls_certificate_certificate_provider.is_some(),
            "tls_certificate_certificate_provider",
        ),
        (
            c.tls_certificate_certificate_provider_instance.is_some(),
            "tls_certificate_certificate_provider_instance",
        ),
    ];
    if let Some((_, f)) = unsupported
        .iter()
        .chain(&unsupported_deprecated)
        .find(|(set, _)| *set)
    {
        return Err(format!("common_tls_context.{f} is not supported"));
    }
    Ok(())
}

fn validation(c: &CommonTlsContext) -> Result<Option<&CertificateValidationContext>, String> {
    use common_tls_context::ValidationContextType as V;
    match &c.validation_context_type {
        None => Ok(None),
        Some(V::ValidationContext(v)) => Ok(Some(v)),
        Some(_) => Err("only an inline validation_context is supported (no SDS, no combined context)".into()),
    }
}

/// What a certificate must carry: DNS names or IPs, one of which must match.
#[derive(Clone, Debug)]
struct SanRule(Vec<ServerName<'static>>);

fn compile_validation(v: &CertificateValidationContext) -> Result<(RootCertStore, SanRule), String> {
    #[allow(deprecated)]
    let unsupported = [
        (
            v.ca_certificate_provider_instance.is_some(),
            "ca_certificate_provider_instance",
        ),
        (v.watched_directory.is_some(), "watched_directory"),
        (!v.verify_certificate_spki.is_empty(), "verify_certificate_spki"),
        (!v.verify_certificate_hash.is_empty(), "verify_certificate_hash"),
        (
            !v.match_subject_alt_names.is_empty(),
            "match_subject_alt_names (use match_typed_subject_alt_names)",
        ),
        (v.crl.is_some(), "crl"),
        (v.allow_expired_certificate, "allow_expired_certificate"),
        (v.trust_chain_verification != 0, "trust_chain_verification"),
        (v.custom_validator_config.is_some(), "custom_validator_config"),
        (
            v.system_root_certs.is_some(),
            "system_root_certs (give trusted_ca)",
        ),
        (
            v.require_signed_certificate_timestamp.is_some_and(|b| b.value),
            "require_signed_certificate_timestamp",
        ),
        (v.only_verify_leaf_cert_crl, "only_verify_leaf_cert_crl"),
        (v.max_verify_depth.is_some(), "max_verify_depth"),
    ];
    if let Some((_, f)) = unsupported.iter().find(|(set, _)| *set) {
        return Err(format!("validation_context.{f} is not supported"));
    }
    let mut roots = RootCertStore::empty();
    if v.trusted_ca.is_some() {
        for cert in certificates(&read(v.trusted_ca.as_ref(), "trusted_ca")?, "trusted_ca")? {
            roots.add(cert).map_err(|e| format!("trusted_ca: {e}"))?;
        }
    } else {
        return Err("validation_context without trusted_ca".into());
    }
    let mut names = Vec::new();
    for m in &v.match_typed_subject_alt_names {
        let kind = SanType::try_from(m.san_type).unwrap_or(SanType::Unspecified);
        let exact = match m.matcher.as_ref().and_then(|s| s.match_pattern.as_ref()) {
            Some(string_matcher::MatchPattern::Exact(e))
                if !m.matcher.as_ref().is_some_and(|s| s.ignore_case) =>
            {
                e.clone()
            }
            _ => {
                return Err(
                    "match_typed_subject_alt_names: SAN matchers must be exact (case-sensitive) matches"
                        .into(),
                );
            }
        };
        let name = match kind {
            SanType::Dns | SanType::IpAddress => ServerName::try_from(exact.clone())
                .map_err(|_| format!("SAN {exact:?} is not a DNS name or IP"))?,
            other => {
                return Err(format!(
                    "SAN type {} is not supported (DNS and IP_ADDRESS are)",
                    other.as_str_name()
                ));
            }
        };
        names.push(name);
    }
    Ok((roots, SanRule(names)))
}

/// Envoy's verification for upstreams: with a validation context, the chain must lead to its
/// CA and, when SAN matchers exist, carry one of them; without one, any certificate is accepted
/// (the handshake signatures are checked either way).
#[derive(Debug)]
struct EnvoyServerVerifier {
    /// CA and SAN rule; `None` when the context has no validation context.
    validation: Option<(Arc<RootCertStore>, SanRule)>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

fn invalid(e: webpki::Error) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(Arc::new(e))))
}

impl ServerCertVerifier for EnvoyServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some((roots, sans)) = &self.validation else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(invalid)?;
        cert.verify_for_usage(
            self.provider.signature_verification_algorithms.all,
            &roots.roots,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(invalid)?;
        if !sans.0.is_empty()
            && !sans
                .0
                .iter()
                .any(|n| cert.verify_is_valid_for_subject_name(n).is_ok())
        {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn identity(
    c: &CommonTlsContext,
) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, String> {
    match c.tls_certificates.as_slice() {
        [] => Ok(None),
        [t] => {
            if t.pkcs12.is_some()
                || t.private_key_provider.is_some()
                || t.password.is_some()
                || t.watched_directory.is_some()
                || t.ocsp_staple.is_some()
                || !t.signed_certificate_timestamp.is_empty()
                || t.tls_params.is_some()
            {
                return Err("tls_certificates: only certificate_chain and private_key are supported".into());
            }
            let chain = certificates(
                &read(t.certificate_chain.as_ref(), "certificate_chain")?,
                "certificate_chain",
            )?;
            let key = private_key(&read(t.private_key.as_ref(), "private_key")?, "private_key")?;
            Ok(Some((chain, key)))
        }
        _ => Err("more than one tls_certificate is not supported".into()),
    }
}

/// Compiles a cluster's `envoy.transport_sockets.tls` config.
pub fn upstream(any: &Any) -> Result<UpstreamTls, String> {
    let ctx: UpstreamTlsContext = decode_any(any, UPSTREAM, "transport_socket")?;
    #[allow(deprecated)] // enforce_rsa_key_usage
    let unsupported = [
        (ctx.auto_host_sni, "auto_host_sni"),
        (ctx.auto_sni_san_validation, "auto_sni_san_validation"),
        (ctx.allow_renegotiation, "allow_renegotiation"),
        (ctx.max_session_keys.is_some(), "max_session_keys"),
        (ctx.enforce_rsa_key_usage.is_some(), "enforce_rsa_key_usage"),
    ];
    if let Some((_, f)) = unsupported.iter().find(|(set, _)| *set) {
        return Err(format!("UpstreamTlsContext.{f} is not supported"));
    }
    let common = ctx.common_tls_context.unwrap_or_default();
    check_common(&common)?;
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let verifier = EnvoyServerVerifier {
        validation: validation(&common)?
            .map(compile_validation)
            .transpose()?
            .map(|(roots, sans)| (Arc::new(roots), sans)),
        provider: provider.clone(),
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match identity(&common)? {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("client certificate: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn_protocols(&common.alpn_protocols)?;
    let sni = (!ctx.sni.is_empty())
        .then(|| {
            ServerName::try_from(ctx.sni.clone())
                .map_err(|_| format!("sni {:?} is not a valid server name", ctx.sni))
        })
        .transpose()?;
    Ok(UpstreamTls {
        config: Arc::new(config),
        sni,
    })
}

/// Compiles a filter chain's `envoy.transport_sockets.tls` config.
pub fn downstream(any: &Any) -> Result<DownstreamTls, String> {
    let ctx: DownstreamTlsContext = decode_any(any, DOWNSTREAM, "transport_socket")?;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::downstream_tls_context::SessionTicketKeysType as Keys;
    let unsupported = [
        (ctx.require_sni.is_some_and(|b| b.value), "require_sni"),
        (ctx.ocsp_staple_policy != 0, "ocsp_staple_policy"),
        (
            matches!(ctx.session_ticket_keys_type, Some(Keys::SessionTicketKeys(_))),
            "session_ticket_keys",
        ),
        (
            matches!(
                ctx.session_ticket_keys_type,
                Some(Keys::SessionTicketKeysSdsSecretConfig(_))
            ),
            "session_ticket_keys_sds_secret_config",
        ),
        (
            matches!(
                ctx.session_ticket_keys_type,
                Some(Keys::DisableStatelessSessionResumption(_))
            ),
            "disable_stateless_session_resumption",
        ),
        (ctx.session_timeout.is_some(), "session_timeout"),
        (
            ctx.disable_stateful_session_resumption,
            "disable_stateful_session_resumption",
        ),
        (
            ctx.full_scan_certs_on_sni_mismatch.is_some(),
            "full_scan_certs_on_sni_mismatch",
        ),
        (ctx.prefer_client_ciphers, "prefer_client_ciphers"),
    ];
    if let Some((_, f)) = unsupported.iter().find(|(set, _)| *set) {
        return Err(format!("DownstreamTlsContext.{f} is not supported"));
    }
    let common = ctx.common_tls_context.unwrap_or_default();
    check_common(&common)?;
    let (chain, key) = identity(&common)?.ok_or("a downstream TLS context needs a certificate")?;
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let require = ctx.require_client_certificate.as_ref().is_some_and(|b| b.value);
    let builder = match validation(&common)? {
        Some(v) => {
            let (roots, sans) = compile_validation(v)?;
            if !sans.0.is_empty() {
                return Err(
                    "validation_context.match_typed_subject_alt_names on client certificates is not supported"
                        .into(),
                );
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            // The certificate request names the trusted CAs unless told not to.
            let verifier = if v.suppress_client_ca_list {
                verifier.clear_root_hint_subjects()
            } else {
                verifier
            };
            let verifier = if require {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("client verification: {e}"))?,
            )
        }
        None if require => return Err("require_client_certificate needs a validation_context".into()),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("certificate: {e}"))?;
    config.alpn_protocols = alpn_protocols(&common.alpn_protocols)?;
    Ok(DownstreamTls {
        config: Arc::new(config),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::TlsCertificate;
    use prost::Message;
    use rustls::client::ResolvesClientCert;
    use rustls::sign::CertifiedKey;
    use std::sync::Mutex;

    fn inline(text: String) -> Option<DataSource> {
        Some(DataSource {
            specifier: Some(data_source::Specifier::InlineString(text)),
            ..Default::default()
        })
    }

    /// Remembers the CA names a server's certificate request offered, and sends no certificate.
    #[derive(Debug, Default)]
    struct OfferedCas(Mutex<Option<usize>>);

    impl ResolvesClientCert for OfferedCas {
        fn resolve(&self, hints: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
            *self.0.lock().unwrap() = Some(hints.len());
            None
        }

        fn has_certs(&self) -> bool {
            true
        }
    }

    /// The number of CA names a downstream TLS context that validates client certificates
    /// (optional ones) offers in its certificate request.
    fn cas_offered(suppress_client_ca_list: bool) -> usize {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "client ca");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["server.test".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let context = DownstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                tls_certificates: vec![TlsCertificate {
                    certificate_chain: inline(cert.pem()),
                    private_key: inline(key.serialize_pem()),
                    ..Default::default()
                }],
                validation_context_type: Some(common_tls_context::ValidationContextType::ValidationContext(
                    CertificateValidationContext {
                        trusted_ca: inline(ca.pem()),
                        suppress_client_ca_list,
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
            ..Default::default()
        };
        let server = downstream(&Any {
            type_url: format!("type.googleapis.com/{DOWNSTREAM}"),
            value: context.encode_to_vec(),
        })
        .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let offered = Arc::new(OfferedCas::default());
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_cert_resolver(offered.clone());
        let mut client =
            rustls::ClientConnection::new(Arc::new(client), "server.test".try_into().unwrap()).unwrap();
        let mut server = rustls::ServerConnection::new(server.config).unwrap();
        // The handshake, in memory: each side's records handed to the other until both are done.
        while client.is_handshaking() || server.is_handshaking() {
            let mut records = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut records).unwrap();
            }
            server.read_tls(&mut records.as_slice()).unwrap();
            server.process_new_packets().unwrap();
            records.clear();
            while server.wants_write() {
                server.write_tls(&mut records).unwrap();
            }
            client.read_tls(&mut records.as_slice()).unwrap();
            client.process_new_packets().unwrap();
        }
        offered
            .0
            .lock()
            .unwrap()
            .expect("the server asked for a certificate")
    }

    #[test]
    fn the_certificate_request_names_the_trusted_cas_unless_suppressed() {
        assert_eq!(cas_offered(false), 1);
        assert_eq!(cas_offered(true), 0);
    }

    #[test]
    fn alpn_entries_are_joined_then_split_on_commas_as_envoy_reads_them() {
        let read =
            |entries: &[&str]| alpn_protocols(&entries.iter().map(|e| (*e).to_string()).collect::<Vec<_>>());
        let names = |v: Vec<Vec<u8>>| {
            v.into_iter()
                .map(|n| String::from_utf8(n).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(read(&["h2,http/1.1"]).unwrap()), ["h2", "http/1.1"]);
        assert_eq!(names(read(&["h2", "http/1.1"]).unwrap()), ["h2", "http/1.1"]);
        assert!(read(&[]).unwrap().is_empty());
        assert!(
            read(&["h2,"])
                .unwrap_err()
                .contains("invalid ALPN protocol string")
        );
        assert!(read(&[&"x".repeat(256)]).is_err());
    }
}

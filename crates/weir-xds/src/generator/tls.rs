//! TLS contexts: upstream (DestinationRule `tls`) and downstream (Gateway server `tls`), with
//! certificates from files or from a Kubernetes Secret named by `credentialName`.

use base64::Engine as _;
use envoy_types::pb::envoy::config::core::v3::{DataSource, TransportSocket, data_source, transport_socket};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SubjectAltNameMatcher,
    TlsCertificate, UpstreamTlsContext, certificate_validation_context, common_tls_context,
    subject_alt_name_matcher,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use prost::{Message, Name};
use weir_api::Resource;
use weir_api::types::OrEmpty;
use weir_api::types::networking::{ClientTlsMode, ClientTlsSettings, ServerTlsMode, ServerTlsSettings};
use weir_model::{ConfigStore, ObjectKey};

use super::util::{any, boolv};

/// Name of Envoy's TLS transport socket.
pub const TLS_SOCKET: &str = "envoy.transport_sockets.tls";

/// Where the proxy finds the system's trusted CAs when a rule verifies without its own CA
/// (Istio's `VERIFY_CERTIFICATE_AT_CLIENT` behaviour).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

fn file(path: &str) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::Filename(path.to_string())),
        ..Default::default()
    }
}

fn inline(bytes: Vec<u8>) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(bytes)),
        ..Default::default()
    }
}

/// Certificate material read from a Kubernetes Secret (`tls.crt`/`tls.key`/`ca.crt`, or the
/// generic `cert`/`key`/`cacert` keys Istio also accepts).
#[derive(Default)]
struct SecretMaterial {
    cert: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
    ca: Option<Vec<u8>>,
}

fn secret(store: &ConfigStore, namespace: &str, name: &str) -> Option<SecretMaterial> {
    // `name-cacert` names the CA part of a Secret (Istio's convention for MUTUAL).
    let (name, ca_only) = match name.strip_suffix("-cacert") {
        Some(base) => (base, true),
        None => (name, false),
    };
    let object = store.get(&ObjectKey::new("Secret", namespace, name))?;
    let Resource::Secret(data) = object.resource.as_ref() else {
        return None;
    };
    let value = |keys: &[&str]| -> Option<Vec<u8>> {
        keys.iter().find_map(|k| {
            data.string_data
                .get(*k)
                .map(|s| s.as_bytes().to_vec())
                .or_else(|| {
                    data.data
                        .get(*k)
                        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                })
        })
    };
    let ca = value(&["ca.crt", "cacert"]);
    if ca_only {
        return Some(SecretMaterial {
            ca,
            ..Default::default()
        });
    }
    Some(SecretMaterial {
        cert: value(&["tls.crt", "cert"]),
        key: value(&["tls.key", "key"]),
        ca,
    })
}

fn san_matchers(sans: &[String]) -> Vec<SubjectAltNameMatcher> {
    sans.iter()
        .map(|san| SubjectAltNameMatcher {
            san_type: if san.starts_with("spiffe://") {
                subject_alt_name_matcher::SanType::Uri
            } else {
                subject_alt_name_matcher::SanType::Dns
            } as i32,
            matcher: Some(StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact(san.clone())),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect()
}

/// A transport socket with a typed TLS context.
pub fn transport_socket<M: Message + Name>(context: &M) -> TransportSocket {
    TransportSocket {
        name: TLS_SOCKET.to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(context))),
    }
}

/// The upstream TLS context of a DestinationRule `tls` block for a cluster of `host`, or `None`
/// when the mode originates no TLS (DISABLE; ISTIO_MUTUAL needs the mesh CA, which Weir does not
/// run yet). `namespace` is where `credentialName` Secrets are looked up (the proxy's).
pub fn upstream(
    store: &ConfigStore,
    namespace: &str,
    tls: &ClientTlsSettings,
    host: &str,
    service_sans: &[String],
) -> Option<UpstreamTlsContext> {
    let mode = tls.mode.unwrap_or_default();
    if !matches!(mode, ClientTlsMode::Simple | ClientTlsMode::Mutual) {
        return None;
    }
    let mut common = CommonTlsContext::default();
    let credential = tls
        .credential_name
        .as_deref()
        .filter(|c| !c.is_empty())
        .and_then(|c| secret(store, namespace, c));
    let mut ca = tls.ca_certificates.as_deref().filter(|c| !c.is_empty()).map(file);
    if let Some(material) = credential {
        if mode == ClientTlsMode::Mutual
            && let (Some(cert), Some(key)) = (material.cert, material.key)
        {
            common.tls_certificates.push(TlsCertificate {
                certificate_chain: Some(inline(cert)),
                private_key: Some(inline(key)),
                ..Default::default()
            });
        }
        if let Some(c) = material.ca {
            ca = Some(inline(c));
        }
    } else if mode == ClientTlsMode::Mutual
        && let (Some(cert), Some(key)) = (
            tls.client_certificate.as_deref().filter(|c| !c.is_empty()),
            tls.private_key.as_deref().filter(|c| !c.is_empty()),
        )
    {
        common.tls_certificates.push(TlsCertificate {
            certificate_chain: Some(file(cert)),
            private_key: Some(file(key)),
            ..Default::default()
        });
    }
    let sni = tls
        .sni
        .clone()
        .filter(|s| !s.is_empty())
        .or_else(|| (!host.starts_with('*')).then(|| host.to_string()))
        .unwrap_or_default();
    let insecure = tls.insecure_skip_verify.unwrap_or(false);
    if !insecure {
        let mut sans: Vec<String> = tls.subject_alt_names.or_empty().to_vec();
        if sans.is_empty() {
            sans = service_sans.to_vec();
        }
        if sans.is_empty() && !sni.is_empty() {
            sans.push(sni.clone());
        }
        common.validation_context_type = Some(common_tls_context::ValidationContextType::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(ca.unwrap_or_else(|| file(SYSTEM_CA_BUNDLE))),
                match_typed_subject_alt_names: san_matchers(&sans),
                crl: tls.ca_crl.as_deref().filter(|c| !c.is_empty()).map(file),
                ..Default::default()
            },
        ));
    } else {
        common.validation_context_type = Some(common_tls_context::ValidationContextType::ValidationContext(
            CertificateValidationContext {
                trust_chain_verification:
                    certificate_validation_context::TrustChainVerification::AcceptUntrusted as i32,
                ..Default::default()
            },
        ));
    }
    Some(UpstreamTlsContext {
        common_tls_context: Some(common),
        sni,
        ..Default::default()
    })
}

/// Why a Gateway server's TLS cannot be set up.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ServerTlsError {
    /// `credentialName` names a Secret that is not in the configuration.
    #[error("credentialName {0:?}: no such Secret with tls.crt and tls.key in the gateway's namespace")]
    MissingSecret(String),
    /// Neither files nor a credential were given.
    #[error("no serverCertificate/privateKey and no credentialName")]
    NoCertificate,
}

/// The downstream TLS context of a Gateway server (SIMPLE or MUTUAL).
pub fn downstream(
    store: &ConfigStore,
    namespace: &str,
    tls: &ServerTlsSettings,
    alpn: &[&str],
) -> Result<DownstreamTlsContext, ServerTlsError> {
    let mode = tls.mode.unwrap_or_default();
    let mut common = CommonTlsContext {
        alpn_protocols: alpn.iter().map(|s| (*s).to_string()).collect(),
        ..Default::default()
    };
    let credential = tls
        .credential_name
        .as_deref()
        .or_else(|| tls.credential_names.or_empty().first().map(String::as_str))
        .filter(|c| !c.is_empty());
    let mut ca = tls.ca_certificates.as_deref().filter(|c| !c.is_empty()).map(file);
    if let Some(name) = credential {
        let material = secret(store, namespace, name)
            .filter(|m| m.cert.is_some() && m.key.is_some())
            .ok_or_else(|| ServerTlsError::MissingSecret(name.to_string()))?;
        if let (Some(cert), Some(key)) = (material.cert, material.key) {
            common.tls_certificates.push(TlsCertificate {
                certificate_chain: Some(inline(cert)),
                private_key: Some(inline(key)),
                ..Default::default()
            });
        }
        let ca_secret = tls
            .ca_cert_credential_name
            .as_deref()
            .filter(|c| !c.is_empty())
            .and_then(|c| secret(store, namespace, c))
            .and_then(|m| m.ca);
        if let Some(c) = ca_secret.or(material.ca) {
            ca = Some(inline(c));
        }
    } else {
        match (
            tls.server_certificate.as_deref().filter(|c| !c.is_empty()),
            tls.private_key.as_deref().filter(|c| !c.is_empty()),
        ) {
            (Some(cert), Some(key)) => common.tls_certificates.push(TlsCertificate {
                certificate_chain: Some(file(cert)),
                private_key: Some(file(key)),
                ..Default::default()
            }),
            _ => return Err(ServerTlsError::NoCertificate),
        }
    }
    let mutual = matches!(mode, ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual);
    if mutual {
        common.validation_context_type = Some(common_tls_context::ValidationContextType::ValidationContext(
            CertificateValidationContext {
                trusted_ca: ca,
                match_typed_subject_alt_names: san_matchers(tls.subject_alt_names.or_empty()),
                crl: tls.ca_crl.as_deref().filter(|c| !c.is_empty()).map(file),
                ..Default::default()
            },
        ));
    }
    Ok(DownstreamTlsContext {
        common_tls_context: Some(common),
        require_client_certificate: Some(boolv(mode == ServerTlsMode::Mutual)),
        ..Default::default()
    })
}

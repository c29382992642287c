//! Istio's MeshConfig: the mesh-wide defaults (the `mesh` key of the `istio` ConfigMap).
//!
//! Fields Weir interprets are typed; the large nested blocks that belong to later features
//! (`defaultConfig`, `extensionProviders`, `ca`, …) are kept as JSON so that a real Istio mesh
//! config is accepted and round-trips. Unknown top-level fields are errors, as in istiod.

use super::networking::{HttpRetry, LocalityLbSetting, TcpKeepalive};
use super::{Duration, Json, api_enum, api_struct};

api_struct! {
    /// The mesh-wide configuration.
    pub struct MeshConfig {
        proxy_listen_port: i32,
        proxy_inbound_listen_port: i32,
        proxy_http_port: i32,
        connect_timeout: Duration,
        protocol_detection_timeout: Duration,
        tcp_keepalive: TcpKeepalive,
        ingress_class: String,
        ingress_service: String,
        ingress_controller_mode: IngressControllerMode,
        ingress_selector: String,
        enable_tracing: bool,
        access_log_file: String,
        access_log_format: String,
        access_log_encoding: AccessLogEncoding,
        enable_envoy_access_log_service: bool,
        disable_envoy_listener_log: bool,
        default_config: Json,
        outbound_traffic_policy: MeshOutboundTrafficPolicy,
        inbound_traffic_policy: MeshInboundTrafficPolicy,
        config_sources: Vec<Json>,
        enable_auto_mtls: bool,
        trust_domain: String,
        trust_domain_aliases: Vec<String>,
        ca_certificates: Vec<Json>,
        default_service_export_to: Vec<String>,
        default_virtual_service_export_to: Vec<String>,
        default_destination_rule_export_to: Vec<String>,
        root_namespace: String,
        locality_lb_setting: LocalityLbSetting,
        dns_refresh_rate: Duration,
        h2_upgrade_policy: String,
        inbound_cluster_stat_name: String,
        outbound_cluster_stat_name: String,
        certificates: Vec<Json>,
        thrift_config: Json,
        service_settings: Vec<Json>,
        enable_prometheus_merge: bool,
        verify_certificate_at_client: bool,
        ca: Json,
        extension_providers: Vec<Json>,
        default_providers: Json,
        discovery_selectors: Vec<Json>,
        path_normalization: ProxyPathNormalization,
        default_http_retry_policy: HttpRetry,
        mesh_mtls: Json,
        tls_defaults: Json,
        service_scope_configs: Vec<Json>,
        mesh_networks: Json,
    }

    /// Mesh-wide outbound policy.
    pub struct MeshOutboundTrafficPolicy {
        mode: super::networking::OutboundMode,
    }

    /// Mesh-wide inbound policy.
    pub struct MeshInboundTrafficPolicy {
        mode: InboundMode,
    }

    /// How proxies normalise request paths before routing and authorisation.
    pub struct ProxyPathNormalization {
        normalization: PathNormalizationType,
    }
}

api_enum! {
    /// Kubernetes Ingress handling.
    pub enum IngressControllerMode { Unspecified = "UNSPECIFIED", Off = "OFF", Default = "DEFAULT", Strict = "STRICT" }

    /// Access log encoding.
    pub enum AccessLogEncoding { Text = "TEXT", Json = "JSON" }

    /// Where inbound traffic is sent.
    pub enum InboundMode { Passthrough = "PASSTHROUGH", Localhost = "LOCALHOST" }

    /// A path normalisation level (`DEFAULT` is `BASE`).
    pub enum PathNormalizationType {
        Default = "DEFAULT",
        None = "NONE",
        Base = "BASE",
        MergeSlashes = "MERGE_SLASHES",
        DecodeAndMergeSlashes = "DECODE_AND_MERGE_SLASHES",
    }
}

/// MeshConfig with Istio's defaults applied (`pkg/config/mesh/mesh.go: DefaultMeshConfig`).
#[derive(Clone, Debug, PartialEq)]
pub struct MeshDefaults {
    /// Outbound policy (ALLOW_ANY unless set).
    pub outbound_traffic_policy: super::networking::OutboundMode,
    /// Root namespace (`istio-system`).
    pub root_namespace: String,
    /// Trust domain (`cluster.local`).
    pub trust_domain: String,
    /// Upstream connect timeout (10s).
    pub connect_timeout: std::time::Duration,
    /// DNS refresh rate for DNS clusters (60s).
    pub dns_refresh_rate: std::time::Duration,
    /// Default exportTo of services (`*`).
    pub default_service_export_to: Vec<String>,
    /// Default exportTo of VirtualServices (`*`).
    pub default_virtual_service_export_to: Vec<String>,
    /// Default exportTo of DestinationRules (`*`).
    pub default_destination_rule_export_to: Vec<String>,
    /// The retry policy of routes without one: 2 attempts on Istio's default conditions
    /// (`retryOn` unset: `connect-failure,refused-stream,unavailable,cancelled` and HTTP 503).
    pub default_http_retry_policy: HttpRetry,
    /// Proxy outbound capture port (15001).
    pub proxy_listen_port: u16,
    /// Proxy inbound capture port (15006).
    pub proxy_inbound_listen_port: u16,
    /// How proxies normalise request paths (`BASE` unless set: RFC 3986 normalisation).
    pub path_normalization: PathNormalizationType,
}

impl MeshConfig {
    /// This config with Istio's defaults filled in for every unset field Weir uses.
    pub fn effective(&self) -> MeshDefaults {
        let export = |v: &Option<Vec<String>>| {
            v.clone()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| vec!["*".into()])
        };
        let port = |v: Option<i32>, d: u16| {
            v.and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0)
                .unwrap_or(d)
        };
        MeshDefaults {
            outbound_traffic_policy: self
                .outbound_traffic_policy
                .as_ref()
                .map_or(super::networking::OutboundMode::AllowAny, |p| {
                    p.mode.unwrap_or_default()
                }),
            root_namespace: self
                .root_namespace
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "istio-system".into()),
            trust_domain: self
                .trust_domain
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "cluster.local".into()),
            connect_timeout: self
                .connect_timeout
                .as_ref()
                .and_then(Duration::get)
                .unwrap_or(std::time::Duration::from_secs(10)),
            dns_refresh_rate: self
                .dns_refresh_rate
                .as_ref()
                .and_then(Duration::get)
                .unwrap_or(std::time::Duration::from_secs(60)),
            default_service_export_to: export(&self.default_service_export_to),
            default_virtual_service_export_to: export(&self.default_virtual_service_export_to),
            default_destination_rule_export_to: export(&self.default_destination_rule_export_to),
            default_http_retry_policy: self
                .default_http_retry_policy
                .clone()
                .unwrap_or_else(|| HttpRetry {
                    attempts: Some(2),
                    ..HttpRetry::default()
                }),
            proxy_listen_port: port(self.proxy_listen_port, 15001),
            proxy_inbound_listen_port: port(self.proxy_inbound_listen_port, 15006),
            path_normalization: match self.path_normalization.as_ref().and_then(|p| p.normalization) {
                None | Some(PathNormalizationType::Default) => PathNormalizationType::Base,
                Some(level) => level,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::networking::OutboundMode;

    #[test]
    fn defaults_follow_istio() {
        let d = MeshConfig::default().effective();
        assert_eq!(d.outbound_traffic_policy, OutboundMode::AllowAny);
        assert_eq!(d.root_namespace, "istio-system");
        assert_eq!(d.trust_domain, "cluster.local");
        assert_eq!(d.connect_timeout, std::time::Duration::from_secs(10));
        assert_eq!(d.default_service_export_to, vec!["*"]);
        assert_eq!(d.default_http_retry_policy.attempts, Some(2));
        assert_eq!(d.path_normalization, PathNormalizationType::Base);
    }

    #[test]
    fn set_values_win() {
        let m = MeshConfig {
            outbound_traffic_policy: Some(MeshOutboundTrafficPolicy {
                mode: Some(OutboundMode::RegistryOnly),
            }),
            root_namespace: Some("mesh-root".into()),
            connect_timeout: Some(Duration::new("2s")),
            ..MeshConfig::default()
        };
        let d = m.effective();
        assert_eq!(d.outbound_traffic_policy, OutboundMode::RegistryOnly);
        assert_eq!(d.root_namespace, "mesh-root");
        assert_eq!(d.connect_timeout, std::time::Duration::from_secs(2));
    }
}

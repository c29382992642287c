//! Envoy v3 bootstraps: `static_resources` (listeners and clusters) compiled like xDS
//! resources, `dynamic_resources` pointing at an ADS server through a static cluster, the admin
//! address and the node. What a bootstrap asks for that Weir does not do is an error naming it,
//! so the same file drives Weir and Envoy with the same meaning.

use std::net::SocketAddr;

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use envoy_types::pb::envoy::config::core::v3::{Node, config_source, grpc_service};
use prost::Message;

use crate::cluster::{ClusterConfig, Discovery};
use crate::convert::{Target, socket};
use crate::listener::ListenerConfig;

/// What a bootstrap configures.
#[derive(Debug)]
pub struct BootstrapConfig {
    /// The node identity.
    pub node: Node,
    /// The admin address.
    pub admin: Option<SocketAddr>,
    /// How the admin endpoint's connections stand under the global connection limit: counted,
    /// and refused over it unless `ignore_global_conn_limit`.
    pub admin_connections: crate::admin::AdminConnections,
    /// Static listeners.
    pub listeners: Vec<ListenerConfig>,
    /// Static clusters.
    pub clusters: Vec<ClusterConfig>,
    /// The ADS server (`http://host:port`), when `dynamic_resources.ads_config` is set.
    pub ads: Option<String>,
    /// The overload manager, when `overload_manager` is set.
    pub overload: Option<crate::overload::OverloadConfig>,
    /// What `layered_runtime` sets that Weir honours.
    pub runtime: crate::runtime::RuntimeConfig,
}

/// Refuses a bootstrap (encoded from Envoy JSON or YAML) with fields the Envoy API knows but this
/// build's Envoy types do not: decoding would drop them without a word.
pub fn check_known(encoded: &[u8]) -> Result<(), String> {
    let b = Bootstrap::decode(encoded).map_err(|e| format!("bootstrap does not decode: {e}"))?;
    let lost =
        weir_xds::json::fields_lost("envoy.config.bootstrap.v3.Bootstrap", encoded, &b.encode_to_vec())
            .map_err(|e| e.to_string())?;
    if lost.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "bootstrap: {} not supported (newer than this build's Envoy API)",
            lost.join(", ")
        ))
    }
}

/// Reads an encoded Bootstrap.
pub fn from_encoded(bytes: &[u8]) -> Result<BootstrapConfig, String> {
    let b = Bootstrap::decode(bytes).map_err(|e| format!("bootstrap does not decode: {e}"))?;
    compile(&b)
}

/// Compiles a bootstrap.
#[allow(deprecated)]
pub fn compile(b: &Bootstrap) -> Result<BootstrapConfig, String> {
    let unsupported = [
        (
            b.cluster_manager
                .as_ref()
                .is_some_and(|c| c.outlier_detection.is_some()),
            "cluster_manager.outlier_detection",
        ),
        (
            b.cluster_manager
                .as_ref()
                .is_some_and(|c| c.upstream_bind_config.is_some()),
            "cluster_manager.upstream_bind_config",
        ),
        (
            b.cluster_manager
                .as_ref()
                .is_some_and(|c| c.load_stats_config.is_some()),
            "cluster_manager.load_stats_config",
        ),
        (b.hds_config.is_some(), "hds_config"),
        (!b.stats_sinks.is_empty(), "stats_sinks"),
        (b.tracing.is_some(), "tracing"),
        (!b.bootstrap_extensions.is_empty(), "bootstrap_extensions"),
        (!b.config_sources.is_empty(), "config_sources"),
        (b.default_config_source.is_some(), "default_config_source"),
        (!b.flags_path.is_empty(), "flags_path"),
        (b.watchdog.is_some(), "watchdog"),
        (b.watchdogs.is_some(), "watchdogs"),
        (b.stats_config.is_some(), "stats_config"),
        (b.enable_dispatcher_stats, "enable_dispatcher_stats"),
        (b.enable_worker_cpu_affinity, "enable_worker_cpu_affinity"),
        (!b.header_prefix.is_empty(), "header_prefix"),
        (
            b.stats_server_version_override.is_some(),
            "stats_server_version_override",
        ),
        (b.use_tcp_for_dns_lookups, "use_tcp_for_dns_lookups"),
        (!b.default_socket_interface.is_empty(), "default_socket_interface"),
        (
            !b.certificate_provider_instances.is_empty(),
            "certificate_provider_instances",
        ),
        (!b.node_context_params.is_empty(), "node_context_params"),
        (!b.fatal_actions.is_empty(), "fatal_actions"),
        (b.dns_resolution_config.is_some(), "dns_resolution_config"),
        (b.typed_dns_resolver_config.is_some(), "typed_dns_resolver_config"),
        (!b.perf_tracing_file_path.is_empty(), "perf_tracing_file_path"),
        (b.default_regex_engine.is_some(), "default_regex_engine"),
        (b.xds_delegate_extension.is_some(), "xds_delegate_extension"),
        (
            b.xds_config_tracker_extension.is_some(),
            "xds_config_tracker_extension",
        ),
        (b.listener_manager.is_some(), "listener_manager"),
        (b.application_log_config.is_some(), "application_log_config"),
        (b.deferred_stat_options.is_some(), "deferred_stat_options"),
        (
            b.grpc_async_client_manager_config.is_some(),
            "grpc_async_client_manager_config",
        ),
        (b.memory_allocator_manager.is_some(), "memory_allocator_manager"),
        (b.stats_eviction.is_some(), "stats_eviction_interval"),
        (
            b.admin
                .as_ref()
                .is_some_and(|a| !a.access_log_path.is_empty() || !a.access_log.is_empty()),
            "admin access_log_path and access_log",
        ),
        (
            b.admin.as_ref().is_some_and(|a| !a.socket_options.is_empty()),
            "admin.socket_options",
        ),
        (
            b.admin.as_ref().is_some_and(|a| !a.allow_paths.is_empty()),
            "admin.allow_paths",
        ),
    ];
    if let Some((_, field)) = unsupported.iter().find(|(set, _)| *set) {
        return Err(format!("bootstrap: {field} is not supported"));
    }
    let overload = b
        .overload_manager
        .as_ref()
        .map(crate::overload::OverloadConfig::compile)
        .transpose()
        .map_err(|e| format!("bootstrap: overload_manager: {e}"))?;
    let runtime = b
        .layered_runtime
        .as_ref()
        .map(crate::runtime::RuntimeConfig::compile)
        .transpose()
        .map_err(|e| format!("bootstrap: {e}"))?
        .unwrap_or_default();
    if runtime.global_max_connections.is_some()
        && overload
            .as_ref()
            .is_some_and(|o| o.max_downstream_connections.is_some())
    {
        return Err(format!(
            "bootstrap: the global connection limit is set twice, by the overload manager's downstream connections monitor and by the runtime key {}; keep one",
            crate::runtime::GLOBAL_MAX_CONNECTIONS
        ));
    }
    let admin = b
        .admin
        .as_ref()
        .and_then(|a| a.address.as_ref())
        .map(|a| socket(a).map_err(|e| format!("bootstrap admin.address: {e}")))
        .transpose()?;
    let mut listeners = Vec::new();
    let mut clusters = Vec::new();
    if let Some(s) = &b.static_resources {
        if !s.secrets.is_empty() {
            return Err("bootstrap: static_resources.secrets are not supported (inline certificates in the TLS contexts)".into());
        }
        for l in &s.listeners {
            listeners.push(ListenerConfig::compile(l).map_err(|e| format!("bootstrap: {e}"))?);
        }
        for c in &s.clusters {
            clusters.push(ClusterConfig::compile(c).map_err(|e| format!("bootstrap: {e}"))?);
        }
    }
    let mut ads = None;
    if let Some(d) = &b.dynamic_resources {
        let uses_ads = |c: &Option<envoy_types::pb::envoy::config::core::v3::ConfigSource>| {
            c.as_ref().is_none_or(|c| {
                matches!(
                    c.config_source_specifier,
                    Some(config_source::ConfigSourceSpecifier::Ads(_))
                )
            })
        };
        if !uses_ads(&d.lds_config) || !uses_ads(&d.cds_config) {
            return Err("bootstrap: lds_config and cds_config must use ads (only ADS is supported)".into());
        }
        if let Some(a) = &d.ads_config {
            if a.api_type != 5 && a.api_type != 2 {
                // DELTA_GRPC (5) or GRPC (2); Weir speaks delta either way.
                return Err(format!(
                    "bootstrap: ads_config.api_type {} is not supported (use GRPC or DELTA_GRPC)",
                    a.api_type
                ));
            }
            let service = a
                .grpc_services
                .first()
                .ok_or("bootstrap: ads_config has no grpc_services")?;
            let cluster_name = match &service.target_specifier {
                Some(grpc_service::TargetSpecifier::EnvoyGrpc(e)) => e.cluster_name.clone(),
                _ => return Err("bootstrap: ads_config must use envoy_grpc with a static cluster".into()),
            };
            let cluster = clusters.iter().find(|c| c.name == cluster_name).ok_or_else(|| {
                format!("bootstrap: ads_config names cluster {cluster_name:?}, which is not a static cluster")
            })?;
            let target = match &cluster.discovery {
                Discovery::Static(set) | Discovery::Dns { names: set, .. } => {
                    set.iter().next().map(|(_, _, e)| e.target.clone())
                }
                _ => None,
            }
            .ok_or_else(|| {
                format!("bootstrap: cluster {cluster_name:?} has no endpoint for the ADS server")
            })?;
            ads = Some(match target {
                Target::Socket(a) => format!("http://{a}"),
                Target::Name(h, p) => format!("http://{h}:{p}"),
                Target::Unix(p) => {
                    return Err(format!(
                        "bootstrap: the ADS server at unix:{} is not supported",
                        p.display()
                    ));
                }
            });
        }
    }
    Ok(BootstrapConfig {
        node: b.node.clone().unwrap_or_default(),
        admin,
        admin_connections: match &b.admin {
            None => crate::admin::AdminConnections::Uncounted,
            Some(a) if a.ignore_global_conn_limit => crate::admin::AdminConnections::Counted,
            Some(_) => crate::admin::AdminConnections::Limited,
        },
        listeners,
        clusters,
        ads,
        overload,
        runtime,
    })
}

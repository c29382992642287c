//! `networking.istio.io` kinds (v1, v1beta1, v1alpha3 share these messages).

use std::collections::BTreeMap;

pub use super::Percent;
use super::{
    Duration, Json, Labels, MatchLabelsSelector, PolicyTargetReference, PortSelector, StringMatch,
    WorkloadSelector, api_enum, api_struct,
};

// ---------------------------------------------------------------------------------------------
// ServiceEntry

api_enum! {
    /// Whether a ServiceEntry's service is part of the mesh.
    pub enum Location { MeshExternal = "MESH_EXTERNAL", MeshInternal = "MESH_INTERNAL" }

    /// How a ServiceEntry's endpoints are found.
    pub enum Resolution {
        None = "NONE", Static = "STATIC", Dns = "DNS", DnsRoundRobin = "DNS_ROUND_ROBIN", DynamicDns = "DYNAMIC_DNS",
    }
}

api_struct! {
    /// `ServiceEntry.spec`: adds a service to the mesh's registry.
    pub struct ServiceEntry {
        hosts: Vec<String>,
        addresses: Vec<String>,
        ports: Vec<ServicePort>,
        location: Location,
        resolution: Resolution,
        endpoints: Vec<WorkloadEntry>,
        workload_selector: WorkloadSelector,
        export_to: Vec<String>,
        subject_alt_names: Vec<String>,
    }

    /// A port of a ServiceEntry.
    pub struct ServicePort {
        number: u32,
        protocol: String,
        name: String,
        target_port: u32,
    }
}

impl ServiceEntry {
    /// The resolution (proto default NONE).
    pub fn resolution(&self) -> Resolution {
        self.resolution.unwrap_or_default()
    }

    /// The location (proto default MESH_EXTERNAL).
    pub fn location(&self) -> Location {
        self.location.unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------
// WorkloadEntry / WorkloadGroup

api_struct! {
    /// `WorkloadEntry.spec` (also the type of `ServiceEntry.endpoints[]`).
    pub struct WorkloadEntry {
        address: String,
        ports: BTreeMap<String, u32>,
        labels: Labels,
        network: String,
        locality: String,
        weight: u32,
        service_account: String,
    }

    /// `WorkloadGroup.spec`: a template for WorkloadEntries.
    pub struct WorkloadGroup {
        metadata: WorkloadGroupMetadata,
        template: WorkloadEntry,
        probe: ReadinessProbe,
    }

    /// Labels and annotations copied onto generated WorkloadEntries.
    pub struct WorkloadGroupMetadata {
        labels: Labels,
        annotations: Labels,
    }

    /// A readiness probe for VM workloads.
    pub struct ReadinessProbe {
        initial_delay_seconds: i32,
        timeout_seconds: i32,
        period_seconds: i32,
        success_threshold: i32,
        failure_threshold: i32,
        http_get: HttpHealthCheckConfig,
        tcp_socket: TcpHealthCheckConfig,
        exec: ExecHealthCheckConfig,
        grpc: GrpcHealthCheckConfig,
    }

    /// An HTTP GET probe.
    pub struct HttpHealthCheckConfig {
        path: String,
        port: u32,
        host: String,
        scheme: String,
        http_headers: Vec<HttpHeader>,
    }

    /// A header sent by an HTTP probe.
    pub struct HttpHeader {
        name: String,
        value: String,
    }

    /// A TCP connect probe.
    pub struct TcpHealthCheckConfig {
        host: String,
        port: u32,
    }

    /// A command probe.
    pub struct ExecHealthCheckConfig {
        command: Vec<String>,
    }

    /// A gRPC health probe.
    pub struct GrpcHealthCheckConfig {
        port: u32,
        service: String,
    }
}

// ---------------------------------------------------------------------------------------------
// VirtualService

api_struct! {
    /// `VirtualService.spec`: routing rules for a set of hosts.
    pub struct VirtualService {
        hosts: Vec<String>,
        gateways: Vec<String>,
        http: Vec<HttpRoute>,
        tls: Vec<TlsRoute>,
        tcp: Vec<TcpRoute>,
        export_to: Vec<String>,
    }

    /// Where traffic goes: a registry host, a subset and a port.
    pub struct Destination {
        host: String,
        subset: String,
        port: PortSelector,
    }

    /// An HTTP route: matches and one action.
    pub struct HttpRoute {
        name: String,
        r#match: Vec<HttpMatchRequest>,
        route: Vec<HttpRouteDestination>,
        redirect: HttpRedirect,
        direct_response: HttpDirectResponse,
        delegate: Delegate,
        rewrite: HttpRewrite,
        timeout: Duration,
        retries: HttpRetry,
        fault: HttpFaultInjection,
        mirror: Destination,
        mirrors: Vec<HttpMirrorPolicy>,
        mirror_percent: u32,
        mirror_percentage: Percent,
        cors_policy: CorsPolicy,
        headers: Headers,
    }

    /// A delegate VirtualService reference.
    pub struct Delegate {
        name: String,
        namespace: String,
    }

    /// Header manipulation for requests and responses.
    pub struct Headers {
        request: HeaderOperations,
        response: HeaderOperations,
    }

    /// Set, add and remove operations on headers.
    pub struct HeaderOperations {
        set: BTreeMap<String, String>,
        add: BTreeMap<String, String>,
        remove: Vec<String>,
    }

    /// Conditions on an HTTP request; all must hold.
    pub struct HttpMatchRequest {
        name: String,
        uri: StringMatch,
        scheme: StringMatch,
        method: StringMatch,
        authority: StringMatch,
        headers: BTreeMap<String, StringMatch>,
        port: u32,
        source_labels: Labels,
        gateways: Vec<String>,
        query_params: BTreeMap<String, StringMatch>,
        ignore_uri_case: bool,
        without_headers: BTreeMap<String, StringMatch>,
        source_namespace: String,
        stat_prefix: String,
    }

    /// A weighted HTTP destination.
    pub struct HttpRouteDestination {
        destination: Destination,
        weight: i32,
        headers: Headers,
    }

    /// A weighted L4 destination.
    pub struct RouteDestination {
        destination: Destination,
        weight: i32,
    }

    /// An L4 match.
    pub struct L4MatchAttributes {
        destination_subnets: Vec<String>,
        port: u32,
        source_subnet: String,
        source_labels: Labels,
        gateways: Vec<String>,
        source_namespace: String,
    }

    /// A TLS (SNI) match.
    pub struct TlsMatchAttributes {
        sni_hosts: Vec<String>,
        destination_subnets: Vec<String>,
        port: u32,
        source_labels: Labels,
        gateways: Vec<String>,
        source_namespace: String,
    }

    /// A route for non-terminated TLS.
    pub struct TlsRoute {
        r#match: Vec<TlsMatchAttributes>,
        route: Vec<RouteDestination>,
    }

    /// A route for opaque TCP.
    pub struct TcpRoute {
        r#match: Vec<L4MatchAttributes>,
        route: Vec<RouteDestination>,
    }

    /// An HTTP redirect.
    pub struct HttpRedirect {
        uri: String,
        authority: String,
        port: u32,
        derive_port: RedirectPortSelection,
        scheme: String,
        redirect_code: u32,
        prefix_rewrite: String,
    }

    /// A fixed response.
    pub struct HttpDirectResponse {
        status: u32,
        body: HttpBody,
    }

    /// A response body: a string or base64 bytes.
    pub struct HttpBody {
        string: String,
        bytes: String,
    }

    /// Path and authority rewrites.
    pub struct HttpRewrite {
        uri: String,
        authority: String,
        uri_regex_rewrite: RegexRewrite,
    }

    /// A regex rewrite of the path.
    pub struct RegexRewrite {
        r#match: String,
        rewrite: String,
    }

    /// A retry policy.
    pub struct HttpRetry {
        attempts: i32,
        per_try_timeout: Duration,
        retry_on: String,
        retry_remote_localities: bool,
        retry_ignore_previous_hosts: bool,
        backoff: Duration,
    }

    /// A CORS policy.
    pub struct CorsPolicy {
        allow_origin: Vec<String>,
        allow_origins: Vec<StringMatch>,
        allow_methods: Vec<String>,
        allow_headers: Vec<String>,
        expose_headers: Vec<String>,
        max_age: Duration,
        allow_credentials: bool,
        unmatched_preflights: UnmatchedPreflights,
    }

    /// Delay and abort faults.
    pub struct HttpFaultInjection {
        delay: FaultDelay,
        abort: FaultAbort,
    }

    /// A delay fault.
    pub struct FaultDelay {
        percent: i32,
        fixed_delay: Duration,
        exponential_delay: Duration,
        percentage: Percent,
    }

    /// An abort fault.
    pub struct FaultAbort {
        http_status: i32,
        grpc_status: String,
        http2_error: String,
        percentage: Percent,
    }

    /// A mirror destination with a percentage.
    pub struct HttpMirrorPolicy {
        destination: Destination,
        percentage: Percent,
    }
}

api_enum! {
    /// Which port a redirect derives.
    pub enum RedirectPortSelection { FromProtocolDefault = "FROM_PROTOCOL_DEFAULT", FromRequestPort = "FROM_REQUEST_PORT" }

    /// What to do with CORS preflights that match no origin.
    pub enum UnmatchedPreflights { Unspecified = "UNSPECIFIED", Forward = "FORWARD", Ignore = "IGNORE" }
}

// ---------------------------------------------------------------------------------------------
// DestinationRule

api_struct! {
    /// `DestinationRule.spec`: policies applied after routing.
    pub struct DestinationRule {
        host: String,
        traffic_policy: TrafficPolicy,
        subsets: Vec<Subset>,
        export_to: Vec<String>,
        workload_selector: MatchLabelsSelector,
    }

    /// Load balancing, connection pool, outlier detection, TLS and more.
    pub struct TrafficPolicy {
        load_balancer: LoadBalancerSettings,
        connection_pool: ConnectionPoolSettings,
        outlier_detection: OutlierDetection,
        tls: ClientTlsSettings,
        port_level_settings: Vec<PortTrafficPolicy>,
        tunnel: TunnelSettings,
        proxy_protocol: ProxyProtocol,
        retry_budget: RetryBudget,
    }

    /// A traffic policy for one port.
    pub struct PortTrafficPolicy {
        port: PortSelector,
        load_balancer: LoadBalancerSettings,
        connection_pool: ConnectionPoolSettings,
        outlier_detection: OutlierDetection,
        tls: ClientTlsSettings,
    }

    /// Tunneling of TCP over HTTP CONNECT or POST.
    pub struct TunnelSettings {
        protocol: String,
        target_host: String,
        target_port: u32,
    }

    /// The PROXY protocol version sent upstream.
    pub struct ProxyProtocol {
        version: ProxyProtocolVersion,
    }

    /// A retry budget.
    pub struct RetryBudget {
        percent: f64,
        min_retry_concurrency: u32,
        budget_interval: Duration,
    }

    /// A named set of endpoints selected by labels.
    pub struct Subset {
        name: String,
        labels: Labels,
        traffic_policy: TrafficPolicy,
    }

    /// Load-balancing settings.
    pub struct LoadBalancerSettings {
        simple: SimpleLb,
        consistent_hash: ConsistentHashLb,
        backend_utilization: BackendUtilization,
        locality_lb_setting: LocalityLbSetting,
        zone_aware_lb_setting: ZoneAwareLbSetting,
        warmup_duration_secs: Duration,
        warmup: WarmupConfiguration,
    }

    /// Weighted round robin from backend-reported utilization.
    pub struct BackendUtilization {
        error_utilization_penalty_percent: u32,
        metric_names_for_computing_utilization: Vec<String>,
        weight_expiration_period: Duration,
        weight_stabilization_period: Duration,
        weight_update_period: Duration,
    }

    /// Slow-start settings.
    pub struct WarmupConfiguration {
        duration: Duration,
        minimum_percent: f64,
        aggression: f64,
    }

    /// Consistent hashing.
    pub struct ConsistentHashLb {
        http_header_name: String,
        http_cookie: HttpCookie,
        use_source_ip: bool,
        http_query_parameter_name: String,
        ring_hash: RingHash,
        maglev: MagLev,
        minimum_ring_size: u64,
    }

    /// Ring-hash settings.
    pub struct RingHash {
        minimum_ring_size: u64,
    }

    /// Maglev settings.
    pub struct MagLev {
        table_size: u64,
    }

    /// A cookie used as hash key.
    pub struct HttpCookie {
        name: String,
        path: String,
        ttl: Duration,
        attributes: Vec<CookieAttribute>,
    }

    /// An attribute of a generated hash cookie.
    pub struct CookieAttribute {
        name: String,
        value: String,
    }

    /// Connection pool limits.
    pub struct ConnectionPoolSettings {
        tcp: TcpSettings,
        http: HttpSettings,
    }

    /// TCP connection pool settings.
    pub struct TcpSettings {
        max_connections: i32,
        connect_timeout: Duration,
        tcp_keepalive: TcpKeepalive,
        max_connection_duration: Duration,
        idle_timeout: Duration,
    }

    /// TCP keepalive probes.
    pub struct TcpKeepalive {
        probes: u32,
        time: Duration,
        interval: Duration,
    }

    /// HTTP connection pool settings.
    pub struct HttpSettings {
        http1_max_pending_requests: i32,
        http2_max_requests: i32,
        max_requests_per_connection: i32,
        max_retries: i32,
        idle_timeout: Duration,
        h2_upgrade_policy: H2UpgradePolicy,
        use_client_protocol: bool,
        max_concurrent_streams: i32,
        http2_keep_alive: Http2KeepAlive,
    }

    /// HTTP/2 PING keepalive.
    pub struct Http2KeepAlive {
        interval: Duration,
        timeout: Duration,
    }

    /// Outlier detection (passive health checking).
    pub struct OutlierDetection {
        consecutive_errors: i32,
        split_external_local_origin_errors: bool,
        consecutive_local_origin_failures: u32,
        consecutive_gateway_errors: u32,
        consecutive5xx_errors: u32,
        interval: Duration,
        base_ejection_time: Duration,
        max_ejection_percent: i32,
        min_health_percent: i32,
        outlier_detection_http_error_codes: Vec<u32>,
    }

    /// TLS settings for upstream connections.
    pub struct ClientTlsSettings {
        mode: ClientTlsMode,
        client_certificate: String,
        private_key: String,
        ca_certificates: String,
        credential_name: String,
        subject_alt_names: Vec<String>,
        sni: String,
        insecure_skip_verify: bool,
        ca_crl: String,
    }

    /// Locality-aware load balancing.
    pub struct LocalityLbSetting {
        distribute: Vec<LocalityDistribute>,
        failover: Vec<LocalityFailover>,
        failover_priority: Vec<String>,
        enabled: bool,
    }

    /// Zone-aware load balancing.
    pub struct ZoneAwareLbSetting {
        enabled: bool,
        failover: Vec<LocalityFailover>,
        failover_priority: Vec<String>,
        min_cluster_size: u64,
    }

    /// Traffic distribution from one locality to others.
    pub struct LocalityDistribute {
        from: String,
        to: BTreeMap<String, u32>,
    }

    /// Failover from one region to another.
    pub struct LocalityFailover {
        from: String,
        to: String,
    }
}

api_enum! {
    /// Standard load-balancing algorithms.
    pub enum SimpleLb {
        Unspecified = "UNSPECIFIED", LeastConn = "LEAST_CONN", Random = "RANDOM", Passthrough = "PASSTHROUGH",
        RoundRobin = "ROUND_ROBIN", LeastRequest = "LEAST_REQUEST",
    }

    /// HTTP/2 upgrade policy for HTTP/1.1 upstream connections.
    pub enum H2UpgradePolicy { Default = "DEFAULT", DoNotUpgrade = "DO_NOT_UPGRADE", Upgrade = "UPGRADE" }

    /// Upstream TLS mode.
    pub enum ClientTlsMode { Disable = "DISABLE", Simple = "SIMPLE", Mutual = "MUTUAL", IstioMutual = "ISTIO_MUTUAL" }

    /// PROXY protocol version.
    pub enum ProxyProtocolVersion { V1 = "V1", V2 = "V2" }
}

// ---------------------------------------------------------------------------------------------
// Gateway

api_struct! {
    /// `Gateway.spec`: a load balancer at the edge of the mesh.
    pub struct Gateway {
        servers: Vec<Server>,
        selector: Labels,
    }

    /// One listening port of a gateway with its hosts and TLS settings.
    pub struct Server {
        port: Port,
        bind: String,
        hosts: Vec<String>,
        tls: ServerTlsSettings,
        default_endpoint: String,
        name: String,
    }

    /// A gateway port.
    pub struct Port {
        number: u32,
        protocol: String,
        name: String,
        target_port: u32,
    }

    /// TLS termination settings.
    pub struct ServerTlsSettings {
        https_redirect: bool,
        mode: ServerTlsMode,
        server_certificate: String,
        private_key: String,
        ca_certificates: String,
        ca_crl: String,
        credential_name: String,
        credential_names: Vec<String>,
        ca_cert_credential_name: String,
        tls_certificates: Vec<TlsCertificate>,
        subject_alt_names: Vec<String>,
        verify_certificate_spki: Vec<String>,
        verify_certificate_hash: Vec<String>,
        min_protocol_version: TlsProtocol,
        max_protocol_version: TlsProtocol,
        cipher_suites: Vec<String>,
        insecure_skip_verify: bool,
        ecdh_curves: Vec<String>,
    }

    /// A certificate and key pair.
    pub struct TlsCertificate {
        server_certificate: String,
        private_key: String,
        ca_certificates: String,
    }
}

api_enum! {
    /// Gateway (and Sidecar ingress) TLS mode.
    pub enum ServerTlsMode {
        Passthrough = "PASSTHROUGH", Simple = "SIMPLE", Mutual = "MUTUAL", AutoPassthrough = "AUTO_PASSTHROUGH",
        IstioMutual = "ISTIO_MUTUAL", OptionalMutual = "OPTIONAL_MUTUAL",
    }

    /// TLS protocol versions.
    pub enum TlsProtocol { TlsAuto = "TLS_AUTO", TlsV1_0 = "TLSV1_0", TlsV1_1 = "TLSV1_1", TlsV1_2 = "TLSV1_2", TlsV1_3 = "TLSV1_3" }
}

// ---------------------------------------------------------------------------------------------
// Sidecar

api_struct! {
    /// `Sidecar.spec`: what a sidecar listens on and which services it sees.
    pub struct Sidecar {
        workload_selector: WorkloadSelector,
        ingress: Vec<IstioIngressListener>,
        egress: Vec<IstioEgressListener>,
        inbound_connection_pool: ConnectionPoolSettings,
        outbound_traffic_policy: OutboundTrafficPolicy,
    }

    /// An inbound listener.
    pub struct IstioIngressListener {
        port: SidecarPort,
        bind: String,
        capture_mode: CaptureMode,
        default_endpoint: String,
        tls: ServerTlsSettings,
        connection_pool: ConnectionPoolSettings,
    }

    /// An outbound listener and the hosts it sees.
    pub struct IstioEgressListener {
        port: SidecarPort,
        bind: String,
        capture_mode: CaptureMode,
        hosts: Vec<String>,
    }

    /// A Sidecar listener port.
    pub struct SidecarPort {
        number: u32,
        protocol: String,
        name: String,
        target_port: u32,
    }

    /// What happens to traffic for unknown destinations.
    pub struct OutboundTrafficPolicy {
        mode: OutboundMode,
        egress_proxy: Destination,
    }
}

api_enum! {
    /// How traffic reaches a listener.
    pub enum CaptureMode { Default = "DEFAULT", Iptables = "IPTABLES", None = "NONE" }

    /// Outbound traffic policy mode. Note the proto default (0) is REGISTRY_ONLY.
    pub enum OutboundMode { RegistryOnly = "REGISTRY_ONLY", AllowAny = "ALLOW_ANY", AllowAnyDynamicDns = "ALLOW_ANY_DYNAMIC_DNS" }
}

// ---------------------------------------------------------------------------------------------
// EnvoyFilter

api_struct! {
    /// `EnvoyFilter.spec`: patches to generated Envoy configuration.
    pub struct EnvoyFilter {
        workload_selector: WorkloadSelector,
        target_refs: Vec<PolicyTargetReference>,
        config_patches: Vec<EnvoyConfigObjectPatch>,
        priority: i32,
    }

    /// One patch: where it applies, what matches, what changes.
    pub struct EnvoyConfigObjectPatch {
        apply_to: ApplyTo,
        r#match: EnvoyConfigObjectMatch,
        patch: Patch,
    }

    /// What an EnvoyFilter patch matches.
    pub struct EnvoyConfigObjectMatch {
        context: PatchContext,
        proxy: ProxyMatch,
        listener: ListenerMatch,
        route_configuration: RouteConfigurationMatch,
        cluster: ClusterMatch,
        waypoint: WaypointMatch,
    }

    /// Proxy version and metadata match.
    pub struct ProxyMatch {
        proxy_version: String,
        metadata: Labels,
    }

    /// Listener match.
    pub struct ListenerMatch {
        port_number: u32,
        port_name: String,
        filter_chain: FilterChainMatch,
        listener_filter: String,
        name: String,
    }

    /// Filter-chain match.
    pub struct FilterChainMatch {
        name: String,
        sni: String,
        transport_protocol: String,
        application_protocols: String,
        filter: FilterMatch,
        destination_port: u32,
        transport_socket: TransportSocketMatch,
    }

    /// Transport socket match.
    pub struct TransportSocketMatch {
        name: String,
    }

    /// Network or HTTP filter match.
    pub struct FilterMatch {
        name: String,
        sub_filter: SubFilterMatch,
    }

    /// HTTP filter inside the HTTP connection manager.
    pub struct SubFilterMatch {
        name: String,
    }

    /// Route-configuration match.
    pub struct RouteConfigurationMatch {
        port_number: u32,
        port_name: String,
        gateway: String,
        vhost: VirtualHostMatch,
        name: String,
    }

    /// Virtual-host match.
    pub struct VirtualHostMatch {
        name: String,
        route: RouteMatch,
        domain_name: String,
    }

    /// Route match.
    pub struct RouteMatch {
        name: String,
        action: RouteAction,
    }

    /// Cluster match.
    pub struct ClusterMatch {
        port_number: u32,
        service: String,
        subset: String,
        name: String,
    }

    /// Waypoint match.
    pub struct WaypointMatch {
        filter: FilterMatch,
        route: WaypointRouteMatch,
        port_number: u32,
    }

    /// Waypoint route match.
    pub struct WaypointRouteMatch {
        name: String,
    }

    /// The patch operation and value.
    pub struct Patch {
        operation: PatchOperation,
        value: Json,
        filter_class: FilterClass,
    }
}

api_enum! {
    /// The Envoy object an EnvoyFilter patch applies to.
    pub enum ApplyTo {
        Invalid = "INVALID", Listener = "LISTENER", FilterChain = "FILTER_CHAIN", NetworkFilter = "NETWORK_FILTER",
        HttpFilter = "HTTP_FILTER", RouteConfiguration = "ROUTE_CONFIGURATION", VirtualHost = "VIRTUAL_HOST",
        HttpRoute = "HTTP_ROUTE", Cluster = "CLUSTER", ExtensionConfig = "EXTENSION_CONFIG", Bootstrap = "BOOTSTRAP",
        ListenerFilter = "LISTENER_FILTER",
    }

    /// Where an EnvoyFilter patch applies.
    pub enum PatchContext {
        Any = "ANY", SidecarInbound = "SIDECAR_INBOUND", SidecarOutbound = "SIDECAR_OUTBOUND", Gateway = "GATEWAY",
        Waypoint = "WAYPOINT",
    }

    /// Route action match.
    pub enum RouteAction { Any = "ANY", Route = "ROUTE", Redirect = "REDIRECT", DirectResponse = "DIRECT_RESPONSE" }

    /// Patch operation.
    pub enum PatchOperation {
        Invalid = "INVALID", Merge = "MERGE", Add = "ADD", Remove = "REMOVE", InsertBefore = "INSERT_BEFORE",
        InsertAfter = "INSERT_AFTER", InsertFirst = "INSERT_FIRST", Replace = "REPLACE",
        MergeAndReplaceList = "MERGE_AND_REPLACE_LIST",
    }

    /// Filter class for inserted HTTP filters.
    pub enum FilterClass { Unspecified = "UNSPECIFIED", Authn = "AUTHN", Authz = "AUTHZ", Stats = "STATS" }
}

// ---------------------------------------------------------------------------------------------
// ProxyConfig

api_struct! {
    /// `ProxyConfig.spec`: per-workload proxy settings.
    pub struct ProxyConfig {
        selector: MatchLabelsSelector,
        concurrency: i32,
        environment_variables: Labels,
        image: ProxyImage,
    }

    /// The proxy image variant.
    pub struct ProxyImage {
        image_type: String,
    }
}

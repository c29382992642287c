//! `telemetry.istio.io` kinds (v1 and v1alpha1 share these messages).

use std::collections::BTreeMap;

use super::{Duration, MatchLabelsSelector, PolicyTargetReference, api_enum, api_struct};

api_struct! {
    /// `Telemetry.spec`: tracing, metrics and access logging for workloads.
    pub struct Telemetry {
        selector: MatchLabelsSelector,
        target_ref: PolicyTargetReference,
        target_refs: Vec<PolicyTargetReference>,
        tracing: Vec<Tracing>,
        metrics: Vec<Metrics>,
        access_logging: Vec<AccessLogging>,
    }

    /// Tracing configuration.
    pub struct Tracing {
        r#match: TracingSelector,
        providers: Vec<ProviderRef>,
        random_sampling_percentage: f64,
        disable_span_reporting: bool,
        custom_tags: BTreeMap<String, CustomTag>,
        use_request_id_for_trace_sampling: bool,
        enable_istio_tags: bool,
        disable_context_propagation: bool,
    }

    /// Which traffic direction a tracing/logging entry applies to.
    pub struct TracingSelector {
        mode: WorkloadMode,
    }

    /// A reference to a MeshConfig extension provider.
    pub struct ProviderRef {
        name: String,
    }

    /// A span tag: one of literal, environment, header, formatter.
    pub struct CustomTag {
        literal: Literal,
        environment: Environment,
        header: RequestHeader,
        formatter: Formatter,
    }

    /// A fixed tag value.
    pub struct Literal {
        value: String,
    }

    /// A tag from an environment variable.
    pub struct Environment {
        name: String,
        default_value: String,
    }

    /// A tag from a request header.
    pub struct RequestHeader {
        name: String,
        default_value: String,
    }

    /// A tag from a formatter expression.
    pub struct Formatter {
        value: String,
    }

    /// Metrics configuration.
    pub struct Metrics {
        providers: Vec<ProviderRef>,
        overrides: Vec<MetricsOverrides>,
        reporting_interval: Duration,
    }

    /// Changes to one or all metrics.
    pub struct MetricsOverrides {
        r#match: MetricSelector,
        disabled: bool,
        tag_overrides: BTreeMap<String, TagOverride>,
    }

    /// Which metric an override applies to.
    pub struct MetricSelector {
        metric: IstioMetric,
        custom_metric: String,
        mode: WorkloadMode,
    }

    /// A change to one metric tag.
    pub struct TagOverride {
        operation: TagOperation,
        value: String,
    }

    /// Access logging configuration.
    pub struct AccessLogging {
        r#match: TracingSelector,
        providers: Vec<ProviderRef>,
        disabled: bool,
        filter: AccessLogFilter,
    }

    /// A CEL filter on access log entries.
    pub struct AccessLogFilter {
        expression: String,
    }
}

api_enum! {
    /// Traffic direction (telemetry's own enum: 0 is CLIENT_AND_SERVER).
    pub enum WorkloadMode { ClientAndServer = "CLIENT_AND_SERVER", Client = "CLIENT", Server = "SERVER" }

    /// Istio's standard metrics.
    pub enum IstioMetric {
        AllMetrics = "ALL_METRICS", RequestCount = "REQUEST_COUNT", RequestDuration = "REQUEST_DURATION",
        RequestSize = "REQUEST_SIZE", ResponseSize = "RESPONSE_SIZE", TcpOpenedConnections = "TCP_OPENED_CONNECTIONS",
        TcpClosedConnections = "TCP_CLOSED_CONNECTIONS", TcpSentBytes = "TCP_SENT_BYTES",
        TcpReceivedBytes = "TCP_RECEIVED_BYTES", GrpcRequestMessages = "GRPC_REQUEST_MESSAGES",
        GrpcResponseMessages = "GRPC_RESPONSE_MESSAGES",
    }

    /// A tag override operation.
    pub enum TagOperation { Upsert = "UPSERT", Remove = "REMOVE" }
}

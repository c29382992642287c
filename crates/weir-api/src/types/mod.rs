//! Typed Istio and Kubernetes resources.
//!
//! The structures transcribe the Istio protos (`istio/api`) field by field with their JSON
//! (lowerCamel) names. Every field is optional so that presence survives a round trip and
//! "required" rules can be checked; accessors give the proto default (enum value 0) where
//! code needs one. Proto oneofs are separate optional fields; validation enforces "at most one".

pub mod kube;
pub mod mesh;
pub mod networking;
pub mod security;
pub mod telemetry;

mod duration;

pub use duration::Duration;

use std::collections::BTreeMap;

/// Declares API structures: every field becomes `pub Option<T>`, serialized in camelCase and
/// omitted when absent.
macro_rules! api_struct {
    ($(
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty ),* $(,)?
        }
    )*) => {$(
        $(#[$meta])*
        #[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            $(
                $(#[$fmeta])*
                #[allow(missing_docs)]
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
        }
    )*};
}

/// Declares a proto enum serialized by name; the first variant is the proto default (value 0).
macro_rules! api_enum {
    ($(
        $(#[$meta:meta])*
        pub enum $name:ident { $first:ident = $first_wire:literal $(, $variant:ident = $wire:literal)* $(,)? }
    )*) => {$(
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            #[default]
            #[allow(missing_docs)]
            #[serde(rename = $first_wire)]
            $first,
            $(
                #[allow(missing_docs)]
                #[serde(rename = $wire)]
                $variant,
            )*
        }

        impl $name {
            /// The name used in YAML.
            pub fn as_str(self) -> &'static str {
                match self {
                    $name::$first => $first_wire,
                    $( $name::$variant => $wire, )*
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}

pub(crate) use api_enum;
pub(crate) use api_struct;

/// A string-to-string map (labels, annotations, selectors).
pub type Labels = BTreeMap<String, String>;

/// An arbitrary JSON value (`google.protobuf.Struct` and fields Weir keeps but does not interpret).
pub type Json = serde_json::Value;

api_struct! {
    /// Kubernetes object metadata.
    pub struct ObjectMeta {
        name: String,
        generate_name: String,
        namespace: String,
        labels: Labels,
        annotations: Labels,
        uid: String,
        resource_version: String,
        generation: i64,
        creation_timestamp: String,
        deletion_timestamp: String,
        deletion_grace_period_seconds: i64,
        owner_references: Vec<Json>,
        finalizers: Vec<String>,
        managed_fields: Vec<Json>,
        self_link: String,
    }

    /// `istio.networking.v1alpha3.WorkloadSelector` (ServiceEntry, Sidecar, EnvoyFilter).
    pub struct WorkloadSelector {
        labels: Labels,
    }

    /// `istio.type.v1beta1.WorkloadSelector` (DestinationRule, security kinds, Telemetry, ProxyConfig).
    pub struct MatchLabelsSelector {
        match_labels: Labels,
    }

    /// `istio.type.v1beta1.PolicyTargetReference`.
    pub struct PolicyTargetReference {
        group: String,
        kind: String,
        name: String,
        namespace: String,
    }

    /// A port selected by number.
    pub struct PortSelector {
        number: u32,
    }

    /// `istio.networking.v1alpha3.StringMatch`: exactly one of exact, prefix, regex.
    pub struct StringMatch {
        exact: String,
        prefix: String,
        regex: String,
    }

    /// A percentage (0–100) as a double.
    pub struct Percent {
        value: f64,
    }
}

/// A Kubernetes object: `apiVersion`, `kind`, `metadata`, `spec` and an opaque `status`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Object<S> {
    /// `group/version`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    /// The kind.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Name, namespace, labels, annotations.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The kind-specific specification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<S>,
    /// Status as written by a controller; kept, not interpreted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Json>,
}

impl<S> Object<S> {
    /// The object's name ("" when unset).
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or("")
    }

    /// The object's namespace ("" when unset).
    pub fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("")
    }
}

/// Shorthand accessors for optional repeated and map fields.
pub trait OrEmpty<T: ?Sized> {
    /// The contents, or an empty value when the field is absent.
    fn or_empty(&self) -> &T;
}

impl<T> OrEmpty<[T]> for Option<Vec<T>> {
    fn or_empty(&self) -> &[T] {
        self.as_deref().unwrap_or(&[])
    }
}

static EMPTY_LABELS: Labels = BTreeMap::new();

impl OrEmpty<Labels> for Option<Labels> {
    fn or_empty(&self) -> &Labels {
        self.as_ref().unwrap_or(&EMPTY_LABELS)
    }
}

impl OrEmpty<str> for Option<String> {
    fn or_empty(&self) -> &str {
        self.as_deref().unwrap_or("")
    }
}

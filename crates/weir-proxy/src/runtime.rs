//! A bootstrap's `layered_runtime`: Envoy's runtime key-value layers, reduced to the keys Weir
//! honours. A static layer's nested objects are keys joined with dots, as Envoy flattens them.
//! Every key Weir does not know is refused by name: a runtime flag changes behaviour, and
//! ignoring one would make the same bootstrap mean something else here than in Envoy.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::bootstrap::v3::{LayeredRuntime, runtime_layer};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};

/// The global downstream connection limit (deprecated in Envoy in favour of the overload
/// manager's downstream connections monitor).
pub const GLOBAL_MAX_CONNECTIONS: &str = "overload.global_downstream_max_connections";

const LISTENER_LIMIT_PREFIX: &str = "envoy.resource_limits.listener.";
const LISTENER_LIMIT_SUFFIX: &str = ".connection_limit";

/// What a bootstrap's runtime layers set that Weir honours.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// `overload.global_downstream_max_connections`.
    pub global_max_connections: Option<u64>,
    /// `envoy.resource_limits.listener.<name>.connection_limit`, by listener name.
    pub listener_connection_limits: BTreeMap<String, u64>,
}

impl RuntimeConfig {
    /// Compiles the layers: a later layer's value for a key overrides an earlier one's, as in
    /// Envoy. Static layers are read; an admin layer adds nothing (Weir has no
    /// `/runtime_modify` to fill it); disk and RTDS layers are refused.
    pub fn compile(runtime: &LayeredRuntime) -> Result<Self, String> {
        let mut values: BTreeMap<String, Value> = BTreeMap::new();
        for layer in &runtime.layers {
            match &layer.layer_specifier {
                Some(runtime_layer::LayerSpecifier::StaticLayer(s)) => flatten(s, "", &mut values),
                Some(runtime_layer::LayerSpecifier::AdminLayer(_)) => {}
                Some(runtime_layer::LayerSpecifier::DiskLayer(_)) => {
                    return Err(format!(
                        "layered_runtime: layer {:?}: disk_layer is not supported",
                        layer.name
                    ));
                }
                Some(runtime_layer::LayerSpecifier::RtdsLayer(_)) => {
                    return Err(format!(
                        "layered_runtime: layer {:?}: rtds_layer is not supported",
                        layer.name
                    ));
                }
                None => return Err(format!("layered_runtime: layer {:?} has no kind", layer.name)),
            }
        }
        let mut config = RuntimeConfig::default();
        for (key, value) in &values {
            if key == GLOBAL_MAX_CONNECTIONS {
                config.global_max_connections = Some(count(key, value)?);
            } else if let Some(listener) = key
                .strip_prefix(LISTENER_LIMIT_PREFIX)
                .and_then(|k| k.strip_suffix(LISTENER_LIMIT_SUFFIX))
                .filter(|name| !name.is_empty())
            {
                config
                    .listener_connection_limits
                    .insert(listener.to_string(), count(key, value)?);
            } else {
                return Err(format!("layered_runtime: runtime key {key:?} is not supported"));
            }
        }
        Ok(config)
    }
}

/// A static layer's keys, nested objects joined with dots.
fn flatten(s: &Struct, prefix: &str, out: &mut BTreeMap<String, Value>) {
    for (name, value) in &s.fields {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match &value.kind {
            Some(Kind::StructValue(inner)) => flatten(inner, &key, out),
            _ => {
                out.insert(key, value.clone());
            }
        }
    }
}

/// A runtime value read as a count, as Envoy's `getInteger` reads it: a whole non-negative
/// number, or a string of digits.
fn count(key: &str, value: &Value) -> Result<u64, String> {
    let parsed = match &value.kind {
        Some(Kind::NumberValue(n)) if *n >= 0.0 && n.fract() == 0.0 && *n <= u64::MAX as f64 => {
            Some(*n as u64)
        }
        Some(Kind::StringValue(s)) => s.parse().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| format!("layered_runtime: {key} must be a whole number of connections"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::bootstrap::v3::RuntimeLayer;

    fn value(kind: Kind) -> Value {
        Value { kind: Some(kind) }
    }

    fn object(fields: &[(&str, Value)]) -> Value {
        value(Kind::StructValue(Struct {
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_string(), v.clone()))
                .collect(),
        }))
    }

    fn static_layer(name: &str, fields: &[(&str, Value)]) -> RuntimeLayer {
        let Some(Kind::StructValue(s)) = object(fields).kind else {
            unreachable!()
        };
        RuntimeLayer {
            name: name.into(),
            layer_specifier: Some(runtime_layer::LayerSpecifier::StaticLayer(s)),
        }
    }

    #[test]
    fn the_edge_guides_keys_are_read_nested_and_later_layers_win() {
        let limits = object(&[(
            "resource_limits",
            object(&[(
                "listener",
                object(&[(
                    "example_listener_name",
                    object(&[("connection_limit", value(Kind::NumberValue(10000.0)))]),
                )]),
            )]),
        )]);
        let overload = object(&[(
            "global_downstream_max_connections",
            value(Kind::NumberValue(50000.0)),
        )]);
        let runtime = LayeredRuntime {
            layers: vec![
                static_layer("static_layer_0", &[("envoy", limits), ("overload", overload)]),
                static_layer(
                    "override",
                    &[(
                        "overload.global_downstream_max_connections",
                        value(Kind::StringValue("40000".into())),
                    )],
                ),
                RuntimeLayer {
                    name: "admin".into(),
                    layer_specifier: Some(runtime_layer::LayerSpecifier::AdminLayer(Default::default())),
                },
            ],
        };
        let config = RuntimeConfig::compile(&runtime).unwrap();
        assert_eq!(config.global_max_connections, Some(40000));
        assert_eq!(
            config.listener_connection_limits.get("example_listener_name"),
            Some(&10000)
        );
    }

    #[test]
    fn unknown_keys_bad_values_and_other_layers_are_refused_by_name() {
        let refuse = |layer: RuntimeLayer| {
            RuntimeConfig::compile(&LayeredRuntime { layers: vec![layer] }).unwrap_err()
        };
        let flag = static_layer(
            "flags",
            &[(
                "envoy.reloadable_features.http_reject_path_with_fragment",
                value(Kind::BoolValue(false)),
            )],
        );
        assert_eq!(
            refuse(flag),
            "layered_runtime: runtime key \"envoy.reloadable_features.http_reject_path_with_fragment\" is not supported"
        );
        let fraction = static_layer(
            GLOBAL_MAX_CONNECTIONS,
            &[(GLOBAL_MAX_CONNECTIONS, value(Kind::NumberValue(1.5)))],
        );
        assert!(refuse(fraction).contains("must be a whole number"));
        let disk = RuntimeLayer {
            name: "disk".into(),
            layer_specifier: Some(runtime_layer::LayerSpecifier::DiskLayer(Default::default())),
        };
        assert!(refuse(disk).contains("disk_layer is not supported"));
    }
}

//! The proxy behind an xDS node identity, as Istio's clients send it.
//!
//! Sidecars and gateways identify as `<type>~<ip>~<pod>.<namespace>~<namespace>.svc.<domain>`
//! (`sidecar~10.1.1.1~reviews-v1-6d4f.bookinfo~bookinfo.svc.cluster.local`, `router~…`) and add
//! metadata: `NAMESPACE`, `LABELS` (a struct), `INSTANCE_IPS` (comma-separated) and `NAME`.
//! Proxyless gRPC clients use the same form with `GENERATOR: grpc` in their metadata.

use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, value::Kind};
use weir_api::types::Labels;
use weir_model::{Proxy, ProxyKind};

/// Why a node identity cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NodeError {
    /// The request carried no node.
    #[error("the first request of a stream must identify its node")]
    Missing,
    /// The id is not `type~ip~name.namespace~domain`.
    #[error(
        "node id {id:?} is not of the form <sidecar|router>~<ip>~<name>.<namespace>~<namespace>.svc.<domain>: {reason}"
    )]
    BadId {
        /// The id as sent.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

fn string_field<'a>(metadata: Option<&'a Struct>, key: &str) -> Option<&'a str> {
    match metadata?.fields.get(key)?.kind.as_ref()? {
        Kind::StringValue(s) if !s.is_empty() => Some(s),
        _ => None,
    }
}

fn labels_field(metadata: Option<&Struct>) -> Labels {
    let Some(Kind::StructValue(labels)) = metadata
        .and_then(|m| m.fields.get("LABELS"))
        .and_then(|v| v.kind.as_ref())
    else {
        return Labels::new();
    };
    labels
        .fields
        .iter()
        .filter_map(|(k, v)| match v.kind.as_ref() {
            Some(Kind::StringValue(s)) => Some((k.clone(), s.clone())),
            _ => None,
        })
        .collect()
}

/// The proxy a node identifies.
pub fn proxy_from_node(node: Option<&Node>) -> Result<Proxy, NodeError> {
    let node = node.ok_or(NodeError::Missing)?;
    let bad = |reason| NodeError::BadId {
        id: node.id.clone(),
        reason,
    };
    let parts: Vec<&str> = node.id.split('~').collect();
    let [kind, ip, name_ns, _domain] = parts.as_slice() else {
        return Err(bad("expected four parts separated by '~'"));
    };
    let metadata = node.metadata.as_ref();
    let kind = match (*kind, string_field(metadata, "GENERATOR")) {
        (_, Some("grpc")) => ProxyKind::Proxyless,
        ("sidecar", _) => ProxyKind::Sidecar,
        ("router", _) => ProxyKind::Router,
        _ => return Err(bad("the type must be sidecar or router")),
    };
    let (pod, id_namespace) = name_ns.rsplit_once('.').unwrap_or((name_ns, ""));
    let namespace = string_field(metadata, "NAMESPACE").unwrap_or(id_namespace);
    if namespace.is_empty() {
        return Err(bad(
            "no namespace: neither <name>.<namespace> nor NAMESPACE metadata",
        ));
    }
    let name = string_field(metadata, "NAME").unwrap_or(pod);
    let mut ips: Vec<IpAddr> = string_field(metadata, "INSTANCE_IPS")
        .map(|list| list.split(',').filter_map(|ip| ip.trim().parse().ok()).collect())
        .unwrap_or_default();
    if ips.is_empty() {
        ips.extend(ip.parse::<IpAddr>().ok());
    }
    let labels = labels_field(metadata);
    let locality = node
        .locality
        .as_ref()
        .filter(|l| !l.region.is_empty())
        .map(|l| {
            format!("{}/{}/{}", l.region, l.zone, l.sub_zone)
                .trim_end_matches('/')
                .to_string()
        })
        .or_else(|| weir_model::view::locality_from_labels(&labels));
    Ok(Proxy {
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
        labels,
        ips,
        locality,
    })
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::google::protobuf::Value;

    use super::*;

    fn string(s: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(s.into())),
        }
    }

    fn node(id: &str, fields: &[(&str, Value)]) -> Node {
        let metadata = Struct {
            fields: fields.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        };
        Node {
            id: id.into(),
            metadata: Some(metadata),
            ..Default::default()
        }
    }

    #[test]
    fn an_istio_sidecar() {
        let labels = Struct {
            fields: [
                ("app".to_string(), string("reviews")),
                ("version".to_string(), string("v1")),
            ]
            .into_iter()
            .collect(),
        };
        let n = node(
            "sidecar~10.1.1.1~reviews-v1-6d4f.bookinfo~bookinfo.svc.cluster.local",
            &[
                (
                    "LABELS",
                    Value {
                        kind: Some(Kind::StructValue(labels)),
                    },
                ),
                ("INSTANCE_IPS", string("10.1.1.1,fd00::1")),
            ],
        );
        let p = proxy_from_node(Some(&n)).unwrap();
        assert_eq!(p.kind, ProxyKind::Sidecar);
        assert_eq!(
            (p.namespace.as_str(), p.name.as_str()),
            ("bookinfo", "reviews-v1-6d4f")
        );
        assert_eq!(p.labels.get("version").map(String::as_str), Some("v1"));
        assert_eq!(
            p.ips,
            vec!["10.1.1.1".parse::<IpAddr>().unwrap(), "fd00::1".parse().unwrap()]
        );
    }

    #[test]
    fn a_gateway_and_a_proxyless_client() {
        let gw = node(
            "router~10.0.0.5~istio-ingressgateway-5c8d.istio-system~istio-system.svc.cluster.local",
            &[],
        );
        let p = proxy_from_node(Some(&gw)).unwrap();
        assert_eq!(
            (p.kind, p.namespace.as_str()),
            (ProxyKind::Router, "istio-system")
        );
        assert_eq!(p.ips, vec!["10.0.0.5".parse::<IpAddr>().unwrap()]);
        let grpc = node(
            "sidecar~10.1.2.3~client.default~default.svc.cluster.local",
            &[("GENERATOR", string("grpc")), ("NAMESPACE", string("apps"))],
        );
        let p = proxy_from_node(Some(&grpc)).unwrap();
        assert_eq!(
            (p.kind, p.namespace.as_str()),
            (ProxyKind::Proxyless, "apps"),
            "metadata NAMESPACE wins"
        );
    }

    #[test]
    fn bad_identities_say_what_is_wrong() {
        assert_eq!(proxy_from_node(None), Err(NodeError::Missing));
        let e = proxy_from_node(Some(&node("just-a-name", &[]))).unwrap_err();
        assert!(e.to_string().contains("expected four parts"), "{e}");
        let e = proxy_from_node(Some(&node("waypoint~1.1.1.1~a.b~b.svc.cluster.local", &[]))).unwrap_err();
        assert!(e.to_string().contains("sidecar or router"), "{e}");
        let e = proxy_from_node(Some(&node("sidecar~1.1.1.1~nodots~x", &[]))).unwrap_err();
        assert!(e.to_string().contains("no namespace"), "{e}");
    }
}

//! The Kubernetes kinds the service registry reads. They are decoded leniently: Kubernetes
//! validates them, and Weir reads only the fields modelled here (other fields are ignored).

use std::collections::BTreeMap;
use std::fmt;

use super::{Json, Labels, Object, api_struct};

/// `v1/Namespace`.
pub type Namespace = Object<Json>;
/// `v1/Service`.
pub type Service = Object<ServiceSpec>;
/// `v1/Pod`.
pub type PodObject = Object<PodSpec>;

api_struct! {
    /// `Service.spec`.
    pub struct ServiceSpec {
        r#type: String,
        #[serde(rename = "clusterIP")]
        cluster_ip: String,
        #[serde(rename = "clusterIPs")]
        cluster_ips: Vec<String>,
        external_name: String,
        selector: Labels,
        ports: Vec<KubeServicePort>,
        #[serde(rename = "externalIPs")]
        external_ips: Vec<String>,
        #[serde(rename = "loadBalancerIP")]
        load_balancer_ip: String,
        publish_not_ready_addresses: bool,
        session_affinity: String,
        ip_families: Vec<String>,
        traffic_distribution: String,
        internal_traffic_policy: String,
        external_traffic_policy: String,
    }

    /// A port of a Kubernetes Service.
    pub struct KubeServicePort {
        name: String,
        protocol: String,
        app_protocol: String,
        port: i32,
        target_port: IntOrString,
        node_port: i32,
    }

    /// `Pod.spec` (the parts the registry reads).
    pub struct PodSpec {
        service_account_name: String,
        service_account: String,
        node_name: String,
        host_network: bool,
        hostname: String,
        subdomain: String,
        containers: Vec<Container>,
        init_containers: Vec<Container>,
    }

    /// A container, for its named ports.
    pub struct Container {
        name: String,
        ports: Vec<ContainerPort>,
    }

    /// A container port.
    pub struct ContainerPort {
        name: String,
        container_port: i32,
        protocol: String,
    }

    /// `Pod.status` (the parts the registry reads).
    pub struct PodStatus {
        phase: String,
        #[serde(rename = "podIP")]
        pod_ip: String,
        #[serde(rename = "podIPs")]
        pod_ips: Vec<PodIp>,
        #[serde(rename = "hostIP")]
        host_ip: String,
        conditions: Vec<PodCondition>,
    }

    /// One pod IP.
    pub struct PodIp {
        ip: String,
    }

    /// A pod condition (`Ready`, …).
    pub struct PodCondition {
        r#type: String,
        status: String,
    }

    /// A subset of `v1/Endpoints`.
    pub struct EndpointSubset {
        addresses: Vec<EndpointAddress>,
        not_ready_addresses: Vec<EndpointAddress>,
        ports: Vec<EndpointPort>,
    }

    /// An address of `v1/Endpoints`.
    pub struct EndpointAddress {
        ip: String,
        hostname: String,
        node_name: String,
        target_ref: ObjectReference,
    }

    /// A reference to another object.
    pub struct ObjectReference {
        kind: String,
        namespace: String,
        name: String,
        uid: String,
    }

    /// A port of `v1/Endpoints` or an EndpointSlice.
    pub struct EndpointPort {
        name: String,
        port: i32,
        protocol: String,
        app_protocol: String,
    }

    /// An endpoint of an EndpointSlice.
    pub struct SliceEndpoint {
        addresses: Vec<String>,
        conditions: EndpointConditions,
        hostname: String,
        target_ref: ObjectReference,
        node_name: String,
        zone: String,
    }

    /// Readiness of an EndpointSlice endpoint.
    pub struct EndpointConditions {
        ready: bool,
        serving: bool,
        terminating: bool,
    }
}

/// A Pod with its status.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    /// `v1`.
    #[serde(default)]
    pub api_version: String,
    /// `Pod`.
    #[serde(default)]
    pub kind: String,
    /// Metadata.
    #[serde(default)]
    pub metadata: super::ObjectMeta,
    /// Spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<PodSpec>,
    /// Status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PodStatus>,
}

/// `v1/Endpoints`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    /// `v1`.
    #[serde(default)]
    pub api_version: String,
    /// `Endpoints`.
    #[serde(default)]
    pub kind: String,
    /// Metadata (the name is the Service's name).
    #[serde(default)]
    pub metadata: super::ObjectMeta,
    /// Address sets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<EndpointSubset>,
}

/// `discovery.k8s.io/v1/EndpointSlice`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSlice {
    /// `discovery.k8s.io/v1`.
    #[serde(default)]
    pub api_version: String,
    /// `EndpointSlice`.
    #[serde(default)]
    pub kind: String,
    /// Metadata (label `kubernetes.io/service-name` names the Service).
    #[serde(default)]
    pub metadata: super::ObjectMeta,
    /// `IPv4`, `IPv6` or `FQDN`.
    #[serde(default)]
    pub address_type: String,
    /// Endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<SliceEndpoint>,
    /// Ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<EndpointPort>,
}

/// `v1/Secret` and `v1/ConfigMap` share this shape (data maps).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataObject {
    /// `v1`.
    #[serde(default)]
    pub api_version: String,
    /// `Secret` or `ConfigMap`.
    #[serde(default)]
    pub kind: String,
    /// Metadata.
    #[serde(default)]
    pub metadata: super::ObjectMeta,
    /// Secret type (`kubernetes.io/tls`, …).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Values (base64 for Secrets).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Plain-text values (Secrets).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub string_data: BTreeMap<String, String>,
    /// Binary values (ConfigMaps).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub binary_data: BTreeMap<String, String>,
}

/// A Kubernetes `IntOrString` (Service `targetPort`: a number or a container port name).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum IntOrString {
    /// A number.
    Int(i64),
    /// A name.
    Str(String),
}

impl Default for IntOrString {
    fn default() -> Self {
        IntOrString::Int(0)
    }
}

impl fmt::Display for IntOrString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrString::Int(i) => write!(f, "{i}"),
            IntOrString::Str(s) => f.write_str(s),
        }
    }
}

impl serde::Serialize for IntOrString {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            IntOrString::Int(i) => s.serialize_i64(*i),
            IntOrString::Str(v) => s.serialize_str(v),
        }
    }
}

impl<'de> serde::Deserialize<'de> for IntOrString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = IntOrString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a string")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<IntOrString, E> {
                Ok(IntOrString::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<IntOrString, E> {
                i64::try_from(v).map(IntOrString::Int).map_err(E::custom)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<IntOrString, E> {
                Ok(IntOrString::Str(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Resource, check_text};

    /// Kubernetes kinds are decoded leniently, so a misspelt field name would be dropped without
    /// a word: check that every field Weir models is read under its Kubernetes spelling.
    #[test]
    fn every_modelled_kubernetes_field_is_read() {
        let service = "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: n}\nspec:\n  type: ClusterIP\n  clusterIP: 10.0.0.1\n  clusterIPs: [10.0.0.1]\n  externalName: x.example.com\n  selector: {app: a}\n  ports: [{name: http, protocol: TCP, appProtocol: http, port: 80, targetPort: web, nodePort: 30000}]\n  externalIPs: [1.1.1.1]\n  loadBalancerIP: 2.2.2.2\n  publishNotReadyAddresses: true\n  sessionAffinity: None\n  ipFamilies: [IPv4]\n  trafficDistribution: PreferClose\n  internalTrafficPolicy: Cluster\n  externalTrafficPolicy: Local\n";
        let checked = check_text(service, "default");
        let Some(Resource::Service(svc)) = &checked[0].resource else {
            panic!("{checked:?}")
        };
        let json = serde_json::to_value(svc.spec.as_ref().unwrap()).unwrap();
        let original: serde_json::Value = serde_json::to_value(
            crate::yaml::parse_documents(service)[0]
                .root
                .as_ref()
                .unwrap()
                .to_json()["spec"]
                .clone(),
        )
        .unwrap();
        assert_eq!(json, original);

        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: n}\nspec:\n  serviceAccountName: sa\n  serviceAccount: sa\n  nodeName: node\n  hostNetwork: false\n  hostname: h\n  subdomain: d\n  containers: [{name: c, ports: [{name: web, containerPort: 8080, protocol: TCP}]}]\n  initContainers: [{name: i}]\nstatus:\n  phase: Running\n  podIP: 10.1.1.1\n  podIPs: [{ip: 10.1.1.1}]\n  hostIP: 10.0.0.9\n  conditions: [{type: Ready, status: \"True\"}]\n";
        let checked = check_text(pod, "default");
        let Some(Resource::Pod(p)) = &checked[0].resource else {
            panic!("{checked:?}")
        };
        let doc = crate::yaml::parse_documents(pod)[0]
            .root
            .as_ref()
            .unwrap()
            .to_json();
        assert_eq!(
            serde_json::to_value(p.spec.as_ref().unwrap()).unwrap(),
            doc["spec"]
        );
        assert_eq!(
            serde_json::to_value(p.status.as_ref().unwrap()).unwrap(),
            doc["status"]
        );
    }
}

//! The ADS server over real gRPC on 127.0.0.1: a tonic client plays the proxy (state of the world
//! and delta), the model changes through real files, and the pushes, NACK handling and
//! endpoint-only updates are checked on the wire.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use weir_model::registry::RegistryOptions;
use weir_model::registry::alloc::AddressAllocator;
use weir_model::{ConfigStore, FolderSource};
use weir_xds::generator::{CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE};
use weir_xds::model::Model;
use weir_xds::server::DiscoveryServer;

const SIDECAR: &str = "sidecar~10.0.0.9~client-1.default~default.svc.cluster.local";

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ads").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn service_entry(name: &str, host: &str, ip: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: default}}\n\
         spec:\n  hosts: [{host}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n\
         \x20 ports: [{{number: 8080, name: http, protocol: HTTP}}]\n  workloadSelector: {{labels: {{app: {name}}}}}\n\
         ---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: {name}-1, namespace: default}}\n\
         spec: {{address: {ip}, labels: {{app: {name}}}}}\n"
    )
}

struct Harness {
    dir: PathBuf,
    source: FolderSource,
    server: DiscoveryServer,
    client: AggregatedDiscoveryServiceClient<tonic::transport::Channel>,
}

impl Harness {
    async fn start(name: &str, files: &[(&str, String)]) -> Harness {
        let dir = scratch(name);
        for (file, text) in files {
            std::fs::write(dir.join(file), text).unwrap();
        }
        let source = FolderSource::new(&dir, "default").unwrap();
        let mut store = ConfigStore::new();
        source.load_all(&mut store).unwrap();
        let server = DiscoveryServer::new(Model::new(
            store,
            AddressAllocator::default(),
            RegistryOptions::default(),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = server.service();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        let client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        Harness {
            dir,
            source,
            server,
            client,
        }
    }

    /// Writes a file and applies it, as `weir discovery`'s watch loop does.
    fn write(&self, file: &str, text: &str) {
        let path = self.dir.join(file);
        std::fs::write(&path, text).unwrap();
        self.server.apply(|store| self.source.refresh(store, &[path]));
    }
}

fn node(id: &str) -> Option<Node> {
    Some(Node {
        id: id.into(),
        ..Default::default()
    })
}

async fn next<T>(stream: &mut tonic::Streaming<T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("a response within 5 s")
        .expect("no stream error")
        .expect("the stream stays open")
}

async fn nothing_within<T: std::fmt::Debug>(stream: &mut tonic::Streaming<T>, wait: Duration) {
    if let Ok(m) = tokio::time::timeout(wait, stream.message()).await {
        panic!("expected no response, got {m:?}");
    }
}

fn names<M: Message + Default>(r: &DiscoveryResponse, name: impl Fn(&M) -> String) -> Vec<String> {
    r.resources
        .iter()
        .map(|a| name(&M::decode(a.value.as_slice()).unwrap()))
        .collect()
}

fn request(type_url: &str, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        node: node(SIDECAR),
        type_url: type_url.into(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn state_of_the_world_pushes_changes_and_tracks_nacks() {
    let mut h = Harness::start(
        "sotw",
        &[("a.yaml", service_entry("alpha", "alpha.test", "10.1.0.1"))],
    )
    .await;
    let (tx, rx) = mpsc::channel(8);
    let mut stream = h
        .client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();

    tx.send(request(CLUSTER_TYPE, &[], "", "")).await.unwrap();
    let first = next(&mut stream).await;
    assert_eq!(first.type_url, CLUSTER_TYPE);
    let clusters = names::<Cluster>(&first, |c| c.name.clone());
    assert!(
        clusters.contains(&"outbound|8080||alpha.test".to_string()),
        "{clusters:?}"
    );
    assert!(
        clusters.contains(&"PassthroughCluster".to_string()),
        "{clusters:?}"
    );
    tx.send(request(CLUSTER_TYPE, &[], &first.version_info, &first.nonce))
        .await
        .unwrap();

    // A new service is pushed.
    h.write("b.yaml", &service_entry("beta", "beta.test", "10.1.0.2"));
    let second = next(&mut stream).await;
    assert_ne!(second.version_info, first.version_info);
    assert!(names::<Cluster>(&second, |c| c.name.clone()).contains(&"outbound|8080||beta.test".to_string()));

    // A NACK stands until a later version is ACKed, and is counted.
    let mut nack = request(CLUSTER_TYPE, &[], &first.version_info, &second.nonce);
    nack.error_detail = Some(RpcStatus {
        code: 3,
        message: "cluster beta: unsupported field".into(),
        ..Default::default()
    });
    tx.send(nack).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rejections = h.server.rejections();
    assert_eq!(rejections.len(), 1, "{rejections:?}");
    assert_eq!(rejections[0].proxy, SIDECAR);
    assert_eq!(rejections[0].reason, "cluster beta: unsupported field");
    assert!(
        rejections[0]
            .resources
            .contains(&"outbound|8080||beta.test".to_string())
    );
    assert!(
        h.server
            .metrics()
            .prometheus()
            .contains("pilot_total_xds_rejects 1")
    );

    h.write("b.yaml", &service_entry("beta", "beta2.test", "10.1.0.2"));
    let third = next(&mut stream).await;
    tx.send(request(CLUSTER_TYPE, &[], &third.version_info, &third.nonce))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        h.server.rejections().is_empty(),
        "an ACK of a later version clears the NACK"
    );

    // A change this proxy cannot see (a VirtualService exported elsewhere) sends nothing.
    h.write(
        "private.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: p, namespace: other}\n\
         spec:\n  hosts: [p.other.svc.cluster.local]\n  exportTo: [.]\n  http: [{route: [{destination: {host: p}}]}]\n",
    );
    nothing_within(&mut stream, Duration::from_millis(500)).await;
}

#[tokio::test]
async fn named_subscriptions_get_only_their_names() {
    let mut h = Harness::start(
        "named",
        &[
            ("a.yaml", service_entry("alpha", "alpha.test", "10.1.0.1")),
            ("b.yaml", service_entry("beta", "beta.test", "10.1.0.2")),
        ],
    )
    .await;
    let (tx, rx) = mpsc::channel(8);
    let mut stream = h
        .client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(request(ENDPOINT_TYPE, &["outbound|8080||beta.test"], "", ""))
        .await
        .unwrap();
    let r = next(&mut stream).await;
    let got = names::<ClusterLoadAssignment>(&r, |c| c.cluster_name.clone());
    assert_eq!(got, vec!["outbound|8080||beta.test".to_string()]);
}

#[tokio::test]
async fn delta_sends_only_changed_endpoints_after_an_endpoint_move() {
    let mut h = Harness::start(
        "delta",
        &[
            ("a.yaml", service_entry("alpha", "alpha.test", "10.1.0.1")),
            ("b.yaml", service_entry("beta", "beta.test", "10.1.0.2")),
        ],
    )
    .await;
    let (tx, rx) = mpsc::channel(8);
    let mut stream = h
        .client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let subscribe = |type_url: &str| DeltaDiscoveryRequest {
        node: node(SIDECAR),
        type_url: type_url.into(),
        ..Default::default()
    };
    let ack = |r: &DeltaDiscoveryResponse| DeltaDiscoveryRequest {
        type_url: r.type_url.clone(),
        response_nonce: r.nonce.clone(),
        ..Default::default()
    };
    tx.send(subscribe(CLUSTER_TYPE)).await.unwrap();
    let cds = next(&mut stream).await;
    assert!(
        cds.resources
            .iter()
            .any(|r| r.name == "outbound|8080||alpha.test")
    );
    tx.send(ack(&cds)).await.unwrap();
    tx.send(DeltaDiscoveryRequest {
        resource_names_subscribe: vec![
            "outbound|8080||alpha.test".into(),
            "outbound|8080||beta.test".into(),
        ],
        ..subscribe(ENDPOINT_TYPE)
    })
    .await
    .unwrap();
    let eds = next(&mut stream).await;
    assert_eq!(eds.resources.len(), 2);
    tx.send(ack(&eds)).await.unwrap();
    tx.send(subscribe(LISTENER_TYPE)).await.unwrap();
    let lds = next(&mut stream).await;
    tx.send(ack(&lds)).await.unwrap();

    // Moving beta's workload is an EDS-only change: one delta response with beta's endpoints.
    let moved = service_entry("beta", "beta.test", "10.1.0.99");
    let pushes_before = h
        .server
        .metrics()
        .generations
        .load(std::sync::atomic::Ordering::Relaxed);
    h.write("b.yaml", &moved);
    let update = next(&mut stream).await;
    assert_eq!(update.type_url, ENDPOINT_TYPE);
    assert_eq!(update.resources.len(), 1);
    assert_eq!(update.resources[0].name, "outbound|8080||beta.test");
    let cla = ClusterLoadAssignment::decode(update.resources[0].resource.as_ref().unwrap().value.as_slice())
        .unwrap();
    assert!(format!("{cla:?}").contains("10.1.0.99"));
    tx.send(ack(&update)).await.unwrap();
    nothing_within(&mut stream, Duration::from_millis(300)).await;
    assert_eq!(
        h.server
            .metrics()
            .generations
            .load(std::sync::atomic::Ordering::Relaxed),
        pushes_before,
        "an endpoint move regenerates no clusters, listeners or routes"
    );

    // Removing a service removes its cluster.
    std::fs::remove_file(h.dir.join("a.yaml")).unwrap();
    let path = h.dir.join("a.yaml");
    h.server.apply(|store| h.source.refresh(store, &[path]));
    let cds2 = next(&mut stream).await;
    assert_eq!(cds2.type_url, CLUSTER_TYPE);
    assert!(
        cds2.removed_resources
            .contains(&"outbound|8080||alpha.test".to_string()),
        "{cds2:?}"
    );
}

#[tokio::test]
async fn a_bad_node_identity_ends_the_stream_with_the_reason() {
    let mut h = Harness::start("bad-node", &[]).await;
    let (tx, rx) = mpsc::channel(8);
    let mut stream = h
        .client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(DiscoveryRequest {
        node: node("not-an-istio-node"),
        type_url: CLUSTER_TYPE.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("sidecar|router"), "{}", err.message());
}

#[tokio::test]
async fn the_client_state_machines_converge_with_the_server() {
    use weir_xds::client::{DeltaClient, SotwClient};
    let mut h = Harness::start(
        "client",
        &[("a.yaml", service_entry("alpha", "alpha.test", "10.1.0.1"))],
    )
    .await;

    // Delta.
    let mut delta = DeltaClient::new(node(SIDECAR).unwrap());
    let (tx, rx) = mpsc::channel(8);
    let mut stream = h
        .client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(delta.subscribe(CLUSTER_TYPE, &[])).await.unwrap();
    tx.send(delta.subscribe(ENDPOINT_TYPE, &["outbound|8080||alpha.test".into()]))
        .await
        .unwrap();
    for _ in 0..2 {
        let r = next(&mut stream).await;
        let pending = delta.on_response(&r).unwrap();
        tx.send(delta.ack(pending)).await.unwrap();
    }
    assert!(delta.is_ready());
    assert!(
        delta
            .held(CLUSTER_TYPE)
            .unwrap()
            .contains_key("outbound|8080||alpha.test")
    );
    h.write("a.yaml", &service_entry("alpha", "alpha.test", "10.1.0.7"));
    let r = next(&mut stream).await;
    assert_eq!(r.type_url, ENDPOINT_TYPE);
    let pending = delta.on_response(&r).unwrap();
    tx.send(delta.ack(pending)).await.unwrap();
    let held = &delta.held(ENDPOINT_TYPE).unwrap()["outbound|8080||alpha.test"];
    let cla = ClusterLoadAssignment::decode(held.body.value.as_slice()).unwrap();
    assert!(format!("{cla:?}").contains("10.1.0.7"));

    // State of the world, on a fresh stream.
    let mut sotw = SotwClient::new(node(SIDECAR).unwrap());
    let (tx, rx) = mpsc::channel(8);
    let mut stream = h
        .client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(sotw.subscribe(LISTENER_TYPE, &[])).await.unwrap();
    let r = next(&mut stream).await;
    let pending = sotw.on_response(&r).unwrap();
    tx.send(sotw.ack(pending)).await.unwrap();
    assert!(sotw.is_ready());
    assert!(sotw.held(LISTENER_TYPE).unwrap().contains_key("virtualOutbound"));
    nothing_within(&mut stream, Duration::from_millis(300)).await;
}

//! The proxy's ADS client against a control plane that does not serve delta ADS (as older
//! control planes do not): the delta stream is answered UNIMPLEMENTED, and the proxy falls back
//! to the state of the world on its own and gets the whole configuration.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use tonic::{Request, Response, Status, Streaming};
use weir_model::registry::RegistryOptions;
use weir_model::registry::alloc::AddressAllocator;
use weir_model::{ConfigStore, FolderSource};
use weir_proxy::run::{ProxyOptions, RunningProxy};
use weir_proxy::serve::BindPolicy;
use weir_proxy::xds::XdsProtocol;
use weir_xds::model::Model;
use weir_xds::server::DiscoveryServer;

/// Weir's control plane with delta ADS taken away, counting the streams asked for.
#[derive(Clone)]
struct SotwOnly {
    inner: DiscoveryServer,
    delta_calls: Arc<AtomicUsize>,
    sotw_calls: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for SotwOnly {
    type StreamAggregatedResourcesStream =
        <DiscoveryServer as AggregatedDiscoveryService>::StreamAggregatedResourcesStream;
    type DeltaAggregatedResourcesStream =
        <DiscoveryServer as AggregatedDiscoveryService>::DeltaAggregatedResourcesStream;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        self.sotw_calls.fetch_add(1, Ordering::SeqCst);
        self.inner.stream_aggregated_resources(request).await
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        self.delta_calls.fetch_add(1, Ordering::SeqCst);
        Err(Status::unimplemented("delta ADS is not served here"))
    }
}

fn model() -> Model {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../weir-xds/tests/scenarios/mesh");
    let mut store = ConfigStore::new();
    FolderSource::new(&dir, "default")
        .unwrap()
        .load_all(&mut store)
        .unwrap();
    Model::new(store, AddressAllocator::default(), RegistryOptions::default())
}

#[tokio::test]
async fn a_control_plane_without_delta_ads_is_spoken_to_in_the_state_of_the_world() {
    let server = SotwOnly {
        inner: DiscoveryServer::new(model()),
        delta_calls: Arc::default(),
        sotw_calls: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let service = AggregatedDiscoveryServiceServer::new(server.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let proxy = RunningProxy::start(ProxyOptions {
        discovery: Some(format!("http://{address}")),
        node: envoy_types::pb::envoy::config::core::v3::Node {
            id: "sidecar~192.0.2.30~client.default~default.svc.cluster.local".into(),
            ..Default::default()
        },
        admin: None,
        http_proxy: None,
        bind: BindPolicy::Local {
            ip: std::net::IpAddr::from([127, 0, 0, 1]),
            port_offset: 40000,
        },
        xds_protocol: XdsProtocol::Auto,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut ready = proxy.agent.ready();
    tokio::time::timeout(Duration::from_secs(20), ready.wait_for(|r| *r))
        .await
        .expect("ready within 20 s")
        .unwrap();
    assert_eq!(
        server.delta_calls.load(Ordering::SeqCst),
        1,
        "delta was tried once"
    );
    assert_eq!(
        server.sotw_calls.load(Ordering::SeqCst),
        1,
        "then the state of the world"
    );
    let snapshot = proxy.state.snapshot();
    assert!(!snapshot.clusters.is_empty() && !snapshot.listeners.is_empty());
    assert!(proxy.agent.status.lock().unwrap().connected);
}

//! Starting a proxy: the admin endpoint, the optional forward-proxy port, the listeners, and
//! either an ADS stream or static configuration.

use std::net::SocketAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;

use crate::admin::{self, Admin};
use crate::serve::{BindPolicy, Listeners};
use crate::state::ProxyState;
use crate::stats::{Identity, IstioMetrics};
use crate::xds::Agent;

/// How to run a proxy.
#[derive(Clone, Debug, Default)]
pub struct ProxyOptions {
    /// The control plane (`http://host:port`), if any.
    pub discovery: Option<String>,
    /// The node identity sent to the control plane.
    pub node: Node,
    /// Admin address (Envoy's default `127.0.0.1:15000`; port 0 picks one).
    pub admin: Option<SocketAddr>,
    /// Forward-proxy address (`HTTP_PROXY`), if any.
    pub http_proxy: Option<SocketAddr>,
    /// Where listeners bind.
    pub bind: BindPolicy,
    /// Who this proxy is, for metrics.
    pub identity: Identity,
    /// Delta, state of the world, or delta with fallback.
    pub xds_protocol: crate::xds::XdsProtocol,
}

/// Why a proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The admin address could not be bound.
    #[error("cannot bind the admin endpoint on {0}: {1}")]
    Admin(SocketAddr, std::io::Error),
    /// The forward-proxy address could not be bound.
    #[error("cannot bind the HTTP proxy port on {0}: {1} (choose another with --http-proxy)")]
    HttpProxy(SocketAddr, std::io::Error),
}

/// A running proxy.
#[derive(Debug)]
pub struct RunningProxy {
    /// The data path's state.
    pub state: Arc<ProxyState>,
    /// The xDS agent.
    pub agent: Arc<Agent>,
    /// The listeners.
    pub listeners: Arc<Listeners>,
    /// Where the admin endpoint listens.
    pub admin: Option<SocketAddr>,
    /// Where the forward proxy listens.
    pub http_proxy: Option<SocketAddr>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl RunningProxy {
    /// Starts a proxy (inside a Tokio runtime).
    pub async fn start(options: ProxyOptions) -> Result<Self, StartError> {
        let state = ProxyState::new(IstioMetrics::new(options.identity.clone()));
        let listeners = Listeners::new(state.clone(), options.bind.clone());
        let agent = Agent::new(state.clone(), listeners.clone());
        let mut tasks = Vec::new();
        let mut admin_addr = None;
        if let Some(address) = options.admin {
            let socket = admin::bind(address)
                .await
                .map_err(|e| StartError::Admin(address, e))?;
            admin_addr = socket.local_addr().ok();
            let admin = Admin {
                state: state.clone(),
                agent: agent.clone(),
                listeners: listeners.clone(),
            };
            tasks.push(tokio::spawn(admin::serve(admin, socket)).abort_handle());
        }
        let mut http_proxy = None;
        if let Some(address) = options.http_proxy {
            let socket = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|e| StartError::HttpProxy(address, e))?;
            http_proxy = socket.local_addr().ok();
            tasks.push(tokio::spawn(crate::forward_proxy::run(state.clone(), socket)).abort_handle());
        }
        listeners.add_own_addresses(&[admin_addr, http_proxy].into_iter().flatten().collect::<Vec<_>>());
        if let Some(discovery) = options.discovery.clone() {
            tasks.push(
                tokio::spawn(
                    agent
                        .clone()
                        .run(discovery, options.node.clone(), options.xds_protocol),
                )
                .abort_handle(),
            );
        }
        Ok(RunningProxy {
            state,
            agent,
            listeners,
            admin: admin_addr,
            http_proxy,
            tasks,
        })
    }

    /// Stops accepting, drains connections, and stops the xDS stream.
    pub fn shutdown(&self) {
        self.listeners.shutdown();
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        self.shutdown();
    }
}

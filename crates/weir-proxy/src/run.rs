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
    /// How the admin endpoint's connections stand under the global connection limit.
    pub admin_connections: admin::AdminConnections,
    /// Forward-proxy address (`HTTP_PROXY`), if any.
    pub http_proxy: Option<SocketAddr>,
    /// Where listeners bind.
    pub bind: BindPolicy,
    /// Who this proxy is, for metrics.
    pub identity: Identity,
    /// Delta, state of the world, or delta with fallback.
    pub xds_protocol: crate::xds::XdsProtocol,
    /// The overload manager (a bootstrap's `overload_manager`), if any.
    pub overload: Option<crate::overload::OverloadConfig>,
    /// What a bootstrap's `layered_runtime` sets (connection limits).
    pub runtime: crate::runtime::RuntimeConfig,
    /// How to give memory back to the system (`shrink_heap`), from the binary's allocator.
    pub heap: Option<crate::overload::HeapControl>,
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
    /// The overload manager asks for what this process cannot do.
    #[error("overload_manager: {0}")]
    Overload(&'static str),
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
    /// Stops the admin endpoint's own thread.
    admin_stop: Option<tokio::sync::watch::Sender<bool>>,
}

impl RunningProxy {
    /// Starts a proxy (inside a Tokio runtime).
    pub async fn start(options: ProxyOptions) -> Result<Self, StartError> {
        if options
            .overload
            .as_ref()
            .is_some_and(|o| o.has(crate::overload::Action::ShrinkHeap))
            && options.heap.is_none()
        {
            return Err(StartError::Overload(
                "envoy.overload_actions.shrink_heap needs an allocator that can release memory",
            ));
        }
        let limits = crate::connection_limits::ConnectionLimits::new(
            options
                .overload
                .as_ref()
                .and_then(|o| o.max_downstream_connections)
                .or(options.runtime.global_max_connections),
            options.runtime.listener_connection_limits.clone(),
        );
        let overload = crate::overload::Overload::new(options.overload.as_ref());
        let state = ProxyState::with_limits(IstioMetrics::new(options.identity.clone()), overload, limits);
        let listeners = Listeners::new(state.clone(), options.bind.clone());
        let agent = Agent::new(state.clone(), listeners.clone());
        let mut tasks = vec![tokio::spawn(crate::timer_anchor::run()).abort_handle()];
        if let Some(config) = options.overload.clone() {
            let overload = crate::overload::run(state.overload.clone(), config, options.heap);
            tasks.push(tokio::spawn(overload).abort_handle());
        }
        let mut admin_addr = None;
        let mut admin_stop = None;
        if let Some(address) = options.admin {
            let socket = admin::bind(address)
                .await
                .map_err(|e| StartError::Admin(address, e))?;
            admin_addr = socket.local_addr().ok();
            let admin = Admin {
                state: state.clone(),
                agent: agent.clone(),
                listeners: listeners.clone(),
                connections: options.admin_connections,
            };
            admin_stop = Some(serve_admin_apart(admin, socket).map_err(|e| StartError::Admin(address, e))?);
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
            admin_stop,
        })
    }

    /// Stops accepting, drains connections, and stops the xDS stream.
    pub fn shutdown(&self) {
        self.listeners.shutdown();
        if let Some(stop) = &self.admin_stop {
            stop.send_replace(true);
        }
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Serves the admin endpoint on a thread and runtime of its own (as ztunnel keeps admin and data
/// plane apart), so that it answers while the data path is saturated; returns its stop switch.
fn serve_admin_apart(
    admin: Admin,
    socket: tokio::net::TcpListener,
) -> std::io::Result<tokio::sync::watch::Sender<bool>> {
    let socket = socket.into_std()?;
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("weir-admin".into())
        .spawn(move || {
            runtime.block_on(async move {
                let socket = match tokio::net::TcpListener::from_std(socket) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "admin endpoint: cannot register its socket");
                        return;
                    }
                };
                tokio::select! {
                    () = admin::serve(admin, socket) => {}
                    _ = stopped.wait_for(|s| *s) => {}
                }
            });
        })?;
    Ok(stop)
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        self.shutdown();
    }
}

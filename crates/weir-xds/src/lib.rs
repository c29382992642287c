//! Weir's xDS side: Envoy v3 resources generated from the model, served over ADS.
//!
//! - [`generator`]: pure functions from a proxy's view to clusters, endpoints, listeners and
//!   routes, named as Istio names them.
//! - [`model`]: the store, registry and mesh defaults the control plane serves, with what each
//!   change means for proxies.
//! - [`server`]: the ADS server (state of the world and delta) over tonic.
//! - [`sotw`] and [`delta`]: the server side of both protocols as state machines without I/O;
//!   [`client`]: the client side (what a proxy runs), likewise.
//! - [`node`]: the proxy behind the node identity Istio's clients send.
//! - [`json`]: Envoy messages as Envoy-style JSON (`/config_dump` form), and the check that
//!   nothing unknown is emitted.
//!
//! This crate opens no data-plane sockets.

pub mod client;
pub mod delta;
pub mod generator;
pub mod json;
pub mod model;
pub mod node;
pub mod server;
pub mod sotw;

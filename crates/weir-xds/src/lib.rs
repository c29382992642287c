//! Weir's xDS side: Envoy v3 resources generated from the model, served over ADS.
//!
//! - [`json`]: Envoy messages as Envoy-style JSON (`/config_dump` form), for `weir config-dump`
//!   and golden tests.
//! - [`sotw`] and [`delta`]: the state-of-the-world and incremental xDS protocols (subscriptions,
//!   nonces, ACK/NACK, what each client holds) as state machines without I/O.
//! - [`node`]: the proxy behind the node identity Istio's clients send.
//!
//! This crate opens no data-plane sockets.

pub mod delta;
pub mod generator;
pub mod json;
pub mod model;
pub mod node;
pub mod server;
pub mod sotw;

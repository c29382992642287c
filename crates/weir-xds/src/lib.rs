//! Weir's xDS side: Envoy v3 resources generated from the model, served over ADS.
//!
//! - [`json`]: Envoy messages as Envoy-style JSON (`/config_dump` form), for `weir config-dump`
//!   and golden tests.
//! - [`sotw`]: the state-of-the-world xDS protocol (subscriptions, nonces, ACK/NACK) as a state
//!   machine without I/O.
//!
//! This crate opens no data-plane sockets.

pub mod json;
pub mod sotw;

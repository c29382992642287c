//! Weir's proxy. It only sees xDS: resources are compiled into immutable runtime structures
//! (precompiled regexes, ordered match tables) that the data path reads without locks, and
//! anything that cannot be honoured exactly is rejected with a precise reason, to be NACKed.
//!
//! Compilers (xDS → runtime configuration):
//! - [`routes`]: a RouteConfiguration compiled for request matching — virtual host selection by
//!   authority as Envoy does it, then the first route whose conditions hold; [`action`] and
//!   [`retry`]: what the matched route does; [`headers`]: header operations.
//! - [`cluster`] and [`endpoints`]: clusters (discovery, load-balancing policy, protocol) and
//!   endpoint sets from ClusterLoadAssignments; [`listener`]: listeners and filter-chain matching.

pub mod action;
pub mod admin;
pub mod body;
pub mod bootstrap;
pub mod breaker;
pub mod cluster;
pub mod connection_limits;
mod convert;
pub mod drain;
pub mod endpoints;
pub mod forward_proxy;
pub mod h2_settings;
pub mod header_facts;
pub mod headers;
pub mod http;
pub mod idle;
pub mod inspect;
pub mod io;
pub mod lb;
pub mod lean_server;
pub mod listener;
pub mod mirror;
pub mod names;
pub mod outlier;
pub mod overload;
pub mod path_normalization;
pub mod pool;
pub mod request_timer;
pub mod resources;
pub mod retry;
pub mod router;
pub mod routes;
pub mod run;
pub mod runtime;
pub mod serve;
pub mod state;
pub mod stats;
pub mod tcp;
pub mod timer_anchor;
pub mod tls;
pub mod upstream;
pub mod wake_gate;
pub mod xds;

pub use convert::Target;

//! Weir's proxy. It only sees xDS: resources are compiled into immutable runtime structures
//! (precompiled regexes, ordered match tables) that the data path reads without locks, and
//! anything that cannot be honoured exactly is rejected with a precise reason, to be NACKed.
//!
//! - [`routes`]: a RouteConfiguration compiled for request matching — virtual host selection by
//!   authority as Envoy does it, then the first route whose conditions hold.

pub mod routes;

//! Weir's model of the mesh: the config store and its sources.
//!
//! - [`store`]: every accepted object, with its origin (file and line), generation and creation
//!   time; changes are reported object by object.
//! - [`source`]: the [`ConfigSource`] trait that feeds the store; [`folder`] is the folder
//!   source, which reads a tree of YAML/JSON files and watches it.
//! - [`registry`]: the services and endpoints of the mesh, from Kubernetes Services and
//!   ServiceEntries, with WorkloadEntries and Pods, and auto-allocated addresses.
//! - [`conditions`]: the deterministic rules where Istio is undefined, reported as status
//!   conditions on the resources that lost.
//! - [`view`]: what applies to one proxy: visible services, outbound policy, VirtualServices,
//!   DestinationRules, Gateways.
//!
//! This crate knows nothing about Envoy.

pub mod conditions;
pub mod folder;
pub mod registry;
pub mod source;
pub mod store;
mod timestamp;
pub mod view;

pub use folder::{FolderSource, FolderWatch, SourceError};
pub use registry::{ServiceKey, ServiceRegistry};
pub use source::{ConfigSource, WatchedFolder};
pub use store::{Change, ConfigStore, ObjectKey, Origin, StoredObject};
pub use timestamp::parse_rfc3339;
pub use view::{Proxy, ProxyKind, ProxyView};

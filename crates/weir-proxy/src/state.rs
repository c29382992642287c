//! The proxy's configuration at one moment: compiled listeners, route configurations and
//! clusters, swapped in whole ([`ProxyState::install`]) so a request or connection always sees
//! one consistent version, and the data path reads it without locks.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use arc_swap::ArcSwap;

use crate::drain::ListenerDrains;
use crate::listener::ListenerConfig;
use crate::routes::CompiledRoutes;
use crate::stats::IstioMetrics;
use crate::upstream::ClusterRuntime;

/// A map by resource name, read on every request: hashed with foldhash, not SipHash (the names
/// come from the control plane, not from requests).
pub type ByName<T> = HashMap<String, T, foldhash::fast::RandomState>;

/// One consistent configuration.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Listeners by name.
    pub listeners: BTreeMap<String, Arc<ListenerConfig>>,
    /// Route configurations by name.
    pub routes: ByName<Arc<CompiledRoutes>>,
    /// Clusters by name.
    pub clusters: ByName<Arc<ClusterRuntime>>,
    /// Listener names by address.
    by_address: HashMap<SocketAddr, String>,
}

impl Snapshot {
    /// A snapshot of these parts.
    pub fn new(
        listeners: BTreeMap<String, Arc<ListenerConfig>>,
        routes: HashMap<String, Arc<CompiledRoutes>>,
        clusters: HashMap<String, Arc<ClusterRuntime>>,
    ) -> Self {
        let by_address = listeners
            .values()
            .filter(|l| !l.use_original_dst)
            .map(|l| (l.address, l.name.clone()))
            .collect();
        Snapshot {
            listeners,
            routes: routes.into_iter().collect(),
            clusters: clusters.into_iter().collect(),
            by_address,
        }
    }

    /// The listener that takes traffic redirected to a destination: the one owning it (see
    /// [`Self::listener_for`]), else the outbound original-destination listener
    /// (`virtualOutbound`), whose own chains then decide.
    pub fn listener_for_redirected(&self, destination: SocketAddr) -> Option<Arc<ListenerConfig>> {
        self.listener_for(destination)
            .or_else(|| {
                self.listeners
                    .values()
                    .find(|l| l.use_original_dst && l.traffic_direction_outbound())
            })
            .cloned()
    }

    /// The listener that owns a destination (original-destination hand-off): the one on that
    /// exact address, else the one on the wildcard address and that port.
    pub fn listener_for(&self, destination: SocketAddr) -> Option<&Arc<ListenerConfig>> {
        let wildcard = match destination.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        self.by_address
            .get(&destination)
            .or_else(|| {
                self.by_address
                    .get(&SocketAddr::new(wildcard, destination.port()))
            })
            .and_then(|name| self.listeners.get(name))
    }
}

/// Proxy-wide counters (Envoy's `http.*` / `listener.*` families, summed).
#[derive(Debug, Default)]
pub struct ProxyCounters {
    /// `downstream_rq_total`.
    pub downstream_rq_total: AtomicU64,
    /// `downstream_cx_total`.
    pub downstream_cx_total: AtomicU64,
    /// `downstream_cx_active` (gauge, as a counter pair would be needlessly costly).
    pub downstream_cx_active: AtomicU64,
    /// `no_route` (404 for lack of a route).
    pub no_route: AtomicU64,
    /// `no_cluster` (a route to an unknown cluster).
    pub no_cluster: AtomicU64,
    /// `no_filter_chain_match`.
    pub no_filter_chain_match: AtomicU64,
    /// `downstream_rq_idle_timeout` (the stream idle timeout answered 408).
    pub downstream_rq_idle_timeout: AtomicU64,
}

/// The addresses a proxy accepts on, asked about once per upstream attempt: most targets are
/// told apart by their port alone (one bit of a 65,536-bit map), without hashing the address.
struct OwnAddresses {
    ports: Box<[u64; 1024]>,
    addresses: std::collections::HashSet<SocketAddr, foldhash::fast::RandomState>,
}

impl std::fmt::Debug for OwnAddresses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The addresses; the port map only repeats them.
        f.debug_set().entries(&self.addresses).finish()
    }
}

impl Default for OwnAddresses {
    fn default() -> Self {
        OwnAddresses::new([])
    }
}

impl OwnAddresses {
    fn new(addresses: impl IntoIterator<Item = SocketAddr>) -> Self {
        let addresses: std::collections::HashSet<_, _> = addresses.into_iter().collect();
        let mut ports = Box::new([0u64; 1024]);
        for a in &addresses {
            ports[usize::from(a.port() / 64)] |= 1 << (a.port() % 64);
        }
        OwnAddresses { ports, addresses }
    }

    fn contains(&self, address: &SocketAddr) -> bool {
        let port = address.port();
        self.ports[usize::from(port / 64)] & (1 << (port % 64)) != 0 && self.addresses.contains(address)
    }
}

/// What the data path shares.
#[derive(Debug)]
pub struct ProxyState {
    snapshot: ArcSwap<Snapshot>,
    /// Istio's request and TCP metrics.
    pub metrics: IstioMetrics,
    /// Proxy-wide counters.
    pub counters: ProxyCounters,
    /// Addresses this proxy accepts on; a passthrough to one of them would loop.
    own_addresses: ArcSwap<OwnAddresses>,
    /// Each listener's current configuration and the drain of the connections it handles.
    pub drains: ListenerDrains,
}

impl ProxyState {
    /// An empty proxy.
    pub fn new(metrics: IstioMetrics) -> Arc<Self> {
        Arc::new(ProxyState {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            metrics,
            counters: ProxyCounters::default(),
            own_addresses: ArcSwap::from_pointee(OwnAddresses::default()),
            drains: ListenerDrains::default(),
        })
    }

    /// The current configuration.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Records the addresses this proxy accepts on.
    pub fn set_own_addresses(&self, addresses: impl IntoIterator<Item = SocketAddr>) {
        self.own_addresses.store(Arc::new(OwnAddresses::new(addresses)));
    }

    /// Whether a target is one of this proxy's own addresses (a passthrough there would loop).
    pub fn is_own(&self, target: &crate::convert::Target) -> bool {
        match target {
            crate::convert::Target::Socket(a) => self.own_addresses.load().contains(a),
            _ => false,
        }
    }

    /// Installs a new configuration.
    pub fn install(&self, snapshot: Snapshot) {
        self.drains.update(&snapshot.listeners);
        self.snapshot.store(Arc::new(snapshot));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::Target;

    #[test]
    fn only_the_exact_addresses_a_proxy_accepts_on_are_its_own() {
        let state = ProxyState::new(IstioMetrics::new(crate::stats::Identity::default()));
        let own: SocketAddr = "127.0.0.1:15001".parse().unwrap();
        let admin: SocketAddr = "[::1]:15000".parse().unwrap();
        assert!(
            !state.is_own(&Target::Socket(own)),
            "nothing is own before listeners bind"
        );
        state.set_own_addresses([own, admin]);
        assert!(state.is_own(&Target::Socket(own)));
        assert!(state.is_own(&Target::Socket(admin)));
        for other in [
            "127.0.0.2:15001",
            "127.0.0.1:15002",
            "127.0.0.1:14937",
            "[::1]:15001",
        ] {
            assert!(!state.is_own(&Target::Socket(other.parse().unwrap())), "{other}");
        }
        assert!(!state.is_own(&Target::Name("localhost".into(), 15001)));
        state.set_own_addresses(["0.0.0.0:0".parse().unwrap(), "10.0.0.1:65535".parse().unwrap()]);
        assert!(!state.is_own(&Target::Socket(own)), "replaced, not added to");
        assert!(state.is_own(&Target::Socket("10.0.0.1:65535".parse().unwrap())));
        assert!(state.is_own(&Target::Socket("0.0.0.0:0".parse().unwrap())));
    }
}

//! The proxy's configuration at one moment: compiled listeners, route configurations and
//! clusters, swapped in whole ([`ProxyState::install`]) so a request or connection always sees
//! one consistent version, and the data path reads it without locks.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

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
        let owners = listeners.values().filter(|l| !l.use_original_dst);
        let mut by_address: HashMap<SocketAddr, String> =
            owners.clone().map(|l| (l.address, l.name.clone())).collect();
        // A dual-stack IPv6 listener also owns its IPv4 address, unless a listener is on that
        // address itself (Envoy's order).
        for l in owners.filter(|l| l.socket.ipv4_compat) {
            if let Some(alias) = crate::convert::ipv4_alias(l.address) {
                by_address.entry(alias).or_insert_with(|| l.name.clone());
            }
        }
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
    /// `downstream_rq_timeout` (the request did not arrive whole within the connection
    /// manager's `request_timeout`: 408).
    pub downstream_rq_timeout: AtomicU64,
    /// `downstream_rq_failed_path_normalization` (a path refused with 400 by `normalize_path`
    /// or `path_with_escaped_slashes_action`).
    pub downstream_rq_failed_path_normalization: AtomicU64,
    /// `downstream_rq_redirected_with_normalized_path` (307 to the path with its escaped
    /// slashes decoded).
    pub downstream_rq_redirected_with_normalized_path: AtomicU64,
    /// `downstream_cx_overflow` (a listener's connection limit closed a connection).
    pub downstream_cx_overflow: AtomicU64,
    /// `downstream_global_cx_overflow` (the global connection limit closed a connection).
    pub downstream_global_cx_overflow: AtomicU64,
    /// `downstream_cx_overload_reject` (`reject_incoming_connections` closed a connection).
    pub downstream_cx_overload_reject: AtomicU64,
    /// `downstream_rq_overload_close` (`stop_accepting_requests` answered 503).
    pub downstream_rq_overload_close: AtomicU64,
    /// `downstream_cx_overload_disable_keepalive` (`disable_http_keepalive` closed a connection
    /// after a response).
    pub downstream_cx_overload_disable_keepalive: AtomicU64,
    /// `http1.` and `http2.requests_rejected_with_underscores_in_headers` (by HTTP version:
    /// index 0 for HTTP/1, 1 for HTTP/2).
    pub requests_rejected_with_underscores_in_headers: [AtomicU64; 2],
    /// `http1.` and `http2.dropped_headers_with_underscores` (by HTTP version, as above).
    pub dropped_headers_with_underscores: [AtomicU64; 2],
}

/// The addresses a proxy accepts on, asked about once per upstream attempt: most targets are
/// told apart by their port alone (one bit of a 65,536-bit map), without hashing the address.
///
/// A listener bound to a wildcard address (`0.0.0.0:P`, `[::]:P`) accepts on port `P` of every
/// address of the host, so those are its own too: loopback addresses, and whatever else the
/// kernel routes to itself (see [`routes_to_this_host`]).
struct OwnAddresses {
    ports: Box<[u64; 1024]>,
    addresses: std::collections::HashSet<SocketAddr, foldhash::fast::RandomState>,
    /// The wildcard addresses among `addresses` (rarely more than one or two).
    wildcards: Vec<SocketAddr>,
    /// What [`routes_to_this_host`] answered, and when: a gateway on `0.0.0.0:80` in front of
    /// backends on port 80 asks about every upstream address, for every request.
    local: std::sync::RwLock<HashMap<IpAddr, (bool, Instant), foldhash::fast::RandomState>>,
}

/// How long an answer of [`routes_to_this_host`] is reused: addresses come and go with
/// interfaces, rarely.
const LOCAL_ANSWER_TTL: Duration = Duration::from_secs(10);
/// At most this many answers are kept (beyond it, the cache starts over).
const LOCAL_ANSWERS_KEPT: usize = 4096;

impl std::fmt::Debug for OwnAddresses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The addresses; the port map and the wildcards only repeat them.
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
        let wildcards = addresses
            .iter()
            .filter(|a| a.ip().is_unspecified())
            .copied()
            .collect();
        OwnAddresses {
            ports,
            addresses,
            wildcards,
            local: Default::default(),
        }
    }

    fn contains(&self, address: &SocketAddr) -> bool {
        let port = address.port();
        if self.ports[usize::from(port / 64)] & (1 << (port % 64)) == 0 {
            return false;
        }
        // An IPv4-mapped target is the IPv4 address it maps (a dual-stack listener is listed
        // under its IPv4 address too, see `Listeners`).
        let ip = address.ip().to_canonical();
        if self.addresses.contains(&SocketAddr::new(ip, port)) {
            return true;
        }
        let accepted_by_a_wildcard = self
            .wildcards
            .iter()
            .any(|w| w.port() == port && w.is_ipv6() == ip.is_ipv6());
        accepted_by_a_wildcard && (ip.is_loopback() || ip.is_unspecified() || self.is_local(ip))
    }

    /// [`routes_to_this_host`], answered from the cache while the answer is fresh.
    fn is_local(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let cached = self.local.read().ok().and_then(|local| local.get(&ip).copied());
        if let Some((answer, at)) = cached
            && now.duration_since(at) < LOCAL_ANSWER_TTL
        {
            return answer;
        }
        let answer = routes_to_this_host(ip);
        if let Ok(mut local) = self.local.write() {
            if local.len() >= LOCAL_ANSWERS_KEPT {
                local.clear();
            }
            local.insert(ip, (answer, now));
        }
        answer
    }
}

/// Whether `ip` is an address of this host. The kernel routes its own addresses through its
/// `local` table, with the address itself as the source; connecting a UDP socket looks that
/// route up and sends nothing. Asked only for a target on the port of a wildcard listener.
fn routes_to_this_host(ip: IpAddr) -> bool {
    let target = SocketAddr::new(ip, 9);
    socket2::Socket::new(socket2::Domain::for_address(target), socket2::Type::DGRAM, None)
        .and_then(|socket| {
            socket.connect(&target.into())?;
            socket.local_addr()
        })
        .is_ok_and(|local| local.as_socket().is_some_and(|local| local.ip() == ip))
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
    /// The overload manager's actions, as the data path reads them.
    pub overload: Arc<crate::overload::Overload>,
    /// Downstream connection limits, global and per listener.
    pub connection_limits: crate::connection_limits::ConnectionLimits,
}

impl ProxyState {
    /// An empty proxy, without overload manager or connection limits.
    pub fn new(metrics: IstioMetrics) -> Arc<Self> {
        Self::with_limits(
            metrics,
            crate::overload::Overload::default(),
            crate::connection_limits::ConnectionLimits::default(),
        )
    }

    /// An empty proxy under an overload manager and connection limits.
    pub fn with_limits(
        metrics: IstioMetrics,
        overload: crate::overload::Overload,
        connection_limits: crate::connection_limits::ConnectionLimits,
    ) -> Arc<Self> {
        Arc::new(ProxyState {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            metrics,
            counters: ProxyCounters::default(),
            own_addresses: ArcSwap::from_pointee(OwnAddresses::default()),
            drains: ListenerDrains::default(),
            overload: Arc::new(overload),
            connection_limits,
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

    /// Whether a target is one of this proxy's own addresses (a passthrough there would loop):
    /// an address it accepts on, or any address of this host on the port of a listener bound to
    /// a wildcard address.
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
        assert!(
            state.is_own(&Target::Socket("[::ffff:10.0.0.1]:65535".parse().unwrap())),
            "an IPv4-mapped target is its IPv4 address"
        );
        assert!(state.is_own(&Target::Socket("0.0.0.0:0".parse().unwrap())));
    }

    #[test]
    fn a_redirected_connection_goes_to_the_listener_that_accepts_its_destination() {
        let listeners = [
            ("v4_80", "0.0.0.0:80", false),
            ("dual_80", "[::]:80", true),
            ("dual_9080", "[::]:9080", true),
            ("v6_9090", "[::]:9090", false),
            ("mapped_7070", "[::ffff:10.0.0.5]:7070", true),
        ]
        .into_iter()
        .map(|(name, address, ipv4_compat)| {
            let l = crate::listener::bare_listener(name, address.parse().unwrap(), ipv4_compat, false);
            (name.to_string(), Arc::new(l))
        })
        .collect();
        let snapshot = Snapshot::new(listeners, HashMap::new(), HashMap::new());
        let owner = |destination: &str| {
            snapshot
                .listener_for(destination.parse().unwrap())
                .map(|l| l.name.as_str())
        };
        // A listener on the IPv4 address itself comes before a dual-stack one (Envoy's order).
        assert_eq!(owner("10.1.1.1:80"), Some("v4_80"));
        assert_eq!(owner("[2001:db8::1]:80"), Some("dual_80"));
        assert_eq!(owner("10.1.1.1:9080"), Some("dual_9080"));
        assert_eq!(owner("10.1.1.1:9090"), None, "IPv6-only");
        assert_eq!(owner("[2001:db8::1]:9090"), Some("v6_9090"));
        assert_eq!(owner("10.0.0.5:7070"), Some("mapped_7070"));
        assert_eq!(owner("10.0.0.6:7070"), None);
    }

    #[test]
    fn a_wildcard_listener_owns_its_port_on_every_address_of_the_host() {
        let state = ProxyState::new(IstioMetrics::new(crate::stats::Identity::default()));
        state.set_own_addresses(["0.0.0.0:15001".parse().unwrap(), "[::]:15006".parse().unwrap()]);
        let own = |a: &str| state.is_own(&Target::Socket(a.parse().unwrap()));
        for reached_through_the_wildcard in [
            "0.0.0.0:15001",
            "127.0.0.1:15001",
            "127.0.0.53:15001",
            "[::1]:15006",
            "[::]:15006",
            "[::ffff:127.0.0.1]:15001",
        ] {
            assert!(
                own(reached_through_the_wildcard),
                "{reached_through_the_wildcard}"
            );
        }
        for elsewhere in [
            "127.0.0.1:15002",
            "[::1]:15001",
            "192.0.2.1:15001",
            "[2001:db8::1]:15006",
            // `[::]` bound IPv6-only; a dual-stack one is listed under `0.0.0.0` too.
            "127.0.0.1:15006",
        ] {
            assert!(!own(elsewhere), "{elsewhere}");
        }
    }

    #[test]
    fn answers_about_the_hosts_addresses_are_reused_while_fresh_and_bounded() {
        let own = OwnAddresses::new(["0.0.0.0:80".parse().unwrap()]);
        let ip: IpAddr = "192.0.2.77".parse().unwrap();
        assert!(!own.is_local(ip), "no address of this host");
        // A fresh answer is reused as it is (here, one planted to tell it from a new lookup)…
        own.local.write().unwrap().insert(ip, (true, Instant::now()));
        assert!(own.is_local(ip));
        // …and a stale one is looked up again.
        let stale = Instant::now()
            .checked_sub(LOCAL_ANSWER_TTL + Duration::from_secs(1))
            .unwrap();
        own.local.write().unwrap().insert(ip, (true, stale));
        assert!(!own.is_local(ip));
        for n in 0..LOCAL_ANSWERS_KEPT as u32 + 10 {
            own.is_local(IpAddr::V4((0xc612_0000 + n).into())); // 198.18.0.0/15, benchmarking
        }
        assert!(own.local.read().unwrap().len() <= LOCAL_ANSWERS_KEPT);
    }

    #[test]
    fn the_host_routes_its_own_addresses_to_itself() {
        // 127.0.0.1 is routed through the local table like any address of the host; the
        // documentation ranges are no address of it.
        assert!(routes_to_this_host("127.0.0.1".parse().unwrap()));
        assert!(!routes_to_this_host("192.0.2.1".parse().unwrap()));
        assert!(!routes_to_this_host("2001:db8::1".parse().unwrap()));
    }
}

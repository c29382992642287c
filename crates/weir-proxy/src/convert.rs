//! Small conversions from Envoy's protobuf types, shared by the compilers.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{Address, address, socket_address};
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration};
use prost::Message;

/// A protobuf duration as a std one; `None` for a negative or out-of-range value.
pub fn duration(d: &PbDuration) -> Option<Duration> {
    let secs = u64::try_from(d.seconds).ok()?;
    let nanos = u32::try_from(d.nanos).ok()?;
    (nanos < 1_000_000_000).then(|| Duration::new(secs, nanos))
}

/// An optional duration field: absent → `None`, invalid → the error text.
pub fn opt_duration(d: Option<&PbDuration>, field: &str) -> Result<Option<Duration>, String> {
    d.map(|d| duration(d).ok_or_else(|| format!("{field}: invalid duration {}s {}ns", d.seconds, d.nanos)))
        .transpose()
}

/// Where an address points.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// An IP and port.
    Socket(SocketAddr),
    /// A name to resolve (DNS clusters) and port.
    Name(String, u16),
    /// A unix-domain socket path.
    Unix(PathBuf),
}

impl std::hash::Hash for Target {
    /// An IPv4 address and port, the common endpoint, is hashed as one word (the connection
    /// pools look an endpoint up twice per request); the rest field by field after a tag.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            Target::Socket(SocketAddr::V4(a)) => {
                state.write_u64(u64::from(a.ip().to_bits()) << 16 | u64::from(a.port()));
            }
            Target::Socket(SocketAddr::V6(a)) => {
                state.write_u8(6);
                a.hash(state);
            }
            Target::Name(name, port) => {
                state.write_u8(1);
                name.hash(state);
                port.hash(state);
            }
            Target::Unix(path) => {
                state.write_u8(2);
                path.hash(state);
            }
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Socket(a) => write!(f, "{a}"),
            Target::Name(h, p) => write!(f, "{h}:{p}"),
            Target::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

/// An Envoy address as a [`Target`]: a socket address whose host is not an IP is a name (only
/// DNS clusters accept those; the caller decides).
pub fn target(a: &Address) -> Result<Target, String> {
    match &a.address {
        Some(address::Address::SocketAddress(s)) => {
            if s.protocol != 0 {
                return Err(format!("address {}: only TCP is supported", s.address));
            }
            let port = match &s.port_specifier {
                Some(socket_address::PortSpecifier::PortValue(p)) => u16::try_from(*p)
                    .map_err(|_| format!("address {}: port {p} is out of range", s.address))?,
                Some(socket_address::PortSpecifier::NamedPort(n)) => {
                    return Err(format!(
                        "address {}: named port {n:?} is not supported",
                        s.address
                    ));
                }
                None => 0,
            };
            if !s.network_namespace_filepath.is_empty() {
                return Err(format!(
                    "address {}: network_namespace_filepath {:?} is not supported",
                    s.address, s.network_namespace_filepath
                ));
            }
            if !s.resolver_name.is_empty() {
                return Err(format!(
                    "address {}: custom resolver {:?} is not supported",
                    s.address, s.resolver_name
                ));
            }
            Ok(match s.address.parse::<IpAddr>() {
                Ok(ip) => Target::Socket(SocketAddr::new(ip, port)),
                Err(_) => Target::Name(s.address.clone(), port),
            })
        }
        Some(address::Address::Pipe(p)) => {
            if p.path.starts_with('@') {
                return Err(format!("abstract unix socket {:?} is not supported", p.path));
            }
            Ok(Target::Unix(PathBuf::from(&p.path)))
        }
        Some(address::Address::EnvoyInternalAddress(_)) => Err("internal addresses are not supported".into()),
        None => Err("address is empty".into()),
    }
}

/// An address that must be an IP and port (listeners).
pub fn socket(a: &Address) -> Result<SocketAddr, String> {
    match target(a)? {
        Target::Socket(s) => Ok(s),
        other => Err(format!("address {other} must be an IP address and port")),
    }
}

/// The IPv4 address an IPv6 listener address also accepts on when it is bound dual-stack
/// (Envoy's `ipv4_compat`): `[::]:P` accepts on `0.0.0.0:P`, `[::ffff:a.b.c.d]:P` on
/// `a.b.c.d:P`. Other addresses have none.
pub fn ipv4_alias(address: SocketAddr) -> Option<SocketAddr> {
    let SocketAddr::V6(v6) = address else {
        return None;
    };
    let ip = if v6.ip().is_unspecified() {
        std::net::Ipv4Addr::UNSPECIFIED
    } else {
        v6.ip().to_ipv4_mapped()?
    };
    Some(SocketAddr::new(IpAddr::V4(ip), address.port()))
}

/// Whether a listener address is bound dual-stack (`ipv4_compat`), refused as Envoy refuses it
/// where it cannot apply: on an IPv4 address, or an IPv6 one other than `::` and IPv4-mapped
/// addresses.
pub fn listener_ipv4_compat(a: &Address, address: SocketAddr) -> Result<bool, String> {
    let set = matches!(&a.address, Some(address::Address::SocketAddress(s)) if s.ipv4_compat);
    if set && ipv4_alias(address).is_none() {
        return Err(format!(
            "Only IPv6 address '::' or valid IPv4-mapped IPv6 address can set ipv4_compat: {address}"
        ));
    }
    Ok(set)
}

/// Decodes a typed config whose type URL must be `expected`.
pub fn decode_any<M: Message + Default>(any: &Any, expected: &str, what: &str) -> Result<M, String> {
    let found = any.type_url.rsplit('/').next().unwrap_or_default();
    if found != expected {
        return Err(format!(
            "{what}: typed config {found:?} is not supported (expected {expected})"
        ));
    }
    M::decode(any.value.as_slice()).map_err(|e| format!("{what}: {expected} does not decode: {e}"))
}

/// A `SocketAddress` (not wrapped in an `Address`) as an IP and port.
pub fn socket_address(
    s: &envoy_types::pb::envoy::config::core::v3::SocketAddress,
) -> Result<SocketAddr, String> {
    socket(&Address {
        address: Some(address::Address::SocketAddress(s.clone())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_that_are_equal_hash_alike_and_different_ones_stay_apart_in_a_map() {
        let targets = [
            Target::Socket("10.0.0.1:80".parse().unwrap()),
            Target::Socket("10.0.0.1:81".parse().unwrap()),
            Target::Socket("10.0.0.2:80".parse().unwrap()),
            Target::Socket("0.0.0.0:0".parse().unwrap()),
            Target::Socket("[::1]:80".parse().unwrap()),
            Target::Socket("[::ffff:10.0.0.1]:80".parse().unwrap()),
            Target::Name("svc.test".into(), 80),
            Target::Name("svc.test".into(), 81),
            Target::Unix(PathBuf::from("/run/a.sock")),
        ];
        let mut seen: std::collections::HashMap<Target, usize, foldhash::fast::RandomState> =
            std::collections::HashMap::default();
        for (i, t) in targets.iter().enumerate() {
            assert_eq!(seen.insert(t.clone(), i), None, "{t} taken for another target");
        }
        for (i, t) in targets.iter().enumerate() {
            assert_eq!(seen.get(&t.clone()), Some(&i), "{t}");
        }
        let hash = |t: &Target| std::hash::BuildHasher::hash_one(&foldhash::fast::FixedState::default(), t);
        let again = Target::Socket(SocketAddr::from(([10, 0, 0, 1], 80)));
        assert_eq!(hash(&again), hash(&targets[0]));
    }

    #[test]
    fn ipv4_compat_applies_to_the_ipv6_wildcard_and_ipv4_mapped_addresses_only() {
        use envoy_types::pb::envoy::config::core::v3::SocketAddress;
        let listener = |ip: &str, ipv4_compat: bool| {
            let a = Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: ip.into(),
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(8080)),
                    ipv4_compat,
                    ..Default::default()
                })),
            };
            socket(&a).and_then(|s| listener_ipv4_compat(&a, s).map(|c| (s, c)))
        };
        for (ip, alias) in [
            ("::", "0.0.0.0:8080"),
            ("::0", "0.0.0.0:8080"),
            ("::ffff:10.1.2.3", "10.1.2.3:8080"),
        ] {
            let (address, compat) = listener(ip, true).unwrap();
            assert!(compat, "{ip}");
            assert_eq!(ipv4_alias(address), Some(alias.parse().unwrap()), "{ip}");
        }
        // Without the option nothing is refused, and the address is bound IPv6-only.
        assert!(!listener("::", false).unwrap().1);
        for (ip, shown) in [
            ("::1", "[::1]:8080"),
            ("0.0.0.0", "0.0.0.0:8080"),
            ("2001:db8::1", "[2001:db8::1]:8080"),
        ] {
            assert_eq!(
                listener(ip, true).unwrap_err(),
                format!(
                    "Only IPv6 address '::' or valid IPv4-mapped IPv6 address can set ipv4_compat: {shown}"
                )
            );
        }
        assert_eq!(ipv4_alias("[::1]:80".parse().unwrap()), None);
        assert_eq!(ipv4_alias("127.0.0.1:80".parse().unwrap()), None);
    }
}

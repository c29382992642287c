//! Address auto-allocation for ServiceEntries without `addresses` (reference §4.3).
//!
//! Each service (namespace/host) gets one IPv4 address from a range (Istio's `240.240.0.0/16`
//! by default). The address is chosen by hashing the namespace and host (FNV-1a) and probing
//! from there, so the same configuration always yields the same addresses; services are placed
//! oldest first, so on a collision the older service keeps the hashed address. Once given, an
//! address sticks to its service for as long as the service exists: another object appearing or
//! changing never moves it. It moves only when a user-specified address (`spec.addresses`, a
//! cluster IP) claims it. [`AddressAllocator::export`] and [`AddressAllocator::restore`] carry
//! assignments across restarts.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::SystemTime;

use super::ServiceKey;

/// Istio's default auto-allocation range.
pub const DEFAULT_RANGE: (Ipv4Addr, u8) = (Ipv4Addr::new(240, 240, 0, 0), 16);

/// A bad allocation range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RangeError {
    /// Not `a.b.c.d/len`.
    #[error("invalid address range {0:?}: expected an IPv4 CIDR such as 240.240.0.0/16")]
    Syntax(String),
    /// Too small or too large.
    #[error("address range {0} is too small or too large: the prefix length must be between 8 and 24")]
    Size(String),
}

/// Assigns addresses to services.
#[derive(Clone, Debug)]
pub struct AddressAllocator {
    base: u32,
    size: u32,
    assigned: BTreeMap<ServiceKey, Ipv4Addr>,
}

impl Default for AddressAllocator {
    fn default() -> Self {
        let (ip, len) = DEFAULT_RANGE;
        AddressAllocator::with_range(ip, len).unwrap_or_else(|_| unreachable!("the default range is valid"))
    }
}

fn fnv1a(text: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

impl AddressAllocator {
    /// An allocator for `ip/len`.
    pub fn with_range(ip: Ipv4Addr, len: u8) -> Result<Self, RangeError> {
        if !(8..=24).contains(&len) {
            return Err(RangeError::Size(format!("{ip}/{len}")));
        }
        let size = 1u32 << (32 - u32::from(len));
        let base = u32::from(ip) & !(size - 1);
        Ok(AddressAllocator {
            base,
            size,
            assigned: BTreeMap::new(),
        })
    }

    /// Parses `a.b.c.d/len`.
    pub fn parse_range(range: &str) -> Result<Self, RangeError> {
        let (ip, len) = range
            .split_once('/')
            .ok_or_else(|| RangeError::Syntax(range.into()))?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| RangeError::Syntax(range.into()))?;
        let len: u8 = len.parse().map_err(|_| RangeError::Syntax(range.into()))?;
        AddressAllocator::with_range(ip, len)
    }

    /// Whether `ip` is inside the range.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip).wrapping_sub(self.base) < self.size
    }

    /// Assigns an address to every service of `wanted` (with its creation time) and returns
    /// them. Services no longer wanted lose theirs; `reserved` addresses (given by users) are
    /// never handed out, and a service holding one is moved.
    pub fn allocate(
        &mut self,
        wanted: &[(ServiceKey, SystemTime)],
        reserved: &BTreeSet<Ipv4Addr>,
    ) -> BTreeMap<ServiceKey, Ipv4Addr> {
        let mut order: Vec<&(ServiceKey, SystemTime)> = wanted.iter().collect();
        order.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        let keep: BTreeSet<&ServiceKey> = wanted.iter().map(|(k, _)| k).collect();
        self.assigned.retain(|k, ip| {
            keep.contains(k) && !reserved.contains(ip) && self_contains(self.base, self.size, *ip)
        });
        // Two services holding one address (possible after a restore): the older keeps it.
        let mut used: BTreeSet<Ipv4Addr> = BTreeSet::new();
        for (key, _) in &order {
            if let Some(ip) = self.assigned.get(key).copied()
                && !used.insert(ip)
            {
                self.assigned.remove(key);
            }
        }
        for (key, _) in order {
            if self.assigned.contains_key(key) {
                continue;
            }
            if let Some(ip) = self.probe(key, &used, reserved) {
                used.insert(ip);
                self.assigned.insert(key.clone(), ip);
            }
        }
        self.assigned.clone()
    }

    fn probe(
        &self,
        key: &ServiceKey,
        used: &BTreeSet<Ipv4Addr>,
        reserved: &BTreeSet<Ipv4Addr>,
    ) -> Option<Ipv4Addr> {
        let start = fnv1a(&format!("{}/{}", key.namespace, key.hostname)) % self.size;
        (0..self.size)
            .map(|i| Ipv4Addr::from(self.base + (start + i) % self.size))
            .find(|ip| {
                let last = ip.octets()[3];
                last != 0 && last != 255 && !used.contains(ip) && !reserved.contains(ip)
            })
    }

    /// The current assignments.
    pub fn assignments(&self) -> &BTreeMap<ServiceKey, Ipv4Addr> {
        &self.assigned
    }

    /// Assignments as text, one `namespace/host address` per line, for saving across restarts.
    pub fn export(&self) -> String {
        self.assigned
            .iter()
            .map(|(k, ip)| format!("{}/{} {ip}\n", k.namespace, k.hostname))
            .collect()
    }

    /// Takes back assignments saved by [`AddressAllocator::export`]. Lines that do not parse, or
    /// addresses outside the range, are ignored (those services are placed afresh).
    pub fn restore(&mut self, saved: &str) {
        for line in saved.lines() {
            let Some((key, ip)) = line.trim().split_once(' ') else {
                continue;
            };
            let (Some((namespace, hostname)), Ok(ip)) = (key.split_once('/'), ip.trim().parse::<Ipv4Addr>())
            else {
                continue;
            };
            if self.contains(ip) {
                self.assigned.insert(
                    ServiceKey {
                        namespace: namespace.into(),
                        hostname: hostname.into(),
                    },
                    ip,
                );
            }
        }
    }
}

fn self_contains(base: u32, size: u32, ip: Ipv4Addr) -> bool {
    u32::from(ip).wrapping_sub(base) < size
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn key(host: &str) -> ServiceKey {
        ServiceKey {
            namespace: "default".into(),
            hostname: host.into(),
        }
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn deterministic_and_in_range() {
        let wanted: Vec<_> = (0..100)
            .map(|i| (key(&format!("h{i}.example.com")), at(i)))
            .collect();
        let a = AddressAllocator::default().allocate(&wanted, &BTreeSet::new());
        let b = AddressAllocator::default().allocate(&wanted, &BTreeSet::new());
        assert_eq!(a, b);
        assert_eq!(a.len(), 100);
        let distinct: BTreeSet<_> = a.values().collect();
        assert_eq!(distinct.len(), 100);
        assert!(a.values().all(|ip| ip.octets()[0] == 240
            && ip.octets()[1] == 240
            && ip.octets()[3] != 0
            && ip.octets()[3] != 255));
    }

    #[test]
    fn assignments_never_move_when_others_come_and_go() {
        let mut alloc = AddressAllocator::with_range(Ipv4Addr::new(10, 0, 0, 0), 24).unwrap();
        let mut wanted: Vec<_> = (0..50).map(|i| (key(&format!("h{i}")), at(100 + i))).collect();
        let before = alloc.allocate(&wanted, &BTreeSet::new());
        // A much older service appears: in a fresh allocator it could win a hash slot.
        wanted.push((key("newcomer"), at(0)));
        wanted.remove(10);
        let after = alloc.allocate(&wanted, &BTreeSet::new());
        for (k, ip) in &before {
            if k.hostname != "h10" {
                assert_eq!(after.get(k), Some(ip), "{k} moved");
            }
        }
        assert!(after.contains_key(&key("newcomer")));
    }

    #[test]
    fn a_user_address_takes_precedence() {
        let mut alloc = AddressAllocator::default();
        let wanted = vec![(key("a.example.com"), at(1))];
        let ip = alloc.allocate(&wanted, &BTreeSet::new())[&key("a.example.com")];
        let moved = alloc.allocate(&wanted, &BTreeSet::from([ip]))[&key("a.example.com")];
        assert_ne!(ip, moved);
    }

    #[test]
    fn oldest_wins_a_conflict_after_restore() {
        let mut alloc = AddressAllocator::default();
        alloc.restore("default/old.example.com 240.240.1.1\ndefault/new.example.com 240.240.1.1\ngarbage\ndefault/out 10.0.0.1\n");
        let wanted = vec![(key("new.example.com"), at(2)), (key("old.example.com"), at(1))];
        let out = alloc.allocate(&wanted, &BTreeSet::new());
        assert_eq!(out[&key("old.example.com")], Ipv4Addr::new(240, 240, 1, 1));
        assert_ne!(out[&key("new.example.com")], Ipv4Addr::new(240, 240, 1, 1));
        let mut again = AddressAllocator::default();
        again.restore(&alloc.export());
        assert_eq!(again.allocate(&wanted, &BTreeSet::new()), out);
    }

    #[test]
    fn ranges() {
        assert!(AddressAllocator::parse_range("240.240.0.0/16").is_ok());
        assert!(matches!(
            AddressAllocator::parse_range("240.240.0.0"),
            Err(RangeError::Syntax(_))
        ));
        assert!(matches!(
            AddressAllocator::parse_range("240.0.0.0/30"),
            Err(RangeError::Size(_))
        ));
    }
}

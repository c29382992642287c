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
    /// Each service's address (restored ones may still be contested).
    assigned: BTreeMap<ServiceKey, Ipv4Addr>,
    /// Who holds each address in use.
    holders: BTreeMap<Ipv4Addr, ServiceKey>,
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
            holders: BTreeMap::new(),
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

    /// Assigns an address to every service of `wanted` (with its creation time), oldest first,
    /// and returns them. Services no longer wanted lose theirs; `reserved` addresses (given by
    /// users) are never handed out, and a service holding one is moved.
    pub fn allocate(
        &mut self,
        wanted: &[(ServiceKey, SystemTime)],
        reserved: &BTreeSet<Ipv4Addr>,
    ) -> BTreeMap<ServiceKey, Ipv4Addr> {
        let keep: BTreeSet<&ServiceKey> = wanted.iter().map(|(k, _)| k).collect();
        let gone: Vec<ServiceKey> = self
            .assigned
            .keys()
            .filter(|k| !keep.contains(k))
            .cloned()
            .collect();
        for key in &gone {
            self.release(key);
        }
        let mut order: Vec<&(ServiceKey, SystemTime)> = wanted.iter().collect();
        order.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        for (key, _) in order {
            self.assign(key, &|ip| reserved.contains(&ip));
        }
        self.assigned.clone()
    }

    /// The address of `key`: the one it has (unless `reserved` now claims it, or an older
    /// service took it first), else a new one. Callers place services oldest first.
    pub fn assign(&mut self, key: &ServiceKey, reserved: &dyn Fn(Ipv4Addr) -> bool) -> Option<Ipv4Addr> {
        if let Some(ip) = self.assigned.get(key).copied() {
            let usable = !reserved(ip) && self.contains(ip);
            match self.holders.get(&ip) {
                Some(holder) if holder == key && usable => return Some(ip),
                None if usable => {
                    self.holders.insert(ip, key.clone());
                    return Some(ip);
                }
                _ => self.release(key),
            }
        }
        let start = fnv1a(&format!("{}/{}", key.namespace, key.hostname)) % self.size;
        let ip = (0..self.size)
            .map(|i| Ipv4Addr::from(self.base + (start + i) % self.size))
            .find(|ip| {
                let last = ip.octets()[3];
                last != 0 && last != 255 && !self.holders.contains_key(ip) && !reserved(*ip)
            })?;
        self.assigned.insert(key.clone(), ip);
        self.holders.insert(ip, key.clone());
        Some(ip)
    }

    /// Gives back the address of `key`.
    pub fn release(&mut self, key: &ServiceKey) {
        if let Some(ip) = self.assigned.remove(key)
            && self.holders.get(&ip) == Some(key)
        {
            self.holders.remove(&ip);
        }
    }

    /// The service holding `ip`.
    pub fn holder(&self, ip: Ipv4Addr) -> Option<&ServiceKey> {
        self.holders.get(&ip)
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

    /// Takes back assignments saved by [`AddressAllocator::export`]. Each service gets its saved
    /// address back when it next asks, unless an older service asked for the same one first.
    /// Lines that do not parse, and addresses outside the range, are ignored.
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
                let key = ServiceKey {
                    namespace: namespace.into(),
                    hostname: hostname.into(),
                };
                self.release(&key);
                self.assigned.insert(key, ip);
            }
        }
    }
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

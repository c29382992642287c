//! Downstream connection limits, as Envoy enforces them when it accepts a connection: a global
//! limit over every listener (the overload manager's downstream connections monitor, or the
//! runtime key `overload.global_downstream_max_connections`) and a limit per listener (the
//! runtime key `envoy.resource_limits.listener.<name>.connection_limit`). A connection over a
//! limit is closed at once, before any of its bytes are read. Connections on a listener with
//! `ignore_global_conn_limit` count toward the global limit but are never refused by it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The limits, fixed when the proxy starts.
#[derive(Debug, Default)]
pub struct ConnectionLimits {
    global: Option<u64>,
    listeners: HashMap<String, Arc<ListenerCount>>,
}

/// A listener's limit and the connections it has open.
#[derive(Debug)]
struct ListenerCount {
    limit: u64,
    active: AtomicU64,
}

/// Which limit refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The global limit (`downstream_global_cx_overflow`).
    Global,
    /// The listener's limit (`downstream_cx_overflow`).
    Listener,
}

/// A connection's place under the limits, given back when it is dropped.
#[derive(Debug)]
pub struct Admitted<'a> {
    active: &'a AtomicU64,
    listener: Option<Arc<ListenerCount>>,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
        if let Some(l) = &self.listener {
            l.active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl ConnectionLimits {
    /// Limits: the global one, and per listener name.
    pub fn new(global: Option<u64>, listeners: impl IntoIterator<Item = (String, u64)>) -> Self {
        ConnectionLimits {
            global,
            listeners: listeners
                .into_iter()
                .map(|(name, limit)| {
                    let count = ListenerCount {
                        limit,
                        active: AtomicU64::new(0),
                    };
                    (name, Arc::new(count))
                })
                .collect(),
        }
    }

    /// The global limit, if any.
    pub fn global(&self) -> Option<u64> {
        self.global
    }

    /// Admits a connection on the listener `name`, counting it in `active` (every downstream
    /// connection the proxy has open) and in its listener's count; or says which limit
    /// refuses it.
    pub fn admit<'a>(
        &self,
        name: &str,
        ignore_global: bool,
        active: &'a AtomicU64,
    ) -> Result<Admitted<'a>, Refusal> {
        let mut admitted = self.admit_global(ignore_global, active)?;
        // Most proxies set no listener limit: then no name is hashed for every connection.
        if !self.listeners.is_empty()
            && let Some(count) = self.listeners.get(name)
        {
            let limit = count.limit;
            if count
                .active
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < limit).then_some(n + 1)
                })
                .is_err()
            {
                // Dropping `admitted` gives the global place back.
                return Err(Refusal::Listener);
            }
            admitted.listener = Some(count.clone());
        }
        Ok(admitted)
    }

    /// Admits a connection under the global limit alone (the admin endpoint's, which has no
    /// listener limit), counting it in `active`.
    pub fn admit_global<'a>(
        &self,
        ignore_global: bool,
        active: &'a AtomicU64,
    ) -> Result<Admitted<'a>, Refusal> {
        match self.global.filter(|_| !ignore_global) {
            Some(limit) => {
                if active
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                        (n < limit).then_some(n + 1)
                    })
                    .is_err()
                {
                    return Err(Refusal::Global);
                }
            }
            None => {
                active.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(Admitted {
            active,
            listener: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_admit_up_to_their_count_and_places_come_back_when_dropped() {
        let limits = ConnectionLimits::new(Some(3), [("small".to_string(), 1)]);
        let active = AtomicU64::new(0);
        let a = limits.admit("small", false, &active).unwrap();
        assert_eq!(
            limits.admit("small", false, &active).unwrap_err(),
            Refusal::Listener
        );
        // The refused connection took no place.
        assert_eq!(active.load(Ordering::Relaxed), 1);
        let b = limits.admit("other", false, &active).unwrap();
        let c = limits.admit("other", false, &active).unwrap();
        assert_eq!(
            limits.admit("other", false, &active).unwrap_err(),
            Refusal::Global
        );
        // A listener that ignores the global limit is admitted, and counted.
        let d = limits.admit("admin-like", true, &active).unwrap();
        assert_eq!(active.load(Ordering::Relaxed), 4);
        drop((a, b, c, d));
        assert_eq!(active.load(Ordering::Relaxed), 0);
        let _again = limits.admit("small", false, &active).unwrap();
    }

    #[test]
    fn without_limits_every_connection_is_counted_and_admitted() {
        let limits = ConnectionLimits::default();
        let active = AtomicU64::new(0);
        let held: Vec<_> = (0..100)
            .map(|_| limits.admit("any", false, &active).unwrap())
            .collect();
        assert_eq!(active.load(Ordering::Relaxed), 100);
        drop(held);
        assert_eq!(active.load(Ordering::Relaxed), 0);
    }
}

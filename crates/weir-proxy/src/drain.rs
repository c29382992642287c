//! Graceful draining by listener: a connection belongs to the listener that handles it (after an
//! original-destination hand-off, the listener that owns the destination, as in Envoy), and is
//! drained when that listener's configuration changes or the listener goes away — whether the
//! listener has a socket of its own or takes redirected traffic — and when the proxy stops.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::listener::ListenerConfig;

/// The current configuration of every listener by name, each with a drain generation.
#[derive(Debug, Default)]
pub struct ListenerDrains {
    current: Mutex<HashMap<String, Current>>,
}

#[derive(Debug)]
struct Current {
    config: Arc<ListenerConfig>,
    generation: watch::Sender<u64>,
}

/// Fires when the connection's listener changed or went away after the connection started.
#[derive(Debug, Clone)]
pub struct DrainSignal {
    generation: watch::Receiver<u64>,
    start: u64,
}

impl DrainSignal {
    /// A signal that has already fired (the connection's listener is gone).
    pub fn fired() -> Self {
        let (_, generation) = watch::channel(0);
        DrainSignal { generation, start: 0 }
    }

    /// Whether the connection should be drained now.
    pub fn has_fired(&self) -> bool {
        // An error means the listener was removed.
        self.generation.has_changed().is_err() || *self.generation.borrow() != self.start
    }

    /// Waits until the connection should be drained.
    pub async fn drained(&mut self) {
        let start = self.start;
        // An error means the listener was removed: drain as well.
        let _ = self.generation.wait_for(|g| *g != start).await;
    }
}

impl ListenerDrains {
    /// Records the listeners of a newly installed configuration: a listener whose resource
    /// changed gets a new drain generation, one that is gone drains its connections.
    pub fn update(&self, listeners: &BTreeMap<String, Arc<ListenerConfig>>) {
        let Ok(mut current) = self.current.lock() else {
            return;
        };
        // Dropping the sender of a removed listener fires its connections' signals.
        current.retain(|name, _| listeners.contains_key(name));
        for (name, config) in listeners {
            match current.get_mut(name) {
                Some(c) => {
                    let same = Arc::ptr_eq(&c.config, config) || c.config.source == config.source;
                    c.config = config.clone();
                    if !same {
                        c.generation.send_modify(|g| *g += 1);
                    }
                }
                None => {
                    current.insert(
                        name.clone(),
                        Current {
                            config: config.clone(),
                            generation: watch::channel(0).0,
                        },
                    );
                }
            }
        }
    }

    /// The configuration a new connection to `listener` should use — the current one under its
    /// name, which may be newer than the one its caller looked up — and the signal that drains
    /// the connection when that configuration changes. A listener no longer configured keeps its
    /// old configuration and is drained at once.
    pub fn join(&self, listener: Arc<ListenerConfig>) -> (Arc<ListenerConfig>, DrainSignal) {
        let Ok(current) = self.current.lock() else {
            return (listener, DrainSignal::fired());
        };
        match current.get(&listener.name) {
            Some(c) => {
                let generation = c.generation.subscribe();
                let start = *generation.borrow();
                (c.config.clone(), DrainSignal { generation, start })
            }
            None => (listener, DrainSignal::fired()),
        }
    }

    /// Drains every connection (the proxy is stopping).
    pub fn drain_all(&self) {
        if let Ok(current) = self.current.lock() {
            for c in current.values() {
                c.generation.send_modify(|g| *g += 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn listener(name: &str, port: u16) -> Arc<ListenerConfig> {
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        Arc::new(crate::listener::bare_listener(name, address, false, true))
    }

    fn set(ls: &[&Arc<ListenerConfig>]) -> BTreeMap<String, Arc<ListenerConfig>> {
        ls.iter().map(|l| (l.name.clone(), (*l).clone())).collect()
    }

    async fn fires(signal: &mut DrainSignal) -> bool {
        tokio::time::timeout(Duration::from_millis(50), signal.drained())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_changed_listener_drains_its_connections_and_an_unchanged_one_does_not() {
        let drains = ListenerDrains::default();
        let (a, b) = (listener("a", 1000), listener("b", 2000));
        drains.update(&set(&[&a, &b]));
        let (_, mut on_a) = drains.join(a.clone());
        let (_, mut on_b) = drains.join(b.clone());
        // The same resources again (a state-of-the-world resend): nothing drains.
        drains.update(&set(&[&listener("a", 1000), &b]));
        assert!(!fires(&mut on_a).await);
        let a2 = listener("a", 1001);
        drains.update(&set(&[&a2, &b]));
        assert!(fires(&mut on_a).await, "a changed");
        assert!(!fires(&mut on_b).await, "b did not");
        // A connection that looked up the old configuration gets the current one.
        let (config, mut fresh) = drains.join(a.clone());
        assert!(Arc::ptr_eq(&config, &a2));
        assert!(!fires(&mut fresh).await);
    }

    #[tokio::test]
    async fn a_removed_listener_and_a_stopping_proxy_drain() {
        let drains = ListenerDrains::default();
        let (a, b) = (listener("a", 1000), listener("b", 2000));
        drains.update(&set(&[&a, &b]));
        let (_, mut on_a) = drains.join(a.clone());
        let (_, mut on_b) = drains.join(b.clone());
        drains.update(&set(&[&b]));
        assert!(fires(&mut on_a).await, "a is gone");
        assert!(!fires(&mut on_b).await);
        let (_, mut late) = drains.join(a);
        assert!(
            fires(&mut late).await,
            "a connection to a removed listener drains at once"
        );
        drains.drain_all();
        assert!(fires(&mut on_b).await);
    }
}

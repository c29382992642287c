//! Keeps the runtime's timer driver from being woken by every request.
//!
//! Tokio's timer wakes its driver (a write to an eventfd: one system call, and one more event for
//! the next `epoll_wait`) whenever a timer is set that expires before every timer already set.
//! On a proxy whose only other timers are connection idle timeouts (an hour by default), every
//! request's timeouts — the route timeout, the stream idle timeout — are such timers, so every
//! request paid that system call (seen with `strace` on the data path). A timer that always
//! expires within [`PERIOD`] keeps the driver's next wake-up that close, so per-request timeouts
//! longer than it no longer wake the driver; the cost is one timer firing per period.

use std::time::Duration;

/// How far ahead the anchor's timer always is. Shorter request timeouts still wake the driver.
pub const PERIOD: Duration = Duration::from_secs(1);

/// Runs forever on the current runtime (spawn it once per runtime).
pub async fn run() {
    let mut ticks = tokio::time::interval(PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
    }
}

//! One timer for the route timeouts of a connection's requests.
//!
//! Every request forwarded upstream is bounded by its route timeout (Envoy's default is 15 s), and
//! a tokio timer per request costs about 800 instructions: made, put into the runtime's timer
//! wheel at its first poll and taken out when dropped, each under the driver's lock. On a
//! kept-alive connection the requests come one after another with deadlines that only move
//! later, so the connection keeps one timer and lends it to each request in turn. A timer armed
//! for an earlier deadline is left where it is: when it fires before the request's own deadline,
//! it is moved to that deadline then (once per timeout period, not once per request). A timer
//! armed for a later deadline is moved earlier at once. Requests in flight at the same time (HTTP/2
//! streams) each get a timer of their own while the shared one is lent out.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::Poll;
use std::time::Instant;

use tokio::time::Sleep;

/// The timer a connection lends to its requests (see the module documentation).
#[derive(Debug, Default)]
pub struct RequestTimer {
    spare: Mutex<Option<Pin<Box<Sleep>>>>,
}

/// A copy of a connection's context starts without a timer of its own (it makes one at its
/// first use); timers are never shared between copies.
impl Clone for RequestTimer {
    fn clone(&self) -> Self {
        RequestTimer::new()
    }
}

impl RequestTimer {
    /// A connection's timer, made at its first use.
    pub fn new() -> Self {
        RequestTimer::default()
    }

    /// Runs `work` until it completes (`Some`) or `deadline` passes (`None`).
    pub async fn bound<F: Future>(&self, deadline: Instant, mut work: Pin<&mut F>) -> Option<F::Output> {
        let mut timer = self.lend(deadline);
        let tokio_deadline = tokio::time::Instant::from_std(deadline);
        let out = std::future::poll_fn(|cx| {
            if let Poll::Ready(done) = work.as_mut().poll(cx) {
                return Poll::Ready(Some(done));
            }
            loop {
                match timer.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(()) if timer.deadline() >= tokio_deadline => return Poll::Ready(None),
                    // Armed for an earlier request's deadline: moved to this one's, and polled
                    // again so that it wakes this task then.
                    Poll::Ready(()) => timer.as_mut().reset(tokio_deadline),
                }
            }
        })
        .await;
        self.give_back(timer);
        out
    }

    /// The shared timer if it is free (moved earlier if it was armed later than `deadline`),
    /// else a timer of its own.
    fn lend(&self, deadline: Instant) -> Pin<Box<Sleep>> {
        let deadline = tokio::time::Instant::from_std(deadline);
        let spare = self.spare.lock().ok().and_then(|mut spare| spare.take());
        match spare {
            Some(mut timer) => {
                if timer.deadline() > deadline {
                    timer.as_mut().reset(deadline);
                }
                timer
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        }
    }

    /// Keeps `timer` for the next request (one is enough; others are dropped).
    fn give_back(&self, timer: Pin<Box<Sleep>>) {
        if let Ok(mut spare) = self.spare.lock()
            && spare.is_none()
        {
            *spare = Some(timer);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The runtime's clock (paused in these tests), as the standard library's instant.
    fn now() -> Instant {
        tokio::time::Instant::now().into_std()
    }

    /// Within the timer wheel's millisecond of `expected`.
    fn near(elapsed: Duration, expected: Duration) -> bool {
        elapsed >= expected && elapsed <= expected + Duration::from_millis(2)
    }

    #[tokio::test(start_paused = true)]
    async fn work_done_in_time_is_returned_and_the_timer_kept() {
        let timer = RequestTimer::new();
        let work = std::pin::pin!(async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            7
        });
        let deadline = now() + Duration::from_secs(1);
        assert_eq!(timer.bound(deadline, work).await, Some(7));
        assert!(timer.spare.lock().unwrap().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn work_past_its_deadline_is_cut_there() {
        let timer = RequestTimer::new();
        let started = tokio::time::Instant::now();
        let work = std::pin::pin!(std::future::pending::<()>());
        let deadline = now() + Duration::from_millis(300);
        assert_eq!(timer.bound(deadline, work).await, None);
        assert!(near(started.elapsed(), Duration::from_millis(300)));
    }

    /// A request bounded by `first` ends at once (its deadline stays armed in the shared
    /// timer); a second one that never ends, bounded by `second`, is then cut: how long after
    /// it started.
    async fn second_request_cut_after(first: Duration, second: Duration) -> Duration {
        let timer = RequestTimer::new();
        let done = std::pin::pin!(async {});
        assert_eq!(timer.bound(now() + first, done).await, Some(()));
        let started = tokio::time::Instant::now();
        let never = std::pin::pin!(std::future::pending::<()>());
        assert_eq!(timer.bound(now() + second, never).await, None);
        started.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_armed_for_an_earlier_request_waits_for_the_later_deadline() {
        // The second's deadline is later: the timer fires early, moves, and cuts it at its own.
        let cut = second_request_cut_after(Duration::from_millis(100), Duration::from_millis(500)).await;
        assert!(near(cut, Duration::from_millis(500)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_armed_for_a_later_deadline_is_moved_earlier() {
        let cut = second_request_cut_after(Duration::from_secs(60), Duration::from_millis(200)).await;
        assert!(near(cut, Duration::from_millis(200)));
    }

    #[tokio::test(start_paused = true)]
    async fn requests_at_the_same_time_each_have_a_timer() {
        let timer = RequestTimer::new();
        let now = now();
        let never = std::pin::pin!(std::future::pending::<()>());
        let soon = std::pin::pin!(tokio::time::sleep(Duration::from_millis(250)));
        let short = timer.bound(now + Duration::from_millis(100), never);
        let long = timer.bound(now + Duration::from_millis(400), soon);
        let started = tokio::time::Instant::now();
        let (short, long) = tokio::join!(
            async {
                let r = short.await;
                (r, started.elapsed())
            },
            async {
                let r = long.await;
                (r, started.elapsed())
            }
        );
        assert!(short.0.is_none() && near(short.1, Duration::from_millis(100)));
        assert!(long.0.is_some() && near(long.1, Duration::from_millis(250)));
    }
}

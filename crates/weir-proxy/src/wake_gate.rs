//! Futures polled only when they asked to be.
//!
//! A connection's serving task waits on its HTTP connection and, beside it, on signals that
//! rarely fire (a drain, an idle timeout). `tokio::select!` polls every branch each time the
//! task wakes — for every request, each of those signals was polled again for nothing (a
//! watch channel's check and a timer's, about 600 instructions per request). A [`Gated`] future
//! is polled the first time, then only after its own waker has fired.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// Wraps a future so that it is polled only when its own waker has fired since the last poll.
pub struct Gated<F> {
    inner: Pin<Box<F>>,
    signal: Arc<Signal>,
    /// The waker handed to the inner future (wakes the task and opens the gate).
    waker: Waker,
    polled_once: bool,
}

/// What the inner future's waker sets, and the task to wake.
struct Signal {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future> Gated<F> {
    /// Gates `inner`.
    pub fn new(inner: F) -> Self {
        let signal = Arc::new(Signal {
            woken: AtomicBool::new(false),
            task: AtomicWaker::new(),
        });
        Gated {
            inner: Box::pin(inner),
            waker: Waker::from(signal.clone()),
            signal,
            polled_once: false,
        }
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.signal.task.register(cx.waker());
        if self.polled_once && !self.signal.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        self.polled_once = true;
        let this = &mut *self;
        let mut inner_cx = Context::from_waker(&this.waker);
        this.inner.as_mut().poll(&mut inner_cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    /// Counts its polls; ready once `ready` is set (and woken through its waker).
    struct Counting {
        polls: Arc<AtomicUsize>,
        ready: Arc<AtomicBool>,
    }

    impl Future for Counting {
        type Output = ();

        fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.ready.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    #[tokio::test]
    async fn a_gated_future_is_polled_only_after_its_own_wake() {
        let polls = Arc::new(AtomicUsize::new(0));
        let ready = Arc::new(AtomicBool::new(false));
        let mut gated = Gated::new(Counting {
            polls: polls.clone(),
            ready: ready.clone(),
        });
        let noop = Waker::noop();
        let mut cx = Context::from_waker(noop);
        for _ in 0..5 {
            assert!(Pin::new(&mut gated).poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1, "polled the first time only");
        ready.store(true, Ordering::SeqCst);
        assert!(Pin::new(&mut gated).poll(&mut cx).is_pending(), "not woken yet");
        gated.waker.wake_by_ref();
        assert!(Pin::new(&mut gated).poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_gated_timer_still_fires_and_wakes_its_task() {
        let started = tokio::time::Instant::now();
        let timer = Gated::new(tokio::time::sleep(Duration::from_millis(50)));
        tokio::select! {
            biased;
            () = std::future::pending::<()>() => unreachable!(),
            () = timer => {}
        }
        assert!(started.elapsed() >= Duration::from_millis(50));
    }
}

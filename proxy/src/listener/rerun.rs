//! Polls a connection's future again at once when it woke itself.
//!
//! hyper serves a request inside the connection's task: the service reads
//! the request body from a channel whose sender is that same task's HTTP/1
//! dispatcher. Taking the body wakes the dispatcher, and the dispatcher
//! closing the body wakes the service: the task wakes itself while it runs,
//! about twice a request. Tokio treats such a wake as a yield: the task goes
//! to the back of the run queue and an idle worker is woken (a futex call)
//! to steal it, so a request hops between cores and pays a context switch
//! and cold caches for it (bench/README.md, sixth pass).
//!
//! [`Rerun`] gives the inner future a waker of its own. A wake that comes
//! while the inner future is being polled is noted, and the future is
//! polled again before the task returns to tokio; any other wake goes to
//! the task as usual. After [`MAX_RERUNS`] polls in a row the task yields to
//! tokio as before, so a future that keeps waking itself cannot hold a
//! worker: hyper's dispatcher yields that way after 16 rounds of a busy
//! pipelined connection, and up to four of those now run per tokio poll.
//! (A spent cooperative budget does not wake the task in place: tokio
//! defers that wake until the poll has returned, so it reaches the task.)

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc,
    },
    task::{Context, Poll, Wake, Waker},
};

use futures_util::task::AtomicWaker;

/// Polls in a row before the task yields to tokio. Serving one HTTP/1
/// request takes two.
pub const MAX_RERUNS: usize = 4;

/// Not being polled: a wake goes to the task.
const IDLE: u8 = 0;
/// Being polled: a wake is noted.
const POLLING: u8 = 1;
/// Woken while being polled: poll again.
const WOKEN: u8 = 2;

struct Signal {
    state: AtomicU8,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // AcqRel: the poll loop that sees WOKEN must see what the waker
        // wrote before waking.
        match self
            .state
            .compare_exchange(POLLING, WOKEN, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) | Err(WOKEN) => {}
            Err(_) => self.task.wake(),
        }
    }
}

pin_project_lite::pin_project! {
    /// `inner`, polled again while it wakes itself (see the module docs).
    pub struct Rerun<F> {
        #[pin]
        inner: F,
        signal: Arc<Signal>,
        waker: Waker,
    }
}

impl<F: Future> Rerun<F> {
    pub fn new(inner: F) -> Self {
        let signal = Arc::new(Signal {
            state: AtomicU8::new(IDLE),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(signal.clone());
        Self {
            inner,
            signal,
            waker,
        }
    }
}

impl<F: Future> Future for Rerun<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        // Registered before polling: a wake after the state is back to IDLE
        // must find this task.
        this.signal.task.register(cx.waker());
        let mut inner_cx = Context::from_waker(this.waker);
        for _ in 0..MAX_RERUNS {
            this.signal.state.store(POLLING, Ordering::Release);
            if let Poll::Ready(out) = this.inner.as_mut().poll(&mut inner_cx) {
                this.signal.state.store(IDLE, Ordering::Release);
                return Poll::Ready(out);
            }
            // A wake between the poll's end and this swap is seen here; one
            // after it goes to the task.
            if this.signal.state.swap(IDLE, Ordering::AcqRel) != WOKEN {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts the task's wakes.
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Wakes itself `self_wakes` times while polled, then is ready.
    struct SelfWaking {
        self_wakes: usize,
        polls: usize,
    }
    impl Future for SelfWaking {
        type Output = usize;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
            self.polls += 1;
            if self.polls > self.self_wakes {
                return Poll::Ready(self.polls);
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    fn task() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        (count, waker)
    }

    #[test]
    fn a_self_wake_is_polled_again_without_waking_the_task() {
        let (count, waker) = task();
        let mut cx = Context::from_waker(&waker);
        let mut fut = Box::pin(Rerun::new(SelfWaking {
            self_wakes: 2,
            polls: 0,
        }));
        assert_eq!(fut.as_mut().poll(&mut cx), Poll::Ready(3));
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_future_that_keeps_waking_itself_yields_to_the_task() {
        let (count, waker) = task();
        let mut cx = Context::from_waker(&waker);
        let mut fut = Box::pin(Rerun::new(SelfWaking {
            self_wakes: 100,
            polls: 0,
        }));
        assert_eq!(fut.as_mut().poll(&mut cx), Poll::Pending);
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "one yield to tokio");
        assert_eq!(fut.inner.polls, MAX_RERUNS);
    }

    /// Wakes from another thread race the end of each poll, while the
    /// future also wakes itself: a lost wake would leave it pending, and
    /// the timeout would fail the test.
    #[test]
    fn no_wake_is_lost_when_wakes_race_the_poll() {
        const STEPS: usize = 20_000;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        let slot: Arc<std::sync::Mutex<Option<Waker>>> = Arc::default();
        let ready = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let waker_thread = {
            let (slot, ready, stop) = (slot.clone(), ready.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if let Some(w) = slot.lock().unwrap().take() {
                        // One step is made ready, then its waker woken.
                        ready.fetch_add(1, Ordering::SeqCst);
                        w.wake();
                    }
                    std::hint::spin_loop();
                }
            })
        };
        let (s, r) = (slot.clone(), ready.clone());
        let mut seen = 0;
        let fut = Rerun::new(std::future::poll_fn(move |cx| {
            let now = r.load(Ordering::SeqCst);
            if now >= STEPS {
                return Poll::Ready(now);
            }
            if now > seen {
                seen = now;
                // Every third step also wakes itself, as hyper's body does.
                if seen % 3 == 0 {
                    cx.waker().wake_by_ref();
                }
            }
            *s.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }));
        let out = rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(60), tokio::spawn(fut)).await
        });
        stop.store(true, Ordering::SeqCst);
        waker_thread.join().unwrap();
        assert!(
            matches!(out, Ok(Ok(n)) if n >= STEPS),
            "stalled at {} of {STEPS} steps",
            ready.load(Ordering::SeqCst)
        );
    }

    #[test]
    fn a_wake_from_elsewhere_reaches_the_task() {
        let (count, waker) = task();
        let mut cx = Context::from_waker(&waker);
        let stored: Arc<std::sync::Mutex<Option<Waker>>> = Arc::default();
        let keep = stored.clone();
        let mut fut = Box::pin(Rerun::new(std::future::poll_fn(move |cx| {
            *keep.lock().unwrap() = Some(cx.waker().clone());
            Poll::<()>::Pending
        })));
        assert_eq!(fut.as_mut().poll(&mut cx), Poll::Pending);
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        let inner = stored.lock().unwrap().take().unwrap();
        std::thread::spawn(move || inner.wake()).join().unwrap();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }
}

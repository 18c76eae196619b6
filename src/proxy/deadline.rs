//! Deadlines for upstream calls without a timer per request.
//!
//! A `tokio::time::timeout` around every upstream call registers and removes one
//! entry of the runtime's timer wheel per request (a lock and two wheel operations
//! each time). Here each thread keeps the deadlines of its pending calls in one list,
//! and one task per list wakes every [`TICK`] while the list is not empty, marking the
//! calls whose deadline has passed and waking them. A call then costs a list insert and
//! remove; a deadline fires at most [`TICK`] late. A tick before the earliest pending
//! deadline looks at no entry, so thousands of slow calls cost nothing until one is due.
//!
//! The list is shared by `Arc` (a call may be polled on another thread of a
//! multi-threaded runtime, as in tests); on the data plane's single-threaded workers it
//! is only ever locked by its own thread.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use slab::Slab;
use tokio::time::Instant;

/// How often a list with pending deadlines is swept: how late a deadline may fire.
pub const TICK: Duration = Duration::from_millis(10);

/// The call did not finish before its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

struct Entry {
    at: Instant,
    waker: Waker,
    expired: bool,
}

#[derive(Default)]
struct Inner {
    entries: Slab<Entry>,
    /// No pending deadline is earlier (it may be later: removals do not move it), so
    /// a tick before it looks at nothing.
    earliest: Option<Instant>,
    /// A sweeping task runs for this list.
    sweeping: bool,
}

/// One thread's pending deadlines.
#[derive(Default)]
pub struct Deadlines {
    inner: Mutex<Inner>,
}

thread_local! {
    static LOCAL: Arc<Deadlines> = Arc::default();
}

impl Deadlines {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Only plain data behind the lock: a panic elsewhere leaves it usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a deadline; starts the sweeping task if none runs.
    fn register(self: &Arc<Self>, at: Instant, waker: Waker) -> usize {
        let mut inner = self.lock();
        let key = inner.entries.insert(Entry {
            at,
            waker,
            expired: false,
        });
        inner.earliest = Some(inner.earliest.map_or(at, |e| e.min(at)));
        if !inner.sweeping {
            inner.sweeping = true;
            let me = self.clone();
            tokio::spawn(async move {
                let _stopped = Stopped(me.clone());
                me.sweep().await;
            });
        }
        key
    }

    /// Every [`TICK`]: marks and wakes the calls past their deadline; ends when no
    /// deadline is pending.
    async fn sweep(&self) {
        loop {
            tokio::time::sleep(TICK).await;
            let now = Instant::now();
            let mut inner = self.lock();
            if inner.entries.is_empty() {
                inner.earliest = None;
                return;
            }
            if inner.earliest.is_some_and(|e| now < e) {
                continue;
            }
            let mut earliest = None::<Instant>;
            for (_, e) in inner.entries.iter_mut() {
                if e.expired {
                    continue;
                }
                if e.at <= now {
                    e.expired = true;
                    e.waker.wake_by_ref();
                } else {
                    earliest = Some(earliest.map_or(e.at, |x| x.min(e.at)));
                }
            }
            inner.earliest = earliest;
        }
    }

    #[cfg(test)]
    fn pending(&self) -> (usize, bool) {
        let inner = self.lock();
        (inner.entries.len(), inner.sweeping)
    }
}

/// Clears `sweeping` when the sweeping task ends, also when its runtime drops it.
struct Stopped(Arc<Deadlines>);

impl Drop for Stopped {
    fn drop(&mut self) {
        self.0.lock().sweeping = false;
    }
}

pin_project_lite::pin_project! {
    /// `fut`, given until `at` (see [`until`]).
    pub struct Within<F> {
        #[pin]
        fut: F,
        at: Instant,
        slot: Option<(Arc<Deadlines>, usize)>,
    }

    impl<F> PinnedDrop for Within<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some((list, key)) = this.project().slot.take() {
                list.lock().entries.try_remove(key);
            }
        }
    }
}

/// Runs `fut` until `at` (and at most [`TICK`] more): `Err(Elapsed)` after. The
/// caller passes the deadline from a clock reading it already has.
pub fn until<F: Future>(at: Instant, fut: F) -> Within<F> {
    Within {
        fut,
        at,
        slot: None,
    }
}

impl<F: Future> Future for Within<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.fut.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match this.slot {
            None => {
                // Pending for the first time: only now is a deadline worth keeping.
                let list = LOCAL.with(Arc::clone);
                let key = list.register(*this.at, cx.waker().clone());
                *this.slot = Some((list, key));
            }
            Some((list, key)) => {
                let mut inner = list.lock();
                if let Some(e) = inner.entries.get_mut(*key) {
                    if e.expired {
                        return Poll::Ready(Err(Elapsed));
                    }
                    if !e.waker.will_wake(cx.waker()) {
                        e.waker = cx.waker().clone();
                    }
                }
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> Arc<Deadlines> {
        LOCAL.with(Arc::clone)
    }

    /// `fut` for at most `limit` from now.
    fn within<F: Future>(limit: Duration, fut: F) -> Within<F> {
        until(Instant::now() + limit, fut)
    }

    /// `fut`, failing the test (not hanging it) if the deadline never fires.
    async fn bounded<T>(fut: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(60), fut)
            .await
            .expect("the deadline never fired")
    }

    /// Runs a call that never finishes under a deadline of `limit`; checks it ended
    /// as `Elapsed` and returns how long that took.
    async fn times_out(limit: Duration) -> Duration {
        let started = Instant::now();
        let r = bounded(within(limit, std::future::pending::<()>())).await;
        assert_eq!(r, Err(Elapsed));
        started.elapsed()
    }

    /// A call that never finishes, under a deadline of `limit`, polled once (so its
    /// deadline is registered) and kept.
    async fn registered(limit: Duration) -> Pin<Box<impl Future<Output = Result<(), Elapsed>>>> {
        let mut call = Box::pin(within(limit, std::future::pending::<()>()));
        let pending =
            std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx).is_pending())).await;
        assert!(pending);
        call
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_past_its_deadline_ends_within_a_tick() {
        let took = times_out(Duration::from_millis(100)).await;
        assert!(
            took >= Duration::from_millis(100) && took <= Duration::from_millis(100) + TICK,
            "{took:?}"
        );
        assert_eq!(list().pending().0, 0, "the deadline is gone with its call");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_finishes_in_time_keeps_its_value_and_leaves_nothing() {
        assert_eq!(within(Duration::from_millis(100), async { 7 }).await, Ok(7));
        assert_eq!(
            list().pending(),
            (0, false),
            "a ready call registers nothing"
        );
        let slow = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            8
        };
        assert_eq!(within(Duration::from_millis(100), slow).await, Ok(8));
        assert_eq!(list().pending().0, 0);
        // The sweeper stops once nothing is pending.
        tokio::time::sleep(TICK * 2).await;
        assert_eq!(list().pending(), (0, false));
    }

    #[tokio::test(start_paused = true)]
    async fn many_calls_each_end_at_their_own_deadline() {
        let calls = (1..=5u64).map(|i| async move {
            let started = Instant::now();
            let r = within(Duration::from_millis(100 * i), std::future::pending::<()>()).await;
            (i, r, started.elapsed())
        });
        for (i, r, took) in bounded(futures_util::future::join_all(calls)).await {
            assert_eq!(r, Err(Elapsed));
            let due = Duration::from_millis(100 * i);
            assert!(took >= due && took <= due + TICK, "call {i}: {took:?}");
        }
        // A dropped call leaves nothing behind.
        let dropped = registered(Duration::from_secs(1)).await;
        assert_eq!(list().pending().0, 1);
        drop(dropped);
        assert_eq!(list().pending().0, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_registered_later_is_not_skipped() {
        let far = registered(Duration::from_secs(1)).await;
        // Let a few ticks pass with only the far deadline pending.
        tokio::time::sleep(TICK * 3).await;
        let took = times_out(Duration::from_millis(100)).await;
        assert!(took <= Duration::from_millis(100) + TICK, "{took:?}");
        drop(far);
    }
}

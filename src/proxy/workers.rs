//! The data plane's worker threads: one single-threaded tokio runtime per core.
//!
//! A connection of the data port or the authz listener is accepted by the acceptor,
//! handed to the next worker (round robin) and lives there until it closes: its reads,
//! writes, timers, the pipeline and its upstream connections all run on that one
//! thread. This avoids the work-stealing scheduler's cross-thread wakeups and atomics
//! on every request (measured in docs/benchmarks.md), the design linkerd2-proxy and
//! pingora take too.
//!
//! Worker 0 is the main thread's own (current-thread) runtime, which also runs the
//! admin and metrics ports, the store's connections (Redis) and the background tasks:
//! on one core, a cache miss then never waits for another thread to be scheduled.
//!
//! A worker's tasks may use anything that is `Send` (the store, caches, the limiter),
//! and spawn tasks of their own (h2 streams, upstream connections), which stay on the
//! worker.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::watch;

thread_local! {
    /// The index of the worker this thread runs, if it is one.
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the worker running the current thread (0 elsewhere): selects the
/// worker's own upstream connection pool.
pub fn current() -> usize {
    WORKER.with(|w| w.get().unwrap_or(0))
}

pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    /// Dropped (closing the channel) to let the worker threads end.
    _stop: watch::Sender<()>,
}

impl Workers {
    /// Starts `n` workers (at least one): the calling thread's runtime (it must be a
    /// current-thread runtime) is worker 0, the others are threads of their own, kept
    /// until the `Workers` is dropped.
    pub fn start(n: usize) -> std::io::Result<Arc<Workers>> {
        let (stop, stop_rx) = watch::channel(());
        let mut handles = Vec::with_capacity(n.max(1));
        handles.push(Handle::try_current().map_err(std::io::Error::other)?);
        WORKER.with(|w| w.set(Some(0)));
        for i in 1..n.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_name(format!("keygate-worker-{i}"))
                .build()?;
            handles.push(rt.handle().clone());
            let mut stop_rx = stop_rx.clone();
            std::thread::Builder::new()
                .name(format!("keygate-worker-{i}"))
                .spawn(move || {
                    WORKER.with(|w| w.set(Some(i)));
                    rt.block_on(async move {
                        // Ends when the sender is dropped.
                        while stop_rx.changed().await.is_ok() {}
                    });
                })?;
        }
        Ok(Arc::new(Workers {
            handles,
            next: AtomicUsize::new(0),
            _stop: stop,
        }))
    }

    /// How many workers there are: one per core keygate may run on.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// The next worker, round robin.
    pub fn pick(&self) -> &Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[i]
    }

    /// One worker per core this process may run on (its CPU affinity).
    pub fn default_count() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

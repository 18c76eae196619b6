//! Buffered log output. Every log line (above all the JSON access log, one line per
//! request) is appended to one in-memory buffer instead of being written with its own
//! `write(2)`; a writer thread empties the buffer into stderr at most
//! [`FLUSH_EVERY`] after a line arrives, as soon as it holds [`FLUSH_BYTES`], and at
//! shutdown ([`Guard`] drop: `main` keeps it until the runtime has stopped, so no line
//! is lost on SIGTERM). If stderr falls behind and the buffer reaches [`CAP_BYTES`],
//! further lines are dropped, never waited for, and counted in
//! `keygate_log_lines_dropped_total`.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus::IntCounter;

/// Longest a line waits in the buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// Buffer size that wakes the writer at once.
pub const FLUSH_BYTES: usize = 64 * 1024;
/// Buffer size above which lines are dropped (stderr is not keeping up).
pub const CAP_BYTES: usize = 16 * 1024 * 1024;

/// Lines dropped because stderr fell behind; registered by [`crate::metrics::Metrics`].
pub static DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        "keygate_log_lines_dropped_total",
        "Log lines dropped because the log output fell behind.",
    )
    .unwrap_or_else(|_| unreachable!("static metric definition"))
});

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    /// The writer thread is parked on `wake` (so a notification is worth a syscall).
    writer_waiting: bool,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves only bytes behind: keep logging.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The `MakeWriter` for `tracing_subscriber`: cheap to clone, appends whole lines.
#[derive(Clone)]
pub struct LogBuffer {
    shared: Arc<Shared>,
}

/// Stops the writer thread after writing out every buffered line.
pub struct Guard {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

/// The buffer [`stderr`] started, for lines formatted outside `tracing` (the access
/// log); `None` when logs are not buffered (a terminal).
static INSTALLED: std::sync::OnceLock<LogBuffer> = std::sync::OnceLock::new();

pub fn installed() -> Option<LogBuffer> {
    INSTALLED.get().cloned()
}

/// Starts the writer thread. Lines go to stderr.
pub fn stderr() -> io::Result<(LogBuffer, Guard)> {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        wake: Condvar::new(),
    });
    let s = shared.clone();
    let writer = std::thread::Builder::new()
        .name("keygate-log".into())
        .spawn(move || write_out(&s, &mut io::stderr()))?;
    let _ = INSTALLED.set(LogBuffer {
        shared: shared.clone(),
    });
    Ok((
        LogBuffer {
            shared: shared.clone(),
        },
        Guard {
            shared,
            writer: Some(writer),
        },
    ))
}

fn write_out(shared: &Shared, out: &mut impl Write) {
    let mut spare = Vec::new();
    loop {
        let mut st = shared.lock();
        while st.buf.is_empty() && !st.closed {
            st.writer_waiting = true;
            st = shared.wake.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        // Something to write: let more lines join it, unless it is full or closing.
        if st.buf.len() < FLUSH_BYTES && !st.closed {
            st.writer_waiting = true;
            st = shared
                .wake
                .wait_timeout(st, FLUSH_EVERY)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        st.writer_waiting = false;
        std::mem::swap(&mut st.buf, &mut spare);
        let closed = st.closed;
        drop(st);
        // Nowhere to report a failed write to stderr: the lines are gone either way.
        let _ = out.write_all(&spare).and_then(|()| out.flush());
        spare.clear();
        if closed && shared.lock().buf.is_empty() {
            return;
        }
    }
}

impl Write for LogBuffer {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut st = self.shared.lock();
        if st.closed {
            drop(st);
            return io::stderr().write(line);
        }
        if st.buf.len() + line.len() > CAP_BYTES {
            DROPPED.inc();
            return Ok(line.len());
        }
        let was_empty = st.buf.is_empty();
        st.buf.extend_from_slice(line);
        if st.writer_waiting && (was_empty || st.buf.len() >= FLUSH_BYTES) {
            st.writer_waiting = false;
            drop(st);
            self.shared.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;

    fn make_writer(&'a self) -> LogBuffer {
        self.clone()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line written before the guard drops is written out, in order, whole.
    #[test]
    fn lines_survive_shutdown_in_order() {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let out = Arc::new(Mutex::new(Vec::new()));
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (s, sink) = (shared.clone(), Sink(out.clone()));
        let writer = std::thread::spawn(move || write_out(&s, &mut { sink }));
        let guard = Guard {
            shared: shared.clone(),
            writer: Some(writer),
        };
        let mut w = LogBuffer { shared };
        let mut want = Vec::new();
        for i in 0..20_000 {
            let line = format!("{{\"n\":{i}}}\n");
            w.write_all(line.as_bytes()).unwrap();
            want.extend_from_slice(line.as_bytes());
        }
        drop(guard);
        assert_eq!(*out.lock().unwrap(), want);
    }
}

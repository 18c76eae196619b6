//! Upstream connections, kept per data-plane worker: a request takes an idle
//! HTTP/1.1 connection of its worker (or opens one on that worker), sends on it
//! directly, and gives it back when the response body has been read to its end. No
//! shared pool lock, no hop to a pool task, no boxed request future: the connection's
//! own task and the request both run on the worker's thread.
//!
//! What the pool keeps, as hyper's pool did: idle connections are dropped after
//! [`IDLE_TIMEOUT`] or when the upstream closes them; at most [`MAX_IDLE`] per worker
//! and origin; a request a pooled connection could not take (the upstream closed it
//! before the request was written) goes once to a new connection. A response body
//! dropped before its end takes its connection with it (its state is unknown).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Uri;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tower_service::Service;

/// How long an idle connection is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per worker and origin.
pub const MAX_IDLE: usize = 1024;

pub type Connector = HttpsConnector<HttpConnector>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One worker's idle connections to one origin.
pub struct Idle<B> {
    conns: Mutex<Vec<(SendRequest<B>, Instant)>>,
}

impl<B> Default for Idle<B> {
    fn default() -> Self {
        Idle {
            conns: Mutex::new(Vec::new()),
        }
    }
}

impl<B> Idle<B> {
    /// A connection ready for a request at `now`, newest first. Closed and expired ones go:
    /// the whole list is swept only when its oldest entry is one of them, so a
    /// checkout usually looks at the newest entries alone.
    pub fn checkout(&self, now: Instant) -> Option<SendRequest<B>> {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let usable = |(s, since): &(SendRequest<B>, Instant)| {
            !s.is_closed() && now.duration_since(*since) < IDLE_TIMEOUT
        };
        if conns.first().is_some_and(|c| !usable(c)) {
            conns.retain(usable);
        }
        let i = conns.iter().rposition(|c| c.0.is_ready() && usable(c))?;
        // Usually the last: `remove` keeps the list oldest first.
        Some(conns.remove(i).0)
    }

    /// Keeps a connection whose last response has been read to its end.
    fn give_back(&self, sender: SendRequest<B>) {
        if sender.is_closed() {
            return;
        }
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        if conns.len() < MAX_IDLE {
            conns.push((sender, Instant::now()));
        }
    }
}

/// Opens a connection to `origin` (`scheme://authority`) and starts its task on the
/// current worker.
pub async fn connect<B>(connector: &Connector, origin: Uri) -> Result<SendRequest<B>, BoxError>
where
    B: HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut connector = connector.clone();
    let io = connector.call(origin).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}

pin_project_lite::pin_project! {
    /// An upstream response body that gives its connection back to the worker's idle
    /// list once read to its end.
    pub struct Returning<B> {
        #[pin]
        inner: Incoming,
        conn: Option<(SendRequest<B>, Arc<Idle<B>>)>,
        ended: bool,
    }

    impl<B> PinnedDrop for Returning<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if (*this.ended || this.inner.is_end_stream())
                && let Some((sender, idle)) = this.conn.take()
            {
                idle.give_back(sender);
            }
        }
    }
}

impl<B> Returning<B> {
    pub fn new(inner: Incoming, sender: SendRequest<B>, idle: Arc<Idle<B>>) -> Self {
        Returning {
            inner,
            conn: Some((sender, idle)),
            ended: false,
        }
    }
}

impl<B> HttpBody for Returning<B> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        let r = this.inner.poll_frame(cx);
        if let Poll::Ready(None) = r {
            *this.ended = true;
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

//! Connections to Redis: the `store.url` parsed into a [`Target`] (one server, or a
//! master found through Sentinel), and [`Conn`], the multiplexed command connections
//! that every store call and every publish share (a few, used in turn, for one server;
//! one to the current master under Sentinel).
//!
//! Commands are pipelined on multiplexed connections, so concurrent lookups do not
//! wait for each other's round trips, and nothing here holds a lock across an await on
//! the request path. Reconnecting is bounded and backs off with jitter, so an outage
//! never turns into a connection storm against Redis (or against the Sentinels).
//!
//! The URL may hold a password: nothing here puts the URL, a password or a reply's
//! content in an error message.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use percent_encoding::percent_decode_str;
use rand::Rng;
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection, PubSub,
};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, Cmd, IntoConnectionInfo, RedisConnectionInfo, RedisError,
    RedisFuture, RedisResult, TlsMode, Value,
};

use crate::store::StoreError;

/// Sentinel's default port, used when a Sentinel address in the URL has none.
const SENTINEL_PORT: u16 = 26379;
/// Longest pause between two reconnection attempts.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// First pause after a failed connection attempt; doubled up to [`MAX_BACKOFF`].
pub(super) const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// Where the store lives, as parsed from `store.url`.
#[derive(Clone)]
pub(super) enum Target {
    /// `redis://` or `rediss://`: one server (the crate parses user, password and db).
    Direct(Box<Client>),
    /// `redis+sentinel://` or `rediss+sentinel://`: ask the Sentinels for the master.
    Sentinel(Arc<SentinelTarget>),
}

/// A master found through Sentinel, re-resolved after every connection failure so that
/// a failover is followed.
pub(super) struct SentinelTarget {
    /// The lookup client (its own connections to the Sentinels). Locked only while
    /// resolving the master, which happens after a failure, never per command.
    client: tokio::sync::Mutex<SentinelClient>,
    /// Printable description for logs: Sentinel hosts and master name, no credentials.
    describe: String,
    /// No new lookup before this instant: failed lookups back off instead of hammering
    /// the Sentinels once per request.
    not_before: Mutex<(Option<Instant>, Duration)>,
}

impl Target {
    pub(super) fn parse(url: &str) -> Result<Target, StoreError> {
        let sentinel = if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            Some((false, rest))
        } else {
            url.strip_prefix("rediss+sentinel://")
                .map(|rest| (true, rest))
        };
        match sentinel {
            Some((tls, rest)) => SentinelTarget::parse(tls, rest).map(|t| Target::Sentinel(Arc::new(t))),
            None => Client::open(url).map(|c| Target::Direct(Box::new(c))).map_err(|e| {
                StoreError::Unavailable(format!(
                    "store.url is not a usable Redis URL ({:?}; expected redis://[USER:PASSWORD@]HOST:PORT/DB or rediss://…)",
                    e.kind()
                ))
            }),
        }
    }

    /// Host, port and db or Sentinel hosts and master name, for log lines.
    pub(super) fn describe(&self) -> String {
        match self {
            Target::Direct(c) => {
                let info = c.get_connection_info();
                format!("{} db {}", info.addr(), info.redis_settings().db())
            }
            Target::Sentinel(s) => s.describe.clone(),
        }
    }

    /// The command connection. It connects lazily: building it never waits on Redis.
    pub(super) fn connect(&self, io_timeout: Duration) -> Result<Conn, StoreError> {
        match self {
            Target::Direct(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(io_timeout))
                    .set_response_timeout(Some(io_timeout))
                    // One attempt per reconnect: the store's breaker decides when the
                    // next one happens, so attempts are paced (and jittered) in one place
                    // and no caller waits behind a chain of retries.
                    .set_number_of_retries(0)
                    .set_min_delay(MIN_BACKOFF)
                    .set_max_delay(MAX_BACKOFF);
                let size = std::thread::available_parallelism()
                    .map_or(2, |n| n.get())
                    .clamp(2, MAX_CONNECTIONS);
                let managers = (0..size)
                    .map(|_| {
                        ConnectionManager::new_lazy_with_config((**client).clone(), config.clone())
                            .map_err(|e| unavailable("cannot set up the Redis connection", &e))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Conn::Direct(Arc::new(Pool {
                    managers,
                    next: AtomicUsize::new(0),
                })))
            }
            Target::Sentinel(s) => Ok(Conn::Sentinel(Arc::new(SentinelConn {
                target: s.clone(),
                current: Mutex::new(None),
                config: AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(io_timeout))
                    .set_response_timeout(Some(io_timeout)),
            }))),
        }
    }

    /// A new pub/sub connection (the bus's own, separate from [`Conn`]).
    pub(super) async fn pubsub(&self, io_timeout: Duration) -> RedisResult<PubSub> {
        let client = match self {
            Target::Direct(c) => (**c).clone(),
            Target::Sentinel(s) => s.master().await?,
        };
        match tokio::time::timeout(io_timeout, client.get_async_pubsub()).await {
            Ok(r) => r,
            Err(_) => Err(RedisError::from((
                redis::ErrorKind::Io,
                "timed out connecting the pub/sub connection",
            ))),
        }
    }
}

impl SentinelTarget {
    /// `[USER:PASSWORD@]HOST[:PORT],HOST[:PORT]…/MASTER[/DB][?sentinel_username=…&sentinel_password=…]`.
    /// The credentials before `@` are the master's; the Sentinels get their own, or none.
    fn parse(tls: bool, rest: &str) -> Result<SentinelTarget, StoreError> {
        let bad = |what: &str| {
            StoreError::Unavailable(format!(
                "store.url: {what} (expected redis+sentinel://[USER:PASSWORD@]HOST:PORT,HOST:PORT/MASTER_NAME/DB)"
            ))
        };
        let (before_query, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = before_query
            .split_once('/')
            .ok_or_else(|| bad("no master name"))?;
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let mut segments = path.split('/');
        let master = decode(segments.next().unwrap_or_default());
        if master.is_empty() {
            return Err(bad("no master name"));
        }
        let db = match segments.next().filter(|s| !s.is_empty()) {
            Some(d) => d
                .parse::<i64>()
                .map_err(|_| bad("the database number is not a number"))?,
            None => 0,
        };
        if segments.next().is_some_and(|s| !s.is_empty()) {
            return Err(bad("too many path segments"));
        }

        let mut master_info = RedisConnectionInfo::default().set_db(db);
        if let Some(u) = userinfo {
            let (user, pass) = match u.split_once(':') {
                Some((user, pass)) => (decode(user), Some(decode(pass))),
                None => (decode(u), None),
            };
            if !user.is_empty() {
                master_info = master_info.set_username(user);
            }
            if let Some(p) = pass.filter(|p| !p.is_empty()) {
                master_info = master_info.set_password(p);
            }
        }
        let mut sentinel_user = None;
        let mut sentinel_pass = None;
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "sentinel_username" => sentinel_user = Some(decode(v)),
                "sentinel_password" => sentinel_pass = Some(decode(v)),
                _ => return Err(bad(&format!("unknown query parameter {k:?}"))),
            }
        }

        let mut nodes = Vec::new();
        let mut shown = Vec::new();
        for host in hosts.split(',') {
            if host.is_empty() {
                return Err(bad("an empty Sentinel address"));
            }
            let (h, port) =
                split_host_port(host).ok_or_else(|| bad("a Sentinel address has a bad port"))?;
            let scheme = if tls { "rediss" } else { "redis" };
            let bracketed = if h.contains(':') {
                format!("[{h}]")
            } else {
                h.to_string()
            };
            let info = format!("{scheme}://{bracketed}:{port}")
                .into_connection_info()
                .map_err(|_| bad("a Sentinel address is not a host name or address"))?;
            let mut redis_info = RedisConnectionInfo::default();
            if let Some(u) = &sentinel_user {
                redis_info = redis_info.set_username(u);
            }
            if let Some(p) = &sentinel_pass {
                redis_info = redis_info.set_password(p);
            }
            nodes.push(info.set_redis_settings(redis_info));
            shown.push(format!("{h}:{port}"));
        }
        let mut node_info =
            SentinelNodeConnectionInfo::default().set_redis_connection_info(master_info);
        if tls {
            node_info = node_info.set_tls_mode(TlsMode::Secure);
        }
        let client = SentinelClient::build(
            nodes,
            master.clone(),
            Some(node_info),
            SentinelServerType::Master,
        )
        .map_err(|e| {
            StoreError::Unavailable(format!(
                "store.url: cannot use these Sentinels ({:?})",
                e.kind()
            ))
        })?;
        Ok(SentinelTarget {
            client: tokio::sync::Mutex::new(client),
            describe: format!("master {master:?} db {db} via Sentinel {}", shown.join(",")),
            not_before: Mutex::new((None, MIN_BACKOFF)),
        })
    }

    /// Asks the Sentinels for the current master; backs off after failures.
    async fn master(&self) -> RedisResult<Client> {
        if let Some(at) = lock(&self.not_before).0
            && Instant::now() < at
        {
            return Err(RedisError::from((
                redis::ErrorKind::Io,
                "no Redis master known (Sentinel lookup backing off)",
            )));
        }
        let mut client = self.client.lock().await;
        let result = client.async_get_client().await;
        let mut nb = lock(&self.not_before);
        match &result {
            Ok(_) => *nb = (None, MIN_BACKOFF),
            Err(_) => {
                let pause = jitter(nb.1);
                *nb = (Some(Instant::now() + pause), (nb.1 * 2).min(MAX_BACKOFF));
            }
        }
        result
    }
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn split_host_port(s: &str) -> Option<(&str, u16)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(p) => Some((h, p.parse().ok()?)),
            None if after.is_empty() => Some((h, SENTINEL_PORT)),
            None => None,
        };
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Some((h, p.parse().ok()?)),
        None => Some((s, SENTINEL_PORT)),
    }
}

/// A random pause between half and all of `d`: replicas that lost Redis together do not
/// come back in lockstep.
pub(super) fn jitter(d: Duration) -> Duration {
    let half = d / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded values are plain data, valid whatever panicked while holding them.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn unavailable(what: &str, e: &RedisError) -> StoreError {
    StoreError::Unavailable(format!("{what}: {}", describe_error(e)))
}

/// A redis error in words, without anything a reply might carry: its kind, its server
/// code (`NOPERM`, `OOM`, `READONLY`…) and, for client-side errors, the crate's fixed
/// description.
pub(super) fn describe_error(e: &RedisError) -> String {
    match e.code() {
        Some(code) => format!("Redis answered {code}"),
        None if e.is_timeout() => "timed out".to_string(),
        None if e.is_connection_refusal() => "connection refused".to_string(),
        None if e.is_io_error() || e.is_connection_dropped() => "connection lost".to_string(),
        None => format!("{:?}", e.kind()),
    }
}

/// Longest pause of the store's [`Breaker`]: the most a recovered Redis waits to be
/// noticed by lookups.
const BREAKER_MAX: Duration = Duration::from_secs(1);

/// Fails store calls fast while Redis is unreachable, letting one probe through per
/// jittered, growing pause. Without it every lookup of an unseen key would start a new
/// connection attempt, and many replicas would hammer a Redis that is coming back.
///
/// Only connection-level failures open it; an answer from Redis (even an error such as
/// `NOPERM`) closes it.
pub(super) struct Breaker {
    state: Mutex<BreakerState>,
}

struct BreakerState {
    /// Calls fail fast until then; `None` = closed.
    open_until: Option<Instant>,
    /// The next pause.
    backoff: Duration,
    /// A probe is in flight: other calls keep failing fast.
    probing: bool,
}

/// Leave to call Redis, to be reported back with [`Admission::record`]. Dropped without
/// a report (the caller timed out), it frees the probe slot without changing the state.
pub(super) struct Admission<'a> {
    breaker: &'a Breaker,
    probe: bool,
}

impl Breaker {
    pub(super) fn new() -> Self {
        Breaker {
            state: Mutex::new(BreakerState {
                open_until: None,
                backoff: MIN_BACKOFF,
                probing: false,
            }),
        }
    }

    /// `None`: Redis was unreachable moments ago, fail without trying.
    pub(super) fn admit(&self) -> Option<Admission<'_>> {
        let mut s = lock(&self.state);
        match s.open_until {
            None => Some(Admission {
                breaker: self,
                probe: false,
            }),
            Some(until) if Instant::now() < until || s.probing => None,
            Some(_) => {
                s.probing = true;
                Some(Admission {
                    breaker: self,
                    probe: true,
                })
            }
        }
    }
}

impl Admission<'_> {
    pub(super) fn record<T>(self, result: &RedisResult<T>) {
        let unreachable = matches!(result, Err(e) if is_unreachable(e));
        let mut s = lock(&self.breaker.state);
        if !unreachable {
            s.open_until = None;
            s.backoff = MIN_BACKOFF;
        } else if self.probe || s.open_until.is_none() {
            // Calls that were already in flight when it opened do not stretch the pause.
            s.open_until = Some(Instant::now() + jitter(s.backoff));
            s.backoff = (s.backoff * 2).min(BREAKER_MAX);
        }
        if self.probe {
            s.probing = false;
        }
        drop(s);
        std::mem::forget(self);
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if self.probe {
            lock(&self.breaker.state).probing = false;
        }
    }
}

/// Whether an error means Redis could not be reached (as opposed to an answer).
pub(super) fn is_unreachable(e: &RedisError) -> bool {
    e.code().is_none()
        && (e.is_io_error()
            || e.is_connection_refusal()
            || e.is_connection_dropped()
            || e.is_timeout()
            || e.is_unrecoverable_error())
}

/// The shared command connection.
#[derive(Clone)]
pub(super) enum Conn {
    /// A few of the crate's connection managers (each one multiplexed connection,
    /// replaced in the background when it breaks), used in turn.
    Direct(Arc<Pool>),
    Sentinel(Arc<SentinelConn>),
}

/// Command connections to one server, one per core (2 to [`MAX_CONNECTIONS`]): each
/// pipelines its commands, and commands go to them in turn, so lookups neither wait for
/// each other's round trips nor all pass through one connection's reader.
pub(super) struct Pool {
    managers: Vec<ConnectionManager>,
    next: AtomicUsize,
}

impl Pool {
    fn pick(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.managers.len();
        self.managers[i].clone()
    }
}

/// Most command connections a store opens to a direct (non-Sentinel) server.
const MAX_CONNECTIONS: usize = 8;

/// A multiplexed connection to the master that Sentinel names, dropped (and the master
/// looked up again) when it fails or the server turns out to be a replica.
pub(super) struct SentinelConn {
    target: Arc<SentinelTarget>,
    /// Cloned out for each command; the lock is never held across an await.
    current: Mutex<Option<MultiplexedConnection>>,
    config: AsyncConnectionConfig,
}

impl SentinelConn {
    async fn connection(&self) -> RedisResult<MultiplexedConnection> {
        if let Some(c) = lock(&self.current).clone() {
            return Ok(c);
        }
        let master = self.target.master().await?;
        let conn = master
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        *lock(&self.current) = Some(conn.clone());
        Ok(conn)
    }

    fn after<T>(&self, result: &RedisResult<T>) {
        if let Err(e) = result
            && (is_unreachable(e) || e.code() == Some("READONLY"))
        {
            lock(&self.current).take();
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Direct(p) => {
                let mut m = p.pick();
                Box::pin(async move { m.req_packed_command(cmd).await })
            }
            Conn::Sentinel(s) => Box::pin(async move {
                let mut c = s.connection().await?;
                let r = c.req_packed_command(cmd).await;
                s.after(&r);
                r
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Direct(p) => {
                let mut m = p.pick();
                Box::pin(async move { m.req_packed_commands(pipeline, offset, count).await })
            }
            Conn::Sentinel(s) => Box::pin(async move {
                let mut c = s.connection().await?;
                let r = c.req_packed_commands(pipeline, offset, count).await;
                s.after(&r);
                r
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Direct(p) => p.managers.first().map_or(0, |m| m.get_db()),
            Conn::Sentinel(s) => lock(&s.current).as_ref().map_or(0, |c| c.get_db()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_parse() {
        let t = Target::parse(
            "redis+sentinel://:pw@10.0.0.1:26380,[::1],s3/mymaster/2?sentinel_password=sp",
        )
        .ok()
        .unwrap();
        let d = t.describe();
        assert_eq!(
            d,
            "master \"mymaster\" db 2 via Sentinel 10.0.0.1:26380,::1:26379,s3:26379"
        );
        assert!(!d.contains("pw") && !d.contains("sp"));
        for bad in [
            "redis+sentinel://h1",
            "redis+sentinel://h1/",
            "redis+sentinel://h1:x/m",
            "redis+sentinel://h1,,h2/m",
            "redis+sentinel://h1/m/zero",
            "redis+sentinel://h1/m/0?password=x",
        ] {
            let e = Target::parse(bad).err().unwrap().to_string();
            assert!(e.contains("store.url"), "{bad}: {e}");
        }
    }

    #[test]
    fn direct_urls_parse_without_echoing_secrets() {
        let t = Target::parse("redis://user:s3cret@127.0.0.1:6380/3")
            .ok()
            .unwrap();
        assert_eq!(t.describe(), "127.0.0.1:6380 db 3");
        let e = Target::parse("redis://user:s3cret@127.0.0.1:notaport/3")
            .err()
            .unwrap()
            .to_string();
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn breaker_fails_fast_then_lets_one_probe_through() {
        let b = Breaker::new();
        let refused: RedisResult<()> = Err(RedisError::from(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        b.admit().unwrap().record(&refused);
        assert!(b.admit().is_none(), "open right after a failure");
        std::thread::sleep(MIN_BACKOFF);
        let probe = b.admit().expect("one probe after the pause");
        assert!(b.admit().is_none(), "only one probe at a time");
        drop(probe);
        let probe = b.admit().expect("a dropped probe frees the slot");
        probe.record(&Ok(()));
        assert!(
            b.admit().is_some() && b.admit().is_some(),
            "closed after success"
        );
        // An answer from Redis, even an error, is not an outage.
        let noperm: RedisResult<()> = Err(RedisError::from((redis::ErrorKind::Client, "x")));
        b.admit().unwrap().record(&noperm);
        assert!(b.admit().is_some());
    }

    #[test]
    fn jitter_stays_within_half_and_whole() {
        for _ in 0..100 {
            let j = jitter(Duration::from_millis(1000));
            assert!(j >= Duration::from_millis(500) && j <= Duration::from_millis(1000));
        }
    }
}

//! [`RedisBus`]: the invalidation channel between replicas over Redis pub/sub
//! (SPEC §4 "Consistency").
//!
//! One channel, `<namespace>:invalidations`, carries these messages: `i <hex>[@<version>]…`
//! (the keys with these secret hashes changed, to this record version), `p <principal
//! id>` (a principal was disabled, enabled or deleted), `o <org id>` (an org's
//! `key_policy` changed), and `h <instance>` (a heartbeat). The store's write scripts
//! publish the first three in the same atomic step as the write (`scripts`); the
//! writing replica publishes them again from here, which also serves the embedded
//! store's tests of this format. Each subscriber
//! publishes a heartbeat every [`HEARTBEAT_EVERY`] through the command connection and
//! reads every message on its own pub/sub connection; any heartbeat seen proves that
//! messages reach it. It reports `Lost` when the pub/sub connection breaks or no
//! heartbeat was seen for [`HEARTBEAT_TIMEOUT`], then reconnects with a bounded,
//! jittered backoff, and reports `Connected` once it is subscribed again and a heartbeat
//! came through. In between, the resolver checks every entry against the store.
//!
//! A message holds hashes of key secrets, which is why the channel lives inside the
//! namespace that an ACL protects; nothing here logs a message's content.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::conn::{self, Conn, Target, describe_error};
use crate::key::KeyHash;
use crate::store::{BusEvent, Invalidation, InvalidationBus, StoreError};

/// How often each subscriber publishes its heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_millis(200);
/// A subscriber that has seen no heartbeat for this long reports `Lost` (SPEC §4: 1 s).
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(1);
/// Events waiting for the resolver; past this the bus waits for it, it never drops one.
const QUEUE: usize = 1024;
/// Hashes per published message, so that one message stays small.
const HASHES_PER_MESSAGE: usize = 64;

/// Set to `1` in a replica's environment to drop every invalidation this replica
/// publishes from here (heartbeats still go out): fault injection for the tests that
/// show a change still reaches every replica through the store's own publish.
pub const DROP_PUBLISH_ENV: &str = "KEYGATE_FAULT_DROP_INVALIDATION_PUBLISH";

pub struct RedisBus {
    /// Fault injection ([`DROP_PUBLISH_ENV`]): publishes nothing when set.
    drop_publishes: bool,
    target: Target,
    /// The store's command connection: publishing shares its socket.
    conn: Conn,
    channel: String,
    /// Bounds connecting, subscribing and each publish.
    io_timeout: Duration,
}

impl RedisBus {
    pub(super) fn new(target: Target, conn: Conn, channel: String, io_timeout: Duration) -> Self {
        let drop_publishes = std::env::var(DROP_PUBLISH_ENV).is_ok_and(|v| v == "1");
        if drop_publishes {
            tracing::warn!("fault injection: this replica drops the invalidations it publishes");
        }
        RedisBus {
            drop_publishes,
            target,
            conn,
            channel,
            io_timeout,
        }
    }
}

#[async_trait]
impl InvalidationBus for RedisBus {
    async fn publish(&self, changes: &[Invalidation]) -> Result<(), StoreError> {
        if self.drop_publishes {
            return Ok(());
        }
        for msg in encode(changes) {
            publish(&self.conn, &self.channel, &msg, self.io_timeout).await?;
        }
        Ok(())
    }

    fn subscribe(&self) -> mpsc::Receiver<BusEvent> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let listener = Listener {
            target: self.target.clone(),
            conn: self.conn.clone(),
            channel: self.channel.clone(),
            io_timeout: self.io_timeout,
            instance: crate::key::new_id("bus"),
        };
        tokio::spawn(listener.run(tx));
        rx
    }
}

async fn publish(
    conn: &Conn,
    channel: &str,
    msg: &str,
    timeout: Duration,
) -> Result<(), StoreError> {
    let mut conn = conn.clone();
    let mut cmd = redis::cmd("PUBLISH");
    cmd.arg(channel).arg(msg);
    match tokio::time::timeout(timeout, cmd.query_async::<i64>(&mut conn)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(conn::unavailable("publishing an invalidation", &e)),
        Err(_) => Err(StoreError::Unavailable(
            "publishing an invalidation timed out".to_string(),
        )),
    }
}

/// One subscriber's background task.
struct Listener {
    target: Target,
    conn: Conn,
    channel: String,
    io_timeout: Duration,
    /// Names this subscriber's heartbeats (diagnostics with `redis-cli SUBSCRIBE`).
    instance: String,
}

/// Why a pub/sub session ended.
enum Ended {
    /// The resolver dropped its receiver: stop for good.
    ReceiverGone,
    /// Connection failed, broke, or the heartbeat was missed.
    Broken(String),
}

/// Aborts the heartbeat task when the session that started it ends.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Listener {
    async fn run(self, tx: mpsc::Sender<BusEvent>) {
        let mut connected = false;
        let mut backoff = conn::MIN_BACKOFF;
        loop {
            match self.session(&tx, &mut connected).await {
                Ended::ReceiverGone => return,
                Ended::Broken(why) => {
                    if connected {
                        connected = false;
                        // A session that reached Connected earns a fast first retry.
                        backoff = conn::MIN_BACKOFF;
                        tracing::warn!(reason = %why, "invalidation channel lost; reconnecting");
                        if tx.send(BusEvent::Lost).await.is_err() {
                            return;
                        }
                    } else {
                        tracing::debug!(reason = %why, "invalidation channel not connected yet");
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(conn::jitter(backoff)) => {}
                _ = tx.closed() => return,
            }
            backoff = (backoff * 2).min(conn::MAX_BACKOFF);
        }
    }

    /// Subscribes and forwards events until the connection breaks or the heartbeat is
    /// missed. Sends `Connected` on the first heartbeat seen.
    async fn session(&self, tx: &mpsc::Sender<BusEvent>, connected: &mut bool) -> Ended {
        let mut pubsub = match self.target.pubsub(self.io_timeout).await {
            Ok(p) => p,
            Err(e) => return Ended::Broken(format!("connecting: {}", describe_error(&e))),
        };
        match tokio::time::timeout(self.io_timeout, pubsub.subscribe(&self.channel)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Ended::Broken(format!("subscribing: {}", describe_error(&e))),
            Err(_) => return Ended::Broken("subscribing timed out".to_string()),
        }
        let mut messages = pubsub.into_on_message();
        let _heartbeat = AbortOnDrop(tokio::spawn(heartbeat(
            self.conn.clone(),
            self.channel.clone(),
            format!("h {}", self.instance),
            self.io_timeout,
        )));
        let subscribed = Instant::now();
        let mut last_heartbeat: Option<Instant> = None;
        let mut watchdog = tokio::time::interval(HEARTBEAT_EVERY / 2);
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = messages.next() => {
                    let Some(msg) = msg else {
                        return Ended::Broken("the pub/sub connection closed".to_string());
                    };
                    let payload: Vec<u8> = msg.get_payload_bytes().to_vec();
                    match parse(&payload) {
                        Some(Message::Heartbeat) => {
                            last_heartbeat = Some(Instant::now());
                            if !*connected {
                                *connected = true;
                                if tx.send(BusEvent::Connected).await.is_err() {
                                    return Ended::ReceiverGone;
                                }
                            }
                        }
                        Some(Message::Invalidate(hashes)) => {
                            if tx.send(BusEvent::Invalidate(hashes)).await.is_err() {
                                return Ended::ReceiverGone;
                            }
                        }
                        None => tracing::debug!("ignoring a malformed message on the invalidation channel"),
                    }
                }
                _ = watchdog.tick() => {
                    let since = last_heartbeat.unwrap_or(subscribed);
                    if since.elapsed() > HEARTBEAT_TIMEOUT {
                        return Ended::Broken("no heartbeat for 1s".to_string());
                    }
                }
                _ = tx.closed() => return Ended::ReceiverGone,
            }
        }
    }
}

async fn heartbeat(conn: Conn, channel: String, msg: String, timeout: Duration) {
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // A failed heartbeat needs no handling here: the subscriber misses it.
        let _ = publish(&conn, &channel, &msg, timeout).await;
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Message {
    Heartbeat,
    Invalidate(Vec<Invalidation>),
}

/// The messages that announce `changes` (the format in the module docs).
fn encode(changes: &[Invalidation]) -> Vec<String> {
    let mut out = Vec::new();
    let keys: Vec<(&KeyHash, Option<u64>)> = changes
        .iter()
        .filter_map(|c| match c {
            Invalidation::Key { hash, version } => Some((hash, *version)),
            _ => None,
        })
        .collect();
    for chunk in keys.chunks(HASHES_PER_MESSAGE) {
        let mut msg = String::with_capacity(2 + chunk.len() * 86);
        msg.push('i');
        for (h, version) in chunk {
            msg.push(' ');
            msg.push_str(&h.to_hex());
            if let Some(v) = version {
                msg.push_str(&format!("@{v}"));
            }
        }
        out.push(msg);
    }
    for c in changes {
        match c {
            Invalidation::Principal(id) => out.push(format!("p {id}")),
            Invalidation::Org(id) => out.push(format!("o {id}")),
            Invalidation::Key { .. } => {}
        }
    }
    out
}

fn parse(payload: &[u8]) -> Option<Message> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut words = text.split(' ');
    let one = |words: &mut std::str::Split<'_, char>| match (words.next(), words.next()) {
        (Some(id), None) if !id.is_empty() => Some(id.to_string()),
        _ => None,
    };
    match words.next()? {
        "h" => Some(Message::Heartbeat),
        "i" => words
            .map(|w| {
                let (hex, version) = match w.split_once('@') {
                    Some((hex, v)) => (hex, Some(v.parse().ok()?)),
                    None => (w, None),
                };
                Some(Invalidation::Key {
                    hash: KeyHash::from_hex(hex)?,
                    version,
                })
            })
            .collect::<Option<Vec<_>>>()
            .map(Message::Invalidate),
        "p" => one(&mut words).map(|id| Message::Invalidate(vec![Invalidation::Principal(id)])),
        "o" => one(&mut words).map(|id| Message::Invalidate(vec![Invalidation::Org(id)])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(hash: KeyHash, version: Option<u64>) -> Invalidation {
        Invalidation::Key { hash, version }
    }

    #[test]
    fn messages_parse() {
        let a = KeyHash::of("a");
        let b = KeyHash::of("b");
        let msg = format!("i {} {}@7", a.to_hex(), b.to_hex());
        assert_eq!(
            parse(msg.as_bytes()),
            Some(Message::Invalidate(vec![key(a, None), key(b, Some(7))]))
        );
        assert_eq!(
            parse(b"p prn_01"),
            Some(Message::Invalidate(vec![Invalidation::Principal(
                "prn_01".into()
            )]))
        );
        assert_eq!(
            parse(b"o acme"),
            Some(Message::Invalidate(vec![Invalidation::Org("acme".into())]))
        );
        assert_eq!(parse(b"h bus_01"), Some(Message::Heartbeat));
        for bad in [
            &b"i nothex"[..],
            b"x",
            &[0xff],
            b"p",
            b"p a b",
            b"o ",
            b"i ab@x",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn what_is_published_parses_back() {
        let changes = vec![
            key(KeyHash::of("a"), Some(3)),
            key(KeyHash::of("b"), None),
            Invalidation::Principal("prn_1".into()),
            Invalidation::Org("acme".into()),
        ];
        let back: Vec<Invalidation> = encode(&changes)
            .iter()
            .flat_map(|m| match parse(m.as_bytes()) {
                Some(Message::Invalidate(c)) => c,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(back, changes);
    }
}

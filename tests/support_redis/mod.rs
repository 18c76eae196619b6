//! A real `redis-server` for tests: started on a free loopback port with persistence
//! off, stopped (killed) when dropped. Used by `tests/replicas.rs` and, through a
//! `#[path]` module, by the store's unit tests, so there is one copy of it.
//!
//! A missing `redis-server` fails the test loudly: the Redis backend is part of what
//! the suite must prove (`.ci/run` installs it).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    /// `--appendonly yes --appendfsync always`: data survives a kill and restart.
    persistent: bool,
    /// More arguments (`--replicaof …`), or a Sentinel's config file as the first.
    extra: Vec<String>,
    /// Working directory (redis-server writes nothing with persistence off, but a
    /// stray dump must not land in the repository).
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server on a free port, persistence off (`--save "" --appendonly no`),
    /// and waits (bounded) until it answers PING.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// Like [`start`](Self::start) but with AOF on and fsync per write, as keygate
    /// requires in production: what was acknowledged survives [`stop`](Self::stop) and
    /// [`restart`](Self::restart).
    pub fn start_persistent() -> Self {
        Self::start_with(true)
    }

    /// A replica of the server on `master_port`.
    pub fn start_replica_of(master_port: u16) -> Self {
        Self::start_full(false, |_, _| {
            vec![
                "--replicaof".into(),
                "127.0.0.1".into(),
                master_port.to_string(),
            ]
        })
    }

    /// A Sentinel (`redis-server CONF --sentinel`) watching the master on `master_port`
    /// under the name `master_name`, with short timeouts for tests.
    pub fn start_sentinel(master_port: u16, master_name: &str) -> Self {
        let name = master_name.to_string();
        Self::start_full(false, move |port, dir| {
            let conf = dir.join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\n\
                     sentinel monitor {name} 127.0.0.1 {master_port} 1\n\
                     sentinel down-after-milliseconds {name} 1000\n\
                     sentinel failover-timeout {name} 5000\n"
                ),
            )
            .expect("write sentinel.conf");
            vec![conf.display().to_string(), "--sentinel".into()]
        })
    }

    fn start_with(persistent: bool) -> Self {
        Self::start_full(persistent, |_, _| Vec::new())
    }

    fn start_full(persistent: bool, extra: impl FnOnce(u16, &Path) -> Vec<String>) -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().expect("temp dir for redis-server");
        let extra = extra(port, dir.path());
        let mut s = RedisServer {
            child: None,
            port,
            persistent,
            extra,
            dir,
        };
        s.restart();
        s
    }

    /// `redis://127.0.0.1:<port>/<db>`.
    pub fn url(&self, db: u32) -> String {
        format!("redis://127.0.0.1:{}/{db}", self.port)
    }

    /// Kills the server (as a crash would: no shutdown save) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (after [`stop`](Self::stop)).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let deadline = Instant::now() + Duration::from_secs(10);
        // The port may take a moment to be free again after a kill.
        loop {
            let child = spawn(self.port, self.dir.path(), self.persistent, &self.extra);
            self.child = Some(child);
            if self.wait_ready(Duration::from_secs(5)) {
                return;
            }
            self.stop();
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING on 127.0.0.1:{}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_ready(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                eprintln!("redis-server exited early: {status}");
                return false;
            }
            if self.try_command(&["PING"]).is_ok_and(|r| r == "PONG") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Sends one command and returns its reply as text (status, integer, bulk string,
    /// or array elements joined by newlines). Panics on a connection failure.
    pub fn command(&self, args: &[&str]) -> String {
        self.try_command(args)
            .unwrap_or_else(|e| panic!("redis command {:?} failed: {e}", args.first()))
    }

    pub fn try_command(&self, args: &[&str]) -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes())?;
        let mut r = BufReader::new(s);
        read_reply(&mut r)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(port: u16, dir: &Path, persistent: bool, extra: &[String]) -> Child {
    let port_s = port.to_string();
    if extra.iter().any(|a| a == "--sentinel") {
        return Command::new("redis-server")
            .args(extra)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server --sentinel ({e})"));
    }
    let aof: &[&str] = if persistent {
        &["--appendonly", "yes", "--appendfsync", "always"]
    } else {
        &["--appendonly", "no"]
    };
    Command::new("redis-server")
        .args([
            "--port",
            &port_s,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--protected-mode",
            "yes",
        ])
        .args(aof)
        .args(extra)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start redis-server ({e}): the Redis tests need it on PATH \
                 (apt-get install redis-server; .ci/run does this)"
            )
        })
}

#[path = "../common/ports.rs"]
mod ports;
pub use ports::free_port;

fn read_reply(r: &mut impl BufRead) -> std::io::Result<String> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let line = line.trim_end_matches(['\r', '\n']);
    let bad = || std::io::Error::other(format!("unexpected reply {line:?}"));
    let (kind, rest) = line.split_at_checked(1).ok_or_else(bad)?;
    match kind {
        "+" | ":" => Ok(rest.to_string()),
        "-" => Err(std::io::Error::other(format!("redis error: {rest}"))),
        "$" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            if n < 0 {
                return Ok(String::new());
            }
            let mut buf = vec![0; usize::try_from(n).map_err(|_| bad())? + 2];
            r.read_exact(&mut buf)?;
            buf.truncate(buf.len() - 2);
            String::from_utf8(buf).map_err(|_| bad())
        }
        "*" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            let mut items = Vec::new();
            for _ in 0..n.max(0) {
                items.push(read_reply(r)?);
            }
            Ok(items.join("\n"))
        }
        _ => Err(bad()),
    }
}

//! Redis as a [`Peer`], behind `--peer redis` (cargo feature `redis`): a fresh
//! `redis-server` (Debian package `redis-server`; temp dir, 127.0.0.1, a free port,
//! killed at the end) made as durable as Syncline's default, `--appendonly yes
//! --appendfsync always` (Redis answers a write only after its append-only file was
//! fsynced) and no snapshots, driven with the `redis` crate, so the same parameters
//! give result lines with `"system": "redis"` next to Syncline's.
//!
//! - A write (W1) is one Lua script (`EVALSHA`) that `SET`s the value and `INCR`s a
//!   per-key revision, returning the revision, as Syncline's write returns one. Writers
//!   share multiplexed connections (a clone of the crate's `MultiplexedConnection`
//!   pipelines its requests on the same socket).
//! - A fan-out (W2, W3's write) is `PUBLISH` to one channel with a connection of its own
//!   per subscriber (pub/sub needs one). The writer publishes in sequence order
//!   (`Order::Sender`): all publishes due at a moment go out in one pipeline, with one
//!   pipeline in flight (a `PUBLISH` is answered once the message is in every
//!   subscriber's output buffer, without touching the disk), so every subscriber must
//!   see `seq` 1, 2, 3, ... exactly: the same accounting as Syncline's streams. Nothing
//!   is stored, as for Syncline's streams (Redis pub/sub has no history), and there is
//!   no resync: a subscriber past its output-buffer limit is disconnected. A fan-out's
//!   line says how many publishes reached fewer subscribers than were subscribed
//!   (`publishes_short`), `conns`' how many the one publish reached (`publish_reached`).
//!
//! Every phase has a deadline; all traffic is loopback.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client};
use futures_util::StreamExt;
use serde_json::{json, Map, Value};

use super::measure::MeasuredProcess;
use super::peer::{Ack, Next, Order, Peer, Written};
use super::{err, Error};

/// How long Redis gets to answer after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for one request (a write, a publish, a subscription).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Sets the value and bumps the key's revision in one atomic step; returns the revision.
const WRITE_SCRIPT: &str =
    "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('INCR', KEYS[2])";

/// A fresh redis-server on 127.0.0.1, killed when dropped.
pub struct RedisUnderTest {
    client: Client,
    /// The write script's SHA1, loaded when the server started.
    write_sha: String,
    process: MeasuredProcess,
    dir: tempfile::TempDir,
}

/// A free loopback port (bound, then released for redis-server to take).
fn free_port() -> Result<u16, Error> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(err)?;
    Ok(l.local_addr().map_err(err)?.port())
}

/// The redis-server to start: `$REDIS_BIN`, else `redis-server` on the PATH.
fn redis_bin() -> String {
    std::env::var("REDIS_BIN").unwrap_or_else(|_| "redis-server".into())
}

/// Fails at once, naming the package, if there is no redis-server to start (checked
/// before any workload runs, so a long run does not end on it).
pub fn preflight() -> Result<(), Error> {
    let bin = redis_bin();
    match Command::new(&bin).arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err(format!(
            "--peer redis: cannot run {bin}; install Redis with \
             `apt-get install redis-server`, or set REDIS_BIN"
        )),
    }
}

impl RedisUnderTest {
    /// Starts `redis-server` (or `$REDIS_BIN`) on 127.0.0.1 in a temp dir, waits until
    /// it answers `PING`, and loads the write script.
    pub async fn start() -> Result<Self, Error> {
        let dir = tempfile::tempdir().map_err(err)?;
        let port = free_port()?;
        let bin = redis_bin();
        let child = Command::new(&bin)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(dir.path().join("redis.log"))
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            // No RDB snapshots: the append-only file is the durability.
            .args(["--save", ""])
            .args(["--daemonize", "no"])
            // W3 opens 10,000 connections (Redis lowers this to its open-file limit,
            // which the harness raised before starting it).
            .args(["--maxclients", "20000"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "starting {bin}: {e} (install Redis with `apt-get install redis-server`, \
                     or set REDIS_BIN)"
                )
            })?;
        let client = Client::open(format!("redis://127.0.0.1:{port}/")).map_err(err)?;
        let mut me = RedisUnderTest {
            client,
            write_sha: String::new(),
            process: MeasuredProcess(Some(child)),
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = me.process.try_wait()? {
                return Err(format!("redis-server exited ({status}): {}", me.log_tail()));
            }
            let probe = async {
                let mut c = me.connection().await?;
                ::redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .map_err(err)?;
                ::redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(WRITE_SCRIPT)
                    .query_async::<String>(&mut c)
                    .await
                    .map_err(err)
            };
            if let Ok(Ok(sha)) = tokio::time::timeout(Duration::from_secs(2), probe).await {
                me.write_sha = sha;
                return Ok(me);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "redis-server did not answer within {} s: {}",
                    START_TIMEOUT.as_secs(),
                    me.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines Redis logged (for errors).
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }

    /// A new multiplexed connection (its own socket; clones share it).
    async fn connection(&self) -> Result<MultiplexedConnection, Error> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Duration::from_secs(5))
            .set_response_timeout(REQUEST_TIMEOUT);
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(err)
    }
}

/// A subscriber: its connection's stream of messages on the one channel it joined.
pub type Messages = std::pin::Pin<Box<dyn futures_util::Stream<Item = ::redis::Msg> + Send>>;

impl Peer for RedisUnderTest {
    const SYSTEM: &'static str = "redis";
    const QUIC: bool = false;
    const ORDER: Order = Order::Sender;

    type Conn = MultiplexedConnection;
    type Ticket = ();
    /// The subscriber's connection lives in its message stream.
    type Link = ();
    type Events = Messages;

    fn process(&self) -> &MeasuredProcess {
        &self.process
    }

    fn kind(&self) -> &'static str {
        "pubsub"
    }

    async fn connect(&self) -> Result<MultiplexedConnection, Error> {
        self.connection().await
    }

    async fn write(
        &self,
        c: &mut MultiplexedConnection,
        key: &str,
        value: &Value,
    ) -> Result<(), Error> {
        let revision = ::redis::cmd("EVALSHA")
            .arg(&self.write_sha)
            .arg(2)
            .arg(key)
            .arg(format!("{key}:revision"))
            .arg(value.to_string())
            .query_async::<i64>(c)
            .await
            .map_err(|e| format!("redis write of {key}: {e}"))?;
        if revision < 1 {
            return Err(format!("redis write of {key} returned revision {revision}"));
        }
        Ok(())
    }

    async fn publish(
        &self,
        c: &mut MultiplexedConnection,
        topic: &str,
        value: Value,
    ) -> Result<Ack, Error> {
        let mut acks = self.publish_all(c, topic, vec![value]).await?;
        acks.pop()
            .ok_or_else(|| format!("PUBLISH to {topic} was not answered"))
    }

    /// `PUBLISH`es `values` in order, pipelined in one round trip, with a time limit;
    /// each answered with how many subscribers Redis handed it to.
    async fn publish_all(
        &self,
        c: &mut MultiplexedConnection,
        topic: &str,
        values: Vec<Value>,
    ) -> Result<Vec<Ack>, Error> {
        let mut pipe = ::redis::pipe();
        for value in values {
            pipe.cmd("PUBLISH").arg(topic).arg(value.to_string());
        }
        let send = pipe.query_async::<Vec<u64>>(c);
        let reached = match tokio::time::timeout(REQUEST_TIMEOUT, send).await {
            Ok(r) => r.map_err(err)?,
            Err(_) => return Err(format!("PUBLISH to {topic} took over {REQUEST_TIMEOUT:?}")),
        };
        Ok(reached
            .into_iter()
            .map(|n| Ack {
                at: None,
                reached: Some(n),
            })
            .collect())
    }

    fn tickets(&self, n: usize, _topic: &str) -> Result<Vec<()>, Error> {
        Ok(vec![(); n])
    }

    /// A connection of its own subscribed to `topic` (Redis confirmed it).
    async fn subscribe(&self, _ticket: (), topic: &str) -> Result<((), Messages), Error> {
        let mut pubsub = self.client.get_async_pubsub().await.map_err(err)?;
        pubsub.subscribe(topic).await.map_err(err)?;
        Ok(((), Box::pin(pubsub.into_on_message())))
    }

    async fn next(messages: &mut Messages) -> Next {
        loop {
            let Some(msg) = messages.next().await else {
                return Next::Ended("the subscriber's connection closed".to_owned());
            };
            let v: Value = serde_json::from_slice(msg.get_payload_bytes()).unwrap_or(Value::Null);
            if let Some(seq) = v["seq"].as_u64() {
                return Next::Event {
                    at: seq,
                    seq: Some(seq),
                    sent_ns: v["sent_ns"].as_u64(),
                };
            }
        }
    }

    fn writer_figures(&self, written: &Written, extra: &mut Map<String, Value>) {
        match written.workload {
            // Publishes that reached fewer subscribers than are subscribed (should be 0).
            "fanout" => {
                let short = written
                    .reached
                    .iter()
                    .filter(|&&n| n < written.subscribers as u64)
                    .count();
                extra.insert("publishes_short".into(), json!(short));
            }
            "conns" => {
                let reached = written.reached.first().copied().unwrap_or(0);
                extra.insert("publish_reached".into(), json!(reached));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::measure;
    use super::super::workloads::{conns, fanout, write};
    use super::*;

    /// W1..W3 against a real Redis, small; skipped where no `redis-server` is installed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn workloads_run_against_a_local_redis() {
        if Command::new(redis_bin()).arg("--version").output().is_err() {
            eprintln!("no {} here: skipped", redis_bin());
            return;
        }
        let redis = Arc::new(RedisUnderTest::start().await.unwrap());
        let pid = redis.process.pid().unwrap();
        let w = write(&redis, 4, 2, None, Duration::from_millis(300))
            .await
            .unwrap();
        let f = fanout(&redis, 5, 50, Duration::from_millis(400))
            .await
            .unwrap();
        let c = conns(&redis, 20).await.unwrap();
        for o in [&w, &f, &c] {
            let d = o.delivery;
            assert_eq!((d.missed, d.duplicated, d.out_of_order), (0, 0, 0));
            assert!(o.ops_per_s > 0.0 && o.server_rss_kib > 0, "{}", o.workload);
            assert!(o.client_cpu_s > 0.0, "{}", o.workload);
            assert_eq!(o.system, "redis");
        }
        assert_eq!(w.params["connections"], 2);
        assert_eq!(f.delivery.received, 5 * 20);
        assert_eq!(f.extra["publishes_short"], 0);
        assert_eq!(c.delivery.received, 20);
        assert_eq!(c.cpu_ops, 20.0);
        assert_eq!(c.extra["publish_reached"], 20);
        drop(redis);
        assert!(
            measure::cpu_seconds(pid).is_none(),
            "redis-server outlived its Drop"
        );
    }
}
